//! Key rendering: template literals plus escaped placeholder values.
//!
//! # Rendering is injective
//!
//! Every byte of a placeholder value outside `[A-Za-z0-9]` is
//! percent-encoded with uppercase hex (`"1:admin"` -> `1%3Aadmin`,
//! `"bob.thumb"` -> `bob%2Ethumb`, `"é"` -> `%C3%A9`), so a rendered value is
//! made of letters, digits and `%` only. The macro checks at compile time
//! that literal text is printable ASCII without whitespace, `%` or
//! `{ } * ? [ ]`, and that a placeholder touches only a literal character
//! that is not a letter or digit, or the template's start or end. So the
//! literal separators of a rendered key are exactly its template's, each
//! value is the run of letters, digits and `%` between two of them, and
//! percent-encoding is reversible: one template renders one key only for one
//! tuple of values (`get_user("1:admin")` can never read the key of
//! `get_user` for another id, nor of a two-part template). The runtime's
//! own keys contain a space, which no rendered key can.
//!
//! Two different templates can still render one key where one has a
//! placeholder and the other literal text (`user:<id>` and `user:me`); the
//! `templates` module detects such pairs at run time.
//!
//! # Layout in Redis
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `<ns>:<rendered>` | the entry (envelope, `codec.rs`), or a tombstone after an invalidation | loads, writes, invalidations |
//! | `{<ns>:<rendered>} #lock` | the token of the instance loading the entry | `lock.rs` |
//! | `<ns>:<rendered tag> #tag` | the tag's version token | `tags.rs` |
//!
//! and two pub/sub channels, `<ns> #inval db<N>` (`invalidation.rs`) and
//! `<ns> #filled db<N>` (`lock.rs`). Every runtime key holds a space, which
//! no rendered key can, so none collides with an entry.
//!
//! On a Redis Cluster a key's slot is the CRC16 of its hash tag (the text
//! between its first `{` and the next `}`) or of the whole key. Rendered
//! keys and namespaces never hold braces (escaped, or refused at compile
//! time and by the builder), so an entry's slot comes from its whole key
//! and entries spread over every master: there is no namespace-wide hash
//! tag, and no hot shard. The lock's hash tag is its entry's key, so the
//! two share a slot. A tag's version key spreads by tag. Every command on
//! the request path and every script touches one key, and the reads that
//! go together (an entry and its tags' versions) are one `MGET` that the
//! cluster client splits per slot: nothing needs a cross-slot script.
//!
//! # Long keys
//!
//! A rendered key is at most `MAX_KEY_LEN` (1024) bytes as such. A longer
//! one is replaced by its first 1024 bytes, `#sha1:` and the SHA-1 of the
//! whole rendered key in lowercase hex: 1070 bytes, more than any key kept
//! as rendered, so a shortened key never equals one that was not shortened,
//! and two shortened keys are equal only when the whole renderings are (or
//! SHA-1 collides). The value is escaped and hashed in chunks, so a 10 MB
//! argument costs one pass over it and never a 30 MB string, and the key
//! copied into L1, the single-flight map, lock keys and pub/sub messages
//! stays about 1 KiB. Tags are rendered, and shortened, the same way, so
//! `#[invalidates]` reaches what `#[cached]` stored. The kept prefix still
//! matches `invalidate_prefix` for prefixes up to 1024 bytes.
//!
//! Why 1 KiB: real keys (ids, slugs, a few fields) are tens of bytes; a
//! key past a kilobyte is a whole payload (a query, a document) used as a
//! key, which is better hashed, while a kilobyte of it stays readable in
//! `redis-cli` and keeps every per-key copy small. Why a digest rather than
//! running such calls uncached: those calls are usually the expensive ones,
//! and the same key renders the same digest on every instance and release.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use sha1_smol::Sha1;

/// The longest rendered key (without the namespace) kept as rendered.
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// What separates a shortened key's kept prefix from its digest.
const DIGEST_MARKER: &str = "#sha1:";
/// The marker and the digest in hex, at the end of a shortened key.
const DIGEST_SUFFIX_LEN: usize = DIGEST_MARKER.len() + 40;
/// The longest a rendered key or tag can be (a shortened one).
pub(crate) const MAX_RENDERED_LEN: usize = MAX_KEY_LEN + DIGEST_SUFFIX_LEN;

