//! Redis over TLS (`rediss://`), against a real `redis-server` that speaks
//! TLS with certificates made for the test: instances trusting its private
//! CA share entries and invalidations (the pub/sub subscription runs over
//! TLS too); a certificate the cache cannot verify (unknown CA, another
//! host) is a logged connection failure, and every call runs its body,
//! never an error or a panic; `#insecure` connects without verifying; a
//! CA that is no certificate fails `build()`. The same holds on a Redis
//! Cluster over TLS (clients and cluster bus). What TLS costs an L2 hit is
//! measured by `cargo bench -p cache-benches --bench tls`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheBuilder, cached, invalidates};
use cache_test_support::{
    CapturedLogs, Certificates, RedisCluster, TlsRedisServer, eventually, subscribed,
};

const NAMESPACE: &str = "tls";

#[derive(Clone)]
struct Repo {
    cache: Cache,
    /// Times a body ran, shared by the instances of a test.
    loads: Arc<AtomicU64>,
    /// The name every user has, until renamed.
    names: Arc<std::sync::Mutex<Vec<(u64, String)>>>,
}

impl Repo {
    async fn new(builder: CacheBuilder, loads: &Arc<AtomicU64>) -> Repo {
        Repo {
            cache: builder.build().await.expect("a valid configuration builds"),
            loads: loads.clone(),
            names: Arc::default(),
        }
    }

    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let names = self.names.lock().unwrap();
        names
            .iter()
            .rev()
            .find(|(user, _)| *user == id)
            .map_or_else(|| format!("user {id}"), |(_, name)| name.clone())
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str) {
        self.names.lock().unwrap().push((id, name.to_owned()));
    }
}

