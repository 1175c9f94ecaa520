//! Invalidation across instances: `#[invalidates]`, `#[write_through]`,
//! tags, the pub/sub channel, and no stale set, against a real redis-server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates, write_through};
use cache_test_support::{
    ChildProcess, Gate, RedisServer, Stored, dead_url, eventually, subscribed, within,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    org: u32,
    name: String,
}

#[derive(Debug, PartialEq)]
struct DbError;

/// The "database" both instances share, with a read counter.
#[derive(Default)]
struct Db {
    users: Mutex<HashMap<u64, User>>,
    reads: AtomicU64,
    /// While set, reads wait at this gate before returning what they read.
    hold_reads: Mutex<Option<Gate>>,
}

/// One application instance: its own cache, the shared database.
#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    /// `org` only names the tag (the caller knows the user's organisation).
    #[cached(key = "user:<id>", ttl = 300, tags = ["org:<org>"], cache = self.cache, skip(org))]
    async fn get_user(&self, org: u32, id: u64) -> Option<User> {
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        let user = self.db.users.lock().unwrap().get(&id).cloned();
        let hold = self.db.hold_reads.lock().unwrap().clone();
        if let Some(gate) = hold {
            gate.passed().await;
        }
        user.inspect(|user| assert_eq!(user.org, org))
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str, fail: bool) -> Result<(), DbError> {
        if fail {
            return Err(DbError);
        }
        if let Some(user) = self.db.users.lock().unwrap().get_mut(&id) {
            user.name = name.to_owned();
        }
        Ok(())
    }

    #[write_through(key = "user:<id>", ttl = 300, tags = ["org:<org>"], cache = self.cache)]
    async fn rename_returning(&self, org: u32, id: u64, name: &str) -> Result<User, DbError> {
        let mut users = self.db.users.lock().unwrap();
        let user = users.get_mut(&id).ok_or(DbError)?;
        user.name = name.to_owned();
        Ok(user.clone())
    }

    #[invalidates(tag = "org:<org>", cache = self.cache)]
    async fn reorganise(&self, org: u32) {
        let _ = org;
    }
}

fn seeded_db() -> Arc<Db> {
    let db = Db::default();
    for (id, org) in [(1, 1), (2, 1), (3, 2)] {
        db.users.lock().unwrap().insert(
            id,
            User {
                id,
                org,
                name: format!("user {id}"),
            },
        );
    }
    Arc::new(db)
}

async fn instance(server: &RedisServer, db: &Arc<Db>) -> Repo {
    let cache = Cache::builder()
        .namespace("app")
        .redis_url(server.url())
        .build()
        .await
        .unwrap();
    subscribed(&cache).await;
    Repo {
        cache,
        db: db.clone(),
    }
}

