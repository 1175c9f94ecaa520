//! The L2 envelope: what a cached value looks like in Redis, in each
//! [`Codec`].
//!
//! # Binary entries (bincode, postcard)
//!
//! ```text
//! offset size  field
//!  0      2    magic "cr"
//!  2      1    format: this layout and how its payload is encoded,
//!              1 = bincode 2 (standard config), 2 = postcard 1
//!  3      1    kind: 0 = value, 1 = negative (cached `None`), 2 = tombstone
//!  4      8    fingerprint of the value type (big endian)
//! 12      8    write time, ms since the Unix epoch
//! 20      8    how long the entry is fresh, ms (after jitter)
//! 28      4    how long the load took, ms (for early refresh)
//! 32      4    how long the entry may be served stale after that, ms
//! 36      2    number of tags, then per tag: 2-byte length, the rendered
//!              tag (UTF-8), 8-byte version the tag had when the value was
//!              loaded (an entry whose tag moved on since is stale)
//! ..      ..   the payload in the format's encoding, empty for a negative
//! ```
//!
//! Format 1 is the only one releases before configurable codecs wrote:
//! their entries read as they did, and a bincode cache writes exactly what
//! they read. A new layout takes a new format byte.
//!
//! # JSON entries
//!
//! One JSON object per entry, the metadata first and the value last, so
//! that a service in another language reads it with its own Redis client
//! and JSON parser (the README's "Codecs" shows one in Python):
//!
//! ```text
//! {"format":1,"kind":"value","fingerprint":"5f0c2a9e1b7d4c38",
//!  "written_at_ms":1764500000000,"ttl_ms":300000,"stale_ms":0,"load_ms":12,
//!  "tags":[["org:7","532017340911238764"]],"value":{"id":7,"name":"Ada"}}
//! ```
//!
//! `kind` is `"value"` or `"negative"` (a cached "not found", without a
//! `value` field); `fingerprint` is the value type's (16 hex digits); the
//! entry is fresh until `written_at_ms + ttl_ms` and may be served stale
//! for `stale_ms` after that; `tags` are `[tag, version]` pairs, the
//! version a decimal string (what the tag's key `<namespace>:<tag> #tag`
//! holds; up to 18 digits, more than a JavaScript number keeps); `value`
//! is what serde_json writes for the value.
//!
//! # Tombstones
//!
//! A tombstone (written by an invalidation instead of deleting the key)
//! holds no value: it is a miss, and it makes the conditional write of a
//! load that started before the invalidation fail (no stale set). It is
//! always a binary format-1 entry of kind 2 with an empty tags section and
//! a random nonce, whatever the writer's codec: any instance invalidates
//! (`prefix.rs` compares an entry's first four bytes with
//! [`tombstone_head`] inside Redis), and every reader recognises one before
//! it looks at codecs. A JSON reader in another language sees bytes that
//! are not JSON (they start with `cr`): a miss for it too.
//!
//! # Decoding
//!
//! Decoding never trusts the bytes: anything that is not exactly one of
//! these layouts, an unknown format, a write time more than a day ahead of
//! our clock, another codec, another value type, a payload over the size
//! limit, a JSON document with a field missing, unknown or of the wrong
//! type, or a payload the codec's decoder rejects is [`DecodeError`], which
//! callers treat as a miss (and overwrite, except another codec's or value
//! type's entry: see below). bincode runs with a byte limit close to the
//! payload size, so a corrupt length field cannot make it allocate more
//! than a small multiple of the bytes actually received; postcard and
//! serde_json read lengths against the bytes they hold, and a JSON entry
//! is refused by its length before it is parsed.
//!
//! # Another codec's or value type's entries
//!
//! The entry records its codec (the format byte, or being JSON) and the
//! value type's fingerprint (`fingerprint.rs`: a digest of its serde
//! structure). An entry whose header, tags and kind are well-formed but
//! whose codec is not the reader's is [`DecodeError::OtherCodec`]; one
//! whose fingerprint is not ours is [`DecodeError::OtherType`]. The reader
//! treats either as a miss and leaves it in place (`store.rs`): the cache
//! or release that wrote it keeps reading it, and two of them do not
//! overwrite each other's entries on every miss. Neither is ever decoded:
//! postcard and bincode bytes can look alike, and a value decoded by the
//! wrong codec could be wrong without an error.

use std::time::Duration;

use bincode::config::{Config, standard};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::clock::{millis, now_ms};
use crate::fingerprint::fingerprint;
use crate::keys::MAX_RENDERED_LEN;
use crate::value::TagVersion;

