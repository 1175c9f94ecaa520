//! The cache on a Redis Cluster when the cluster changes under it: entries
//! spread over every master, a master killed under load (its replica takes
//! over), and slots moving under load. (The scenarios that hold on any
//! topology are `tests/topologies.rs`.) First, the local cluster itself: it
//! forms with 3 masters and 3 replicas, spreads slots over the masters, and
//! a replica takes over when its master is killed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{RedisCluster, TestRedis, eventually, key_slot, subscribed};
use serde::{Deserialize, Serialize};

#[test]
fn a_local_cluster_forms_and_fails_over() {
    let mut cluster = RedisCluster::start();
    assert_eq!(cluster.seed_urls().len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);

    // A key is written on the master of its slot: every master takes some.
    let mut written_on = std::collections::BTreeSet::new();
    for id in 0..64 {
        let key = format!("app:user:{id}");
        for master in &masters {
            let stored: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(id)
                .query(&mut master.client());
            if stored.is_ok() {
                written_on.insert(master.port());
            }
        }
    }
    assert_eq!(written_on.len(), 3, "keys spread over every master");
    assert_ne!(key_slot("app:user:1"), key_slot("app:user:2"));
    assert_eq!(key_slot("{app:user:1} #lock"), key_slot("app:user:1"));

    let killed = cluster.kill_master_of("app:user:1");
    cluster.wait_until_ok();
    assert!(
        cluster
            .masters()
            .iter()
            .all(|master| master.port() != killed),
        "a replica took over"
    );
    assert_eq!(cluster.seed_urls().len(), 5);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    /// Bumped by every write: a read must never see an older one than the
    /// last write that completed before the read began.
    version: u64,
}

#[derive(Debug)]
struct DbError;

/// The database every instance shares.
#[derive(Default)]
struct Db {
    versions: Mutex<HashMap<u64, u64>>,
    reads: AtomicU64,
}

impl Db {
    fn user(&self, id: u64) -> User {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let version = *self.versions.lock().unwrap().get(&id).unwrap_or(&0);
        User { id, version }
    }

    fn write(&self, id: u64) -> u64 {
        let mut versions = self.versions.lock().unwrap();
        let version = versions.entry(id).or_insert(0);
        *version += 1;
        *version
    }
}

/// One application instance.
#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    async fn new(seeds: &[String], db: &Arc<Db>) -> Repo {
        let cache = Cache::builder()
            .namespace("app")
            .redis_cluster(seeds.to_vec())
            .build()
            .await
            .unwrap();
        assert!(cache.is_l2_connected());
        subscribed(&cache).await;
        Repo {
            cache,
            db: db.clone(),
        }
    }

    /// Read through L1 and Redis.
    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    async fn get_user(&self, id: u64) -> Result<User, DbError> {
        Ok(self.db.user(id))
    }

    /// The same entry, read from Redis on every call (no L1).
    #[cached(key = "user:<id>", ttl = 300, l1 = false, cache = self.cache)]
    async fn get_user_from_redis(&self, id: u64) -> Result<User, DbError> {
        Ok(self.db.user(id))
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn update(&self, id: u64) -> Result<u64, DbError> {
        Ok(self.db.write(id))
    }
}

