//! `#[cached]` against a real redis-server: hits, misses, loads, TTLs,
//! negative caching, errors, key escaping, undecodable bytes, two instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, Stored};
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

async fn cache_on(server: &RedisServer, namespace: &str) -> Cache {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .build()
        .await
        .expect("valid configuration");
    assert!(
        cache.is_l2_connected(),
        "build waits for the first connection"
    );
    cache
}

#[cached(key = "user:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn get_user(cache: &Cache, calls: &AtomicU64, id: u64) -> User {
    calls.fetch_add(1, Ordering::SeqCst);
    user(id)
}

#[tokio::test]
async fn counts_l1_hits_l2_hits_misses_and_loads() {
    let server = RedisServer::start();
    let calls = AtomicU64::new(0);
    let first = cache_on(&server, "counts").await;

    assert_eq!(get_user(&first, &calls, 1).await, user(1));
    let stats = first.stats();
    assert_eq!((stats.misses, stats.loads, stats.hits), (1, 1, 0));

    assert_eq!(get_user(&first, &calls, 1).await, user(1));
    let stats = first.stats();
    assert_eq!((stats.l1_hits, stats.l2_hits, stats.loads), (1, 0, 1));

    // A second instance shares L2: its first call is an L2 hit, then L1.
    // (The value reaches Redis in the background, right after the call.)
    first.settled().await;
    let second = cache_on(&server, "counts").await;
    assert_eq!(get_user(&second, &calls, 1).await, user(1));
    assert_eq!(get_user(&second, &calls, 1).await, user(1));
    let stats = second.stats();
    assert_eq!(
        (stats.l2_hits, stats.l1_hits, stats.loads, stats.misses),
        (1, 1, 0, 0)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the body ran once in all");

    // The stored key is exactly `<namespace>:<rendered template>`.
    let mut redis = server.client();
    let keys: Vec<String> = redis.keys("*").unwrap();
    assert_eq!(keys, vec!["counts:user:1".to_string()]);
}

#[cached(key = "plain:<id>", ttl = 60, cache = cache, skip(cache, calls), l1 = false)]
async fn get_user_without_l1(cache: &Cache, calls: &AtomicU64, id: u64) -> User {
    calls.fetch_add(1, Ordering::SeqCst);
    user(id)
}

#[tokio::test]
async fn l1_false_reads_redis_every_time() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "nol1").await;
    let calls = AtomicU64::new(0);
    for _ in 0..3 {
        assert_eq!(get_user_without_l1(&cache, &calls, 5).await, user(5));
        // Written in the background, right after the call.
        cache.settled().await;
    }
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.l2_hits, stats.l1_hits), (1, 2, 0));
    assert_eq!(stats.l1_entries, 0);
}

#[cached(key = "short:<id>", ttl = 1, cache = cache, skip(cache, calls))]
async fn short_lived(cache: &Cache, calls: &AtomicU64, id: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst) + id
}

#[tokio::test]
async fn values_expire_after_their_ttl_in_both_tiers() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "ttl").await;
    let calls = AtomicU64::new(0);
    short_lived(&cache, &calls, 1).await;
    cache.settled().await;
    let pttl: i64 = server.client().pttl("ttl:short:1").unwrap();
    assert!((900..=1000).contains(&pttl), "PTTL {pttl}");
    short_lived(&cache, &calls, 1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    short_lived(&cache, &calls, 1).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "expired in L1 and L2, so loaded again"
    );
    assert_eq!(cache.stats().l2_hits, 0);
}

#[cached(key = "jitter:<id>", ttl = 100, jitter = 0.2, cache = cache, skip(cache))]
async fn jittered(cache: &Cache, id: u64) -> u64 {
    id
}

