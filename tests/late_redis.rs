//! Redis that first appears after `build()`: the cache was given a URL
//! where nothing listened yet (a Redis started after the app, or still
//! starting). Until Redis answers, calls work in-process; once it does, L2
//! is used, the subscription comes up (invalidations flow both ways), what
//! L1 held from before is dropped (it was never checked against other
//! instances' invalidations), and `lock` waiters work across instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{Proxy, RedisServer, Stored, eventually, free_port, within};

const NAMESPACE: &str = "late";

/// The "database" the instances share: renamed users, and read counts.
#[derive(Default)]
struct Db {
    names: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
    report_loads: AtomicU64,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        let names = self.db.names.lock().unwrap();
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"))
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str) {
        self.db.names.lock().unwrap().insert(id, name.to_owned());
    }

    /// A slow load, one per key across the fleet.
    #[cached(key = "report:<id>", ttl = 300, lock, cache = self.cache)]
    async fn report(&self, id: u64) -> u64 {
        self.db.report_loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        id * 10
    }
}

async fn repo(url: &str, db: &Arc<Db>) -> Repo {
    let cache = Cache::builder()
        .namespace(NAMESPACE)
        .redis_url(url)
        // Background connection attempts at most 200 ms apart, so the test
        // does not wait long for the late Redis to be found.
        .reconnect_max_delay(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    Repo {
        cache,
        db: db.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_appears_after_build_is_taken_into_use() {
    let port = free_port();
    let db = Arc::new(Db::default());
    let late = repo(&format!("redis://127.0.0.1:{port}"), &db).await;
    assert!(!late.cache.is_l2_connected());

    // Meanwhile, in-process: loads, L1 hits, local invalidation, and a
    // `lock` function degrades to the in-process single flight.
    let started = Instant::now();
    assert_eq!(late.name(1).await, "user 1");
    assert_eq!(late.name(1).await, "user 1");
    assert_eq!(late.name(2).await, "user 2");
    late.rename(2, "Grace").await;
    assert_eq!(late.name(2).await, "Grace", "the local copy was dropped");
    assert_eq!(late.report(1).await, 10);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no call waited on the missing Redis: {:?}",
        started.elapsed()
    );
    let stats = late.cache.stats();
    assert_eq!((stats.loads, stats.l1_hits), (4, 1), "{stats:?}");
    assert_eq!(stats.l1_entries, 3, "{stats:?}");
    assert!(stats.l2_skipped >= 3, "{stats:?}");

    // Redis appears. Another instance, connected from the start, renames
    // user 1 at once: its message may go out before the late instance
    // listens.
    let server =
        RedisServer::start_on(port).expect("a redis-server on the port the cache was given");
    let other = repo(&server.url(), &db).await;
    assert!(other.cache.is_l2_connected());
    other.rename(1, "Ada").await;

    // Connected, subscribed, and the invalidation made without Redis
    // replayed (until then this instance does not read Redis).
    let subscribed = eventually(Duration::from_secs(15), async || {
        late.cache.is_l2_connected()
            && server.invalidation_subscribers(NAMESPACE) == 2
            && late.cache.stats().invalidations_pending == 0
    })
    .await;
    assert!(
        subscribed,
        "the late instance connects, subscribes and replays: {:?}, {} subscribers",
        late.cache.stats(),
        server.invalidation_subscribers(NAMESPACE)
    );
    // What L1 held from before Redis was never checked against other
    // instances' invalidations: dropped, whether or not the rename's
    // message reached it.
    let dropped = eventually(Duration::from_secs(5), async || {
        late.cache.stats().l1_entries == 0
    })
    .await;
    assert!(dropped, "L1 kept entries: {:?}", late.cache.stats());
    assert_eq!(late.name(1).await, "Ada");
    assert_eq!(late.name(2).await, "Grace");

    // L2 is used: what the late instance loads, the other one reads.
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(late.name(3).await, "user 3");
    let stored = eventually(Duration::from_secs(5), async || {
        server.stored("late:user:3").holds("user 3")
    })
    .await;
    assert!(stored, "{:?}", server.stored("late:user:3"));
    let l2_hits = other.cache.stats().l2_hits;
    assert_eq!(other.name(3).await, "user 3");
    assert_eq!(other.cache.stats().l2_hits, l2_hits + 1);
    assert_eq!(db.reads.load(Ordering::SeqCst), reads + 1, "loaded once");

    // Invalidations flow both ways.
    assert_eq!(late.name(3).await, "user 3"); // held in the late L1
    other.rename(3, "Grace").await;
    let seen = eventually(Duration::from_secs(2), async || {
        late.name(3).await == "Grace"
    })
    .await;
    assert!(seen, "the late instance heard the rename");
    assert!(late.cache.stats().invalidations_received >= 1);
    assert_eq!(other.name(4).await, "user 4"); // held in the other's L1
    late.rename(4, "Hopper").await;
    assert_eq!(server.stored("late:user:4"), Stored::Tombstone);
    let seen = eventually(Duration::from_secs(2), async || {
        other.name(4).await == "Hopper"
    })
    .await;
    assert!(seen, "the other instance heard the late one's rename");

    // `lock`: one load across both instances, the others wait for it.
    let tasks: Vec<_> = [&late, &other]
        .into_iter()
        .flat_map(|repo| std::iter::repeat_n(repo.clone(), 10))
        .map(|repo| tokio::spawn(async move { repo.report(7).await }))
        .collect();
    for task in tasks {
        let value = within(Duration::from_secs(10), "a caller of the report", task).await;
        assert_eq!(value.unwrap(), 70);
    }
    assert_eq!(
        db.report_loads.load(Ordering::SeqCst),
        2,
        "report 1 before Redis, report 7 once for both instances"
    );
    let (late_stats, other_stats) = (late.cache.stats(), other.cache.stats());
    assert_eq!(
        late_stats.lock_acquired + other_stats.lock_acquired,
        1,
        "{late_stats:?} {other_stats:?}"
    );
    assert_eq!(late_stats.lock_waits + other_stats.lock_waits, 1);
    assert_eq!(
        late_stats.lock_wait_timeouts + other_stats.lock_wait_timeouts,
        0
    );
}

/// The start-up probe proves the channel delivers (`channel_verified`). It
/// is published over the cache's Redis connection right after subscribing;
/// when that one publish fails (Redis appeared after `build()` and the
/// subscription connected before the cache's connection did, or Redis
/// refused it), the channel must still be verified once publishing works,
/// not report for ever that invalidations are not arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_could_not_be_published_is_sent_again() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    proxy.fail_commands(&["PUBLISH"], "ERR publishing refused by the test");
    let db = Arc::new(Db::default());
    let cache = repo(&proxy.url(), &db).await;
    let subscribed = eventually(Duration::from_secs(10), async || {
        server.invalidation_subscribers(NAMESPACE) == 1
    })
    .await;
    assert!(subscribed);
    // The subscription is up and its probe was refused.
    let refused = eventually(Duration::from_secs(5), async || {
        proxy.commands().iter().any(|command| command == "PUBLISH")
    })
    .await;
    assert!(refused);
    assert!(!cache.cache.stats().channel_verified);

    proxy.clear_failures();
    // Invalidations do flow now ...
    let other = repo(&server.url(), &db).await;
    assert_eq!(cache.name(1).await, "user 1");
    other.rename(1, "Ada").await;
    let seen = eventually(Duration::from_secs(2), async || {
        cache.name(1).await == "Ada"
    })
    .await;
    assert!(seen, "the channel delivers");
    // ... and the cache says so.
    let verified = eventually(Duration::from_secs(30), async || {
        cache.cache.stats().channel_verified
    })
    .await;
    assert!(verified, "{:?}", cache.cache.stats());
}