/// How a cache encodes the values it stores in Redis, set with
/// [`CacheBuilder::codec`](crate::CacheBuilder::codec).
///
/// Every entry records its codec, and a cache decodes only its own
/// codec's entries: another codec's entry under one of its keys (another
/// cache sharing the namespace, or a release that switched codecs) is a
/// miss, left in place for the cache that wrote it, never a wrong value.
/// Tombstones (invalidations) are recognised whatever the codec.
///
/// | codec | what it is for |
/// | --- | --- |
/// | [`Bincode`](Codec::Bincode) | the default, compact and fast; what releases before this option wrote |
/// | [`Json`](Codec::Json) | entries other languages read with their own Redis client and JSON parser |
/// | [`Postcard`](Codec::Postcard) | compact, fast and maintained, with a documented, stable wire format |
///
/// ```
/// use cache_runtime::{Cache, Codec};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// // Entries a Python or Node service can read too.
/// let shared = Cache::builder().namespace("shared").codec(Codec::Json).build().await?;
/// // Rust-only entries in a maintained binary format.
/// let compact = Cache::builder().namespace("app").codec(Codec::Postcard).build().await?;
/// # let _ = (shared, compact);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2 (standard configuration): the default, and the only codec
    /// before this option existed, so the entries those releases wrote stay
    /// readable. The bincode crate is no longer maintained
    /// (RUSTSEC-2025-0141: no known vulnerability, no further releases);
    /// its format is fixed.
    #[default]
    Bincode,
    /// One JSON document per entry (serde_json), the value under `value`
    /// and the metadata beside it: readable from any language. Larger and
    /// slower than the binary codecs. A value must be one JSON can carry
    /// back: map keys that serialise as strings or integers, no NaN or
    /// infinite floats, nested at most 127 deep; a value that cannot be
    /// written is returned and kept in L1 but not stored in Redis
    /// (`Stats::l2_unstorable`), one that cannot be read back is a miss.
    Json,
    /// postcard 1: a maintained serde format with a documented wire format
    /// that its 1.x releases keep stable; about as compact and fast as
    /// bincode.
    Postcard,
}

const MAGIC: [u8; 2] = *b"cr";
/// The format byte of a binary entry with a bincode 2 payload: the first
/// format, kept by tombstones whatever the codec.
const FORMAT_BINCODE: u8 = 1;
/// The format byte of a binary entry with a postcard 1 payload.
const FORMAT_POSTCARD: u8 = 2;
/// The `format` of a JSON entry: bump it when its fields change.
const JSON_FORMAT: u8 = 1;
const HEADER_LEN: usize = 36;
const KIND_VALUE: u8 = 0;
const KIND_NEGATIVE: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Bounds on the tags section, checked before anything is allocated: as
/// many tags as the macro accepts on one entry, each as long as a rendered
/// (and, past 1 KiB, shortened) tag can be.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = MAX_RENDERED_LEN;
/// The most a JSON entry holds besides its value: the fixed fields, and the
/// most tags of the longest length with every byte escaped (`\u00XX`).
const MAX_JSON_HEAD_LEN: usize = 512 + MAX_TAGS * (6 * MAX_TAG_LEN + 32);
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
    /// An unknown format byte (binary) or `format` (JSON): a layout this
    /// release does not know.
    OtherFormatVersion(u8),
    /// A well-formed entry (up to its payload, which is not read) written
    /// with another codec.
    OtherCodec(Codec),
    /// A well-formed entry (up to its payload, which is not read) of
    /// another value type: written by another release, or by a function of
    /// another return type under the same key.
    OtherType,
    BadKind(u8),
    /// Not a JSON entry of ours: not JSON, a field missing, unknown or of
    /// the wrong type, a kind without its value or a value without its
    /// kind.
    BadJson(String),
    TooLarge(usize),
    Payload(String),
}

impl Codec {
    /// The format byte of a binary codec's entries; `None` for JSON.
    fn binary_format(self) -> Option<u8> {
        match self {
            Codec::Bincode => Some(FORMAT_BINCODE),
            Codec::Postcard => Some(FORMAT_POSTCARD),
            Codec::Json => None,
        }
    }
}

/// Whether an entry holds a value or a cached "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Value,
    Negative,
}

fn saturating_u32(duration: Duration) -> u32 {
    duration.as_millis().min(u128::from(u32::MAX)) as u32
}

