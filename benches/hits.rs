//! Single-task latency of `#[cached]` against the alternatives a user would
//! weigh, all in one run so that their ratios are comparable on a noisy
//! machine.
//!
//! Hits are measured on four key patterns (`cache_benches::keys`), every
//! hit contender on each: one hot key (`user:42`, the bench's original
//! case), ids `0..1000` in rotation, ids `0..100_000` in rotation, and
//! 2^20 Zipf draws over `0..100_000` (the draws of `zipf`). Before anything
//! is measured, every contender holds all 100 000 keys (ours in L1 and in
//! Redis), so each read of every pattern is a hit of the tier it claims.
//!
//! The one-hot-key case keeps its original ids:
//!
//! | id                              | what one call does                                                      |
//! |---------------------------------|-------------------------------------------------------------------------|
//! | `ours/l1_hit`                   | `#[cached]` fn, `cache = <&Cache>`, served from L1                      |
//! | `ours/l1_hit_global`            | the same through `Cache::global()`                                      |
//! | `ours/l1_hit_tagged`            | the same with `tags = ["org:<org>"]`: an L1 hit that checks its tag     |
//! | `raw/moka_future_get_clone`     | `format!` the key, moka `future::Cache` `get`, clone the `User` out     |
//! | `raw/moka_sync_get_clone`       | the same with moka's `sync::Cache`                                      |
//! | `raw/quick_cache_get_clone`     | the same with a `quick_cache::sync::Cache` (the structure under our L1) |
//! | `cached_crate/inmem_hit`        | `cached` 4.1 `#[cached(ttl_secs = 3600)]` async fn, hit                 |
//! | `ours/l2_hit`                   | `#[cached(l1 = false)]` fn, served from a real redis-server             |
//! | `raw/redis_get_decode`          | `format!` the key, redis-rs `GET`, bincode decode                       |
//! | `cached_crate/redis_hit`        | `cached` 4.1 `AsyncRedisCache::async_cache_get`, hit                    |
//! | `raw/body`                      | the functions' body alone (builds the `User`), a fresh id per call      |
//! | `ours/miss_load`                | `#[cached]` fn, in-process cache, a fresh key per call: miss, load, L1 insert |
//! | `ours/miss_load_l2`             | the same fn on a cache with Redis: L1 miss, `GET` (nil), load, conditional `SET` |
//! | `raw/redis_miss_set`            | hand-written cache-aside: `GET` (nil), body, encode, `SET .. EX 1`      |
//! | `ours/redis_down`               | `ours/l2_hit`'s fn on a cache whose redis-server was killed, breaker open |
//! | `ours/redis_down_l1`            | `ours/miss_load`'s fn on that cache: L1 miss, L2 skipped, load, L1 insert |
//!
//! The many-key patterns are `<tier>/<pattern>/<contender>`: `l1_hit/1000_keys/ours`,
//! `l1_hit/100000_keys/quick_cache`, `l2_hit/zipf_100000_keys/redis_rs`, ...,
//! with the L1 contenders `ours`, `ours_global`, `moka_future`, `moka_sync`,
//! `quick_cache`, `cached_crate` and the L2 ones `ours`, `redis_rs`,
//! `cached_crate`, each making the call of its one-key row above.
//!
//! Every function returns an `Option<User>`, on a current-thread Tokio
//! runtime (single-task latency). Every hit call takes its id from the
//! pattern's sequence (the same few instructions for every contender and
//! pattern, one hot key included). The hit subjects' TTLs are 1 h, so that
//! nothing expires during the run. The redis-servers are started by the bench
//! on free loopback ports and stopped at the end.
//!
//! After the criterion groups ran, the bench
//! 1. reads the medians back from criterion's `estimates.json` files and
//!    prints same-run ratios (and, for the miss and Redis-down paths and the
//!    tag check, the cost over the baseline: median minus its median);
//! 2. measures each ratio again interleaved (alternating batches of both
//!    calls, median of the per-round ratios or differences), which a burst of
//!    load from a neighbour hits on both sides, and prints each as a
//!    `ratio <name> <value>` line for `scripts/bench-check`;
//! 3. times individual calls of every subject, interleaved round by round,
//!    and prints their p50 and p99 (the timer's own cost is a row of its own);
//! 4. runs `redis-benchmark -c 1` against the same redis-server, if it is
//!    installed: the floor of a loopback `GET` round trip on this machine.
//!
//! `BENCH_QUICK=1` shortens every measurement (the quick pass of
//! `scripts/bench-check`): criterion's 0.1 s of warm-up and 0.3 s of
//! measurement, 40 interleaved rounds of a fifth of the calls, 20 latency
//! rounds.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cache_benches::contenders::{
    Contenders, body, cached_crate_get_user, cached_crate_redis_get_user, fresh, moka_get_user,
    moka_sync_get_user, ours_get_user, ours_get_user_global, ours_get_user_l2,
    ours_get_user_tagged, ours_miss, quick_cache_get_user, redis_get_user, redis_miss_set,
};
use cache_benches::keys::{HOT_ID, KeyPattern, KeyStream, many_keys};
use cache_benches::{
    criterion_home, format_ns, median, median_ns, percentile, print_check_ratio, timing, user,
};
use cache_runtime::{BreakerState, Cache, Stats};
use cache_test_support::RedisServer;
use criterion::{BenchmarkId, Criterion};

