//! The metrics every [`Cache`](crate::Cache) reports with the `metrics`
//! feature, to whatever recorder the application installed with the
//! [`metrics`](https://docs.rs/metrics/0.24) facade (for example
//! `metrics-exporter-prometheus`).
//!
//! Every metric carries the label `namespace` (the cache's
//! [namespace](crate::CacheBuilder::namespace)); counters end in `_total`
//! and mirror the fields of [`Stats`](crate::Stats).
//!
//! | name | kind | extra labels | [`Stats`](crate::Stats) field |
//! | --- | --- | --- | --- |
//! | `cache_hits_total` | counter | `tier="l1"` / `tier="l2"` | `l1_hits`, `l2_hits` |
//! | `cache_negative_hits_total` | counter | | `negative_hits` |
//! | `cache_misses_total` | counter | | `misses` |
//! | `cache_coalesced_total` | counter | | `coalesced` |
//! | `cache_loads_total` | counter | | `loads` |
//! | `cache_load_errors_total` | counter | | `load_errors` |
//! | `cache_load_duration_seconds` | histogram | | |
//! | `cache_l2_errors_total` | counter | | `l2_errors` |
//! | `cache_l2_timeouts_total` | counter | | `l2_timeouts` |
//! | `cache_l2_skipped_total` | counter | | `l2_skipped` |
//! | `cache_l2_undecodable_total` | counter | | `l2_undecodable` |
//! | `cache_l2_unstorable_total` | counter | | `l2_unstorable` |
//! | `cache_breaker_state` | gauge | | `breaker` |
//! | `cache_breaker_opens_total` | counter | | `breaker_opens` |
//! | `cache_lock_acquired_total` | counter | | `lock_acquired` |
//! | `cache_lock_waits_total` | counter | | `lock_waits` |
//! | `cache_lock_wait_timeouts_total` | counter | | `lock_wait_timeouts` |
//! | `cache_stale_serves_total` | counter | `reason="refreshing"` / `reason="fail_safe"` | `stale_serves`, `fail_safe_serves` |
//! | `cache_early_refreshes_total` | counter | | `early_refreshes` |
//! | `cache_refresh_errors_total` | counter | | `refresh_errors` |
//! | `cache_invalidations_sent_total` | counter | | `invalidations_sent` |
//! | `cache_invalidations_received_total` | counter | | `invalidations_received` |
//! | `cache_pubsub_reconnects_total` | counter | | `pubsub_reconnects` |
//! | `cache_channel_verified` | gauge | | `channel_verified` (1 or 0) |
//! | `cache_l1_entries` | gauge | | `l1_entries` |
//! | `cache_l1_evictions_total` | counter | | `l1_evictions` |
//! | `cache_l2_out_of_memory_total` | counter | | `l2_out_of_memory` |
//! | `cache_l2_read_only_total` | counter | | `l2_read_only` |
//! | `cache_invalidations_replayed_total` | counter | | `invalidations_replayed` |
//! | `cache_invalidations_dropped_total` | counter | | `invalidations_dropped` |
//! | `cache_invalidations_pending` | gauge | | `invalidations_pending` |
//! | `cache_l1_rejected_total` | counter | | `l1_rejected` |
//! | `cache_channel_silences_total` | counter | | `channel_silences` |
//! | `cache_background_dropped_total` | counter | | `background_dropped` |
//! | `cache_lock_leases_lost_total` | counter | | `lock_leases_lost` |
//! | `cache_l1_skipped_for_token_total` | counter | | `l1_skipped_for_token` |
//! | `cache_write_behind_writes_total` | counter | `outcome="queued"` / `outcome="synchronous"` | `write_behind_queued`, `write_behind_synchronous` |
//! | `cache_write_behind_applied_total` | counter | | `write_behind_applied` |
//! | `cache_write_behind_retries_total` | counter | | `write_behind_retries` |
//! | `cache_write_behind_dead_letters_total` | counter | | `write_behind_dead_letters` |
//! | `cache_write_behind_coalesced_total` | counter | | `write_behind_coalesced` |
//! | `cache_write_behind_depth` | gauge | | `write_behind_depth` |
//! | `cache_write_behind_lag_seconds` | gauge | | `write_behind_lag` |
//! | `cache_redis_call_duration_seconds` | histogram | | |
//! | `cache_function_calls_total` | counter | `function`, `result="l1_hit"` / `"l2_hit"` / `"miss"` | (`l1_hits`, `l2_hits`, `misses` per function) |
//! | `cache_function_load_errors_total` | counter | `function` | (`load_errors` per function) |
//! | `cache_function_load_duration_seconds` | histogram | `function` | |
//!
//! - `cache_load_duration_seconds` gets one sample per run of a function
//!   body counted in `cache_loads_total`: loads in the caller's path and
//!   background refreshes (`early`, `stale`) alike. A refresh cut off by
//!   `refresh_timeout` is sampled at the time it ran; a load whose caller
//!   was cancelled before the body finished is counted but not sampled.
//! - `cache_redis_call_duration_seconds` gets one sample per round trip
//!   the cache sends to Redis (a pipeline, an `MGET`, a script are one):
//!   reads, writes, invalidations, locks, heartbeats alike, answered,
//!   failed (refusals included) or timed out (sampled when cut off, so at
//!   most the L2 timeout). Calls not sent are not sampled: skipped while
//!   not connected or while the breaker is open, or because the call's
//!   budget was spent. Neither are the breaker's probes (`PING`) nor the
//!   reads of a cluster's slot map, which run beside the calls.
//! - The `cache_function_*` series have one more label, `function`: the
//!   name of the annotated function (or [`Options::name`](crate::Options::name)
//!   for programmatic calls, `(programmatic)` without one), never the
//!   key, so there is one series per function and result. They split the
//!   cache-wide counts by function, counted at the same points:
//!   `cache_function_calls_total{result="l1_hit"}` summed over functions is
//!   `cache_hits_total{tier="l1"}`, `l2_hit` is `tier="l2"`, `miss` is
//!   `cache_misses_total`; loads (background refreshes included) are
//!   sampled in `cache_function_load_duration_seconds` as in
//!   `cache_load_duration_seconds`. A batch call counts each id, as the
//!   cache-wide counters do. Two functions of one name in one namespace
//!   (methods of two types, say) share their series.
//! - `cache_breaker_state`: `0` closed, `1` open, `2` half-open (a probe
//!   is running), `-1` disabled (no Redis configured), so
//!   `cache_breaker_state > 0` means "Redis is being skipped".
//! - The gauges `cache_breaker_state`, `cache_channel_verified`,
//!   `cache_l1_entries` and `cache_invalidations_pending` are refreshed
//!   every second (the breaker's also on each transition).
//! - Two caches built with one namespace in one process report to the same
//!   series (their counts add up, their gauges overwrite each other): give
//!   each cache its own namespace.
//!
//! # Install the recorder before building the cache
//!
//! Each cache registers its metrics once, when it is built, and keeps the
//! handles: a recorder installed after [`build`](crate::CacheBuilder::build)
//! sees nothing from that cache. The in-process default behind
//! [`Cache::global`](crate::Cache::global) is built on its first use.
//!
//! The per-function series are registered on each function's first call
//! with the cache (the functions are not known before), with the recorder
//! current on the calling thread then: an application's global recorder.
//! (A test's thread-local recorder, `metrics::set_default_local_recorder`,
//! sees them when the first call runs on its thread.)
//!
//! # Per-function handles without a lookup
//!
//! An L1 hit costs about a hundred nanoseconds, so finding the function's
//! handles must not add a hash of its name or a lock. Each
//! `Site` (the `static` the attribute builds per
//! function, or the one leaked per distinct programmatic
//! [`Options`](crate::Options)) holds a `SiteIndex`:
//! a number given once, from a process-wide atomic, on the site's first
//! call. Each cache keeps a table indexed by that number (`Functions`, in
//! `stats.rs` beside the other handles): buckets that
//! only grow (32 slots, then 64, 128, ...; a bucket is allocated when a
//! number in it is first used, so an existing slot never moves), each slot
//! a `OnceLock` of the function's handles in this cache, filled on its
//! first call. A call then costs a relaxed load of the site's number, a
//! little arithmetic to find its bucket and slot, two loads of filled
//! `OnceLock`s, and the recorder's own increment; the slow path (giving
//! the number, allocating a bucket, registering the handles) runs once per
//! function and cache. Sites live as long as the process, so their numbers
//! are never reused, and the table only grows with the number of distinct
//! functions (about 90 bytes per slot). Without the `metrics` feature
//! none of this is compiled: the counts go to [`Stats`](crate::Stats) only.
//!
//! ```
//! use cache_runtime::{cached, metrics, Cache};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! #[cached(key = "user:<id>", ttl = 300)]
//! async fn get_user(id: u64) -> Option<String> {
//!     Some(format!("user {id}")) // a database query
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
//! // In an application: `PrometheusBuilder::new().install_recorder()` or the like.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! recorder.install().expect("no recorder installed yet");
//!
//! // Then build the cache: its metrics bind to the recorder installed now.
//! Cache::set_global(Cache::builder().namespace("app").build().await?);
//! get_user(7).await; // a miss and a load
//! get_user(7).await; // an L1 hit
//!
//! let snapshot = snapshotter.snapshot().into_vec();
//! let value = |name: &str, tier: Option<&str>| {
//!     snapshot
//!         .iter()
//!         .find(|(key, ..)| {
//!             key.key().name() == name
//!                 && key.key().labels().any(|l| l.key() == "namespace" && l.value() == "app")
//!                 && tier.is_none_or(|tier| key.key().labels().any(|l| l.value() == tier))
//!         })
//!         .map(|(.., value)| value)
//! };
//! assert_eq!(value(metrics::LOADS, None), Some(&DebugValue::Counter(1)));
//! assert_eq!(value(metrics::HITS, Some("l1")), Some(&DebugValue::Counter(1)));
//! assert_eq!(value(metrics::BREAKER_STATE, None), Some(&DebugValue::Gauge((-1.0).into()))); // no Redis
//! # Ok(()) }
//! ```

