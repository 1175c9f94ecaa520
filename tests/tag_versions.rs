//! Tag invalidation that cannot be switched off (issue 12, scenario 2):
//! whatever happens to the tag bookkeeping in Redis or on the channel
//! (`FLUSHDB`, an evicted version, another database's traffic, a forged
//! message, a stalled read, huge tags), `invalidate_tag` keeps working and
//! no value invalidated before a read started comes back. Against a real
//! redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{BreakerState, Cache, cached, escape_key_part, invalidates};
use cache_test_support::{RedisServer, eventually, subscribed};

const NAMESPACE: &str = "tags";

/// The "database": the version of a group's data, moved on by each write.
#[derive(Default)]
struct Db {
    version: AtomicU64,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(key = "members:<group>", ttl = 300, tags = ["grp:<group>"], cache = self.cache)]
    async fn members(&self, group: &str) -> u64 {
        let _ = group;
        self.db.version.load(Ordering::SeqCst)
    }

    #[invalidates(tag = "grp:<group>", cache = self.cache)]
    async fn change(&self, group: &str) {
        let _ = group;
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }

    /// A database change whose invalidation is left to the caller.
    fn change_silently(&self) {
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }
}

async fn repo_on(url: String, db: &Arc<Db>) -> Repo {
    let cache = Cache::builder()
        .namespace(NAMESPACE)
        .redis_url(url)
        .build()
        .await
        .unwrap();
    // Subscribed: messages published from now on reach it.
    subscribed(&cache).await;
    Repo {
        cache,
        db: db.clone(),
    }
}

fn redis(server: &RedisServer, command: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut server.client()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_tag_works_after_flushdb() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let a = repo_on(server.url(), &db).await;
    let b = repo_on(server.url(), &db).await;
    for _ in 0..3 {
        a.change("g").await;
    }
    assert_eq!(a.members("g").await, 3);
    assert_eq!(b.members("g").await, 3);
    // Their loads' writes (which follow the calls) land before the flush.
    a.cache.settled().await;
    b.cache.settled().await;

    // The operator's "clear the cache": every version is gone.
    redis(&server, &["FLUSHDB"]);
    a.change("g").await;
    assert_eq!(a.members("g").await, 4, "the invalidating instance");
    assert!(
        eventually(Duration::from_secs(5), async || b.members("g").await == 4).await,
        "another instance"
    );
    let c = repo_on(server.url(), &db).await;
    assert_eq!(c.members("g").await, 4, "a new instance");
}

/// The version in Redis is lost (evicted under `allkeys-lru`, expired):
/// the entry stored before the last invalidation must not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_version_never_revives_an_invalidated_entry() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let writer = repo_on(server.url(), &db).await;
    assert_eq!(writer.members("g").await, 0);
    // The entry is in Redis (written right after the call).
    writer.cache.settled().await;
    // Changed and invalidated: the entry in Redis (version 0 data) is now
    // stale, kept out only by the tag's version.
    writer.change("g").await;
    redis(&server, &["DEL", &format!("{NAMESPACE}:grp:g #tag")]);

    let fresh = repo_on(server.url(), &db).await;
    assert_eq!(fresh.members("g").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_bookkeeping_expires() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let repo = repo_on(server.url(), &db).await;
    repo.members("g").await;
    let version_key = format!("{NAMESPACE}:grp:g #tag");
    let ttl = |server: &RedisServer| match redis(server, &["PTTL", &version_key]) {
        redis::Value::Int(ms) => ms,
        other => panic!("{other:?}"),
    };
    assert!(ttl(&server) > 0, "read: the version expires");
    repo.change("g").await;
    assert!(ttl(&server) > 0, "replaced: the version expires");
}

/// Staging on database 1 and production on database 0 share a server and a
/// namespace. Pub/sub ignores databases: staging's invalidations must not
/// reach production, nor disable production's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_database_on_the_same_server_does_not_interfere() {
    let server = RedisServer::start();
    let production_db = Arc::new(Db::default());
    let staging_db = Arc::new(Db::default());
    let production = repo_on(format!("{}/0", server.url()), &production_db).await;
    let other_production = repo_on(format!("{}/0", server.url()), &production_db).await;
    let staging = repo_on(format!("{}/1", server.url()), &staging_db).await;

    assert_eq!(production.members("g").await, 0);
    assert_eq!(other_production.members("g").await, 0);
    for _ in 0..5 {
        staging.change("g").await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        production.cache.stats().invalidations_received,
        0,
        "staging's messages reached production"
    );

    production.change("g").await;
    assert_eq!(production.members("g").await, 1);
    assert!(
        eventually(Duration::from_secs(5), async || {
            other_production.members("g").await == 1
        })
        .await,
        "production's own invalidation was ignored"
    );
}

