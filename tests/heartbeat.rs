//! A subscription that stops delivering without closing is noticed: each
//! cache sends a heartbeat through its own invalidation channel, and when
//! its heartbeats stop coming back while Redis still takes them, it clears
//! L1 and subscribes again. Against a real redis-server, through the
//! fault-injection proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{Proxy, RedisServer, eventually};

const HEARTBEAT: Duration = Duration::from_millis(250);

/// The "database": the current version of record 1.
static VERSION: AtomicU64 = AtomicU64::new(1);

#[cached(key = "record:<id>", ttl = 300, cache = cache, skip(cache))]
async fn record(cache: &Cache, id: u64) -> u64 {
    let _ = id;
    VERSION.load(Ordering::SeqCst)
}

async fn instance(url: String) -> Cache {
    let cache = Cache::builder()
        .namespace("heartbeat")
        .redis_url(url)
        .heartbeat_interval(HEARTBEAT)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("valid configuration");
    assert!(
        eventually(Duration::from_secs(10), async || cache
            .stats()
            .channel_verified)
        .await,
        "subscribed: {:?}",
        cache.stats()
    );
    cache
}

/// Changes the record and invalidates it from `writer`.
async fn update(writer: &Cache, version: u64) {
    VERSION.store(version, Ordering::SeqCst);
    writer.invalidate("record:1").await.expect("Redis is up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_subscription_is_noticed_and_replaced() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let a = instance(proxy.url()).await;
    let b = instance(server.url()).await;

    // A holds version 1 in L1.
    assert_eq!(record(&a, 1).await, 1);
    assert_eq!(record(&a, 1).await, 1);
    assert_eq!(a.stats().l1_hits, 1);
    // Healthy heartbeats are not taken for silence.
    tokio::time::sleep(HEARTBEAT * 6).await;
    assert_eq!(a.stats().channel_silences, 0, "{:?}", a.stats());

    // A's subscription goes silent without closing; B's invalidation of
    // version 1 never reaches A.
    proxy.mute_subscribers();
    update(&b, 2).await;
    assert_eq!(record(&b, 1).await, 2);

    // A notices within four heartbeats (plus slack for a loaded machine)
    // and stops serving version 1.
    let muted = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), async || record(&a, 1).await == 2).await,
        "A still serves the old value: {:?}",
        a.stats()
    );
    let noticed = muted.elapsed();
    assert!(a.stats().channel_silences >= 1, "{:?}", a.stats());
    eprintln!("silence noticed after {noticed:?}");

    // Once subscribers hear again, A subscribes again and receives
    // invalidations as before.
    proxy.unmute_subscribers();
    assert!(
        eventually(Duration::from_secs(15), async || a
            .stats()
            .pubsub_reconnects
            >= 1)
        .await,
        "A never subscribed again: {:?}",
        a.stats()
    );
    assert!(
        eventually(Duration::from_secs(5), async || a.stats().channel_verified).await,
        "{:?}",
        a.stats()
    );
    assert_eq!(record(&a, 1).await, 2);
    assert_eq!(record(&a, 1).await, 2, "from L1 again");
    let silences = a.stats().channel_silences;
    let received = a.stats().invalidations_received;
    update(&b, 3).await;
    assert!(
        eventually(Duration::from_secs(2), async || a
            .stats()
            .invalidations_received
            > received)
        .await,
        "the invalidation message reaches A again: {:?}",
        a.stats()
    );
    assert_eq!(record(&a, 1).await, 3);
    tokio::time::sleep(HEARTBEAT * 6).await;
    assert_eq!(
        a.stats().channel_silences,
        silences,
        "no silence once delivering again: {:?}",
        a.stats()
    );
}
