//! Writes land in the order they completed (issue 12, scenario 4): a
//! `#[write_through]` whose Redis write arrives late, after another
//! mutation of the same key completed, never leaves its older value in
//! Redis. Instance A reaches Redis through a proxy that holds its traffic
//! back; instance B talks to Redis directly; a third, fresh instance reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates, write_through};
use cache_test_support::{Proxy, RedisServer, eventually, within};

/// The "database": one row, its version moved on by each write.
#[derive(Default)]
struct Db {
    version: AtomicU64,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
    /// Held as the body commits: this instance's cache write arrives late.
    delay_after_commit: Option<Arc<Proxy>>,
}

impl Repo {
    #[cached(key = "row:<id>", ttl = 300, cache = self.cache)]
    async fn read(&self, id: u64) -> u64 {
        let _ = id;
        self.db.version.load(Ordering::SeqCst)
    }

    #[write_through(key = "row:<id>", ttl = 300, cache = self.cache)]
    async fn save(&self, id: u64) -> u64 {
        let _ = id;
        let version = self.db.version.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(proxy) = &self.delay_after_commit {
            proxy.hold();
        }
        version
    }

    #[invalidates(key = "row:<id>", cache = self.cache)]
    async fn update(&self, id: u64) {
        let _ = id;
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }
}

async fn cache_on(url: String) -> Cache {
    let cache = Cache::builder()
        .namespace("ordered")
        .redis_url(url)
        .build()
        .await
        .unwrap();
    assert!(cache.is_l2_connected(), "connected to Redis");
    cache
}

/// A slow write-through on A, then `second` on B completes, then A's write
/// arrives: a fresh instance must read what the database holds.
async fn check(second: impl AsyncFnOnce(&Repo)) {
    let server = RedisServer::start();
    let proxy = Arc::new(Proxy::start(server.port()).await);
    let db = Arc::new(Db::default());
    let a = Repo {
        cache: cache_on(proxy.url()).await,
        db: db.clone(),
        delay_after_commit: Some(proxy.clone()),
    };
    let b = Repo {
        cache: cache_on(server.url()).await,
        db: db.clone(),
        delay_after_commit: None,
    };
    // Something is cached before: the old value a late write must not
    // bring back, nor leave.
    assert_eq!(b.read(1).await, 0);

    let slow = tokio::spawn({
        let a = a.clone();
        async move { a.save(1).await }
    });
    // A committed and its cache write is held at the proxy.
    let committed = eventually(Duration::from_secs(5), async || {
        db.version.load(Ordering::SeqCst) != 0
    })
    .await;
    assert!(committed, "A's write committed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    second(&b).await;
    assert_eq!(db.version.load(Ordering::SeqCst), 2);
    proxy.release();
    assert_eq!(
        within(Duration::from_secs(10), "A's held write", slow)
            .await
            .unwrap(),
        1
    );

    let reader = Repo {
        cache: cache_on(server.url()).await,
        db: db.clone(),
        delay_after_commit: None,
    };
    assert_eq!(
        reader.read(1).await,
        2,
        "the late write of version 1 landed over the mutation that completed after it"
    );
    assert_eq!(b.read(1).await, 2, "B itself serves the newest version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_through_does_not_land_over_a_later_invalidation() {
    check(async |b| b.update(1).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_through_does_not_land_over_a_later_write_through() {
    check(async |b| assert_eq!(b.save(1).await, 2)).await;
}

/// Without interference, a write-through stores its value for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undisturbed_write_through_is_served_from_redis() {
    let server = RedisServer::start();
    let db = Arc::new(Db::default());
    let writer = Repo {
        cache: cache_on(server.url()).await,
        db: db.clone(),
        delay_after_commit: None,
    };
    assert_eq!(writer.read(1).await, 0);
    assert_eq!(writer.save(1).await, 1);
    let reader = Repo {
        cache: cache_on(server.url()).await,
        db: db.clone(),
        delay_after_commit: None,
    };
    assert_eq!(reader.read(1).await, 1);
    let stats = reader.cache.stats();
    assert_eq!((stats.l2_hits, stats.loads), (1, 0), "{stats:?}");
}
