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
//!
//! - `cache_load_duration_seconds` gets one sample per run of a function
//!   body counted in `cache_loads_total`: loads in the caller's path and
//!   background refreshes (`early`, `stale`) alike. A refresh cut off by
//!   `refresh_timeout` is sampled at the time it ran; a load whose caller
//!   was cancelled before the body finished is counted but not sampled.
//! - `cache_breaker_state`: `0` closed, `1` open, `2` half-open (a probe
//!   is running), `-1` disabled (no Redis configured), so
//!   `cache_breaker_state > 0` means "Redis is being skipped".
//! - The gauges `cache_breaker_state`, `cache_channel_verified` and
//!   `cache_l1_entries` are refreshed every second (the breaker's also on
//!   each transition).
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

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::cache::Inner;
use crate::stats::{BreakerState, Count, Counters, Exported, Gauge, Histogram};

/// Counter: calls served from a tier; label `tier` is `l1` or `l2`.
pub const HITS: &str = "cache_hits_total";
/// Counter: hits on a cached `None` (also counted in [`HITS`]).
pub const NEGATIVE_HITS: &str = "cache_negative_hits_total";
/// Counter: calls that found no fresh value themselves.
pub const MISSES: &str = "cache_misses_total";
/// Counter: misses answered by another caller's load in this process.
pub const COALESCED: &str = "cache_coalesced_total";
/// Counter: runs of a function body to fill the cache (background
/// refreshes included).
pub const LOADS: &str = "cache_loads_total";
/// Counter: loads whose body returned `Err`.
pub const LOAD_ERRORS: &str = "cache_load_errors_total";
/// Histogram, in seconds: how long each load's body ran.
pub const LOAD_DURATION: &str = "cache_load_duration_seconds";
/// Counter: Redis calls that failed.
pub const L2_ERRORS: &str = "cache_l2_errors_total";
/// Counter: Redis calls cut off by the L2 timeout.
pub const L2_TIMEOUTS: &str = "cache_l2_timeouts_total";
/// Counter: Redis calls not attempted (not connected, breaker open).
pub const L2_SKIPPED: &str = "cache_l2_skipped_total";
/// Counter: values read from Redis that did not decode.
pub const L2_UNDECODABLE: &str = "cache_l2_undecodable_total";
/// Counter: values too large (or not serialisable) to store in Redis.
pub const L2_UNSTORABLE: &str = "cache_l2_unstorable_total";
/// Gauge: the L2 circuit breaker, `0` closed, `1` open, `2` half-open,
/// `-1` disabled (no Redis).
pub const BREAKER_STATE: &str = "cache_breaker_state";
/// Counter: times the breaker opened.
pub const BREAKER_OPENS: &str = "cache_breaker_opens_total";
/// Counter: `lock`: times this process took the Redis lock.
pub const LOCK_ACQUIRED: &str = "cache_lock_acquired_total";
/// Counter: `lock`: times a caller waited for another instance's load.
pub const LOCK_WAITS: &str = "cache_lock_waits_total";
/// Counter: `lock`: waits that ran out.
pub const LOCK_WAIT_TIMEOUTS: &str = "cache_lock_wait_timeouts_total";
/// Counter: `stale`: calls answered with a stale value; label `reason` is
/// `refreshing` (a refresh runs) or `fail_safe` (refreshing failed).
pub const STALE_SERVES: &str = "cache_stale_serves_total";
/// Counter: `early`: background refreshes started before expiry.
pub const EARLY_REFRESHES: &str = "cache_early_refreshes_total";
/// Counter: background refreshes that failed or timed out.
pub const REFRESH_ERRORS: &str = "cache_refresh_errors_total";
/// Counter: invalidation messages this cache published.
pub const INVALIDATIONS_SENT: &str = "cache_invalidations_sent_total";
/// Counter: invalidation messages received from other caches.
pub const INVALIDATIONS_RECEIVED: &str = "cache_invalidations_received_total";
/// Counter: times the invalidation subscription was re-established.
pub const PUBSUB_RECONNECTS: &str = "cache_pubsub_reconnects_total";
/// Gauge: `1` once this cache's start-up probe came back through the
/// invalidation channel, else `0`.
pub const CHANNEL_VERIFIED: &str = "cache_channel_verified";
/// Gauge: entries in the in-process tier.
pub const L1_ENTRIES: &str = "cache_l1_entries";
/// Counter: entries pushed out of the in-process tier by its bounds.
pub const L1_EVICTIONS: &str = "cache_l1_evictions_total";

/// How often the state gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// The value of [`BREAKER_STATE`] when no Redis is configured.
const BREAKER_DISABLED: f64 = -1.0;

