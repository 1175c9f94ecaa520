//! Counters kept as relaxed atomics, and the snapshot users read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// State of the L2 circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// L2 is used normally.
    Closed,
    /// Too many consecutive L2 failures: calls skip L2 until the cool-down ends.
    Open,
    /// The cool-down ended: one call probes L2; success closes the breaker.
    HalfOpen,
    /// No Redis is configured; the cache is in-process only.
    Disabled,
}

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// Counters only grow; take two snapshots and subtract to see a rate.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = cache_runtime::Cache::builder().build().await.unwrap();
/// let stats = cache.stats();
/// assert_eq!(stats.hits, stats.l1_hits + stats.l2_hits);
/// assert_eq!(stats.loads, 0);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls served from a tier (`l1_hits + l2_hits`).
    pub hits: u64,
    /// Calls served from the in-process tier.
    pub l1_hits: u64,
    /// Calls served from Redis.
    pub l2_hits: u64,
    /// Hits on a cached `None` (negative entries), also counted in `hits`.
    pub negative_hits: u64,
    /// Calls that found no fresh value themselves, including those that then
    /// waited for another caller's load (`coalesced`).
    pub misses: u64,
    /// Misses answered by another caller's load in this process (single-flight).
    pub coalesced: u64,
    /// Times a function body ran to fill the cache.
    pub loads: u64,
    /// Loads whose body returned `Err` (never cached).
    pub load_errors: u64,
    /// Redis calls that failed (connection refused, reset, protocol error).
    pub l2_errors: u64,
    /// Redis calls cut off by the L2 timeout.
    pub l2_timeouts: u64,
    /// Redis calls not attempted: not connected yet, or the breaker is open.
    pub l2_skipped: u64,
    /// Values read from Redis that did not decode (other type or version,
    /// garbage); each was treated as a miss and overwritten.
    pub l2_undecodable: u64,
    /// Values too large (or not serialisable) to store in Redis.
    pub l2_unstorable: u64,
    /// State of the L2 circuit breaker now.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// `lock`: times this process took the Redis lock and ran the body.
    pub lock_acquired: u64,
    /// `lock`: times a caller waited for another instance's load.
    pub lock_waits: u64,
    /// `lock`: waits that ran out (`lock_wait`), after which the caller
    /// ran the body itself.
    pub lock_wait_timeouts: u64,
    /// `early`: background refreshes started before expiry.
    pub early_refreshes: u64,
    /// `stale`: calls answered with a stale value while a refresh runs.
    pub stale_serves: u64,
    /// `stale`: calls answered with a stale value because refreshing failed
    /// (fail-safe).
    pub fail_safe_serves: u64,
    /// Background refreshes whose body returned `Err` or ran past
    /// `refresh_timeout`.
    pub refresh_errors: u64,
    /// Invalidation messages this cache published.
    pub invalidations_sent: u64,
    /// Invalidation messages received from other caches.
    pub invalidations_received: u64,
    /// Times the invalidation subscription was re-established (each time
    /// L1 was cleared, as messages may have been missed).
    pub pubsub_reconnects: u64,
    /// Whether this cache's start-up probe came back through the channel:
    /// `false` with Redis configured means invalidations from other
    /// instances are not arriving.
    pub channel_verified: bool,
    /// When the last message arrived on the invalidation channel.
    pub last_channel_message: Option<std::time::SystemTime>,
    /// Entries in the in-process tier now.
    pub l1_entries: u64,
    /// Entries pushed out of the in-process tier by its bounds.
    pub l1_evictions: u64,
}

/// The live counters of one cache.
///
/// Each [`Count`] is a set of relaxed atomics (striped per thread) that
/// [`Cache::stats`](crate::Cache::stats) sums; with the `metrics` feature it also carries the `metrics::Counter`
/// handle registered for it when the cache was built (see
/// `crate::metrics::counters`), so [`bump`] adds to both without a registry
/// lookup.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub l1_hits: Count,
    pub l2_hits: Count,
    pub negative_hits: Count,
    pub misses: Count,
    pub coalesced: Count,
    pub loads: Count,
    pub load_errors: Count,
    pub l2_errors: Count,
    pub l2_timeouts: Count,
    pub l2_skipped: Count,
    pub l2_undecodable: Count,
    pub l2_unstorable: Count,
    pub breaker_opens: Count,
    pub l1_evictions: Count,
    pub lock_acquired: Count,
    pub lock_waits: Count,
    pub lock_wait_timeouts: Count,
    pub early_refreshes: Count,
    pub stale_serves: Count,
    pub fail_safe_serves: Count,
    pub refresh_errors: Count,
    pub invalidations_sent: Count,
    pub invalidations_received: Count,
    pub pubsub_reconnects: Count,
    pub channel_verified: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 for never.
    pub last_channel_message_ms: AtomicU64,
    /// What only the `metrics` recorder sees: the load-time histogram and
    /// the state gauges.
    pub exported: Exported,
}

