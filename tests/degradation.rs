//! Redis down at start, frozen mid-run, restarted: calls still return the
//! body's result within the L2 timeout, the breaker opens and recovers, and
//! no secret reaches the logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{BreakerState, Cache, cached};
use cache_test_support::{CapturedLogs, RedisServer, dead_url, eventually};

#[cached(key = "n:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn compute(cache: &Cache, calls: &AtomicU64, id: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst);
    id * 2
}

#[tokio::test]
async fn redis_down_at_start_still_serves_every_call_quickly() {
    let started = Instant::now();
    let cache = Cache::builder()
        .redis_url(dead_url())
        .build()
        .await
        .expect("an unreachable Redis is not a configuration error");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "build took {:?}",
        started.elapsed()
    );
    assert!(!cache.is_l2_connected());

    let calls = AtomicU64::new(0);
    let started = Instant::now();
    for id in 0..50 {
        assert_eq!(compute(&cache, &calls, id).await, id * 2);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "50 calls took {took:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    // L1 still works without Redis.
    assert_eq!(compute(&cache, &calls, 0).await, 0);
    assert_eq!(cache.stats().l1_hits, 1);
    assert!(cache.stats().l2_skipped >= 50);
}

#[tokio::test]
async fn build_waits_no_longer_than_the_connect_timeout() {
    // Accepts TCP connections (the kernel does, into the backlog) but never
    // speaks: the Redis handshake hangs.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}",
        black_hole.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let cache = Cache::builder()
        .redis_url(url)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800), "build took {took:?}");
    let calls = AtomicU64::new(0);
    let started = Instant::now();
    assert_eq!(compute(&cache, &calls, 1).await, 2);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "not connected: L2 is skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_bounds_each_call_opens_the_breaker_and_recovers() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let cache = Cache::builder()
        .namespace("frozen")
        .redis_url(server.url())
        .l2_timeout(timeout)
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);
    assert_eq!(compute(&cache, &calls, 0).await, 0);
    assert_eq!(cache.stats().breaker, BreakerState::Closed);

    server.freeze();
    for id in 1..=10 {
        let started = Instant::now();
        assert_eq!(compute(&cache, &calls, id).await, id * 2);
        let took = started.elapsed();
        assert!(
            took < timeout + Duration::from_millis(90),
            "call {id} took {took:?}"
        );
    }
    let stats = cache.stats();
    assert!(stats.l2_timeouts >= 3, "{stats:?}");
    assert_eq!(stats.breaker_opens, 1, "{stats:?}");
    assert_ne!(stats.breaker, BreakerState::Closed);
    assert!(
        stats.l2_skipped >= 5,
        "once open, calls skip Redis: {stats:?}"
    );
    // While open, a call costs no Redis wait at all.
    let started = Instant::now();
    compute(&cache, &calls, 100).await;
    assert!(
        started.elapsed() < Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );

    server.thaw();
    let mut id = 1000;
    let recovered = eventually(Duration::from_secs(10), async || {
        id += 1;
        compute(&cache, &calls, id).await;
        cache.stats().breaker == BreakerState::Closed
    })
    .await;
    assert!(
        recovered,
        "breaker closes after Redis answers again: {:?}",
        cache.stats()
    );

    // And L2 is really in use again: a second instance reads what we write.
    compute(&cache, &calls, 5000).await;
    cache.settled().await; // the write follows the call
    let other = Cache::builder()
        .namespace("frozen")
        .redis_url(server.url())
        .build()
        .await
        .unwrap();
    let before = calls.load(Ordering::SeqCst);
    assert_eq!(compute(&other, &calls, 5000).await, 10_000);
    assert_eq!(calls.load(Ordering::SeqCst), before, "served from Redis");
    assert_eq!(other.stats().l2_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_is_reconnected_automatically() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = Cache::builder()
        .namespace("restart")
        .redis_url(server.url())
        .l2_timeout(Duration::from_millis(100))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);
    compute(&cache, &calls, 1).await;

    server.kill();
    for id in 2..10 {
        assert_eq!(compute(&cache, &calls, id).await, id * 2);
    }
    assert!(cache.stats().l2_errors + cache.stats().l2_timeouts >= 2);

    let server = RedisServer::start_on(port).expect("restart on the same port");
    assert!(
        writes_reach(&server, &cache, &calls, "restart").await,
        "writes reach the restarted server: {:?}",
        cache.stats()
    );
}

/// A call that finds the connection broken makes a fresh one in the
/// background, without waiting for the breaker (which never opens here):
/// once the server is back, calls reach it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_made_again_while_the_breaker_stays_closed() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = Cache::builder()
        .namespace("broken")
        .redis_url(server.url())
        .l2_timeout(Duration::from_millis(100))
        .breaker_threshold(1_000)
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);
    compute(&cache, &calls, 1).await;

    server.kill();
    assert_eq!(compute(&cache, &calls, 2).await, 4);
    assert!(cache.stats().l2_errors + cache.stats().l2_timeouts >= 1);

    let server = RedisServer::start_on(port).expect("restart on the same port");
    assert!(
        writes_reach(&server, &cache, &calls, "broken").await,
        "writes reach the restarted server: {:?}",
        cache.stats()
    );
    assert_eq!(cache.stats().breaker_opens, 0, "{:?}", cache.stats());
}

/// Calls `compute` on new ids until the entry one of them stores reaches
/// `server` (the write runs in the background, after the call): whether
/// that happened within 10 s.
async fn writes_reach(
    server: &RedisServer,
    cache: &Cache,
    calls: &AtomicU64,
    namespace: &str,
) -> bool {
    let mut id = 100;
    eventually(Duration::from_secs(10), async || {
        id += 1;
        compute(cache, calls, id).await;
        cache.settled().await;
        let mut redis = server.client();
        redis::cmd("EXISTS")
            .arg(format!("{namespace}:n:{id}"))
            .query::<bool>(&mut redis)
            .unwrap_or(false)
    })
    .await
}

/// Collects everything `tracing` prints, for checking what the logs hold.
#[tokio::test]
async fn passwords_and_rendered_keys_stay_out_of_logs_and_errors() {
    let logs = CapturedLogs::start(tracing::Level::INFO);

    let url = dead_url().replace("redis://", "redis://app:hunter2@");
    let cache = Cache::builder()
        .redis_url(&url)
        .breaker_threshold(1)
        .build()
        .await
        .unwrap();
    let calls = AtomicU64::new(0);
    compute(&cache, &calls, 424_242).await;
    let error = cache.invalidate("n:424242").await.unwrap_err();
    assert!(error.is_l2());

    let logs = logs.text();
    assert!(
        logs.contains("app:***@"),
        "the logs name the (redacted) server: {logs}"
    );
    assert!(!logs.contains("hunter2"), "{logs}");
    assert!(
        !logs.contains("424242"),
        "rendered keys are not logged at info: {logs}"
    );
    assert!(!format!("{cache:?}").contains("hunter2"));
    assert!(!format!("{error} {error:?}").contains("hunter2"));
}