/// The org whose tag `ours/l1_hit_tagged`'s entries carry.
const ORG: u32 = 7;

/// Who answers a call, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    OursL1,
    OursL1Global,
    OursL1Tagged,
    MokaFuture,
    MokaSync,
    QuickCache,
    CachedCrateInMem,
    OursL2,
    RedisRs,
    CachedCrateRedis,
    Body,
    OursMissLoad,
    OursMissLoadL2,
    RedisMissSet,
    OursRedisDown,
    OursRedisDownL1,
}

/// The in-process hits measured on every key pattern.
const L1_HITS: [Contender; 6] = [
    Contender::OursL1,
    Contender::OursL1Global,
    Contender::MokaFuture,
    Contender::MokaSync,
    Contender::QuickCache,
    Contender::CachedCrateInMem,
];

/// The Redis hits measured on every key pattern.
const L2_HITS: [Contender; 3] = [
    Contender::OursL2,
    Contender::RedisRs,
    Contender::CachedCrateRedis,
];

/// Calls with a fresh id each (misses) or no cache to hit, one key only.
const LOCAL: [Contender; 4] = [
    Contender::Body,
    Contender::OursMissLoad,
    Contender::OursRedisDown,
    Contender::OursRedisDownL1,
];
const L2_MISSES: [Contender; 2] = [Contender::OursMissLoadL2, Contender::RedisMissSet];

impl Contender {
    /// What a call measures and the contender's short name: the parts of a
    /// many-key benchmark id (`l1_hit/1000_keys/ours`) and of ratio names.
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            Contender::OursL1 => ("l1_hit", "ours"),
            Contender::OursL1Global => ("l1_hit", "ours_global"),
            Contender::OursL1Tagged => ("l1_hit", "ours_tagged"),
            Contender::MokaFuture => ("l1_hit", "moka_future"),
            Contender::MokaSync => ("l1_hit", "moka_sync"),
            Contender::QuickCache => ("l1_hit", "quick_cache"),
            Contender::CachedCrateInMem => ("l1_hit", "cached_crate"),
            Contender::OursL2 => ("l2_hit", "ours"),
            Contender::RedisRs => ("l2_hit", "redis_rs"),
            Contender::CachedCrateRedis => ("l2_hit", "cached_crate"),
            Contender::Body => ("body", "raw"),
            Contender::OursMissLoad => ("miss_load", "ours"),
            Contender::OursMissLoadL2 => ("l2_miss", "ours"),
            Contender::RedisMissSet => ("l2_miss", "redis_rs"),
            Contender::OursRedisDown => ("redis_down", "ours"),
            Contender::OursRedisDownL1 => ("redis_down_l1_miss", "ours"),
        }
    }

    /// The id of the one-key case: the bench's original ids, kept so that
    /// criterion compares a run with the ones before it.
    fn one_key_id(self) -> &'static str {
        match self {
            Contender::OursL1 => "ours/l1_hit",
            Contender::OursL1Global => "ours/l1_hit_global",
            Contender::OursL1Tagged => "ours/l1_hit_tagged",
            Contender::MokaFuture => "raw/moka_future_get_clone",
            Contender::MokaSync => "raw/moka_sync_get_clone",
            Contender::QuickCache => "raw/quick_cache_get_clone",
            Contender::CachedCrateInMem => "cached_crate/inmem_hit",
            Contender::OursL2 => "ours/l2_hit",
            Contender::RedisRs => "raw/redis_get_decode",
            Contender::CachedCrateRedis => "cached_crate/redis_hit",
            Contender::Body => "raw/body",
            Contender::OursMissLoad => "ours/miss_load",
            Contender::OursMissLoadL2 => "ours/miss_load_l2",
            Contender::RedisMissSet => "raw/redis_miss_set",
            Contender::OursRedisDown => "ours/redis_down",
            Contender::OursRedisDownL1 => "ours/redis_down_l1",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Contender::OursL2
            | Contender::RedisRs
            | Contender::CachedCrateRedis
            | Contender::OursMissLoadL2
            | Contender::RedisMissSet => Kind::Redis,
            Contender::Body
            | Contender::OursMissLoad
            | Contender::OursRedisDown
            | Contender::OursRedisDownL1 => Kind::Local,
            _ => Kind::Hit,
        }
    }
}

