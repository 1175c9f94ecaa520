//! `ttl`, `negative` and `stale` written as expressions: a constant, a
//! `Duration`, a value from configuration. Each is evaluated once, on the
//! function's first call, and checked then; one out of range is logged and
//! turns that option off (for `ttl`, the cache for that function), never a
//! panic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, TestClock, cached, write_through};
use cache_test_support::{CapturedLogs, RedisServer};

const USER_TTL_SECS: u64 = 120;
const NOT_FOUND: Duration = Duration::from_secs(30);

mod config {
    use std::time::Duration;

    pub const STALE: Duration = Duration::from_secs(600);
}

/// An in-process cache whose expiry the test moves by hand.
async fn clocked(clock: &TestClock) -> Cache {
    Cache::builder().test_clock(clock).build().await.unwrap()
}

#[cached(key = "user:<id>", ttl = USER_TTL_SECS, cache = cache, skip(cache, queries))]
async fn get_user(cache: &Cache, queries: &AtomicU64, id: u64) -> Option<String> {
    queries.fetch_add(1, Ordering::SeqCst);
    Some(format!("user {id}"))
}

/// `None` for odd ids.
#[cached(key = "org:<id>", ttl = Duration::from_secs(2 * 60), negative = NOT_FOUND, cache = cache, skip(cache, queries))]
async fn find_org(cache: &Cache, queries: &AtomicU64, id: u64) -> Option<String> {
    queries.fetch_add(1, Ordering::SeqCst);
    id.is_multiple_of(2).then(|| format!("org {id}"))
}

#[tokio::test]
async fn a_constant_and_duration_expressions_set_the_lifetimes() {
    let clock = TestClock::new();
    let cache = clocked(&clock).await;
    let (users, orgs) = (AtomicU64::new(0), AtomicU64::new(0));
    let loads = || (users.load(Ordering::SeqCst), orgs.load(Ordering::SeqCst));
    let read_values = async || {
        get_user(&cache, &users, 1).await.unwrap();
        find_org(&cache, &orgs, 2).await.unwrap();
    };
    let read = async || {
        read_values().await;
        assert_eq!(find_org(&cache, &orgs, 3).await, None);
    };
    read().await;
    clock.advance(Duration::from_secs(29));
    read().await;
    assert_eq!(loads(), (1, 2), "all cached at 29 s");
    clock.advance(Duration::from_secs(2));
    read().await;
    assert_eq!(
        loads(),
        (1, 3),
        "the `None` expired at 31 s (`negative = NOT_FOUND`), nothing else"
    );
    clock.advance(Duration::from_secs(88));
    read_values().await;
    assert_eq!(loads(), (1, 3), "fresh at 119 s");
    clock.advance(Duration::from_secs(2));
    read_values().await;
    assert_eq!(
        loads(),
        (2, 4),
        "both expired at 121 s: `ttl = USER_TTL_SECS` and `Duration::from_secs(2 * 60)`"
    );
}

/// Seconds from "configuration", and how often it was read.
static CONFIGURED_TTL: AtomicU64 = AtomicU64::new(60);
static CONFIGURATION_READS: AtomicU64 = AtomicU64::new(0);

fn report_ttl() -> u64 {
    CONFIGURATION_READS.fetch_add(1, Ordering::SeqCst);
    CONFIGURED_TTL.load(Ordering::SeqCst)
}

#[cached(key = "report:<id>", ttl = report_ttl(), cache = cache, skip(cache, queries))]
async fn get_report(cache: &Cache, queries: &AtomicU64, id: u64) -> String {
    queries.fetch_add(1, Ordering::SeqCst);
    format!("report {id}")
}

#[tokio::test]
async fn a_value_from_configuration_is_read_once_on_the_first_call() {
    let clock = TestClock::new();
    let cache = clocked(&clock).await;
    let queries = AtomicU64::new(0);
    assert_eq!(CONFIGURATION_READS.load(Ordering::SeqCst), 0, "not before");
    for id in [1, 2, 1, 2] {
        get_report(&cache, &queries, id).await;
    }
    assert_eq!(CONFIGURATION_READS.load(Ordering::SeqCst), 1);
    // A later change is not seen: the site was made with 60 s.
    CONFIGURED_TTL.store(1, Ordering::SeqCst);
    clock.advance(Duration::from_secs(59));
    get_report(&cache, &queries, 1).await;
    assert_eq!(queries.load(Ordering::SeqCst), 2, "fresh at 59 s");
    clock.advance(Duration::from_secs(2));
    get_report(&cache, &queries, 1).await;
    assert_eq!(queries.load(Ordering::SeqCst), 3, "expired at 61 s");
    assert_eq!(CONFIGURATION_READS.load(Ordering::SeqCst), 1);
}

#[cached(key = "quote:<id>", ttl = 60, stale = config::STALE, cache = cache, skip(cache, database_down))]
async fn get_quote(
    cache: &Cache,
    database_down: &Arc<AtomicBool>,
    id: u64,
) -> Result<String, String> {
    if database_down.load(Ordering::SeqCst) {
        return Err("the database is down".into());
    }
    Ok(format!("quote {id}"))
}

