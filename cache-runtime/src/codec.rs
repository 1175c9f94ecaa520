//! The L2 envelope: what a cached value looks like in Redis.
//!
//! ```text
//! offset size  field
//!  0      2    magic "cr"
//!  2      1    format version (FORMAT_VERSION)
//!  3      1    kind: 0 = value, 1 = negative (cached `None`)
//!  4      8    fingerprint of the value type (big endian)
//! 12      8    write time, ms since the Unix epoch
//! 20      8    how long the entry is fresh, ms (after jitter)
//! 28      4    how long the load took, ms (for early refresh)
//! 32      4    how long the entry may be served stale after that, ms
//! 36      2    number of tags, then per tag: 2-byte length, the rendered
//!              tag (UTF-8), 8-byte version the tag had when the value was
//!              loaded (an entry whose tag moved on since is stale)
//! ..      ..   bincode 2 payload (standard config), empty for a negative
//!
//! A tombstone (kind 2, written by an invalidation instead of deleting the
//! key) holds no value: it is a miss, and it makes the conditional write of
//! a load that started before the invalidation fail (no stale set).
//! ```
//!
//! Decoding never trusts the bytes: anything that is not exactly this layout,
//! another format version, a write time more than a day ahead of our clock,
//! another value type, a payload over the size limit or a payload bincode
//! rejects is [`DecodeError`], which callers treat as a miss (and
//! overwrite, except another value type's entry: see below). bincode runs
//! with a byte limit close to the payload size, so a corrupt length field
//! cannot make it allocate more than a small multiple of the bytes actually
//! received.
//!
//! # Another value type's entries
//!
//! The header carries the value type's fingerprint (`fingerprint.rs`: a
//! digest of its serde structure). An entry whose header, tags and kind are
//! well-formed but whose fingerprint is not ours is
//! [`DecodeError::OtherType`]. The reader treats
//! it as a miss and leaves it in place (`store.rs`): the release that wrote
//! it keeps reading it, and two releases do not overwrite each other's
//! entries on every miss.

use std::time::Duration;

use bincode::config::{Config, standard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::{millis, now_ms};
use crate::fingerprint::fingerprint;
use crate::keys::MAX_RENDERED_LEN;
use crate::value::TagVersion;

const MAGIC: [u8; 2] = *b"cr";
/// Bump when the layout or the payload encoding changes: older entries then
/// read as a miss instead of being misread.
pub(crate) const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 36;
const KIND_VALUE: u8 = 0;
const KIND_NEGATIVE: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Bounds on the tags section, checked before anything is allocated: as
/// many tags as the macro accepts on one entry, each as long as a rendered
/// (and, past 1 KiB, shortened) tag can be.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = MAX_RENDERED_LEN;
/// How far ahead of our clock a writer's may be. An entry written later
/// than that was not written by a live instance: garbage, not another
/// release's entry.
const MAX_CLOCK_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// The hard ceiling for one payload, whatever the configuration says.
pub(crate) const MAX_PAYLOAD_CEILING: usize = 64 << 20;

/// What was decoded from an envelope.
#[derive(Debug, PartialEq)]
pub(crate) struct Decoded<T> {
    /// `None` for a negative entry.
    pub value: Option<T>,
    pub written_at_ms: u64,
    pub ttl_ms: u64,
    pub load_ms: u32,
    pub stale_ms: u32,
    pub tags: Vec<TagVersion>,
}

impl<T> Decoded<T> {
    /// Time left before the entry stops being fresh, by the writer's clock
    /// and ours.
    pub fn fresh_remaining(&self, now_ms: u64) -> Duration {
        let fresh_until = self.written_at_ms.saturating_add(self.ttl_ms);
        Duration::from_millis(fresh_until.saturating_sub(now_ms).min(self.ttl_ms))
    }

    /// Time left before the entry may not be served at all (fresh + stale).
    pub fn total_remaining(&self, now_ms: u64) -> Duration {
        let lifetime = self.ttl_ms.saturating_add(u64::from(self.stale_ms));
        let expires_at = self.written_at_ms.saturating_add(lifetime);
        Duration::from_millis(expires_at.saturating_sub(now_ms).min(lifetime))
    }
}

/// The timing written with an entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    /// How long the entry is fresh.
    pub ttl: Duration,
    /// How long it may be served stale after that.
    pub stale: Duration,
    /// How long the load took.
    pub load: Duration,
}

