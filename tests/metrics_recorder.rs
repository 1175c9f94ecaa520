//! The `metrics` feature: what a cache reports to the recorder installed
//! when it was built, read through `metrics-util`'s `DebuggingRecorder`
//! (`tests/metrics.rs` reads it as Prometheus does, against Redis). The root
//! package's dependency on cache-runtime enables the feature.
//!
//! Each test installs its own `DebuggingRecorder` as the thread-local
//! recorder (`metrics::set_default_local_recorder`) before building its
//! cache, on a current-thread runtime, so tests running in parallel never
//! see each other's metrics. Handles bind at build time, so everything the
//! cache counts later (including in tasks it spawned) reaches that recorder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::metrics::*;
use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, subscribed};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

/// One snapshot of a recorder.
struct Snapshot(Vec<(CompositeKey, DebugValue)>);

impl Snapshot {
    fn take(snapshotter: &Snapshotter) -> Snapshot {
        Snapshot(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _unit, _description, value)| (key, value))
                .collect(),
        )
    }

    /// The value of the metric with exactly these labels.
    fn value(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        let mut wanted: Vec<(&str, &str)> = labels.to_vec();
        wanted.sort();
        let found: Vec<&DebugValue> = self
            .0
            .iter()
            .filter(|(key, _)| {
                let mut have: Vec<(&str, &str)> = key
                    .key()
                    .labels()
                    .map(|label| (label.key(), label.value()))
                    .collect();
                have.sort();
                key.kind() == kind && key.key().name() == name && have == wanted
            })
            .map(|(_, value)| value)
            .collect();
        match found[..] {
            [value] => value,
            _ => panic!(
                "{} metrics named {name} with labels {labels:?} in {:#?}",
                found.len(),
                self.0
            ),
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(MetricKind::Counter, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name} is {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(MetricKind::Gauge, name, labels) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is {other:?}"),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(MetricKind::Histogram, name, labels) {
            DebugValue::Histogram(samples) => samples.iter().map(|s| s.into_inner()).collect(),
            other => panic!("{name} is {other:?}"),
        }
    }
}

const BODY: Duration = Duration::from_millis(20);

#[cached(key = "double:<n>", ttl = 60, cache = cache, skip(cache, calls))]
async fn double(cache: &Cache, calls: &AtomicU64, n: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(BODY).await;
    n * 2
}

#[tokio::test]
async fn an_l1_miss_then_a_hit_report_one_miss_one_load_one_l1_hit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = Cache::builder().namespace("m-hit").build().await.unwrap();
    let calls = AtomicU64::new(0);

    assert_eq!(double(&cache, &calls, 21).await, 42); // miss, load
    assert_eq!(double(&cache, &calls, 21).await, 42); // L1 hit
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-hit");
    assert_eq!(metrics.counter(MISSES, &[ns]), 1);
    assert_eq!(metrics.counter(LOADS, &[ns]), 1);
    assert_eq!(metrics.counter(HITS, &[ns, ("tier", "l1")]), 1);
    assert_eq!(metrics.counter(HITS, &[ns, ("tier", "l2")]), 0);
    assert_eq!(metrics.counter(COALESCED, &[ns]), 0);
    assert_eq!(metrics.counter(LOAD_ERRORS, &[ns]), 0);
    let samples = metrics.histogram(LOAD_DURATION, &[ns]);
    assert_eq!(samples.len(), 1, "one load, one sample: {samples:?}");
    assert!(
        samples[0] >= BODY.as_secs_f64() && samples[0] < 5.0,
        "the body's time in seconds: {samples:?}"
    );
    assert_eq!(
        metrics.gauge(BREAKER_STATE, &[ns]),
        -1.0,
        "no Redis: disabled"
    );

    // The same numbers as the stats.
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.loads, stats.l1_hits), (1, 1, 1));
}