/// The benchmark id of `contender` on `pattern`.
fn subject_id(contender: Contender, pattern: KeyPattern) -> String {
    match pattern {
        KeyPattern::OneKey => contender.one_key_id().to_owned(),
        _ => {
            let (measure, name) = contender.parts();
            format!("{measure}/{}/{name}", pattern.name())
        }
    }
}

/// One benchmark: a contender's call on a key pattern, and where that
/// call takes its ids from (subjects with a fresh id per call ignore it).
struct Subject {
    id: String,
    contender: Contender,
    pattern: KeyPattern,
    keys: KeyStream,
}

impl Subject {
    /// Criterion's group and id within it, which together make `self.id`
    /// (and the directory criterion writes the estimates to).
    fn criterion_id(&self) -> (&str, BenchmarkId) {
        match self.pattern {
            KeyPattern::OneKey => {
                let (group, name) = self.id.split_once('/').expect("ids are group/name");
                (group, BenchmarkId::from_parameter(name))
            }
            pattern => {
                let (measure, name) = self.contender.parts();
                (measure, BenchmarkId::new(pattern.name(), name))
            }
        }
    }
}

/// Every subject, in the order criterion measures them: every L1 hit of
/// ours' cache before any L2 hit (`check_tiers` splits its counters there).
fn subjects() -> Vec<Subject> {
    let ids: Vec<(KeyPattern, Arc<[u32]>)> = KeyPattern::ALL
        .into_iter()
        .map(|pattern| (pattern, pattern.ids()))
        .collect();
    let ids_of = |pattern: KeyPattern| {
        ids.iter()
            .find(|(known, _)| *known == pattern)
            .map(|(_, ids)| ids.clone())
            .expect("every pattern's ids")
    };
    let subject = |contender: Contender, pattern: KeyPattern| Subject {
        id: subject_id(contender, pattern),
        contender,
        pattern,
        keys: KeyStream::new(ids_of(pattern)),
    };
    let mut subjects = Vec::new();
    for pattern in KeyPattern::ALL {
        subjects.extend(L1_HITS.map(|contender| subject(contender, pattern)));
        if pattern == KeyPattern::OneKey {
            subjects.push(subject(Contender::OursL1Tagged, pattern));
        }
    }
    subjects.extend(LOCAL.map(|contender| subject(contender, KeyPattern::OneKey)));
    for pattern in KeyPattern::ALL {
        subjects.extend(L2_HITS.map(|contender| subject(contender, pattern)));
    }
    subjects.extend(L2_MISSES.map(|contender| subject(contender, KeyPattern::OneKey)));
    subjects
}

/// Binds `$call` to a closure making one call of `$subject`, then evaluates
/// `$body`; one arm per contender, so the call is monomorphic (no boxing,
/// no dispatch inside the measured loop).
macro_rules! with_subject {
    ($subject:expr, $c:expr, |$call:ident| $body:expr) => {{
        let c: &Contenders = $c;
        let subject: &Subject = $subject;
        let keys = &subject.keys;
        match subject.contender {
            Contender::OursL1 => {
                let $call = || ours_get_user(&c.cache, black_box(keys.next_id()));
                $body
            }
            Contender::OursL1Global => {
                let $call = || ours_get_user_global(black_box(keys.next_id()));
                $body
            }
            Contender::OursL1Tagged => {
                let $call =
                    || ours_get_user_tagged(&c.cache, black_box(ORG), black_box(keys.next_id()));
                $body
            }
            Contender::MokaFuture => {
                let $call = || moka_get_user(&c.moka, black_box(keys.next_id()));
                $body
            }
            Contender::MokaSync => {
                let $call = || moka_sync_get_user(&c.moka_sync, black_box(keys.next_id()));
                $body
            }
            Contender::QuickCache => {
                let $call = || quick_cache_get_user(&c.quick, black_box(keys.next_id()));
                $body
            }
            Contender::CachedCrateInMem => {
                let $call = || cached_crate_get_user(black_box(keys.next_id()));
                $body
            }
            Contender::OursL2 => {
                let $call = || ours_get_user_l2(&c.cache, black_box(keys.next_id()));
                $body
            }
            Contender::RedisRs => {
                let $call = || redis_get_user(&c.connection, black_box(keys.next_id()));
                $body
            }
            Contender::CachedCrateRedis => {
                let $call =
                    || cached_crate_redis_get_user(&c.redis_store, black_box(keys.next_id()));
                $body
            }
            Contender::Body => {
                let $call = || body(fresh());
                $body
            }
            Contender::OursMissLoad => {
                let $call = || ours_miss(&c.local, fresh());
                $body
            }
            Contender::OursMissLoadL2 => {
                let $call = || ours_miss(&c.misses, fresh());
                $body
            }
            Contender::RedisMissSet => {
                let $call = || redis_miss_set(&c.connection, fresh());
                $body
            }
            Contender::OursRedisDown => {
                let $call = || ours_get_user_l2(&c.down, black_box(keys.next_id()));
                $body
            }
            Contender::OursRedisDownL1 => {
                let $call = || ours_miss(&c.down, fresh());
                $body
            }
        }
    }};
}

