//! Redis through Sentinel (`redis_sentinel`), against real processes: a
//! primary, its replica and a sentinel. The caches find the master through
//! the sentinel, share entries and invalidations on it, and when the
//! primary is killed (`SIGKILL`) under calls, they keep answering (no call
//! waits much longer than the L2 timeout), then follow the promoted replica
//! by themselves: L2 hits resume on it, their subscriptions move to it, and
//! an invalidation made then reaches the other instance, with no old value
//! served afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{SentinelSet, eventually, subscribed, within};

const NAMESPACE: &str = "sentinel";
const L2_TIMEOUT: Duration = Duration::from_millis(200);

/// The "database" the instances share: renamed users, and read counts.
#[derive(Default)]
struct Db {
    names: Mutex<HashMap<u64, String>>,
    reads: AtomicU64,
}

#[derive(Debug, PartialEq)]
struct DbError;

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    async fn new(set: &SentinelSet, db: &Arc<Db>) -> Repo {
        let cache = Cache::builder()
            .namespace(NAMESPACE)
            .redis_sentinel(SentinelSet::MASTER, [set.sentinel_url()])
            .l2_timeout(L2_TIMEOUT)
            .connect_timeout(Duration::from_millis(500))
            // Quick to try again, so the test does not wait long for the
            // caches to find the promoted replica.
            .reconnect_max_delay(Duration::from_millis(200))
            .breaker_cooldown(Duration::from_millis(200))
            .build()
            .await
            .expect("a valid configuration builds");
        Repo {
            cache,
            db: db.clone(),
        }
    }

    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    async fn name(&self, id: u64) -> Result<String, DbError> {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        let names = self.db.names.lock().unwrap();
        Ok(names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}")))
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        self.db.names.lock().unwrap().insert(id, name.to_owned());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_entries_and_invalidations_on_the_master_the_sentinel_names() {
    let set = SentinelSet::start();
    let db = Arc::new(Db::default());
    let first = Repo::new(&set, &db).await;
    let second = Repo::new(&set, &db).await;
    for repo in [&first, &second] {
        assert!(repo.cache.is_l2_connected(), "{:?}", repo.cache.stats());
        subscribed(&repo.cache).await;
    }
    assert_eq!(
        set.primary().invalidation_subscribers(NAMESPACE),
        2,
        "subscribed on the master"
    );

    assert_eq!(first.name(1).await, Ok("user 1".to_owned()));
    let stored = eventually(Duration::from_secs(5), async || {
        set.primary().stored("sentinel:user:1").holds("user 1")
    })
    .await;
    assert!(stored, "{:?}", set.primary().stored("sentinel:user:1"));
    assert_eq!(second.name(1).await, Ok("user 1".to_owned()));
    assert_eq!(
        second.cache.stats().l2_hits,
        1,
        "{:?}",
        second.cache.stats()
    );
    assert_eq!(db.reads.load(Ordering::SeqCst), 1, "loaded once");

    assert_eq!(first.name(1).await, Ok("user 1".to_owned())); // in its L1
    second.rename(1, "Ada").await.unwrap();
    let seen = eventually(Duration::from_secs(5), async || {
        first.name(1).await == Ok("Ada".to_owned())
    })
    .await;
    assert!(seen, "the rename reached the first instance");
    assert!(first.cache.stats().invalidations_received >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_is_killed_the_caches_follow_the_promoted_replica() {
    let mut set = SentinelSet::start();
    let db = Arc::new(Db::default());
    let first = Repo::new(&set, &db).await;
    let second = Repo::new(&set, &db).await;
    for repo in [&first, &second] {
        subscribed(&repo.cache).await;
    }
    for id in 0..20 {
        assert_eq!(first.name(id).await, Ok(format!("user {id}")));
    }

    // Calls from both instances, all along, each on a key of its own (a
    // miss that reads Redis, then writes there): none fails, none waits
    // much longer than the L2 timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = [&first, &second]
        .into_iter()
        .zip([1_000_000, 2_000_000])
        .map(|(repo, ids)| {
            let (repo, stop) = (repo.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut calls, mut slowest) = (0u64, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let name = repo.name(ids + calls).await;
                    slowest = slowest.max(started.elapsed());
                    assert!(name.is_ok(), "call {calls}: {name:?}");
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (calls, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    set.kill_primary();
    let promoted = tokio::task::block_in_place(|| set.wait_for_promotion(Duration::from_secs(15)));
    assert!(promoted, "the sentinel promoted the replica");

    // L2 hits resume on the new master: what one instance loads now, the
    // other reads from there.
    let mut next_id = 1000;
    let resumed = eventually(Duration::from_secs(10), async || {
        next_id += 1;
        let (id, expected) = (next_id, format!("user {next_id}"));
        first.name(id).await.is_ok()
            && eventually(Duration::from_millis(500), async || {
                set.replica()
                    .stored(&format!("sentinel:user:{id}"))
                    .holds(&expected)
            })
            .await
    })
    .await;
    assert!(
        resumed,
        "writes reach the new master: {:?}",
        first.cache.stats()
    );
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let (calls, slowest) = within(Duration::from_secs(5), "a caller", caller)
            .await
            .expect("no call failed or panicked");
        assert!(calls > 0);
        assert!(
            slowest < L2_TIMEOUT + Duration::from_millis(800),
            "a call waited {slowest:?} (L2 timeout {L2_TIMEOUT:?})"
        );
    }
    // The subscriptions moved to the new master (and with them the
    // connection of an instance that had no call to notice the failover).
    let moved = eventually(Duration::from_secs(10), async || {
        set.replica().invalidation_subscribers(NAMESPACE) == 2
            && first.cache.stats().channel_verified
            && second.cache.stats().channel_verified
    })
    .await;
    assert!(
        moved,
        "both subscribed on the new master: {} subscribers, {:?}, {:?}",
        set.replica().invalidation_subscribers(NAMESPACE),
        first.cache.stats(),
        second.cache.stats()
    );

    let l2_hits = second.cache.stats().l2_hits;
    let id = 5000;
    assert_eq!(first.name(id).await, Ok(format!("user {id}")));
    let stored = eventually(Duration::from_secs(5), async || {
        set.replica()
            .stored(&format!("sentinel:user:{id}"))
            .holds(&format!("user {id}"))
    })
    .await;
    assert!(stored);
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(second.name(id).await, Ok(format!("user {id}")));
    assert_eq!(
        second.cache.stats().l2_hits,
        l2_hits + 1,
        "{:?}",
        second.cache.stats()
    );
    assert_eq!(db.reads.load(Ordering::SeqCst), reads, "a hit, not a load");

    // An invalidation made now reaches the other instance, and no old
    // value is served afterwards by either.
    assert_eq!(first.name(7).await, Ok("user 7".to_owned()));
    assert_eq!(second.name(7).await, Ok("user 7".to_owned()));
    second.rename(7, "Grace").await.unwrap();
    let seen = eventually(Duration::from_secs(5), async || {
        first.name(7).await == Ok("Grace".to_owned())
    })
    .await;
    assert!(
        seen,
        "the rename reached the first instance: {:?}",
        first.cache.stats()
    );
    for _ in 0..20 {
        assert_eq!(first.name(7).await, Ok("Grace".to_owned()));
        assert_eq!(second.name(7).await, Ok("Grace".to_owned()));
    }
}
