//! Counters kept as relaxed atomics, and the snapshot users read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::clock::coarse_now_nanos;
use crate::site::Site;

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

impl BreakerState {
    /// The value of the `cache_breaker_state` gauge: `0` closed, `1` open,
    /// `2` half-open, `-1` disabled (no Redis).
    #[cfg(feature = "metrics")]
    pub(crate) fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
            BreakerState::Disabled => -1.0,
        }
    }
}

/// Declares every counter once. Each row (`field => METRIC`, optionally
/// with one label) gives the live [`Counters`] field, the [`Stats`] field
/// with its documentation, the line of [`Counters::snapshot`] and, with the
/// `metrics` feature, the metric it is exported as (names and descriptions
/// are declared in `crate::metrics`).
macro_rules! counters {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident => $metric:ident $({ $label:literal = $value:literal })?;
    )*) => {
        /// The live counters of one cache.
        ///
        /// Each [`Count`] is a set of relaxed atomics (striped per thread)
        /// that [`Cache::stats`](crate::Cache::stats) sums; with the
        /// `metrics` feature it also carries the `metrics::Counter` handle
        /// registered for it when the cache was built, so [`bump`] adds to
        /// both without a registry lookup.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Count,)*
            /// When one of this cache's heartbeats last came back through
            /// its subscription.
            pub(crate) heartbeat_seen: Stamp,
            /// When Redis last answered one of this cache's commands (see
            /// [`Stats::since_l2_answer`]).
            pub(crate) l2_answered: Stamp,
            /// Milliseconds since the Unix epoch; 0 for never.
            pub(crate) last_channel_message_ms: AtomicU64,
            /// Writes queued and not applied, as this process' write-behind
            /// workers last read it.
            pub(crate) write_behind_depth: AtomicU64,
            /// The age of the oldest of them, in milliseconds; `u64::MAX`
            /// for none.
            pub(crate) write_behind_lag_ms: AtomicU64,
            /// What only the `metrics` recorder sees: the load-time
            /// histogram and the state gauges.
            pub(crate) exported: Exported,
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
            /// Calls served from a tier (`l1_hits + l2_hits`), hits on a
            /// cached `None` (`negative_hits`) included.
            pub hits: u64,
            $($(#[doc = $doc])* pub $field: u64,)*
            /// State of the L2 circuit breaker now (on a Redis Cluster, the
            /// worst of the masters' breakers: `Open` while any is open).
            pub breaker: BreakerState,
            /// Whether the invalidation subscription delivers now: one of
            /// this cache's heartbeats (a probe it publishes on its own
            /// invalidation channel every
            /// [`heartbeat_interval`](crate::CacheBuilder::heartbeat_interval))
            /// came back through the subscription within the last three
            /// intervals, the window after which the subscription counts
            /// as silent (`since_heartbeat` within that window).
            ///
            /// `false` before the first heartbeat came back, while the
            /// subscription is down or silent, while Redis takes no
            /// heartbeats (down, breaker open), and without Redis. While it
            /// is `false` with Redis configured, invalidations from other
            /// instances may not be arriving: what L1 serves may be stale.
            pub channel_verified: bool,
            /// How long ago one of this cache's heartbeats last came back
            /// through its subscription; `None` if none ever did (or no
            /// Redis is configured). Grows past the heartbeat interval only
            /// when the subscription or Redis is not working.
            pub since_heartbeat: Option<std::time::Duration>,
            /// How long ago Redis last answered one of this cache's
            /// commands with anything but a failure: a result, or an `OOM`
            /// refusal (a full Redis still answers). Reads, writes,
            /// invalidations, heartbeats (`PUBLISH`) and the breaker's
            /// probes (`PING`) all count; failed, timed-out and skipped
            /// calls do not. `None` if Redis never answered (or no Redis
            /// is configured).
            ///
            /// Without traffic, heartbeats send a command every
            /// `heartbeat_interval` while the subscription is up and the
            /// breaker is closed, so with a working Redis this stays below
            /// about one interval.
            pub since_l2_answer: Option<std::time::Duration>,
            /// When the last message arrived on the invalidation channel.
            pub last_channel_message: Option<std::time::SystemTime>,
            /// Entries in the in-process tier now.
            pub l1_entries: u64,
            /// Invalidations (keys and tags) that did not reach Redis and
            /// wait to be replayed, now. While there are any, this instance
            /// does not read Redis (its loads run their bodies).
            pub invalidations_pending: u64,
            /// Writes queued and not yet applied, over the queues of this
            /// process' [`WriteBehindWorker`](crate::WriteBehindWorker)s, as
            /// they last read it (every third of their lease); 0 without one.
            pub write_behind_depth: u64,
            /// How long ago the oldest of those writes was queued (the lag
            /// of the database behind the cache); `None` when none waits or
            /// no worker runs here.
            pub write_behind_lag: Option<std::time::Duration>,
        }

        impl Counters {
            /// The counters of a cache in `namespace`, each holding the
            /// handle the recorder installed now gave for it.
            #[cfg(feature = "metrics")]
            fn registered(namespace: &str) -> Counters {
                use crate::metrics as m;
                m::describe();
                Counters {
                    $($field: Count::exported(m::counter(m::$metric, namespace, &[$(($label, $value))?])),)*
                    heartbeat_seen: Stamp::default(),
                    l2_answered: Stamp::default(),
                    last_channel_message_ms: AtomicU64::new(0),
                    write_behind_depth: AtomicU64::new(0),
                    write_behind_lag_ms: AtomicU64::new(u64::MAX),
                    exported: Exported::registered(namespace),
                }
            }

            /// The counters now, with the states read from the parts;
            /// `heartbeat_window` is how long ago a heartbeat may have come
            /// back for the channel to count as verified.
            pub(crate) fn snapshot(
                &self,
                breaker: BreakerState,
                gauges: Gauges,
                heartbeat_window: std::time::Duration,
            ) -> Stats {
                let since_heartbeat = self.heartbeat_seen.age();
                let mut stats = Stats {
                    hits: 0,
                    $($field: self.$field.get(),)*
                    breaker,
                    channel_verified: self.channel_verified(heartbeat_window),
                    since_heartbeat,
                    since_l2_answer: self.l2_answered.age(),
                    last_channel_message: match self.last_channel_message_ms.load(Relaxed) {
                        0 => None,
                        ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
                    },
                    l1_entries: gauges.l1_entries,
                    invalidations_pending: gauges.invalidations_pending,
                    write_behind_depth: self.write_behind_depth.load(Relaxed),
                    write_behind_lag: match self.write_behind_lag_ms.load(Relaxed) {
                        u64::MAX => None,
                        ms => Some(std::time::Duration::from_millis(ms)),
                    },
                };
                stats.hits = stats.l1_hits + stats.l2_hits;
                stats
            }
        }
    };
}