/// How many stripes each [`Count`] is split over (a power of two).
///
/// Memory: a stripe is one 128-byte block, so a `Count` takes 16 × 128 =
/// 2 KiB (plus, with the `metrics` feature, one more block for the handle),
/// and the 24 counters of a [`Counters`] about 48 KiB (51 KiB with
/// `metrics`) per cache, under the 64 KiB budget. 16 stripes give every
/// thread its own line up to 16 threads that count (Tokio's default is one
/// worker per core); past that, threads share stripes round-robin, which is
/// still 16 times less contention than one shared atomic.
const STRIPES: usize = 16;
const _: () = assert!(STRIPES.is_power_of_two());

/// One stripe: an atomic alone in a 128-byte block. 128 rather than 64
/// because on x86 the adjacent-line prefetcher pulls cache lines in pairs,
/// so two counters 64 bytes apart still bounce between cores in practice.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

thread_local! {
    /// This thread's stripe, `STRIPES` until its first [`bump`]. A const
    /// initialiser and a `Cell` (no destructor) make the access a plain
    /// thread-local load, without lazy-initialisation or registration.
    static STRIPE: Cell<usize> = const { Cell::new(STRIPES) };
}

/// The next stripe to hand out, round-robin over the threads that count.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

/// The stripe of the calling thread (shared by every [`Count`]).
#[inline]
fn stripe() -> usize {
    STRIPE.with(|stripe| {
        let index = stripe.get();
        if index < STRIPES {
            index
        } else {
            let index = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
            stripe.set(index);
            index
        }
    })
}

/// A counter: relaxed atomics striped over [`STRIPES`] cache-line-sized
/// blocks, plus with the `metrics` feature the recorder's handle for it.
///
/// A hit on one key from every worker thread would otherwise write one
/// shared line per call (the L1 hit counter), and that line's bouncing
/// between cores cost more than the L1 lookup itself. Each thread adds to
/// its own stripe ([`stripe`]); [`get`](Count::get) sums them. The sum is
/// not one atomic snapshot of all stripes, but each stripe only grows, so
/// successive reads from one thread never go down.
#[cfg_attr(not(feature = "metrics"), derive(Default))]
pub(crate) struct Count {
    stripes: [Stripe; STRIPES],
    /// With a recorder installed, this is the recorder's own counter: all
    /// threads add to it (one shared atomic in, for instance, the
    /// Prometheus exporter), and whether that contends is the recorder's
    /// business. Without one it is a no-op handle.
    #[cfg(feature = "metrics")]
    exported: ::metrics::Counter,
}

impl std::fmt::Debug for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut count = f.debug_struct("Count");
        count.field("value", &self.get());
        #[cfg(feature = "metrics")]
        count.field("exported", &self.exported);
        count.finish()
    }
}

#[cfg(feature = "metrics")]
impl Default for Count {
    fn default() -> Self {
        Count {
            stripes: Default::default(),
            exported: ::metrics::Counter::noop(),
        }
    }
}

impl Count {
    /// A counter that also adds to `exported`.
    #[cfg(feature = "metrics")]
    pub(crate) fn exported(exported: ::metrics::Counter) -> Count {
        Count {
            stripes: Default::default(),
            exported,
        }
    }

    /// The total over all stripes.
    pub(crate) fn get(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |sum, stripe| sum.wrapping_add(stripe.0.load(Relaxed)))
    }
}

/// Adds one to a counter: to the calling thread's stripe of it (and, with
/// the `metrics` feature, to its exported twin: one more relaxed add in the
/// recorder's storage).
#[inline]
pub(crate) fn bump(counter: &Count) {
    counter.stripes[stripe()].0.fetch_add(1, Relaxed);
    #[cfg(feature = "metrics")]
    counter.exported.increment(1);
}

/// Values only exported to the `metrics` recorder. Without the feature
/// these are empty and every method is a no-op the compiler removes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exported {
    /// `cache_load_duration_seconds`.
    pub load_seconds: Histogram,
    /// `cache_breaker_state`.
    pub breaker_state: Gauge,
    /// `cache_l1_entries` (set only by `crate::metrics`).
    #[cfg(feature = "metrics")]
    pub l1_entries: Gauge,
    /// `cache_channel_verified` (set only by `crate::metrics`).
    #[cfg(feature = "metrics")]
    pub channel_verified: Gauge,
}