/// Declares each metric once: its public name constant (with its
/// documentation), and the help text and unit given to the recorder.
macro_rules! metrics {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $value:literal, $describe:ident $(($unit:ident))?, $help:literal;
    )*) => {
        $($(#[doc = $doc])* pub const $name: &str = $value;)*

        /// Describes every metric to the current recorder (its help text and unit).
        pub(crate) fn describe() {
            $(::metrics::$describe!($name, $(::metrics::Unit::$unit,)? $help);)*
        }
    };
}

metrics! {
    /// Counter: calls served from a tier; label `tier` is `l1` or `l2`.
    /// Hits on a cached `None` are included (and also counted in
    /// [`NEGATIVE_HITS`]).
    HITS = "cache_hits_total", describe_counter(Count),
        "Calls served from a cache tier (tier: l1 or l2), hits on a cached None included (also in cache_negative_hits_total)";
    /// Counter: hits on a cached `None` (also counted in [`HITS`]).
    NEGATIVE_HITS = "cache_negative_hits_total", describe_counter(Count),
        "Hits on a cached None (negative entries)";
    /// Counter: calls that found no fresh value themselves.
    MISSES = "cache_misses_total", describe_counter(Count),
        "Calls that found no fresh value themselves";
    /// Counter: misses answered by another caller's load in this process.
    COALESCED = "cache_coalesced_total", describe_counter(Count),
        "Misses answered by another caller's load in this process";
    /// Counter: runs of a function body to fill the cache (background
    /// refreshes included).
    LOADS = "cache_loads_total", describe_counter(Count),
        "Runs of a function body to fill the cache, background refreshes included";
    /// Counter: loads whose body returned `Err`.
    LOAD_ERRORS = "cache_load_errors_total", describe_counter(Count),
        "Loads whose body returned Err";
    /// Histogram, in seconds: how long each load's body ran.
    LOAD_DURATION = "cache_load_duration_seconds", describe_histogram(Seconds),
        "How long each load's function body ran, background refreshes included";
    /// Counter: Redis calls that failed.
    L2_ERRORS = "cache_l2_errors_total", describe_counter(Count),
        "Redis calls that failed";
    /// Counter: Redis calls cut off by the L2 timeout.
    L2_TIMEOUTS = "cache_l2_timeouts_total", describe_counter(Count),
        "Redis calls cut off by the L2 timeout";
    /// Counter: Redis calls not attempted (not connected, breaker open).
    L2_SKIPPED = "cache_l2_skipped_total", describe_counter(Count),
        "Redis calls not attempted: not connected yet, or the breaker is open";
    /// Counter: values read from Redis that did not decode.
    L2_UNDECODABLE = "cache_l2_undecodable_total", describe_counter(Count),
        "Values read from Redis that did not decode (treated as misses)";
    /// Counter: loaded values kept out of Redis because the key held another
    /// value type's entry.
    L2_FOREIGN_KEPT = "cache_l2_foreign_kept_total", describe_counter(Count),
        "Loaded values not written to Redis over another value type's entry (served from L1)";
    /// Counter: values too large (or not serialisable) to store in Redis.
    L2_UNSTORABLE = "cache_l2_unstorable_total", describe_counter(Count),
        "Values too large or not serialisable to store in Redis";
    /// Gauge: the L2 circuit breaker, `0` closed, `1` open, `2` half-open,
    /// `-1` disabled (no Redis).
    BREAKER_STATE = "cache_breaker_state", describe_gauge,
        "L2 circuit breaker: 0 closed, 1 open, 2 half-open, -1 disabled (no Redis)";
    /// Counter: times the breaker opened.
    BREAKER_OPENS = "cache_breaker_opens_total", describe_counter(Count),
        "Times the breaker opened";
    /// Counter: `lock`: times this process took the Redis lock.
    LOCK_ACQUIRED = "cache_lock_acquired_total", describe_counter(Count),
        "lock: times this process took the Redis lock and ran the body";
    /// Counter: `lock`: times a caller waited for another instance's load.
    LOCK_WAITS = "cache_lock_waits_total", describe_counter(Count),
        "lock: times a caller waited for another instance's load";
    /// Counter: `lock`: waits that ran out.
    LOCK_WAIT_TIMEOUTS = "cache_lock_wait_timeouts_total", describe_counter(Count),
        "lock: waits that ran out, after which the caller loaded itself";
    /// Counter: `stale`: calls answered with a stale value; label `reason` is
    /// `refreshing` (a refresh runs) or `fail_safe` (refreshing failed).
    STALE_SERVES = "cache_stale_serves_total", describe_counter(Count),
        "stale: calls answered with a stale value (reason: refreshing or fail_safe)";
    /// Counter: `early`: background refreshes started before expiry.
    EARLY_REFRESHES = "cache_early_refreshes_total", describe_counter(Count),
        "early: background refreshes started before expiry";
    /// Counter: background refreshes that failed or timed out.
    REFRESH_ERRORS = "cache_refresh_errors_total", describe_counter(Count),
        "Background refreshes whose body returned Err or ran past refresh_timeout";
    /// Counter: invalidation messages this cache published.
    INVALIDATIONS_SENT = "cache_invalidations_sent_total", describe_counter(Count),
        "Invalidation messages this cache published";
    /// Counter: invalidation messages received from other caches.
    INVALIDATIONS_RECEIVED = "cache_invalidations_received_total", describe_counter(Count),
        "Invalidation messages received from other caches";
    /// Counter: messages on the invalidation channel that did not parse.
    CHANNEL_MESSAGES_IGNORED = "cache_channel_messages_ignored_total", describe_counter(Count),
        "Messages on the invalidation channel that did not parse (ignored)";
    /// Counter: times the invalidation subscription was re-established.
    PUBSUB_RECONNECTS = "cache_pubsub_reconnects_total", describe_counter(Count),
        "Times the invalidation subscription was re-established (L1 was cleared)";
    /// Gauge: `1` while the invalidation subscription delivers (one of
    /// this cache's heartbeats came back through it within the last three
    /// heartbeat intervals), else `0`: see
    /// [`Stats::channel_verified`](crate::Stats::channel_verified).
    CHANNEL_VERIFIED = "cache_channel_verified", describe_gauge,
        "1 while this cache's heartbeats come back through the invalidation channel (one within the last three heartbeat intervals), else 0";
    /// Gauge: entries in the in-process tier.
    L1_ENTRIES = "cache_l1_entries", describe_gauge(Count),
        "Entries in the in-process tier";
    /// Counter: entries pushed out of the in-process tier by its bounds.
    L1_EVICTIONS = "cache_l1_evictions_total", describe_counter(Count),
        "Entries pushed out of the in-process tier by its bounds";
    /// Counter: Redis calls refused because Redis is full (`OOM`).
    L2_OUT_OF_MEMORY = "cache_l2_out_of_memory_total", describe_counter(Count),
        "Redis calls refused because Redis is full (OOM: maxmemory under noeviction)";
    /// Counter: Redis calls refused by a read-only replica (`READONLY`).
    L2_READ_ONLY = "cache_l2_read_only_total", describe_counter(Count),
        "Redis calls refused because the connection reaches a read-only replica";
    /// Counter: pending invalidations replayed once Redis answered again.
    INVALIDATIONS_REPLAYED = "cache_invalidations_replayed_total", describe_counter(Count),
        "Pending invalidations (keys and tags) replayed once Redis answered again";
    /// Counter: pending invalidations dropped because the backlog was full.
    INVALIDATIONS_DROPPED = "cache_invalidations_dropped_total", describe_counter(Count),
        "Pending invalidations dropped because the backlog was full";
    /// Gauge: invalidations waiting to be replayed to Redis.
    INVALIDATIONS_PENDING = "cache_invalidations_pending", describe_gauge(Count),
        "Invalidations that did not reach Redis and wait to be replayed";
    /// Counter: values not kept in the in-process tier, their entry being
    /// larger than one of its shards holds.
    L1_REJECTED = "cache_l1_rejected_total", describe_counter(Count),
        "Values not kept in the in-process tier: larger than one of its shards holds";
    /// Counter: times the invalidation subscription was found silent (this
    /// cache's heartbeats stopped coming back) and replaced.
    CHANNEL_SILENCES = "cache_channel_silences_total", describe_counter(Count),
        "Times the invalidation subscription went silent and was replaced (L1 was cleared)";
    /// Counter: background work (writes, "filled" messages, lock releases)
    /// dropped because `background_limit` jobs were running.
    BACKGROUND_DROPPED = "cache_background_dropped_total", describe_counter(Count),
        "Background Redis work (loaded values' writes, fill messages, lock releases) dropped at background_limit";
    /// Counter: `lock`: loads whose lease was lost while the body ran (their
    /// value was not written to Redis).
    LOCK_LEASES_LOST = "cache_lock_leases_lost_total", describe_counter(Count),
        "lock: loads whose lease was lost while the body ran (value not written to Redis)";
    /// Counter: calls under a consistency token that skipped L1 (the
    /// token's writes had not reached this instance yet).
    L1_SKIPPED_FOR_TOKEN = "cache_l1_skipped_for_token_total", describe_counter(Count),
        "Calls under a consistency token that skipped L1: its writes had not reached this instance yet";
    /// Counter: `#[write_behind]` calls; label `outcome` is `queued` (the
    /// body runs in a worker) or `synchronous` (Redis could not queue the
    /// write: the body ran at once).
    WRITE_BEHIND_WRITES = "cache_write_behind_writes_total", describe_counter(Count),
        "write_behind calls (outcome: queued, or synchronous when Redis could not queue the write)";
    /// Counter: queued writes applied by this process' workers.
    WRITE_BEHIND_APPLIED = "cache_write_behind_applied_total", describe_counter(Count),
        "Queued writes applied by this process' write-behind workers";
    /// Counter: failed attempts of queued writes that will be retried.
    WRITE_BEHIND_RETRIES = "cache_write_behind_retries_total", describe_counter(Count),
        "Failed attempts of queued writes that will be retried";
    /// Counter: queued writes moved to the dead letters.
    WRITE_BEHIND_DEAD_LETTERS = "cache_write_behind_dead_letters_total", describe_counter(Count),
        "Queued writes moved to the dead letters (failed max_attempts times, or unusable)";
    /// Counter: queued writes superseded by a later write of their key (`coalesce`).
    WRITE_BEHIND_COALESCED = "cache_write_behind_coalesced_total", describe_counter(Count),
        "Queued writes acknowledged unapplied: a later write of their key came with them (coalesce)";
    /// Gauge: writes queued and not yet applied (as this process' workers
    /// last read it).
    WRITE_BEHIND_DEPTH = "cache_write_behind_depth", describe_gauge(Count),
        "Writes queued and not yet applied, over the queues of this process' write-behind workers";
    /// Gauge, in seconds: how long ago the oldest of them was queued.
    WRITE_BEHIND_LAG = "cache_write_behind_lag_seconds", describe_gauge(Seconds),
        "How long ago the oldest write not yet applied was queued (0 when none)";
    /// Histogram, in seconds: how long each Redis call took (answered,
    /// failed or timed out; skipped calls are not sampled).
    REDIS_CALL_DURATION = "cache_redis_call_duration_seconds", describe_histogram(Seconds),
        "How long each Redis round trip took, answered, failed or timed out (calls skipped by the breaker are not sampled)";
    /// Counter, per function (label `function`): calls by what served them,
    /// label `result` `l1_hit`, `l2_hit` or `miss` (the per-function split
    /// of [`HITS`] and [`MISSES`]).
    FUNCTION_CALLS = "cache_function_calls_total", describe_counter(Count),
        "Calls of one function (function: its name) by what served them (result: l1_hit, l2_hit or miss); a batch call counts each id";
    /// Counter, per function: its loads whose body returned `Err` (the
    /// per-function split of [`LOAD_ERRORS`]).
    FUNCTION_LOAD_ERRORS = "cache_function_load_errors_total", describe_counter(Count),
        "Loads of one function (function: its name) whose body returned Err";
    /// Histogram, in seconds, per function: how long its loads' bodies ran
    /// (the per-function split of [`LOAD_DURATION`]).
    FUNCTION_LOAD_DURATION = "cache_function_load_duration_seconds", describe_histogram(Seconds),
        "How long each load of one function (function: its name) ran, background refreshes included";
}

/// How often the state gauges are refreshed (see `Cache`'s gauge task).
pub(crate) const GAUGE_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The labels of a metric of a cache in `namespace`: `namespace`, then `extra`.
pub(crate) fn labels(
    namespace: &str,
    extra: &[(&'static str, &'static str)],
) -> Vec<::metrics::Label> {
    let mut labels = vec![::metrics::Label::new("namespace", namespace.to_owned())];
    for (key, value) in extra {
        labels.push(::metrics::Label::from_static_parts(key, value));
    }
    labels
}

/// The recorder's counter `name` for a cache in `namespace`, with `extra` labels.
pub(crate) fn counter(
    name: &'static str,
    namespace: &str,
    extra: &[(&'static str, &'static str)],
) -> ::metrics::Counter {
    ::metrics::counter!(name, labels(namespace, extra))
}

/// The recorder's gauge `name` for a cache in `namespace`.
pub(crate) fn gauge(name: &'static str, namespace: &str) -> ::metrics::Gauge {
    ::metrics::gauge!(name, labels(namespace, &[]))
}

/// The recorder's histogram `name` for a cache in `namespace`.
pub(crate) fn histogram(name: &'static str, namespace: &str) -> ::metrics::Histogram {
    ::metrics::histogram!(name, labels(namespace, &[]))
}
