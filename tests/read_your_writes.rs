//! Read-your-writes (issue 12, scenario 3): a call that starts after an
//! invalidation returned never receives a value loaded before it, even when
//! a load of the same key that started earlier is still running in this
//! process. Against a real redis-server, and in-process only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_test_support::{Proxy, RedisServer};
use tokio::sync::Notify;

/// The "database": one row whose version moves on with each write, and a
/// gate that holds the first read back until the test opens it.
#[derive(Default)]
struct Db {
    version: AtomicU64,
    reads: AtomicU64,
    gate: Notify,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(key = "row:<id>", ttl = 300, cache = self.cache)]
    async fn read(&self, id: u64) -> u64 {
        self.load_row(id).await
    }

    #[cached(key = "tagged:<id>", ttl = 300, tags = ["group"], cache = self.cache)]
    async fn read_tagged(&self, id: u64) -> u64 {
        self.load_row(id).await
    }

    /// The query: the first one reads the old row and is slow to return it.
    async fn load_row(&self, id: u64) -> u64 {
        let _ = id;
        let version = self.db.version.load(Ordering::SeqCst);
        if self.db.reads.fetch_add(1, Ordering::SeqCst) == 0 {
            self.db.gate.notified().await;
        }
        version
    }

    #[invalidates(key = "row:<id>", cache = self.cache)]
    async fn write(&self, id: u64) {
        let _ = id;
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }

    #[invalidates(tag = "group", cache = self.cache)]
    async fn write_group(&self) {
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }
}

async fn repo(redis: Option<&RedisServer>, namespace: &str) -> Repo {
    let mut builder = Cache::builder().namespace(namespace);
    if let Some(server) = redis {
        builder = builder.redis_url(server.url());
    }
    Repo {
        cache: builder.build().await.unwrap(),
        db: Arc::default(),
    }
}

/// Starts a slow load of the old row, invalidates, then calls again: the
/// second call must see the new row, not join the slow load.
async fn check(repo: Repo, tagged: bool) {
    let slow = tokio::spawn(read(repo.clone(), tagged));
    // Wait until the slow load has read version 0 and is parked.
    tokio::time::timeout(Duration::from_secs(5), async {
        while repo.db.reads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the first load starts");
    if tagged {
        repo.write_group().await;
    } else {
        repo.write(1).await;
    }
    // Started after the invalidation returned: must not get version 0.
    let after = tokio::spawn(read(repo.clone(), tagged));
    let after = tokio::time::timeout(Duration::from_secs(5), after)
        .await
        .expect("a call after the invalidation does not wait for the older load")
        .unwrap();
    assert_eq!(
        after, 1,
        "a call that started after the write got the old row"
    );
    // The old load finishes for its own caller (who started before the write).
    repo.db.gate.notify_one();
    let before = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, 0);
    // And its older value was not kept over the newer one.
    assert_eq!(read(repo, tagged).await, 1);
}

async fn read(repo: Repo, tagged: bool) -> u64 {
    if tagged {
        repo.read_tagged(1).await
    } else {
        repo.read(1).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_invalidation_no_call_joins_an_older_load_with_redis() {
    let server = RedisServer::start();
    check(repo(Some(&server), "ryw-key").await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_tag_invalidation_no_call_joins_an_older_load_with_redis() {
    let server = RedisServer::start();
    check(repo(Some(&server), "ryw-tag").await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_invalidation_no_call_joins_an_older_load_in_process() {
    check(repo(None, "ryw-local").await, false).await;
}

/// Another instance's invalidation, before its message reaches this one:
/// a call that starts after it returned must not join a load of this
/// instance that read Redis before it (its Redis read may predate the
/// invalidation, which this instance has not heard of yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_another_instances_invalidation_no_call_joins_an_older_load() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let db = Arc::new(Db::default());
    let cache = |url: String| {
        Cache::builder()
            .namespace("ryw-remote")
            .redis_url(url)
            // This test silences the reader's subscription on purpose.
            .heartbeat_interval(Duration::from_secs(600))
            .build()
    };
    let reader = Repo {
        cache: cache(proxy.url()).await.unwrap(),
        db: db.clone(),
    };
    let writer = Repo {
        cache: cache(server.url()).await.unwrap(),
        db: db.clone(),
    };
    // The reader hears nothing: the message is still on its way.
    proxy.mute_subscribers();
    let slow = tokio::spawn(read(reader.clone(), false));
    tokio::time::timeout(Duration::from_secs(5), async {
        while db.reads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the first load starts");
    writer.write(1).await;
    let after = tokio::spawn(read(reader.clone(), false));
    // Give the late call time to join the slow load, then let that finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.gate.notify_one();
    let after = tokio::time::timeout(Duration::from_secs(5), after)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after, 1,
        "a call that started after another instance's write got the old row"
    );
    let before = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, 0);
}
