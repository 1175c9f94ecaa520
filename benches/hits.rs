//! Single-task latency of `#[cached]` against the alternatives a user would
//! weigh, all in one run so that their ratios are comparable on a noisy
//! machine.
//!
//! | id                              | what one call does                                                      |
//! |---------------------------------|-------------------------------------------------------------------------|
//! | `ours/l1_hit`                   | `#[cached]` fn, `cache = <&Cache>`, served from L1                      |
//! | `ours/l1_hit_global`            | the same through `Cache::global()`                                      |
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
//! Every function returns an `Option<User>`, on a current-thread Tokio
//! runtime (single-task latency). The hit subjects' TTLs are 1 h, so that
//! nothing expires during the run. The redis-servers are started by the bench
//! on free loopback ports and stopped at the end.
//!
//! After the criterion groups ran, the bench
//! 1. reads the medians back from criterion's `estimates.json` files and
//!    prints same-run ratios (and, for the miss and Redis-down paths, the
//!    cost over the body: median minus `raw/body`'s median);
//! 2. measures each ratio again interleaved (alternating batches of both
//!    calls, median of the per-round ratios or differences), which a burst of
//!    load from a neighbour hits on both sides;
//! 3. times individual calls of every subject, interleaved round by round,
//!    and prints their p50 and p99 (the timer's own cost is a row of its own);
//! 4. runs `redis-benchmark -c 1` against the same redis-server, if it is
//!    installed: the floor of a loopback `GET` round trip on this machine.
//!
//! `BENCH_QUICK=1` shortens every measurement to smoke-test a full pass.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use cache_benches::contenders::{
    Contenders, body, cached_crate_get_user, cached_crate_redis_get_user, fresh, moka_get_user,
    moka_sync_get_user, ours_get_user, ours_get_user_global, ours_get_user_l2, ours_miss,
    quick_cache_get_user, redis_get_user, redis_miss_set,
};
use cache_benches::{criterion_home, format_ns, median, median_ns, percentile, timing, user};
use cache_runtime::{BreakerState, Cache, Stats};
use cache_test_support::RedisServer;
use criterion::Criterion;

/// The one key every hit benchmark reads.
const ID: u64 = 42;

/// Binds `$call` to a closure making one call of subject `$id`, then
/// evaluates `$body`; one arm per subject, so the call is monomorphic
/// (no boxing, no dispatch inside the measured loop).
macro_rules! with_subject {
    ($id:expr, $c:expr, |$call:ident| $body:expr) => {{
        let c: &Contenders = $c;
        match $id {
            "ours/l1_hit" => {
                let $call = || ours_get_user(&c.cache, black_box(ID));
                $body
            }
            "ours/l1_hit_global" => {
                let $call = || ours_get_user_global(black_box(ID));
                $body
            }
            "raw/moka_future_get_clone" => {
                let $call = || moka_get_user(&c.moka, black_box(ID));
                $body
            }
            "raw/moka_sync_get_clone" => {
                let $call = || moka_sync_get_user(&c.moka_sync, black_box(ID));
                $body
            }
            "raw/quick_cache_get_clone" => {
                let $call = || quick_cache_get_user(&c.quick, black_box(ID));
                $body
            }
            "cached_crate/inmem_hit" => {
                let $call = || cached_crate_get_user(black_box(ID));
                $body
            }
            "ours/l2_hit" => {
                let $call = || ours_get_user_l2(&c.cache, black_box(ID));
                $body
            }
            "raw/redis_get_decode" => {
                let $call = || redis_get_user(&c.connection, black_box(ID));
                $body
            }
            "cached_crate/redis_hit" => {
                let $call = || cached_crate_redis_get_user(&c.redis_store, black_box(ID));
                $body
            }
            "raw/body" => {
                let $call = || body(fresh());
                $body
            }
            "ours/miss_load" => {
                let $call = || ours_miss(&c.local, fresh());
                $body
            }
            "ours/miss_load_l2" => {
                let $call = || ours_miss(&c.misses, fresh());
                $body
            }
            "raw/redis_miss_set" => {
                let $call = || redis_miss_set(&c.connection, fresh());
                $body
            }
            "ours/redis_down" => {
                let $call = || ours_get_user_l2(&c.down, black_box(ID));
                $body
            }
            "ours/redis_down_l1" => {
                let $call = || ours_miss(&c.down, fresh());
                $body
            }
            other => unreachable!("no subject {other}"),
        }
    }};
}

/// Every subject, in the order criterion measures them.
const IDS: [&str; 15] = [
    "ours/l1_hit",
    "ours/l1_hit_global",
    "raw/moka_future_get_clone",
    "raw/moka_sync_get_clone",
    "raw/quick_cache_get_clone",
    "cached_crate/inmem_hit",
    "ours/l2_hit",
    "raw/redis_get_decode",
    "cached_crate/redis_hit",
    "raw/body",
    "ours/miss_load",
    "ours/redis_down",
    "ours/redis_down_l1",
    "ours/miss_load_l2",
    "raw/redis_miss_set",
];

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

