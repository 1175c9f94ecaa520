//! Hit latency of `#[cached]` against the alternatives a user would weigh,
//! all in one run so that their ratios are comparable on a noisy machine:
//!
//! | id                              | what one iteration does                                        |
//! |---------------------------------|----------------------------------------------------------------|
//! | `ours/l1_hit`                   | `#[cached]` fn, `cache = <&Cache>`, served from L1             |
//! | `ours/l1_hit_global`            | the same through `Cache::global()`                             |
//! | `raw/moka_future_get_clone`     | `format!` the key, moka future `get`, clone the `User` out     |
//! | `cached_crate/inmem_hit`        | `cached` 4.1 `#[cached(ttl_secs = 300)]` async fn, hit         |
//! | `ours/l2_hit`                   | `#[cached(l1 = false)]` fn, served from a real redis-server    |
//! | `raw/redis_get_decode`          | `format!` the key, redis-rs `GET`, bincode decode              |
//! | `cached_crate/redis_hit`        | `cached` 4.1 `AsyncRedisCache::async_cache_get`, hit           |
//!
//! Every function returns an `Option<User>` cloned out of the cache, on a
//! current-thread Tokio runtime (single-task latency). The redis-server is
//! started by the bench on a free loopback port and stopped at the end.
//!
//! After the groups ran, the medians are read back from criterion's
//! `estimates.json` files and printed as same-run ratios. Because criterion
//! measures one benchmark after the other, a burst of load from a neighbour
//! can land on one side of a ratio only; each ratio is therefore measured a
//! second time interleaved (alternating batches of both calls, median of the
//! per-round ratios), which such bursts hit on both sides. `BENCH_QUICK=1`
//! shortens every measurement to smoke-test a full pass.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bincode::config::standard;
use cache_runtime::{Cache, cached};
use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use common::{User, criterion_home, median_ns, timing, user};
use criterion::{BenchmarkGroup, measurement::WallTime};
use redis::aio::MultiplexedConnection;
use support::RedisServer;

/// The one key every benchmark hits.
const ID: u64 = 42;

#[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache))]
async fn ours_get_user(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

#[cached(key = "user:<id>", ttl = 300)]
async fn ours_get_user_global(id: u64) -> Option<User> {
    Some(user(id))
}

#[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache), l1 = false)]
async fn ours_get_user_l2(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

// `cached` 4.1 renamed `time` to `ttl_secs` (`time = 300` is a compile error).
#[cached::proc_macro::cached(ttl_secs = 300, companions = false)]
async fn cached_crate_get_user(id: u64) -> Option<User> {
    Some(user(id))
}

/// What a user of moka would write: render the key, get, clone the value out.
async fn moka_get_user(
    moka: &moka::future::Cache<String, std::sync::Arc<User>>,
    id: u64,
) -> Option<User> {
    let key = format!("user:{id}");
    moka.get(&key).await.map(|user| User::clone(&user))
}

/// What a user of redis-rs would write: render the key, `GET`, decode.
async fn redis_get_user(connection: &MultiplexedConnection, id: u64) -> Option<User> {
    let key = format!("raw:user:{id}");
    let mut connection = connection.clone();
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("GET from the bench redis-server");
    bytes.map(|bytes| {
        bincode::serde::decode_from_slice::<User, _>(&bytes, standard())
            .expect("decode the raw value")
            .0
    })
}

/// The `cached` crate's Redis store, read directly: its `#[concurrent_cached]`
/// macro on a Redis store needs a fn returning `Result` (store errors go
/// through `?`), so it cannot wrap a fn of the same signature.
async fn cached_crate_redis_get_user(store: &AsyncRedisCache<u64, User>, id: u64) -> Option<User> {
    store
        .async_cache_get(&id)
        .await
        .expect("GET from the bench redis-server")
}

/// Same-run comparisons printed at the end: (ours, other, target ratio).
const RATIOS: [(&str, &str, Option<f64>); 6] = [
    ("ours/l1_hit", "cached_crate/inmem_hit", Some(1.0)),
    ("ours/l1_hit", "raw/moka_future_get_clone", None),
    ("ours/l1_hit_global", "ours/l1_hit", None),
    ("ours/l2_hit", "raw/redis_get_decode", Some(1.1)),
    ("ours/l2_hit", "cached_crate/redis_hit", None),
    ("cached_crate/redis_hit", "raw/redis_get_decode", None),
];

fn l1_settings(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(2), Duration::from_secs(5), 100);
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
}

fn l2_settings(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(2), Duration::from_secs(8), 100);
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
}

