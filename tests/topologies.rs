//! The guarantees that depend on where Redis keeps things, on one
//! `redis-server` and on a Redis Cluster (3 masters, 3 replicas): each
//! scenario is written once and runs on both (`on_one_server::*`,
//! `on_a_cluster::*`). Hits shared between instances, invalidation and
//! tags reaching every instance, one load per key across the fleet (the
//! lock), stale values on failure, early refresh, no stale set, and
//! degradation when Redis goes away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{
    Gate, Stored, TestRedis, eventually, key_slot, on_every_topology, subscribed, within,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u32,
    name: String,
}

#[derive(Debug)]
struct DbError;

/// The database every instance shares: users, a read counter, a switch
/// that makes reads fail, and a gate that holds reads.
#[derive(Default)]
struct Db {
    users: Mutex<HashMap<u64, User>>,
    reads: AtomicU64,
    failing: AtomicBool,
    hold_reads: Mutex<Option<Gate>>,
}

impl Db {
    fn seeded() -> Arc<Db> {
        let db = Db::default();
        for (id, org) in [(1, 1), (2, 1), (3, 2)] {
            let name = format!("user {id}");
            db.users.lock().unwrap().insert(id, User { id, org, name });
        }
        Arc::new(db)
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn rename(&self, id: u64, name: &str) {
        if let Some(user) = self.users.lock().unwrap().get_mut(&id) {
            user.name = name.to_owned();
        }
    }
}

/// One application instance: its own cache, the shared database.
#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    async fn new(redis: &TestRedis, db: &Arc<Db>) -> Repo {
        let cache = redis
            .connect(Cache::builder().namespace("app"))
            .refresh_retry_after(Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        assert!(cache.is_l2_connected(), "build waits for the connection");
        subscribed(&cache).await;
        Repo {
            cache,
            db: db.clone(),
        }
    }

    async fn read(&self, id: u64) -> Result<Option<User>, DbError> {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        let user = self.db.users.lock().unwrap().get(&id).cloned();
        let hold = self.db.hold_reads.lock().unwrap().clone();
        if let Some(gate) = hold {
            gate.passed().await;
        }
        if self.db.failing.load(Ordering::SeqCst) {
            return Err(DbError);
        }
        Ok(user)
    }

    /// `org` only names the tag.
    #[cached(key = "user:<id>", ttl = 300, tags = ["org:<org>"], cache = self.cache, skip(org))]
    async fn get_user(&self, org: u32, id: u64) -> Option<User> {
        let _ = org;
        self.read(id).await.unwrap()
    }

    #[cached(key = "hot:<id>", ttl = 60, lock, cache = self.cache)]
    async fn hot(&self, id: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        id * 10
    }

    #[cached(key = "stale:<id>", ttl = 1, stale = 60, cache = self.cache)]
    async fn with_stale(&self, id: u64) -> Result<Option<User>, DbError> {
        self.read(id).await
    }

    #[cached(key = "early:<id>", ttl = 2, early = 1.0, lock, cache = self.cache)]
    async fn with_early(&self, id: u64) -> Result<Option<User>, DbError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.read(id).await
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        self.db.rename(id, name);
        Ok(())
    }

    #[invalidates(tag = "org:<org>", cache = self.cache)]
    async fn reorganise(&self, org: u32) {
        let _ = org;
    }
}

fn name(user: Option<User>) -> String {
    user.map(|user| user.name).unwrap_or_default()
}

async fn hits_are_shared_between_instances(redis: TestRedis) {
    let db = Db::seeded();
    let (first, second) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    for id in 1..=3 {
        assert_eq!(name(first.get_user(1, id).await), format!("user {id}"));
    }
    first.cache.settled().await;
    for id in 1..=3 {
        assert_eq!(name(second.get_user(1, id).await), format!("user {id}"));
        assert_eq!(name(second.get_user(1, id).await), format!("user {id}"));
    }
    let stats = second.cache.stats();
    assert_eq!((stats.l2_hits, stats.l1_hits, stats.loads), (3, 3, 0));
    assert_eq!(db.reads(), 3, "each body ran once in all");
    assert_eq!(stats.l2_errors + stats.l2_timeouts, 0, "{stats:?}");

    // Stored under exactly `<namespace>:<rendered key>`, beside the tag's
    // version, each on the master of its own slot.
    assert_eq!(
        redis.keys(),
        ["app:org:1 #tag", "app:user:1", "app:user:2", "app:user:3"]
    );
    assert!(Stored::of(redis.get("app:user:2")).holds("user 2"));
}