/// Buffers kept per thread so rendering a key costs no allocation in the
/// steady state (an L1 hit then allocates nothing at all).
const POOL_SIZE: usize = 8;
/// Larger buffers are not kept (shortened keys are 1070 bytes, so their
/// buffers are not either: they are rare).
const POOL_MAX_CAPACITY: usize = 1024;

thread_local! {
    static POOL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A rendered key (without the namespace), built by generated code.
///
/// Its buffer comes from a small per-thread pool and goes back on drop.
/// Past `MAX_KEY_LEN` (1024) bytes it holds the shortened form (see the module
/// docs) after every call.
///
/// A placeholder whose `Display` returns an error leaves the key
/// incomplete ([`is_complete`](KeyBuf::is_complete) is false): what it holds
/// is only a prefix of the key, which other values may share, so the
/// runtime uses no cache for such a call.
///
/// # Example
///
/// ```
/// use cache_runtime::__private::KeyBuf;
///
/// let mut key = KeyBuf::new();
/// key.literal("user:");
/// key.arg(&"1:admin");
/// assert_eq!(key.as_str(), "user:1%3Aadmin");
/// assert!(key.is_complete());
/// ```
pub struct KeyBuf {
    text: String,
    /// Set once the rendering passed `MAX_KEY_LEN`: the SHA-1 of everything
    /// rendered so far. `text` then holds the first `MAX_KEY_LEN` bytes,
    /// followed by `DIGEST_MARKER` and the digest between calls.
    digest: Option<Box<Sha1>>,
    /// A placeholder's `Display` returned an error.
    failed: bool,
}

impl KeyBuf {
    /// An empty key, reusing a pooled buffer when one is free.
    #[inline]
    pub fn new() -> Self {
        let text = POOL
            .try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| String::with_capacity(64));
        KeyBuf {
            text,
            digest: None,
            failed: false,
        }
    }

    /// Appends template text verbatim (printable ASCII, checked at compile
    /// time).
    #[inline]
    pub fn literal(&mut self, text: &'static str) {
        if self.digest.is_none() && self.text.len() + text.len() <= MAX_KEY_LEN {
            self.text.push_str(text);
        } else {
            self.reopen();
            self.push(text);
            self.seal();
        }
    }

    /// Appends a placeholder value, rendered with `Display` and escaped.
    ///
    /// Writing cannot fail unless `Display` itself returns an error, which
    /// a well-behaved impl never does (`to_string()` would panic). The key
    /// is then incomplete: see [`is_complete`](KeyBuf::is_complete).
    ///
    /// ```
    /// use std::fmt;
    /// use cache_runtime::__private::KeyBuf;
    ///
    /// struct Broken;
    /// impl fmt::Display for Broken {
    ///     fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
    ///         Err(fmt::Error)
    ///     }
    /// }
    ///
    /// let mut key = KeyBuf::new();
    /// key.literal("user:");
    /// key.arg(&Broken);
    /// assert!(!key.is_complete());
    /// ```
    #[inline]
    pub fn arg<T: fmt::Display + ?Sized>(&mut self, value: &T) {
        self.reopen();
        if write!(Escaper(self), "{value}").is_err() {
            self.failed = true;
        }
        self.seal();
    }

    /// Appends a placeholder value of a primitive integer type: exactly
    /// what [`arg`](KeyBuf::arg) renders for it (its decimal digits, a
    /// minus sign escaped as `%2D`), without `core::fmt`'s machinery and the
    /// escaping pass, which were most of the cost of rendering an id. The
    /// macro calls it for a placeholder naming a parameter declared as
    /// `u8` ... `u128`, `i8` ... `i128`, `usize` or `isize`.
    ///
    /// ```
    /// use cache_runtime::__private::KeyBuf;
    ///
    /// let mut key = KeyBuf::new();
    /// key.literal("user:");
    /// key.integer(-42i64);
    /// assert_eq!(key.as_str(), "user:%2D42");
    /// ```
    #[inline]
    pub fn integer<I: itoa::Integer>(&mut self, value: I) {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value);
        self.reopen();
        match text.strip_prefix('-') {
            Some(magnitude) => {
                self.push("%2D");
                self.push(magnitude);
            }
            None => self.push(text),
        }
        self.seal();
    }

    /// Whether every placeholder rendered: false once a value's `Display`
    /// returned an error (see [`arg`](KeyBuf::arg)). An incomplete key
    /// must not be used: it is only the prefix of the key the call meant.
    ///
    /// ```
    /// let mut key = cache_runtime::__private::KeyBuf::new();
    /// key.arg(&42);
    /// assert!(key.is_complete());
    /// ```
    #[inline]
    pub fn is_complete(&self) -> bool {
        !self.failed
    }

    /// A key (or tag) rendered elsewhere, such as one passed to
    /// [`Cache::invalidate`](crate::Cache::invalidate): shortened past
    /// `MAX_KEY_LEN` exactly as generated code shortens it while rendering.
    pub(crate) fn rendered(text: &str) -> Self {
        let mut key = KeyBuf::new();
        key.push(text);
        key.seal();
        key
    }

    /// The rendered key.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Appends rendered (ASCII) text, switching to the shortened form when
    /// the key passes `MAX_KEY_LEN`. Only between `reopen` and `seal`.
    #[inline]
    fn push(&mut self, piece: &str) {
        match &mut self.digest {
            None if self.text.len() + piece.len() <= MAX_KEY_LEN => self.text.push_str(piece),
            None => self.start_digest(piece),
            Some(digest) => digest.update(piece.as_bytes()),
        }
    }

    #[cold]
    fn start_digest(&mut self, piece: &str) {
        let mut digest = Sha1::new();
        digest.update(self.text.as_bytes());
        digest.update(piece.as_bytes());
        // Rendered text is ASCII; the boundary check only guards a literal
        // written by hand. A few bytes less of prefix still leaves the
        // shortened key longer than `MAX_KEY_LEN`.
        let mut room = MAX_KEY_LEN - self.text.len();
        while !piece.is_char_boundary(room) {
            room -= 1;
        }
        self.text.push_str(&piece[..room]);
        self.digest = Some(Box::new(digest));
    }

    /// Drops the digest suffix `seal` wrote, so more text can be hashed.
    #[inline]
    fn reopen(&mut self) {
        if self.digest.is_some() {
            self.reopen_long();
        }
    }

    #[cold]
    fn reopen_long(&mut self) {
        self.text.truncate(self.text.len() - DIGEST_SUFFIX_LEN);
    }

    /// Writes the digest of everything rendered so far after the prefix.
    #[inline]
    fn seal(&mut self) {
        if let Some(digest) = &self.digest {
            let bytes = digest.digest().bytes();
            self.text.push_str(DIGEST_MARKER);
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in bytes {
                self.text.push(HEX[usize::from(byte >> 4)] as char);
                self.text.push(HEX[usize::from(byte & 0xF)] as char);
            }
        }
    }
}

