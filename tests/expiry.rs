//! One expiry for both tiers, against a real redis-server: an entry loaded
//! with a TTL leaves L1 and Redis at the same moment (within a tolerance for
//! a loaded machine), on the instance that loaded it and on one that read it
//! from Redis; with jitter, both tiers keep the same jittered TTL; and
//! `l1_max_ttl` shortens the L1 copy only, never the entry in Redis.
//!
//! Each test watches the L1 copy by calling the function every few
//! milliseconds: a call that is no L1 hit any more marks the L1 expiry, and
//! what served it (Redis, or the body) tells whether Redis still held the
//! key then. Redis' expiry is read from `PTTL` after the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, Stored, eventually};

/// How far apart two expiries may be and still count as one moment: the
/// polling period, a scheduling delay on a loaded machine, and the time
/// between the L1 insert and the Redis write of one load.
const TOLERANCE: Duration = Duration::from_millis(300);

#[cached(key = "exact:<id>", ttl = 2, cache = cache, skip(cache, loads))]
async fn exact(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

#[cached(key = "jittered:<id>", ttl = 2, jitter = 0.6, cache = cache, skip(cache, loads))]
async fn jittered(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

#[cached(key = "long:<id>", ttl = 3, cache = cache, skip(cache, loads))]
async fn long(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

async fn cache(server: &RedisServer, namespace: &str, l1_max_ttl: Duration) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .l1_max_ttl(l1_max_ttl)
        .build()
        .await
        .unwrap()
}

/// When Redis drops `key`: now plus its `PTTL`, once it holds the key
/// (the write of a load may land after the call returned).
async fn redis_expiry(server: &RedisServer, key: &str) -> Instant {
    let written = eventually(Duration::from_secs(5), async || {
        server.time_to_live(key).is_some()
    })
    .await;
    assert!(written, "{key} was written to Redis");
    let now = Instant::now();
    now + server.time_to_live(key).expect("no expiry yet")
}

/// What served the first call after the L1 copy expired.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Served {
    /// Redis still held the key.
    Redis,
    /// Neither tier did: the body ran.
    Body,
}

/// One L1 copy being watched: its cache and the call that reads it.
struct Watched<'a> {
    name: String,
    cache: &'a Cache,
    call: Box<dyn FnMut() -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>> + 'a>,
}