/// A builder for `url`, quick to notice and retry a failed connection.
fn builder(url: &str) -> CacheBuilder {
    Cache::builder()
        .namespace(NAMESPACE)
        .redis_url(url)
        .connect_timeout(Duration::from_secs(2))
        .reconnect_max_delay(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_trusting_a_private_ca_share_entries_and_invalidations_over_tls() {
    let server = TlsRedisServer::start();
    let loads = Arc::new(AtomicU64::new(0));
    let trusting = || builder(&server.url()).redis_tls_root_ca(server.ca_pem());
    let first = Repo::new(trusting(), &loads).await;
    let second = Repo {
        names: first.names.clone(),
        ..Repo::new(trusting(), &loads).await
    };
    assert!(first.cache.is_l2_connected(), "{:?}", first.cache.stats());
    assert!(second.cache.is_l2_connected(), "{:?}", second.cache.stats());
    // Both subscriptions run over TLS: the TLS port is the only one the
    // caches know.
    subscribed(&first.cache).await;
    subscribed(&second.cache).await;
    assert_eq!(server.plain().invalidation_subscribers(NAMESPACE), 2);

    // What one loads, the other reads from Redis.
    assert_eq!(first.name(1).await, "user 1");
    let stored = eventually(Duration::from_secs(5), async || {
        server.plain().stored("tls:user:1").holds("user 1")
    })
    .await;
    assert!(stored, "{:?}", server.plain().stored("tls:user:1"));
    assert_eq!(second.name(1).await, "user 1");
    let stats = second.cache.stats();
    assert_eq!((stats.l2_hits, stats.loads), (1, 0), "{stats:?}");
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // An invalidation reaches the other instance's L1 through the TLS
    // subscription.
    assert_eq!(first.name(1).await, "user 1"); // held in its L1
    second.rename(1, "Ada").await;
    let seen = eventually(Duration::from_secs(5), async || {
        first.name(1).await == "Ada"
    })
    .await;
    assert!(
        seen,
        "the rename reached the first instance: {:?}",
        first.cache.stats()
    );
    assert!(first.cache.stats().invalidations_received >= 1);
    for repo in [&first, &second] {
        let stats = repo.cache.stats();
        assert_eq!((stats.l2_errors, stats.l2_timeouts), (0, 0), "{stats:?}");
    }
}

/// Certificates the cache must refuse: signed by a CA it was not told to
/// trust (another private one, or none: the system's roots), or by the
/// trusted CA but for another host. Each is a connection failure, logged
/// with its reason; `build()` succeeds, and every call runs its body at
/// once, without an error.
#[tokio::test]
async fn a_certificate_the_cache_cannot_verify_is_a_logged_connection_failure_and_a_miss() {
    let logs = CapturedLogs::start(tracing::Level::WARN);
    let server = TlsRedisServer::start();
    let elsewhere = TlsRedisServer::start_for(&["cache.example"]);
    let another_ca = Certificates::generate(&["127.0.0.1"]);
    let refused = [
        (
            "another CA",
            builder(&server.url()).redis_tls_root_ca(another_ca.ca_pem()),
        ),
        ("the system's roots", builder(&server.url())),
        (
            "another host",
            builder(&elsewhere.url()).redis_tls_root_ca(elsewhere.ca_pem()),
        ),
    ];
    let loads = Arc::new(AtomicU64::new(0));
    for (case, builder) in refused {
        // Without L1, every call is a miss that may look in Redis.
        let repo = Repo::new(builder.l1_capacity(0), &loads).await;
        let before = loads.load(Ordering::SeqCst);
        let started = Instant::now();
        for round in 0..3 {
            for id in 0..10 {
                assert_eq!(
                    repo.name(id).await,
                    format!("user {id}"),
                    "{case}, round {round}"
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{case}: no call waited on Redis ({:?})",
            started.elapsed()
        );
        assert_eq!(
            loads.load(Ordering::SeqCst) - before,
            30,
            "{case}: every call ran its body"
        );
        let stats = repo.cache.stats();
        assert!(!repo.cache.is_l2_connected(), "{case}: {stats:?}");
        assert_eq!(stats.l2_hits, 0, "{case}: {stats:?}");
        assert!(
            stats.l2_skipped >= 30,
            "{case}: every read skipped Redis: {stats:?}"
        );
        repo.rename(1, "Ada").await;
        assert_eq!(repo.name(1).await, "Ada", "{case}");
    }
    for server in [&server, &elsewhere] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut server.plain().client())
            .unwrap();
        assert!(keys.is_empty(), "nothing reached Redis: {keys:?}");
    }
    // One warning per cache, each with rustls' reason.
    let logged = logs.text();
    let failures = logged
        .lines()
        .filter(|line| line.contains("cannot connect to Redis"))
        .filter(|line| line.contains("invalid peer certificate"))
        .count();
    assert!(
        failures >= 3,
        "each failure was logged with its reason:\n{logged}"
    );
    assert!(
        logged.contains(r#"not valid for name "127.0.0.1""#),
        "{logged}"
    );
}

/// `#insecure` (redis-rs's URL fragment) connects without verifying the
/// certificate, for local testing: here one the cache could not verify
/// (unknown CA, another host). Values reach Redis, and the subscription
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_connects_without_verifying() {
    let server = TlsRedisServer::start_for(&["cache.example"]);
    let loads = Arc::new(AtomicU64::new(0));
    let insecure = Repo::new(builder(&format!("{}/#insecure", server.url())), &loads).await;
    assert!(
        insecure.cache.is_l2_connected(),
        "{:?}",
        insecure.cache.stats()
    );
    subscribed(&insecure.cache).await;
    assert_eq!(insecure.name(7).await, "user 7");
    let stored = eventually(Duration::from_secs(5), async || {
        server.plain().stored("tls:user:7").holds("user 7")
    })
    .await;
    assert!(stored, "{:?}", server.plain().stored("tls:user:7"));
}

#[tokio::test]
async fn a_root_ca_that_is_no_certificate_fails_build() {
    let server = TlsRedisServer::start();
    for pem in [
        b"not a certificate".to_vec(),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        Vec::new(),
    ] {
        let error = builder(&server.url())
            .redis_tls_root_ca(pem.clone())
            .build()
            .await
            .expect_err("a root CA that is no certificate is bad configuration");
        assert!(error.is_config(), "{error}");
        assert!(error.to_string().contains("redis_tls_root_ca"), "{error}");
    }
    // A CA for a connection without TLS says so rather than being ignored.
    let error = builder(&server.plain().url())
        .redis_tls_root_ca(server.ca_pem())
        .build()
        .await
        .expect_err("a root CA with a redis:// URL is bad configuration");
    assert!(error.is_config(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_shares_entries_and_refuses_an_unknown_ca() {
    let cluster = RedisCluster::start_tls();
    let seeds = cluster.seed_urls();
    assert!(seeds.iter().all(|seed| seed.starts_with("rediss://")));
    let loads = Arc::new(AtomicU64::new(0));
    let on_cluster = |ca: Vec<u8>| {
        Cache::builder()
            .namespace(NAMESPACE)
            .redis_cluster(seeds.clone())
            .redis_tls_root_ca(ca)
            .connect_timeout(Duration::from_secs(2))
    };
    let first = Repo::new(on_cluster(cluster.ca_pem()), &loads).await;
    let second = Repo {
        names: first.names.clone(),
        ..Repo::new(on_cluster(cluster.ca_pem()), &loads).await
    };
    for repo in [&first, &second] {
        assert!(repo.cache.is_l2_connected(), "{:?}", repo.cache.stats());
        subscribed(&repo.cache).await;
    }
    // Entries on every master, read by the other instance from Redis.
    for id in 0..30 {
        first.name(id).await;
    }
    first.cache.settled().await;
    for id in 0..30 {
        assert_eq!(second.name(id).await, format!("user {id}"));
    }
    let stats = second.cache.stats();
    assert_eq!((stats.l2_hits, stats.loads), (30, 0), "{stats:?}");
    // An invalidation reaches the other instance's L1.
    second.rename(1, "Ada").await;
    let seen = eventually(Duration::from_secs(5), async || {
        first.name(1).await == "Ada"
    })
    .await;
    assert!(seen, "{:?}", first.cache.stats());

    // Another CA: no connection (a logged failure, as on one server:
    // above), and calls run their bodies at once, without an error.
    let other_ca = Certificates::generate(&["127.0.0.1"]).ca_pem();
    let refusing = Repo::new(on_cluster(other_ca), &loads).await;
    assert!(!refusing.cache.is_l2_connected());
    let loads_before = loads.load(Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(refusing.name(2).await, "user 2");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        loads_before + 1,
        "the body ran"
    );
}
