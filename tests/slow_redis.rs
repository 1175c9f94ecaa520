//! A Redis that answers, but slowly or not at all (issue 13, item 1): a
//! `#[cached]` call waits on Redis for at most the L2 timeout in all, however
//! many commands its path has (tag versions, the read, the lock); slowness
//! opens the breaker and only a quick answer closes it; scripts never cost a
//! `NOSCRIPT` round trip. Driven through the fault-injection proxy against a
//! real redis-server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{BreakerState, Cache, cached};
use cache_test_support::{Proxy, RedisServer, eventually};

/// The most a call may add on top of its budget: scheduling on a loaded
/// machine, not another round trip.
const SLACK: Duration = Duration::from_millis(120);

/// A miss's whole Redis path: two tags to read, the value, the lock.
#[cached(
    key = "report:<org>:<region>:<id>",
    ttl = 60,
    tags = ["org:<org>", "region:<region>"],
    lock,
    cache = cache,
    skip(cache, loads)
)]
async fn report(cache: &Cache, loads: &AtomicU64, id: u64, org: u64, region: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id + org + region
}

#[cached(key = "plain:<id>", ttl = 60, cache = cache, skip(cache))]
async fn plain(cache: &Cache, id: u64) -> u64 {
    id
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.client())
        .unwrap()
}

async fn cache_on(url: String, namespace: &str, timeout: Duration) -> Cache {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .l2_timeout(timeout)
        // These tests look at one call's wait: the breaker stays out of it.
        .breaker_threshold(1_000)
        .breaker_slow_call_rate(1.0)
        .build()
        .await
        .unwrap();
    assert!(cache.is_l2_connected());
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_costs_a_call_its_timeout_at_most() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let timeout = Duration::from_millis(400);
    let cache = cache_on(proxy.url(), "slow", timeout).await;
    let loads = AtomicU64::new(0);
    // Every reply arrives 150 ms late: before, a cold miss paid the two tag
    // reads, the read, the lock, the write, the fill message and the
    // release one after another (7 x 150 ms).
    proxy.set_latency(Duration::ZERO, Duration::from_millis(150));
    for id in 0..3 {
        let started = Instant::now();
        assert_eq!(report(&cache, &loads, id, 10, 20).await, id + 30);
        let took = started.elapsed();
        assert!(took < timeout + SLACK, "cold miss {id} took {took:?}");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3);

    // A hit from Redis fits in the budget: the tags' tokens (one round
    // trip for both) and the read.
    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    let writer = cache_on(server.url(), "slow", timeout).await;
    report(&writer, &loads, 100, 10, 20).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            exists(&server, "slow:report:10:20:100")
        })
        .await
    );
    proxy.set_latency(Duration::ZERO, Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(report(&cache, &loads, 100, 10, 20).await, 130);
    let took = started.elapsed();
    assert!(took < timeout + SLACK, "L2 hit took {took:?}");
    assert_eq!(cache.stats().l2_hits, 1, "{:?}", cache.stats());
    assert_eq!(loads.load(Ordering::SeqCst), 4, "served from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_call_one_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let cache = cache_on(server.url(), "frozen", timeout).await;
    let loads = AtomicU64::new(0);
    report(&cache, &loads, 0, 1, 2).await;
    server.freeze();
    // New tags each time, so each call reads tokens, the value and the lock.
    for id in 1..=4 {
        let started = Instant::now();
        assert_eq!(report(&cache, &loads, id, id, id).await, 3 * id);
        let took = started.elapsed();
        assert!(took < timeout + SLACK, "call {id} took {took:?}");
    }
    server.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowness_opens_the_breaker_and_only_a_quick_answer_closes_it() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder()
        .namespace("sluggish")
        .redis_url(proxy.url())
        .l2_timeout(Duration::from_secs(2))
        .breaker_slow_call_duration(Duration::from_millis(100))
        .breaker_slow_call_rate(0.5)
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert!(cache.is_l2_connected());
    // Slow, but every call answers: no failure, no timeout.
    proxy.set_latency(Duration::ZERO, Duration::from_millis(150));
    let calls: Vec<_> = (0..30)
        .map(|id| {
            let cache = cache.clone();
            tokio::spawn(async move { plain(&cache, id).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.l2_timeouts + stats.l2_errors, 0, "{stats:?}");
    assert_eq!(stats.breaker_opens, 1, "{stats:?}");
    assert_ne!(stats.breaker, BreakerState::Closed);
    // Open: calls skip Redis and cost nothing.
    let started = Instant::now();
    assert_eq!(plain(&cache, 1_000).await, 1_000);
    assert!(started.elapsed() < Duration::from_millis(50));

    // The probe's answers are still slow: it stays open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(cache.stats().breaker, BreakerState::Closed);
    assert_eq!(cache.stats().breaker_opens, 1);

    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    assert!(
        eventually(Duration::from_secs(5), async || cache.stats().breaker
            == BreakerState::Closed)
        .await,
        "{:?}",
        cache.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_never_cost_a_noscript_round_trip() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = cache_on(proxy.url(), "scripts", Duration::from_secs(1)).await;
    let loads = AtomicU64::new(0);
    report(&cache, &loads, 1, 2, 3).await;
    // A restarted or failed-over Redis has an empty script cache.
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut server.client())
        .unwrap();
    proxy.clear_commands();
    report(&cache, &loads, 2, 4, 6).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            exists(&server, "scripts:report:4:6:2")
        })
        .await
    );
    let commands = proxy.commands();
    assert!(
        commands
            .iter()
            .all(|command| command != "EVALSHA" && command != "SCRIPT"),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|command| command == "EVAL"),
        "{commands:?}"
    );
}