impl Lifetime {
    /// How long Redis keeps the entry (saturating: lifetimes are bounded
    /// by the macro, but never trusted not to overflow).
    pub fn total(&self) -> Duration {
        self.ttl.saturating_add(self.stale)
    }
}

/// Why bytes from Redis were not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    TooShort,
    /// Written by an invalidation: a miss, not a fault.
    Tombstone,
    BadMagic,
    BadTags,
    /// Written later than our clock allows for (see `MAX_CLOCK_AHEAD_MS`).
    BadWriteTime(u64),
    OtherFormatVersion(u8),
    /// A well-formed entry (up to its payload, which is not read) of
    /// another value type: written by another release, or by a function of
    /// another return type under the same key.
    OtherType,
    BadKind(u8),
    TooLarge(usize),
    Payload(String),
}

fn header(
    kind: u8,
    fingerprint: u64,
    lifetime: Lifetime,
    tags: &[TagVersion],
    capacity: usize,
) -> Vec<u8> {
    let saturating_u32 = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
    out.extend_from_slice(&fingerprint.to_be_bytes());
    out.extend_from_slice(&now_ms().to_be_bytes());
    out.extend_from_slice(&millis(lifetime.ttl).to_be_bytes());
    out.extend_from_slice(&saturating_u32(lifetime.load).to_be_bytes());
    out.extend_from_slice(&saturating_u32(lifetime.stale).to_be_bytes());
    // Within the bounds (`check_tags`): a `u16` holds both counts.
    out.extend_from_slice(&(tags.len() as u16).to_be_bytes());
    for (tag, version) in tags {
        out.extend_from_slice(&(tag.len() as u16).to_be_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
    }
    out
}

/// Refuses tags the envelope cannot hold whole. Generated code never
/// produces them (the macro refuses more than 64 tags, and rendering
/// shortens long tags); a tag cut or dropped would never be invalidated.
fn check_tags(tags: &[TagVersion]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags, over the {MAX_TAGS} an entry can carry",
            tags.len()
        ));
    }
    match tags.iter().find(|(tag, _)| tag.len() > MAX_TAG_LEN) {
        Some((tag, _)) => Err(format!(
            "a {}-byte tag, over the {MAX_TAG_LEN} bytes an entry can carry",
            tag.len()
        )),
        None => Ok(()),
    }
}

/// Why a value was not encoded, and how far the encoder got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unencodable {
    pub reason: String,
    /// The envelope's length as far as it was encoded: the whole of it when
    /// the payload was over the limit (the encoder runs to the end without
    /// keeping the bytes past it), the bytes produced before the serialiser
    /// failed otherwise. What an L1 entry of the value weighs.
    pub encoded_len: usize,
}