counters! {
    /// Calls served from the in-process tier (hits on a cached `None`
    /// included).
    l1_hits => HITS { "tier" = "l1" };
    /// Calls served from Redis (hits on a cached `None` included).
    l2_hits => HITS { "tier" = "l2" };
    /// Hits on a cached `None` (negative entries), also counted in `hits`.
    negative_hits => NEGATIVE_HITS;
    /// Calls that found no fresh value themselves, including those that then
    /// waited for another caller's load (`coalesced`).
    misses => MISSES;
    /// Misses answered by another caller's load in this process (single-flight).
    coalesced => COALESCED;
    /// Times a function body ran to fill the cache.
    loads => LOADS;
    /// Loads whose body returned `Err` (never cached).
    load_errors => LOAD_ERRORS;
    /// Redis calls that failed (connection refused, reset, protocol error).
    l2_errors => L2_ERRORS;
    /// Redis calls cut off by the L2 timeout.
    l2_timeouts => L2_TIMEOUTS;
    /// Redis calls not attempted: not connected yet, the breaker is open,
    /// or (reads) invalidations wait to be replayed.
    l2_skipped => L2_SKIPPED;
    /// Values read from Redis that did not decode (other type or version,
    /// garbage); each was treated as a miss, and all but another type's
    /// were overwritten.
    l2_undecodable => L2_UNDECODABLE;
    /// Loaded values not written to Redis because the key held another
    /// value type's entry (another release's, during a rolling deploy):
    /// served from L1 only.
    l2_foreign_kept => L2_FOREIGN_KEPT;
    /// Values too large (or not serialisable) to store in Redis.
    l2_unstorable => L2_UNSTORABLE;
    /// Times the breaker opened.
    breaker_opens => BREAKER_OPENS;
    /// `lock`: times this process took the Redis lock and ran the body.
    lock_acquired => LOCK_ACQUIRED;
    /// `lock`: times a caller waited for another instance's load.
    lock_waits => LOCK_WAITS;
    /// `lock`: waits that ran out (`lock_wait`), after which the caller
    /// ran the body itself.
    lock_wait_timeouts => LOCK_WAIT_TIMEOUTS;
    /// `early`: background refreshes started before expiry.
    early_refreshes => EARLY_REFRESHES;
    /// `stale`: calls answered with a stale value while a refresh runs.
    stale_serves => STALE_SERVES { "reason" = "refreshing" };
    /// `stale`: calls answered with a stale value because refreshing failed
    /// (fail-safe).
    fail_safe_serves => STALE_SERVES { "reason" = "fail_safe" };
    /// Background refreshes whose body returned `Err` or ran past
    /// `refresh_timeout`.
    refresh_errors => REFRESH_ERRORS;
    /// Invalidation messages this cache published.
    invalidations_sent => INVALIDATIONS_SENT;
    /// Invalidation messages received from other caches.
    invalidations_received => INVALIDATIONS_RECEIVED;
    /// Messages on the invalidation channel that did not parse (foreign,
    /// malformed or oversized): ignored.
    channel_messages_ignored => CHANNEL_MESSAGES_IGNORED;
    /// Times the invalidation subscription was re-established (each time
    /// L1 was cleared, as messages may have been missed).
    pubsub_reconnects => PUBSUB_RECONNECTS;
    /// Entries pushed out of the in-process tier by its bounds.
    l1_evictions => L1_EVICTIONS;
    /// Redis calls refused because Redis is full (`OOM`: `maxmemory`
    /// reached under `noeviction`). Not in `l2_errors`, and not failures for
    /// the breaker: the server answers.
    l2_out_of_memory => L2_OUT_OF_MEMORY;
    /// Redis calls refused because the connection reaches a read-only
    /// replica (`READONLY`); each starts a reconnection. Not in `l2_errors`.
    l2_read_only => L2_READ_ONLY;
    /// Pending invalidations (keys and tags) replayed to Redis once it
    /// answered again.
    invalidations_replayed => INVALIDATIONS_REPLAYED;
    /// Pending invalidations dropped because the backlog was full
    /// (`invalidation_backlog`): their keys may be served from Redis until
    /// they expire.
    invalidations_dropped => INVALIDATIONS_DROPPED;
    /// Values not kept in the in-process tier because their entry is
    /// larger than one of its shards holds (see
    /// [`l1_max_bytes`](crate::CacheBuilder::l1_max_bytes)).
    l1_rejected => L1_REJECTED;
    /// Times the invalidation subscription was found silent (this cache's
    /// heartbeats stopped coming back while Redis answered) and was
    /// replaced (each time L1 was cleared, as messages may have been lost).
    channel_silences => CHANNEL_SILENCES;
    /// Background work (a loaded value's write, a "filled" message, a
    /// lock's release) dropped because `background_limit` jobs were
    /// running: the value is a later miss, the lock lives out its lease.
    background_dropped => BACKGROUND_DROPPED;
    /// `lock`: loads whose lease was lost while the body ran (an extension
    /// found another owner's token, or the lease ran out unconfirmed): their
    /// value was not written to Redis, where another owner may have written.
    lock_leases_lost => LOCK_LEASES_LOST;
    /// Calls in a [`ConsistencyToken::scope`](crate::ConsistencyToken::scope)
    /// that did not look at L1: this instance had not yet received the
    /// invalidation messages the token names, so they read Redis (or ran
    /// their body) instead.
    l1_skipped_for_token => L1_SKIPPED_FOR_TOKEN;
    /// `#[write_behind]`: writes queued in Redis (their bodies run in a
    /// worker).
    write_behind_queued => WRITE_BEHIND_WRITES { "outcome" = "queued" };
    /// `#[write_behind]`: calls whose body ran at once because Redis could
    /// not queue the write (none configured, down, breaker open, full).
    write_behind_synchronous => WRITE_BEHIND_WRITES { "outcome" = "synchronous" };
    /// Write-behind workers of this process: queued writes applied.
    write_behind_applied => WRITE_BEHIND_APPLIED;
    /// Write-behind workers of this process: failed attempts that will be
    /// retried.
    write_behind_retries => WRITE_BEHIND_RETRIES;
    /// Write-behind workers of this process: writes moved to the dead
    /// letters (failed `max_attempts` times, or unusable).
    write_behind_dead_letters => WRITE_BEHIND_DEAD_LETTERS;
    /// Write-behind workers of this process: queued writes acknowledged
    /// unapplied because a later write of the key came with them (`coalesce`).
    write_behind_coalesced => WRITE_BEHIND_COALESCED;
}