/// How long a call takes, roughly: it decides measurement times and batch sizes.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// An in-process hit: 50–500 ns.
    Hit,
    /// In-process work around the body (miss, Redis down): about 1 µs.
    Local,
    /// A Redis round trip or two: 20–200 µs.
    Redis,
}

/// A same-run comparison as a ratio of times (ours / other; below 1 ours is
/// faster), with the target where it sets one (at most this).
struct Ratio {
    /// The name `scripts/bench-check` and BENCHMARKS.md know it by.
    name: String,
    ours: String,
    other: String,
    target: Option<f64>,
}

/// Every ratio: on each pattern, ours' L1 hit against every other in-process
/// contender and through the global handle, ours' L2 hit against raw
/// redis-rs and the `cached` crate's store (and that store against raw, the
/// control: neither side is ours); on one key also the tag check and the
/// miss with Redis. Targets are issue 17's.
fn ratios() -> Vec<Ratio> {
    let mut ratios = Vec::new();
    for pattern in KeyPattern::ALL {
        let (one_key, rotation_1k) = (
            pattern == KeyPattern::OneKey,
            pattern == KeyPattern::Rotation1k,
        );
        let mut push = |ours: Contender, other: Contender, target: Option<f64>| {
            let ((measure, ours_name), (_, other_name)) = (ours.parts(), other.parts());
            ratios.push(Ratio {
                name: format!(
                    "hits/{measure}/{}/{ours_name}_vs_{other_name}",
                    pattern.name()
                ),
                ours: subject_id(ours, pattern),
                other: subject_id(other, pattern),
                target,
            });
        };
        let cached_crate_target = if one_key {
            Some(0.8)
        } else if rotation_1k {
            Some(1.0)
        } else {
            None
        };
        push(
            Contender::OursL1,
            Contender::CachedCrateInMem,
            cached_crate_target,
        );
        push(Contender::OursL1, Contender::MokaFuture, None);
        push(Contender::OursL1, Contender::MokaSync, None);
        push(
            Contender::OursL1,
            Contender::QuickCache,
            rotation_1k.then_some(1.0),
        );
        push(
            Contender::OursL1Global,
            Contender::OursL1,
            one_key.then_some(1.05),
        );
        if one_key {
            push(Contender::OursL1Tagged, Contender::OursL1, None);
        }
        push(
            Contender::OursL2,
            Contender::RedisRs,
            one_key.then_some(1.05),
        );
        push(
            Contender::OursL2,
            Contender::CachedCrateRedis,
            one_key.then_some(1.0),
        );
        push(Contender::CachedCrateRedis, Contender::RedisRs, None);
        if one_key {
            push(Contender::OursMissLoadL2, Contender::RedisMissSet, None);
        }
    }
    ratios
}

/// Same-run comparisons as differences, the cost of ours over a baseline:
/// (ours, baseline, target: at most this many ns per call).
const OVERHEADS: [(Contender, Contender, Option<f64>); 4] = [
    (Contender::OursRedisDown, Contender::Body, Some(10_000.0)),
    (Contender::OursRedisDownL1, Contender::Body, Some(10_000.0)),
    (Contender::OursMissLoad, Contender::Body, None),
    (Contender::OursL1Tagged, Contender::OursL1, Some(15.0)),
];

fn settings(kind: Kind) -> (Duration, Duration, usize) {
    match kind {
        Kind::Hit | Kind::Local => timing(Duration::from_secs(2), Duration::from_secs(5), 100),
        Kind::Redis => timing(Duration::from_secs(2), Duration::from_secs(8), 100),
    }
}

