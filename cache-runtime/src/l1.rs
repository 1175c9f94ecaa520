//! L1: the in-process tier, holding typed values behind an `Arc`.
//!
//! A hit is a hash lookup, an expiry check and a clone of the `Arc`; the
//! caller then clones the value out. Nothing is serialised. Built on
//! `quick_cache` (sharded, S3-FIFO eviction): measured in
//! `benches/l1_structures.rs`, a `get` of an `Arc` costs a fraction of moka's.
//!
//! Bounds: an entry weighs its value's size (its encoded length, measured
//! also for values too large for Redis), its key and [`ENTRY_OVERHEAD`],
//! and at least `max_bytes / max_entries`; at most `max_bytes` of weight
//! fit, so the tier holds at most `max_entries` entries *and* about
//! `max_bytes` bytes, with one weighted structure.
//!
//! Shards: quick_cache splits the budget into equal shards (one lock each)
//! and an entry must fit in its shard's part. Left to itself it takes four
//! shards per core, so a 1 MiB budget on two cores was eight 128 KiB shards
//! and silently turned away every 256 KiB value. Here the shard count is
//! chosen so that one shard holds a value of `largest_value` (the largest
//! value Redis takes, `max_value_bytes`): at most four per core, fewer (down
//! to one) when the budget is small. An entry that still does not fit is
//! not kept, and is counted in `l1_rejected` (not as an eviction).
//!
//! Expiry lives in the entry itself (its own jittered TTL, capped by the L1
//! lifetime cap) and is checked on read against a coarse monotonic clock
//! (`clock::coarse_now_nanos`, moved by a test clock when the cache has one).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use quick_cache::{Lifecycle, Weighter};

use crate::clock::{Now, nanos};
use crate::stats::{Counters, bump};
use crate::value::{AnyValue, TagVersion};

#[derive(Clone)]
pub(crate) struct Entry {
    pub value: Option<AnyValue>,
    /// Until when the entry is fresh (coarse clock, ns).
    pub fresh_until: u64,
    /// Until when it may be served at all, stale after `fresh_until`.
    expires_at: u64,
    /// How long the load that produced it took, for early refresh.
    pub load_ms: u32,
    /// When it was written (wall clock, ms), to spot a newer copy in Redis.
    pub written_at_ms: u64,
    /// The tags it carries, at the versions they had when it was loaded.
    pub tags: Option<Arc<EntryTags>>,
    weight: u64,
}

/// An entry's tags: their versions when it was loaded, and when they were
/// last found current, so that a hit checks them again only after the
/// remembered versions changed (see `Tags::current`).
pub(crate) struct EntryTags {
    pub versions: Arc<[TagVersion]>,
    /// The value of the remembered versions' change count at the last check
    /// that found every tag current; [`EntryTags::UNCHECKED`] before one.
    pub checked_at: AtomicU64,
}

impl EntryTags {
    /// No check yet: the change count never reaches it.
    pub(crate) const UNCHECKED: u64 = u64::MAX;
}

impl Entry {
    #[inline]
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        now < self.fresh_until
    }
}

/// What `L1::insert` stores besides the value.
pub(crate) struct Timing {
    pub fresh: Duration,
    pub stale: Duration,
    pub load_ms: u32,
    pub written_at_ms: u64,
    pub tags: Option<Arc<[TagVersion]>>,
}

#[derive(Clone)]
struct EntryWeighter;

impl Weighter<Box<str>, Entry> for EntryWeighter {
    #[inline]
    fn weight(&self, _key: &Box<str>, entry: &Entry) -> u64 {
        entry.weight
    }
}

/// Counts evictions into the cache's stats.
#[derive(Clone)]
struct CountEvictions(Arc<Counters>);

impl Lifecycle<Box<str>, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Box<str>, _entry: Entry) {
        bump(&self.0.l1_evictions);
    }
}

pub(crate) struct L1 {
    entries: quick_cache::sync::Cache<
        Box<str>,
        Entry,
        EntryWeighter,
        quick_cache::DefaultHashBuilder,
        CountEvictions,
    >,
    min_weight: u64,
    /// The heaviest entry a shard admits (quick_cache turns away, as an
    /// eviction, any entry over its shard's share for "hot" entries).
    max_weight: u64,
    max_ttl: Duration,
    counters: Arc<Counters>,
    /// The clock entries expire by.
    now: Now,
}

