//! Throughput with 64 concurrent tasks on a Tokio multi-thread runtime with
//! 2 workers: how many hits per second each contender serves when many
//! requests are in flight at once.
//!
//! | id                          | what one call does                                                  |
//! |-----------------------------|---------------------------------------------------------------------|
//! | `ours/l1_hit`               | `#[cached]` fn, served from L1                                      |
//! | `cached_crate/inmem_hit`    | `cached` 4.1 `#[cached(ttl_secs = 3600)]` async fn, hit             |
//! | `raw/moka_future_get_clone` | `format!` the key, moka `future::Cache` `get`, clone the `User` out |
//! | `raw/moka_sync_get_clone`   | the same with moka's `sync::Cache`                                  |
//! | `raw/quick_cache_get_clone` | the same with a bare `quick_cache::sync::Cache`                     |
//! | `ours/l2_hit`               | `#[cached(l1 = false)]` fn, served from redis-server                |
//! | `raw/redis_get_decode`      | `format!` the key, `GET` on ONE shared `MultiplexedConnection`, bincode decode |
//! | `cached_crate/redis_hit`    | `cached` 4.1 `AsyncRedisCache::async_cache_get` (one multiplexed connection) |
//!
//! 1024 keys are cached in every contender; task `t` reads the 16 keys whose
//! id is `t` modulo 64, in turn, so no two tasks read the same key (ours
//! would otherwise share one Redis read between concurrent callers of a key,
//! which the raw client cannot). Each measurement releases the 64 tasks
//! together, lets them call in a loop for a fixed time, and counts the calls.
//!
//! The contenders are measured in rounds: round 1 of every contender, then
//! round 2, ..., with the order rotating, so a burst of load from a
//! neighbour spreads over all of them. The tables give the median calls per
//! second over the rounds (min–max), and for each comparison the median of
//! the per-round ratios (both sides measured seconds apart). The redis-server
//! runs on the same 2 vCPUs as the bench, started on a free loopback port.
//! `BENCH_QUICK=1` runs 2 rounds of 0.2 s; `cargo bench -p cache-benches --bench throughput
//! -- <text>...` runs only the contenders whose id contains one of the texts.

use std::hint::black_box;
use std::time::Duration;

use cache_benches::contenders::{
    Contenders, cached_crate_get_user, cached_crate_redis_get_user, moka_get_user,
    moka_sync_get_user, ours_get_user, ours_get_user_l2, quick_cache_get_user, redis_get_user,
};
use cache_benches::{
    Throughput, cpu_time, median, median_ns_or_dash, redis_server_pid, run_tasks, summary, user,
};
use cache_runtime::Stats;
use cache_test_support::RedisServer;

const TASKS: usize = 64;
const WORKERS: usize = 2;
/// Keys cached in every contender.
const KEYS: u64 = 1024;

/// The key task `task` reads on its `call`-th call: ids equal to `task`
/// modulo `TASKS`, so no two tasks share a key.
fn key_of(task: usize, call: u64) -> u64 {
    task as u64 + TASKS as u64 * (call % (KEYS / TASKS as u64))
}

/// Runs `TASKS` tasks calling subject `$id` for `$duration`.
macro_rules! run_subject {
    ($id:expr, $c:expr, $duration:expr) => {{
        let c: &'static Contenders = $c;
        let duration: Duration = $duration;
        match $id {
            "ours/l1_hit" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(ours_get_user(&c.cache, key_of(task, call)).await);
                })
                .await
            }
            "cached_crate/inmem_hit" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(cached_crate_get_user(key_of(task, call)).await);
                })
                .await
            }
            "raw/moka_future_get_clone" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(moka_get_user(&c.moka, key_of(task, call)).await);
                })
                .await
            }
            "raw/moka_sync_get_clone" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(moka_sync_get_user(&c.moka_sync, key_of(task, call)).await);
                })
                .await
            }
            "raw/quick_cache_get_clone" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(quick_cache_get_user(&c.quick, key_of(task, call)).await);
                })
                .await
            }
            "ours/l2_hit" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(ours_get_user_l2(&c.cache, key_of(task, call)).await);
                })
                .await
            }
            "raw/redis_get_decode" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(redis_get_user(&c.connection, key_of(task, call)).await);
                })
                .await
            }
            "cached_crate/redis_hit" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(
                        cached_crate_redis_get_user(&c.redis_store, key_of(task, call)).await,
                    );
                })
                .await
            }
            other => unreachable!("no subject {other}"),
        }
    }};
}

