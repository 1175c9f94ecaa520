//! `Cache::invalidate_prefix` against real Redis, each scenario on one
//! `redis-server` and on a Redis Cluster (3 masters): it drops exactly the
//! entries under the prefix (a text prefix of rendered keys, glob
//! characters taken literally, the runtime's own keys left alone) on every
//! instance and on every master, keeps a load in flight from putting its
//! older value back, and with Redis gone still drops L1 and reports the
//! failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, cached, escape_key_part};
use cache_test_support::{
    Gate, Stored, TestRedis, Topology, eventually, key_slot, on_every_topology, subscribed, within,
};

/// The database every instance shares: how often each key's body ran, the
/// version its rows are at, and a gate that holds reads.
#[derive(Default)]
struct Db {
    reads: Mutex<HashMap<String, u64>>,
    version: AtomicU64,
    hold_reads: Mutex<Option<Gate>>,
}

impl Db {
    fn new() -> Arc<Db> {
        let db = Db::default();
        db.version.store(1, Ordering::SeqCst);
        Arc::new(db)
    }

    /// What a row reads as now: its key and the version.
    async fn read(&self, key: String) -> String {
        *self.reads.lock().unwrap().entry(key.clone()).or_default() += 1;
        let row = format!("{key} v{}", self.version.load(Ordering::SeqCst));
        let hold = self.hold_reads.lock().unwrap().clone();
        if let Some(gate) = hold {
            gate.passed().await;
        }
        row
    }