/// The binary header and tags section.
fn header(
    format: u8,
    kind: u8,
    fingerprint: u64,
    lifetime: Lifetime,
    tags: &[TagVersion],
    capacity: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.extend_from_slice(&MAGIC);
    out.push(format);
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

/// The metadata of a JSON entry, in the order it is written.
#[derive(Serialize)]
struct JsonHead<'a> {
    format: u8,
    kind: Kind,
    fingerprint: String,
    written_at_ms: u64,
    ttl_ms: u64,
    stale_ms: u32,
    load_ms: u32,
    /// `[tag, version]`, the version (a token of up to 18 digits) as a
    /// decimal string: a JSON number that large loses digits in
    /// JavaScript's parser, and the string is what the tag's key in Redis
    /// holds.
    tags: Vec<(&'a str, String)>,
}

/// A JSON entry's metadata as one object: closed for a negative entry,
/// left open after `"value":` for a value to follow.
fn json_head(
    kind: Kind,
    fingerprint: u64,
    lifetime: Lifetime,
    tags: &[TagVersion],
) -> Result<Vec<u8>, String> {
    let head = JsonHead {
        format: JSON_FORMAT,
        kind,
        fingerprint: format!("{fingerprint:016x}"),
        written_at_ms: now_ms(),
        ttl_ms: millis(lifetime.ttl),
        stale_ms: saturating_u32(lifetime.stale),
        load_ms: saturating_u32(lifetime.load),
        tags: tags
            .iter()
            .map(|(tag, version)| (&**tag, version.to_string()))
            .collect(),
    };
    let mut out = serde_json::to_vec(&head).map_err(|error| error.to_string())?;
    if kind == Kind::Value {
        out.pop(); // the closing brace
        out.extend_from_slice(br#","value":"#);
    }
    Ok(out)
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

/// Encodes a value with `codec`. `Err` says why when the value cannot be
/// serialised or its payload exceeds `max_payload`, and how large it was
/// found to be.
pub(crate) fn encode<T: Serialize + DeserializeOwned + 'static>(
    value: &T,
    codec: Codec,
    lifetime: Lifetime,
    tags: &[TagVersion],
    max_payload: usize,
) -> Result<Vec<u8>, Unencodable> {
    let refused = |reason| Unencodable {
        reason,
        encoded_len: 0,
    };
    check_tags(tags).map_err(refused)?;
    let fingerprint = fingerprint::<T>();
    let mut out = match codec.binary_format() {
        Some(format) => header(format, KIND_VALUE, fingerprint, lifetime, tags, 64),
        None => json_head(Kind::Value, fingerprint, lifetime, tags).map_err(refused)?,
    };
    let header_len = out.len();
    let mut payload = Bounded {
        out: &mut out,
        room: max_payload,
        written: 0,
    };
    let serialised = match codec {
        Codec::Bincode => bincode::serde::encode_into_std_write(value, &mut payload, standard())
            .map(drop)
            .map_err(|error| error.to_string()),
        Codec::Postcard => postcard::to_io(value, &mut payload)
            .map(drop)
            .map_err(|error| error.to_string()),
        Codec::Json => {
            serde_json::to_writer(&mut payload, value).map_err(|error| error.to_string())
        }
    };
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
    if codec == Codec::Json {
        out.push(b'}');
    }
    Ok(out)
}

/// Encodes a negative entry (a cached `None`) for values of type `T`.
pub(crate) fn encode_negative<T: DeserializeOwned + 'static>(
    codec: Codec,
    lifetime: Lifetime,
    tags: &[TagVersion],
) -> Result<Vec<u8>, String> {
    check_tags(tags)?;
    let fingerprint = fingerprint::<T>();
    match codec.binary_format() {
        Some(format) => Ok(header(
            format,
            KIND_NEGATIVE,
            fingerprint,
            lifetime,
            tags,
            0,
        )),
        None => json_head(Kind::Negative, fingerprint, lifetime, tags),
    }
}

/// The first four bytes of every tombstone (magic, format, kind): what a
/// script compares an entry's head with to tell a tombstone from a value
/// without reading the value (`prefix.rs`).
pub(crate) fn tombstone_head() -> [u8; 4] {
    [MAGIC[0], MAGIC[1], FORMAT_BINCODE, KIND_TOMBSTONE]
}

/// Encodes a tombstone, the same for every codec (see the module docs). A
/// random nonce makes every tombstone's bytes unique, so a conditional
/// write that read an older one fails too.
pub(crate) fn encode_tombstone() -> Vec<u8> {
    let lifetime = Lifetime {
        ttl: Duration::ZERO,
        stale: Duration::ZERO,
        load: Duration::ZERO,
    };
    let mut out = header(FORMAT_BINCODE, KIND_TOMBSTONE, 0, lifetime, &[], 8);
    out.extend_from_slice(&fastrand::u64(..).to_be_bytes());
    out
}

/// An entry read up to its payload, in whichever codec it was written.
struct Parsed<'a> {
    codec: Codec,
    fingerprint: u64,
    written_at_ms: u64,
    ttl_ms: u64,
    load_ms: u32,
    stale_ms: u32,
    tags: Vec<TagVersion>,
    /// The encoded value; `None` for a negative entry.
    payload: Option<&'a [u8]>,
}

/// Decodes an entry written for values of type `T` by a cache whose codec
/// is `codec`.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    codec: Codec,
    max_payload: usize,
) -> Result<Decoded<T>, DecodeError> {
    let max_payload = max_payload.min(MAX_PAYLOAD_CEILING);
    let entry = match bytes.first() {
        Some(b'{') => parse_json(bytes, max_payload)?,
        _ => parse_binary(bytes)?,
    };
    if entry.written_at_ms > now_ms().saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(DecodeError::BadWriteTime(entry.written_at_ms));
    }
    // Checked last, so that `OtherCodec` and `OtherType` mean a well-formed
    // entry: garbage is overwritten, another codec's or type's entry is
    // left alone.
    if entry.codec != codec {
        return Err(DecodeError::OtherCodec(entry.codec));
    }
    if entry.fingerprint != fingerprint::<T>() {
        return Err(DecodeError::OtherType);
    }
    let value = match entry.payload {
        Some(payload) if payload.len() > max_payload => {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        Some(payload) => Some(decode_payload(codec, payload)?),
        None => None,
    };
    Ok(Decoded {
        value,
        written_at_ms: entry.written_at_ms,
        ttl_ms: entry.ttl_ms,
        load_ms: entry.load_ms,
        stale_ms: entry.stale_ms,
        tags: entry.tags,
    })
}