fn main() {
    let started = SystemTime::now();
    let mut criterion = cache_benches::criterion().configure_from_args();
    let runtime = cache_benches::current_thread_runtime();
    // Room for three copies of 100 000 values (ours, raw, the `cached`
    // crate's) beside the test support's 64 MB default.
    let server = RedisServer::start_with(&["--maxmemory", "512mb"]);
    let url = server.url();
    let mut down_server = RedisServer::start();

    let contenders = runtime.block_on(Contenders::set_up("hits", &url, &down_server.url(), HOT_ID));
    runtime.block_on(warm_up(&contenders));
    let filling = Instant::now();
    let keys_held = many_keys();
    let steps = runtime.block_on(contenders.fill_keys(0..keys_held));
    println!(
        "Filled ids 0..{keys_held} in every contender and read them back as hits in {:.1} s ({steps}); {}",
        filling.elapsed().as_secs_f64(),
        runtime.block_on(redis_memory(&contenders))
    );
    // The Redis-down subjects: kill the server, then trip the breaker.
    down_server.kill();
    runtime.block_on(open_breaker(&contenders.down));
    let c = &contenders;
    let subjects = subjects();
    let before = c.cache.stats();
    let before_misses = (c.local.stats(), c.misses.stats(), c.down.stats());
    let mut after_l1 = None;

    for subject in &subjects {
        if subject.contender.kind() == Kind::Redis && after_l1.is_none() {
            after_l1 = Some(c.cache.stats());
        }
        measure(&mut criterion, &runtime, c, subject);
    }
    let after_l1 = after_l1.unwrap_or_else(|| c.cache.stats());
    let after = c.cache.stats();
    let after_misses = (c.local.stats(), c.misses.stats(), c.down.stats());

    criterion.final_summary();
    check_tiers(&before, &after_l1, &after);
    check_misses(before_misses, after_misses);
    let medians = Medians::read(&subjects, started);
    let ratios = ratios();
    medians.print(&ratios);

    let quick = cache_benches::quick();
    runtime.block_on(async {
        interleaved(c, &subjects, &medians, &ratios, quick).await;
        latencies(c, &subjects, &medians, &ratios, quick).await;
    });
    let down = c.down.stats();
    println!(
        "\nRedis-down cache at the end: breaker {:?}, L2 skipped {}, L2 errors {} (all before the breaker opened)",
        down.breaker, down.l2_skipped, down.l2_errors
    );
    redis_benchmark_floor(server.port(), quick);
    drop(server);
}

/// Calls every path once (loading what the hits read) and checks each
/// returns the value.
async fn warm_up(c: &Contenders) {
    c.fill_raw(HOT_ID).await;
    let expected = Some(user(HOT_ID));
    assert_eq!(ours_get_user(&c.cache, HOT_ID).await, expected); // loads, fills L1 + L2
    assert_eq!(ours_get_user(&c.cache, HOT_ID).await, expected);
    assert_eq!(ours_get_user_global(HOT_ID).await, expected);
    assert_eq!(ours_get_user_l2(&c.cache, HOT_ID).await, expected);
    assert_eq!(ours_get_user_tagged(&c.cache, ORG, HOT_ID).await, expected); // loads
    assert_eq!(ours_get_user_tagged(&c.cache, ORG, HOT_ID).await, expected);
    assert_eq!(moka_get_user(&c.moka, HOT_ID).await, expected);
    assert_eq!(moka_sync_get_user(&c.moka_sync, HOT_ID).await, expected);
    assert_eq!(quick_cache_get_user(&c.quick, HOT_ID).await, expected);
    assert_eq!(cached_crate_get_user(HOT_ID).await, expected); // loads
    assert_eq!(cached_crate_get_user(HOT_ID).await, expected);
    assert_eq!(redis_get_user(&c.connection, HOT_ID).await, expected);
    assert_eq!(
        cached_crate_redis_get_user(&c.redis_store, HOT_ID).await,
        expected
    );
    let id = fresh();
    assert_eq!(body(id).await, Some(user(id)));
    assert_eq!(ours_miss(&c.local, id).await, Some(user(id)));
    assert_eq!(ours_miss(&c.misses, id).await, Some(user(id)));
    assert_eq!(redis_miss_set(&c.connection, id).await, Some(user(id)));
    assert_eq!(ours_get_user_l2(&c.down, HOT_ID).await, expected);
    let stats = c.cache.stats();
    assert_eq!(
        (stats.loads, stats.l1_hits, stats.l2_hits),
        (2, 3, 1),
        "warm-up went through the expected tiers"
    );
}

/// How many keys the bench's redis-server holds, and the memory it uses.
async fn redis_memory(c: &Contenders) -> String {
    let mut connection = c.connection.clone();
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .expect("DBSIZE");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO memory");
    let used = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory_human:"))
        .unwrap_or("?");
    format!("redis-server holds {keys} keys in {used}")
}

/// Calls `down` (whose redis-server was just killed) until its breaker is
/// open: each failed Redis read counts towards it.
async fn open_breaker(down: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while down.stats().breaker != BreakerState::Open {
        assert!(
            Instant::now() < deadline,
            "the breaker did not open: {:?}",
            down.stats()
        );
        assert_eq!(ours_get_user_l2(down, HOT_ID).await, Some(user(HOT_ID)));
    }
    let stats = down.stats();
    println!(
        "Redis-down cache: breaker {:?} after {} L2 errors and {} timeouts",
        stats.breaker, stats.l2_errors, stats.l2_timeouts
    );
}

