//! Auto-recovery: invalidations made while Redis was unreachable (or
//! refused them) are kept and replayed once it answers again, and the
//! instance that holds them does not read Redis meanwhile. Two instances
//! on one redis-server; the writer reaches it through the fault-injection
//! proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{CapturedLogs, Proxy, RedisServer, eventually, subscribed};

/// The "database": every item's value is `generation * 1000 + id`, and a
/// mutation moves the generation on.
#[derive(Default)]
struct Db {
    generation: AtomicU64,
    reads: AtomicU64,
}

/// One application instance: its own cache, the shared database.
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(key = "item:<id>", ttl = 300, tags = ["group:<group>"], cache = self.cache, skip(group))]
    async fn item(&self, group: u32, id: u64) -> u64 {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        self.db.generation.load(Ordering::SeqCst) * 1000 + id
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
}

async fn instance(url: String, db: &Arc<Db>) -> Repo {
    let cache = Cache::builder()
        .namespace("recover")
        .redis_url(url)
        .l2_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    subscribed(&cache).await;
    Repo {
        cache,
        db: db.clone(),
    }
}

/// The writer reaches Redis through `proxy`, the reader directly; the
/// reader loaded items 7 and 8 (group 1), so its L1 and Redis hold them.
async fn writer_and_reader(server: &RedisServer, proxy: &Proxy) -> (Repo, Repo) {
    let db = Arc::new(Db::default());
    let writer = instance(proxy.url(), &db).await;
    let reader = instance(server.url(), &db).await;
    assert_eq!(reader.item(1, 7).await, 7);
    assert_eq!(reader.item(1, 8).await, 8);
    assert_eq!(reader.item(1, 7).await, 7);
    assert_eq!(reader.cache.stats().l1_hits, 1, "the reader holds it in L1");
    (writer, reader)
}

/// What the reader serves from Redis (its own L1 dropped first).
async fn read_from_redis(reader: &Repo, id: u64) -> u64 {
    reader.cache.clear_local();
    reader.item(1, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_made_while_redis_was_unreachable_are_replayed() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let (writer, reader) = writer_and_reader(&server, &proxy).await;

    // The writer loses Redis (new connections hang, open ones are closed).
    proxy.black_hole(true);
    proxy.drop_connections();
    let started = Instant::now();
    writer.update(7).await;
    writer.update_group(1).await;
    writer.update(7).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "each call waits at most l2_timeout per Redis call: {:?}",
        started.elapsed()
    );
    let stats = writer.cache.stats();
    assert_eq!(
        stats.invalidations_pending, 2,
        "a key and a tag, each once: {stats:?}"
    );

    // The documented window: the reader keeps its L1 copy, and Redis the
    // old value, while the writer cannot reach Redis.
    assert_eq!(reader.item(1, 7).await, 7);
    assert_eq!(read_from_redis(&reader, 8).await, 8);

    proxy.black_hole(false);
    let back = Instant::now();
    let seen = eventually(Duration::from_secs(10), async || {
        reader.item(1, 7).await == 3007 && reader.item(1, 8).await == 3008
    })
    .await;
    let window = back.elapsed();
    assert!(seen, "the reader drops its copies once the writer replays");
    eprintln!(
        "auto-recovery: the reader saw the replayed invalidations {window:?} after Redis came back"
    );
    assert_eq!(
        read_from_redis(&reader, 7).await,
        3007,
        "not in Redis either"
    );
    assert_eq!(
        read_from_redis(&reader, 8).await,
        3008,
        "the tag's token moved on"
    );
    let stats = writer.cache.stats();
    assert_eq!(stats.invalidations_pending, 0, "{stats:?}");
    assert!(stats.invalidations_replayed >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_pending_invalidations_does_not_read_redis_until_replayed() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let (writer, reader) = writer_and_reader(&server, &proxy).await;

    // Redis answers the writer's reads but refuses its writes.
    proxy.fail_commands(
        &["SET", "DEL", "EVALSHA", "EVAL", "PUBLISH"],
        "NOPERM this user has no permissions to run this command",
    );
    writer.update(7).await;
    assert_eq!(writer.cache.stats().invalidations_pending, 1);
    let reads = writer.db.reads.load(Ordering::SeqCst);
    assert_eq!(
        writer.item(1, 7).await,
        1007,
        "Redis still holds the old value: not read"
    );
    assert_eq!(writer.db.reads.load(Ordering::SeqCst), reads + 1);
    assert_eq!(writer.cache.stats().l2_hits, 0);

    proxy.clear_failures();
    let replayed = eventually(Duration::from_secs(10), async || {
        writer.cache.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed, "{:?}", writer.cache.stats());
    let dropped = eventually(Duration::from_secs(5), async || {
        reader.item(1, 7).await == 1007
    })
    .await;
    assert!(dropped, "the replayed message reached the reader");
    assert_eq!(read_from_redis(&reader, 7).await, 1007);
    // The writer reads Redis again.
    writer.cache.clear_local();
    assert_eq!(writer.item(1, 7).await, 1007);
    assert_eq!(writer.cache.stats().l2_hits, 1);
}

/// 200 invalidations with Redis unreachable: a couple of lines, not 200,
/// and the count of the lines held back once Redis is back.
#[tokio::test(flavor = "current_thread")]
async fn failed_invalidations_are_logged_a_few_times_with_a_count() {
    let logs = CapturedLogs::start(tracing::Level::INFO);
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let db = Arc::new(Db::default());
    let writer = instance(proxy.url(), &db).await;
    proxy.black_hole(true);
    proxy.drop_connections();
    for id in 0..200 {
        writer.update(id).await;
    }
    let text = logs.text();
    let failures = text
        .lines()
        .filter(|line| line.contains("invalidation did not reach Redis"))
        .count();
    assert_eq!(failures, 1, "{text}");
    let loud = text
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .count();
    // One line per kind at most: the subscription lost, a call failed, a
    // call timed out, the breaker opened, and the invalidations.
    assert!(loud <= 5, "{loud} lines: {text}");
    assert_eq!(writer.cache.stats().invalidations_pending, 200);

    proxy.black_hole(false);
    let replayed = eventually(Duration::from_secs(15), async || {
        writer.cache.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed, "{:?}", writer.cache.stats());
    let text = logs.text();
    assert!(
        text.contains("suppressed_invalidation_logs=199"),
        "the count of lines held back: {text}"
    );
}

/// A backlog bounded at 3 keeps the newest 3 and counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_keeps_the_newest_and_counts_the_dropped() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let db = Arc::new(Db::default());
    let cache = Cache::builder()
        .namespace("recover")
        .redis_url(proxy.url())
        .l2_timeout(Duration::from_millis(100))
        .invalidation_backlog(3)
        .build()
        .await
        .unwrap();
    let writer = Repo { cache, db };
    proxy.fail_commands(&["SET", "PUBLISH"], "NOPERM no permissions");
    for id in 0..5 {
        writer.update(id).await;
    }
    let stats = writer.cache.stats();
    assert_eq!(stats.invalidations_pending, 3, "{stats:?}");
    assert_eq!(stats.invalidations_dropped, 2, "{stats:?}");

    proxy.clear_failures();
    let replayed = eventually(Duration::from_secs(10), async || {
        writer.cache.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed);
    let tombstoned: Vec<bool> = (0..5)
        .map(|id| {
            redis::cmd("EXISTS")
                .arg(format!("recover:item:{id}"))
                .query(&mut server.client())
                .unwrap()
        })
        .collect();
    assert_eq!(
        tombstoned,
        [false, false, true, true, true],
        "the newest three"
    );
}
