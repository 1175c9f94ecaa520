//! A full Redis (`maxmemory` reached under `noeviction`) and a read-only
//! one (a replica, as the old master is after a failover), against real
//! redis-servers: invalidations fall back to what the server still
//! accepts, or are kept and replayed, and no instance serves the old value
//! from Redis after the call returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates, write_through};
use cache_test_support::{CapturedLogs, RedisServer, eventually, subscribed};

/// The "database": every item's value is `generation * 1000 + id`, and a
/// mutation moves the generation on.
#[derive(Default)]
struct Db {
    generation: AtomicU64,
    reads: AtomicU64,
}

impl Db {
    fn value(&self, id: u64) -> u64 {
        self.generation.load(Ordering::SeqCst) * 1000 + id
    }
}

/// One application instance: its own cache, the shared database.
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    /// `group` only names the tag (the caller knows it).
    #[cached(key = "item:<id>", ttl = 300, tags = ["group:<group>"], cache = self.cache, skip(group))]
    async fn item(&self, group: u32, id: u64) -> u64 {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        self.db.value(id)
    }

    #[invalidates(key = "item:<id>", cache = self.cache)]
    async fn update(&self, id: u64) {
        let _ = id;
        self.db.generation.fetch_add(1, Ordering::SeqCst);
    }

    #[invalidates(tag = "group:<group>", cache = self.cache)]
    async fn update_group(&self, group: u32) {
        let _ = group;
        self.db.generation.fetch_add(1, Ordering::SeqCst);
    }

    #[write_through(key = "item:<id>", ttl = 300, tags = ["group:<group>"], cache = self.cache)]
    async fn write(&self, group: u32, id: u64) -> u64 {
        let _ = group;
        self.db.generation.fetch_add(1, Ordering::SeqCst);
        self.db.value(id)
    }
}

async fn instance(url: String, db: &Arc<Db>) -> Repo {
    let cache = Cache::builder()
        .namespace("full")
        .redis_url(url)
        .build()
        .await
        .unwrap();
    subscribed(&cache).await;
    Repo {
        cache,
        db: db.clone(),
    }
}

fn used_memory(client: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(client).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|used| used.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// Fills Redis the way production does: 4 MiB of ballast, with
/// `maxmemory` 2 MiB above what was used before it under `noeviction`, so
/// that every write that needs memory gets `-OOM` while reads and `DEL`
/// still work (and deleting a small key does not make room).
fn fill(server: &RedisServer) {
    let mut client = server.client();
    let limit = used_memory(&mut client) + (2 << 20);
    let ballast = vec![b'x'; 1 << 20];
    for at in 0..4 {
        let _: () = redis::cmd("SET")
            .arg(format!("ballast:{at}"))
            .arg(&ballast)
            .query(&mut client)
            .unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut client)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .query(&mut client)
        .unwrap();
    let refused = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query::<()>(&mut client)
        .unwrap_err();
    assert_eq!(refused.code(), Some("OOM"), "{refused}");
}

/// Whether Redis holds `key` (in the test's namespace).
fn redis_holds(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("full:{key}"))
        .query(&mut server.client())
        .unwrap()
}

/// Two instances on one Redis; `writer` loaded item 7 of group 1 so that
/// Redis holds it.
async fn two_instances(server: &RedisServer) -> (Repo, Repo) {
    let db = Arc::new(Db::default());
    let (writer, reader) = (
        instance(server.url(), &db).await,
        instance(server.url(), &db).await,
    );
    assert_eq!(writer.item(1, 7).await, 7);
    let stored = eventually(Duration::from_secs(5), async || {
        redis_holds(server, "item:7")
    })
    .await;
    assert!(stored, "Redis holds the loaded value");
    (writer, reader)
}