impl Counters {
    /// What a write-behind worker read of its queues' backlog.
    pub(crate) fn write_behind_observed(&self, depth: u64, oldest: Option<std::time::Duration>) {
        self.write_behind_depth.store(depth, Relaxed);
        let lag_ms = oldest.map_or(u64::MAX, |age| {
            u64::try_from(age.as_millis()).unwrap_or(u64::MAX - 1)
        });
        self.write_behind_lag_ms.store(lag_ms, Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.exported.write_behind_depth.set(depth as f64);
            self.exported
                .write_behind_lag_seconds
                .set(oldest.map_or(0.0, |age| age.as_secs_f64()));
        }
    }

    /// Whether one of this cache's heartbeats came back within `window`
    /// ([`Stats::channel_verified`]).
    pub(crate) fn channel_verified(&self, window: std::time::Duration) -> bool {
        self.heartbeat_seen.age().is_some_and(|age| age <= window)
    }
}

/// A moment on the coarse monotonic clock (`clock::coarse_now_nanos`),
/// or never: when something last happened, read as an age.
///
/// Monotonic, so a wall-clock step cannot make Redis look fresh or dead.
/// Updated on every Redis answer from every thread: the store is skipped
/// while the stamp already holds the current (coarse, few-millisecond)
/// tick, so threads mostly read the shared line instead of bouncing it.
#[derive(Debug, Default)]
pub(crate) struct Stamp(AtomicU64);