#[tokio::test]
async fn every_documented_metric_is_registered_when_the_cache_is_built() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let _cache = Cache::builder().namespace("m-all").build().await.unwrap();

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-all");
    for name in [
        NEGATIVE_HITS,
        MISSES,
        COALESCED,
        LOADS,
        LOAD_ERRORS,
        L2_ERRORS,
        L2_TIMEOUTS,
        L2_SKIPPED,
        L2_UNDECODABLE,
        L2_UNSTORABLE,
        L2_FOREIGN_KEPT,
        BREAKER_OPENS,
        LOCK_ACQUIRED,
        LOCK_WAITS,
        LOCK_WAIT_TIMEOUTS,
        EARLY_REFRESHES,
        REFRESH_ERRORS,
        INVALIDATIONS_SENT,
        INVALIDATIONS_RECEIVED,
        CHANNEL_MESSAGES_IGNORED,
        PUBSUB_RECONNECTS,
        L1_EVICTIONS,
        L2_OUT_OF_MEMORY,
        L2_READ_ONLY,
        INVALIDATIONS_REPLAYED,
        INVALIDATIONS_DROPPED,
        L1_REJECTED,
        CHANNEL_SILENCES,
        BACKGROUND_DROPPED,
        LOCK_LEASES_LOST,
        L1_SKIPPED_FOR_TOKEN,
        WRITE_BEHIND_APPLIED,
        WRITE_BEHIND_RETRIES,
        WRITE_BEHIND_DEAD_LETTERS,
        WRITE_BEHIND_COALESCED,
    ] {
        assert_eq!(metrics.counter(name, &[ns]), 0, "{name}");
    }
    for outcome in ["queued", "synchronous"] {
        assert_eq!(
            metrics.counter(WRITE_BEHIND_WRITES, &[ns, ("outcome", outcome)]),
            0
        );
    }
    for tier in ["l1", "l2"] {
        assert_eq!(metrics.counter(HITS, &[ns, ("tier", tier)]), 0);
    }
    for reason in ["refreshing", "fail_safe"] {
        assert_eq!(metrics.counter(STALE_SERVES, &[ns, ("reason", reason)]), 0);
    }
    assert_eq!(metrics.gauge(BREAKER_STATE, &[ns]), -1.0);
    assert_eq!(metrics.gauge(L1_ENTRIES, &[ns]), 0.0);
    assert_eq!(metrics.gauge(CHANNEL_VERIFIED, &[ns]), 0.0);
    assert_eq!(metrics.gauge(INVALIDATIONS_PENDING, &[ns]), 0.0);
    assert_eq!(metrics.gauge(WRITE_BEHIND_DEPTH, &[ns]), 0.0);
    assert_eq!(metrics.gauge(WRITE_BEHIND_LAG, &[ns]), 0.0);
    assert!(metrics.histogram(LOAD_DURATION, &[ns]).is_empty());
    assert!(metrics.histogram(REDIS_CALL_DURATION, &[ns]).is_empty());

    // Nothing else (the per-function series come with each function's
    // first call), and the naming rules hold for everything registered.
    assert_eq!(metrics.0.len(), 35 + 2 + 2 + 2 + 6 + 2);
    for (key, _) in &metrics.0 {
        let name = key.key().name();
        assert!(name.starts_with("cache_"), "{name}");
        assert_eq!(
            name.ends_with("_total"),
            key.kind() == MetricKind::Counter,
            "{name}"
        );
        assert!(
            key.key()
                .labels()
                .any(|label| label.key() == "namespace" && label.value() == "m-all"),
            "{name}"
        );
    }
}

#[derive(Debug)]
struct Boom;

#[cached(key = "find:<id>", ttl = 60, negative = 60, cache = cache, skip(cache))]
async fn find(cache: &Cache, id: u64) -> Result<Option<u64>, Boom> {
    match id {
        0 => Err(Boom),
        1 => Ok(None),
        id => Ok(Some(id)),
    }
}