async fn an_invalidation_reaches_every_instance(redis: TestRedis) {
    let db = Db::seeded();
    let (writer, other) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    assert_eq!(name(writer.get_user(1, 1).await), "user 1");
    assert_eq!(name(other.get_user(1, 1).await), "user 1");
    assert_eq!(name(other.get_user(1, 1).await), "user 1");
    assert_eq!(other.cache.stats().l1_hits, 1, "held in the other's L1");

    writer.rename(1, "Ada").await.unwrap();
    assert_eq!(name(writer.get_user(1, 1).await), "Ada", "read your write");
    let seen = eventually(Duration::from_secs(1), async || {
        name(other.get_user(1, 1).await) == "Ada"
    })
    .await;
    assert!(seen, "the other instance sees the write within 1 s");
    assert!(Stored::of(redis.get("app:user:1")).holds("Ada"));
}

async fn a_tag_drops_exactly_its_entries_on_every_instance(redis: TestRedis) {
    let db = Db::seeded();
    let (first, second) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    for repo in [&first, &second] {
        repo.get_user(1, 1).await;
        repo.get_user(1, 2).await;
        repo.get_user(2, 3).await;
        repo.cache.settled().await;
    }
    let reads = db.reads();
    assert_eq!(reads, 3, "the second instance read everything from Redis");

    first.reorganise(1).await;
    let reloaded = eventually(Duration::from_secs(1), async || {
        second.get_user(1, 1).await;
        db.reads() > reads
    })
    .await;
    assert!(reloaded, "org 1 entries dropped on the other instance");
    second.get_user(1, 2).await;
    first.get_user(1, 1).await;
    first.get_user(1, 2).await;
    assert_eq!(db.reads(), reads + 2, "users 1 and 2 loaded once more");
    first.get_user(2, 3).await;
    second.get_user(2, 3).await;
    assert_eq!(db.reads(), reads + 2, "org 2 untouched");
}

async fn the_lock_loads_once_across_instances(redis: TestRedis) {
    let db = Db::seeded();
    let mut repos = Vec::new();
    for _ in 0..4 {
        repos.push(Repo::new(&redis, &db).await);
    }
    // Several cold keys in turn: a waiter that checks Redis just before the
    // owner's value lands and takes the lock just after its release must
    // not load again.
    for id in 1..=8 {
        let mut callers = Vec::new();
        for repo in &repos {
            for _ in 0..25 {
                let repo = repo.clone();
                callers.push(tokio::spawn(async move { repo.hot(id).await }));
            }
        }
        for caller in callers {
            let value = within(Duration::from_secs(30), "a caller", caller).await;
            assert_eq!(value.unwrap(), id * 10);
        }
        let stats: Vec<_> = repos.iter().map(|repo| repo.cache.stats()).collect();
        assert_eq!(
            db.reads(),
            id,
            "one load per key in the whole fleet: {stats:#?}"
        );
    }
    // The lock lives in its entry's slot, and was released.
    assert_eq!(key_slot("{app:hot:1} #lock"), key_slot("app:hot:1"));
    for repo in &repos {
        repo.cache.settled().await;
    }
    assert!(!redis.exists("{app:hot:1} #lock"), "released");
}

async fn a_stale_value_is_served_when_the_body_fails(redis: TestRedis) {
    let db = Db::seeded();
    let (first, second) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    assert_eq!(name(first.with_stale(1).await.unwrap()), "user 1");
    first.cache.settled().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    db.failing.store(true, Ordering::SeqCst);
    db.rename(1, "Ada");
    // The other instance never held it: the stale value comes from Redis.
    assert_eq!(name(second.with_stale(1).await.unwrap()), "user 1");
    assert_eq!(second.cache.stats().stale_serves, 1);

    db.failing.store(false, Ordering::SeqCst);
    let refreshed = eventually(Duration::from_secs(3), async || {
        name(second.with_stale(1).await.unwrap()) == "Ada"
    })
    .await;
    assert!(refreshed, "{:?}", second.cache.stats());
}