impl Stamp {
    /// Marks now.
    #[inline]
    pub(crate) fn record_now(&self) {
        // Never 0, which means "never" (the non-Linux clock starts at 0).
        let now = coarse_now_nanos().max(1);
        if self.0.load(Relaxed) < now {
            // Racing writers: the later moment wins.
            self.0.fetch_max(now, Relaxed);
        }
    }

    /// How long ago it was marked; `None` if never.
    pub(crate) fn age(&self) -> Option<std::time::Duration> {
        match self.0.load(Relaxed) {
            0 => None,
            at => Some(std::time::Duration::from_nanos(
                coarse_now_nanos().saturating_sub(at),
            )),
        }
    }
}

/// The [`Stats`] fields that are read from the parts' state, not counted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    pub l1_entries: u64,
    pub invalidations_pending: u64,
}

/// How many stripes each [`Count`] is split over (a power of two).
///
/// Memory: a stripe is one 128-byte block, so a `Count` takes 16 × 128 =
/// 2 KiB (plus, with the `metrics` feature, one more block for the handle),
/// and the 41 counters of a [`Counters`] about 82 KiB (87 KiB with
/// `metrics`) per cache, under the 96 KiB budget (a few caches per process:
/// striping buys contention-free counting for that). 16 stripes give every
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