#[tokio::test]
async fn errors_negatives_and_namespaces_are_counted_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let first = Cache::builder().namespace("m-one").build().await.unwrap();
    let second = Cache::builder().namespace("m-two").build().await.unwrap();

    assert!(find(&first, 0).await.is_err()); // a load that fails
    assert_eq!(find(&first, 1).await.unwrap(), None); // a negative load
    assert_eq!(find(&first, 1).await.unwrap(), None); // a negative hit
    assert_eq!(find(&second, 7).await.unwrap(), Some(7));

    let metrics = Snapshot::take(&snapshotter);
    let one = ("namespace", "m-one");
    let two = ("namespace", "m-two");
    assert_eq!(metrics.counter(LOADS, &[one]), 2);
    assert_eq!(metrics.counter(LOAD_ERRORS, &[one]), 1);
    assert_eq!(metrics.counter(NEGATIVE_HITS, &[one]), 1);
    assert_eq!(metrics.counter(HITS, &[one, ("tier", "l1")]), 1);
    assert_eq!(metrics.histogram(LOAD_DURATION, &[one]).len(), 2);
    assert_eq!(metrics.counter(LOADS, &[two]), 1);
    assert_eq!(metrics.counter(LOAD_ERRORS, &[two]), 0);
    assert_eq!(metrics.histogram(LOAD_DURATION, &[two]).len(), 1);

    // The same per function, each cache in its own namespace.
    let find = ("function", "find");
    assert_eq!(metrics.counter(FUNCTION_LOAD_ERRORS, &[one, find]), 1);
    assert_eq!(metrics.counter(FUNCTION_LOAD_ERRORS, &[two, find]), 0);
    assert_eq!(
        metrics
            .histogram(FUNCTION_LOAD_DURATION, &[one, find])
            .len(),
        2
    );
    let calls = |ns, result| metrics.counter(FUNCTION_CALLS, &[ns, find, ("result", result)]);
    assert_eq!(
        (
            calls(one, "l1_hit"),
            calls(one, "l2_hit"),
            calls(one, "miss")
        ),
        (1, 0, 2)
    );
    assert_eq!(
        (
            calls(two, "l1_hit"),
            calls(two, "l2_hit"),
            calls(two, "miss")
        ),
        (0, 0, 1)
    );
}

#[cached(key = "triple:<n>", ttl = 60, cache = cache, skip(cache))]
async fn triple(cache: &Cache, n: u64) -> u64 {
    n * 3
}

#[tokio::test]
async fn calls_are_counted_per_function_and_every_redis_call_is_timed() {
    let server = RedisServer::start();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = Cache::builder()
        .namespace("m-function")
        .redis_url(server.url())
        // Ample on a busy machine: a timed-out read would be a miss.
        .l2_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    // Connected and subscribed: no reconnection clears L1 mid-test.
    subscribed(&cache).await;
    let calls = AtomicU64::new(0);

    assert_eq!(double(&cache, &calls, 1).await, 2); // miss, load
    assert_eq!(double(&cache, &calls, 2).await, 4); // miss, load
    for _ in 0..3 {
        assert_eq!(double(&cache, &calls, 1).await, 2); // L1 hit
    }
    assert_eq!(triple(&cache, 1).await, 3); // miss, load
    cache.settled().await; // the loaded values are in Redis
    cache.clear_local();
    assert_eq!(triple(&cache, 1).await, 3); // from Redis
    assert_eq!(triple(&cache, 1).await, 3); // L1 hit
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.settled().await;

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-function");
    let calls = |function, result| {
        metrics.counter(
            FUNCTION_CALLS,
            &[ns, ("function", function), ("result", result)],
        )
    };
    assert_eq!(
        (
            calls("double", "l1_hit"),
            calls("double", "l2_hit"),
            calls("double", "miss")
        ),
        (3, 0, 2)
    );
    assert_eq!(
        (
            calls("triple", "l1_hit"),
            calls("triple", "l2_hit"),
            calls("triple", "miss")
        ),
        (1, 1, 1)
    );
    // Split by function, the cache-wide counts.
    assert_eq!(metrics.counter(HITS, &[ns, ("tier", "l1")]), 3 + 1);
    assert_eq!(metrics.counter(HITS, &[ns, ("tier", "l2")]), 1);
    assert_eq!(metrics.counter(MISSES, &[ns]), 2 + 1);
    let double_loads = metrics.histogram(FUNCTION_LOAD_DURATION, &[ns, ("function", "double")]);
    assert_eq!(double_loads.len(), 2, "{double_loads:?}");
    assert!(
        double_loads.iter().all(|took| *took >= BODY.as_secs_f64()),
        "{double_loads:?}"
    );
    assert_eq!(
        metrics
            .histogram(FUNCTION_LOAD_DURATION, &[ns, ("function", "triple")])
            .len(),
        1
    );
    for function in ["double", "triple"] {
        assert_eq!(
            metrics.counter(FUNCTION_LOAD_ERRORS, &[ns, ("function", function)]),
            0
        );
    }

    // Redis: at least the four reads (three misses, one hit) and the
    // three writes of the loaded values, each in seconds, within the L2
    // timeout.
    let redis = metrics.histogram(REDIS_CALL_DURATION, &[ns]);
    assert!(redis.len() >= 4 + 3, "{redis:?}");
    assert!(
        redis.iter().all(|took| (0.0..=2.5).contains(took)),
        "{redis:?}"
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_load_and_count_as_coalesced() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = Cache::builder()
        .namespace("m-flight")
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);

    let (a, b) = tokio::join!(double(&cache, &calls, 5), double(&cache, &calls, 5));
    assert_eq!((a, b), (10, 10));

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-flight");
    assert_eq!(metrics.counter(MISSES, &[ns]), 2);
    assert_eq!(metrics.counter(COALESCED, &[ns]), 1);
    assert_eq!(metrics.counter(LOADS, &[ns]), 1);
}

