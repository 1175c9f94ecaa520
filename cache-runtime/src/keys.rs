//! Key rendering: template literals plus escaped placeholder values.
//!
//! Every byte of a placeholder value outside `[A-Za-z0-9_.~-]` is
//! percent-encoded with uppercase hex, so a value can never produce a `:` (or
//! any other separator) of its own: `get_user("1:admin")` renders
//! `user:1%3Aadmin` and can never read or write the key of another template.
//! Template literals are checked at compile time (no whitespace, none of
//! `{ } * ? [ ]`), so the runtime's own keys, which contain a space, can never
//! equal a rendered key.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

/// Buffers kept per thread so rendering a key costs no allocation in the
/// steady state (an L1 hit then allocates nothing at all).
const POOL_SIZE: usize = 8;
/// Larger buffers are not kept: one huge key must not pin memory forever.
const POOL_MAX_CAPACITY: usize = 1024;

thread_local! {
    static POOL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A rendered key (without the namespace), built by generated code.
///
/// Its buffer comes from a small per-thread pool and goes back on drop.
pub struct KeyBuf {
    text: String,
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
        KeyBuf { text }
    }

    /// Appends template text verbatim (checked at compile time).
    #[inline]
    pub fn literal(&mut self, text: &'static str) {
        self.text.push_str(text);
    }

    /// Appends a placeholder value, rendered with `Display` and escaped.
    #[inline]
    pub fn arg<T: fmt::Display + ?Sized>(&mut self, value: &T) {
        // Writing into a String cannot fail unless `Display` itself reports an
        // error, which a well-behaved impl never does; the key then simply
        // holds what was written so far, like `to_string()` would panic.
        let _ = write!(Escaper(&mut self.text), "{value}");
    }

    /// The rendered key.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
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

/// A `fmt::Write` adapter that percent-encodes what passes through it.
struct Escaper<'a>(&'a mut String);

#[inline]
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'~' | b'-')
}

impl fmt::Write for Escaper<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Fast path: ids and slugs rarely need escaping.
        if s.bytes().all(is_unreserved) {
            self.0.push_str(s);
            return Ok(());
        }
        escape_into(self.0, s);
        Ok(())
    }
}

fn escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in s.bytes() {
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
}

/// Escapes one placeholder value the way generated code does.
///
/// Useful to build the key passed to [`Cache::invalidate`](crate::Cache::invalidate)
/// by hand for values that are not plain ids.
///
/// # Example
///
/// ```
/// assert_eq!(cache_runtime::escape_key_part("1:admin"), "1%3Aadmin");
/// assert_eq!(cache_runtime::escape_key_part("a b*"), "a%20b%2A");
/// assert_eq!(cache_runtime::escape_key_part("v1.2_x~-"), "v1.2_x~-");
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
    fn escapes_separators_spaces_and_globs() {
        assert_eq!(render(&[&"1:admin"]), "t:1%3Aadmin");
        assert_eq!(render(&[&"a b"]), "t:a%20b");
        assert_eq!(render(&[&"*"]), "t:%2A");
        assert_eq!(render(&[&"{x}?[y]"]), "t:%7Bx%7D%3F%5By%5D");
        assert_eq!(render(&[&"%"]), "t:%25");
        assert_eq!(render(&[&"é"]), "t:%C3%A9");
        assert_eq!(render(&[&42u64, &-7i32]), "t:42:-7");
    }

    #[test]
    fn unreserved_bytes_pass_through() {
        assert_eq!(render(&[&"AZaz09_.~-"]), "t:AZaz09_.~-");
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

    proptest! {
        /// Two different argument tuples never render to the same key.
        #[test]
        fn distinct_tuples_render_distinct_keys(
            a in proptest::collection::vec(any::<String>(), 1..4),
            b in proptest::collection::vec(any::<String>(), 1..4),
        ) {
            prop_assume!(a != b);
            let ra: Vec<&dyn fmt::Display> = a.iter().map(|s| s as &dyn fmt::Display).collect();
            let rb: Vec<&dyn fmt::Display> = b.iter().map(|s| s as &dyn fmt::Display).collect();
            prop_assert_ne!(render(&ra), render(&rb));
        }

        /// Values drawn from separator-heavy alphabets, where collisions would
        /// show first if escaping were wrong.
        #[test]
        fn separator_heavy_tuples_never_collide(
            a in proptest::collection::vec("[:%a1 ]{0,4}", 1..4),
            b in proptest::collection::vec("[:%a1 ]{0,4}", 1..4),
        ) {
            prop_assume!(a != b);
            let ra: Vec<&dyn fmt::Display> = a.iter().map(|s| s as &dyn fmt::Display).collect();
            let rb: Vec<&dyn fmt::Display> = b.iter().map(|s| s as &dyn fmt::Display).collect();
            prop_assert_ne!(render(&ra), render(&rb));
        }

        /// A rendered value never contains a byte a template literal or the
        /// runtime's keys use as structure.
        #[test]
        fn escaped_values_have_only_unreserved_bytes_or_escapes(s in any::<String>()) {
            let out = escape_key_part(&s);
            prop_assert!(out.bytes().all(|b| is_unreserved(b) || b == b'%' || b.is_ascii_hexdigit()));
            prop_assert!(!out.contains(':'));
        }
    }
}