/// What served one call of a function: the `result` label of
/// `cache_function_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    /// Served from L1 (counted in `l1_hits`).
    L1Hit = 0,
    /// Served from Redis (counted in `l2_hits`).
    L2Hit = 1,
    /// Found no fresh value (counted in `misses`).
    Miss = 2,
}

impl CallResult {
    /// The value of the `result` label.
    #[cfg(feature = "metrics")]
    pub(crate) fn label(self) -> &'static str {
        match self {
            CallResult::L1Hit => "l1_hit",
            CallResult::L2Hit => "l2_hit",
            CallResult::Miss => "miss",
        }
    }
}

impl Counters {
    /// Counts a call of `site`'s function: in the cache's counter for
    /// `result` (`l1_hits`, `l2_hits` or `misses`) and, with the `metrics`
    /// feature, in its function's series.
    #[inline]
    pub(crate) fn call(&self, site: &'static Site, result: CallResult) {
        bump(match result {
            CallResult::L1Hit => &self.l1_hits,
            CallResult::L2Hit => &self.l2_hits,
            CallResult::Miss => &self.misses,
        });
        #[cfg(feature = "metrics")]
        self.exported.functions.call(site, result);
        #[cfg(not(feature = "metrics"))]
        let _ = site;
    }

    /// Records how long a load of `site`'s function ran, for the cache and
    /// for its function (`loads` is counted apart, when the body starts).
    pub(crate) fn loaded(&self, site: &'static Site, took: std::time::Duration) {
        self.exported.load_seconds.record(took);
        #[cfg(feature = "metrics")]
        self.exported.functions.load(site, took);
        #[cfg(not(feature = "metrics"))]
        let _ = site;
    }

    /// Counts a load of `site`'s function whose body returned `Err` for
    /// its function; `load_errors` is counted where the outcome is stored
    /// (`Store::store_loaded`).
    pub(crate) fn function_load_failed(&self, site: &'static Site) {
        #[cfg(feature = "metrics")]
        self.exported.functions.load_error(site);
        #[cfg(not(feature = "metrics"))]
        let _ = site;
    }
}

/// Values only exported to the `metrics` recorder. Without the feature
/// these are empty and every method is a no-op the compiler removes.
#[derive(Debug, Default)]
pub(crate) struct Exported {
    /// `cache_load_duration_seconds`.
    pub load_seconds: Histogram,
    /// `cache_redis_call_duration_seconds`.
    pub redis_seconds: Histogram,
    /// The `cache_function_*` series, per function (registered on each
    /// function's first call).
    #[cfg(feature = "metrics")]
    pub functions: Functions,
    /// `cache_breaker_state`.
    pub breaker_state: Gauge,
    /// `cache_l1_entries` (set only by `crate::metrics`).
    #[cfg(feature = "metrics")]
    pub l1_entries: Gauge,
    /// `cache_channel_verified` (set only by `crate::metrics`).
    #[cfg(feature = "metrics")]
    pub channel_verified: Gauge,
    /// `cache_invalidations_pending` (set only by `crate::metrics`).
    #[cfg(feature = "metrics")]
    pub invalidations_pending: Gauge,
    /// `cache_write_behind_depth` (set by write-behind workers).
    #[cfg(feature = "metrics")]
    pub write_behind_depth: Gauge,
    /// `cache_write_behind_lag_seconds` (set by write-behind workers).
    #[cfg(feature = "metrics")]
    pub write_behind_lag_seconds: Gauge,
}