fn name(user: Option<User>) -> String {
    user.map(|user| user.name).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_reads_its_write_and_the_other_instance_within_a_second() {
    let server = RedisServer::start();
    let db = seeded_db();
    let (writer, other) = (instance(&server, &db).await, instance(&server, &db).await);
    assert_eq!(name(writer.get_user(1, 1).await), "user 1");
    assert_eq!(name(other.get_user(1, 1).await), "user 1");
    assert_eq!(name(other.get_user(1, 1).await), "user 1");
    assert_eq!(
        other.cache.stats().l1_hits,
        1,
        "the other instance holds it in L1"
    );

    writer.rename(1, "Ada", false).await.unwrap();
    assert_eq!(
        name(writer.get_user(1, 1).await),
        "Ada",
        "read your own write"
    );
    let seen = eventually(Duration::from_secs(1), async || {
        name(other.get_user(1, 1).await) == "Ada"
    })
    .await;
    assert!(seen, "the other instance sees the write within 1 s");
    assert!(other.cache.stats().invalidations_received >= 1);
    assert_eq!(writer.cache.stats().invalidations_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_invalidates_nothing() {
    let server = RedisServer::start();
    let db = seeded_db();
    let repo = instance(&server, &db).await;
    repo.get_user(1, 1).await;
    assert_eq!(repo.rename(1, "Bob", true).await, Err(DbError));
    repo.get_user(1, 1).await;
    assert_eq!(db.reads.load(Ordering::SeqCst), 1, "still cached");
    assert_eq!(repo.cache.stats().invalidations_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_serves_the_new_value_without_loading() {
    let server = RedisServer::start();
    let db = seeded_db();
    let (writer, other) = (instance(&server, &db).await, instance(&server, &db).await);
    other.get_user(1, 2).await; // cached in the other instance's L1
    let reads = db.reads.load(Ordering::SeqCst);

    let user = writer.rename_returning(1, 2, "Grace").await.unwrap();
    assert_eq!(user.name, "Grace");
    assert_eq!(name(writer.get_user(1, 2).await), "Grace");
    let seen = eventually(Duration::from_secs(1), async || {
        name(other.get_user(1, 2).await) == "Grace"
    })
    .await;
    assert!(seen);
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads,
        "served from the written value, the loader never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_drops_exactly_its_entries_on_every_instance() {
    let server = RedisServer::start();
    let db = seeded_db();
    let (first, second) = (instance(&server, &db).await, instance(&server, &db).await);
    for repo in [&first, &second] {
        repo.get_user(1, 1).await;
        repo.get_user(1, 2).await;
        repo.get_user(2, 3).await;
    }
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(reads, 3, "the second instance read everything from Redis");

    first.reorganise(1).await;
    let reloaded = eventually(Duration::from_secs(1), async || {
        second.get_user(1, 1).await;
        db.reads.load(Ordering::SeqCst) > reads
    })
    .await;
    assert!(reloaded, "org 1 entries dropped on the other instance");
    second.get_user(1, 2).await;
    first.get_user(1, 1).await;
    first.get_user(1, 2).await;
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads + 2,
        "users 1 and 2 loaded once more, in all"
    );
    first.get_user(2, 3).await;
    second.get_user(2, 3).await;
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads + 2,
        "org 2 untouched"
    );

    // The explicit API does the same (the other instance hears of it within
    // one pub/sub delivery).
    second.cache.invalidate_tag("org:2").await.unwrap();
    let reloaded = eventually(Duration::from_secs(1), async || {
        first.get_user(2, 3).await;
        db.reads.load(Ordering::SeqCst) == reads + 3
    })
    .await;
    assert!(reloaded, "reads: {}", db.reads.load(Ordering::SeqCst));
}

/// What changes user 1 while a slow load of it runs.
#[derive(Clone, Copy, Debug)]
enum Overlap {
    /// `#[invalidates(key = ...)]`: the row renamed, the key invalidated.
    Key,
    /// The row renamed, then `#[invalidates(tag = ...)]` on its organisation.
    Tag,
    /// `#[write_through]`: the row renamed and the new value stored.
    WriteThrough,
}

/// Where the change comes from: the loading instance itself, or another
/// one (its invalidation reaches the loader over pub/sub).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    SameInstance,
    OtherInstance,
}

/// No stale set: a load that read user 1 before `overlap` renamed it to
/// "Ada", and returns after, leaves its older value in neither tier of any
/// instance. Its own caller still gets what it read.
async fn a_slow_load_overlapped_by(overlap: Overlap, from: Origin) {
    let server = RedisServer::start();
    let db = seeded_db();
    let loader = instance(&server, &db).await;
    let writer = match from {
        Origin::SameInstance => loader.clone(),
        Origin::OtherInstance => instance(&server, &db).await,
    };
    let gate = Gate::closed();
    *db.hold_reads.lock().unwrap() = Some(gate.clone());

    // The slow reader reads "user 1", then waits at the gate.
    let slow = {
        let loader = loader.clone();
        tokio::spawn(async move { loader.get_user(1, 1).await })
    };
    let read = eventually(Duration::from_secs(5), async || {
        db.reads.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(read, "the slow load read the row");
    // Meanwhile the row changes and the cache hears of it.
    let rename = || db.users.lock().unwrap().get_mut(&1).unwrap().name = "Ada".into();
    match overlap {
        Overlap::Key => writer.rename(1, "Ada", false).await.unwrap(),
        Overlap::Tag => {
            rename();
            writer.reorganise(1).await;
        }
        Overlap::WriteThrough => {
            let written = writer.rename_returning(1, 1, "Ada").await.unwrap();
            assert_eq!(written.name, "Ada");
        }
    }
    if from == Origin::OtherInstance {
        // The change reached the loader before its load ends.
        let heard = eventually(Duration::from_secs(5), async || {
            loader.cache.stats().invalidations_received == 1
        })
        .await;
        assert!(heard, "{:?}", loader.cache.stats());
    }
    *db.hold_reads.lock().unwrap() = None;
    gate.open();
    let returned = within(Duration::from_secs(10), "the slow load", slow)
        .await
        .unwrap();
    assert_eq!(
        name(returned),
        "user 1",
        "the slow caller gets what it read"
    );

    // Redis holds what the change left, not the slow load's value. (A tag
    // invalidation leaves the key alone: whatever it holds carries the
    // tag's old version, which the new instance below must not serve.)
    // The slow load's write runs after its call returned: wait for it.
    loader.cache.settled().await;
    let stored = server.stored("app:user:1");
    match overlap {
        Overlap::Key => assert_eq!(stored, Stored::Tombstone),
        Overlap::WriteThrough => assert!(stored.holds("Ada"), "{stored:?}"),
        Overlap::Tag => {}
    }
    let reads = db.reads.load(Ordering::SeqCst);
    let fresh = instance(&server, &db).await;
    assert_eq!(name(fresh.get_user(1, 1).await), "Ada", "a new instance");
    let loaded = match overlap {
        Overlap::Key | Overlap::Tag => 1,
        Overlap::WriteThrough => 0,
    };
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads + loaded,
        "the new instance loads, unless the written value is in Redis"
    );
    assert_eq!(name(loader.get_user(1, 1).await), "Ada", "the loader's L1");
    assert_eq!(name(writer.get_user(1, 1).await), "Ada", "the writer");
    let stored = server.stored("app:user:1");
    assert!(stored.holds("Ada"), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_an_invalidation_stores_nothing() {
    a_slow_load_overlapped_by(Overlap::Key, Origin::SameInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_another_instances_invalidation_stores_nothing() {
    a_slow_load_overlapped_by(Overlap::Key, Origin::OtherInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_a_tag_invalidation_stores_nothing() {
    a_slow_load_overlapped_by(Overlap::Tag, Origin::SameInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_another_instances_tag_invalidation_stores_nothing() {
    a_slow_load_overlapped_by(Overlap::Tag, Origin::OtherInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_a_write_through_keeps_the_written_value() {
    a_slow_load_overlapped_by(Overlap::WriteThrough, Origin::SameInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_overlapping_another_instances_write_through_keeps_the_written_value() {
    a_slow_load_overlapped_by(Overlap::WriteThrough, Origin::OtherInstance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_reconnects_and_clears_l1() {
    let server = RedisServer::start();
    let db = seeded_db();
    let repo = instance(&server, &db).await;
    repo.get_user(1, 1).await;
    assert_eq!(repo.cache.stats().l1_entries, 1);
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.client())
        .unwrap();
    assert!(killed >= 1);
    let reconnected = eventually(Duration::from_secs(5), async || {
        repo.cache.stats().pubsub_reconnects == 1
    })
    .await;
    assert!(reconnected, "{:?}", repo.cache.stats());
    assert_eq!(
        repo.cache.stats().l1_entries,
        0,
        "L1 cleared: messages may have been missed"
    );
    // And invalidations flow again.
    let other = instance(&server, &db).await;
    repo.get_user(1, 1).await;
    other.rename(1, "Ada", false).await.unwrap();
    let seen = eventually(Duration::from_secs(1), async || {
        name(repo.get_user(1, 1).await) == "Ada"
    })
    .await;
    assert!(seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_publish_nothing() {
    let server = RedisServer::start();
    let db = seeded_db();
    let repo = instance(&server, &db).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut listener = client.get_async_pubsub().await.unwrap();
    listener.subscribe("app #inval db0").await.unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let counter = counted.clone();
    tokio::spawn(async move {
        let mut messages = listener.into_on_message();
        while messages.next().await.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    for id in 100..300 {
        repo.get_user(1, id).await; // misses and fills (of absent users)
    }
    repo.rename(1, "Ada", false).await.unwrap();
    let one = eventually(Duration::from_secs(1), async || {
        counted.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        one,
        "only the invalidation was published: {}",
        counted.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_invalidates_this_ones_l1() {
    let server = RedisServer::start();
    let db = seeded_db();
    let repo = instance(&server, &db).await;
    repo.get_user(1, 1).await;
    db.users.lock().unwrap().get_mut(&1).unwrap().name = "Ada".into();
    let worker = ChildProcess::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_cache-test-worker"))
            .args(["invalidate", &server.url(), "app", "user:1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let finished = worker.finish(Duration::from_secs(30));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(finished.stdout, "DONE");
    let seen = eventually(Duration::from_secs(1), async || {
        name(repo.get_user(1, 1).await) == "Ada"
    })
    .await;
    assert!(seen);
}

#[tokio::test]
async fn invalidating_with_redis_down_drops_l1_and_reports_the_failure() {
    let db = seeded_db();
    let cache = Cache::builder()
        .redis_url(dead_url())
        .build()
        .await
        .unwrap();
    let repo = Repo {
        cache,
        db: db.clone(),
    };
    repo.get_user(1, 1).await;
    repo.get_user(1, 1).await;
    assert_eq!(db.reads.load(Ordering::SeqCst), 1);
    let error = repo.cache.invalidate("user:1").await.unwrap_err();
    assert!(error.is_l2(), "{error}");
    repo.get_user(1, 1).await;
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        2,
        "the local copy was dropped"
    );
    // The macro never fails the call.
    assert_eq!(repo.rename(1, "Ada", false).await, Ok(()));
    assert_eq!(name(repo.get_user(1, 1).await), "Ada");
}

#[tokio::test]
async fn in_process_only_caches_invalidate_keys_and_tags_too() {
    let db = seeded_db();
    let repo = Repo {
        cache: Cache::builder().build().await.unwrap(),
        db: db.clone(),
    };
    repo.get_user(1, 1).await;
    repo.reorganise(1).await;
    repo.get_user(1, 1).await;
    assert_eq!(db.reads.load(Ordering::SeqCst), 2);
    repo.rename(1, "Ada", false).await.unwrap();
    assert_eq!(name(repo.get_user(1, 1).await), "Ada");
}

/// An error type that is `Send` but not `Sync`, common in handlers.
type BoxError = Box<dyn std::error::Error + Send>;

#[invalidates(key = "user:<id>", cache = cache)]
async fn delete_user(cache: &Cache, id: u64) -> Result<(), BoxError> {
    let _ = id;
    Ok(())
}

#[write_through(key = "user:<id>", ttl = 60, cache = cache)]
async fn save_name(cache: &Cache, id: u64, name: String) -> Result<String, BoxError> {
    let _ = id;
    Ok(name)
}

fn assert_send<T: Send>(future: T) -> T {
    future
}

#[tokio::test]
async fn annotated_functions_stay_send_with_non_sync_errors() {
    let cache = Cache::builder().build().await.unwrap();
    assert_send(delete_user(&cache, 1)).await.unwrap();
    assert_eq!(
        assert_send(save_name(&cache, 1, "Ada".into()))
            .await
            .unwrap(),
        "Ada"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_cache_closes_its_subscription() {
    let server = RedisServer::start();
    let db = seeded_db();
    let subscribers = || {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut server.client())
            .unwrap();
        list.lines().count()
    };
    let repo = instance(&server, &db).await;
    assert_eq!(subscribers(), 1);
    drop(repo);
    let closed = eventually(Duration::from_secs(2), async || subscribers() == 0).await;
    assert!(closed, "the subscription task ended with the cache");
}

/// Another instance's start-up probe proves the channel delivers; it is not
/// an invalidation, so it is not counted as one received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_probe_is_not_an_invalidation_received() {
    let server = RedisServer::start();
    let build = || {
        Cache::builder()
            .namespace("probe")
            .redis_url(server.url())
            .build()
    };
    let first = build().await.unwrap();
    let verified = async |cache: &Cache| {
        eventually(Duration::from_secs(5), async || {
            cache.stats().channel_verified
        })
        .await
    };
    // The first listens before the second is even built, so the second's
    // probe reaches it.
    assert!(verified(&first).await);
    let second = build().await.unwrap();
    assert!(verified(&second).await);
    // Both probes were delivered to both listeners when they were
    // published; give the first one's task a moment to have handled them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        first.stats().invalidations_received,
        0,
        "{:?}",
        first.stats()
    );
    assert_eq!(second.stats().invalidations_received, 0);

    second.invalidate("user:1").await.unwrap();
    let received = eventually(Duration::from_secs(1), async || {
        first.stats().invalidations_received == 1
    })
    .await;
    assert!(received, "{:?}", first.stats());
}
