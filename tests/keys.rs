//! Keys against a real redis-server: values can't forge a template's
//! separators (issue 12), long keys are shortened but stay apart, and two
//! templates that could render one key are reported.

use std::sync::atomic::{AtomicU64, Ordering};

use cache_runtime::{Cache, cached, escape_key_part};
use cache_test_support::{CapturedLogs, RedisServer};
use redis::Commands;

async fn cache_on(server: &RedisServer, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .build()
        .await
        .expect("valid configuration")
}

#[cached(key = "avatar:<user>", ttl = 60, cache = cache, skip(cache, loads))]
async fn avatar(cache: &Cache, loads: &AtomicU64, user: &str) -> String {
    loads.fetch_add(1, Ordering::SeqCst);
    format!("avatar of {user}")
}

#[cached(key = "avatar:<user>.thumb", ttl = 60, cache = cache, skip(cache, loads))]
async fn thumb(cache: &Cache, loads: &AtomicU64, user: &str) -> String {
    loads.fetch_add(1, Ordering::SeqCst);
    format!("thumbnail of {user}")
}

/// The same two templates without the in-process tier: every call reads
/// Redis.
#[cached(key = "avatar:<user>", ttl = 60, l1 = false, cache = cache, skip(cache, loads))]
async fn avatar_l2(cache: &Cache, loads: &AtomicU64, user: &str) -> String {
    loads.fetch_add(1, Ordering::SeqCst);
    format!("avatar of {user}")
}

#[cached(key = "avatar:<user>.thumb", ttl = 60, l1 = false, cache = cache, skip(cache, loads))]
async fn thumb_l2(cache: &Cache, loads: &AtomicU64, user: &str) -> String {
    loads.fetch_add(1, Ordering::SeqCst);
    format!("thumbnail of {user}")
}

fn sorted_keys(server: &RedisServer, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = server.client().keys(pattern).unwrap();
    keys.sort();
    keys
}

/// Issue 12: `.` was left unescaped, so `avatar("bob.thumb")` and
/// `thumb("bob")` rendered `avatar:bob.thumb` both, and whichever ran
/// second was served the other's value.
#[tokio::test]
async fn a_value_holding_a_separator_gets_its_own_key_and_value() {
    let server = RedisServer::start();
    let loads = AtomicU64::new(0);
    let first = cache_on(&server, "keys").await;

    assert_eq!(
        avatar(&first, &loads, "bob.thumb").await,
        "avatar of bob.thumb"
    );
    assert_eq!(thumb(&first, &loads, "bob").await, "thumbnail of bob");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "each ran its own body");
    // Loaded values reach Redis in the background, right after the call.
    first.settled().await;
    assert_eq!(
        sorted_keys(&server, "keys:*"),
        ["keys:avatar:bob%2Ethumb", "keys:avatar:bob.thumb"]
    );
    // What to pass to `invalidate` by hand.
    let rendered = format!("avatar:{}", escape_key_part("bob.thumb"));
    assert_eq!(rendered, "avatar:bob%2Ethumb");

    // Another instance reads both through Redis, each under its own key.
    let second = cache_on(&server, "keys").await;
    assert_eq!(thumb(&second, &loads, "bob").await, "thumbnail of bob");
    assert_eq!(
        avatar(&second, &loads, "bob.thumb").await,
        "avatar of bob.thumb"
    );
    let stats = second.stats();
    assert_eq!((stats.l2_hits, stats.loads), (2, 0), "{stats:?}");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_l1_each_call_reads_its_own_key_in_redis() {
    let server = RedisServer::start();
    let loads = AtomicU64::new(0);
    let cache = cache_on(&server, "keys-l2").await;

    // The reverse order: the thumbnail is stored first.
    assert_eq!(thumb_l2(&cache, &loads, "bob").await, "thumbnail of bob");
    assert_eq!(
        avatar_l2(&cache, &loads, "bob.thumb").await,
        "avatar of bob.thumb"
    );
    // Loaded values reach Redis in the background, right after the call.
    cache.settled().await;
    for _ in 0..2 {
        assert_eq!(thumb_l2(&cache, &loads, "bob").await, "thumbnail of bob");
        assert_eq!(
            avatar_l2(&cache, &loads, "bob.thumb").await,
            "avatar of bob.thumb"
        );
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().l2_hits, 4);
    assert_eq!(
        sorted_keys(&server, "keys-l2:*"),
        ["keys-l2:avatar:bob%2Ethumb", "keys-l2:avatar:bob.thumb"]
    );
}

#[cached(key = "doc:<body>", ttl = 60, cache = cache, skip(cache, loads))]
async fn by_body(cache: &Cache, loads: &AtomicU64, body: &str) -> usize {
    loads.fetch_add(1, Ordering::SeqCst);
    body.len()
}

/// A 2 MB argument becomes a key of 1024 bytes plus `#sha1:` and 40 hex
/// digits, not a 6 MB one; two such arguments that differ only at their end
/// keep their own entries.
#[tokio::test]
async fn long_keys_are_shortened_and_stay_apart() {
    let server = RedisServer::start();
    let loads = AtomicU64::new(0);
    let cache = cache_on(&server, "long").await;
    let body = ".".repeat(2 << 20);
    let other = format!("{}!", &body[1..]);

    assert_eq!(by_body(&cache, &loads, &body).await, body.len());
    assert_eq!(by_body(&cache, &loads, &other).await, other.len());
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    cache.settled().await;
    let keys = sorted_keys(&server, "long:*");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert_eq!(key.len(), "long:".len() + 1024 + "#sha1:".len() + 40);
        assert!(key.starts_with("long:doc:%2E%2E"), "{key}");
    }
    assert_ne!(keys[0], keys[1]);

    // Another instance renders the same shortened keys.
    let second = cache_on(&server, "long").await;
    assert_eq!(by_body(&second, &loads, &other).await, other.len());
    assert_eq!(by_body(&second, &loads, &body).await, body.len());
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(second.stats().l2_hits, 2);
}

#[cached(key = "profile:<id>", ttl = 60, cache = cache, skip(cache))]
async fn profile(cache: &Cache, id: &str) -> String {
    format!("profile {id}")
}

#[cached(key = "profile:me", ttl = 60, cache = cache, skip(cache))]
async fn my_profile(cache: &Cache) -> String {
    "my profile".to_owned()
}

/// `profile:<id>` with `id = "me"` renders `profile:me`, the key of
/// `my_profile`: the second to run logs an error naming both, once.
#[tokio::test]
async fn templates_that_could_render_one_key_are_reported_once() {
    let logs = CapturedLogs::start(tracing::Level::ERROR);

    let cache = Cache::builder().build().await.unwrap();
    assert_eq!(profile(&cache, "42").await, "profile 42");
    assert_eq!(my_profile(&cache).await, "my profile");
    assert_eq!(my_profile(&cache).await, "my profile");
    assert_eq!(profile(&cache, "7").await, "profile 7");

    let logs = logs.text();
    assert_eq!(logs.matches("can render the same key").count(), 1, "{logs}");
    assert!(
        logs.contains("key templates `profile:<id>` (fn profile) and `profile:me` (fn my_profile) can render the same key (`profile:me`)"),
        "{logs}"
    );
}