/// Anything that can PUBLISH can send a message with a huge version (on
/// the channel as it is named now, or as it was): invalidation must keep
/// working on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_message_does_not_switch_tag_invalidation_off() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let a = repo_on(server.url(), &db).await;
    let b = repo_on(server.url(), &db).await;
    assert_eq!(a.members("g").await, 0);
    let forged = "0000000000000001\nT grp:g 18446744073709551615";
    for channel in [
        format!("{NAMESPACE} #inval"),
        format!("{NAMESPACE} #inval db0"),
    ] {
        redis(&server, &["PUBLISH", &channel, forged]);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.members("g").await, 0);

    b.change("g").await;
    assert!(
        eventually(Duration::from_secs(5), async || a.members("g").await == 1).await,
        "the instance that got the forged message kept the old value"
    );
    assert_eq!(b.members("g").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_do_not_parse_are_ignored_and_counted() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let a = repo_on(server.url(), &db).await;
    let channel = format!("{NAMESPACE} #inval db0");
    for garbage in ["", "hello", "0000000000000001\nT grp:g 7", "zz\nK a"] {
        redis(&server, &["PUBLISH", &channel, garbage]);
    }
    assert!(
        eventually(Duration::from_secs(5), async || {
            a.cache.stats().channel_messages_ignored == 4
        })
        .await,
        "{:?}",
        a.cache.stats()
    );
    assert_eq!(a.cache.stats().invalidations_received, 0);
}

/// A fresh instance whose first read of a tag's version times out must not
/// take a guess: the entry invalidated before it started stays a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_read_that_timed_out_is_not_guessed() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let writer = repo_on(server.url(), &db).await;
    assert_eq!(writer.members("g").await, 0);
    writer.cache.settled().await; // the entry is in Redis
    writer.change("g").await;

    let fresh_cache = Cache::builder()
        .namespace(NAMESPACE)
        .redis_url(server.url())
        .l2_timeout(Duration::from_millis(100))
        .breaker_cooldown(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let fresh = Repo {
        cache: fresh_cache,
        db: db.clone(),
    };
    server.freeze();
    // Answered by the body while Redis stalls.
    assert_eq!(fresh.members("g").await, 1);
    server.thaw();
    assert!(
        eventually(Duration::from_secs(10), async || {
            fresh.cache.stats().breaker == BreakerState::Closed
        })
        .await
    );
    // The database moves on without an invalidation reaching this
    // instance's L1; Redis still holds the entry from version 0.
    fresh.cache.clear_local();
    fresh.change_silently();
    let seen = fresh.members("g").await;
    assert_ne!(seen, 0, "served the entry invalidated before it started");
}

/// Tags far over 1 KiB are shortened like keys, in `#[cached]`, in
/// `#[invalidates]` and in `invalidate_tag` alike: they still invalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_tags_still_invalidate() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let a = repo_on(server.url(), &db).await;
    let b = repo_on(server.url(), &db).await;
    let group = "g.".repeat(2_000);
    assert_eq!(a.members(&group).await, 0);
    assert_eq!(b.members(&group).await, 0);
    a.change(&group).await;
    assert_eq!(a.members(&group).await, 1);
    assert!(
        eventually(Duration::from_secs(5), async || b.members(&group).await
            == 1)
        .await
    );

    a.change_silently();
    a.cache
        .invalidate_tag(&format!("grp:{}", escape_key_part(&group)))
        .await
        .unwrap();
    assert_eq!(a.members(&group).await, 2);
    assert!(
        eventually(Duration::from_secs(5), async || b.members(&group).await
            == 2)
        .await
    );

    // The tag survives the trip through Redis whole: a new instance is
    // served the entry.
    a.cache.settled().await;
    b.cache.settled().await;
    let c = repo_on(server.url(), &db).await;
    assert_eq!(c.members(&group).await, 2);
    let stats = c.cache.stats();
    assert_eq!((stats.l2_hits, stats.loads), (1, 0), "{stats:?}");
}
