//! After a miss, the Redis work the caller does not need (the conditional
//! write of its value, `lock`'s "filled" message and the lock's release)
//! runs in the background, bounded: with a slow Redis a call pays only for
//! what it reads, and past `background_limit` work is dropped and counted,
//! never queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{Proxy, RedisServer, eventually};

#[cached(key = "cold:<id>", ttl = 60, lock, cache = cache, skip(cache, loads))]
async fn cold(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id + 1
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.client())
        .unwrap()
}

/// A cache reaching `server` through `proxy`, with a timeout far above the
/// proxy's latency (this is about round trips, not timeouts).
async fn slow_cache(proxy: &Proxy, namespace: &str, background_limit: usize) -> Cache {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(proxy.url())
        .l2_timeout(Duration::from_secs(5))
        .background_limit(background_limit)
        .build()
        .await
        .unwrap();
    assert!(cache.is_l2_connected());
    cache
}

/// Every reply 200 ms late: a cold miss with `lock` waits for its read and
/// its lock (two round trips), not for the write, the "filled" message and
/// the release (three more, and more on a script's first use); those land
/// right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_miss_with_lock_does_not_wait_for_its_write_publish_and_release() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = slow_cache(&proxy, "cold", 1_000).await;
    let round_trip = Duration::from_millis(200);
    proxy.set_latency(Duration::ZERO, round_trip);
    let loads = AtomicU64::new(0);

    let started = Instant::now();
    assert_eq!(cold(&cache, &loads, 1).await, 2);
    let took = started.elapsed();
    assert_eq!(cache.stats().lock_acquired, 1, "the call took the lock");
    // Two round trips and slack; five would be 1 s.
    assert!(
        took < round_trip * 4,
        "a cold miss took {took:?} with {round_trip:?} per reply"
    );

    // The write and the release follow in the background.
    assert!(
        eventually(Duration::from_secs(10), async || {
            exists(&server, "cold:cold:1") && !exists(&server, "cold:cold:1 #lock")
        })
        .await,
        "the value reaches Redis and the lock is released"
    );
    let commands = proxy.commands();
    let published = commands.iter().filter(|name| *name == "PUBLISH").count();
    assert!(
        published >= 1,
        "the \"filled\" message was sent: {commands:?}"
    );
    assert_eq!(cache.stats().background_dropped, 0);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// With room for one background job, twenty misses finishing together:
/// one job runs, the others are dropped and counted, not queued. A dropped
/// job's value is not in Redis (a later miss) and its lock lives out its
/// lease; the admitted one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_past_the_limit_is_dropped_and_counted() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = slow_cache(&proxy, "full", 1).await;
    // Slow enough that the first job's write is still on its way when the
    // other calls end.
    proxy.set_latency(Duration::ZERO, Duration::from_millis(300));
    let loads = AtomicU64::new(0);

    let calls = (0..20).map(|id| cold(&cache, &loads, id));
    let values = futures_util::future::join_all(calls).await;
    assert_eq!(values, (1..=20).collect::<Vec<_>>());
    assert_eq!(cache.stats().lock_acquired, 20);
    tokio::time::timeout(Duration::from_secs(10), cache.settled())
        .await
        .expect("the admitted work ends");

    let dropped = cache.stats().background_dropped;
    let written: Vec<u64> = (0..20)
        .filter(|id| exists(&server, &format!("full:cold:{id}")))
        .collect();
    let left_locked = (0..20)
        .filter(|id| exists(&server, &format!("full:cold:{id} #lock")))
        .count() as u64;
    assert!(
        !written.is_empty() && dropped >= 10,
        "one job ran, most were dropped: {} written, {dropped} dropped",
        written.len()
    );
    assert_eq!(
        written.len() as u64 + dropped,
        20,
        "each miss's work either ran or was counted as dropped"
    );
    assert_eq!(
        left_locked, dropped,
        "a dropped job's lock lives out its lease"
    );
}