/// One criterion benchmark.
fn measure(
    criterion: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    c: &Contenders,
    subject: &Subject,
) {
    let (group, id) = subject.criterion_id();
    let (warm_up, measurement, samples) = settings(subject.contender.kind());
    let mut group = criterion.benchmark_group(group);
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
    with_subject!(subject, c, |call| {
        group.bench_function(id, |b| b.to_async(runtime).iter(&call));
    });
    group.finish();
}

/// Time of `calls` calls of `subject` in a row.
async fn time_batch(c: &Contenders, subject: &Subject, calls: u32) -> Duration {
    let start = Instant::now();
    with_subject!(subject, c, |call| {
        for _ in 0..calls {
            black_box(call().await);
        }
    });
    start.elapsed()
}

/// Calls per batch in the interleaved comparisons: a fifth of them in quick
/// mode, which runs more, shorter rounds instead (a burst of load then
/// spoils a few rounds, which the median leaves out, rather than most of 10).
fn batch(subject: &Subject, quick: bool) -> u32 {
    let calls = match subject.contender.kind() {
        Kind::Hit => 10_000,
        Kind::Local => 1_000,
        Kind::Redis => 100,
    };
    if quick { calls / 5 } else { calls }
}

fn find<'a>(subjects: &'a [Subject], id: &str) -> &'a Subject {
    subjects
        .iter()
        .find(|subject| subject.id == id)
        .unwrap_or_else(|| panic!("no subject {id}"))
}

/// The same comparisons as the criterion ratios, measured interleaved:
/// batches of both calls back to back, alternating which goes first; the
/// median over the rounds of the per-round ratio (or difference per call).
/// Each ratio is also printed as a `ratio <name> <value>` line.
async fn interleaved(
    c: &Contenders,
    subjects: &[Subject],
    medians: &Medians,
    ratios: &[Ratio],
    quick: bool,
) {
    let rounds = if quick { 40 } else { 300 };
    let measured = |a: &str, b: &str| medians.get(a).is_some() && medians.get(b).is_some();
    let mut lines = Vec::new();
    let mut check_lines = Vec::new();
    for ratio in ratios {
        if !measured(&ratio.ours, &ratio.other) {
            continue; // Filtered out, or criterion's test mode.
        }
        let (ours, other) = (find(subjects, &ratio.ours), find(subjects, &ratio.other));
        let (per_round, _) = paired_rounds(c, ours, other, rounds, quick).await;
        let value = median(&per_round);
        lines.push(format!(
            "  {} vs {}: {value:.2}x{}",
            ratio.ours,
            ratio.other,
            verdict(value, ratio.target)
        ));
        check_lines.push((ratio.name.as_str(), value));
    }
    for (ours, base, limit) in OVERHEADS {
        let (ours, base) = (ours.one_key_id(), base.one_key_id());
        if !measured(ours, base) {
            continue;
        }
        let (_, differences) =
            paired_rounds(c, find(subjects, ours), find(subjects, base), rounds, quick).await;
        let over = median(&differences);
        lines.push(format!(
            "  {ours} - {base}: {}{}",
            format_ns(over).trim(),
            over_verdict(over, limit)
        ));
    }
    if !lines.is_empty() {
        println!(
            "\nInterleaved check (median over {rounds} rounds of per-round time ratios, or of per-call differences):"
        );
        for line in lines {
            println!("{line}");
        }
    }
    if !check_lines.is_empty() {
        println!(
            "\nThe interleaved ratios for scripts/bench-check (ours / other, time per call: below 1 ours is faster):"
        );
        for (name, value) in check_lines {
            print_check_ratio(name, value);
        }
    }
}

/// `rounds` rounds of a batch of `a` and a batch of `b`: the per-round
/// time ratios a/b and differences (a - b) per call in ns.
async fn paired_rounds(
    c: &Contenders,
    a: &Subject,
    b: &Subject,
    rounds: u32,
    quick: bool,
) -> (Vec<f64>, Vec<f64>) {
    let calls = batch(a, quick).min(batch(b, quick));
    // Warm both (caches, branch predictors, the connection).
    time_batch(c, a, calls).await;
    time_batch(c, b, calls).await;
    let mut ratios = Vec::with_capacity(rounds as usize);
    let mut differences = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let (ta, tb) = if round % 2 == 0 {
            let ta = time_batch(c, a, calls).await;
            (ta, time_batch(c, b, calls).await)
        } else {
            let tb = time_batch(c, b, calls).await;
            (time_batch(c, a, calls).await, tb)
        };
        ratios.push(ta.as_secs_f64() / tb.as_secs_f64());
        differences.push((ta.as_secs_f64() - tb.as_secs_f64()) * 1e9 / f64::from(calls));
    }
    (ratios, differences)
}