/// Reads a binary entry's header and tags.
fn parse_binary(bytes: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    let (head, rest) = bytes.split_at(HEADER_LEN);
    if head[0..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let codec = match head[2] {
        FORMAT_BINCODE => Codec::Bincode,
        FORMAT_POSTCARD => Codec::Postcard,
        other => return Err(DecodeError::OtherFormatVersion(other)),
    };
    let kind = head[3];
    if kind == KIND_TOMBSTONE && codec == Codec::Bincode {
        return Err(DecodeError::Tombstone);
    }
    let (tags, payload) = decode_tags(rest)?;
    let payload = match kind {
        KIND_VALUE => Some(payload),
        KIND_NEGATIVE if payload.is_empty() => None,
        other => return Err(DecodeError::BadKind(other)),
    };
    Ok(Parsed {
        codec,
        fingerprint: u64_at(head, 4),
        written_at_ms: u64_at(head, 12),
        ttl_ms: u64_at(head, 20),
        load_ms: u32_at(head, 28),
        stale_ms: u32_at(head, 32),
        tags,
        payload,
    })
}

/// A JSON entry as read: every field required (but `value`, absent from a
/// negative entry), none other allowed. The value is kept as its JSON text,
/// decoded only once the codec and the fingerprint are known to match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry<'a> {
    format: u8,
    kind: Kind,
    fingerprint: &'a str,
    written_at_ms: u64,
    ttl_ms: u64,
    stale_ms: u32,
    load_ms: u32,
    tags: Vec<(Box<str>, String)>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
}

