//! The two tiers as one store: where values are encoded, read from Redis
//! (the one decoder of an entry), and kept, with the guards that stop an
//! older value from being written over a newer one.
//!
//! - L1 inserts are guarded by the local invalidation epochs (`epochs.rs`):
//!   a load that overlapped an invalidation of its key does not keep its
//!   value in L1.
//! - L2 writes of loaded values are conditional on the key still holding
//!   what was read before the load ([`Prior`]): an invalidation writes a
//!   tombstone, so a load that overlapped it fails its write.
//! - A loaded value is never written over another value type's entry
//!   ([`Prior::Foreign`]): during a rolling deploy two releases whose types
//!   differ would otherwise overwrite each other's entries on every miss.
//!
//! Nothing here knows about flights, locks, refreshes or messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::{Now, jittered, now_ms};
use crate::codec::{self, Codec, DecodeError, Decoded, Lifetime};
use crate::epochs::{Epochs, Snapshot};
use crate::error::Error;
use crate::flight::Marked;
use crate::keys::{KeyBuf, storage_key};
use crate::l1::{Entry, L1, Timing};
use crate::l2::L2;
use crate::logging::Throttle;
use crate::shape::{CacheValue, Loaded, Shape};
use crate::site::Site;
use crate::stats::{Counters, bump};
use crate::value::{AnyValue, Outcome, TagVersion};

/// The tiers of one cache and what guards them.
pub(crate) struct Store {
    namespace: String,
    l1: Option<L1>,
    l2: Option<Arc<L2>>,
    counters: Arc<Counters>,
    epochs: Epochs,
    default_jitter: f64,
    max_value_bytes: usize,
    /// How values are encoded in Redis; entries of another codec are
    /// misses, left in place.
    codec: Codec,
    unstorable_log: Throttle,
    /// Set while invalidations wait to be replayed (`recovery.rs`): Redis
    /// may still hold values they remove, so it is not read.
    l2_reads_held: AtomicBool,
    rejected_log: Throttle,
    /// The clock entries read from Redis are judged by.
    now: Now,
}

/// What a load saw before it started: invalidations after `snapshot` make
/// its result unfit for L1; its tags' versions go with the stored value.
pub(crate) struct Context {
    pub snapshot: Snapshot,
    pub tags: Option<Arc<[TagVersion]>>,
}

/// What Redis held before a load, for its conditional write.
pub(crate) enum Prior {
    Absent,
    /// SHA-1 (hex) of the bytes held.
    Held(String),
    /// A well-formed entry of another value type (`DecodeError::OtherType`),
    /// most likely another release's during a rolling deploy, or of another
    /// codec (`DecodeError::OtherCodec`), another cache's sharing the
    /// namespace. Nothing is written over it: its writer keeps reading it,
    /// and this cache serves its load from L1 until the entry expires or is
    /// invalidated.
    Foreign,
}

impl Prior {
    fn of(bytes: &[u8]) -> Prior {
        Prior::Held(sha1_smol::Sha1::from(bytes).digest().to_string())
    }
}

impl Marked for Prior {
    /// Two priors have one mark only if they are equal (but for a 2^-64
    /// chance between two different digests).
    fn mark(&self) -> u64 {
        match self {
            Prior::Absent => 0,
            Prior::Foreign => 1,
            Prior::Held(digest) => u64::from_str_radix(&digest[..16], 16).unwrap_or(2) | 2,
        }
    }
}

/// A value to write to Redis once the caller's waiters are released.
pub(crate) struct L2Write {
    bytes: Vec<u8>,
    ttl: Duration,
}

/// What a call returns, without the return type itself: a value or a
/// `None`, from which the return value is rebuilt at the very end. A caller
/// holds this, not `R`, across its remaining `.await`s (Redis writes, the
/// lock's release), so its future is `Send` whatever `R` is (see
/// `shape.rs`).
pub(crate) enum Kept<V, N> {
    Value(V),
    None(N),
}

impl<V, N> Kept<V, N> {
    /// The return value.
    #[inline]
    pub(crate) fn returned<R, M: Shape<R, Value = V, None = N>>(self) -> R {
        match self {
            Kept::Value(value) => M::from_value(value),
            Kept::None(none) => M::from_none(none),
        }
    }
}