fn labels(namespace: &str, extra: Option<(&'static str, &'static str)>) -> Vec<::metrics::Label> {
    let mut labels = vec![::metrics::Label::new("namespace", namespace.to_owned())];
    if let Some((key, value)) = extra {
        labels.push(::metrics::Label::from_static_parts(key, value));
    }
    labels
}

fn counter(name: &'static str, namespace: &str) -> Count {
    Count::exported(::metrics::counter!(name, labels(namespace, None)))
}

fn counter_with(name: &'static str, namespace: &str, label: (&'static str, &'static str)) -> Count {
    Count::exported(::metrics::counter!(name, labels(namespace, Some(label))))
}

fn gauge(name: &'static str, namespace: &str) -> Gauge {
    Gauge::exported(::metrics::gauge!(name, labels(namespace, None)))
}

/// Describes every metric to the current recorder (its help text and unit).
fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HITS,
        Unit::Count,
        "Calls served from a cache tier (tier: l1 or l2)"
    );
    describe_counter!(
        NEGATIVE_HITS,
        Unit::Count,
        "Hits on a cached None (negative entries)"
    );
    describe_counter!(
        MISSES,
        Unit::Count,
        "Calls that found no fresh value themselves"
    );
    describe_counter!(
        COALESCED,
        Unit::Count,
        "Misses answered by another caller's load in this process"
    );
    describe_counter!(
        LOADS,
        Unit::Count,
        "Runs of a function body to fill the cache, background refreshes included"
    );
    describe_counter!(LOAD_ERRORS, Unit::Count, "Loads whose body returned Err");
    describe_histogram!(
        LOAD_DURATION,
        Unit::Seconds,
        "How long each load's function body ran, background refreshes included"
    );
    describe_counter!(L2_ERRORS, Unit::Count, "Redis calls that failed");
    describe_counter!(
        L2_TIMEOUTS,
        Unit::Count,
        "Redis calls cut off by the L2 timeout"
    );
    describe_counter!(
        L2_SKIPPED,
        Unit::Count,
        "Redis calls not attempted: not connected yet, or the breaker is open"
    );
    describe_counter!(
        L2_UNDECODABLE,
        Unit::Count,
        "Values read from Redis that did not decode (treated as misses)"
    );
    describe_counter!(
        L2_UNSTORABLE,
        Unit::Count,
        "Values too large or not serialisable to store in Redis"
    );
    describe_gauge!(
        BREAKER_STATE,
        "L2 circuit breaker: 0 closed, 1 open, 2 half-open, -1 disabled (no Redis)"
    );
    describe_counter!(BREAKER_OPENS, Unit::Count, "Times the breaker opened");
    describe_counter!(
        LOCK_ACQUIRED,
        Unit::Count,
        "lock: times this process took the Redis lock and ran the body"
    );
    describe_counter!(
        LOCK_WAITS,
        Unit::Count,
        "lock: times a caller waited for another instance's load"
    );
    describe_counter!(
        LOCK_WAIT_TIMEOUTS,
        Unit::Count,
        "lock: waits that ran out, after which the caller loaded itself"
    );
    describe_counter!(
        STALE_SERVES,
        Unit::Count,
        "stale: calls answered with a stale value (reason: refreshing or fail_safe)"
    );
    describe_counter!(
        EARLY_REFRESHES,
        Unit::Count,
        "early: background refreshes started before expiry"
    );
    describe_counter!(
        REFRESH_ERRORS,
        Unit::Count,
        "Background refreshes whose body returned Err or ran past refresh_timeout"
    );
    describe_counter!(
        INVALIDATIONS_SENT,
        Unit::Count,
        "Invalidation messages this cache published"
    );
    describe_counter!(
        INVALIDATIONS_RECEIVED,
        Unit::Count,
        "Invalidation messages received from other caches"
    );
    describe_counter!(
        PUBSUB_RECONNECTS,
        Unit::Count,
        "Times the invalidation subscription was re-established (L1 was cleared)"
    );
    describe_gauge!(
        CHANNEL_VERIFIED,
        "1 once the start-up probe came back through the invalidation channel"
    );
    describe_gauge!(L1_ENTRIES, Unit::Count, "Entries in the in-process tier");
    describe_counter!(
        L1_EVICTIONS,
        Unit::Count,
        "Entries pushed out of the in-process tier by its bounds"
    );
}

