//! Batch loads against real Redis: `Cache::get_many_or_load` (the engine
//! under `#[cached(..., batch(id in ids))]`, whose macro side
//! `batch_macro.rs` tests) and `Cache::get_many`. One read of Redis and one
//! body call per batch, single-flight per key across concurrent batches,
//! negative entries for ids the body did not return, entries shared with
//! single-key reads, bad bytes a miss.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, Options, escape_key_part};
use cache_test_support::{
    Gate, Proxy, RedisServer, TestRedis, eventually, on_every_topology, within,
};

const TTL: Duration = Duration::from_secs(300);

fn user_key(id: &u64) -> String {
    format!("user:{}", escape_key_part(&id.to_string()))
}

fn name(id: u64) -> String {
    format!("user {id}")
}

/// The ids each body call received, in call order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Vec<u64>>>>);

impl Calls {
    fn record(&self, ids: &[u64]) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        self.0.lock().unwrap().push(ids);
    }

    fn all(&self) -> Vec<Vec<u64>> {
        self.0.lock().unwrap().clone()
    }
}

/// A database of users whose ids are below `existing`, answering a batch
/// query, counting its calls.
fn users(
    calls: &Calls,
    existing: u64,
) -> impl FnOnce(Vec<u64>) -> std::future::Ready<Result<HashMap<u64, String>, String>> {
    let calls = calls.clone();
    move |ids| {
        calls.record(&ids);
        let found = ids
            .into_iter()
            .filter(|id| *id < existing)
            .map(|id| (id, name(id)));
        std::future::ready(Ok(found.collect()))
    }
}

fn options() -> Options {
    Options::ttl(TTL)
        .name("users")
        .negative(Duration::from_secs(60))
}

async fn instance(builder: cache_runtime::CacheBuilder, namespace: &str) -> Cache {
    builder.namespace(namespace).build().await.expect("cache")
}