/// Ids whose entries (`app:user:<id>`) fall in `slots`, `count` of them.
fn ids_in_slots(slots: std::ops::Range<u16>, count: usize) -> Vec<u64> {
    (0..)
        .filter(|id| slots.contains(&key_slot(&format!("app:user:{id}"))))
        .take(count)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_spread_over_every_master() {
    let redis = TestRedis::start(cache_test_support::Topology::Cluster);
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = Arc::new(Db::default());
    let repo = Repo::new(&cluster.seed_urls(), &db).await;
    for id in 0..300 {
        repo.get_user(id).await.unwrap();
    }
    repo.cache.settled().await;
    let per_master: Vec<usize> = redis.keys_per_master().iter().map(Vec::len).collect();
    assert_eq!(per_master.iter().sum::<usize>(), 300, "{per_master:?}");
    assert!(
        per_master.iter().all(|&keys| keys >= 60),
        "every master holds a fair share: {per_master:?}"
    );
    assert_eq!(repo.cache.stats().l2_errors, 0);
}

/// What a load of readers (and, with `writing`, a writer) saw while the
/// cluster changed under them.
#[derive(Default)]
struct Observed {
    calls: AtomicU64,
    errors: AtomicU64,
    stale_reads: AtomicU64,
    slowest_ms: AtomicU64,
}

/// Runs readers on `readers` (all ids, through Redis) and, when `writer`
/// is given, a writer updating the ids in turn, until `stop`: each read
/// must return a version at least as new as the last write that returned
/// before the read began.
fn load(
    readers: &[Repo],
    writer: Option<Repo>,
    ids: &[u64],
    stop: &Arc<AtomicBool>,
) -> (Arc<Observed>, Vec<tokio::task::JoinHandle<()>>) {
    let observed = Arc::new(Observed::default());
    let committed: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for (n, repo) in readers.iter().cycle().take(8).enumerate() {
        let (repo, ids, stop) = (repo.clone(), ids.to_vec(), stop.clone());
        let (observed, committed) = (observed.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut turn = n;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[turn % ids.len()];
                turn += 1;
                let before = *committed.lock().unwrap().get(&id).unwrap_or(&0);
                let started = Instant::now();
                let read = repo.get_user_from_redis(id).await;
                let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                observed.slowest_ms.fetch_max(took, Ordering::Relaxed);
                observed.calls.fetch_add(1, Ordering::Relaxed);
                match read {
                    Ok(user) if user.version < before => {
                        observed.stale_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        observed.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    if let Some(writer) = writer {
        let (ids, stop, observed) = (ids.to_vec(), stop.clone(), observed.clone());
        tasks.push(tokio::spawn(async move {
            let mut turn = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[turn % ids.len()];
                turn += 1;
                match writer.update(id).await {
                    Ok(version) => {
                        committed.lock().unwrap().insert(id, version);
                    }
                    Err(_) => {
                        observed.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    (observed, tasks)
}

async fn stop_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load task panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_costs_no_caller_an_error_and_its_replica_takes_over() {
    let mut cluster = RedisCluster::start();
    let seeds = cluster.seed_urls();
    let db = Arc::new(Db::default());
    let (first, second) = (Repo::new(&seeds, &db).await, Repo::new(&seeds, &db).await);
    let ids: Vec<u64> = (0..60).collect();
    for &id in &ids {
        first.get_user(id).await.unwrap();
        second.get_user(id).await.unwrap();
    }
    first.cache.settled().await;

    let stop = Arc::new(AtomicBool::new(false));
    let (observed, tasks) = load(&[first.clone(), second.clone()], None, &ids, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The master that dies is the first seed, which both instances'
    // subscriptions were made to: they move to another node too.
    let first_seed = cluster.masters()[0].port();
    assert_eq!(seeds[0], format!("redis://127.0.0.1:{first_seed}"));
    let victim = *ids
        .iter()
        .find(|&&id| {
            cluster.master_of_slot(key_slot(&format!("app:user:{id}"))) == Some(first_seed)
        })
        .expect("the first seed serves some id");
    let reconnects_before = [&first, &second].map(|repo| repo.cache.stats().pubsub_reconnects);
    let killed = cluster.kill_master_of(&format!("app:user:{victim}"));
    assert_eq!(killed, first_seed);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_load(&stop, tasks).await;

    assert_eq!(
        observed.errors.load(Ordering::Relaxed),
        0,
        "no caller error"
    );
    assert!(observed.calls.load(Ordering::Relaxed) > 100);
    // A call waits on Redis for at most the L2 timeout (200 ms) in all;
    // the rest is a loaded machine's scheduling.
    let slowest = observed.slowest_ms.load(Ordering::Relaxed);
    assert!(slowest < 1_000, "slowest call: {slowest} ms");
    assert_ne!(
        cluster.master_of_slot(key_slot(&format!("app:user:{victim}"))),
        Some(killed)
    );

    // L2 hits resume on the slots the replica took over.
    let before = second.cache.stats().l2_hits;
    let resumed = eventually(Duration::from_secs(10), async || {
        second.get_user_from_redis(victim).await.unwrap();
        second.cache.stats().l2_hits > before
    })
    .await;
    assert!(resumed, "{:?}", second.cache.stats());

    // The subscriptions moved to a node alive (clearing L1 then).
    for (repo, before) in [&first, &second].into_iter().zip(reconnects_before) {
        let moved = eventually(Duration::from_secs(10), async || {
            repo.cache.stats().pubsub_reconnects > before
        })
        .await;
        assert!(moved, "{:?}", repo.cache.stats());
        subscribed(&repo.cache).await;
    }

    // An invalidation issued now reaches every instance, and no old value
    // is served after it did.
    assert_eq!(second.get_user(victim).await.unwrap().version, 0);
    let version = first.update(victim).await.unwrap();
    let heard = eventually(Duration::from_secs(5), async || {
        second.get_user(victim).await.unwrap().version == version
    })
    .await;
    assert!(heard, "{:?}", second.cache.stats());
    for _ in 0..20 {
        for repo in [&first, &second] {
            assert_eq!(repo.get_user(victim).await.unwrap().version, version);
            assert_eq!(
                repo.get_user_from_redis(victim).await.unwrap().version,
                version
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moving_under_load_cost_no_error_and_no_stale_read() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_urls();
    let db = Arc::new(Db::default());
    let (writer, reader) = (Repo::new(&seeds, &db).await, Repo::new(&seeds, &db).await);
    // Ids in the slots that move (the first 400 of the master of slot 0).
    const MOVED: u16 = 400;
    let ids = ids_in_slots(0..MOVED, 40);
    let from = cluster.master_of_slot(0).unwrap();
    for &id in &ids {
        reader.get_user_from_redis(id).await.unwrap();
    }
    reader.cache.settled().await;

    let stop = Arc::new(AtomicBool::new(false));
    let (observed, tasks) = load(
        std::slice::from_ref(&reader),
        Some(writer.clone()),
        &ids,
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = reader.cache.stats();
    let ((left, reached), cluster) = tokio::task::spawn_blocking(move || {
        let moved = cluster.reshard(0, MOVED);
        (moved, cluster)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_load(&stop, tasks).await;
    let after = reader.cache.stats();

    assert_eq!(left, from);
    assert_ne!(reached, from);
    assert_eq!(cluster.master_of_slot(0), Some(reached), "the slots moved");
    // The reads were answered by Redis throughout, not by the bodies.
    let l2_hits = after.l2_hits - before.l2_hits;
    let failed = (after.l2_errors + after.l2_timeouts) - (before.l2_errors + before.l2_timeouts);
    assert!(
        l2_hits > 100 && failed <= 5,
        "{l2_hits} L2 hits, {failed} failed: {after:?}"
    );
    assert_eq!(
        observed.errors.load(Ordering::Relaxed),
        0,
        "no caller error"
    );
    assert_eq!(
        observed.stale_reads.load(Ordering::Relaxed),
        0,
        "no stale read"
    );
    assert!(observed.calls.load(Ordering::Relaxed) > 100);
    for &id in &ids {
        let newest = *db.versions.lock().unwrap().get(&id).unwrap_or(&0);
        assert_eq!(
            reader.get_user_from_redis(id).await.unwrap().version,
            newest
        );
    }
}

/// A master that hangs (frozen: connections open, no answer) opens the
/// breaker of its own slots only: the other masters' keys are still read
/// from Redis. (With one breaker for the cluster, over nine calls in ten
/// skipped Redis here, the healthy masters' included.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_master_leaves_the_others_served_from_redis() {
    let cluster = RedisCluster::start();
    let db = Arc::new(Db::default());
    let repo = Repo::new(&cluster.seed_urls(), &db).await;
    let ids: Vec<u64> = (0..60).collect();
    for &id in &ids {
        repo.get_user_from_redis(id).await.unwrap();
    }
    repo.cache.settled().await;
    let master_of = |id: u64| cluster.master_of_slot(key_slot(&format!("app:user:{id}")));
    let sick = master_of(ids[0]);
    let healthy: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| master_of(id) != sick)
        .collect();
    cluster.freeze_master_of(&format!("app:user:{}", ids[0]));

    // Readers over every key: the frozen master's calls time out.
    let stop = Arc::new(AtomicBool::new(false));
    let (observed, tasks) = load(std::slice::from_ref(&repo), None, &ids, &stop);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_load(&stop, tasks).await;
    assert_eq!(
        observed.errors.load(Ordering::Relaxed),
        0,
        "no caller error"
    );
    let slowest = observed.slowest_ms.load(Ordering::Relaxed);
    assert!(slowest < 1_000, "slowest call: {slowest} ms");
    let stats = repo.cache.stats();
    assert!(
        stats.breaker_opens >= 1,
        "the frozen master's breaker opened: {stats:?}"
    );

    // The other masters' keys are still read from Redis.
    let before = repo.cache.stats().l2_hits;
    for &id in &healthy {
        repo.get_user_from_redis(id).await.unwrap();
    }
    let stats = repo.cache.stats();
    cluster.thaw();
    assert_eq!(
        stats.l2_hits - before,
        healthy.len() as u64,
        "every healthy master's key was an L2 hit: {stats:?}"
    );
}