#[tokio::test]
async fn jitter_spreads_the_ttls_of_keys_written_together() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "jit").await;
    for id in 0..60 {
        jittered(&cache, id).await;
    }
    cache.settled().await;
    let mut redis = server.client();
    let ttls: Vec<i64> = (0..60)
        .map(|id| redis.pttl(format!("jit:jitter:{id}")).unwrap())
        .collect();
    let (min, max) = (*ttls.iter().min().unwrap(), *ttls.iter().max().unwrap());
    assert!(
        min >= 79_000 && max <= 120_000,
        "all within 100 s ± 20%: {min}..{max}"
    );
    assert!(
        max - min > 20_000,
        "spread over much of the ±20% band: {min}..{max}"
    );
    let distinct: std::collections::HashSet<i64> = ttls.iter().map(|t| t / 100).collect();
    assert!(distinct.len() > 40, "TTLs are drawn per write");
}

#[cached(key = "maybe:<id>", ttl = 60, negative = 1, cache = cache, skip(cache, calls))]
async fn find_user(cache: &Cache, calls: &AtomicU64, id: u64) -> Option<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    (id < 100).then(|| user(id))
}

#[cached(key = "maybe:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn find_user_no_negative(cache: &Cache, calls: &AtomicU64, id: u64) -> Option<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    (id < 100).then(|| user(id))
}

#[tokio::test]
async fn none_is_cached_for_the_negative_ttl_only() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "neg").await;
    let calls = AtomicU64::new(0);
    assert_eq!(find_user(&cache, &calls, 404).await, None);
    assert_eq!(find_user(&cache, &calls, 404).await, None);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second None came from the cache"
    );
    assert_eq!(cache.stats().negative_hits, 1);
    cache.settled().await;
    let pttl: i64 = server.client().pttl("neg:maybe:404").unwrap();
    assert!(
        (0..=1000).contains(&pttl),
        "negative TTL, not the value TTL: {pttl}"
    );

    // A second instance reads the negative entry from Redis.
    let other = cache_on(&server, "neg").await;
    assert_eq!(find_user(&other, &calls, 404).await, None);
    assert_eq!(other.stats().l2_hits, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(find_user(&cache, &calls, 404).await, None);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "negative entry expired");

    // Without `negative`, None is not stored.
    let calls = AtomicU64::new(0);
    assert_eq!(find_user_no_negative(&cache, &calls, 500).await, None);
    assert_eq!(find_user_no_negative(&cache, &calls, 500).await, None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.settled().await;
    assert!(!server.client().exists::<_, bool>("neg:maybe:500").unwrap());
}

#[derive(Debug, PartialEq)]
struct DbError;

#[cached(key = "fallible:<id>", ttl = 60, negative = 60, cache = cache, skip(cache, calls, fail))]
async fn fallible(
    cache: &Cache,
    calls: &AtomicU64,
    fail: bool,
    id: u64,
) -> Result<Option<User>, DbError> {
    calls.fetch_add(1, Ordering::SeqCst);
    if fail {
        Err(DbError)
    } else {
        Ok(Some(user(id)))
    }
}

#[tokio::test]
async fn errors_are_returned_and_never_cached() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "err").await;
    let calls = AtomicU64::new(0);
    assert_eq!(fallible(&cache, &calls, true, 1).await, Err(DbError));
    assert_eq!(fallible(&cache, &calls, true, 1).await, Err(DbError));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.settled().await;
    assert!(!server.client().exists::<_, bool>("err:fallible:1").unwrap());
    assert_eq!(cache.stats().load_errors, 2);

    assert_eq!(fallible(&cache, &calls, false, 1).await, Ok(Some(user(1))));
    assert_eq!(
        fallible(&cache, &calls, true, 1).await,
        Ok(Some(user(1))),
        "now cached"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[cached(key = "name:<name>", ttl = 60, cache = cache, skip(cache))]
async fn by_name(cache: &Cache, name: &str) -> String {
    name.to_uppercase()
}

#[cached(key = "name:<first>:<second>", ttl = 60, cache = cache, skip(cache))]
async fn by_two_names(cache: &Cache, first: &str, second: &str) -> String {
    format!("{first}+{second}")
}

#[tokio::test]
async fn placeholder_values_are_escaped() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "esc").await;
    assert_eq!(by_name(&cache, "1:admin").await, "1:ADMIN");
    assert_eq!(by_name(&cache, "a b").await, "A B");
    assert_eq!(by_name(&cache, "*").await, "*");
    // `name:1:admin` of the two-part template must not read `1:admin` above.
    assert_eq!(by_two_names(&cache, "1", "admin").await, "1+admin");
    cache.settled().await;

    let mut redis = server.client();
    let mut keys: Vec<String> = redis.keys("esc:*").unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "esc:name:%2A",
            "esc:name:1%3Aadmin",
            "esc:name:1:admin",
            "esc:name:a%20b"
        ]
    );
    assert_eq!(cache.stats().loads, 4);
}

