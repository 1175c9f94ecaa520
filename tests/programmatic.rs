//! The engine without the attribute, against real Redis (one server and a
//! cluster): `get`, `set`, `get_or_load`, `remove` and `Options` share
//! entries with `#[cached]` functions of the same template and between
//! instances, load once per key, and keep the attribute's rules (negative
//! caching, errors never cached, tags, the lock, degradation, and with
//! `get_or_refresh`, `stale` and `early`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, Options, cached, escape_key_part};
use cache_test_support::{Gate, RedisServer, TestRedis, eventually, on_every_topology, within};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

const TTL: Duration = Duration::from_secs(300);

fn ada(id: u64) -> User {
    User {
        id,
        name: "Ada".into(),
    }
}

async fn instance(redis: &TestRedis, namespace: &str) -> Cache {
    redis
        .connect(Cache::builder().namespace(namespace))
        .build()
        .await
        .expect("cache")
}

/// The annotated reader of the same entries.
#[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache, loads))]
async fn get_user(cache: &Cache, loads: &AtomicU64, id: u64) -> Option<User> {
    loads.fetch_add(1, Ordering::SeqCst);
    Some(User {
        id,
        name: "from the attribute".into(),
    })
}

async fn set_get_and_remove_reach_every_instance(redis: TestRedis) {
    let a = instance(&redis, "p-set").await;
    let b = instance(&redis, "p-set").await;
    assert_eq!(b.get::<User>("user:1").await, None);
    a.set("user:1", &ada(1), TTL).await;
    assert_eq!(b.get::<User>("user:1").await, Some(ada(1)), "from Redis");
    assert!(b.stats().l2_hits >= 1);
    // Then from L1 (once A's invalidation message, which may arrive after
    // B's read and drop its copy, has come).
    assert!(
        eventually(Duration::from_secs(5), async || {
            b.get::<User>("user:1").await == Some(ada(1)) && b.stats().l1_hits >= 1
        })
        .await
    );

    // A new value drops B's L1 copy.
    let renamed = User {
        id: 1,
        name: "Grace".into(),
    };
    a.set("user:1", &renamed, TTL).await;
    assert!(
        eventually(Duration::from_secs(5), async || b
            .get::<User>("user:1")
            .await
            == Some(renamed.clone()))
        .await
    );
    a.remove("user:1").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || b
            .get::<User>("user:1")
            .await
            .is_none())
        .await
    );
    // Several keys at once, some in L1, some in Redis only, some nowhere.
    a.set("user:3", &ada(3), TTL).await;
    let many: Vec<Option<User>> = b
        .get_many(&["user:1", "user:3", "user:404", "user:1"])
        .await;
    assert_eq!(many, [None, Some(ada(3)), None, None]);
    a.set("user:1", &ada(1), TTL).await;
    assert_eq!(
        b.get_many::<User>(&["user:1", "user:3"]).await,
        [Some(ada(1)), Some(ada(3))]
    );
    // Another type under the key is a miss, never a wrong value.
    a.set("user:2", &7u64, TTL).await;
    assert_eq!(b.get::<User>("user:2").await, None);
    assert_eq!(b.get::<u64>("user:2").await, Some(7));
}