#[tokio::test]
async fn an_unreachable_redis_is_skipped_and_the_breaker_reads_closed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = Cache::builder()
        .namespace("m-skip")
        .redis_url("redis://127.0.0.1:1")
        .connect_timeout(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);
    assert_eq!(double(&cache, &calls, 1).await, 2);

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-skip");
    let skipped = metrics.counter(L2_SKIPPED, &[ns]);
    assert!(skipped >= 1, "the L2 read was skipped: {skipped}");
    assert_eq!(skipped, cache.stats().l2_skipped);
    assert_eq!(metrics.gauge(BREAKER_STATE, &[ns]), 0.0, "closed");
    assert_eq!(metrics.counter(LOADS, &[ns]), 1);
}

#[derive(Clone)]
struct Slow {
    cache: Cache,
    calls: std::sync::Arc<AtomicU64>,
}

impl Slow {
    /// The first load is quick; every later one outlasts `refresh_timeout`.
    #[cached(key = "slow:<id>", ttl = 1, stale = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> Result<u64, Boom> {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok(id)
    }
}

#[tokio::test]
async fn stale_serves_and_a_timed_out_refresh_are_counted_and_sampled() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let refresh_timeout = Duration::from_millis(100);
    let slow = Slow {
        cache: Cache::builder()
            .namespace("m-stale")
            .refresh_timeout(refresh_timeout)
            .build()
            .await
            .unwrap(),
        calls: Default::default(),
    };

    assert_eq!(slow.get(3).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the TTL
    assert_eq!(slow.get(3).await.unwrap(), 3, "stale, a refresh starts");
    let started = Instant::now();
    while slow.cache.stats().refresh_errors == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no refresh ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.get(3).await.unwrap(), 3, "stale, the refresh failed");

    let metrics = Snapshot::take(&snapshotter);
    let ns = ("namespace", "m-stale");
    assert_eq!(metrics.counter(LOADS, &[ns]), 2, "the refresh is a load");
    assert_eq!(metrics.counter(REFRESH_ERRORS, &[ns]), 1);
    assert_eq!(
        metrics.counter(STALE_SERVES, &[ns, ("reason", "refreshing")]),
        1
    );
    assert_eq!(
        metrics.counter(STALE_SERVES, &[ns, ("reason", "fail_safe")]),
        1
    );
    let samples = metrics.histogram(LOAD_DURATION, &[ns]);
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert!(
        samples[1] >= refresh_timeout.as_secs_f64(),
        "the timed-out refresh ran until the deadline: {samples:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_state_gauges_follow_the_cache_and_their_task_ends_with_it() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let cache = Cache::builder().namespace("m-gauge").build().await.unwrap();
    assert_eq!(tasks(), before + 1, "the gauge task");
    let ns = ("namespace", "m-gauge");
    let calls = AtomicU64::new(0);
    for n in 0..3 {
        double(&cache, &calls, n).await;
    }
    assert_eq!(
        Snapshot::take(&snapshotter).gauge(L1_ENTRIES, &[ns]),
        0.0,
        "not refreshed yet"
    );

    tokio::time::sleep(Duration::from_millis(1_100)).await; // one period
    assert_eq!(Snapshot::take(&snapshotter).gauge(L1_ENTRIES, &[ns]), 3.0);
    cache.clear_local();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(Snapshot::take(&snapshotter).gauge(L1_ENTRIES, &[ns]), 0.0);

    drop(cache);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(tasks(), before, "the gauge task ended with the cache");
}
