//! Single-flight: concurrent callers of one missing key share one load, and
//! a leader that panics, is cancelled or fails never leaves waiters hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, within};

/// How long any caller may take before the test fails (rather than hangs).
const WAIT: Duration = Duration::from_secs(10);

#[cached(key = "slow:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn slow_load(cache: &Cache, calls: &AtomicU64, id: u64) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("value {id}")
}

async fn stampede(cache: &Cache, callers: usize) -> (Vec<String>, u64) {
    let calls = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move { slow_load(&cache, &calls, 7).await })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(within(WAIT, "a caller", task).await.unwrap());
    }
    (values, calls.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_callers_cause_one_load() {
    let cache = Cache::builder().build().await.unwrap();
    let (values, loads) = stampede(&cache, 500).await;
    assert_eq!(loads, 1);
    assert!(values.iter().all(|v| v == "value 7"));
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert_eq!(stats.hits + stats.misses, 500);
    assert_eq!(stats.coalesced + stats.l1_hits + 1, 500, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_with_redis_and_without_l1() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .l1_capacity(0)
        .build()
        .await
        .unwrap();
    let (values, loads) = stampede(&cache, 500).await;
    assert_eq!(loads, 1);
    assert!(values.iter().all(|v| v == "value 7"));
}

#[cached(key = "flaky:<id>", ttl = 60, cache = cache, skip(cache, calls, panic_first))]
async fn panics_first(cache: &Cache, calls: &AtomicU64, panic_first: &AtomicBool, id: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if panic_first.swap(false, Ordering::SeqCst) {
        panic!("the database driver panicked");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_leader_hands_over_to_a_waiter() {
    let cache = Cache::builder().build().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let panic_first = Arc::new(AtomicBool::new(true));
    let spawn = || {
        let (cache, calls, panic_first) = (cache.clone(), calls.clone(), panic_first.clone());
        tokio::spawn(async move { panics_first(&cache, &calls, &panic_first, 3).await })
    };
    let leader = spawn();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiters: Vec<_> = (0..20).map(|_| spawn()).collect();
    assert!(
        within(WAIT, "the leader", leader)
            .await
            .unwrap_err()
            .is_panic()
    );
    for waiter in waiters {
        let value = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiters never hang")
            .unwrap();
        assert_eq!(value, 3);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one failed load, one taken over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let cache = Cache::builder().build().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let leader = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(30), slow_load(&cache, &calls, 1)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move { slow_load(&cache, &calls, 1).await })
        })
        .collect();
    assert!(
        within(WAIT, "the leader", leader).await.unwrap().is_err(),
        "the leader was cancelled by its timeout"
    );
    for waiter in waiters {
        let value = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, "value 1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[derive(Debug)]
struct DbDown;

#[cached(key = "down:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn always_fails(cache: &Cache, calls: &AtomicU64, id: u64) -> Result<u64, DbDown> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(DbDown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_gives_each_waiter_its_own_error_concurrently() {
    let cache = Cache::builder().build().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move { always_fails(&cache, &calls, 1).await })
        })
        .collect();
    for task in tasks {
        assert!(within(WAIT, "a caller", task).await.unwrap().is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // The waiters' own loads run side by side, not one after another.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cache.stats().load_errors, 10);
}

#[cached(key = "shared:<id>", ttl = 60, l1 = false, cache = cache, skip(cache, calls))]
async fn read_without_l1(cache: &Cache, calls: &AtomicU64, id: u64) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    format!("value {id}")
}

/// Without L1 the leader's value from Redis goes to the caller without a
/// copy, and is cloned only for callers that waited on the flight: they
/// must all get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_an_l2_read_without_l1_get_the_value() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .await
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    assert_eq!(read_without_l1(&cache, &calls, 3).await, "value 3");
    // Written in the background, right after the call.
    cache.settled().await;
    let before = cache.stats();

    // Redis holds the value; freeze it so that every caller joins the
    // first one's read, then let the read through well within l2_timeout.
    server.freeze();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move { read_without_l1(&cache, &calls, 3).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.thaw();
    for task in tasks {
        assert_eq!(within(WAIT, "a caller", task).await.unwrap(), "value 3");
    }
    let after = cache.stats();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no caller ran the body");
    assert_eq!(after.l2_timeouts, 0, "{after:?}");
    assert_eq!(
        after.l2_hits - before.l2_hits,
        1,
        "one read of Redis: {after:?}"
    );
    assert_eq!(after.coalesced - before.coalesced, 199, "{after:?}");
}