/// What the reader serves from Redis (its own L1 dropped first).
async fn read_from_redis(reader: &Repo) -> u64 {
    reader.cache.clear_local();
    reader.item(1, 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidates_on_a_full_redis_deletes_the_key() {
    let server = RedisServer::start();
    let (writer, reader) = two_instances(&server).await;
    fill(&server);

    writer.update(7).await;
    assert_eq!(read_from_redis(&reader).await, 1007, "not the old value");
    assert!(
        !redis_holds(&server, "item:7"),
        "deleted, as no tombstone fits"
    );
    let stats = writer.cache.stats();
    assert!(stats.l2_out_of_memory >= 1, "{stats:?}");
    assert_eq!(stats.invalidations_pending, 0, "done, nothing to replay");
    assert_eq!(stats.breaker, cache_runtime::BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_a_full_redis_deletes_the_key_and_succeeds() {
    let server = RedisServer::start();
    let (writer, reader) = two_instances(&server).await;
    fill(&server);

    writer.db.generation.fetch_add(1, Ordering::SeqCst);
    let invalidated = writer.cache.invalidate("item:7").await;
    assert!(invalidated.is_ok(), "{invalidated:?}");
    assert_eq!(read_from_redis(&reader).await, 1007, "not the old value");
}

/// `invalidate_prefix` on a full Redis: its tombstones are refused, the
/// entries it walks to are deleted instead (each `OOM` reply in its
/// pipeline), and entries outside the prefix stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_on_a_full_redis_deletes_the_keys_and_succeeds() {
    let server = RedisServer::start();
    let (writer, reader) = two_instances(&server).await;
    for id in [70, 8] {
        writer.item(1, id).await;
    }
    writer.cache.settled().await;
    fill(&server);

    writer.db.generation.fetch_add(1, Ordering::SeqCst);
    let invalidated = writer.cache.invalidate_prefix("item:7").await;
    assert_eq!(invalidated.ok(), Some(2), "item:7 and item:70");
    assert!(!redis_holds(&server, "item:7"), "deleted");
    assert!(!redis_holds(&server, "item:70"), "deleted");
    assert!(redis_holds(&server, "item:8"), "outside the prefix");
    assert_eq!(read_from_redis(&reader).await, 1007, "not the old value");
    let stats = writer.cache.stats();
    assert!(stats.l2_out_of_memory >= 1, "{stats:?}");
    assert_eq!(stats.breaker, cache_runtime::BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_on_a_full_redis_loses_its_token_so_its_entries_are_misses() {
    let server = RedisServer::start();
    let (writer, reader) = two_instances(&server).await;
    fill(&server);

    writer.update_group(1).await;
    assert_eq!(read_from_redis(&reader).await, 1007, "#[invalidates(tag)]");
    // `Cache::invalidate_tag` too, over the entry the reader could not
    // store (Redis is full): the reader's own L1 copy is dropped.
    writer.db.generation.fetch_add(1, Ordering::SeqCst);
    let invalidated = writer.cache.invalidate_tag("group:1").await;
    assert!(invalidated.is_ok(), "{invalidated:?}");
    let dropped = eventually(Duration::from_secs(5), async || {
        reader.item(1, 7).await == 2007
    })
    .await;
    assert!(dropped, "the reader's copy is dropped by the message");
    assert_eq!(read_from_redis(&reader).await, 2007);
    assert_eq!(writer.cache.stats().invalidations_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_on_a_full_redis_deletes_the_old_value() {
    let server = RedisServer::start();
    let (writer, reader) = two_instances(&server).await;
    fill(&server);

    assert_eq!(writer.write(1, 7).await, 1007);
    assert_eq!(read_from_redis(&reader).await, 1007, "not the old value");
    assert!(!redis_holds(&server, "item:7"));
    assert_eq!(
        writer.item(1, 7).await,
        1007,
        "the writer does not keep in L1 what Redis does not hold, nor serve the old one"
    );
}

/// A cache connected to a replica (the old master after a failover): its
/// invalidation is refused with `READONLY`, which is classified, counted
/// and logged once; it is kept and replayed once the node takes writes
/// again (here: the replica is promoted), and meanwhile the instance does
/// not read Redis.
#[tokio::test(flavor = "current_thread")]
async fn read_only_replica_is_classified_and_the_invalidation_is_replayed() {
    let logs = CapturedLogs::start(tracing::Level::INFO);
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let db = Arc::new(Db::default());
    let on_primary = instance(primary.url(), &db).await;
    assert_eq!(on_primary.item(1, 7).await, 7);
    let replicated = eventually(Duration::from_secs(5), async || {
        redis_holds(&replica, "item:7")
    })
    .await;
    assert!(replicated);
    let on_replica = instance(replica.url(), &db).await;

    db.generation.fetch_add(1, Ordering::SeqCst);
    let refused = on_replica.cache.invalidate("item:7").await.unwrap_err();
    assert!(refused.is_read_only(), "{refused}");
    for _ in 0..3 {
        on_replica.update(7).await;
    }
    let stats = on_replica.cache.stats();
    assert!(stats.l2_read_only >= 4, "{stats:?}");
    assert_eq!(stats.invalidations_pending, 1, "one key, kept once");
    assert_eq!(
        logs.text()
            .matches("reconnecting to find the master")
            .count(),
        1,
        "{}",
        logs.text()
    );

    // Redis still holds the old value; this instance does not read it.
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(on_replica.item(1, 7).await, 4007);
    assert_eq!(db.reads.load(Ordering::SeqCst), reads + 1, "the body ran");
    assert_eq!(on_replica.cache.stats().l2_hits, 0);

    // The failover completes: the node this instance reaches takes writes.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica.client())
        .unwrap();
    let replayed = eventually(Duration::from_secs(10), async || {
        on_replica.cache.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed, "{:?}", on_replica.cache.stats());
    assert!(on_replica.cache.stats().invalidations_replayed >= 1);
    let reader = instance(replica.url(), &db).await;
    assert_eq!(reader.item(1, 7).await, 4007, "the tombstone is there");
    assert_eq!(reader.cache.stats().l2_hits, 0);
}
