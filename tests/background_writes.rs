//! After a miss, the Redis work the caller does not need (the conditional
//! write of its value, `lock`'s "filled" message and the lock's release)
//! runs in the background, bounded: with a slow Redis a call pays only for
//! what it reads, and past `background_limit` work is dropped and counted,
//! never queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, write_through};
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
            exists(&server, "cold:cold:1") && !exists(&server, "{cold:cold:1} #lock")
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
        .filter(|id| exists(&server, &format!("{{full:cold:{id}}} #lock")))
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

/// A row in Redis only (`l1 = false`), and its write-through.
struct Rows {
    cache: Cache,
    version: AtomicU64,
    loads: AtomicU64,
}

impl Rows {
    #[cached(key = "row:<id>", ttl = 300, l1 = false, cache = self.cache)]
    async fn read(&self, id: u64) -> u64 {
        let _ = id;
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.version.load(Ordering::SeqCst)
    }

    #[write_through(key = "row:<id>", ttl = 300, cache = self.cache)]
    async fn save(&self, id: u64) -> u64 {
        let _ = id;
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A load's write is queued on the connection before its call returns
/// (only its reply is not waited for), so what this instance does next
/// reaches Redis after it: a second read finds the value, and a
/// write-through right after the load orders its write after the load's
/// (it stores its value, rather than finding the key changed under it and
/// leaving a tombstone). One thread: a job spawned without that first step
/// would not run before the caller's next command.
#[tokio::test(flavor = "current_thread")]
async fn what_follows_a_load_on_this_instance_reaches_redis_after_its_write() {
    let server = RedisServer::start();
    let rows = Rows {
        cache: Cache::builder()
            .namespace("order")
            .redis_url(server.url())
            .build()
            .await
            .unwrap(),
        version: AtomicU64::new(0),
        loads: AtomicU64::new(0),
    };
    // Redis learns the scripts (a script's first use costs a retry, which
    // has no order).
    rows.read(0).await;
    rows.save(0).await;
    rows.cache.settled().await;
    rows.loads.store(0, Ordering::SeqCst);
    // Version 1 now.

    assert_eq!(rows.read(1).await, 1);
    assert_eq!(
        rows.read(1).await,
        1,
        "the second read found the first's value"
    );
    assert_eq!(rows.loads.load(Ordering::SeqCst), 1);

    assert_eq!(rows.read(2).await, 1);
    assert_eq!(rows.save(2).await, 2);
    rows.cache.settled().await;
    rows.cache.clear_local();
    assert_eq!(
        rows.read(2).await,
        2,
        "the write-through's value is in Redis"
    );
    assert_eq!(
        rows.loads.load(Ordering::SeqCst),
        2,
        "{:?}",
        rows.cache.stats()
    );
}