/// A `value` field that is there, `null` included (a unit value), as
/// opposed to an absent one (`#[serde(default)]`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Reads a JSON entry up to its value, refusing one too long to be ours
/// before parsing it.
fn parse_json(bytes: &[u8], max_payload: usize) -> Result<Parsed<'_>, DecodeError> {
    if bytes.len() > max_payload.saturating_add(MAX_JSON_HEAD_LEN) {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let entry: JsonEntry<'_> =
        serde_json::from_slice(bytes).map_err(|error| DecodeError::BadJson(error.to_string()))?;
    if entry.format != JSON_FORMAT {
        return Err(DecodeError::OtherFormatVersion(entry.format));
    }
    let fingerprint = match entry.fingerprint.len() {
        16 if entry.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(entry.fingerprint, 16)
                .map_err(|error| DecodeError::BadJson(error.to_string()))?
        }
        _ => {
            return Err(DecodeError::BadJson(format!(
                "fingerprint {:?} is not 16 hex digits",
                entry.fingerprint
            )));
        }
    };
    if entry.tags.len() > MAX_TAGS || entry.tags.iter().any(|(tag, _)| tag.len() > MAX_TAG_LEN) {
        return Err(DecodeError::BadTags);
    }
    let tags = entry
        .tags
        .into_iter()
        .map(|(tag, version)| match version.parse::<u64>() {
            Ok(number) if number.to_string() == version => Ok((tag, number)),
            _ => Err(DecodeError::BadTags),
        })
        .collect::<Result<Vec<TagVersion>, DecodeError>>()?;
    let payload = match (entry.kind, entry.value) {
        (Kind::Value, Some(value)) => Some(value.get().as_bytes()),
        (Kind::Negative, None) => None,
        (Kind::Value, None) => return Err(DecodeError::BadJson("a value without `value`".into())),
        (Kind::Negative, Some(_)) => {
            return Err(DecodeError::BadJson(
                "a negative entry with a `value`".into(),
            ));
        }
    };
    Ok(Parsed {
        codec: Codec::Json,
        fingerprint,
        written_at_ms: entry.written_at_ms,
        ttl_ms: entry.ttl_ms,
        load_ms: entry.load_ms,
        stale_ms: entry.stale_ms,
        tags,
        payload,
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
    decode_bincode(bytes).map_err(|error| match error {
        DecodeError::Payload(reason) => format!("the arguments do not decode: {reason}"),
        other => format!("the arguments do not decode: {other:?}"),
    })
}

/// Decodes a payload, the whole of it, with `codec`.
fn decode_payload<T: DeserializeOwned>(codec: Codec, payload: &[u8]) -> Result<T, DecodeError> {
    match codec {
        Codec::Bincode => decode_bincode(payload),
        Codec::Postcard => match postcard::take_from_bytes::<T>(payload) {
            Ok((value, [])) => Ok(value),
            Ok((_, trailing)) => Err(DecodeError::Payload(format!(
                "{} trailing bytes",
                trailing.len()
            ))),
            Err(error) => Err(DecodeError::Payload(error.to_string())),
        },
        Codec::Json => {
            serde_json::from_slice(payload).map_err(|error| DecodeError::Payload(error.to_string()))
        }
    }
}

/// How many bytes of claims bincode may make per byte of payload. bincode
/// checks its limit against what decoding would allocate: a string's or a
/// byte buffer's length, but `len * size_of::<T>()` for a container of
/// `len` elements, whatever they take encoded (a `u64` of 1 is one byte,
/// eight in memory; a `None` of `Option<u64>` one byte, sixteen). 64 leaves
/// room for such containers while still refusing a length that claims
/// more than 64 times the payload, which only a lie does, before anything
/// that size is allocated.
const CLAIMS_PER_PAYLOAD_BYTE: usize = 64;

/// Decodes a bincode payload with a byte limit of
/// [`CLAIMS_PER_PAYLOAD_BYTE`] times its length (rounded up a step of the
/// ladder: the limit is a const generic).
fn decode_bincode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
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
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let config = standard();
    match payload.len().saturating_mul(CLAIMS_PER_PAYLOAD_BYTE) {
        0..=262_144 => with_limit(payload, config.with_limit::<{ 256 * KIB }>()),
        262_145..=4_194_304 => with_limit(payload, config.with_limit::<{ 4 * MIB }>()),
        4_194_305..=67_108_864 => with_limit(payload, config.with_limit::<{ 64 * MIB }>()),
        67_108_865..=1_073_741_824 => with_limit(payload, config.with_limit::<{ 1024 * MIB }>()),
        _ => with_limit(
            payload,
            config.with_limit::<{ MAX_PAYLOAD_CEILING * CLAIMS_PER_PAYLOAD_BYTE }>(),
        ),
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
        let bytes = encode(&user(), Codec::Bincode, forever, &[], MAX).unwrap();
        let decoded = decode::<User>(&bytes, Codec::Bincode, MAX).unwrap();
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
        let bytes = encode(&user(), Codec::Bincode, timing, &tags, MAX).unwrap();
        let decoded = decode::<User>(&bytes, Codec::Bincode, MAX).unwrap();
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

    /// bincode checks its byte limit against `len * size_of::<T>()` for a
    /// container of `len` elements, not against the bytes they take: 520
    /// ones as `u64` are 524 bytes encoded and claim 4 160. A limit just
    /// above the payload's length made such values undecodable, so they
    /// were never read back from Redis.
    #[test]
    fn round_trips_containers_of_small_numbers() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Report {
            counts: Vec<u64>,
            maybe: Vec<Option<u64>>,
        }
        for len in [520, 5_000, 100_000] {
            let report = Report {
                counts: vec![1; len],
                maybe: vec![None; len],
            };
            for codec in [Codec::Bincode, Codec::Postcard, Codec::Json] {
                let bytes = encode(&report, codec, lifetime(5_000), &[], MAX).unwrap();
                let decoded = decode::<Report>(&bytes, codec, MAX).unwrap();
                assert_eq!(
                    decoded.value.as_ref(),
                    Some(&report),
                    "{len} with {codec:?}"
                );
            }
        }
        let arguments = (vec![1u64; 5_000], 7u32);
        let queued = encode_arguments(&arguments).unwrap();
        assert_eq!(decode_arguments::<(Vec<u64>, u32)>(&queued), Ok(arguments));
    }

    /// A length prefix that lies is still an error, not an allocation of
    /// what it claims.
    #[test]
    fn a_lying_length_is_refused() {
        let mut bytes = encode_arguments(&vec![1u64; 3]).unwrap();
        // bincode's varint for a u64 length: 253 then 8 bytes.
        let mut lying = vec![253];
        lying.extend_from_slice(&(1u64 << 40).to_le_bytes());
        bytes.splice(0..1, lying);
        assert!(decode_arguments::<Vec<u64>>(&bytes).is_err());
        let mut text = vec![253];
        text.extend_from_slice(&(1u64 << 40).to_le_bytes());
        text.extend_from_slice(b"abc");
        assert!(decode_arguments::<String>(&text).is_err());
    }

    #[test]
    fn round_trips_a_negative() {
        let bytes = encode_negative::<User>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        let decoded = decode::<User>(&bytes, Codec::Bincode, MAX).unwrap();
        assert_eq!(decoded.value, None);
    }

    /// With every codec (a JSON entry of another type is left alone too).
    #[test]
    fn another_type_is_a_miss() {
        for codec in [Codec::Bincode, Codec::Postcard, Codec::Json] {
            let bytes = encode(&user(), codec, lifetime(30_000), &[], MAX).unwrap();
            assert_eq!(
                decode::<String>(&bytes, codec, MAX).unwrap_err(),
                DecodeError::OtherType,
                "{codec:?}"
            );
            let negative = encode_negative::<User>(codec, lifetime(5_000), &[]).unwrap();
            assert_eq!(
                decode::<u64>(&negative, codec, MAX).unwrap_err(),
                DecodeError::OtherType,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn another_format_version_is_a_miss() {
        let mut bytes = encode(&user(), Codec::Bincode, lifetime(30_000), &[], MAX).unwrap();
        bytes[2] = 9;
        assert_eq!(
            decode::<User>(&bytes, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::OtherFormatVersion(9)
        );
    }

    #[test]
    fn tombstones_are_recognised_and_unique() {
        let first = encode_tombstone();
        assert_eq!(
            decode::<User>(&first, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::Tombstone
        );
        assert_ne!(first, encode_tombstone());
        assert_eq!(first[..4], tombstone_head());
    }

    #[test]
    fn a_lying_tags_section_is_rejected() {
        let mut bytes = encode_negative::<User>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        bytes[HEADER_LEN] = 0xFF; // 65 280 tags claimed
        assert_eq!(
            decode::<User>(&bytes, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadTags
        );
        let mut bytes =
            encode_negative::<User>(Codec::Bincode, lifetime(5_000), &[("t".into(), 1)]).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert_eq!(
            decode::<User>(&bytes, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadTags
        );
    }

    #[test]
    fn garbage_is_a_miss() {
        assert_eq!(
            decode::<User>(b"", Codec::Bincode, MAX).unwrap_err(),
            DecodeError::TooShort
        );
        assert_eq!(
            decode::<User>(&[0xFF; 40], Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadMagic
        );
        let mut truncated = encode(&user(), Codec::Bincode, lifetime(30_000), &[], MAX).unwrap();
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(
            decode::<User>(&truncated, Codec::Bincode, MAX),
            Err(DecodeError::Payload(_))
        ));
        let mut trailing = encode(&user(), Codec::Bincode, lifetime(30_000), &[], MAX).unwrap();
        trailing.push(0);
        assert!(matches!(
            decode::<User>(&trailing, Codec::Bincode, MAX),
            Err(DecodeError::Payload(_))
        ));
    }

    #[test]
    fn a_huge_length_field_is_rejected_without_allocating_it() {
        // A valid header, then a string whose varint length claims 2^62 bytes.
        let mut bytes = encode_negative::<String>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        bytes[3] = KIND_VALUE;
        bytes.push(255); // u64 varint marker
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes, Codec::Bincode, MAX),
            Err(DecodeError::Payload(_))
        ));
    }

    #[test]
    fn oversize_payloads_are_refused_both_ways() {
        let big = "x".repeat(2048);
        assert!(encode(&big, Codec::Bincode, lifetime(5_000), &[], 1024).is_err());
        let bytes = encode(&big, Codec::Bincode, lifetime(5_000), &[], MAX).unwrap();
        assert!(matches!(
            decode::<String>(&bytes, Codec::Bincode, 1024),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn a_refused_value_says_how_large_it_is_without_being_kept_whole() {
        let big = vec![7u8; 100_000];
        let whole = encode(&big, Codec::Bincode, lifetime(5_000), &[], MAX).unwrap();
        let refused = encode(&big, Codec::Bincode, lifetime(5_000), &[], 1024).unwrap_err();
        assert_eq!(refused.encoded_len, whole.len());
        assert!(
            refused.reason.contains("over the 1024-byte limit"),
            "{}",
            refused.reason
        );
        // Exactly at the limit is accepted, one byte over is not.
        let payload = whole.len() - HEADER_LEN - 2; // the empty tags section
        assert!(encode(&big, Codec::Bincode, lifetime(5_000), &[], payload).is_ok());
        assert!(encode(&big, Codec::Bincode, lifetime(5_000), &[], payload - 1).is_err());
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
        let refused = encode(&Unsized, Codec::Bincode, lifetime(5_000), &[], MAX).unwrap_err();
        assert!(
            refused.reason.starts_with("cannot serialise"),
            "{}",
            refused.reason
        );
        assert!(refused.encoded_len > 500, "{}", refused.encoded_len);
    }

    #[test]
    fn an_entry_of_another_shape_is_another_type() {
        let bytes = encode(&7u64, Codec::Bincode, lifetime(30_000), &[], MAX).unwrap();
        assert_eq!(
            decode::<i64>(&bytes, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::OtherType
        );
        assert_eq!(
            decode::<u64>(&bytes, Codec::Bincode, MAX).unwrap().value,
            Some(7)
        );
    }

    /// `OtherType` (left in place by the reader) only for a well-formed
    /// entry; garbage behind our magic is rejected for what it is (and
    /// overwritten).
    #[test]
    fn other_type_means_well_formed() {
        let mut bad_kind = encode_negative::<String>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        bad_kind[3] = 9;
        assert_eq!(
            decode::<User>(&bad_kind, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadKind(9)
        );
        let mut future = encode_negative::<String>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        future[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode::<User>(&future, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadWriteTime(u64::MAX)
        );
        let mut bad_tags = encode_negative::<String>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
        bad_tags[HEADER_LEN] = 0xFF;
        assert_eq!(
            decode::<User>(&bad_tags, Codec::Bincode, MAX).unwrap_err(),
            DecodeError::BadTags
        );
    }

    const CODECS: [Codec; 3] = [Codec::Bincode, Codec::Json, Codec::Postcard];

    #[test]
    fn every_codec_round_trips_values_negatives_and_tags() {
        let timing = Lifetime {
            ttl: Duration::from_secs(30),
            stale: Duration::from_secs(10),
            load: Duration::from_millis(12),
        };
        let tags = [("org:7".into(), 3), ("a \"quoted\"\ttag".into(), u64::MAX)];
        for codec in CODECS {
            let bytes = encode(&user(), codec, timing, &tags, MAX).unwrap();
            let decoded = decode::<User>(&bytes, codec, MAX).unwrap();
            assert_eq!(decoded.value, Some(user()), "{codec:?}");
            assert_eq!(
                (decoded.ttl_ms, decoded.load_ms, decoded.stale_ms),
                (30_000, 12, 10_000),
                "{codec:?}"
            );
            assert_eq!(decoded.tags, tags.to_vec(), "{codec:?}");
            assert!(
                decoded.written_at_ms.abs_diff(now_ms()) < 5_000,
                "{codec:?}"
            );

            let negative = encode_negative::<User>(codec, lifetime(5_000), &tags).unwrap();
            let decoded = decode::<User>(&negative, codec, MAX).unwrap();
            assert_eq!((decoded.value, decoded.ttl_ms), (None, 5_000), "{codec:?}");
            assert_eq!(decoded.tags, tags.to_vec(), "{codec:?}");

            // A unit value is `null` in JSON: a value all the same, not a
            // negative entry.
            let unit = encode(&(), codec, lifetime(5_000), &[], MAX).unwrap();
            assert_eq!(decode::<()>(&unit, codec, MAX).unwrap().value, Some(()));
            let nested = Some(Some(0u8));
            let bytes = encode(&nested, codec, lifetime(5_000), &[], MAX).unwrap();
            assert_eq!(decode(&bytes, codec, MAX).unwrap().value, Some(nested));
        }
    }

    /// What a service in another language sees: one JSON object, the value
    /// under `value`, the metadata beside it.
    #[test]
    fn a_json_entry_is_plain_json() {
        let bytes = encode(
            &user(),
            Codec::Json,
            lifetime(30_000),
            &[("org:7".into(), 3)],
            MAX,
        )
        .unwrap();
        let entry: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(entry["format"], 1);
        assert_eq!(entry["kind"], "value");
        assert_eq!(
            entry["fingerprint"],
            format!("{:016x}", fingerprint::<User>())
        );
        assert_eq!(entry["ttl_ms"], 30_000);
        assert_eq!(entry["stale_ms"], 0);
        assert_eq!(entry["tags"], serde_json::json!([["org:7", "3"]]));
        assert_eq!(
            entry["value"],
            serde_json::json!({"id": 7, "name": "Ada", "tags": ["admin"]})
        );
        let negative = encode_negative::<User>(Codec::Json, lifetime(5_000), &[]).unwrap();
        let entry: serde_json::Value = serde_json::from_slice(&negative).unwrap();
        assert_eq!(entry["kind"], "negative");
        assert!(entry.get("value").is_none(), "{entry}");
    }

    /// An entry written before codecs were configurable, laid out by hand
    /// from the documented format 1: still read by a bincode cache.
    #[test]
    fn format_one_bincode_entries_stay_readable() {
        let written_at = now_ms() - 1_000;
        let mut bytes = b"cr\x01\x00".to_vec();
        bytes.extend_from_slice(&fingerprint::<User>().to_be_bytes());
        bytes.extend_from_slice(&written_at.to_be_bytes());
        bytes.extend_from_slice(&60_000u64.to_be_bytes());
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&3u16.to_be_bytes());
        bytes.extend_from_slice(b"t:1");
        bytes.extend_from_slice(&9u64.to_be_bytes());
        bytes.extend_from_slice(&bincode::serde::encode_to_vec(user(), standard()).unwrap());
        let decoded = decode::<User>(&bytes, Codec::Bincode, MAX).unwrap();
        assert_eq!(decoded.value, Some(user()));
        assert_eq!(
            (decoded.written_at_ms, decoded.ttl_ms, decoded.load_ms),
            (written_at, 60_000, 7)
        );
        assert_eq!(decoded.tags, vec![("t:1".into(), 9)]);
        // And a bincode cache still writes exactly that layout.
        let ours = encode(
            &user(),
            Codec::Bincode,
            lifetime(60_000),
            &[("t:1".into(), 9)],
            MAX,
        )
        .unwrap();
        assert_eq!(ours[..4], bytes[..4]);
        assert_eq!(ours[36..], bytes[36..]);
    }

    /// Another codec's entry is never decoded, whatever the pair: a miss
    /// that names the writer's codec (the reader leaves it in place).
    #[test]
    fn another_codec_is_a_miss_never_a_wrong_value() {
        for writer in CODECS {
            let value = encode(&user(), writer, lifetime(30_000), &[], MAX).unwrap();
            let negative = encode_negative::<User>(writer, lifetime(5_000), &[]).unwrap();
            for reader in CODECS.into_iter().filter(|reader| *reader != writer) {
                assert_eq!(
                    decode::<User>(&value, reader, MAX).unwrap_err(),
                    DecodeError::OtherCodec(writer),
                    "{writer:?} read by {reader:?}"
                );
                assert_eq!(
                    decode::<User>(&negative, reader, MAX).unwrap_err(),
                    DecodeError::OtherCodec(writer),
                    "{writer:?} read by {reader:?}"
                );
            }
        }
    }

    #[test]
    fn every_codec_recognises_tombstones() {
        let tombstone = encode_tombstone();
        for codec in CODECS {
            assert_eq!(
                decode::<User>(&tombstone, codec, MAX).unwrap_err(),
                DecodeError::Tombstone,
                "{codec:?}"
            );
        }
        assert!(serde_json::from_slice::<serde_json::Value>(&tombstone).is_err());
    }

    /// A JSON entry that is not exactly ours is a miss, whatever is wrong
    /// with it.
    #[test]
    fn a_json_entry_that_is_not_ours_is_a_miss() {
        let good = String::from_utf8(
            encode(
                &user(),
                Codec::Json,
                lifetime(30_000),
                &[("t".into(), 1)],
                MAX,
            )
            .unwrap(),
        )
        .unwrap();
        let read = |text: &str| decode::<User>(text.as_bytes(), Codec::Json, MAX);
        assert!(read(&good).is_ok());
        let bad_json = |text: &str| matches!(read(text), Err(DecodeError::BadJson(_)));
        assert!(bad_json(&good.replacen(
            r#""format":1"#,
            r#""format":1,"extra":2"#,
            1
        )));
        assert!(bad_json(&good.replacen(
            r#""ttl_ms":"#,
            r#""ttl_ms":"1"#,
            1
        )));
        assert!(bad_json(&good.replacen(
            r#""kind":"value""#,
            r#""kind":"tombstone""#,
            1
        )));
        assert!(bad_json(&good.replacen(
            r#""kind":"value""#,
            r#""kind":"negative""#,
            1
        )));
        assert!(bad_json(&good.replacen(r#","value":"#, r#","other":"#, 1)));
        assert!(bad_json(&good.replacen(
            r#""fingerprint":""#,
            r#""fingerprint":"zz"#,
            1
        )));
        assert!(bad_json(&good[..good.len() - 1]));
        assert!(bad_json("{}"));
        assert!(bad_json("{\"format\":1"));
        assert_eq!(
            read(&good.replacen(r#""format":1"#, r#""format":2"#, 1)).unwrap_err(),
            DecodeError::OtherFormatVersion(2)
        );
        let future = good.replacen(r#""written_at_ms":"#, r#""written_at_ms":9"#, 1);
        assert!(matches!(read(&future), Err(DecodeError::BadWriteTime(_))));
        let tags: Vec<String> = (0..=MAX_TAGS)
            .map(|i| format!("[\"t{i}\",\"1\"]"))
            .collect();
        let many_tags = good.replacen(r#"[["t","1"]]"#, &format!("[{}]", tags.join(",")), 1);
        assert_eq!(read(&many_tags).unwrap_err(), DecodeError::BadTags);
        for version in ["\"01\"", "\"-1\"", "\"x\"", "\"18446744073709551616\""] {
            let bad_version = good.replacen(r#"[["t","1"]]"#, &format!("[[\"t\",{version}]]"), 1);
            assert_eq!(
                read(&bad_version).unwrap_err(),
                DecodeError::BadTags,
                "{version}"
            );
        }
        assert!(bad_json(&good.replacen(
            r#"[["t","1"]]"#,
            r#"[["t",1]]"#,
            1
        )));
        // The value itself of another shape: rejected by serde, a miss.
        let wrong_value = good.replacen(r#""id":7"#, r#""id":"7""#, 1);
        assert!(matches!(read(&wrong_value), Err(DecodeError::Payload(_))));
    }

    #[test]
    fn oversize_json_is_refused_both_ways_before_parsing() {
        let big = "x".repeat(2048);
        assert!(encode(&big, Codec::Json, lifetime(5_000), &[], 1024).is_err());
        let bytes = encode(&big, Codec::Json, lifetime(5_000), &[], MAX).unwrap();
        assert!(matches!(
            decode::<String>(&bytes, Codec::Json, 1024),
            Err(DecodeError::TooLarge(_))
        ));
        // A document far over the limit is refused by its length alone.
        let mut huge = bytes.clone();
        huge.splice(1..1, std::iter::repeat_n(b' ', MAX_JSON_HEAD_LEN + 2048));
        assert!(matches!(
            decode::<String>(&huge, Codec::Json, 1024),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn a_value_json_cannot_write_is_unencodable() {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let refused = encode(&map, Codec::Json, lifetime(5_000), &[], MAX).unwrap_err();
        assert!(
            refused.reason.starts_with("cannot serialise"),
            "{}",
            refused.reason
        );
        assert!(encode(&map, Codec::Postcard, lifetime(5_000), &[], MAX).is_ok());
    }

    #[test]
    fn a_bad_postcard_payload_is_a_miss() {
        let mut truncated = encode(&user(), Codec::Postcard, lifetime(30_000), &[], MAX).unwrap();
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(
            decode::<User>(&truncated, Codec::Postcard, MAX),
            Err(DecodeError::Payload(_))
        ));
        let mut trailing = encode(&user(), Codec::Postcard, lifetime(30_000), &[], MAX).unwrap();
        trailing.push(0);
        assert!(matches!(
            decode::<User>(&trailing, Codec::Postcard, MAX),
            Err(DecodeError::Payload(_))
        ));
        // A string whose varint length claims far more than the bytes held.
        let mut huge = encode_negative::<String>(Codec::Postcard, lifetime(5_000), &[]).unwrap();
        huge[3] = KIND_VALUE;
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        assert!(matches!(
            decode::<String>(&huge, Codec::Postcard, MAX),
            Err(DecodeError::Payload(_))
        ));
    }

    proptest! {
        /// Whatever the bytes, decoding returns (never panics), in every
        /// codec: after a binary header of each format, alone, and as a
        /// JSON entry with one byte changed.
        #[test]
        fn arbitrary_bytes_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..256),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            for codec in CODECS {
                let mut bytes = encode_negative::<User>(Codec::Bincode, lifetime(5_000), &[]).unwrap();
                bytes[2] = codec.binary_format().unwrap_or(FORMAT_POSTCARD);
                bytes[3] = KIND_VALUE;
                bytes.extend_from_slice(&tail);
                let _ = decode::<User>(&bytes, codec, MAX);
                let _ = decode::<User>(&tail, codec, MAX);
                let mut json = encode(&user(), Codec::Json, lifetime(5_000), &[("t".into(), 1)], MAX).unwrap();
                let at = at % json.len();
                json[at] = byte;
                let _ = decode::<User>(&json, codec, MAX);
                let mut opened = b"{".to_vec();
                opened.extend_from_slice(&tail);
                let _ = decode::<User>(&opened, codec, MAX);
            }
        }
    }
}