/// Bookkeeping bytes per entry beyond key and value: the `Entry` in its
/// slot of the shard's table, the key's and the value's allocations and
/// their allocator headers, the `Arc`. Measured in `tests/soak.rs`: an
/// entry of a `u64` under a 16-byte key takes 183 bytes of heap, which
/// this weighs 219 (the value counted at its encoded length, 41 bytes
/// with the envelope header).
const ENTRY_OVERHEAD: u64 = 160;

/// quick_cache's share of a shard for "hot" entries (its default), which
/// is also the heaviest entry a shard admits.
const HOT_ALLOCATION: f64 = 0.97;

/// quick_cache's own default shard count: four per core.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get()) * 4
}

/// An entry L1 did not keep: heavier than one shard holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub weight: u64,
    pub largest: u64,
}

impl L1 {
    /// A tier of at most `max_entries` entries and about `max_bytes`
    /// bytes, whose every shard holds an entry of a `largest_value`-byte
    /// value when the budget allows.
    pub(crate) fn new(
        max_entries: usize,
        max_bytes: u64,
        largest_value: usize,
        max_ttl: Duration,
        counters: Arc<Counters>,
        now: Now,
    ) -> Self {
        let min_weight = (max_bytes / max_entries.max(1) as u64).max(1);
        let largest_entry = (largest_value as u64).saturating_add(ENTRY_OVERHEAD + 1024);
        let fitting = (max_bytes as f64 * HOT_ALLOCATION / largest_entry as f64) as usize;
        let shards = prev_power_of_two(fitting.clamp(1, default_shards()));
        let options = quick_cache::OptionsBuilder::new()
            .shards(shards)
            .hot_allocation(HOT_ALLOCATION)
            .estimated_items_capacity(max_entries)
            .weight_capacity(max_bytes)
            .build()
            .expect("every option is set");
        let entries = quick_cache::sync::Cache::with_options(
            options,
            EntryWeighter,
            Default::default(),
            CountEvictions(counters.clone()),
        );
        // quick_cache's own rule (`CacheShard::new`), so that nothing it
        // would turn away reaches it.
        let shard = entries.shard_capacity();
        let max_weight = ((shard as f64 * HOT_ALLOCATION) as u64).clamp(shard.min(1), shard);
        L1 {
            entries,
            min_weight,
            max_weight,
            max_ttl,
            counters,
            now,
        }
    }

