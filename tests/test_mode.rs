//! Testing code that uses the cache: a disabled cache (every call runs its
//! body, the stats still count), a test clock that moves expiry without
//! sleeping, and the warning a function gets when it reaches for the
//! global cache before `set_global`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, TestClock, cached, invalidates};
use cache_test_support::{CapturedLogs, RedisServer};

/// A repository function as users write them.
#[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache, queries))]
async fn get_user(cache: &Cache, queries: &AtomicU64, id: u64) -> Result<Option<String>, String> {
    queries.fetch_add(1, Ordering::SeqCst);
    Ok(Some(format!("user {id}")))
}

#[invalidates(key = "user:<id>", cache = cache)]
async fn rename_user(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[tokio::test]
async fn a_disabled_cache_runs_every_body_and_still_counts() {
    let server = RedisServer::start();
    // Redis configured, but not used: the same configuration with caching off.
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("disabled")
        .disabled(true)
        .build()
        .await
        .unwrap();
    let queries = AtomicU64::new(0);
    for _ in 0..3 {
        assert_eq!(
            get_user(&cache, &queries, 7).await,
            Ok(Some("user 7".into()))
        );
    }
    assert_eq!(queries.load(Ordering::SeqCst), 3, "every call ran its body");
    // Concurrent calls of one key each run theirs too (no single-flight).
    let (a, b) = tokio::join!(get_user(&cache, &queries, 8), get_user(&cache, &queries, 8));
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Some("user 8".into()), Some("user 8".into()))
    );
    assert_eq!(queries.load(Ordering::SeqCst), 5);
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.loads, stats.l1_hits, stats.l2_hits),
        (5, 5, 0, 0)
    );
    rename_user(&cache, 7).await.unwrap();
    cache.invalidate_tag("org:1").await.unwrap();
    cache
        .set(
            "user:9",
            &"stored nowhere".to_owned(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(cache.get::<String>("user:9").await, None);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.client())
        .unwrap();
    assert!(keys.is_empty(), "nothing reached Redis: {keys:?}");
}

#[tokio::test]
async fn a_test_clock_moves_expiry_without_sleeping() {
    let clock = TestClock::new();
    let cache = Cache::builder().test_clock(&clock).build().await.unwrap();
    let queries = AtomicU64::new(0);
    get_user(&cache, &queries, 1).await.unwrap();
    clock.advance(Duration::from_secs(299));
    get_user(&cache, &queries, 1).await.unwrap();
    assert_eq!(queries.load(Ordering::SeqCst), 1, "fresh for 300 s");
    clock.advance(Duration::from_secs(2));
    get_user(&cache, &queries, 1).await.unwrap();
    assert_eq!(queries.load(Ordering::SeqCst), 2, "expired at 301 s");
    assert_eq!(clock.advanced(), Duration::from_secs(301));
}

/// Without Redis there is no other instance whose write could go unseen,
/// so `l1_max_ttl` (60 s by default) does not shorten an entry's life: the
/// TTL alone decides, and an entry is not reloaded once a minute.
#[tokio::test]
async fn without_redis_an_entry_outlives_l1_max_ttl() {
    let clock = TestClock::new();
    let cache = Cache::builder().test_clock(&clock).build().await.unwrap();
    let queries = AtomicU64::new(0);
    get_user(&cache, &queries, 1).await.unwrap();
    clock.advance(Duration::from_secs(90));
    get_user(&cache, &queries, 1).await.unwrap();
    assert_eq!(queries.load(Ordering::SeqCst), 1, "fresh for 300 s");
    let stats = cache.stats();
    assert_eq!((stats.l1_hits, stats.misses), (1, 1), "{stats:?}");
}

/// With Redis, `l1_max_ttl` still bounds how long another instance's write
/// can go unseen if its invalidation is lost: past the cap the L1 copy is
/// gone and the entry is read from Redis again.
#[tokio::test]
async fn with_redis_l1_max_ttl_still_caps_the_l1_copy() {
    let server = RedisServer::start();
    let clock = TestClock::new();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("capped")
        .test_clock(&clock)
        .build()
        .await
        .unwrap();
    let queries = AtomicU64::new(0);
    get_user(&cache, &queries, 1).await.unwrap();
    // The load's write to Redis runs in the background, after the call.
    cache.settled().await;
    assert!(
        server.time_to_live("capped:user:1").is_some(),
        "the load wrote the entry to Redis"
    );
    clock.advance(Duration::from_secs(61));
    get_user(&cache, &queries, 1).await.unwrap();
    assert_eq!(queries.load(Ordering::SeqCst), 1, "Redis served it");
    let stats = cache.stats();
    assert_eq!(
        (stats.l1_hits, stats.l2_hits, stats.misses),
        (0, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_test_clock_ages_what_the_cache_reads_from_redis() {
    let server = RedisServer::start();
    let clock = TestClock::new();
    let build = |clock: Option<&TestClock>| {
        let builder = Cache::builder()
            .redis_url(server.url())
            .namespace("clocked");
        let builder = match clock {
            Some(clock) => builder.test_clock(clock),
            None => builder,
        };
        builder.build()
    };
    let writer = build(None).await.unwrap();
    let reader = build(Some(&clock)).await.unwrap();
    let queries = AtomicU64::new(0);
    get_user(&writer, &queries, 1).await.unwrap();
    assert!(
        cache_test_support::eventually(Duration::from_secs(10), async || {
            reader.get::<Option<String>>("user:1").await.is_some()
                || reader.get::<String>("user:1").await.is_some()
        })
        .await,
        "the reader finds the writer's entry in Redis"
    );
    reader.clear_local();
    clock.advance(Duration::from_secs(301));
    get_user(&reader, &queries, 1).await.unwrap();
    assert_eq!(
        queries.load(Ordering::SeqCst),
        2,
        "Redis's entry looks expired to the reader"
    );
}

/// No `set_global` in this test binary: a function without `cache = ...`
/// falls back to an in-process default, and says so once, naming itself.
#[cached(key = "report:<id>", ttl = 60)]
async fn load_report(id: u64) -> Option<String> {
    Some(format!("report {id}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_function_without_a_global_cache_warns_once_naming_itself() {
    let logs = CapturedLogs::start(tracing::Level::WARN);
    assert_eq!(load_report(1).await, Some("report 1".into()));
    assert_eq!(load_report(2).await, Some("report 2".into()));
    let text = logs.text();
    assert!(
        text.contains("`load_report` uses the global cache, but none was set"),
        "{text}"
    );
    assert!(text.contains("Cache::set_global"), "{text}");
    assert_eq!(
        text.matches("uses the global cache").count(),
        1,
        "once: {text}"
    );
}