async fn early_refresh_keeps_a_hot_key_warm(redis: TestRedis) {
    let db = Db::seeded();
    let repo = Repo::new(&redis, &db).await;
    assert_eq!(name(repo.with_early(1).await.unwrap()), "user 1");
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let call = Instant::now();
        repo.with_early(1).await.unwrap();
        slowest = slowest.max(call.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        slowest < Duration::from_millis(150),
        "a caller waited for the body: {slowest:?}"
    );
    let stats = repo.cache.stats();
    assert!(
        stats.early_refreshes >= 1,
        "refreshed before expiry: {stats:?}"
    );
    assert_eq!(stats.loads, 1 + stats.early_refreshes, "{stats:?}");
    // A refresh may be on its way: its body has not read yet.
    let each_once = eventually(Duration::from_secs(2), async || {
        db.reads() == repo.cache.stats().loads
    })
    .await;
    assert!(
        each_once,
        "every load ran the body once: {} reads, {stats:?}",
        db.reads()
    );
}

/// No stale set: a load that read user 1 before another instance renamed
/// it, and returns after, leaves its older value nowhere.
async fn a_slow_load_overlapped_by_an_invalidation_stores_nothing(redis: TestRedis) {
    let db = Db::seeded();
    let (loader, writer) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    let gate = Gate::closed();
    *db.hold_reads.lock().unwrap() = Some(gate.clone());
    let slow = {
        let loader = loader.clone();
        tokio::spawn(async move { loader.get_user(1, 1).await })
    };
    assert!(
        eventually(Duration::from_secs(5), async || db.reads() == 1).await,
        "the slow load read the row"
    );
    writer.rename(1, "Ada").await.unwrap();
    let heard = eventually(Duration::from_secs(5), async || {
        loader.cache.stats().invalidations_received >= 1
    })
    .await;
    assert!(heard, "{:?}", loader.cache.stats());
    *db.hold_reads.lock().unwrap() = None;
    gate.open();
    let returned = within(Duration::from_secs(10), "the slow load", slow).await;
    assert_eq!(
        name(returned.unwrap()),
        "user 1",
        "its caller gets what it read"
    );

    loader.cache.settled().await;
    assert_eq!(Stored::of(redis.get("app:user:1")), Stored::Tombstone);
    assert_eq!(name(loader.get_user(1, 1).await), "Ada", "the loader's L1");
    let fresh = Repo::new(&redis, &db).await;
    assert_eq!(name(fresh.get_user(1, 1).await), "Ada", "a new instance");
}

/// With Redis gone, calls run their bodies, wait on Redis no longer than
/// the L2 timeout, and never fail because of it.
async fn without_redis_calls_run_their_bodies(redis: TestRedis) {
    let db = Db::seeded();
    let repo = Repo::new(&redis, &db).await;
    assert_eq!(name(repo.get_user(1, 1).await), "user 1");
    let timeout = Duration::from_millis(250);
    drop(redis);

    let mut slowest = Duration::ZERO;
    for id in 2..=3 {
        for _ in 0..5 {
            let call = Instant::now();
            assert_eq!(name(repo.get_user(0, id).await), format!("user {id}"));
            slowest = slowest.max(call.elapsed());
        }
    }
    assert!(slowest < timeout * 4, "slowest call: {slowest:?}");
    repo.rename(1, "Ada")
        .await
        .expect("the write itself succeeds");
    assert_eq!(name(repo.get_user(1, 1).await), "Ada", "L1 was invalidated");
}

on_every_topology!(
    hits_are_shared_between_instances,
    an_invalidation_reaches_every_instance,
    a_tag_drops_exactly_its_entries_on_every_instance,
    the_lock_loads_once_across_instances,
    a_stale_value_is_served_when_the_body_fails,
    early_refresh_keeps_a_hot_key_warm,
    a_slow_load_overlapped_by_an_invalidation_stores_nothing,
    without_redis_calls_run_their_bodies,
);