/// Where the payload is encoded: into `out` up to `room` bytes, then only
/// counted, so a value too large for Redis is measured without being
/// copied whole.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
    written: usize,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(bytes.len());
        if self.written <= self.room {
            self.out.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a value. `Err` says why when the value cannot be serialised or
/// its payload exceeds `max_payload`, and how large it was found to be.
pub(crate) fn encode<T: Serialize + DeserializeOwned + 'static>(
    value: &T,
    lifetime: Lifetime,
    tags: &[TagVersion],
    max_payload: usize,
) -> Result<Vec<u8>, Unencodable> {
    check_tags(tags).map_err(|reason| Unencodable {
        reason,
        encoded_len: 0,
    })?;
    let mut out = header(KIND_VALUE, fingerprint::<T>(), lifetime, tags, 64);
    let header_len = out.len();
    let mut payload = Bounded {
        out: &mut out,
        room: max_payload,
        written: 0,
    };
    let serialised = bincode::serde::encode_into_std_write(value, &mut payload, standard());
    let written = payload.written;
    let encoded_len = header_len.saturating_add(written);
    if let Err(error) = serialised {
        return Err(Unencodable {
            reason: format!("cannot serialise the value: {error}"),
            encoded_len,
        });
    }
    if written > max_payload {
        return Err(Unencodable {
            reason: format!(
                "the value is {written} bytes, over the {max_payload}-byte limit (raise `max_value_bytes`)"
            ),
            encoded_len,
        });
    }
    Ok(out)
}

/// Encodes a negative entry (a cached `None`) for values of type `T`.
pub(crate) fn encode_negative<T: DeserializeOwned + 'static>(
    lifetime: Lifetime,
    tags: &[TagVersion],
) -> Result<Vec<u8>, String> {
    check_tags(tags)?;
    Ok(header(KIND_NEGATIVE, fingerprint::<T>(), lifetime, tags, 0))
}

/// The first four bytes of every tombstone (magic, format version, kind):
/// what a script compares an entry's head with to tell a tombstone from a
/// value without reading the value (`prefix.rs`).
pub(crate) fn tombstone_head() -> [u8; 4] {
    [MAGIC[0], MAGIC[1], FORMAT_VERSION, KIND_TOMBSTONE]
}

/// Encodes a tombstone. A random nonce makes every tombstone's bytes
/// unique, so a conditional write that read an older one fails too.
pub(crate) fn encode_tombstone() -> Vec<u8> {
    let lifetime = Lifetime {
        ttl: Duration::ZERO,
        stale: Duration::ZERO,
        load: Duration::ZERO,
    };
    let mut out = header(KIND_TOMBSTONE, 0, lifetime, &[], 8);
    out.extend_from_slice(&fastrand::u64(..).to_be_bytes());
    out
}

/// Decodes an envelope written for values of type `T`.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    max_payload: usize,
) -> Result<Decoded<T>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    let (head, rest) = bytes.split_at(HEADER_LEN);
    if head[0..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if head[2] != FORMAT_VERSION {
        return Err(DecodeError::OtherFormatVersion(head[2]));
    }
    let kind = head[3];
    if kind == KIND_TOMBSTONE {
        return Err(DecodeError::Tombstone);
    }
    let written_at_ms = u64_at(head, 12);
    if written_at_ms > now_ms().saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(DecodeError::BadWriteTime(written_at_ms));
    }
    let ttl_ms = u64_at(head, 20);
    let load_ms = u32_at(head, 28);
    let stale_ms = u32_at(head, 32);
    let (tags, payload) = decode_tags(rest)?;
    match kind {
        KIND_VALUE => {}
        KIND_NEGATIVE if payload.is_empty() => {}
        other => return Err(DecodeError::BadKind(other)),
    }
    // Checked last, so that `OtherType` means a well-formed entry: garbage
    // is overwritten, another type's entry is left alone.
    if u64_at(head, 4) != fingerprint::<T>() {
        return Err(DecodeError::OtherType);
    }
    let value = if kind == KIND_VALUE {
        if payload.len() > max_payload.min(MAX_PAYLOAD_CEILING) {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        Some(decode_payload(payload)?)
    } else {
        None
    };
    Ok(Decoded {
        value,
        written_at_ms,
        ttl_ms,
        load_ms,
        stale_ms,
        tags,
    })
}