fn main() {
    let started = SystemTime::now();
    let mut criterion = common::criterion().configure_from_args();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = RedisServer::start();
    let url = server.url();

    // One cache for both tiers; L1 keeps entries for the whole run (the
    // default 60 s lifetime cap would turn some L1 hits into L2 hits).
    let cache = runtime.block_on(async {
        Cache::builder()
            .namespace("bench")
            .redis_url(&url)
            .l1_max_ttl(Duration::from_secs(3600))
            .build()
            .await
            .expect("valid configuration")
    });
    assert!(
        cache.is_l2_connected(),
        "connected to the bench redis-server"
    );
    Cache::set_global(cache.clone());

    let moka = moka::future::Cache::<String, std::sync::Arc<User>>::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(300))
        .build();
    let client = redis::Client::open(url.as_str()).expect("redis URL");
    let (connection, redis_store) = runtime.block_on(async {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the bench redis-server");
        let encoded = bincode::serde::encode_to_vec(user(ID), standard()).expect("encode");
        let () = redis::cmd("SET")
            .arg(format!("raw:user:{ID}"))
            .arg(encoded)
            .query_async(&mut connection)
            .await
            .expect("SET the raw value");
        let store = AsyncRedisCache::<u64, User>::builder("hits")
            .namespace("cached-crate")
            .ttl_secs(300)
            .connection_string(&url)
            .build()
            .await
            .expect("cached crate's AsyncRedisCache");
        (connection, store)
    });

    // Warm every path, and check each returns the value.
    runtime.block_on(async {
        let expected = Some(user(ID));
        assert_eq!(ours_get_user(&cache, ID).await, expected); // loads, fills L1 + L2
        assert_eq!(ours_get_user(&cache, ID).await, expected);
        assert_eq!(ours_get_user_global(ID).await, expected);
        assert_eq!(ours_get_user_l2(&cache, ID).await, expected);
        moka.insert(format!("user:{ID}"), std::sync::Arc::new(user(ID)))
            .await;
        assert_eq!(moka_get_user(&moka, ID).await, expected);
        assert_eq!(cached_crate_get_user(ID).await, expected); // loads
        assert_eq!(cached_crate_get_user(ID).await, expected);
        assert_eq!(redis_get_user(&connection, ID).await, expected);
        redis_store
            .async_cache_set(ID, user(ID))
            .await
            .expect("prime the cached crate's store");
        assert_eq!(
            cached_crate_redis_get_user(&redis_store, ID).await,
            expected
        );
    });
    let before = cache.stats();
    assert_eq!(
        (before.loads, before.l1_hits, before.l2_hits),
        (1, 2, 1),
        "warm-up went through the expected tiers"
    );

    // L1 hits: tens to hundreds of nanoseconds.
    {
        let mut group = criterion.benchmark_group("ours");
        l1_settings(&mut group);
        group.bench_function("l1_hit", |b| {
            b.to_async(&runtime)
                .iter(|| ours_get_user(&cache, black_box(ID)));
        });
        group.bench_function("l1_hit_global", |b| {
            b.to_async(&runtime)
                .iter(|| ours_get_user_global(black_box(ID)));
        });
        group.finish();

        let mut group = criterion.benchmark_group("raw");
        l1_settings(&mut group);
        group.bench_function("moka_future_get_clone", |b| {
            b.to_async(&runtime)
                .iter(|| moka_get_user(&moka, black_box(ID)));
        });
        group.finish();

        let mut group = criterion.benchmark_group("cached_crate");
        l1_settings(&mut group);
        group.bench_function("inmem_hit", |b| {
            b.to_async(&runtime)
                .iter(|| cached_crate_get_user(black_box(ID)));
        });
        group.finish();
    }
    let after_l1 = cache.stats();

    // L2 hits: a loopback round trip to redis-server, tens of microseconds.
    {
        let mut group = criterion.benchmark_group("ours");
        l2_settings(&mut group);
        group.bench_function("l2_hit", |b| {
            b.to_async(&runtime)
                .iter(|| ours_get_user_l2(&cache, black_box(ID)));
        });
        group.finish();

        let mut group = criterion.benchmark_group("raw");
        l2_settings(&mut group);
        group.bench_function("redis_get_decode", |b| {
            b.to_async(&runtime)
                .iter(|| redis_get_user(&connection, black_box(ID)));
        });
        group.finish();

        let mut group = criterion.benchmark_group("cached_crate");
        l2_settings(&mut group);
        group.bench_function("redis_hit", |b| {
            b.to_async(&runtime)
                .iter(|| cached_crate_redis_get_user(&redis_store, black_box(ID)));
        });
        group.finish();
    }
    let after_l2 = cache.stats();

    criterion.final_summary();
    check_tiers(&before, &after_l1, &after_l2);
    let medians = Medians::read(started);
    medians.print();

    // The same comparisons, measured interleaved: a burst of load on the
    // machine then hits both sides of a ratio instead of one benchmark.
    let quick = common::quick();
    let (l1, l2) = if quick {
        ((10_000, 20), (100, 10))
    } else {
        ((10_000, 300), (100, 300))
    };
    let mut paired = Vec::new();
    runtime.block_on(async {
        for (ours, other, target) in RATIOS {
            if medians.get(ours).is_none() || medians.get(other).is_none() {
                continue; // Filtered out, or criterion's test mode.
            }
            let (calls, rounds) = if is_l2(ours) || is_l2(other) { l2 } else { l1 };
            let subject = |id| Subject {
                id,
                cache: &cache,
                moka: &moka,
                connection: &connection,
                redis_store: &redis_store,
            };
            let ratio = interleaved_ratio(subject(ours), subject(other), calls, rounds).await;
            paired.push((ours, other, target, ratio));
        }
    });
    if !paired.is_empty() {
        println!(
            "\nInterleaved check (median over {} rounds of per-round time ratios):",
            if quick { "10-20" } else { "300" }
        );
        for (ours, other, target, ratio) in paired {
            println!("  {ours} vs {other}: {ratio:.2}x{}", verdict(ratio, target));
        }
    }
    drop(server);
}