/// A gauge handle with the `metrics` feature; nothing without it.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "metrics"), derive(Default))]
pub(crate) struct Gauge {
    #[cfg(feature = "metrics")]
    exported: ::metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Default for Gauge {
    fn default() -> Self {
        Gauge {
            exported: ::metrics::Gauge::noop(),
        }
    }
}

impl Gauge {
    #[cfg(feature = "metrics")]
    pub(crate) fn exported(exported: ::metrics::Gauge) -> Gauge {
        Gauge { exported }
    }

    #[inline]
    pub(crate) fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.exported.set(value);
        #[cfg(not(feature = "metrics"))]
        let _ = value;
    }
}

/// A histogram handle with the `metrics` feature; nothing without it.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "metrics"), derive(Default))]
pub(crate) struct Histogram {
    #[cfg(feature = "metrics")]
    exported: ::metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            exported: ::metrics::Histogram::noop(),
        }
    }
}

impl Histogram {
    #[cfg(feature = "metrics")]
    pub(crate) fn exported(exported: ::metrics::Histogram) -> Histogram {
        Histogram { exported }
    }

    /// Records a duration, in seconds.
    #[inline]
    pub(crate) fn record(&self, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        self.exported.record(took.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }
}

impl Counters {
    /// The counters of a cache being built in `namespace`: with the
    /// `metrics` feature, registered with the recorder installed now.
    pub(crate) fn new(namespace: &str) -> Counters {
        #[cfg(feature = "metrics")]
        return crate::metrics::counters(namespace);
        #[cfg(not(feature = "metrics"))]
        {
            let _ = namespace;
            Counters::default()
        }
    }

    pub(crate) fn snapshot(&self, breaker: BreakerState, l1_entries: u64) -> Stats {
        let l1_hits = self.l1_hits.get();
        let l2_hits = self.l2_hits.get();
        Stats {
            hits: l1_hits + l2_hits,
            l1_hits,
            l2_hits,
            negative_hits: self.negative_hits.get(),
            misses: self.misses.get(),
            coalesced: self.coalesced.get(),
            loads: self.loads.get(),
            load_errors: self.load_errors.get(),
            l2_errors: self.l2_errors.get(),
            l2_timeouts: self.l2_timeouts.get(),
            l2_skipped: self.l2_skipped.get(),
            l2_undecodable: self.l2_undecodable.get(),
            l2_unstorable: self.l2_unstorable.get(),
            breaker,
            breaker_opens: self.breaker_opens.get(),
            lock_acquired: self.lock_acquired.get(),
            lock_waits: self.lock_waits.get(),
            lock_wait_timeouts: self.lock_wait_timeouts.get(),
            early_refreshes: self.early_refreshes.get(),
            stale_serves: self.stale_serves.get(),
            fail_safe_serves: self.fail_safe_serves.get(),
            refresh_errors: self.refresh_errors.get(),
            invalidations_sent: self.invalidations_sent.get(),
            invalidations_received: self.invalidations_received.get(),
            pubsub_reconnects: self.pubsub_reconnects.get(),
            channel_verified: self.channel_verified.load(Relaxed) == 1,
            last_channel_message: match self.last_channel_message_ms.load(Relaxed) {
                0 => None,
                ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            },
            l1_entries,
            l1_evictions: self.l1_evictions.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_from_many_threads_all_add_up() {
        const THREADS: usize = 8;
        const BUMPS: u64 = 10_000;
        let count = Count::default();
        let other = Count::default();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..BUMPS {
                        bump(&count);
                    }
                    bump(&other);
                });
            }
        });
        assert_eq!(count.get(), THREADS as u64 * BUMPS);
        assert_eq!(other.get(), THREADS as u64);
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        let first = stripe();
        assert!(first < STRIPES);
        assert_eq!(stripe(), first);
        let count = Count::default();
        bump(&count);
        bump(&count);
        assert_eq!(count.stripes[first].0.load(Relaxed), 2);
        assert_eq!(count.get(), 2);
    }

    #[test]
    fn stripes_are_a_block_each() {
        assert_eq!(std::mem::size_of::<Stripe>(), 128);
        // The memory figure given at `STRIPES`.
        #[cfg(not(feature = "metrics"))]
        assert_eq!(std::mem::size_of::<Counters>(), 24 * STRIPES * 128 + 128);
        assert!(std::mem::size_of::<Counters>() < 64 * 1024);
    }
}