/// Reads the tags section; every length is checked against the bytes left
/// before it is used.
fn decode_tags(bytes: &[u8]) -> Result<(Vec<TagVersion>, &[u8]), DecodeError> {
    let take = |bytes: &mut &[u8], n: usize| -> Result<Vec<u8>, DecodeError> {
        if bytes.len() < n {
            return Err(DecodeError::BadTags);
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head.to_vec())
    };
    let mut rest = bytes;
    let count = u16::from_be_bytes(take(&mut rest, 2)?.try_into().expect("2 bytes")) as usize;
    if count > MAX_TAGS {
        return Err(DecodeError::BadTags);
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u16::from_be_bytes(take(&mut rest, 2)?.try_into().expect("2 bytes")) as usize;
        if len > MAX_TAG_LEN {
            return Err(DecodeError::BadTags);
        }
        let tag = String::from_utf8(take(&mut rest, len)?).map_err(|_| DecodeError::BadTags)?;
        let version = u64::from_be_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
        tags.push((tag.into_boxed_str(), version));
    }
    Ok((tags, rest))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A write-behind's arguments as queued (bincode, no envelope: the queue
/// entry carries the arguments' fingerprint beside them, see `queue.rs`).
pub(crate) fn encode_arguments<T: Serialize>(arguments: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(arguments, standard()).map_err(|error| error.to_string())
}

/// Queued arguments back, bounded as a payload is: bad bytes are an error,
/// never a panic or a huge allocation.
pub(crate) fn decode_arguments<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    decode_payload(bytes).map_err(|error| match error {
        DecodeError::Payload(reason) => format!("the arguments do not decode: {reason}"),
        other => format!("the arguments do not decode: {other:?}"),
    })
}