/// In-process hits, then Redis hits.
const GROUPS: [&[&str]; 2] = [
    &[
        "ours/l1_hit",
        "cached_crate/inmem_hit",
        "raw/moka_future_get_clone",
        "raw/moka_sync_get_clone",
        "raw/quick_cache_get_clone",
    ],
    &[
        "ours/l2_hit",
        "raw/redis_get_decode",
        "cached_crate/redis_hit",
    ],
];

/// (ours, other, target: ours' throughput at least this times the other's).
const RATIOS: [(&str, &str, Option<f64>); 6] = [
    ("ours/l1_hit", "cached_crate/inmem_hit", Some(1.0)),
    ("ours/l1_hit", "raw/moka_future_get_clone", None),
    ("ours/l1_hit", "raw/moka_sync_get_clone", None),
    ("ours/l1_hit", "raw/quick_cache_get_clone", None),
    ("ours/l2_hit", "raw/redis_get_decode", Some(0.95)),
    ("ours/l2_hit", "cached_crate/redis_hit", Some(1.0)),
];

fn main() {
    let quick = cache_benches::quick();
    let (rounds, duration) = if quick {
        (2, Duration::from_millis(200))
    } else {
        (7, Duration::from_secs(1))
    };
    let runtime = cache_benches::multi_thread_runtime(WORKERS);
    let server = RedisServer::start();
    let url = server.url();
    println!(
        "throughput: {TASKS} tasks, Tokio multi-thread runtime with {} workers, {KEYS} keys, \
         {rounds} rounds of {} ms per contender, redis-server on {url}",
        runtime.metrics().num_workers(),
        duration.as_millis()
    );
    let contenders: &'static Contenders = Box::leak(Box::new(runtime.block_on(setup(&url))));

    // `cargo bench -p cache-benches --bench throughput -- <text>...`: only the contenders
    // whose id contains one of the texts (to profile one, for instance).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let redis_pid = redis_server_pid(server.port());
    // Per contender, the redis-server's CPU time per call in each round (ns).
    let mut redis_ns: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut results: Vec<(&str, Vec<Throughput>)> = Vec::new();
    let mut checks = Vec::new();
    for group in GROUPS {
        let group: Vec<&str> = group
            .iter()
            .copied()
            .filter(|id| filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str())))
            .collect();
        let before = contenders.cache.stats();
        let mut runs: Vec<Vec<Throughput>> = group.iter().map(|_| Vec::new()).collect();
        let mut redis_cpus: Vec<Vec<f64>> = group.iter().map(|_| Vec::new()).collect();
        runtime.block_on(async {
            // Warm every contender (connections, tables, the runtime's workers).
            for id in &group {
                run_subject!(*id, contenders, Duration::from_millis(100));
            }
            for round in 0..rounds {
                for offset in 0..group.len() {
                    let at = (round + offset) % group.len();
                    let redis_before = redis_pid.as_deref().and_then(cpu_time);
                    let run = run_subject!(group[at], contenders, duration);
                    let redis_after = redis_pid.as_deref().and_then(cpu_time);
                    if let (Some(before), Some(after)) = (redis_before, redis_after) {
                        let ns = after.saturating_sub(before).as_nanos() as f64;
                        redis_cpus[at].push(ns / run.calls as f64);
                    }
                    runs[at].push(run);
                }
            }
        });
        checks.push((before, contenders.cache.stats()));
        redis_ns.extend(group.iter().copied().zip(redis_cpus));
        results.extend(group.iter().copied().zip(runs));
    }

    println!(
        "\nCalls per second, median (min–max) over {rounds} rounds of {} ms:",
        duration.as_millis()
    );
    for (id, runs) in &results {
        let rates: Vec<f64> = runs.iter().map(Throughput::per_second).collect();
        let cpu: Vec<f64> = runs
            .iter()
            .filter_map(Throughput::cpu_ns_per_call)
            .collect();
        let redis: &[f64] = redis_ns
            .iter()
            .find(|(known, _)| known == id)
            .map_or(&[], |(_, ns)| ns);
        println!(
            "  {id:<28} {:>34}   CPU per call: bench {:>8}, redis-server {:>8}",
            summary(&rates, 0),
            median_ns_or_dash(&cpu),
            median_ns_or_dash(redis)
        );
    }
    println!("\nRatios (ours / other, calls per second; median of the per-round ratios):");
    let runs_of = |id: &str| results.iter().find(|(known, _)| *known == id).map(|r| &r.1);
    for (ours, other, target) in RATIOS {
        let (Some(a), Some(b)) = (runs_of(ours), runs_of(other)) else {
            continue;
        };
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| a.per_second() / b.per_second())
            .collect();
        let ratio = median(&ratios);
        let verdict = match target {
            Some(limit) if ratio >= limit => format!("  (target >= {limit:.2}x: met)"),
            Some(limit) => format!("  (target >= {limit:.2}x: MISSED)"),
            None => String::new(),
        };
        println!(
            "  {ours} vs {other}: {ratio:.2}x (rounds: {}){verdict}",
            summary(&ratios, 2)
        );
    }
    check(&checks, &results);
    drop(server);
}

