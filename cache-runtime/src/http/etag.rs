//! Entity tags: strong ones over the bytes sent, weak ones over a value.

use std::fmt;

use axum::http::HeaderValue;
use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;

/// Bytes of the SHA-1 digest kept in an ETag (128 bits).
const ETAG_BYTES: usize = 16;
/// `W/` + `"` + 32 hex digits + `"`.
const MAX_TEXT_LEN: usize = 4 + 2 * ETAG_BYTES;

/// An entity tag: 128 bits of SHA-1, sent as 32 lowercase hex digits in
/// quotes, strong (`"…"`) or weak (`W/"…"`).
///
/// - [`ETag::of_bytes`] / [`ETag::of_json`] are **strong**: a digest of the
///   exact bytes sent. Two responses with one strong tag carry the same
///   bytes, so the tag may be used in `If-Match` (strong comparison, RFC
///   9110 §8.8.3.2) to prevent lost updates. [`CachedJson`](super::CachedJson)
///   sends these.
/// - [`ETag::of`] is **weak**: a digest of the value's serde encoding
///   (bincode 2, the encoding the cache stores in Redis), computed without
///   building the JSON. The same value gives the same tag, but not
///   necessarily the same bytes (a `HashMap`'s order, a renamed JSON
///   field), so it is only good for `If-None-Match` (weak comparison).
///
/// Either is the same in every process, on every platform and with every
/// Rust version, for as long as the bytes (or the value's encoding) are,
/// so every instance behind a load balancer computes the same tag. A value
/// holding a `HashMap` serialises in an order that differs between
/// processes: use a `BTreeMap` in values served with a tag, or instances
/// answer one another's revalidations with full responses.
///
/// # Example
///
/// ```
/// use cache_runtime::http::ETag;
///
/// #[derive(serde::Serialize)]
/// struct User { id: i64, name: String }
///
/// let ada = User { id: 42, name: "Ada".into() };
/// let strong = ETag::of_json(&ada).unwrap();
/// assert_eq!(strong, ETag::of_bytes(br#"{"id":42,"name":"Ada"}"#));
/// assert!(!strong.is_weak());
/// assert_eq!(strong.to_string().len(), 34); // quotes and 32 hex digits
///
/// let weak = ETag::of(&ada).unwrap();
/// assert!(weak.is_weak() && weak.to_string().starts_with("W/\""));
/// assert_ne!(ETag::of(&User { id: 42, name: "Grace".into() }).unwrap(), weak);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ETag {
    digest: [u8; ETAG_BYTES],
    weak: bool,
}

impl ETag {
    /// The strong tag of `bytes`, as sent: SHA-1, truncated to 128 bits.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::ETag;
    ///
    /// // `printf 'hello' | sha1sum`, first 32 hex digits.
    /// assert_eq!(ETag::of_bytes(b"hello").to_string(), r#""aaf4c61ddcc5e8a2dabede0f3b482cd9""#);
    /// ```
    pub fn of_bytes(bytes: &[u8]) -> ETag {
        ETag::from_digest(sha1_smol::Sha1::from(bytes).digest().bytes(), false)
    }

    /// The strong tag of `value`'s JSON (`serde_json::to_vec`): the tag
    /// [`CachedJson`](super::CachedJson) sends for it.
    ///
    /// # Errors
    ///
    /// When serde_json cannot serialise the value.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::ETag;
    ///
    /// assert_eq!(ETag::of_json(&[1, 2]).unwrap(), ETag::of_bytes(b"[1,2]"));
    /// ```
    pub fn of_json<T: Serialize + ?Sized>(value: &T) -> Result<ETag, serde_json::Error> {
        serde_json::to_vec(value).map(|body| ETag::of_bytes(&body))
    }

    /// The weak tag of `value`: SHA-1 of its bincode 2 serde encoding
    /// (standard configuration), truncated to 128 bits, streamed into the
    /// hash without building the encoded bytes or the JSON.
    ///
    /// # Errors
    ///
    /// [`ETagError`] when bincode cannot encode the value: a `Serialize`
    /// impl that fails, a sequence or map of unknown length (as
    /// `#[serde(flatten)]` produces) or `collect_str`. Such values cannot be
    /// stored by `#[cached]` either.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::ETag;
    ///
    /// let tag = ETag::of(&(42_u64, "Ada")).unwrap();
    /// assert_eq!(tag.to_string(), r#"W/"ba2c382281fdef89e33170268214614c""#);
    /// ```
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<ETag, ETagError> {
        let mut hasher = Sha1Writer(sha1_smol::Sha1::new());
        bincode::serde::encode_into_writer(value, &mut hasher, bincode::config::standard())
            .map_err(ETagError)?;
        Ok(ETag::from_digest(hasher.0.digest().bytes(), true))
    }