/// The counters of a cache in `namespace`, each holding the handle the
/// recorder installed now gave for it. Every field is listed (no
/// `..Default::default()`), so a new counter cannot be left unexported.
pub(crate) fn counters(namespace: &str) -> Counters {
    describe();
    let ns = namespace;
    Counters {
        l1_hits: counter_with(HITS, ns, ("tier", "l1")),
        l2_hits: counter_with(HITS, ns, ("tier", "l2")),
        negative_hits: counter(NEGATIVE_HITS, ns),
        misses: counter(MISSES, ns),
        coalesced: counter(COALESCED, ns),
        loads: counter(LOADS, ns),
        load_errors: counter(LOAD_ERRORS, ns),
        l2_errors: counter(L2_ERRORS, ns),
        l2_timeouts: counter(L2_TIMEOUTS, ns),
        l2_skipped: counter(L2_SKIPPED, ns),
        l2_undecodable: counter(L2_UNDECODABLE, ns),
        l2_unstorable: counter(L2_UNSTORABLE, ns),
        breaker_opens: counter(BREAKER_OPENS, ns),
        l1_evictions: counter(L1_EVICTIONS, ns),
        lock_acquired: counter(LOCK_ACQUIRED, ns),
        lock_waits: counter(LOCK_WAITS, ns),
        lock_wait_timeouts: counter(LOCK_WAIT_TIMEOUTS, ns),
        early_refreshes: counter(EARLY_REFRESHES, ns),
        stale_serves: counter_with(STALE_SERVES, ns, ("reason", "refreshing")),
        fail_safe_serves: counter_with(STALE_SERVES, ns, ("reason", "fail_safe")),
        refresh_errors: counter(REFRESH_ERRORS, ns),
        invalidations_sent: counter(INVALIDATIONS_SENT, ns),
        invalidations_received: counter(INVALIDATIONS_RECEIVED, ns),
        pubsub_reconnects: counter(PUBSUB_RECONNECTS, ns),
        channel_verified: AtomicU64::new(0),
        last_channel_message_ms: AtomicU64::new(0),
        exported: Exported {
            load_seconds: Histogram::exported(::metrics::histogram!(
                LOAD_DURATION,
                labels(ns, None)
            )),
            breaker_state: gauge(BREAKER_STATE, ns),
            l1_entries: gauge(L1_ENTRIES, ns),
            channel_verified: gauge(CHANNEL_VERIFIED, ns),
        },
    }
}

/// Sets the state gauges of a cache just built, and keeps them current.
///
/// The breaker's gauge is also set on each transition (`breaker.rs`); the
/// entry count is not: it changes on every insert, eviction and expiry, and
/// reading it takes a read lock on every L1 shard, too much for each insert.
/// So a small task re-reads all three every [`GAUGE_PERIOD`] (which also
/// repairs the breaker gauge if two transitions raced). It holds only a
/// `Weak` reference, and ends as soon as the cache is dropped: `stop` is
/// the receiving end of a channel whose sender lives in [`Inner`]. Without
/// a Tokio runtime at hand (the [`Cache::global`](crate::Cache::global)
/// default first used outside one) the gauges are set once.
pub(crate) fn watch_gauges(inner: &Arc<Inner>, stop: tokio::sync::oneshot::Receiver<()>) {
    refresh_gauges(inner);
    if inner.l1.is_none() && inner.l2.is_none() {
        return; // Nothing that changes.
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let inner = Arc::downgrade(inner);
    runtime.spawn(async move {
        let refresh = async {
            let mut ticks = tokio::time::interval(GAUGE_PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // The first tick is immediate: set above.
            loop {
                ticks.tick().await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                refresh_gauges(&inner);
            }
        };
        tokio::select! {
            () = refresh => {}
            _ = stop => {}
        }
    });
}

fn refresh_gauges(inner: &Inner) {
    let exported = &inner.counters.exported;
    let breaker = inner
        .l2
        .as_ref()
        .map_or(BreakerState::Disabled, |l2| l2.breaker_state());
    exported.breaker_state.set(breaker_value(breaker));
    let l1_entries = inner.l1.as_ref().map_or(0, |l1| l1.len());
    exported.l1_entries.set(l1_entries as f64);
    let verified = inner
        .counters
        .channel_verified
        .load(std::sync::atomic::Ordering::Relaxed);
    exported.channel_verified.set(verified as f64);
}

/// The documented encoding of [`BREAKER_STATE`].
fn breaker_value(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
        BreakerState::Disabled => BREAKER_DISABLED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_encoding_matches_the_breakers_own_states() {
        // breaker.rs sets the gauge from its state byte on transitions; the
        // periodic refresh uses `breaker_value`: they must agree.
        let breaker = crate::breaker::Breaker::new(1, Duration::from_secs(1), Gauge::default());
        assert_eq!(breaker_value(breaker.state()), breaker.gauge_value());
        breaker.record_failure();
        assert_eq!(breaker_value(breaker.state()), breaker.gauge_value());
        breaker.probing();
        assert_eq!(breaker_value(breaker.state()), breaker.gauge_value());
        assert_eq!(breaker_value(BreakerState::Disabled), -1.0);
    }
}