#[tokio::test]
async fn a_stale_window_from_a_path_serves_the_last_value_when_the_body_fails() {
    let clock = TestClock::new();
    let cache = clocked(&clock).await;
    let database_down = Arc::new(AtomicBool::new(false));
    assert_eq!(
        get_quote(&cache, &database_down, 1).await.unwrap(),
        "quote 1"
    );
    database_down.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        get_quote(&cache, &database_down, 1).await,
        Ok("quote 1".into()),
        "within `stale = config::STALE` past the TTL: the last good value"
    );
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        get_quote(&cache, &database_down, 1).await,
        Err("the database is down".into()),
        "past the window: nothing to fall back on"
    );
}

/// A configuration mistake: a zero TTL, a `negative` under a millisecond.
fn misconfigured_ttl() -> Duration {
    Duration::ZERO
}

/// The source of truth for the profile functions.
static PROFILES: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);

fn profile_in_database(id: u64) -> Option<String> {
    PROFILES.lock().unwrap().as_ref()?.get(&id).cloned()
}

#[cached(key = "profile:<id>", ttl = 300, cache = cache, skip(cache, queries))]
async fn get_profile(cache: &Cache, queries: &AtomicU64, id: u64) -> Option<String> {
    queries.fetch_add(1, Ordering::SeqCst);
    profile_in_database(id)
}

#[write_through(key = "profile:<id>", ttl = misconfigured_ttl(), cache = cache, )]
async fn save_profile(cache: &Cache, id: u64, profile: String) -> Result<String, String> {
    PROFILES
        .lock()
        .unwrap()
        .get_or_insert_default()
        .insert(id, profile.clone());
    Ok(profile)
}

#[cached(key = "score:<id>", ttl = misconfigured_ttl(), cache = cache, skip(cache, queries))]
async fn get_score(cache: &Cache, queries: &AtomicU64, id: u64) -> u64 {
    queries.fetch_add(1, Ordering::SeqCst);
    id * 10
}

#[cached(key = "badge:<id>", ttl = 300, negative = Duration::from_micros(10), cache = cache, skip(cache, queries))]
async fn find_badge(cache: &Cache, queries: &AtomicU64, id: u64) -> Option<String> {
    queries.fetch_add(1, Ordering::SeqCst);
    let _ = id;
    None
}

#[tokio::test(flavor = "current_thread")]
async fn an_out_of_range_lifetime_is_logged_once_and_turns_its_option_off() {
    let logs = CapturedLogs::start(tracing::Level::ERROR);
    let server = RedisServer::start();
    let connect = async || {
        Cache::builder()
            .redis_url(server.url())
            .namespace("lifetimes")
            .build()
            .await
            .unwrap()
    };
    let (first, second) = (connect().await, connect().await);
    let queries = AtomicU64::new(0);

    // `ttl` out of range: every call runs its body, nothing reaches Redis.
    for _ in 0..3 {
        assert_eq!(get_score(&first, &queries, 4).await, 40);
    }
    assert_eq!(queries.load(Ordering::SeqCst), 3);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("lifetimes:score:*")
        .query(&mut server.client())
        .unwrap();
    assert!(keys.is_empty(), "nothing stored: {keys:?}");

    // A write whose `ttl` is out of range stores nothing, but the value it
    // replaced does not stay: other instances load the new one.
    save_profile(&first, 1, "ada".into()).await.unwrap();
    let queries = AtomicU64::new(0);
    assert_eq!(
        get_profile(&first, &queries, 1).await.as_deref(),
        Some("ada")
    );
    // Now in the second instance's L1 (and maybe in Redis).
    assert_eq!(
        get_profile(&second, &queries, 1).await.as_deref(),
        Some("ada")
    );
    save_profile(&first, 1, "grace".into()).await.unwrap();
    assert!(
        cache_test_support::eventually(Duration::from_secs(10), async || {
            get_profile(&second, &queries, 1).await.as_deref() == Some("grace")
        })
        .await,
        "the other instance stops serving the replaced value"
    );
    assert_eq!(
        get_profile(&first, &queries, 1).await.as_deref(),
        Some("grace")
    );

    // `negative` out of range: `None` is not cached; values still are.
    let queries = AtomicU64::new(0);
    for _ in 0..2 {
        assert_eq!(find_badge(&first, &queries, 1).await, None);
    }
    assert_eq!(queries.load(Ordering::SeqCst), 2);

    let text = logs.text();
    for (function, option, effect) in [
        ("get_score", "ttl", "the function runs without the cache"),
        ("save_profile", "ttl", "the function runs without the cache"),
        ("find_badge", "negative", "`None` is not cached"),
    ] {
        let message = format!(
            "`{option}` of `{function}` must be at least 1 ms and at most 10 years: {effect}"
        );
        assert_eq!(text.matches(&message).count(), 1, "once: {message}\n{text}");
    }
}