/// Calls each watched function every few milliseconds until its L1 copy
/// expires; returns, for each, when that was and what served that call.
async fn l1_expiries(mut watched: Vec<Watched<'_>>, limit: Duration) -> Vec<(Instant, Served)> {
    let deadline = Instant::now() + limit;
    let mut expired: Vec<Option<(Instant, Served)>> = watched.iter().map(|_| None).collect();
    while expired.iter().any(Option::is_none) {
        for (watched, expired) in watched.iter_mut().zip(&mut expired) {
            if expired.is_some() {
                continue;
            }
            let before = watched.cache.stats();
            (watched.call)().await;
            let after = watched.cache.stats();
            if after.l1_hits > before.l1_hits {
                continue;
            }
            let served = match (after.l2_hits > before.l2_hits, after.loads > before.loads) {
                (true, false) => Served::Redis,
                (false, true) => Served::Body,
                _ => panic!("{}: neither an L2 hit nor a load: {after:?}", watched.name),
            };
            *expired = Some((Instant::now(), served));
        }
        assert!(
            Instant::now() < deadline,
            "an L1 copy outlived {limit:?}: {:?}",
            watched.iter().map(|w| &w.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    expired.into_iter().flatten().collect()
}

/// How much earlier than Redis' an L1 expiry may come: the clocks' grain
/// (L1 reads a coarse monotonic clock, the envelope whole milliseconds).
const GRAIN: Duration = Duration::from_millis(50);

/// Asserts the L1 copy `what` did not expire before Redis' (beyond the
/// clocks' grain): a call Redis served after it must come when Redis was
/// about to drop the key too.
fn assert_not_before_redis(what: &str, l1: Instant, served: Served, redis: Instant) {
    if served == Served::Redis {
        assert!(
            redis.saturating_duration_since(l1) <= GRAIN,
            "{what}: L1 expired {} ms before Redis",
            apart(redis, l1)
        );
    }
}

/// `a - b` as signed milliseconds, for messages.
fn apart(a: Instant, b: Instant) -> i128 {
    if a >= b {
        (a - b).as_millis() as i128
    } else {
        -((b - a).as_millis() as i128)
    }
}

/// Asserts the L1 copy `what` expired at `expected` (within the tolerance).
fn assert_expired_at(what: &str, l1: Instant, expected: Instant, reference: &str) {
    assert!(
        l1.max(expected) - l1.min(expected) <= TOLERANCE,
        "{what}: L1 expired {} ms after {reference}",
        apart(l1, expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_and_redis_expire_together_on_every_instance() {
    let server = RedisServer::start();
    let (loader, reader) = (
        cache(&server, "exp", Duration::from_secs(60)).await,
        cache(&server, "exp", Duration::from_secs(60)).await,
    );
    let loads = AtomicU64::new(0);
    exact(&loader, &loads, 1).await;
    let redis = redis_expiry(&server, "exp:exact:1").await;
    let Stored::Entry(entry) = server.stored("exp:exact:1") else {
        panic!("{:?}", server.stored("exp:exact:1"));
    };
    assert_eq!(entry.fresh, Duration::from_secs(2), "the TTL, unjittered");
    // The other instance reads it from Redis a little later: its L1 copy
    // lives only as long as the entry has left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let l2_hits = reader.stats().l2_hits;
    exact(&reader, &loads, 1).await;
    assert_eq!(reader.stats().l2_hits, l2_hits + 1);

    let loads = &loads;
    let expiries = l1_expiries(
        vec![
            Watched {
                name: "the loader's copy".into(),
                cache: &loader,
                call: Box::new(|| {
                    Box::pin(async {
                        exact(&loader, loads, 1).await;
                    })
                }),
            },
            Watched {
                name: "the reader's copy".into(),
                cache: &reader,
                call: Box::new(|| {
                    Box::pin(async {
                        exact(&reader, loads, 1).await;
                    })
                }),
            },
        ],
        Duration::from_secs(5),
    )
    .await;
    let [(loader_l1, loader_served), (reader_l1, _)] = expiries[..] else {
        unreachable!()
    };
    assert_expired_at("the loader", loader_l1, redis, "Redis");
    assert_expired_at("the reader", reader_l1, redis, "Redis");
    // (The reader's next call may find the loader's reload in Redis.)
    assert_not_before_redis("the loader", loader_l1, loader_served, redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jittered_ttl_is_the_same_in_both_tiers() {
    let server = RedisServer::start();
    let cache = cache(&server, "jit", Duration::from_secs(60)).await;
    let loads = AtomicU64::new(0);
    // Four keys: each draws its own TTL from 2 s ± 60 %; an L1 that kept
    // the TTL before jitter (or drew its own) would miss most of them.
    let ids = [1_u64, 2, 3, 4];
    let mut redis = Vec::new();
    for id in ids {
        jittered(&cache, &loads, id).await;
        let key = format!("jit:jittered:{id}");
        redis.push(redis_expiry(&server, &key).await);
        let Stored::Entry(entry) = server.stored(&key) else {
            panic!("{:?}", server.stored(&key));
        };
        let left = server.time_to_live(&key).expect("held");
        assert!(
            entry.fresh >= left && entry.fresh - left <= TOLERANCE,
            "Redis' TTL ({left:?} left) is the envelope's ({:?})",
            entry.fresh
        );
    }
    let spread = redis
        .iter()
        .max()
        .unwrap()
        .duration_since(*redis.iter().min().unwrap());
    assert!(
        spread > Duration::from_millis(50),
        "jitter was applied: {spread:?}"
    );

    let loads = &loads;
    let cache = &cache;
    let watched = ids
        .iter()
        .map(|&id| Watched {
            name: format!("jittered:{id}"),
            cache,
            call: Box::new(move || {
                Box::pin(async move {
                    jittered(cache, loads, id).await;
                })
            }),
        })
        .collect();
    let expiries = l1_expiries(watched, Duration::from_secs(6)).await;
    for ((id, (l1, served)), redis) in ids.iter().zip(expiries).zip(redis) {
        assert_expired_at(&format!("jittered:{id}"), l1, redis, "Redis");
        assert_not_before_redis(&format!("jittered:{id}"), l1, served, redis);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_max_ttl_shortens_the_l1_copy_only() {
    let server = RedisServer::start();
    let l1_max_ttl = Duration::from_secs(1);
    let cache = cache(&server, "cap", l1_max_ttl).await;
    let loads = AtomicU64::new(0);
    let loaded = Instant::now();
    long(&cache, &loads, 1).await;
    let redis = redis_expiry(&server, "cap:long:1").await;
    let Stored::Entry(entry) = server.stored("cap:long:1") else {
        panic!("{:?}", server.stored("cap:long:1"));
    };
    assert_eq!(
        entry.fresh,
        Duration::from_secs(3),
        "Redis keeps the whole TTL"
    );
    assert!(
        redis.duration_since(loaded) + TOLERANCE >= Duration::from_secs(3),
        "Redis keeps the whole TTL: {:?}",
        redis.duration_since(loaded)
    );

    // The L1 copy goes after l1_max_ttl; Redis still serves the entry.
    let cache = &cache;
    let loads = &loads;
    let watch = || Watched {
        name: "long:1".into(),
        cache,
        call: Box::new(|| {
            Box::pin(async {
                long(cache, loads, 1).await;
            })
        }),
    };
    let [(first, served)] = l1_expiries(vec![watch()], Duration::from_secs(5)).await[..] else {
        unreachable!()
    };
    assert_expired_at("the capped copy", first, loaded + l1_max_ttl, "l1_max_ttl");
    assert_eq!(served, Served::Redis, "Redis still holds the entry");
    // Copies read from Redis are capped too, and none outlives the entry:
    // the first call the body serves comes when Redis drops the key.
    let mut last = first;
    loop {
        let [(expired, served)] = l1_expiries(vec![watch()], Duration::from_secs(5)).await[..]
        else {
            unreachable!()
        };
        assert!(
            expired.duration_since(last) <= l1_max_ttl + TOLERANCE,
            "a copy outlived l1_max_ttl: {:?}",
            expired.duration_since(last)
        );
        last = expired;
        if served == Served::Body {
            assert_expired_at("the last copy", expired, redis, "Redis");
            break;
        }
        assert!(
            expired < redis + TOLERANCE,
            "Redis served the entry {} ms after its expiry",
            apart(expired, redis)
        );
    }
}
