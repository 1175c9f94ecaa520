//! What the cache keeps under a Redis key, read from outside the runtime,
//! so a test can assert what a key holds (a tombstone, a value with given
//! content) rather than only what it does not hold (which an absent key
//! also satisfies).
//!
//! Reads the envelope of `cache-runtime/src/codec.rs` (its layout is
//! documented there): magic `cr`, format version 1, a kind byte, then the
//! timing fields. A new format version reads as [`Stored::Other`], which
//! no test expects: change this reader with the format.

use std::time::Duration;

use crate::RedisServer;

const MAGIC: &[u8; 2] = b"cr";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 36;

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Nothing: the key does not exist.
    Absent,
    /// The tombstone an invalidation leaves.
    Tombstone,
    /// A cached value (or a cached `None`, `negative` set).
    Entry(StoredEntry),
    /// Bytes that are no envelope of the known format.
    Other(Vec<u8>),
}

/// A cached value's envelope.
#[derive(Clone, PartialEq)]
pub struct StoredEntry {
    /// A cached `None` (`negative`).
    pub negative: bool,
    /// How long it is fresh from its write (its jittered TTL).
    pub fresh: Duration,
    /// How long it may be served stale after that.
    pub stale: Duration,
    /// The whole envelope (the serialised value is its tail).
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for StoredEntry {
    /// The envelope as text (escaped), where the value's strings can be read.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEntry")
            .field("negative", &self.negative)
            .field("fresh", &self.fresh)
            .field("stale", &self.stale)
            .field("bytes", &self.bytes.escape_ascii().to_string())
            .finish()
    }
}

impl Stored {
    /// What `bytes` (a `GET` reply, `None` for an absent key) hold.
    pub fn of(bytes: Option<Vec<u8>>) -> Stored {
        let Some(bytes) = bytes else {
            return Stored::Absent;
        };
        if bytes.len() < HEADER_LEN || &bytes[..2] != MAGIC || bytes[2] != FORMAT_VERSION {
            return Stored::Other(bytes);
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        match bytes[3] {
            kind @ (0 | 1) => Stored::Entry(StoredEntry {
                negative: kind == 1,
                fresh: Duration::from_millis(u64_at(20)),
                stale: Duration::from_millis(u64::from(u32_at(32))),
                bytes,
            }),
            2 => Stored::Tombstone,
            _ => Stored::Other(bytes),
        }
    }

    /// Whether this is a value whose serialised form contains `text` (a
    /// string field of the value: bincode writes strings as their bytes).
    pub fn holds(&self, text: &str) -> bool {
        match self {
            Stored::Entry(entry) if text.is_empty() => !entry.negative,
            Stored::Entry(entry) => {
                !entry.negative
                    && entry
                        .bytes
                        .windows(text.len())
                        .any(|window| window == text.as_bytes())
            }
            _ => false,
        }
    }
}

impl RedisServer {
    /// What the key holds now.
    ///
    /// ```no_run
    /// use cache_test_support::{RedisServer, Stored};
    /// let server = RedisServer::start();
    /// assert_eq!(server.stored("app:user:1"), Stored::Absent);
    /// ```
    pub fn stored(&self, key: &str) -> Stored {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query(&mut self.client())
            .expect("GET from the test redis-server");
        Stored::of(bytes)
    }

    /// How long before the key expires (`PTTL`); `None` when it is absent
    /// or has no expiry.
    pub fn time_to_live(&self, key: &str) -> Option<Duration> {
        let millis: i64 = redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.client())
            .expect("PTTL on the test redis-server");
        u64::try_from(millis).ok().map(Duration::from_millis)
    }
}