#[cfg(feature = "metrics")]
impl Exported {
    /// The handles of a cache in `namespace`, from the recorder installed now.
    fn registered(namespace: &str) -> Exported {
        use crate::metrics as m;
        Exported {
            load_seconds: Histogram::exported(m::histogram(m::LOAD_DURATION, namespace)),
            redis_seconds: Histogram::exported(m::histogram(m::REDIS_CALL_DURATION, namespace)),
            functions: Functions::new(namespace),
            breaker_state: Gauge::exported(m::gauge(m::BREAKER_STATE, namespace)),
            l1_entries: Gauge::exported(m::gauge(m::L1_ENTRIES, namespace)),
            channel_verified: Gauge::exported(m::gauge(m::CHANNEL_VERIFIED, namespace)),
            invalidations_pending: Gauge::exported(m::gauge(m::INVALIDATIONS_PENDING, namespace)),
            write_behind_depth: Gauge::exported(m::gauge(m::WRITE_BEHIND_DEPTH, namespace)),
            write_behind_lag_seconds: Gauge::exported(m::gauge(m::WRITE_BEHIND_LAG, namespace)),
        }
    }
}

/// Declares a handle that wraps a `metrics` handle with the feature and is
/// empty without it (its methods then compile to nothing).
macro_rules! exported_handle {
    ($(#[doc = $doc:literal])* $name:ident) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone)]
        #[cfg_attr(not(feature = "metrics"), derive(Default))]
        pub(crate) struct $name {
            #[cfg(feature = "metrics")]
            exported: ::metrics::$name,
        }

        #[cfg(feature = "metrics")]
        impl Default for $name {
            fn default() -> Self {
                $name {
                    exported: ::metrics::$name::noop(),
                }
            }
        }

        #[cfg(feature = "metrics")]
        impl $name {
            pub(crate) fn exported(exported: ::metrics::$name) -> $name {
                $name { exported }
            }
        }
    };
}

exported_handle!(
    /// A gauge handle with the `metrics` feature; nothing without it.
    Gauge
);

exported_handle!(
    /// A histogram handle with the `metrics` feature; nothing without it.
    Histogram
);

impl Gauge {
    #[inline]
    pub(crate) fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.exported.set(value);
        #[cfg(not(feature = "metrics"))]
        let _ = value;
    }
}

impl Histogram {
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
        return Counters::registered(namespace);
        #[cfg(not(feature = "metrics"))]
        {
            let _ = namespace;
            Counters::default()
        }
    }
}

/// The per-function series (`crate::metrics` explains the design).
#[cfg(feature = "metrics")]
mod functions {
    use std::sync::OnceLock;
    use std::time::Duration;

    use super::CallResult;
    use crate::metrics;
    use crate::site::Site;

    /// The per-function series of one cache, found by the calling site's
    /// [`SiteIndex`](crate::site::SiteIndex) (see the module docs): a table of
    /// buckets that only grows, bucket `b` holding `FIRST_BUCKET << b` slots,
    /// each slot filled once, on its function's first call with this cache.
    pub(crate) struct Functions {
        namespace: String,
        buckets: [OnceLock<Box<[OnceLock<FunctionSeries>]>>; BUCKETS],
    }

    /// Slots in the first bucket (a power of two): the functions of most
    /// applications fit in it.
    const FIRST_BUCKET: usize = 32;
    /// Enough buckets for every `u32` site index.
    const BUCKETS: usize = 33 - FIRST_BUCKET.ilog2() as usize;
    const _: () = assert!(FIRST_BUCKET.is_power_of_two());

    /// The bucket and the slot in it of the site numbered `index`.
    #[inline]
    fn place(index: usize) -> (usize, usize) {
        let shifted = index + FIRST_BUCKET;
        let bucket = (shifted.ilog2() - FIRST_BUCKET.ilog2()) as usize;
        (bucket, shifted - (FIRST_BUCKET << bucket))
    }

    /// The handles of one function in one cache.
    struct FunctionSeries {
        /// `cache_function_calls_total`, by [`CallResult`].
        calls: [::metrics::Counter; 3],
        load_errors: ::metrics::Counter,
        load_seconds: ::metrics::Histogram,
    }