impl std::ops::Deref for KeyBuf {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        &self.text
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyBuf {
    fn drop(&mut self) {
        let capacity = self.text.capacity();
        if capacity == 0 || capacity > POOL_MAX_CAPACITY {
            return;
        }
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_SIZE {
                pool.push(text);
            }
        });
    }
}

impl fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyBuf").field(&self.text).finish()
    }
}

/// A `fmt::Write` adapter that percent-encodes what passes through it into
/// a key.
struct Escaper<'a>(&'a mut KeyBuf);

/// Bytes a value keeps as they are: letters and digits. Everything else,
/// `%` and every separator a template can hold included, is escaped.
#[inline]
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

impl fmt::Write for Escaper<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Fast path: ids and slugs rarely need escaping.
        if s.bytes().all(is_unreserved) {
            self.0.push(s);
            return Ok(());
        }
        // In chunks, so a huge value never becomes a huge string.
        let mut chunk = [0u8; 192];
        let mut len = 0;
        for byte in s.bytes() {
            if len + 3 > chunk.len() {
                self.0.push(ascii(&chunk[..len]));
                len = 0;
            }
            if is_unreserved(byte) {
                chunk[len] = byte;
                len += 1;
            } else {
                chunk[len] = b'%';
                chunk[len + 1] = HEX_UPPER[usize::from(byte >> 4)];
                chunk[len + 2] = HEX_UPPER[usize::from(byte & 0xF)];
                len += 3;
            }
        }
        self.0.push(ascii(&chunk[..len]));
        Ok(())
    }
}

/// Escaped bytes as text (always ASCII).
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn escape_into(out: &mut String, s: &str) {
    for byte in s.bytes() {
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[usize::from(byte >> 4)] as char);
            out.push(HEX_UPPER[usize::from(byte & 0xF)] as char);
        }
    }
}

