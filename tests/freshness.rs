//! `early` (XFetch) and `stale` (stale-while-revalidate, fail-safe) against
//! a real redis-server. (That early refresh keeps a hot key warm with no
//! caller waiting is in `tests/topologies.rs`, on one server and on a
//! cluster.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, eventually};

/// A repository whose loads are slow, counted, and can be made to fail.
#[derive(Clone)]
struct Repo {
    cache: Cache,
    loads: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    body: Duration,
}

#[derive(Debug)]
struct DbDown;

impl Repo {
    async fn new(server: &RedisServer, namespace: &str, body: Duration) -> Repo {
        Repo {
            cache: Cache::builder()
                .namespace(namespace)
                .redis_url(server.url())
                .refresh_retry_after(Duration::from_millis(500))
                .build()
                .await
                .unwrap(),
            loads: Arc::default(),
            failing: Arc::default(),
            body,
        }
    }

    async fn query(&self) -> Result<u64, DbDown> {
        let load = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.body).await;
        if self.failing.load(Ordering::SeqCst) {
            Err(DbDown)
        } else {
            Ok(load)
        }
    }

    #[cached(key = "early:<id>", ttl = 2, early = 1.0, lock, cache = self.cache)]
    async fn hot(&self, id: u64) -> Result<u64, DbDown> {
        assert_eq!(id, 1);
        self.query().await
    }

    #[cached(key = "stale:<name>", ttl = 1, stale = 60, cache = self.cache)]
    async fn swr(&self, name: &str) -> Result<u64, DbDown> {
        assert!(!name.is_empty());
        self.query().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_the_refresh_lands() {
    let server = RedisServer::start();
    let repo = Repo::new(&server, "swr", Duration::from_millis(300)).await;
    assert_eq!(repo.swr("a").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let call = Instant::now();
    assert_eq!(repo.swr("a").await.unwrap(), 1, "the stale value");
    assert!(
        call.elapsed() < Duration::from_millis(100),
        "{:?}",
        call.elapsed()
    );
    assert_eq!(repo.cache.stats().stale_serves, 1);

    let refreshed = eventually(Duration::from_secs(3), async || {
        repo.swr("a").await.unwrap() == 2
    })
    .await;
    assert!(
        refreshed,
        "the refreshed value lands: {:?}",
        repo.cache.stats()
    );
    assert_eq!(
        repo.loads.load(Ordering::SeqCst),
        2,
        "one refresh, not one per stale call"
    );

    // Redis keeps the value for ttl + stale.
    let pttl: i64 = redis::cmd("PTTL")
        .arg("swr:stale:a")
        .query(&mut server.client())
        .unwrap();
    assert!(pttl > 59_000, "{pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_serves_the_stale_value_and_throttles_refreshes() {
    let server = RedisServer::start();
    let repo = Repo::new(&server, "failsafe", Duration::from_millis(20)).await;
    assert_eq!(repo.swr("b").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    repo.failing.store(true, Ordering::SeqCst);

    for _ in 0..50 {
        assert_eq!(
            repo.swr("b").await.unwrap(),
            1,
            "the last good value, not the error"
        );
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let stats = repo.cache.stats();
    assert!(stats.refresh_errors >= 1, "{stats:?}");
    assert!(stats.fail_safe_serves > 0, "{stats:?}");
    let attempts = repo.loads.load(Ordering::SeqCst) - 1;
    assert!(
        attempts <= 2,
        "refreshes are throttled after a failure, not one per call: {attempts}"
    );

    // Once the database is back, the next refresh after the pause lands.
    repo.failing.store(false, Ordering::SeqCst);
    let recovered = eventually(Duration::from_secs(3), async || {
        repo.swr("b").await.unwrap() > 1
    })
    .await;
    assert!(recovered, "{:?}", repo.cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_refresh_is_cut_off_by_the_refresh_timeout() {
    let server = RedisServer::start();
    let mut repo = Repo::new(&server, "stuck", Duration::from_millis(10)).await;
    repo.cache = Cache::builder()
        .namespace("stuck")
        .redis_url(server.url())
        .refresh_timeout(Duration::from_millis(200))
        .refresh_retry_after(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert_eq!(repo.swr("c").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    repo.body = Duration::from_secs(3600);
    assert_eq!(repo.swr("c").await.unwrap(), 1);
    let cut_off = eventually(Duration::from_secs(2), async || {
        repo.cache.stats().refresh_errors == 1
    })
    .await;
    assert!(cut_off, "{:?}", repo.cache.stats());
    repo.body = Duration::from_millis(10);
    let recovered = eventually(Duration::from_secs(3), async || {
        repo.swr("c").await.unwrap() > 1
    })
    .await;
    assert!(
        recovered,
        "a new refresh could start: {:?}",
        repo.cache.stats()
    );
}
