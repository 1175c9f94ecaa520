//! Counters kept as relaxed atomics, and the snapshot users read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub negative_hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    pub l2_errors: AtomicU64,
    pub l2_timeouts: AtomicU64,
    pub l2_skipped: AtomicU64,
    pub l2_undecodable: AtomicU64,
    pub l2_unstorable: AtomicU64,
    pub breaker_opens: AtomicU64,
    pub l1_evictions: AtomicU64,
    pub lock_acquired: AtomicU64,
    pub lock_waits: AtomicU64,
    pub lock_wait_timeouts: AtomicU64,
    pub early_refreshes: AtomicU64,
    pub stale_serves: AtomicU64,
    pub fail_safe_serves: AtomicU64,
    pub refresh_errors: AtomicU64,
    pub invalidations_sent: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub pubsub_reconnects: AtomicU64,
    pub channel_verified: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 for never.
    pub last_channel_message_ms: AtomicU64,
}

/// Adds one to a counter.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, breaker: BreakerState, l1_entries: u64) -> Stats {
        let l1_hits = self.l1_hits.load(Relaxed);
        let l2_hits = self.l2_hits.load(Relaxed);
        Stats {
            hits: l1_hits + l2_hits,
            l1_hits,
            l2_hits,
            negative_hits: self.negative_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            loads: self.loads.load(Relaxed),
            load_errors: self.load_errors.load(Relaxed),
            l2_errors: self.l2_errors.load(Relaxed),
            l2_timeouts: self.l2_timeouts.load(Relaxed),
            l2_skipped: self.l2_skipped.load(Relaxed),
            l2_undecodable: self.l2_undecodable.load(Relaxed),
            l2_unstorable: self.l2_unstorable.load(Relaxed),
            breaker,
            breaker_opens: self.breaker_opens.load(Relaxed),
            lock_acquired: self.lock_acquired.load(Relaxed),
            lock_waits: self.lock_waits.load(Relaxed),
            lock_wait_timeouts: self.lock_wait_timeouts.load(Relaxed),
            early_refreshes: self.early_refreshes.load(Relaxed),
            stale_serves: self.stale_serves.load(Relaxed),
            fail_safe_serves: self.fail_safe_serves.load(Relaxed),
            refresh_errors: self.refresh_errors.load(Relaxed),
            invalidations_sent: self.invalidations_sent.load(Relaxed),
            invalidations_received: self.invalidations_received.load(Relaxed),
            pubsub_reconnects: self.pubsub_reconnects.load(Relaxed),
            channel_verified: self.channel_verified.load(Relaxed) == 1,
            last_channel_message: match self.last_channel_message_ms.load(Relaxed) {
                0 => None,
                ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            },
            l1_entries,
            l1_evictions: self.l1_evictions.load(Relaxed),
        }
    }
}