fn kind(id: &str) -> Kind {
    match id {
        "ours/l2_hit"
        | "raw/redis_get_decode"
        | "cached_crate/redis_hit"
        | "ours/miss_load_l2"
        | "raw/redis_miss_set" => Kind::Redis,
        "raw/body" | "ours/miss_load" | "ours/redis_down" | "ours/redis_down_l1" => Kind::Local,
        _ => Kind::Hit,
    }
}

/// Same-run comparisons as ratios: (ours, other, target: at most this).
const RATIOS: [(&str, &str, Option<f64>); 9] = [
    ("ours/l1_hit", "cached_crate/inmem_hit", Some(1.0)),
    ("ours/l1_hit", "raw/moka_future_get_clone", None),
    ("ours/l1_hit", "raw/moka_sync_get_clone", None),
    ("ours/l1_hit", "raw/quick_cache_get_clone", None),
    ("ours/l1_hit_global", "ours/l1_hit", None),
    ("ours/l2_hit", "raw/redis_get_decode", Some(1.1)),
    ("ours/l2_hit", "cached_crate/redis_hit", Some(1.0)),
    ("cached_crate/redis_hit", "raw/redis_get_decode", None),
    ("ours/miss_load_l2", "raw/redis_miss_set", None),
];

/// Same-run comparisons as differences, the cost of ours over the body:
/// (ours, baseline, target: at most this many ns per call).
const OVERHEADS: [(&str, &str, Option<f64>); 3] = [
    ("ours/redis_down", "raw/body", Some(10_000.0)),
    ("ours/redis_down_l1", "raw/body", Some(10_000.0)),
    ("ours/miss_load", "raw/body", None),
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
    let server = RedisServer::start();
    let url = server.url();
    let mut down_server = RedisServer::start();

    let contenders = runtime.block_on(Contenders::set_up("hits", &url, &down_server.url(), ID));
    runtime.block_on(warm_up(&contenders));
    // The Redis-down subjects: kill the server, then trip the breaker.
    down_server.kill();
    runtime.block_on(open_breaker(&contenders.down));
    let c = &contenders;
    let before = c.cache.stats();
    let before_misses = (c.local.stats(), c.misses.stats(), c.down.stats());
    let mut after_l1 = None;

    for id in IDS {
        if kind(id) == Kind::Redis && after_l1.is_none() {
            after_l1 = Some(c.cache.stats());
        }
        measure(&mut criterion, &runtime, c, id);
    }
    let after_l1 = after_l1.unwrap_or_else(|| c.cache.stats());
    let after = c.cache.stats();
    let after_misses = (c.local.stats(), c.misses.stats(), c.down.stats());

    criterion.final_summary();
    check_tiers(&before, &after_l1, &after);
    check_misses(before_misses, after_misses);
    let medians = Medians::read(started);
    medians.print();

    let quick = cache_benches::quick();
    runtime.block_on(async {
        interleaved(c, &medians, quick).await;
        latencies(c, &medians, quick).await;
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
    c.fill_raw(ID).await;
    let expected = Some(user(ID));
    assert_eq!(ours_get_user(&c.cache, ID).await, expected); // loads, fills L1 + L2
    assert_eq!(ours_get_user(&c.cache, ID).await, expected);
    assert_eq!(ours_get_user_global(ID).await, expected);
    assert_eq!(ours_get_user_l2(&c.cache, ID).await, expected);
    assert_eq!(moka_get_user(&c.moka, ID).await, expected);
    assert_eq!(moka_sync_get_user(&c.moka_sync, ID).await, expected);
    assert_eq!(quick_cache_get_user(&c.quick, ID).await, expected);
    assert_eq!(cached_crate_get_user(ID).await, expected); // loads
    assert_eq!(cached_crate_get_user(ID).await, expected);
    assert_eq!(redis_get_user(&c.connection, ID).await, expected);
    assert_eq!(
        cached_crate_redis_get_user(&c.redis_store, ID).await,
        expected
    );
    let id = fresh();
    assert_eq!(body(id).await, Some(user(id)));
    assert_eq!(ours_miss(&c.local, id).await, Some(user(id)));
    assert_eq!(ours_miss(&c.misses, id).await, Some(user(id)));
    assert_eq!(redis_miss_set(&c.connection, id).await, Some(user(id)));
    assert_eq!(ours_get_user_l2(&c.down, ID).await, expected);
    let stats = c.cache.stats();
    assert_eq!(
        (stats.loads, stats.l1_hits, stats.l2_hits),
        (1, 2, 1),
        "warm-up went through the expected tiers"
    );
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
        assert_eq!(ours_get_user_l2(down, ID).await, Some(user(ID)));
    }
    let stats = down.stats();
    println!(
        "Redis-down cache: breaker {:?} after {} L2 errors and {} timeouts",
        stats.breaker, stats.l2_errors, stats.l2_timeouts
    );
}

/// One criterion benchmark: `group/name`.
fn measure(criterion: &mut Criterion, runtime: &tokio::runtime::Runtime, c: &Contenders, id: &str) {
    let (group, name) = id.split_once('/').expect("ids are group/name");
    let (warm_up, measurement, samples) = settings(kind(id));
    let mut group = criterion.benchmark_group(group);
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
    with_subject!(id, c, |call| {
        group.bench_function(name, |b| b.to_async(runtime).iter(&call));
    });
    group.finish();
}

/// Time of `calls` calls of subject `id` in a row.
async fn time_batch(c: &Contenders, id: &str, calls: u32) -> Duration {
    let start = Instant::now();
    with_subject!(id, c, |call| {
        for _ in 0..calls {
            black_box(call().await);
        }
    });
    start.elapsed()
}

/// Calls per batch in the interleaved comparisons.
fn batch(id: &str) -> u32 {
    match kind(id) {
        Kind::Hit => 10_000,
        Kind::Local => 1_000,
        Kind::Redis => 100,
    }
}

/// The same comparisons as the criterion ratios, measured interleaved:
/// batches of both calls back to back, alternating which goes first; the
/// median over the rounds of the per-round ratio (or difference per call).
async fn interleaved(c: &Contenders, medians: &Medians, quick: bool) {
    let rounds = if quick { 10 } else { 300 };
    let measured = |a: &str, b: &str| medians.get(a).is_some() && medians.get(b).is_some();
    let mut lines = Vec::new();
    for (ours, other, target) in RATIOS {
        if !measured(ours, other) {
            continue; // Filtered out, or criterion's test mode.
        }
        let (ratios, _) = paired_rounds(c, ours, other, rounds).await;
        let ratio = median(&ratios);
        lines.push(format!(
            "  {ours} vs {other}: {ratio:.2}x{}",
            verdict(ratio, target)
        ));
    }
    for (ours, base, limit) in OVERHEADS {
        if !measured(ours, base) {
            continue;
        }
        let (_, differences) = paired_rounds(c, ours, base, rounds).await;
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
}

/// `rounds` rounds of a batch of `a` and a batch of `b`: the per-round
/// time ratios a/b and differences (a - b) per call in ns.
async fn paired_rounds(c: &Contenders, a: &str, b: &str, rounds: u32) -> (Vec<f64>, Vec<f64>) {
    let calls = batch(a).min(batch(b));
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

/// Appends the time of each of `calls` single calls of `id` to `samples` (ns).
async fn time_each(c: &Contenders, id: &str, calls: u32, samples: &mut Vec<f64>) {
    with_subject!(id, c, |call| {
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
async fn latencies(c: &Contenders, medians: &Medians, quick: bool) {
    let ids: Vec<&str> = IDS
        .into_iter()
        .filter(|id| medians.get(id).is_some())
        .collect();
    if ids.is_empty() {
        return;
    }
    let rounds: u32 = if quick { 20 } else { 200 };
    let per_round = |id: &str| match kind(id) {
        Kind::Hit => 500,
        Kind::Local => 100,
        Kind::Redis => 10,
    };
    let mut samples: Vec<Vec<f64>> = ids
        .iter()
        .map(|id| Vec::with_capacity((rounds * per_round(id)) as usize))
        .collect();
    let mut timer = Vec::with_capacity((rounds * 500) as usize);
    for id in &ids {
        time_each(c, id, per_round(id), &mut Vec::new()).await; // warm
    }
    for round in 0..rounds as usize {
        for offset in 0..ids.len() {
            let at = (round + offset) % ids.len();
            time_each(c, ids[at], per_round(ids[at]), &mut samples[at]).await;
        }
        for _ in 0..500 {
            let start = Instant::now();
            timer.push(black_box(start).elapsed().as_nanos() as f64);
        }
    }
    println!(
        "\nPer-call latency ({rounds} interleaved rounds; each call timed alone, timer included):"
    );
    println!("  {:<28} {:>8} {:>12} {:>12}", "id", "calls", "p50", "p99");
    let mut table = Vec::new();
    for (id, mut times) in ids.iter().zip(samples) {
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 0.50), percentile(&times, 0.99));
        println!(
            "  {id:<28} {:>8} {} {}",
            times.len(),
            format_ns(p50),
            format_ns(p99)
        );
        table.push((*id, p50, p99));
    }
    timer.sort_by(f64::total_cmp);
    println!(
        "  {:<28} {:>8} {} {}",
        "timer (two Instant::now)",
        timer.len(),
        format_ns(percentile(&timer, 0.50)),
        format_ns(percentile(&timer, 0.99))
    );
    let get = |id: &str| table.iter().find(|(known, ..)| *known == id);
    println!("\nPer-call ratios (ours / other), p50 and p99:");
    for (ours, other, target) in RATIOS {
        if let (Some(a), Some(b)) = (get(ours), get(other)) {
            println!(
                "  {ours} vs {other}: p50 {:.2}x{}, p99 {:.2}x",
                a.1 / b.1,
                verdict(a.1 / b.1, target),
                a.2 / b.2
            );
        }
    }
    for (ours, base, limit) in OVERHEADS {
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
        println!("\nCost over the body (median - median, this run only):");
        for (ours, base, limit) in OVERHEADS {
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
        Some(limit) if ratio <= limit => format!("  (target <= {limit:.1}x: met)"),
        Some(limit) => format!("  (target <= {limit:.1}x: MISSED)"),
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