    impl FunctionSeries {
        /// The handles of `function` in `namespace`, from the recorder current
        /// on this thread now.
        fn registered(namespace: &str, function: &'static str) -> FunctionSeries {
            let labels = |extra: &[(&'static str, &'static str)]| {
                let mut labels = metrics::labels(namespace, extra);
                labels.push(::metrics::Label::from_static_parts("function", function));
                labels
            };
            let calls = [CallResult::L1Hit, CallResult::L2Hit, CallResult::Miss].map(|result| {
                ::metrics::counter!(
                    metrics::FUNCTION_CALLS,
                    labels(&[("result", result.label())])
                )
            });
            FunctionSeries {
                calls,
                load_errors: ::metrics::counter!(metrics::FUNCTION_LOAD_ERRORS, labels(&[])),
                load_seconds: ::metrics::histogram!(metrics::FUNCTION_LOAD_DURATION, labels(&[])),
            }
        }
    }

    impl Functions {
        /// The table of a cache in `namespace`: empty until a function is called.
        pub(crate) fn new(namespace: &str) -> Functions {
            Functions {
                namespace: namespace.to_owned(),
                buckets: Default::default(),
            }
        }

        /// Counts a call of `site`'s function.
        #[inline]
        pub(crate) fn call(&self, site: &'static Site, result: CallResult) {
            self.series(site).calls[result as usize].increment(1);
        }

        /// Records a load of `site`'s function that ran `took`.
        pub(crate) fn load(&self, site: &'static Site, took: Duration) {
            self.series(site).load_seconds.record(took.as_secs_f64());
        }

        /// Counts a load of `site`'s function whose body returned `Err`.
        pub(crate) fn load_error(&self, site: &'static Site) {
            self.series(site).load_errors.increment(1);
        }

        /// The handles of `site`'s function: two loads of filled cells once
        /// they are there, registered on the first call.
        #[inline]
        fn series(&self, site: &'static Site) -> &FunctionSeries {
            let (bucket, slot) = place(site.index.get());
            if let Some(slots) = self.buckets[bucket].get()
                && let Some(series) = slots[slot].get()
            {
                return series;
            }
            self.register(site, bucket, slot)
        }

        #[cold]
        #[inline(never)]
        fn register(&self, site: &'static Site, bucket: usize, slot: usize) -> &FunctionSeries {
            let slots = self.buckets[bucket].get_or_init(|| {
                (0..FIRST_BUCKET << bucket)
                    .map(|_| OnceLock::new())
                    .collect()
            });
            slots[slot].get_or_init(|| FunctionSeries::registered(&self.namespace, site.function))
        }
    }

    impl Default for Functions {
        /// A table registering its series without a namespace (`Counters`
        /// made without a recorder, in unit tests).
        fn default() -> Functions {
            Functions::new("")
        }
    }

    impl std::fmt::Debug for Functions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let functions = self
                .buckets
                .iter()
                .filter_map(OnceLock::get)
                .flat_map(|slots| slots.iter())
                .filter(|slot| slot.get().is_some())
                .count();
            f.debug_struct("Functions")
                .field("namespace", &self.namespace)
                .field("functions", &functions)
                .finish()
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use functions::Functions;

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
    fn a_stamp_is_never_until_marked_then_ages() {
        let stamp = Stamp::default();
        assert_eq!(stamp.age(), None);
        stamp.record_now();
        let age = stamp.age().expect("marked");
        assert!(age < std::time::Duration::from_secs(1), "{age:?}");
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(stamp.age().unwrap() > age, "it ages");
        stamp.record_now();
        assert!(stamp.age().unwrap() < std::time::Duration::from_millis(30));
    }

    #[test]
    fn stripes_are_a_block_each() {
        assert_eq!(std::mem::size_of::<Stripe>(), 128);
        // The memory figure given at `STRIPES`.
        #[cfg(not(feature = "metrics"))]
        assert_eq!(std::mem::size_of::<Counters>(), 41 * STRIPES * 128 + 128);
        assert!(std::mem::size_of::<Counters>() < 96 * 1024);
    }
}