async fn setup(url: &str) -> Contenders {
    // This bench measures no Redis-down cache: the one `set_up` builds
    // just uses the live server too, unused.
    let contenders = Contenders::set_up("throughput", url, url, 0).await;
    for id in 0..KEYS {
        contenders.fill_raw(id).await;
        let expected = Some(user(id));
        assert_eq!(ours_get_user(&contenders.cache, id).await, expected); // fills L1 and L2
        assert_eq!(cached_crate_get_user(id).await, expected);
    }
    // Every contender serves every key before anything is measured.
    for id in 0..KEYS {
        let expected = Some(user(id));
        let c = &contenders;
        assert_eq!(ours_get_user(&c.cache, id).await, expected);
        assert_eq!(ours_get_user_l2(&c.cache, id).await, expected);
        assert_eq!(cached_crate_get_user(id).await, expected);
        assert_eq!(moka_get_user(&c.moka, id).await, expected);
        assert_eq!(moka_sync_get_user(&c.moka_sync, id).await, expected);
        assert_eq!(quick_cache_get_user(&c.quick, id).await, expected);
        assert_eq!(redis_get_user(&c.connection, id).await, expected);
        assert_eq!(
            cached_crate_redis_get_user(&c.redis_store, id).await,
            expected
        );
    }
    contenders
}

/// Confirms ours served its calls from the tier it claims: L1 hits only in
/// the in-process group, L2 hits only in the Redis group, no loads, no
/// coalesced callers, no Redis trouble.
fn check(checks: &[(Stats, Stats)], results: &[(&str, Vec<Throughput>)]) {
    let calls = |id: &str| -> u64 {
        results
            .iter()
            .find(|(known, _)| *known == id)
            .map_or(0, |(_, runs)| runs.iter().map(|run| run.calls).sum())
    };
    println!("\nTier check (cache.stats(), warm-up calls included):");
    let mut fine = true;
    for ((before, after), (name, tier_hits, other_hits, measured)) in checks.iter().zip([
        (
            "in-process group",
            (|s: &Stats| s.l1_hits) as fn(&Stats) -> u64,
            (|s: &Stats| s.l2_hits) as fn(&Stats) -> u64,
            calls("ours/l1_hit"),
        ),
        (
            "Redis group",
            |s: &Stats| s.l2_hits,
            |s: &Stats| s.l1_hits,
            calls("ours/l2_hit"),
        ),
    ]) {
        let delta = |field: fn(&Stats) -> u64| field(after) - field(before);
        let trouble = delta(|s| s.loads)
            + delta(|s| s.coalesced)
            + delta(|s| s.l2_errors)
            + delta(|s| s.l2_timeouts)
            + delta(|s| s.l2_skipped);
        println!(
            "  {name}: {} hits of the tier ({measured} measured calls), {} of the other, \
             loads + coalesced + L2 errors/timeouts/skipped {trouble}",
            delta(tier_hits),
            delta(other_hits)
        );
        fine &= delta(tier_hits) >= measured && delta(other_hits) == 0 && trouble == 0;
    }
    if !fine {
        println!("  WARNING: some measured calls were not the hits they claim to be");
    }
}