    fn reads(&self, key: &str) -> u64 {
        self.reads.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total_reads(&self) -> u64 {
        self.reads.lock().unwrap().values().sum()
    }

    /// The rows change: what was read before is older.
    fn change(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
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

    #[cached(key = "user:<id>:profile", ttl = 300, cache = self.cache)]
    async fn profile(&self, id: u64) -> String {
        self.db.read(format!("user:{id}:profile")).await
    }

    #[cached(key = "user:<id>:posts", ttl = 300, cache = self.cache)]
    async fn posts(&self, id: u64) -> String {
        self.db.read(format!("user:{id}:posts")).await
    }

    /// Tagged, so the tag's version key (`app:user:<id>:tag #tag`) starts
    /// with the prefix too: a runtime key the walk must leave alone.
    #[cached(key = "user:<id>:settings", ttl = 300, tags = ["user:<id>:tag"], cache = self.cache)]
    async fn settings(&self, id: u64) -> String {
        self.db.read(format!("user:{id}:settings")).await
    }

    #[cached(key = "user:<id>:item:<item>", ttl = 300, cache = self.cache)]
    async fn item(&self, id: u64, item: u32) -> String {
        self.db.read(format!("user:{id}:item:{item}")).await
    }

    #[cached(key = "file:<name>", ttl = 300, cache = self.cache)]
    async fn file(&self, name: &str) -> String {
        self.db.read(format!("file:{name}")).await
    }

    /// The three entries of `id`.
    async fn user(&self, id: u64) -> [String; 3] {
        [
            self.profile(id).await,
            self.posts(id).await,
            self.settings(id).await,
        ]
    }
}

fn version(rows: &[String]) -> Vec<&str> {
    rows.iter()
        .map(|row| row.rsplit_once(' ').map_or("", |(_, version)| version))
        .collect()
}

/// `user:42:` drops the three entries of user 42 in Redis and in both
/// instances' L1, and nothing of users 420 and 43 (`user:420:` does not
/// start with `user:42:`), nor the tag's version key under the prefix.
async fn a_prefix_drops_exactly_its_entries_on_every_instance(redis: TestRedis) {
    let db = Db::new();
    let (a, b) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    for id in [42, 420, 43] {
        a.user(id).await;
    }
    a.cache.settled().await;
    for id in [42, 420, 43] {
        b.user(id).await;
    }
    assert_eq!(db.total_reads(), 9, "B read A's entries from Redis");
    assert_eq!(b.cache.stats().l2_hits, 9);
    let tag_key = "app:user:42:tag #tag";
    let tag_token = redis.get(tag_key).expect("the tag's version key");

    db.change();
    let invalidated = a.cache.invalidate_prefix("user:42:").await.unwrap();
    assert_eq!(invalidated, 3, "profile, posts and settings of user 42");
    for key in ["profile", "posts", "settings"] {
        let stored = Stored::of(redis.get(&format!("app:user:42:{key}")));
        assert_eq!(stored, Stored::Tombstone, "{key}");
        let kept = Stored::of(redis.get(&format!("app:user:420:{key}")));
        assert!(matches!(kept, Stored::Entry(_)), "user 420's {key}");
    }
    assert_eq!(
        redis.get(tag_key).as_deref(),
        Some(&tag_token[..]),
        "a runtime key under the prefix is left alone"
    );
    let heard = eventually(Duration::from_secs(5), async || {
        b.cache.stats().invalidations_received >= 1
    })
    .await;
    assert!(heard, "{:?}", b.cache.stats());

    // B first, then A: each loads user 42 again (B's body, then A from
    // Redis or its own body), and both serve the other users from L1.
    for repo in [&b, &a] {
        let hits = repo.cache.stats().l1_hits;
        assert_eq!(version(&repo.user(42).await), ["v2"; 3]);
        for id in [420, 43] {
            assert_eq!(version(&repo.user(id).await), ["v1"; 3], "user {id}");
        }
        assert_eq!(repo.cache.stats().l1_hits, hits + 6, "users 420 and 43");
    }
    for key in ["profile", "posts", "settings"] {
        assert!(
            db.reads(&format!("user:42:{key}")) >= 2,
            "{key} loaded again"
        );
        assert_eq!(db.reads(&format!("user:420:{key}")), 1);
        assert_eq!(db.reads(&format!("user:43:{key}")), 1);
    }
    assert_eq!(
        a.cache.invalidate_prefix("user:99:").await.unwrap(),
        0,
        "nothing under it"
    );
}

/// Glob characters in the argument are matched literally: rendered values
/// are escaped, so `file:a*` names no key at all, and the escaped form
/// names exactly the file whose name starts with `a*`.
async fn glob_characters_in_a_prefix_match_only_themselves(redis: TestRedis) {
    let db = Db::new();
    let repo = Repo::new(&redis, &db).await;
    let names = ["a*b", "a?", "ab", "a[b]", r"a\b", "abc"];
    for name in names {
        repo.file(name).await;
    }
    repo.cache.settled().await;

    for pattern in ["file:a*", "file:a?", "file:a[b]", "file:*", r"file:a\"] {
        assert_eq!(
            repo.cache.invalidate_prefix(pattern).await.unwrap(),
            0,
            "{pattern}"
        );
    }
    let reads = db.total_reads();
    for name in names {
        repo.file(name).await;
    }
    assert_eq!(db.total_reads(), reads, "every file is still in L1");

    let star = format!("file:{}", escape_key_part("a*"));
    assert_eq!(star, "file:a%2A");
    assert_eq!(repo.cache.invalidate_prefix(&star).await.unwrap(), 1);
    assert_eq!(Stored::of(redis.get("app:file:a%2Ab")), Stored::Tombstone);
    assert!(matches!(
        Stored::of(redis.get("app:file:ab")),
        Stored::Entry(_)
    ));
    repo.file("a*b").await;
    repo.file("ab").await;
    assert_eq!(db.total_reads(), reads + 1, "only a*b loaded again");

    // A text prefix: `file:a` covers every name starting with `a`.
    assert_eq!(
        repo.cache.invalidate_prefix("file:a").await.unwrap(),
        names.len() as u64
    );
}

/// On a cluster the entries of one prefix spread over every master (no
/// hash tag keeps them together); the walk of every master finds them
/// all, over several `SCAN` steps.
async fn entries_on_every_master_are_all_invalidated(redis: TestRedis) {
    let db = Db::new();
    let repo = Repo::new(&redis, &db).await;
    const ITEMS: u32 = 1500;
    for item in 0..ITEMS {
        repo.item(7, item).await;
    }
    for item in 0..50 {
        repo.item(8, item).await;
    }
    repo.cache.settled().await;
    let per_master: Vec<usize> = redis
        .keys_per_master()
        .iter()
        .map(|keys| {
            keys.iter()
                .filter(|key| key.starts_with("app:user:7:"))
                .count()
        })
        .collect();
    assert_eq!(per_master.iter().sum::<usize>(), ITEMS as usize);
    if redis.topology() == Topology::Cluster {
        assert_eq!(per_master.len(), 3);
        assert!(per_master.iter().all(|&keys| keys > 0), "{per_master:?}");
    }

    let started = std::time::Instant::now();
    let invalidated = repo.cache.invalidate_prefix("user:7:").await.unwrap();
    println!(
        "{:?}: {ITEMS} entries of {} invalidated in {:?}",
        redis.topology(),
        ITEMS + 50,
        started.elapsed()
    );
    assert_eq!(invalidated, u64::from(ITEMS));
    let left: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|key| key.starts_with("app:user:7:"))
        .filter(|key| Stored::of(redis.get(key)) != Stored::Tombstone)
        .collect();
    assert!(left.is_empty(), "not tombstoned: {left:?}");
    for item in 0..50 {
        let key = format!("app:user:8:item:{item}");
        assert!(matches!(Stored::of(redis.get(&key)), Stored::Entry(_)));
    }
    assert_eq!(
        repo.cache.invalidate_prefix("user:7:").await.unwrap(),
        0,
        "tombstones are not entries"
    );
}

/// No stale set: loads of user 42's keys that read their rows before the
/// prefix was invalidated, on the instance that invalidates and on
/// another, return after it and leave their older values nowhere (the
/// keys were absent from Redis, where the walk could not find them).
async fn loads_in_flight_do_not_put_older_values_back(redis: TestRedis) {
    let db = Db::new();
    let (a, b) = (Repo::new(&redis, &db).await, Repo::new(&redis, &db).await);
    let gate = Gate::closed();
    *db.hold_reads.lock().unwrap() = Some(gate.clone());
    let on_a = {
        let a = a.clone();
        tokio::spawn(async move { a.profile(42).await })
    };
    let on_b = {
        let b = b.clone();
        tokio::spawn(async move { b.posts(42).await })
    };
    assert!(
        eventually(Duration::from_secs(5), async || db.total_reads() == 2).await,
        "both slow loads read their rows"
    );
    db.change();
    assert_eq!(a.cache.invalidate_prefix("user:42:").await.unwrap(), 0);
    assert_eq!(
        Stored::of(redis.get("app:user:42:profile")),
        Stored::Tombstone,
        "A's own load in flight"
    );
    let marked = eventually(Duration::from_secs(5), async || {
        Stored::of(redis.get("app:user:42:posts")) == Stored::Tombstone
    })
    .await;
    assert!(marked, "B tombstones its load in flight on the message");
    *db.hold_reads.lock().unwrap() = None;
    gate.open();
    let returned = [
        within(Duration::from_secs(10), "A's slow load", on_a)
            .await
            .unwrap(),
        within(Duration::from_secs(10), "B's slow load", on_b)
            .await
            .unwrap(),
    ];
    assert_eq!(version(&returned), ["v1"; 2], "callers get what they read");

    a.cache.settled().await;
    b.cache.settled().await;
    assert_eq!(
        Stored::of(redis.get("app:user:42:profile")),
        Stored::Tombstone
    );
    assert_eq!(
        Stored::of(redis.get("app:user:42:posts")),
        Stored::Tombstone
    );
    assert_eq!(version(&[a.profile(42).await]), ["v2"], "A's L1");
    assert_eq!(version(&[b.posts(42).await]), ["v2"], "B's L1");
    let fresh = Repo::new(&redis, &db).await;
    assert_eq!(
        version(&[fresh.profile(42).await, fresh.posts(42).await]),
        ["v2"; 2],
        "a new instance"
    );
}

/// With Redis gone, the L1 part still happens and the call reports the
/// failure.
async fn without_redis_l1_is_dropped_and_the_error_returned(redis: TestRedis) {
    let db = Db::new();
    let repo = Repo::new(&redis, &db).await;
    repo.profile(42).await;
    repo.profile(43).await;
    drop(redis);

    db.change();
    let failed = within(
        Duration::from_secs(10),
        "invalidate_prefix without Redis",
        repo.cache.invalidate_prefix("user:42:"),
    )
    .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(version(&[repo.profile(42).await]), ["v2"], "L1 dropped");
    assert_eq!(version(&[repo.profile(43).await]), ["v1"], "L1 kept");
}

/// Slots that moved since the instance last read the cluster's slot map
/// (a finished resharding): the walk reads the map when it starts, so it
/// walks the masters that hold the keys now, and finds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_entries_whose_slots_moved_are_all_invalidated() {
    let redis = TestRedis::start(Topology::Cluster);
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!("a cluster was started")
    };
    let db = Db::new();
    let repo = Repo::new(&redis, &db).await;
    const ITEMS: u32 = 1500;
    const MOVED: u16 = 400;
    for item in 0..ITEMS {
        repo.item(7, item).await;
    }
    repo.cache.settled().await;
    let in_moved_slots = (0..ITEMS)
        .filter(|item| key_slot(&format!("app:user:7:item:{item}")) < MOVED)
        .count();
    assert!(
        in_moved_slots > 0,
        "some entries sit in the slots that move"
    );
    let from = cluster.master_of_slot(0).unwrap();
    let (left, reached) = tokio::task::block_in_place(|| cluster.reshard(0, MOVED));
    assert_eq!(left, from);
    assert_eq!(cluster.master_of_slot(0), Some(reached), "the slots moved");

    let invalidated = repo.cache.invalidate_prefix("user:7:").await.unwrap();
    assert_eq!(invalidated, u64::from(ITEMS));
    let left: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|key| key.starts_with("app:user:7:"))
        .filter(|key| Stored::of(redis.get(key)) != Stored::Tombstone)
        .collect();
    assert!(left.is_empty(), "not tombstoned: {left:?}");
}

on_every_topology!(
    a_prefix_drops_exactly_its_entries_on_every_instance,
    glob_characters_in_a_prefix_match_only_themselves,
    entries_on_every_master_are_all_invalidated,
    loads_in_flight_do_not_put_older_values_back,
    without_redis_l1_is_dropped_and_the_error_returned,
);