/// Whether a benchmark goes to Redis (tens of microseconds per call).
fn is_l2(id: &str) -> bool {
    id.contains("l2") || id.contains("redis")
}

/// One of the measured calls, by benchmark id.
struct Subject<'a> {
    id: &'static str,
    cache: &'a Cache,
    moka: &'a moka::future::Cache<String, std::sync::Arc<User>>,
    connection: &'a MultiplexedConnection,
    redis_store: &'a AsyncRedisCache<u64, User>,
}

impl Subject<'_> {
    /// Time of `calls` calls in a row.
    async fn time(&self, calls: u32) -> Duration {
        let start = Instant::now();
        match self.id {
            "ours/l1_hit" => {
                repeat(calls, async || {
                    ours_get_user(self.cache, black_box(ID)).await
                })
                .await
            }
            "ours/l1_hit_global" => {
                repeat(calls, async || ours_get_user_global(black_box(ID)).await).await
            }
            "raw/moka_future_get_clone" => {
                repeat(calls, async || {
                    moka_get_user(self.moka, black_box(ID)).await
                })
                .await
            }
            "cached_crate/inmem_hit" => {
                repeat(calls, async || cached_crate_get_user(black_box(ID)).await).await
            }
            "ours/l2_hit" => {
                repeat(calls, async || {
                    ours_get_user_l2(self.cache, black_box(ID)).await
                })
                .await
            }
            "raw/redis_get_decode" => {
                repeat(calls, async || {
                    redis_get_user(self.connection, black_box(ID)).await
                })
                .await
            }
            "cached_crate/redis_hit" => {
                repeat(calls, async || {
                    cached_crate_redis_get_user(self.redis_store, black_box(ID)).await
                })
                .await
            }
            other => unreachable!("no subject {other}"),
        }
        start.elapsed()
    }
}