    fn from_digest(full: [u8; 20], weak: bool) -> ETag {
        let mut digest = [0; ETAG_BYTES];
        digest.copy_from_slice(&full[..ETAG_BYTES]);
        ETag { digest, weak }
    }

    /// Whether the tag is weak (`W/`): derived from a value, not from the
    /// bytes sent.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::ETag;
    ///
    /// assert!(!ETag::of_bytes(b"x").is_weak());
    /// ```
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The tag as an `ETag` header value (quotes and `W/` included).
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, header};
    /// use cache_runtime::http::ETag;
    ///
    /// let tag = ETag::of_bytes(b"hello");
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::ETAG, tag.to_header_value());
    /// assert_eq!(headers[header::ETAG], tag.to_string());
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        let (text, len) = self.text();
        HeaderValue::from_bytes(&text[..len])
            .expect("quotes, `W/` and lowercase hex digits are valid header value bytes")
    }

    /// The opaque tag: 32 lowercase hex digits, without quotes or `W/`.
    pub(super) fn hex(&self) -> [u8; 2 * ETAG_BYTES] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 2 * ETAG_BYTES];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.digest) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }

    /// The text sent: `[W/]"<hex>"`, in a buffer, and its length.
    fn text(&self) -> ([u8; MAX_TEXT_LEN], usize) {
        let mut out = [0; MAX_TEXT_LEN];
        let mut at = 0;
        if self.weak {
            out[..2].copy_from_slice(b"W/");
            at = 2;
        }
        out[at] = b'"';
        out[at + 1..at + 1 + 2 * ETAG_BYTES].copy_from_slice(&self.hex());
        out[at + 1 + 2 * ETAG_BYTES] = b'"';
        (out, at + 2 + 2 * ETAG_BYTES)
    }
}

impl fmt::Display for ETag {
    /// `"<32 hex digits>"` (strong) or `W/"<32 hex digits>"` (weak), as
    /// sent in the header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, len) = self.text();
        // The bytes are ASCII by construction.
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({self})")
    }
}

impl From<ETag> for HeaderValue {
    fn from(tag: ETag) -> HeaderValue {
        tag.to_header_value()
    }
}

impl From<&ETag> for HeaderValue {
    fn from(tag: &ETag) -> HeaderValue {
        tag.to_header_value()
    }
}

/// Feeds bincode's output straight into the hash: no buffer.
struct Sha1Writer(sha1_smol::Sha1);

impl Writer for Sha1Writer {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0.update(bytes);
        Ok(())
    }
}

/// Why [`ETag::of`] could not hash a value: bincode could not encode it.
///
/// # Example
///
/// ```
/// use cache_runtime::http::ETag;
///
/// struct Broken;
///
/// impl serde::Serialize for Broken {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(serde::ser::Error::custom("not today"))
///     }
/// }
///
/// let error = ETag::of(&Broken).unwrap_err();
/// assert!(error.to_string().contains("not today"));
/// ```
#[derive(Debug)]
pub struct ETagError(EncodeError);

impl fmt::Display for ETagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot compute an ETag: bincode cannot encode the value ({}); \
             avoid #[serde(flatten)], unknown-length sequences and collect_str in it",
            self.0
        )
    }
}

impl std::error::Error for ETagError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_128_bit_sha1_in_hex_strong_over_bytes_weak_over_values() {
        // Fixed expectations computed outside Rust (`printf '\x2a\x03Ada' |
        // sha1sum`): a tag must not change between processes, platforms,
        // Rust versions or releases of this crate.
        assert_eq!(
            ETag::of(&(42_u64, "Ada")).unwrap().to_string(),
            r#"W/"ba2c382281fdef89e33170268214614c""#
        );
        // `()` encodes to no bytes: SHA-1 of the empty input.
        assert_eq!(
            ETag::of(&()).unwrap().to_string(),
            r#"W/"da39a3ee5e6b4b0d3255bfef95601890""#
        );
        assert_eq!(
            ETag::of_bytes(b"").to_string(),
            r#""da39a3ee5e6b4b0d3255bfef95601890""#
        );
        let tag = ETag::of_bytes(b"{}");
        assert_eq!(tag.to_header_value(), tag.to_string().as_str());
        assert_eq!(HeaderValue::from(&tag), HeaderValue::from(tag));
        assert_eq!(format!("{tag:?}"), format!("ETag({tag})"));
        assert_eq!(ETag::of_json(&serde_json::json!({})).unwrap(), tag);
    }

    #[test]
    fn a_strong_and_a_weak_tag_of_the_same_digest_differ() {
        let strong = ETag::of_bytes(b"");
        let weak = ETag::of(&()).unwrap();
        assert_eq!(strong.hex(), weak.hex());
        assert_ne!(strong, weak);
    }
}