/// The case: 100 ids, 30 of them in Redis (and not in this
/// instance's L1) are one `MGET` and one body call with the other 70.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_ids_with_thirty_cached_are_one_mget_and_one_body_call_with_seventy() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let writer = instance(Cache::builder().redis_url(server.url()), "batch").await;
    let calls = Calls::default();
    let cached: Vec<u64> = (0..100).filter(|id| id % 10 < 3).collect();
    assert_eq!(cached.len(), 30);
    let found = writer
        .get_many_or_load(cached.clone(), user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(found.len(), 30);
    assert!(
        eventually(Duration::from_secs(10), async || {
            cached
                .iter()
                .all(|id| server_has(&server, &format!("batch:{}", user_key(id))))
        })
        .await,
        "the first batch reached Redis"
    );

    let reader = instance(Cache::builder().redis_url(proxy.url()), "batch").await;
    let calls = Calls::default();
    proxy.clear_commands();
    let found = reader
        .get_many_or_load(0..100, user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(found.len(), 100);
    assert!(found.iter().all(|(id, user)| *user == name(*id)));
    let expected: Vec<u64> = (0..100).filter(|id| !cached.contains(id)).collect();
    assert_eq!(
        calls.all(),
        vec![expected],
        "one body call, the 70 missing ids"
    );
    let reads: Vec<String> = proxy
        .commands()
        .into_iter()
        .filter(|name| ["GET", "MGET", "EVAL", "EVALSHA"].contains(&name.as_str()))
        .collect();
    assert_eq!(reads.first().map(String::as_str), Some("MGET"), "{reads:?}");
    assert_eq!(
        reads.iter().filter(|name| *name == "MGET").count(),
        1,
        "one read of Redis: {reads:?}"
    );
    assert!(!reads.contains(&"GET".to_owned()), "{reads:?}");
    let stats = reader.stats();
    assert_eq!((stats.l2_hits, stats.loads), (30, 1));

    // The 70 loaded values follow in Redis; a third instance hits them all.
    assert!(
        eventually(Duration::from_secs(10), async || {
            (0..100).all(|id| server_has(&server, &format!("batch:{}", user_key(&id))))
        })
        .await,
        "the loaded values reached Redis"
    );
    let third = instance(Cache::builder().redis_url(server.url()), "batch").await;
    let calls = Calls::default();
    let found = third
        .get_many_or_load(0..100, user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(found.len(), 100);
    assert!(calls.all().is_empty(), "every id from Redis");
    // And this instance's L1 holds them: no Redis at all the next time.
    let calls = Calls::default();
    proxy.clear_commands();
    reader
        .get_many_or_load(0..100, user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert!(calls.all().is_empty());
    assert!(
        !proxy.commands().iter().any(|name| name.contains("GET")),
        "{:?}",
        proxy.commands()
    );
}

fn server_has(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<bool>(&mut server.client())
        .expect("EXISTS")
}

async fn ids_the_body_did_not_return_are_cached_as_not_found(redis: TestRedis) {
    let a = instance(redis.connect(Cache::builder()), "batch-negative").await;
    let b = instance(redis.connect(Cache::builder()), "batch-negative").await;
    let calls = Calls::default();
    // Users 0..5 exist; 5..8 do not.
    let found = a
        .get_many_or_load(0..8, user_key, &options(), users(&calls, 5))
        .await
        .unwrap();
    assert_eq!(
        found.keys().copied().collect::<BTreeSet<_>>(),
        (0..5).collect()
    );
    assert_eq!(a.stats().negative_hits, 0);
    // Not again on this instance (L1), nor on another (Redis).
    let again = a
        .get_many_or_load(0..8, user_key, &options(), users(&calls, 5))
        .await
        .unwrap();
    assert_eq!(again, found);
    assert_eq!(a.stats().negative_hits, 3);
    assert!(
        eventually(Duration::from_secs(10), async || {
            (0..8).all(|id| redis.exists(&format!("batch-negative:{}", user_key(&id))))
        })
        .await
    );
    let from_b = b
        .get_many_or_load(0..8, user_key, &options(), users(&calls, 5))
        .await
        .unwrap();
    assert_eq!(from_b, found);
    assert_eq!(
        calls.all(),
        vec![(0..8).collect::<Vec<_>>()],
        "one load in all"
    );

    // Without `negative`, an id the body did not return is loaded again.
    let plain = Options::ttl(TTL);
    let calls = Calls::default();
    for _ in 0..2 {
        let found = a
            .get_many_or_load(100..102, user_key, &plain, users(&calls, 101))
            .await
            .unwrap();
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), [100]);
    }
    assert_eq!(calls.all(), vec![vec![100, 101], vec![101]]);
}

async fn batch_entries_are_the_single_key_entries(redis: TestRedis) {
    let a = instance(redis.connect(Cache::builder()), "batch-shared").await;
    let b = instance(redis.connect(Cache::builder()), "batch-shared").await;
    let single = options();
    // A single-key load, then a batch on another instance reads it.
    let loaded: Result<Option<String>, String> = a
        .get_or_load_with(&user_key(&1), &single, || async { Ok(Some(name(1))) })
        .await;
    assert_eq!(loaded, Ok(Some(name(1))));
    let absent: Option<String> = a
        .get_or_load_with(&user_key(&2), &single, || async { None })
        .await;
    assert_eq!(absent, None);
    assert!(
        eventually(Duration::from_secs(10), async || {
            redis.exists(&format!("batch-shared:{}", user_key(&1)))
                && redis.exists(&format!("batch-shared:{}", user_key(&2)))
        })
        .await
    );
    let calls = Calls::default();
    let found = b
        .get_many_or_load([1, 2, 3], user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(
        found,
        HashMap::from([(1, name(1)), (3, name(3))]),
        "2 is cached as not found"
    );
    assert_eq!(calls.all(), vec![vec![3]]);
    // What the batch loaded, single-key reads find.
    assert!(
        eventually(Duration::from_secs(10), async || {
            a.get::<String>(&user_key(&3)).await == Some(name(3))
        })
        .await
    );
    let never: Option<String> = b
        .get_or_load_with(&user_key(&3), &single, || async { panic!("loaded again") })
        .await;
    assert_eq!(never, Some(name(3)));
}

async fn a_failed_body_returns_its_error_and_stores_nothing(redis: TestRedis) {
    let cache = instance(redis.connect(Cache::builder()), "batch-err").await;
    let failed: Result<HashMap<u64, String>, String> = cache
        .get_many_or_load([1, 2], user_key, &options(), |_ids| async {
            Err("database down".to_owned())
        })
        .await;
    assert_eq!(failed, Err("database down".to_owned()));
    assert_eq!(cache.stats().load_errors, 1);
    let calls = Calls::default();
    let found = cache
        .get_many_or_load([1, 2], user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(calls.all(), vec![vec![1, 2]], "nothing was stored");
}

async fn get_many_reads_redis_once_and_keeps_order(redis: TestRedis) {
    let a = instance(redis.connect(Cache::builder()), "batch-get").await;
    let b = instance(redis.connect(Cache::builder()), "batch-get").await;
    for id in [1, 3, 5] {
        a.set(&user_key(&id), &name(id), TTL).await;
    }
    let keys: Vec<String> = (0..7).map(|id| user_key(&id)).collect();
    let read: Vec<Option<String>> = b.get_many(&keys).await;
    let expected: Vec<Option<String>> = (0..7)
        .map(|id| (id % 2 == 1 && id < 6).then(|| name(id)))
        .collect();
    assert_eq!(read, expected);
    assert_eq!(b.stats().l2_hits, 3);
    // Then from L1 (once A's invalidation messages, which may arrive after
    // B's read and drop its copies, have come).
    assert!(
        eventually(Duration::from_secs(5), async || {
            let before = b.stats().l1_hits;
            b.get_many::<String>(&keys).await == expected && b.stats().l1_hits == before + 3
        })
        .await
    );
}

on_every_topology!(
    ids_the_body_did_not_return_are_cached_as_not_found,
    batch_entries_are_the_single_key_entries,
    a_failed_body_returns_its_error_and_stores_nothing,
    get_many_reads_redis_once_and_keeps_order,
);

/// Two concurrent batches over overlapping ids load each id once: the
/// second waits for the first's flights of the ids they share and loads
/// only its own. Requested in opposite orders, they still finish (flights
/// are joined in key order: no deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_concurrent_batches_load_each_id_once() {
    let server = RedisServer::start();
    let cache = instance(Cache::builder().redis_url(server.url()), "batch-flight").await;
    let calls = Calls::default();
    let gate = Gate::closed();
    let started = Gate::closed();
    let first = {
        let (cache, calls, gate, started) =
            (cache.clone(), calls.clone(), gate.clone(), started.clone());
        tokio::spawn(async move {
            cache
                .get_many_or_load(
                    (0..10).rev(),
                    user_key,
                    &options(),
                    |ids: Vec<u64>| async move {
                        calls.record(&ids);
                        started.open();
                        gate.passed().await;
                        Ok::<_, String>(
                            ids.into_iter()
                                .map(|id| (id, name(id)))
                                .collect::<HashMap<_, _>>(),
                        )
                    },
                )
                .await
        })
    };
    within(
        Duration::from_secs(10),
        "the first batch's body",
        started.passed(),
    )
    .await;
    let second = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_many_or_load(5..15, user_key, &options(), users(&calls, 1_000))
                .await
        })
    };
    // The second batch waits on the first's flights for 5..10.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "waits for the ids the first loads");
    gate.open();
    let first = within(Duration::from_secs(10), "the first batch", first)
        .await
        .unwrap()
        .unwrap();
    let second = within(Duration::from_secs(10), "the second batch", second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|(id, user)| *user == name(*id)));
    let mut loaded: Vec<u64> = calls.all().concat();
    loaded.sort_unstable();
    assert_eq!(
        loaded,
        (0..15).collect::<Vec<_>>(),
        "each id loaded once: {:?}",
        calls.all()
    );
    assert_eq!(calls.all()[1], (10..15).collect::<Vec<_>>());
}

/// Bytes in Redis that do not decode are a miss for their id alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bytes_are_a_miss_for_their_id_alone() {
    let server = RedisServer::start();
    let a = instance(Cache::builder().redis_url(server.url()), "batch-bad").await;
    let calls = Calls::default();
    a.get_many_or_load(0..4, user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    let bad = format!("batch-bad:{}", user_key(&2));
    assert!(eventually(Duration::from_secs(10), async || server_has(&server, &bad)).await);
    redis::cmd("SET")
        .arg(&bad)
        .arg(b"\xff\x00 not an entry".as_slice())
        .query::<()>(&mut server.client())
        .unwrap();
    let b = instance(Cache::builder().redis_url(server.url()), "batch-bad").await;
    let calls = Calls::default();
    let found = b
        .get_many_or_load(0..4, user_key, &options(), users(&calls, 1_000))
        .await
        .unwrap();
    assert_eq!(found.len(), 4);
    assert_eq!(calls.all(), vec![vec![2]]);
    assert_eq!(b.stats().l2_undecodable, 1);
}