/// Calls `call` `calls` times, each result black-boxed then dropped, as
/// criterion does.
async fn repeat(calls: u32, mut call: impl AsyncFnMut() -> Option<User>) {
    for _ in 0..calls {
        black_box(call().await);
    }
}

/// The median, over `rounds`, of `time(a) / time(b)` for `calls` calls of
/// each back to back (alternating which goes first).
async fn interleaved_ratio(a: Subject<'_>, b: Subject<'_>, calls: u32, rounds: u32) -> f64 {
    // Warm both (caches, branch predictors, the connection).
    a.time(calls).await;
    b.time(calls).await;
    let mut ratios = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let (ta, tb) = if round % 2 == 0 {
            let ta = a.time(calls).await;
            (ta, b.time(calls).await)
        } else {
            let tb = b.time(calls).await;
            (a.time(calls).await, tb)
        };
        ratios.push(ta.as_secs_f64() / tb.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// Confirms the measured calls were the hits they claim to be: no loads,
/// no L2 trouble, L1 hits only in the L1 part and L2 hits only in the L2 part.
fn check_tiers(
    before: &cache_runtime::Stats,
    after_l1: &cache_runtime::Stats,
    after_l2: &cache_runtime::Stats,
) {
    let l1_part = (
        after_l1.l1_hits - before.l1_hits,
        after_l1.l2_hits - before.l2_hits,
    );
    let l2_part = (
        after_l2.l1_hits - after_l1.l1_hits,
        after_l2.l2_hits - after_l1.l2_hits,
    );
    let trouble = after_l2.loads - before.loads
        + after_l2.l2_errors
        + after_l2.l2_timeouts
        + after_l2.l2_skipped
        + after_l2.l2_undecodable;
    println!("\nTier check (cache.stats()):");
    println!("  L1 part: {} L1 hits, {} L2 hits", l1_part.0, l1_part.1);
    println!("  L2 part: {} L1 hits, {} L2 hits", l2_part.0, l2_part.1);
    println!(
        "  loads during the run: {}, L2 errors {}, timeouts {}, skipped {}, undecodable {}",
        after_l2.loads - before.loads,
        after_l2.l2_errors,
        after_l2.l2_timeouts,
        after_l2.l2_skipped,
        after_l2.l2_undecodable
    );
    if l1_part.1 != 0 || l2_part.0 != 0 || trouble != 0 {
        println!("  WARNING: some measured calls were not the hits they claim to be");
    }
}

/// The medians (ns) criterion recorded in this run.
struct Medians(Vec<(&'static str, Option<f64>)>);

impl Medians {
    fn read(started: SystemTime) -> Medians {
        let home = criterion_home();
        Medians(
            IDS.iter()
                .map(|id| (*id, median_ns(&home, id, started)))
                .collect(),
        )
    }

    fn get(&self, id: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(known, _)| *known == id)
            .and_then(|(_, median)| *median)
    }

    fn print(&self) {
        println!("\nMedians of this run (criterion's estimates.json, median.point_estimate):");
        for (id, median) in &self.0 {
            match median {
                Some(ns) => println!("  {id:<28} {}", format_ns(*ns)),
                None => println!("  {id:<28} not measured in this run"),
            }
        }
        println!("\nRatios (median / median, this run only):");
        for (ours, other, target) in RATIOS {
            match (self.get(ours), self.get(other)) {
                (Some(a), Some(b)) => println!(
                    "  {ours} vs {other}: {:.2}x{}",
                    a / b,
                    verdict(a / b, target)
                ),
                _ => println!("  {ours} vs {other}: not measured in this run"),
            }
        }
    }
}

/// Every benchmark id, in the order they run.
const IDS: [&str; 7] = [
    "ours/l1_hit",
    "ours/l1_hit_global",
    "raw/moka_future_get_clone",
    "cached_crate/inmem_hit",
    "ours/l2_hit",
    "raw/redis_get_decode",
    "cached_crate/redis_hit",
];

fn verdict(ratio: f64, target: Option<f64>) -> String {
    match target {
        Some(limit) if ratio <= limit => format!("  (target <= {limit:.1}x: met)"),
        Some(limit) => format!("  (target <= {limit:.1}x: MISSED)"),
        None => String::new(),
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:>9.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:>9.1} ns")
    }
}