/// Appends the time of each of `calls` single calls of `subject` to `samples` (ns).
async fn time_each(c: &Contenders, subject: &Subject, calls: u32, samples: &mut Vec<f64>) {
    with_subject!(subject, c, |call| {
        for _ in 0..calls {
            let start = Instant::now();
            black_box(call().await);
            samples.push(start.elapsed().as_nanos() as f64);
        }
    });
}

/// Per-call latency percentiles. Each round times a run of single calls of
/// every subject (the order rotating from round to round), so load bursts
/// spread over all subjects. Each call is timed on its own with two
/// `Instant::now()` reads, whose cost is measured the same way (`timer`).
async fn latencies(
    c: &Contenders,
    subjects: &[Subject],
    medians: &Medians,
    ratios: &[Ratio],
    quick: bool,
) {
    let measured: Vec<&Subject> = subjects
        .iter()
        .filter(|subject| medians.get(&subject.id).is_some())
        .collect();
    if measured.is_empty() {
        return;
    }
    let rounds: u32 = if quick { 20 } else { 200 };
    let per_round = |subject: &Subject| match subject.contender.kind() {
        Kind::Hit => 500,
        Kind::Local => 100,
        Kind::Redis => 10,
    };
    let mut samples: Vec<Vec<f64>> = measured
        .iter()
        .map(|subject| Vec::with_capacity((rounds * per_round(subject)) as usize))
        .collect();
    let mut timer = Vec::with_capacity((rounds * 500) as usize);
    for subject in &measured {
        time_each(c, subject, per_round(subject), &mut Vec::new()).await; // warm
    }
    for round in 0..rounds as usize {
        for offset in 0..measured.len() {
            let at = (round + offset) % measured.len();
            let subject = measured[at];
            time_each(c, subject, per_round(subject), &mut samples[at]).await;
        }
        for _ in 0..500 {
            let start = Instant::now();
            timer.push(black_box(start).elapsed().as_nanos() as f64);
        }
    }
    println!(
        "\nPer-call latency ({rounds} interleaved rounds; each call timed alone, timer included):"
    );
    println!("  {:<38} {:>8} {:>12} {:>12}", "id", "calls", "p50", "p99");
    let mut table = Vec::new();
    for (subject, mut times) in measured.iter().zip(samples) {
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 0.50), percentile(&times, 0.99));
        println!(
            "  {:<38} {:>8} {} {}",
            subject.id,
            times.len(),
            format_ns(p50),
            format_ns(p99)
        );
        table.push((subject.id.as_str(), p50, p99));
    }
    timer.sort_by(f64::total_cmp);
    println!(
        "  {:<38} {:>8} {} {}",
        "timer (two Instant::now)",
        timer.len(),
        format_ns(percentile(&timer, 0.50)),
        format_ns(percentile(&timer, 0.99))
    );
    let get = |id: &str| table.iter().find(|(known, ..)| *known == id);
    println!("\nPer-call ratios (ours / other), p50 and p99:");
    for ratio in ratios {
        if let (Some(a), Some(b)) = (get(&ratio.ours), get(&ratio.other)) {
            println!(
                "  {} vs {}: p50 {:.2}x{}, p99 {:.2}x",
                ratio.ours,
                ratio.other,
                a.1 / b.1,
                verdict(a.1 / b.1, ratio.target),
                a.2 / b.2
            );
        }
    }
    for (ours, base, limit) in OVERHEADS {
        let (ours, base) = (ours.one_key_id(), base.one_key_id());
        if let (Some(a), Some(b)) = (get(ours), get(base)) {
            println!(
                "  {ours} - {base}: p50 {}{}, p99 {}",
                format_ns(a.1 - b.1).trim(),
                over_verdict(a.1 - b.1, limit),
                format_ns(a.2 - b.2).trim()
            );
        }
    }
}

/// `redis-benchmark -c 1` `GET` against the bench's redis-server: one client,
/// one request at a time, a C event loop with no runtime around it.
fn redis_benchmark_floor(port: u16, quick: bool) {
    let requests = if quick { "5000" } else { "50000" };
    let output = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "1", "-n", requests, "-t", "get", "-q"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            // The last of the lines redis-benchmark rewrites with `\r`.
            let last = text
                .split(['\r', '\n'])
                .rfind(|line| line.starts_with("GET"))
                .unwrap_or("(no GET line)");
            println!("\nFloor: redis-benchmark -c 1 -n {requests} -t get: {last}");
        }
        _ => println!("\nFloor: redis-benchmark not available"),
    }
}

