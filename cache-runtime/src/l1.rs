//! L1: the in-process tier, holding typed values behind an `Arc`.
//!
//! A hit is a hash lookup, an expiry check and a clone of the `Arc`; the
//! caller then clones the value out. Nothing is serialised. Built on
//! `quick_cache` (sharded, S3-FIFO eviction): measured in
//! `benches/l1_structures.rs`, a `get` of an `Arc` costs a fraction of moka's.
//!
//! Bounds: every entry weighs at least `max_bytes / max_entries`, and at
//! most `max_bytes` of weight fit, so the tier holds at most `max_entries`
//! entries *and* about `max_bytes` bytes, with one weighted structure.
//! Expiry lives in the entry itself (its own jittered TTL, capped by the L1
//! lifetime cap) and is checked on read against a coarse monotonic clock
//! (`clock::coarse_now_nanos`).

use std::sync::Arc;
use std::time::Duration;

use quick_cache::{Lifecycle, Weighter};

use crate::clock::{coarse_now_nanos, nanos};
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
    pub tags: Option<Arc<[TagVersion]>>,
    weight: u64,
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
    max_ttl: Duration,
}

/// Bookkeeping bytes per entry beyond key and value (the `Arc`, the entry,
/// the table slot), used in the weight.
const ENTRY_OVERHEAD: u64 = 96;

impl L1 {
    pub(crate) fn new(
        max_entries: usize,
        max_bytes: u64,
        max_ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        let min_weight = (max_bytes / max_entries.max(1) as u64).max(1);
        L1 {
            entries: quick_cache::sync::Cache::with(
                max_entries,
                max_bytes,
                EntryWeighter,
                Default::default(),
                CountEvictions(counters),
            ),
            min_weight,
            max_ttl,
        }
    }

    /// The entry under `key` that may still be served (fresh or stale), and
    /// the time it was read at. Expired entries are removed.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<(Entry, u64)> {
        let entry = self.entries.get(key)?;
        let now = coarse_now_nanos();
        if entry.expires_at > now {
            Some((entry, now))
        } else {
            self.entries
                .remove_if(key, |current| current.expires_at <= now);
            None
        }
    }

    /// Stores an entry, its whole life (fresh + stale) capped by the L1
    /// lifetime cap. `approx_bytes` is the value's approximate size (its
    /// encoded length).
    pub(crate) fn insert(
        &self,
        key: &str,
        value: Option<AnyValue>,
        timing: &Timing,
        approx_bytes: usize,
    ) {
        let life = timing.fresh.saturating_add(timing.stale).min(self.max_ttl);
        if life.is_zero() {
            return;
        }
        let fresh = timing.fresh.min(life);
        let now = coarse_now_nanos();
        let weight = (approx_bytes as u64 + key.len() as u64 + ENTRY_OVERHEAD).max(self.min_weight);
        let entry = Entry {
            value,
            fresh_until: now.saturating_add(nanos(fresh)),
            expires_at: now.saturating_add(nanos(life)),
            load_ms: timing.load_ms,
            written_at_ms: timing.written_at_ms,
            tags: timing.tags.clone(),
            weight,
        };
        self.entries.insert(key.into(), entry);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    pub(crate) fn clear(&self) {
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l1(max_entries: usize, max_bytes: u64) -> L1 {
        L1::new(
            max_entries,
            max_bytes,
            Duration::from_secs(60),
            Arc::default(),
        )
    }

    fn value(v: u64) -> Option<AnyValue> {
        Some(Arc::new(v))
    }

    #[test]
    fn the_longest_lifetimes_saturate() {
        let tier = L1::new(100, 1 << 20, Duration::MAX, Arc::default());
        let forever = Timing {
            fresh: Duration::MAX,
            stale: Duration::MAX,
            load_ms: u32::MAX,
            written_at_ms: u64::MAX,
            tags: None,
        };
        tier.insert("k", value(1), &forever, 8);
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
        tier.insert("a", value(1), &fresh_for(Duration::from_millis(30)), 8);
        let (hit, now) = tier.get("a").unwrap();
        assert!(hit.is_fresh(now));
        assert_eq!(hit.value.unwrap().downcast_ref::<u64>(), Some(&1));
        std::thread::sleep(Duration::from_millis(40));
        assert!(tier.get("a").is_none());
        assert_eq!(tier.len(), 0, "expired entries are removed on read");
    }

    #[test]
    fn lifetime_is_capped() {
        let tier = L1::new(100, 1 << 20, Duration::from_millis(20), Arc::default());
        tier.insert("a", value(1), &fresh_for(Duration::from_secs(300)), 8);
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
            );
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
            );
        }
        assert!(tier.len() <= 64, "{} entries", tier.len());
        assert!(tier.len() > 10);
    }

    #[test]
    fn negative_entries() {
        let tier = l1(10, 1 << 20);
        tier.insert("none", None, &fresh_for(Duration::from_secs(1)), 0);
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
        tier.insert("a", value(1), &timing, 8);
        std::thread::sleep(Duration::from_millis(35));
        let (entry, now) = tier.get("a").expect("stale, still served");
        assert!(!entry.is_fresh(now));
        assert_eq!((entry.load_ms, entry.written_at_ms), (3, 42));
        std::thread::sleep(Duration::from_millis(60));
        assert!(tier.get("a").is_none());
    }
}