/// Escapes one placeholder value the way generated code does.
///
/// Useful to build the key passed to [`Cache::invalidate`](crate::Cache::invalidate)
/// by hand for values that are not plain ids: every byte outside
/// `[A-Za-z0-9]` becomes `%XX` (uppercase hex). A key built from it and
/// passed to [`Cache::invalidate`](crate::Cache::invalidate) or
/// [`Cache::invalidate_tag`](crate::Cache::invalidate_tag) is shortened past
/// 1024 bytes the way generated code shortens it, so it reaches the same
/// entry.
///
/// # Example
///
/// ```
/// assert_eq!(cache_runtime::escape_key_part("1:admin"), "1%3Aadmin");
/// assert_eq!(cache_runtime::escape_key_part("a b*"), "a%20b%2A");
/// assert_eq!(cache_runtime::escape_key_part("bob.thumb"), "bob%2Ethumb");
/// assert_eq!(cache_runtime::escape_key_part("v1.2_x~-"), "v1%2E2%5Fx%7E%2D");
/// ```
pub fn escape_key_part(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

/// The key as stored in Redis: `<namespace>:<rendered template>`.
pub(crate) fn storage_key(namespace: &str, key: &str) -> KeyBuf {
    // A pooled buffer: this runs on every miss and every L2 read.
    let mut out = KeyBuf::new();
    out.text.push_str(namespace);
    out.text.push(':');
    out.text.push_str(key);
    out
}

/// Checks a namespace with the same rule as template literals, so a namespace
/// cannot make a rendered key collide with a runtime key.
pub(crate) fn invalid_namespace_reason(namespace: &str) -> Option<&'static str> {
    if namespace.is_empty() {
        return Some("it is empty");
    }
    if namespace.chars().any(char::is_whitespace) {
        return Some("it contains whitespace");
    }
    if namespace.contains(['{', '}', '*', '?', '[', ']']) {
        return Some("it contains one of `{ } * ? [ ]`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(parts: &[&dyn fmt::Display]) -> String {
        let mut key = KeyBuf::new();
        key.literal("t:");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.literal(":");
            }
            key.arg(part);
        }
        key.as_str().to_owned()
    }

    #[test]
    fn escapes_every_byte_but_letters_and_digits() {
        assert_eq!(render(&[&"1:admin"]), "t:1%3Aadmin");
        assert_eq!(render(&[&"a b"]), "t:a%20b");
        assert_eq!(render(&[&"*"]), "t:%2A");
        assert_eq!(render(&[&"{x}?[y]"]), "t:%7Bx%7D%3F%5By%5D");
        assert_eq!(render(&[&"%"]), "t:%25");
        assert_eq!(render(&[&"é"]), "t:%C3%A9");
        assert_eq!(render(&[&"bob.thumb"]), "t:bob%2Ethumb");
        assert_eq!(render(&[&"_.~-"]), "t:%5F%2E%7E%2D");
        assert_eq!(render(&[&42u64, &-7i32]), "t:42:%2D7");
        assert_eq!(render(&[&""]), "t:");
    }

    /// One key rendered through [`KeyBuf::integer`] and one through
    /// [`KeyBuf::arg`], after the same literal.
    fn both_ways<I: itoa::Integer + fmt::Display>(value: I) -> (String, String) {
        let mut fast = KeyBuf::new();
        fast.literal("n:");
        fast.integer(value);
        let mut display = KeyBuf::new();
        display.literal("n:");
        display.arg(&value);
        (fast.as_str().to_owned(), display.as_str().to_owned())
    }

    #[test]
    fn integers_render_as_their_display_does() {
        let (fast, display) = both_ways(-7i8);
        assert_eq!((fast.as_str(), display.as_str()), ("n:%2D7", "n:%2D7"));
        for (fast, display) in [
            both_ways(u128::MAX),
            both_ways(i128::MIN),
            both_ways(0usize),
            both_ways(isize::MIN),
            both_ways(u8::MAX),
        ] {
            assert_eq!(fast, display);
        }
    }

    #[test]
    fn letters_and_digits_pass_through() {
        assert_eq!(render(&[&"AZaz09"]), "t:AZaz09");
    }

    /// The collision of issue 12: `.` was left unescaped, so `avatar:<user>`
    /// with "bob.thumb" rendered what `avatar:<user>.thumb` renders with
    /// "bob".
    #[test]
    fn a_value_can_not_forge_a_literal_separator() {
        let mut avatar = KeyBuf::new();
        avatar.literal("avatar:");
        avatar.arg("bob.thumb");
        let mut thumb = KeyBuf::new();
        thumb.literal("avatar:");
        thumb.arg("bob");
        thumb.literal(".thumb");
        assert_eq!(avatar.as_str(), "avatar:bob%2Ethumb");
        assert_eq!(thumb.as_str(), "avatar:bob.thumb");
    }

    #[test]
    fn buffers_are_reused_and_cleared() {
        let mut first = KeyBuf::new();
        first.literal("something-long");
        drop(first);
        let second = KeyBuf::new();
        assert_eq!(second.as_str(), "");
    }

    #[test]
    fn namespace_rules() {
        assert!(invalid_namespace_reason("app").is_none());
        assert!(invalid_namespace_reason("").is_some());
        assert!(invalid_namespace_reason("a b").is_some());
        assert!(invalid_namespace_reason("a*").is_some());
    }

    /// Writes its text, then fails.
    struct FailsAfter(&'static str);

    impl fmt::Display for FailsAfter {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn a_display_error_leaves_the_key_incomplete_for_good() {
        assert!(long(&"ok", true).is_complete());
        let key = long(&FailsAfter("1"), true);
        assert!(!key.is_complete(), "{key:?}");
        let long_prefix: &'static str = "a".repeat(2 * MAX_KEY_LEN).leak();
        let key = long(&FailsAfter(long_prefix), true);
        assert!(!key.is_complete(), "shortened or not");
        let mut key = KeyBuf::new();
        key.arg(&FailsAfter(""));
        key.arg(&"later values do not make it whole");
        assert!(!key.is_complete());
        drop(key);
        assert!(KeyBuf::new().is_complete(), "a pooled buffer starts whole");
    }

    /// Renders `t:<value>` (or `t:<value>:end`).
    fn long(value: &dyn fmt::Display, end: bool) -> KeyBuf {
        let mut key = KeyBuf::new();
        key.literal("t:");
        key.arg(value);
        if end {
            key.literal(":end");
        }
        key
    }

    fn sha1_hex(text: &str) -> String {
        Sha1::from(text).digest().to_string()
    }

    #[test]
    fn keys_up_to_the_bound_are_kept_as_rendered() {
        let value = "a".repeat(MAX_KEY_LEN - 2);
        let key = long(&value, false);
        assert_eq!(key.len(), MAX_KEY_LEN);
        assert_eq!(key.as_str(), format!("t:{value}"));
    }

    #[test]
    fn longer_keys_keep_their_first_bytes_and_a_digest_of_the_whole() {
        let value = "a".repeat(MAX_KEY_LEN - 1);
        let full = format!("t:{value}");
        let key = long(&value, false);
        assert_eq!(key.len(), MAX_KEY_LEN + DIGEST_SUFFIX_LEN);
        assert_eq!(
            key.as_str(),
            format!("{}#sha1:{}", &full[..MAX_KEY_LEN], sha1_hex(&full))
        );
        // Text after the value is hashed too.
        let with_end = long(&value, true);
        assert_eq!(
            with_end.as_str(),
            format!(
                "{}#sha1:{}",
                &full[..MAX_KEY_LEN],
                sha1_hex(&format!("{full}:end"))
            )
        );
        // Escapes count as rendered: 400 `.` render 1200 bytes.
        let dots = ".".repeat(400);
        let full = format!("t:{}", "%2E".repeat(400));
        assert_eq!(
            long(&dots, false).as_str(),
            format!("{}#sha1:{}", &full[..MAX_KEY_LEN], sha1_hex(&full))
        );
    }

    #[test]
    fn long_keys_differing_only_past_the_prefix_stay_apart() {
        let base = "x".repeat(5000);
        let a = long(&format!("{base}a"), false);
        let b = long(&format!("{base}b"), false);
        assert_eq!(a[..MAX_KEY_LEN], b[..MAX_KEY_LEN]);
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn a_ten_megabyte_value_renders_a_short_key_without_a_huge_buffer() {
        let value = "é".repeat(5 << 20);
        let key = long(&value, true);
        assert_eq!(key.len(), MAX_KEY_LEN + DIGEST_SUFFIX_LEN);
        assert!(
            key.text.capacity() < 4 * MAX_KEY_LEN,
            "{}",
            key.text.capacity()
        );
        let expected = sha1_hex(&format!("t:{}:end", "%C3%A9".repeat(5 << 20)));
        assert!(key.ends_with(&expected));
    }

    /// A `Display` writing its text in pieces of `self.1` characters, as
    /// formatting a struct does: escaping and shortening must not depend on
    /// how the text is cut.
    struct Pieces<'a>(&'a str, usize);

    impl fmt::Display for Pieces<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let chars: Vec<char> = self.0.chars().collect();
            for piece in chars.chunks(self.1.max(1)) {
                f.write_str(&piece.iter().collect::<String>())?;
            }
            Ok(())
        }
    }

    /// A template as the macro accepts it, split at its literal separators
    /// (characters other than letters and digits): each segment is literal
    /// letters and digits, possibly none, or exactly one placeholder. Every
    /// template the macro accepts has exactly one such form.
    #[derive(Clone, Debug, PartialEq)]
    struct Template {
        segments: Vec<Segment>,
        /// One fewer than `segments`.
        separators: Vec<char>,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Segment {
        Text(String),
        Hole,
    }

    /// What the macro emits: literal text and placeholders in order, with
    /// adjacent literal text merged into one `literal` call.
    enum Part {
        Text(String),
        Hole,
    }

    impl Template {
        fn parts(&self) -> Vec<Part> {
            let mut parts = Vec::new();
            let mut text = String::new();
            for (index, segment) in self.segments.iter().enumerate() {
                if index > 0 {
                    text.push(self.separators[index - 1]);
                }
                match segment {
                    Segment::Text(segment) => text.push_str(segment),
                    Segment::Hole => {
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        parts.push(Part::Hole);
                    }
                }
            }
            if !text.is_empty() {
                parts.push(Part::Text(text));
            }
            parts
        }

        /// The template as written, with placeholders `<v0>`, `<v1>`...
        fn written(&self) -> String {
            let mut holes = 0..;
            self.parts()
                .iter()
                .map(|part| match part {
                    Part::Text(text) => text.clone(),
                    Part::Hole => format!("<v{}>", holes.next().unwrap_or_default()),
                })
                .collect()
        }

        fn holes(&self) -> usize {
            self.segments
                .iter()
                .filter(|s| **s == Segment::Hole)
                .count()
        }

        /// Renders with the real `KeyBuf`, each value written in pieces.
        fn render(&self, values: &[String], piece: usize) -> String {
            let mut key = KeyBuf::new();
            let mut values = values.iter();
            for part in self.parts() {
                match part {
                    // Generated code passes `&'static str` literals.
                    Part::Text(text) => key.literal(Box::leak(text.into_boxed_str())),
                    Part::Hole => key.arg(&Pieces(values.next().expect("a value"), piece)),
                }
            }
            key.as_str().to_owned()
        }
    }

    /// Literal characters that are not letters or digits, the old
    /// unescaped ones (`_ . ~ -`) included.
    const SEPARATORS: &[char] = &[':', '.', '_', '~', '-', '/', '#', '=', ',', '!', '|'];

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            2 => Just(Segment::Hole),
            // Few letters, so that texts meet values often.
            2 => "[ab1]{0,3}".prop_map(Segment::Text),
            1 => "[A-Za-z0-9]{0,6}".prop_map(Segment::Text),
        ]
    }

    fn template() -> impl Strategy<Value = Template> {
        proptest::collection::vec((segment(), proptest::sample::select(SEPARATORS)), 1..5).prop_map(
            |pairs| {
                let count = pairs.len();
                let (segments, mut separators): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
                separators.truncate(count - 1);
                Template {
                    segments,
                    separators,
                }
            },
        )
    }

    /// Values: any Unicode, separator- and `%`-heavy text, text that
    /// matches the generated literal segments, escapes written out.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ab1%:._~-]{0,4}",
            "[ab1]{0,3}",
            "(%[0-9A-F]{2}|[a1.é\u{0}\u{10FFFF}]){0,3}",
        ]
    }

    /// Two templates and their values.
    #[derive(Debug)]
    struct Case {
        first: Template,
        first_values: Vec<String>,
        second: Template,
        second_values: Vec<String>,
    }

    /// Pairs made to come close: the second template is the first one, the
    /// first with one segment turned into a placeholder or into literal
    /// text, the first with a separator and text added after a placeholder
    /// (whose value in the first then ends with that separator and text, as
    /// `"avatar:<user>"` with "bob.thumb" and `"avatar:<user>.thumb"` with
    /// "bob"), or another template. Each placeholder of the second takes the
    /// value (or the literal text) the first has at the same position, or a
    /// value of its own.
    fn case() -> impl Strategy<Value = Case> {
        (
            (template(), template(), any::<prop::sample::Index>()),
            ("[ab1]{0,3}", proptest::sample::select(SEPARATORS), 0..5u8),
            proptest::collection::vec(value(), 6),
            proptest::collection::vec((any::<bool>(), value()), 6),
        )
            .prop_map(
                |((first, other, at), (text, separator, choice), values, own)| {
                    let mut first_values = values[..first.holes()].to_vec();
                    let at = at.index(first.segments.len());
                    let mut second = first.clone();
                    match choice {
                        0 => {}
                        1 => second.segments[at] = Segment::Hole,
                        2 => second.segments[at] = Segment::Text(text.clone()),
                        3 if first.segments[at] == Segment::Hole => {
                            second.segments.insert(at + 1, Segment::Text(text.clone()));
                            second.separators.insert(at, separator);
                            let hole = first.segments[..at]
                                .iter()
                                .filter(|segment| **segment == Segment::Hole)
                                .count();
                            let mut second_values = first_values.clone();
                            second_values[hole].clone_from(&own[0].1);
                            first_values[hole] = format!("{}{separator}{text}", own[0].1);
                            return Case {
                                first,
                                first_values,
                                second,
                                second_values,
                            };
                        }
                        _ => second = other,
                    }
                    let second_values = values_for(&first, &first_values, &second, &own);
                    Case {
                        first,
                        first_values,
                        second,
                        second_values,
                    }
                },
            )
    }

    /// Values for the second template: for each placeholder, the value of
    /// the first template's segment at the same position (its value, or its
    /// literal text), or a value of its own.
    fn values_for(
        first: &Template,
        first_values: &[String],
        second: &Template,
        own: &[(bool, String)],
    ) -> Vec<String> {
        let mut first_values = first_values.iter();
        let aligned: Vec<String> = first
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Hole => first_values.next().expect("a value").clone(),
                Segment::Text(text) => text.clone(),
            })
            .collect();
        second
            .segments
            .iter()
            .enumerate()
            .filter(|(_, segment)| **segment == Segment::Hole)
            .zip(own)
            .map(|((index, _), (reuse, value))| match aligned.get(index) {
                Some(aligned) if *reuse => aligned.clone(),
                _ => value.clone(),
            })
            .collect()
    }

    /// What the SPEC predicts, without using the escaping under test: a
    /// value renders letters, digits and `%XX` only, each value to its own
    /// text (percent-encoding is reversible), and text of letters and
    /// digits only to itself. So two renderings are equal exactly when the
    /// templates have the same separators and, segment by segment, equal
    /// literal text, equal values, or a value equal to the literal text it
    /// faces.
    fn predicted_equal(case: &Case) -> bool {
        let Case {
            first,
            first_values,
            second,
            second_values,
        } = case;
        if first.separators != second.separators {
            return false;
        }
        let segments = |template: &Template, values: &[String]| -> Vec<String> {
            let mut values = values.iter();
            template
                .segments
                .iter()
                .map(|segment| match segment {
                    Segment::Text(text) => text.clone(),
                    Segment::Hole => values.next().expect("a value").clone(),
                })
                .collect()
        };
        segments(first, first_values) == segments(second, second_values)
    }

    /// The separators of a rendered key: its characters other than letters,
    /// digits and `%`.
    fn separators_of(rendered: &str) -> Vec<char> {
        rendered
            .chars()
            .filter(|c| !c.is_ascii_alphanumeric() && *c != '%')
            .collect()
    }

    proptest! {
        /// Two renderings are equal only when the templates have the same
        /// literal structure and the values are equal, or when the overlap
        /// rule of `templates` reports the pair (a placeholder of one facing
        /// literal text of the other) and each such placeholder's value is
        /// that text.
        #[test]
        fn renderings_are_equal_only_for_the_same_layout_and_values(
            case in case(),
            piece in 1..4usize,
        ) {
            let Case { first, first_values, second, second_values } = &case;
            let a = first.render(first_values, piece);
            let b = second.render(second_values, piece + 1);
            // No value adds or removes a separator.
            prop_assert_eq!(&separators_of(&a), &first.separators, "{}", a);
            prop_assert_eq!(&separators_of(&b), &second.separators, "{}", b);
            prop_assert_eq!(
                a == b,
                predicted_equal(&case),
                "{} {:?} -> {}\n{} {:?} -> {}", first.written(), first_values, a,
                second.written(), second_values, b
            );
            let overlap = crate::templates::could_collide(&first.written(), &second.written());
            if a == b {
                if first == second {
                    prop_assert_eq!(first_values, second_values);
                } else {
                    prop_assert!(
                        overlap.is_some(),
                        "{} and {} both render {}, but the overlap rule misses them",
                        first.written(), second.written(), a
                    );
                }
            }
            // The rule is exact: when it reports a pair, the example it
            // gives is a key both templates render.
            if let Some(example) = overlap {
                let witness = |template: &Template, other: &Template| {
                    let values: Vec<String> = template
                        .segments
                        .iter()
                        .zip(&other.segments)
                        .filter(|(segment, _)| **segment == Segment::Hole)
                        .map(|(_, other)| match other {
                            Segment::Text(text) => text.clone(),
                            Segment::Hole => "1".to_owned(),
                        })
                        .collect();
                    template.render(&values, piece)
                };
                prop_assert_eq!(witness(first, second), example.clone());
                prop_assert_eq!(witness(second, first), example);
            }
        }

        /// One template renders one key per tuple of values, whatever the
        /// values hold.
        #[test]
        fn one_template_renders_distinct_tuples_apart(
            template in template(),
            a in proptest::collection::vec(value(), 5),
            b in proptest::collection::vec(value(), 5),
        ) {
            let holes = template.holes();
            prop_assume!(a[..holes] != b[..holes]);
            prop_assert_ne!(template.render(&a[..holes], 1), template.render(&b[..holes], 7));
        }

        /// Past the bound the key is shortened the same way however the
        /// values are written, and stays apart from other values.
        #[test]
        fn long_renderings_are_shortened_consistently(
            template in template(),
            seed in "[a.é%]{1,8}",
            repeat in 100..600usize,
            piece in 1..50usize,
            other in value(),
        ) {
            let values: Vec<String> = (0..template.holes()).map(|_| seed.repeat(repeat)).collect();
            let whole = template.render(&values, usize::MAX);
            prop_assert_eq!(&template.render(&values, piece), &whole);
            prop_assert!(whole.len() <= MAX_KEY_LEN || whole.len() == MAX_KEY_LEN + DIGEST_SUFFIX_LEN);
            if let Some(last) = values.len().checked_sub(1) {
                let mut changed = values.clone();
                changed[last].push_str(&other);
                prop_assume!(!other.is_empty());
                prop_assert_ne!(template.render(&changed, piece), whole);
            }
        }

        /// `KeyBuf::integer` is only faster: the keys are `arg`'s.
        #[test]
        fn integers_render_as_their_display_does_anywhere(
            signed in any::<i64>(),
            unsigned in any::<u64>(),
            wide in any::<i128>(),
        ) {
            let (fast, display) = both_ways(signed);
            prop_assert_eq!(fast, display);
            let (fast, display) = both_ways(unsigned);
            prop_assert_eq!(fast, display);
            let (fast, display) = both_ways(wide);
            prop_assert_eq!(fast, display);
        }

        /// A rendered value holds letters, digits and `%XX` escapes only, so
        /// never a byte a template literal or the runtime's keys use as
        /// structure.
        #[test]
        fn escaped_values_have_only_letters_digits_and_escapes(s in any::<String>()) {
            let out = escape_key_part(&s);
            let bytes = out.as_bytes();
            let mut at = 0;
            while at < bytes.len() {
                if bytes[at] == b'%' {
                    prop_assert!(bytes.len() >= at + 3);
                    prop_assert!(bytes[at + 1..at + 3].iter().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')));
                    at += 3;
                } else {
                    prop_assert!(bytes[at].is_ascii_alphanumeric());
                    at += 1;
                }
            }
        }
    }
}