#[tokio::test]
async fn undecodable_bytes_are_a_miss_and_get_overwritten() {
    let server = RedisServer::start();
    let mut redis = server.client();
    let cache = cache_on(&server, "bad").await;
    let calls = AtomicU64::new(0);

    let garbage: Vec<Vec<u8>> = vec![
        b"not an envelope".to_vec(),
        vec![0xFF; 1000],
        Vec::new(),
        // Our magic and version, then a length field claiming 2^62 bytes.
        [
            b"cr\x01\x00".as_slice(),
            &[0xAA; 28],
            &[0xFF],
            &(1u64 << 62).to_le_bytes(),
        ]
        .concat(),
    ];
    for (id, bytes) in garbage.iter().enumerate() {
        let id = id as u64;
        let _: () = redis.set(format!("bad:user:{id}"), bytes).unwrap();
        assert_eq!(
            get_user(&cache, &calls, id).await,
            user(id),
            "garbage #{id} is a miss"
        );
        cache.settled().await;
        // Overwritten with a good value: a fresh instance reads it from L2.
        let fresh = cache_on(&server, "bad").await;
        assert_eq!(get_user(&fresh, &calls, id).await, user(id));
        assert_eq!(fresh.stats().l2_hits, 1, "garbage #{id} was overwritten");
    }
    assert_eq!(cache.stats().l2_undecodable, garbage.len() as u64);
    assert_eq!(calls.load(Ordering::SeqCst), garbage.len() as u64);
}

#[cached(key = "user:<id>", ttl = 60, cache = cache, skip(cache))]
async fn user_name_under_user_key(cache: &Cache, id: u64) -> String {
    format!("not a user {id}")
}

#[tokio::test]
async fn another_type_under_the_same_key_is_a_miss() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "types").await;
    let calls = AtomicU64::new(0);
    get_user(&cache, &calls, 9).await;
    cache.settled().await;
    let other = cache_on(&server, "types").await;
    assert_eq!(user_name_under_user_key(&other, 9).await, "not a user 9");
    assert_eq!(other.stats().l2_undecodable, 1);
    // And in L1 of the same instance: the typed entry does not match either.
    assert_eq!(user_name_under_user_key(&cache, 9).await, "not a user 9");
}

// Functions returning `User`, `Option<User>`, `Result<User, E>` and
// `Result<Option<User>, E>` under one key share entries.
#[cached(key = "shared:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn shared_plain(cache: &Cache, calls: &AtomicU64, id: u64) -> User {
    calls.fetch_add(1, Ordering::SeqCst);
    user(id)
}

#[cached(key = "shared:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn shared_option(cache: &Cache, calls: &AtomicU64, id: u64) -> Option<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    None
}

#[cached(key = "shared:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn shared_io_result(cache: &Cache, calls: &AtomicU64, id: u64) -> std::io::Result<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(std::io::Error::other("not reached"))
}

#[cached(key = "shared:<id>", ttl = 60, cache = cache, skip(cache, calls))]
async fn shared_result_option(
    cache: &Cache,
    calls: &AtomicU64,
    id: u64,
) -> Result<Option<User>, DbError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(DbError)
}