/// Decodes a payload with a bincode byte limit just above its length.
///
/// Through serde, bincode claims limit bytes only for strings and byte
/// buffers, and exactly their length, so a valid payload never claims more
/// than its own size; the limit is a const generic, hence the ladder.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    fn with_limit<T: DeserializeOwned, C: Config>(
        payload: &[u8],
        config: C,
    ) -> Result<T, DecodeError> {
        match bincode::serde::decode_from_slice::<T, C>(payload, config) {
            Ok((value, read)) if read == payload.len() => Ok(value),
            Ok((_, read)) => Err(DecodeError::Payload(format!(
                "{} trailing bytes",
                payload.len() - read
            ))),
            Err(error) => Err(DecodeError::Payload(error.to_string())),
        }
    }
    let config = standard();
    match payload.len() {
        0..=4096 => with_limit(payload, config.with_limit::<4096>()),
        4097..=65_536 => with_limit(payload, config.with_limit::<65_536>()),
        65_537..=1_048_576 => with_limit(payload, config.with_limit::<1_048_576>()),
        1_048_577..=16_777_216 => with_limit(payload, config.with_limit::<16_777_216>()),
        _ => with_limit(payload, config.with_limit::<MAX_PAYLOAD_CEILING>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }

    fn user() -> User {
        User {
            id: 7,
            name: "Ada".into(),
            tags: vec!["admin".into()],
        }
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn the_longest_lifetimes_saturate() {
        let forever = Lifetime {
            ttl: Duration::MAX,
            stale: Duration::MAX,
            load: Duration::MAX,
        };
        assert_eq!(forever.total(), Duration::MAX);
        let bytes = encode(&user(), forever, &[], MAX).unwrap();
        let decoded = decode::<User>(&bytes, MAX).unwrap();
        let now = now_ms();
        let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
        assert!(decoded.fresh_remaining(now) > ten_years);
        assert!(decoded.total_remaining(now) > ten_years);
    }

    fn lifetime(ttl_ms: u64) -> Lifetime {
        Lifetime {
            ttl: Duration::from_millis(ttl_ms),
            stale: Duration::ZERO,
            load: Duration::ZERO,
        }
    }

    #[test]
    fn round_trips_a_value() {
        let timing = Lifetime {
            ttl: Duration::from_secs(30),
            stale: Duration::from_secs(10),
            load: Duration::from_millis(12),
        };
        let tags = [("org:7".into(), 3)];
        let bytes = encode(&user(), timing, &tags, MAX).unwrap();
        let decoded = decode::<User>(&bytes, MAX).unwrap();
        assert_eq!(decoded.value, Some(user()));
        assert_eq!(decoded.ttl_ms, 30_000);
        assert_eq!(decoded.load_ms, 12);
        assert_eq!(decoded.stale_ms, 10_000);
        assert_eq!(decoded.tags, vec![("org:7".into(), 3)]);
        assert!(decoded.fresh_remaining(now_ms()) <= Duration::from_secs(30));
        assert!(decoded.fresh_remaining(now_ms()) > Duration::from_secs(29));
        assert!(decoded.total_remaining(now_ms()) > Duration::from_secs(39));
        assert!(decoded.fresh_remaining(now_ms() + 35_000).is_zero());
        assert!(decoded.total_remaining(now_ms() + 35_000) > Duration::from_secs(4));
    }

    #[test]
    fn round_trips_a_negative() {
        let bytes = encode_negative::<User>(lifetime(5_000), &[]).unwrap();
        let decoded = decode::<User>(&bytes, MAX).unwrap();
        assert_eq!(decoded.value, None);
    }

    #[test]
    fn another_type_is_a_miss() {
        let bytes = encode(&user(), lifetime(30_000), &[], MAX).unwrap();
        assert_eq!(
            decode::<String>(&bytes, MAX).unwrap_err(),
            DecodeError::OtherType
        );
        let negative = encode_negative::<User>(lifetime(5_000), &[]).unwrap();
        assert_eq!(
            decode::<u64>(&negative, MAX).unwrap_err(),
            DecodeError::OtherType
        );
    }

    #[test]
    fn another_format_version_is_a_miss() {
        let mut bytes = encode(&user(), lifetime(30_000), &[], MAX).unwrap();
        bytes[2] = FORMAT_VERSION + 1;
        assert_eq!(
            decode::<User>(&bytes, MAX).unwrap_err(),
            DecodeError::OtherFormatVersion(FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn tombstones_are_recognised_and_unique() {
        let first = encode_tombstone();
        assert_eq!(
            decode::<User>(&first, MAX).unwrap_err(),
            DecodeError::Tombstone
        );
        assert_ne!(first, encode_tombstone());
        assert_eq!(first[..4], tombstone_head());
    }

    #[test]
    fn a_lying_tags_section_is_rejected() {
        let mut bytes = encode_negative::<User>(lifetime(5_000), &[]).unwrap();
        bytes[HEADER_LEN] = 0xFF; // 65 280 tags claimed
        assert_eq!(
            decode::<User>(&bytes, MAX).unwrap_err(),
            DecodeError::BadTags
        );
        let mut bytes = encode_negative::<User>(lifetime(5_000), &[("t".into(), 1)]).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert_eq!(
            decode::<User>(&bytes, MAX).unwrap_err(),
            DecodeError::BadTags
        );
    }

    #[test]
    fn garbage_is_a_miss() {
        assert_eq!(decode::<User>(b"", MAX).unwrap_err(), DecodeError::TooShort);
        assert_eq!(
            decode::<User>(&[0xFF; 40], MAX).unwrap_err(),
            DecodeError::BadMagic
        );
        let mut truncated = encode(&user(), lifetime(30_000), &[], MAX).unwrap();
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(
            decode::<User>(&truncated, MAX),
            Err(DecodeError::Payload(_))
        ));
        let mut trailing = encode(&user(), lifetime(30_000), &[], MAX).unwrap();
        trailing.push(0);
        assert!(matches!(
            decode::<User>(&trailing, MAX),
            Err(DecodeError::Payload(_))
        ));
    }

    #[test]
    fn a_huge_length_field_is_rejected_without_allocating_it() {
        // A valid header, then a string whose varint length claims 2^62 bytes.
        let mut bytes = encode_negative::<String>(lifetime(5_000), &[]).unwrap();
        bytes[3] = KIND_VALUE;
        bytes.push(255); // u64 varint marker
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes, MAX),
            Err(DecodeError::Payload(_))
        ));
    }

    #[test]
    fn oversize_payloads_are_refused_both_ways() {
        let big = "x".repeat(2048);
        assert!(encode(&big, lifetime(5_000), &[], 1024).is_err());
        let bytes = encode(&big, lifetime(5_000), &[], MAX).unwrap();
        assert!(matches!(
            decode::<String>(&bytes, 1024),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn a_refused_value_says_how_large_it_is_without_being_kept_whole() {
        let big = vec![7u8; 100_000];
        let whole = encode(&big, lifetime(5_000), &[], MAX).unwrap();
        let refused = encode(&big, lifetime(5_000), &[], 1024).unwrap_err();
        assert_eq!(refused.encoded_len, whole.len());
        assert!(
            refused.reason.contains("over the 1024-byte limit"),
            "{}",
            refused.reason
        );
        // Exactly at the limit is accepted, one byte over is not.
        let payload = whole.len() - HEADER_LEN - 2; // the empty tags section
        assert!(encode(&big, lifetime(5_000), &[], payload).is_ok());
        assert!(encode(&big, lifetime(5_000), &[], payload - 1).is_err());
    }

    /// A sequence of unknown length cannot be encoded; what was produced
    /// before the failure is still measured.
    #[test]
    fn a_value_that_cannot_be_serialised_reports_how_far_it_got() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&"x".repeat(500))?;
                tuple.serialize_element(&Unknown)?;
                tuple.end()
            }
        }
        struct Unknown;
        impl Serialize for Unknown {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                serializer.serialize_seq(None)?.end()
            }
        }
        impl<'de> Deserialize<'de> for Unsized {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Err(serde::de::Error::custom("never read"))
            }
        }
        let refused = encode(&Unsized, lifetime(5_000), &[], MAX).unwrap_err();
        assert!(
            refused.reason.starts_with("cannot serialise"),
            "{}",
            refused.reason
        );
        assert!(refused.encoded_len > 500, "{}", refused.encoded_len);
    }

    #[test]
    fn an_entry_of_another_shape_is_another_type() {
        let bytes = encode(&7u64, lifetime(30_000), &[], MAX).unwrap();
        assert_eq!(
            decode::<i64>(&bytes, MAX).unwrap_err(),
            DecodeError::OtherType
        );
        assert_eq!(decode::<u64>(&bytes, MAX).unwrap().value, Some(7));
    }

    /// `OtherType` (left in place by the reader) only for a well-formed
    /// entry; garbage behind our magic is rejected for what it is (and
    /// overwritten).
    #[test]
    fn other_type_means_well_formed() {
        let mut bad_kind = encode_negative::<String>(lifetime(5_000), &[]).unwrap();
        bad_kind[3] = 9;
        assert_eq!(
            decode::<User>(&bad_kind, MAX).unwrap_err(),
            DecodeError::BadKind(9)
        );
        let mut future = encode_negative::<String>(lifetime(5_000), &[]).unwrap();
        future[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode::<User>(&future, MAX).unwrap_err(),
            DecodeError::BadWriteTime(u64::MAX)
        );
        let mut bad_tags = encode_negative::<String>(lifetime(5_000), &[]).unwrap();
        bad_tags[HEADER_LEN] = 0xFF;
        assert_eq!(
            decode::<User>(&bad_tags, MAX).unwrap_err(),
            DecodeError::BadTags
        );
    }

    proptest! {
        /// Whatever the bytes, decoding returns (never panics).
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = encode_negative::<User>(lifetime(5_000), &[]).unwrap();
            bytes[3] = KIND_VALUE;
            bytes.extend_from_slice(&tail);
            let _ = decode::<User>(&bytes, MAX);
            let _ = decode::<User>(&tail, MAX);
        }
    }
}