    /// The entry under `key` that may still be served (fresh or stale), and
    /// the time it was read at. Expired entries are removed.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<(Entry, u64)> {
        let entry = self.entries.get(key)?;
        let now = self.now.coarse_nanos();
        if entry.expires_at > now {
            Some((entry, now))
        } else {
            self.entries
                .remove_if(key, |current| current.expires_at <= now);
            None
        }
    }

    /// Stores an entry, its whole life (fresh + stale) capped by the L1
    /// lifetime cap. `value_bytes` is the value's size (its encoded
    /// length). An entry heavier than a shard holds is not kept, and any
    /// older entry under `key` goes.
    pub(crate) fn insert(
        &self,
        key: &str,
        value: Option<AnyValue>,
        timing: &Timing,
        value_bytes: usize,
    ) -> Result<(), Rejected> {
        let life = timing.fresh.saturating_add(timing.stale).min(self.max_ttl);
        if life.is_zero() {
            return Ok(());
        }
        let weight = (value_bytes as u64)
            .saturating_add(key.len() as u64 + ENTRY_OVERHEAD)
            .max(self.min_weight);
        if weight > self.max_weight {
            self.entries.remove(key);
            bump(&self.counters.l1_rejected);
            return Err(Rejected {
                weight,
                largest: self.max_weight,
            });
        }
        let fresh = timing.fresh.min(life);
        let now = self.now.coarse_nanos();
        let entry = Entry {
            value,
            fresh_until: now.saturating_add(nanos(fresh)),
            expires_at: now.saturating_add(nanos(life)),
            load_ms: timing.load_ms,
            written_at_ms: timing.written_at_ms,
            tags: timing.tags.clone().map(|versions| {
                Arc::new(EntryTags {
                    versions,
                    checked_at: AtomicU64::new(EntryTags::UNCHECKED),
                })
            }),
            weight,
        };
        self.entries.insert(key.into(), entry);
        Ok(())
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    /// Removes every entry whose key starts with `prefix`; how many there
    /// were. A pass over every shard, each write-locked in turn.
    pub(crate) fn remove_prefix(&self, prefix: &str) -> usize {
        let removed = std::cell::Cell::new(0);
        self.entries.retain(|key, _| {
            let matches = key.starts_with(prefix);
            removed.set(removed.get() + usize::from(matches));
            !matches
        });
        removed.get()
    }

    pub(crate) fn clear(&self) {
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The weight held now (about the bytes held).
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

/// The largest power of two not above `n` (`n` >= 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;

    fn l1(max_entries: usize, max_bytes: u64) -> L1 {
        L1::new(
            max_entries,
            max_bytes,
            4 * MIB,
            Duration::from_secs(60),
            Arc::default(),
            Now::default(),
        )
    }

    fn value(v: u64) -> Option<AnyValue> {
        Some(Arc::new(v))
    }

    #[test]
    fn the_longest_lifetimes_saturate() {
        let tier = L1::new(
            100,
            1 << 20,
            4 * MIB,
            Duration::MAX,
            Arc::default(),
            Now::default(),
        );
        let forever = Timing {
            fresh: Duration::MAX,
            stale: Duration::MAX,
            load_ms: u32::MAX,
            written_at_ms: u64::MAX,
            tags: None,
        };
        tier.insert("k", value(1), &forever, 8).unwrap();
        let (entry, now) = tier.get("k").expect("kept");
        assert!(entry.is_fresh(now));
        assert!(entry.is_fresh(now + Duration::from_secs(10 * 365 * 24 * 3600).as_nanos() as u64));
    }

    fn fresh_for(fresh: Duration) -> Timing {
        Timing {
            fresh,
            stale: Duration::ZERO,
            load_ms: 0,
            written_at_ms: 0,
            tags: None,
        }
    }

    #[test]
    fn stores_and_expires() {
        let tier = l1(100, 1 << 20);
        tier.insert("a", value(1), &fresh_for(Duration::from_millis(30)), 8)
            .unwrap();
        let (hit, now) = tier.get("a").unwrap();
        assert!(hit.is_fresh(now));
        assert_eq!(hit.value.unwrap().downcast_ref::<u64>(), Some(&1));
        std::thread::sleep(Duration::from_millis(40));
        assert!(tier.get("a").is_none());
        assert_eq!(tier.len(), 0, "expired entries are removed on read");
    }

    #[test]
    fn lifetime_is_capped() {
        let tier = L1::new(
            100,
            1 << 20,
            4 * MIB,
            Duration::from_millis(20),
            Arc::default(),
            Now::default(),
        );
        tier.insert("a", value(1), &fresh_for(Duration::from_secs(300)), 8)
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(tier.get("a").is_none());
    }

    #[test]
    fn bounded_by_entries() {
        let tier = l1(50, 1 << 30);
        for i in 0..1000 {
            tier.insert(
                &format!("k{i}"),
                value(i),
                &fresh_for(Duration::from_secs(60)),
                8,
            )
            .unwrap();
        }
        assert!(tier.len() <= 50, "{} entries", tier.len());
    }

    #[test]
    fn bounded_by_bytes() {
        // Room for 10k small entries, but only ~64 KiB: 1 KiB values fit ~60.
        let tier = l1(10_000, 64 * 1024);
        for i in 0..1000 {
            tier.insert(
                &format!("k{i}"),
                value(i),
                &fresh_for(Duration::from_secs(60)),
                1024,
            )
            .unwrap();
        }
        assert!(tier.len() <= 64, "{} entries", tier.len());
        assert!(tier.len() > 10);
    }

    fn sixty_seconds() -> Timing {
        fresh_for(Duration::from_secs(60))
    }

    /// 40 values of 256 KiB (10 MiB) into a 1 MiB budget: what is held
    /// stays within the budget, and (one shard, as the budget is below
    /// `max_value_bytes`) some of them are held.
    #[test]
    fn a_small_budget_holds_values_of_a_quarter_of_it() {
        let tier = l1(10_000, MIB as u64);
        for i in 0..40 {
            tier.insert(&format!("k{i}"), value(i), &sixty_seconds(), 256 * KIB)
                .unwrap();
        }
        assert!(tier.weight() <= MIB as u64, "{} bytes held", tier.weight());
        assert!((1..=4).contains(&tier.len()), "{} entries", tier.len());
    }

    /// Values weigh what they are said to weigh, whatever the shards: an
    /// entry no shard can hold is turned away, counted, and takes any
    /// older entry under its key with it.
    #[test]
    fn an_entry_no_shard_holds_is_rejected_and_counted() {
        let counters = Arc::new(Counters::default());
        // Shards sized for 64 KiB values: a 256 KiB one fits in none.
        let tier = L1::new(
            10_000,
            MIB as u64,
            64 * KIB,
            Duration::from_secs(60),
            counters.clone(),
            Now::default(),
        );
        tier.insert("k", value(1), &sixty_seconds(), 8).unwrap();
        let rejected = tier
            .insert("k", value(2), &sixty_seconds(), 256 * KIB)
            .unwrap_err();
        assert!(rejected.weight > rejected.largest, "{rejected:?}");
        assert!(rejected.largest >= 64 * KIB as u64, "{rejected:?}");
        assert!(tier.get("k").is_none(), "the older value went too");
        for i in 0..40 {
            assert!(
                tier.insert(&format!("k{i}"), value(i), &sixty_seconds(), 256 * KIB)
                    .is_err()
            );
        }
        assert_eq!(tier.weight(), 0);
        assert_eq!(counters.l1_rejected.get(), 41);
        assert_eq!(
            counters.l1_evictions.get(),
            0,
            "a rejection is not an eviction"
        );
        // A value as large as the shards are sized for is kept.
        tier.insert("fits", value(3), &sixty_seconds(), 64 * KIB)
            .unwrap();
        assert!(tier.get("fits").is_some());
    }

    /// The defaults (64 MiB, 4 MiB values) keep a value of `max_value_bytes`
    /// under a long key, and still spread over several shards when the
    /// machine has more than one core.
    #[test]
    fn the_defaults_keep_a_value_redis_takes() {
        let tier = l1(10_000, 64 * MIB as u64);
        let key = "k".repeat(1000);
        tier.insert(&key, value(1), &sixty_seconds(), 4 * MIB + 64)
            .unwrap();
        assert!(tier.get(&key).is_some());
        assert!(tier.entries.num_shards() <= default_shards());
        if default_shards() >= 8 {
            assert_eq!(tier.entries.num_shards(), 8);
        }
    }

    #[test]
    fn powers_of_two() {
        let below: Vec<usize> = [1, 2, 3, 4, 7, 8, 15, 16]
            .into_iter()
            .map(prev_power_of_two)
            .collect();
        assert_eq!(below, [1, 2, 2, 4, 4, 8, 8, 16]);
    }

    #[test]
    fn entries_are_removed_by_prefix() {
        let tier = l1(100, 1 << 20);
        for key in [
            "user:42:profile",
            "user:42:posts",
            "user:420:profile",
            "user:4",
        ] {
            tier.insert(key, value(1), &sixty_seconds(), 8).unwrap();
        }
        assert_eq!(tier.remove_prefix("user:42:"), 2);
        assert!(tier.get("user:42:profile").is_none());
        assert!(tier.get("user:420:profile").is_some());
        assert_eq!(tier.remove_prefix("user:4"), 2, "a text prefix");
        assert_eq!(tier.len(), 0);
    }

    #[test]
    fn negative_entries() {
        let tier = l1(10, 1 << 20);
        tier.insert("none", None, &fresh_for(Duration::from_secs(1)), 0)
            .unwrap();
        assert!(tier.get("none").unwrap().0.value.is_none());
    }

    #[test]
    fn stale_entries_are_served_until_fresh_plus_stale() {
        let tier = l1(10, 1 << 20);
        let timing = Timing {
            fresh: Duration::from_millis(20),
            stale: Duration::from_millis(60),
            load_ms: 3,
            written_at_ms: 42,
            tags: None,
        };
        tier.insert("a", value(1), &timing, 8).unwrap();
        std::thread::sleep(Duration::from_millis(35));
        let (entry, now) = tier.get("a").expect("stale, still served");
        assert!(!entry.is_fresh(now));
        assert_eq!((entry.load_ms, entry.written_at_ms), (3, 42));
        std::thread::sleep(Duration::from_millis(60));
        assert!(tier.get("a").is_none());
    }
}