/// What one call produced: what it returns, what waiters get, what goes
/// to Redis.
pub(crate) struct Served<V, N> {
    pub kept: Kept<V, N>,
    pub outcome: Outcome,
    pub l2_write: Option<L2Write>,
}

impl<V: CacheValue, N> Served<V, N> {
    /// A value read from Redis, for the caller and the flight's waiters.
    pub(crate) fn shared(value: V) -> Served<V, N> {
        Served {
            kept: Kept::Value(V::clone(&value)),
            outcome: Outcome::Value(Arc::new(value)),
            l2_write: None,
        }
    }
}

/// What the body returned when it failed (`Err`): handed back to the caller
/// as it is, at once, never stored or shared.
pub(crate) struct Failed<R>(pub R);

/// What a read of Redis found.
pub(crate) enum Read<V> {
    /// No Redis, or it did not answer (skipped, failed, timed out), or its
    /// reads are held while invalidations wait to be replayed.
    Unavailable,
    /// Redis answered with nothing usable: absent, a tombstone,
    /// undecodable, another type (`Prior::Foreign`), or past its whole
    /// lifetime. Holds what was there, for the conditional write.
    Unusable(Prior),
    /// An entry that may still be served (fresh, or stale within its
    /// window).
    Entry(Found<V>),
}

/// A decoded entry from Redis.
pub(crate) struct Found<V> {
    pub decoded: Decoded<V>,
    /// The bytes read: their length weighs the entry in L1, their hash
    /// (taken only when needed: it costs a pass over the value and an
    /// allocation) is the prior of a conditional write over them.
    pub bytes: Vec<u8>,
    /// The values of the keys read along with the entry.
    pub along: Vec<Option<Vec<u8>>>,
    /// Time left fresh.
    pub fresh: Duration,
    /// Time left servable (fresh + stale).
    pub total: Duration,
}

impl<V> Found<V> {
    /// What Redis held, for a conditional write over it.
    pub(crate) fn prior(&self) -> Prior {
        Prior::of(&self.bytes)
    }

    /// The L1 timing of this entry, carrying `tags`.
    pub(crate) fn timing(&self, tags: Option<Arc<[TagVersion]>>) -> Timing {
        Timing {
            fresh: self.fresh,
            stale: self.total.saturating_sub(self.fresh),
            load_ms: self.decoded.load_ms,
            written_at_ms: self.decoded.written_at_ms,
            tags,
        }
    }
}

impl Store {
    pub(crate) fn new(
        namespace: String,
        l1: Option<L1>,
        l2: Option<Arc<L2>>,
        counters: Arc<Counters>,
        default_jitter: f64,
        max_value_bytes: usize,
        now: Now,
    ) -> Store {
        Store {
            namespace,
            l1,
            l2,
            counters,
            epochs: Epochs::default(),
            default_jitter,
            max_value_bytes,
            codec: Codec::default(),
            unstorable_log: Throttle::default(),
            l2_reads_held: AtomicBool::new(false),
            rejected_log: Throttle::default(),
            now,
        }
    }