#[tokio::test]
async fn return_shapes_share_entries() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "shapes").await;
    let calls = AtomicU64::new(0);
    assert_eq!(shared_plain(&cache, &calls, 3).await, user(3));
    assert_eq!(shared_option(&cache, &calls, 3).await, Some(user(3)));
    assert_eq!(shared_io_result(&cache, &calls, 3).await.unwrap(), user(3));
    assert_eq!(
        shared_result_option(&cache, &calls, 3).await,
        Ok(Some(user(3)))
    );
    cache.settled().await;
    let other = cache_on(&server, "shapes").await;
    assert_eq!(
        shared_result_option(&other, &calls, 3).await,
        Ok(Some(user(3)))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

struct UserRepo {
    cache: Cache,
    calls: AtomicU64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
struct Org {
    id: u32,
    owner: Owner,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
struct Owner {
    id: u64,
}

impl UserRepo {
    #[cached(key = "org:<org>:user:<id>", ttl = 60, cache = self.cache)]
    async fn find(&self, org: u32, id: u64) -> Option<User> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Some(user(id + u64::from(org)))
    }

    #[cached(key = "owner:<org.owner.id>", ttl = 60, cache = self.cache)]
    async fn owner_of(&self, org: &Org) -> User {
        self.calls.fetch_add(1, Ordering::SeqCst);
        user(org.owner.id)
    }
}

#[cached(key = "generic:<id>", ttl = 60, cache = cache, skip(cache))]
async fn generic<K: std::fmt::Display + Send + Sync>(cache: &Cache, id: K) -> String {
    format!("<{id}>")
}

#[tokio::test]
async fn methods_field_paths_and_generics() {
    let server = RedisServer::start();
    let repo = UserRepo {
        cache: cache_on(&server, "repo").await,
        calls: AtomicU64::new(0),
    };
    assert_eq!(repo.find(1, 2).await, Some(user(3)));
    assert_eq!(repo.find(1, 2).await, Some(user(3)));
    let org = Org {
        id: 1,
        owner: Owner { id: 77 },
    };
    assert_eq!(repo.owner_of(&org).await, user(77));
    assert_eq!(repo.owner_of(&org).await, user(77));
    assert_eq!(repo.calls.load(Ordering::SeqCst), 2);

    assert_eq!(generic(&repo.cache, 5u8).await, "<5>");
    assert_eq!(
        generic(&repo.cache, "5").await,
        "<5>",
        "same rendered key, same entry"
    );
    repo.cache.settled().await;
    let mut redis = server.client();
    let mut keys: Vec<String> = redis.keys("repo:*").unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec!["repo:generic:5", "repo:org:1:user:2", "repo:owner:77"]
    );
}

#[tokio::test]
async fn invalidate_drops_both_tiers() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "inv").await;
    let calls = AtomicU64::new(0);
    get_user(&cache, &calls, 1).await;
    cache.settled().await;
    cache.invalidate("user:1").await.unwrap();
    // Redis holds a tombstone now (see tests/invalidation.rs): a fresh
    // instance finds no value there.
    assert_eq!(server.stored("inv:user:1"), Stored::Tombstone);
    let fresh = cache_on(&server, "inv").await;
    get_user(&fresh, &calls, 1).await;
    assert_eq!(
        (fresh.stats().l2_hits, calls.load(Ordering::SeqCst)),
        (0, 2)
    );
    fresh.settled().await;
    get_user(&cache, &calls, 1).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the reload was stored again"
    );
}

#[tokio::test]
async fn bad_configuration_is_an_error() {
    for builder in [
        Cache::builder().redis_url("definitely not a url"),
        Cache::builder().namespace("has space"),
        Cache::builder().default_jitter(1.5),
        Cache::builder().l2_timeout(Duration::ZERO),
    ] {
        let error = builder.build().await.unwrap_err();
        assert!(error.is_config(), "{error}");
    }
}