/// Confirms the measured calls were the hits they claim to be: no loads,
/// no L2 trouble, L1 hits only in the L1 part and L2 hits only in the L2 part.
fn check_tiers(before: &Stats, after_l1: &Stats, after_l2: &Stats) {
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

/// Confirms the miss subjects missed and the Redis-down ones skipped Redis
/// with the breaker open.
fn check_misses(before: (Stats, Stats, Stats), after: (Stats, Stats, Stats)) {
    let (local, misses, down) = (
        (&before.0, &after.0),
        (&before.1, &after.1),
        (&before.2, &after.2),
    );
    let delta = |(b, a): (&Stats, &Stats), field: fn(&Stats) -> u64| field(a) - field(b);
    println!("\nMiss and Redis-down check (cache.stats() over the criterion part):");
    println!(
        "  in-process cache: {} loads, {} hits",
        delta(local, |s| s.loads),
        delta(local, |s| s.hits)
    );
    println!(
        "  Redis cache: {} loads, {} hits, L2 errors {}, timeouts {}",
        delta(misses, |s| s.loads),
        delta(misses, |s| s.hits),
        delta(misses, |s| s.l2_errors),
        delta(misses, |s| s.l2_timeouts)
    );
    println!(
        "  Redis-down cache: breaker {:?} before, {:?} after; {} loads, {} hits, {} L2 skipped, {} L2 errors, {} timeouts",
        down.0.breaker,
        down.1.breaker,
        delta(down, |s| s.loads),
        delta(down, |s| s.hits),
        delta(down, |s| s.l2_skipped),
        delta(down, |s| s.l2_errors),
        delta(down, |s| s.l2_timeouts)
    );
    let down_ok = down.0.breaker == BreakerState::Open
        && down.1.breaker == BreakerState::Open
        && delta(down, |s| s.l2_skipped) == delta(down, |s| s.loads)
        && delta(down, |s| s.l2_errors) + delta(down, |s| s.l2_timeouts) == 0;
    let misses_ok = delta(local, |s| s.hits) == 0
        && delta(misses, |s| s.hits) == 0
        && delta(misses, |s| s.l2_errors) + delta(misses, |s| s.l2_timeouts) == 0;
    if !down_ok || !misses_ok {
        println!("  WARNING: some measured calls did not take the path they claim to");
    }
}

/// The medians (ns) criterion recorded in this run, by subject id.
struct Medians(Vec<(String, Option<f64>)>);

impl Medians {
    fn read(subjects: &[Subject], started: SystemTime) -> Medians {
        let home = criterion_home();
        Medians(
            subjects
                .iter()
                .map(|subject| (subject.id.clone(), median_ns(&home, &subject.id, started)))
                .collect(),
        )
    }

    fn get(&self, id: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(known, _)| known == id)
            .and_then(|(_, median)| *median)
    }

    fn print(&self, ratios: &[Ratio]) {
        println!("\nMedians of this run (criterion's estimates.json, median.point_estimate):");
        for (id, median) in &self.0 {
            match median {
                Some(ns) => println!("  {id:<38} {}", format_ns(*ns)),
                None => println!("  {id:<38} not measured in this run"),
            }
        }
        println!("\nRatios (median / median, this run only):");
        for ratio in ratios {
            let (ours, other) = (&ratio.ours, &ratio.other);
            match (self.get(ours), self.get(other)) {
                (Some(a), Some(b)) => println!(
                    "  {ours} vs {other}: {:.2}x{}",
                    a / b,
                    verdict(a / b, ratio.target)
                ),
                _ => println!("  {ours} vs {other}: not measured in this run"),
            }
        }
        println!("\nCost over the baseline (median - median, this run only):");
        for (ours, base, limit) in OVERHEADS {
            let (ours, base) = (ours.one_key_id(), base.one_key_id());
            match (self.get(ours), self.get(base)) {
                (Some(a), Some(b)) => println!(
                    "  {ours} - {base}: {}{}",
                    format_ns(a - b).trim(),
                    over_verdict(a - b, limit)
                ),
                _ => println!("  {ours} - {base}: not measured in this run"),
            }
        }
    }
}

fn verdict(ratio: f64, target: Option<f64>) -> String {
    match target {
        Some(limit) if ratio <= limit => format!("  (target <= {limit:.2}x: met)"),
        Some(limit) => format!("  (target <= {limit:.2}x: MISSED)"),
        None => String::new(),
    }
}

fn over_verdict(ns: f64, limit: Option<f64>) -> String {
    match limit {
        Some(limit) if ns < limit => format!("  (target < {}: met)", format_ns(limit).trim()),
        Some(limit) => format!("  (target < {}: MISSED)", format_ns(limit).trim()),
        None => String::new(),
    }
}