    /// The store with values encoded by `codec` (the default is
    /// [`Codec::Bincode`]).
    pub(crate) fn with_codec(self, codec: Codec) -> Store {
        Store { codec, ..self }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn l1(&self) -> Option<&L1> {
        self.l1.as_ref()
    }

    pub(crate) fn l2(&self) -> Option<&Arc<L2>> {
        self.l2.as_ref()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters, for a task that outlives a borrow of the store (a
    /// write-behind worker).
    pub(crate) fn shared_counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub(crate) fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// The key in Redis: `<namespace>:<key>`.
    pub(crate) fn storage_key(&self, key: &str) -> KeyBuf {
        storage_key(&self.namespace, key)
    }

    /// The L1 entry under `key` that may still be served, and when it was read.
    #[inline]
    pub(crate) fn l1_get(&self, key: &str) -> Option<(Entry, u64)> {
        self.l1.as_ref()?.get(key)
    }

    /// The lifetime of a value a `site` stores now, `ttl` jittered.
    pub(crate) fn lifetime(&self, site: &Site, ttl: Duration, load: Duration) -> Lifetime {
        Lifetime {
            ttl: jittered(ttl, site.jitter.unwrap_or(self.default_jitter)),
            stale: site.stale.unwrap_or_default(),
            load,
        }
    }

    /// Encodes a value for Redis: the bytes (`None` when they could not be
    /// encoded, counted and logged), and the value's size, which weighs
    /// its L1 entry: the encoded length, also for a value too large for
    /// Redis (measured to the end), or as far as the encoder got for one
    /// that cannot be serialised (at least the value's own `size_of`).
    pub(crate) fn encode<V: CacheValue>(
        &self,
        site: &'static Site,
        value: &V,
        lifetime: Lifetime,
        tags: &[TagVersion],
    ) -> (Option<Vec<u8>>, usize) {
        match codec::encode(value, self.codec, lifetime, tags, self.max_value_bytes) {
            Ok(bytes) => {
                let size = bytes.len();
                (Some(bytes), size)
            }
            Err(refused) => {
                let size = refused.encoded_len.max(std::mem::size_of::<V>());
                (self.storable(site, Err(refused.reason)), size)
            }
        }
    }

    /// The bytes to store, or `None` (counted and logged) when they could
    /// not be encoded.
    fn storable(&self, site: &Site, encoded: Result<Vec<u8>, String>) -> Option<Vec<u8>> {
        match encoded {
            Ok(bytes) => Some(bytes),
            Err(reason) => {
                bump(&self.counters.l2_unstorable);
                if let Some(suppressed) = self.unstorable_log.admit() {
                    tracing::warn!(function = site.function, template = site.template, %reason, suppressed, "value not stored in Redis");
                }
                None
            }
        }
    }

    /// Inserts into L1, unless the site bypasses it or an invalidation that
    /// concerns the key arrived since `before` (the value may be older).
    /// `size` is the value's size in bytes (its encoded length). An entry
    /// larger than L1 can hold is not kept (counted in `l1_rejected`, and
    /// logged at most once per 10 s).
    pub(crate) fn keep(
        &self,
        site: &'static Site,
        key: &str,
        value: Option<AnyValue>,
        timing: &Timing,
        size: usize,
        before: Snapshot,
    ) {
        if site.l1
            && let Some(l1) = &self.l1
            && self.epochs.unchanged(key, before, timing.tags.is_some())
            && let Err(rejected) = l1.insert(key, value, timing, size)
            && let Some(suppressed) = self.rejected_log.admit()
        {
            tracing::warn!(
                function = site.function,
                template = site.template,
                weight = rejected.weight,
                largest = rejected.largest,
                suppressed,
                "value not kept in L1: its entry is larger than one L1 shard holds (shards are sized by `l1_max_bytes` and `max_value_bytes`: raise them)"
            );
        }
    }

    /// Drops a key from this instance's L1, and keeps in-flight loads of it
    /// from putting their older value back.
    pub(crate) fn drop_local(&self, key: &str) {
        self.epochs.bump_key(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
    }

    /// Drops every L1 entry whose key starts with `prefix`, and keeps loads
    /// that began before from filling L1 (every key's epoch moves on: the
    /// keys a prefix covers cannot be told from their epoch stripes, so all
    /// stripes move, which costs loads of other keys running now one L1
    /// insert each, never a wrong value). How many entries it dropped.
    pub(crate) fn drop_local_prefix(&self, prefix: &str) -> usize {
        self.epochs.bump_every_key();
        self.l1.as_ref().map_or(0, |l1| l1.remove_prefix(prefix))
    }

    pub(crate) fn clear_l1(&self) {
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }

    /// Stops (`true`) or resumes reading Redis: held while invalidations of
    /// this instance wait to be replayed, as Redis may still hold the values
    /// they remove (reads are then misses: bodies run, L1 keeps what this
    /// instance loads itself).
    pub(crate) fn hold_l2_reads(&self, held: bool) {
        self.l2_reads_held.store(held, Ordering::Release);
    }

    /// Reads and decodes the entry under `storage_key`. Errors were counted
    /// and logged by L2; undecodable bytes are counted here. `along` are
    /// read in the same round trip (the tags' versions, `tags.rs`, which say
    /// whether the entry is still current: for the caller to check).
    pub(crate) async fn read<V: CacheValue>(
        &self,
        site: &'static Site,
        storage_key: &str,
        along: &[String],
    ) -> Read<V> {
        let Some(l2) = self.readable_l2() else {
            return Read::Unavailable;
        };
        let (bytes, along) = match l2.get_along(storage_key, along).await {
            Ok((Some(bytes), along)) => (bytes, along),
            Ok((None, _)) => return Read::Unusable(Prior::Absent),
            Err(_) => return Read::Unavailable,
        };
        self.decode_read(site, bytes, along)
    }

    /// Reads and decodes the entries under `storage_keys` in one round trip
    /// (see `L2::get_many`), in order: what [`read`](Store::read) finds
    /// for each, without keys read along.
    pub(crate) async fn read_many<V: CacheValue>(
        &self,
        site: &'static Site,
        storage_keys: &[&str],
    ) -> Vec<Read<V>> {
        let unavailable = || storage_keys.iter().map(|_| Read::Unavailable).collect();
        let Some(l2) = self.readable_l2() else {
            return unavailable();
        };
        match l2.get_many(storage_keys).await {
            Ok(values) => values
                .into_iter()
                .map(|bytes| match bytes {
                    Some(bytes) => self.decode_read(site, bytes, Vec::new()),
                    None => Read::Unusable(Prior::Absent),
                })
                .collect(),
            Err(_) => unavailable(),
        }
    }

    /// Redis, unless there is none or its reads are held (counted).
    fn readable_l2(&self) -> Option<&Arc<L2>> {
        let l2 = self.l2.as_ref()?;
        if self.l2_reads_held.load(Ordering::Acquire) {
            bump(&self.counters.l2_skipped);
            return None;
        }
        Some(l2)
    }

    /// Decodes what Redis held under a key: the one decoder of what this
    /// crate stores there.
    fn decode_read<V: CacheValue>(
        &self,
        site: &'static Site,
        bytes: Vec<u8>,
        along: Vec<Option<Vec<u8>>>,
    ) -> Read<V> {
        let decoded = match codec::decode::<V>(&bytes, self.codec, self.max_value_bytes) {
            Ok(decoded) => decoded,
            Err(DecodeError::Tombstone) => return Read::Unusable(Prior::of(&bytes)),
            Err(reason) => {
                bump(&self.counters.l2_undecodable);
                let (prior, then) = match reason {
                    DecodeError::OtherType | DecodeError::OtherCodec(_) => {
                        (Prior::Foreign, "left in place")
                    }
                    _ => (Prior::of(&bytes), "overwritten"),
                };
                tracing::debug!(
                    function = site.function,
                    template = site.template,
                    ?reason,
                    then,
                    "undecodable value in Redis: treated as a miss"
                );
                return Read::Unusable(prior);
            }
        };
        let now_ms = self.now.ms();
        let total = decoded.total_remaining(now_ms);
        if total.is_zero() {
            return Read::Unusable(Prior::of(&bytes));
        }
        Read::Entry(Found {
            fresh: decoded.fresh_remaining(now_ms),
            total,
            decoded,
            bytes,
            along,
        })
    }

    /// Writes to Redis if the key still holds `prior`. True when written;
    /// a refused write means an invalidation or a newer value got there
    /// first (ours is older: dropped). Failures were counted and logged by
    /// L2; the value is still returned (and in L1). Nothing is written over
    /// another value type's entry ([`Prior::Foreign`]).
    pub(crate) async fn write_if_unchanged(
        &self,
        storage_key: &str,
        write: Option<L2Write>,
        prior: &Prior,
    ) -> bool {
        let Some(write) = write else {
            return false;
        };
        if matches!(prior, Prior::Foreign) {
            bump(&self.counters.l2_foreign_kept);
        }
        matches!(
            self.replace_if_unchanged(storage_key, prior, &write.bytes, write.ttl, None)
                .await,
            Ok(true)
        )
    }

    /// What Redis holds under `storage_key` now, as the prior of a later
    /// conditional write (its digest only: the value is not sent); `None`
    /// without an answer.
    pub(crate) async fn prior(&self, storage_key: &str) -> Option<Prior> {
        match self.l2.as_ref()?.digest(storage_key).await.ok()? {
            None => Some(Prior::Absent),
            Some(digest) => Some(Prior::Held(digest)),
        }
    }

    /// Writes `bytes` if the key still holds `prior`, else `otherwise` (a
    /// tombstone, say) if given. `Ok(true)` when `bytes` were written;
    /// nothing is written over another value type's entry.
    pub(crate) async fn replace_if_unchanged(
        &self,
        storage_key: &str,
        prior: &Prior,
        bytes: &[u8],
        ttl: Duration,
        otherwise: Option<(&[u8], Duration)>,
    ) -> Result<bool, Error> {
        let Some(l2) = &self.l2 else {
            return Ok(false);
        };
        let expected = match prior {
            Prior::Absent => None,
            Prior::Held(sha1) => Some(sha1.as_str()),
            Prior::Foreign => return Ok(false),
        };
        l2.set_if_unchanged(storage_key, expected, bytes, ttl, otherwise)
            .await
    }

    /// Stores what a body returned: a value (and `None`, with `negative`)
    /// in L1 at once, and prepares its Redis write. `Err` is counted, never
    /// stored, and comes back as it is.
    pub(crate) fn store_loaded<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        context: &Context,
        returned: R,
        took: Duration,
    ) -> Result<Served<M::Value, M::None>, Failed<R>> {
        let tags = context.tags.as_deref().unwrap_or_default();
        match M::split(returned) {
            Loaded::Value(value) => {
                let lifetime = self.lifetime(site, site.ttl, took);
                let (bytes, size) = self.encode(site, &value, lifetime, tags);
                let value = Arc::new(value);
                self.keep(
                    site,
                    key,
                    Some(value.clone()),
                    &context.timing(&lifetime),
                    size,
                    context.snapshot,
                );
                Ok(Served {
                    kept: Kept::Value(M::Value::clone(&value)),
                    outcome: Outcome::Value(value),
                    l2_write: bytes.map(|bytes| L2Write {
                        bytes,
                        ttl: lifetime.total(),
                    }),
                })
            }
            Loaded::Absent(none) => {
                let l2_write = site.negative.and_then(|negative| {
                    let lifetime = self.lifetime(site, negative, took);
                    self.keep(
                        site,
                        key,
                        None,
                        &context.timing(&lifetime),
                        0,
                        context.snapshot,
                    );
                    let encoded = codec::encode_negative::<M::Value>(self.codec, lifetime, tags);
                    Some(L2Write {
                        bytes: self.storable(site, encoded)?,
                        ttl: lifetime.total(),
                    })
                });
                Ok(Served {
                    kept: Kept::None(none),
                    outcome: Outcome::Absent,
                    l2_write,
                })
            }
            Loaded::Failed(returned) => {
                bump(&self.counters.load_errors);
                Err(Failed(returned))
            }
        }
    }
}

impl Context {
    /// The L1 timing of a value loaded in this context now.
    pub(crate) fn timing(&self, lifetime: &Lifetime) -> Timing {
        Timing {
            fresh: lifetime.ttl,
            stale: lifetime.stale,
            load_ms: lifetime.load.as_millis().min(u128::from(u32::MAX)) as u32,
            written_at_ms: now_ms(),
            tags: self.tags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape;
    use crate::site::SiteIndex;

    /// A site at the longest lifetimes the runtime can be asked for.
    static FOREVER: Site = Site {
        function: "forever",
        template: "forever:<id>",
        ttl: Duration::MAX,
        jitter: Some(0.1),
        negative: Some(Duration::MAX),
        l1: true,
        lock: false,
        early: None,
        stale: Some(Duration::MAX),
        tag_templates: &[],
        index: SiteIndex::new(),
    };

    #[test]
    fn the_longest_lifetimes_saturate() {
        let counters = Arc::new(Counters::default());
        let l1 = L1::new(
            100,
            1 << 20,
            1 << 20,
            Duration::MAX,
            counters.clone(),
            Now::default(),
        );
        let store = Store::new(
            "test".to_owned(),
            Some(l1),
            None,
            counters,
            0.1,
            1 << 20,
            Now::default(),
        );
        let lifetime = store.lifetime(&FOREVER, Duration::MAX, Duration::MAX);
        assert_eq!(lifetime.total(), Duration::MAX);
        for id in 0..40_u64 {
            let key = format!("forever:{id}");
            let context = Context {
                snapshot: store.epochs().snapshot(&key),
                tags: None,
            };
            let _ = store.store_loaded::<u64, shape::Plain>(
                &FOREVER,
                &key,
                &context,
                id,
                Duration::MAX,
            );
            let (entry, now) = store.l1_get(&key).expect("kept in L1");
            assert!(entry.is_fresh(now), "{id}");
            let key = format!("none:{id}");
            let _ = store.store_loaded::<Option<u64>, shape::Option>(
                &FOREVER,
                &key,
                &context,
                None,
                Duration::MAX,
            );
        }
    }
}