async fn get_or_load_loads_once_and_meets_the_attribute(redis: TestRedis) {
    let a = instance(&redis, "p-load").await;
    let b = instance(&redis, "p-load").await;
    let loads = Arc::new(AtomicU64::new(0));
    let load = |id: u64| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, String>(Some(ada(id)))
        }
    };
    // Concurrent callers of one key: one load (single-flight).
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (a, load) = (a.clone(), load(42));
            tokio::spawn(async move { a.get_or_load("user:42", TTL, load).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(Some(ada(42))));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // Another instance reads it from Redis, once the write after the load
    // (background work, see `load.rs`) reached it.
    a.settled().await;
    assert_eq!(
        b.get_or_load("user:42", TTL, load(42)).await,
        Ok(Some(ada(42)))
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // The attribute reads what the programmatic call stored, and the other
    // way round.
    let attribute_loads = AtomicU64::new(0);
    assert_eq!(get_user(&b, &attribute_loads, 42).await, Some(ada(42)));
    assert_eq!(attribute_loads.load(Ordering::SeqCst), 0);
    let stored = get_user(&a, &attribute_loads, 7).await.unwrap();
    a.settled().await;
    assert_eq!(b.get::<User>("user:7").await, Some(stored.clone()));
    assert_eq!(
        b.get_or_load("user:7", TTL, load(7)).await,
        Ok(Some(stored))
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(attribute_loads.load(Ordering::SeqCst), 1);
}

/// `stale`: past its TTL, a value is served at once (never waiting for the
/// refresh, which is held here until the test lets it go) from L1 and from
/// Redis, with one background refresh per key and instance, and the
/// refreshed value replaces it.
async fn stale_options_serve_the_old_value_while_the_refresh_runs(redis: TestRedis) {
    let a = instance(&redis, "p-stale").await;
    let b = instance(&redis, "p-stale").await;
    let options = Options::ttl(Duration::from_secs(1))
        .jitter(0.0)
        .stale(Duration::from_secs(60))
        .name("stale_user");
    // Counted when the loader makes a load (on the caller's path), so the
    // count does not wait for the spawned refresh to start.
    let runs = Arc::new(AtomicU64::new(0));
    let refreshes_may_finish = Gate::closed();
    let loader = || {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = refreshes_may_finish.clone();
        async move {
            if run > 1 {
                gate.passed().await;
            }
            Ok::<_, String>(Some(run))
        }
    };
    assert_eq!(
        a.get_or_refresh("stale:1", &options, loader).await,
        Ok(Some(1))
    );
    a.settled().await;
    tokio::time::sleep(Duration::from_millis(1_200)).await; // past the TTL

    for _ in 0..5 {
        let served = within(
            Duration::from_secs(5),
            "a stale value (not waiting for the refresh)",
            a.get_or_refresh("stale:1", &options, loader),
        )
        .await;
        assert_eq!(served, Ok(Some(1)));
    }
    assert_eq!(a.stats().stale_serves, 5, "{:?}", a.stats());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one refresh, not one per call"
    );
    // Redis kept the entry past its TTL: another instance serves it too.
    let served = within(
        Duration::from_secs(5),
        "a stale value from Redis",
        b.get_or_refresh("stale:1", &options, loader),
    )
    .await;
    assert_eq!(served, Ok(Some(1)));
    assert_eq!(b.stats().l2_hits, 1, "{:?}", b.stats());
    assert_eq!(b.stats().stale_serves, 1, "{:?}", b.stats());

    refreshes_may_finish.open();
    for cache in [&a, &b] {
        let refreshed = eventually(Duration::from_secs(10), async || {
            cache.get_or_refresh("stale:1", &options, loader).await > Ok(Some(1))
        })
        .await;
        assert!(refreshed, "the refreshed value lands: {:?}", cache.stats());
    }
    // No caller but the first waited for a load (B's read was a Redis hit).
    assert_eq!(a.stats().misses, 1, "{:?}", a.stats());
    assert_eq!(b.stats().misses, 0, "{:?}", b.stats());
}

on_every_topology!(
    set_get_and_remove_reach_every_instance,
    get_or_load_loads_once_and_meets_the_attribute,
    stale_options_serve_the_old_value_while_the_refresh_runs,
);

/// `stale` as fail-safe: once the TTL passed, a loader returning `Err`
/// never reaches the caller, who keeps getting the last good value, and a
/// failed refresh is not retried on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_options_serve_the_last_value_when_the_loader_fails() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = redis
        .connect(
            Cache::builder()
                .namespace("p-failsafe")
                .refresh_retry_after(Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap();
    let options = Options::ttl(Duration::from_secs(1))
        .jitter(0.0)
        .stale(Duration::from_secs(60));
    let runs = Arc::new(AtomicU64::new(0));
    let database_down = Arc::new(AtomicBool::new(false));
    let loader = || {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        let database_down = Arc::clone(&database_down);
        async move {
            if database_down.load(Ordering::SeqCst) {
                Err("the database is down".to_owned())
            } else {
                Ok(Some(run))
            }
        }
    };
    assert_eq!(
        cache.get_or_refresh("failsafe:1", &options, loader).await,
        Ok(Some(1))
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await; // past the TTL
    database_down.store(true, Ordering::SeqCst);

    // Without a value to fall back on, the error is the caller's.
    assert_eq!(
        cache.get_or_refresh("failsafe:2", &options, loader).await,
        Err("the database is down".to_owned())
    );
    let runs_before = runs.load(Ordering::SeqCst);
    let served_after_failure = eventually(Duration::from_secs(10), async || {
        let served = cache.get_or_refresh("failsafe:1", &options, loader).await;
        assert_eq!(served, Ok(Some(1)), "the last good value, not the error");
        cache.stats().fail_safe_serves >= 3
    })
    .await;
    let stats = cache.stats();
    assert!(served_after_failure, "{stats:?}");
    assert_eq!(stats.refresh_errors, 1, "{stats:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        runs_before + 1,
        "one refresh, then left alone for refresh_retry_after"
    );
}

/// `early`: a hot key is refreshed in the background before it expires.
/// The TTL (a minute) outlasts the test, so a new value can only come from
/// an early refresh; a large beta over a 50 ms load makes each hit likely
/// to start one, and the test polls many hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_options_refresh_a_hot_key_before_it_expires() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = instance(&redis, "p-early").await;
    let options = Options::ttl(Duration::from_secs(60))
        .jitter(0.0)
        .early(1_000.0);
    let runs = Arc::new(AtomicU64::new(0));
    let loader = || {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some(run)
        }
    };
    assert_eq!(
        cache.get_or_refresh("early:1", &options, loader).await,
        Some(1)
    );
    let refreshed = eventually(Duration::from_secs(20), async || {
        cache.get_or_refresh("early:1", &options, loader).await > Some(1)
    })
    .await;
    let stats = cache.stats();
    assert!(refreshed, "{stats:?}");
    assert!(stats.early_refreshes >= 1, "{stats:?}");
    assert_eq!(
        stats.misses, 1,
        "no caller but the first waited for a load: {stats:?}"
    );
    assert_eq!(stats.stale_serves, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_keep_the_attribute_s_rules() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = instance(&redis, "p-options").await;
    let loads = AtomicU64::new(0);
    let counted = |value: Option<u64>| {
        let loads = &loads;
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            value
        }
    };

    // `None` is cached only with `negative`.
    let plain = Options::ttl(TTL).name("find");
    assert_eq!(
        cache
            .get_or_load_with("missing:1", &plain, counted(None))
            .await,
        None
    );
    assert_eq!(
        cache
            .get_or_load_with("missing:1", &plain, counted(None))
            .await,
        None
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    let negative = plain.clone().negative(Duration::from_secs(60));
    assert_eq!(
        cache
            .get_or_load_with("missing:2", &negative, counted(None))
            .await,
        None
    );
    assert_eq!(
        cache
            .get_or_load_with("missing:2", &negative, counted(Some(1)))
            .await,
        None
    );
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    assert_eq!(cache.stats().negative_hits, 1);

    // `Err` is never cached.
    let failing = || async { Err::<Option<u64>, _>("down") };
    assert_eq!(cache.get_or_load("flaky", TTL, failing).await, Err("down"));
    assert_eq!(
        cache
            .get_or_load("flaky", TTL, || async { Ok::<_, &str>(Some(5u64)) })
            .await,
        Ok(Some(5))
    );

    // Tags: `invalidate_tag` drops what carries one.
    let tagged = Options::ttl(TTL).tags(["org:7"]);
    assert_eq!(
        cache
            .get_or_load_with("member:1", &tagged, counted(Some(1)))
            .await,
        Some(1)
    );
    cache.set_with("member:2", &2u64, &tagged).await;
    cache.set("member:3", &3u64, TTL).await;
    cache.invalidate_tag("org:7").await.unwrap();
    assert_eq!(cache.get::<u64>("member:1").await, None);
    assert_eq!(cache.get::<u64>("member:2").await, None);
    assert_eq!(cache.get::<u64>("member:3").await, Some(3));

    // The lock: one load across instances.
    let locked = Options::ttl(TTL).lock();
    let other = instance(&redis, "p-options").await;
    let before = loads.load(Ordering::SeqCst);
    let (first, second) = tokio::join!(
        cache.get_or_load_with("locked:1", &locked, counted(Some(9))),
        other.get_or_load_with("locked:1", &locked, counted(Some(9))),
    );
    assert_eq!((first, second), (Some(9), Some(9)));
    assert_eq!(loads.load(Ordering::SeqCst), before + 1);
    assert_eq!(cache.stats().lock_acquired + other.stats().lock_acquired, 1);
}

/// `escape_key_part` renders what a template renders, so a value with
/// separators in it reaches the annotated function's entry and no other.
#[tokio::test]
async fn keys_built_with_escape_key_part_meet_the_attribute() {
    #[cached(key = "name:<name>", ttl = 300, cache = cache, skip(cache))]
    async fn by_name(cache: &Cache, name: &str) -> Option<String> {
        Some(format!("user {name}"))
    }
    let cache = Cache::builder().build().await.unwrap();
    by_name(&cache, "a:b").await;
    let key = format!("name:{}", escape_key_part("a:b"));
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("user a:b"));
    assert_eq!(
        cache.get::<String>("name:a:b").await,
        None,
        "unescaped: another key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_nothing_fails() {
    let mut redis = RedisServer::start();
    let cache = Cache::builder()
        .namespace("p-down")
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    redis.kill();
    assert_eq!(cache.get::<u64>("k").await, None);
    // As `#[write_through]` with Redis away: not kept even in L1 (other
    // instances may hold the old value in Redis), invalidated once Redis
    // answers again.
    cache.set("k", &1u64, TTL).await;
    assert_eq!(cache.get::<u64>("k").await, None);
    assert!(cache.stats().invalidations_pending >= 1);
    let loaded = cache.get_or_load("j", TTL, || async { Some(2u64) }).await;
    assert_eq!(loaded, Some(2));
    assert!(
        cache.remove("k").await.is_err(),
        "Redis did not take the removal"
    );
    assert_eq!(
        cache.get::<u64>("k").await,
        None,
        "the local copy is gone anyway"
    );
}

/// `warm` runs at most `concurrency` loads at once, reports after each item,
/// counts failures, and leaves the loaded entries in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_is_bounded_reports_progress_and_counts_failures() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = instance(&redis, "p-warm").await;
    let running = AtomicU64::new(0);
    let most_running = AtomicU64::new(0);
    let reports = std::sync::Mutex::new(Vec::new());
    let warmed = cache
        .warm(0..20u64, |id| {
            let (cache, running, most_running) = (&cache, &running, &most_running);
            async move {
                let key = format!("warm:{id}");
                cache
                    .get_or_load(&key, TTL, || async {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most_running.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        if id == 13 {
                            Err(format!("user {id}: the database said no"))
                        } else {
                            Ok(Some(id))
                        }
                    })
                    .await
            }
        })
        .concurrency(3)
        .on_progress(|so_far| reports.lock().unwrap().push(so_far))
        .await;
    assert_eq!((warmed.loaded, warmed.failed), (19, 1));
    assert!(most_running.load(Ordering::SeqCst) <= 3);
    assert!(
        most_running.load(Ordering::SeqCst) >= 2,
        "loads ran together"
    );
    let reports = reports.into_inner().unwrap();
    assert_eq!(reports.len(), 20);
    assert_eq!(reports.last(), Some(&warmed));
    assert_eq!(cache.get::<u64>("warm:7").await, Some(7));
    assert_eq!(cache.get::<u64>("warm:13").await, None);
}
