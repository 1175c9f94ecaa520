//! What an L2 hit costs on a Redis Cluster: ours against redis-rs's own
//! cluster client, on one local cluster (`RedisCluster`: 3 masters and
//! 3 replicas of redis-server on free loopback ports), in the same run.
//!
//! | id | what one call does |
//! |---|---|
//! | `ours_l2_hit` | `ours_get_user_l2` (`#[cached(l1 = false)]`: every call a Redis `GET` and a decode) on `Cache::builder().redis_cluster(seed_urls)` |
//! | `raw_cluster_get_decode` | `format!` the key, `GET` on redis-rs's `ClusterConnection` (`ClusterClient::new(seed_urls)?.get_async_connection()`, one shared by every task), bincode decode: `redis_get_user`, the raw contender of `hits` and `throughput` |
//! | `raw_cluster_deadline` | the same call under `tokio::time::timeout` of ours' default `l2_timeout` (200 ms): the raw client plus the deadline per call that ours keeps and it does not (redis-rs's cluster client sets no response timeout by default), to show what that guarantee costs on its own |
//!
//! Both read 1024 users, stored before anything is measured: ours under
//! `bench-cluster:user:<id>` (its envelope around the bincode payload),
//! raw under `raw:user:<id>` (the bincode payload alone). Neither key set
//! has a hash tag, so each spreads over the three masters (the bench
//! prints how many keys each master holds, and fails if one holds less
//! than a sixth of a set).
//!
//! 1. **Latency, one task** (Tokio current-thread runtime): criterion
//!    medians of both contenders, each call reading the next of the 1024
//!    ids in turn, and their ratio; then the ratio again interleaved, as
//!    `hits` checks it (300 rounds of a batch of 100 calls of each,
//!    alternating which goes first; the median of the per-round ratios),
//!    which a burst of load from a neighbour hits on both sides.
//! 2. **Throughput, 64 tasks** on a multi-thread runtime with 2 workers,
//!    measured as in `throughput.rs`: task `t` reads the 16 ids equal to
//!    `t` modulo 64 in turn (no two tasks share a key, so ours never
//!    coalesces two reads), rounds of a fixed time, the contenders'
//!    rounds alternating; the median calls per second (min–max) and the
//!    median of the per-round ratios ours / raw (issue 14's target: at
//!    least 0.9x), with the CPU time per call of the bench process and of
//!    the three masters' redis-servers together. `raw_cluster_deadline`
//!    is measured alongside in both parts and compared with `raw` and ours;
//!    the target stays ours against the raw client without a deadline.
//!
//! Run with `cargo bench -p cache-benches --bench cluster` (`BENCH_QUICK=1`
//! for a smoke run whose numbers are not worth reading: 0.5 s criterion
//! measurements, 10 interleaved rounds, 2 throughput rounds of 0.2 s).
//! `cargo bench -p cache-benches --bench cluster -- <text>...` runs only
//! the contenders whose name contains one of the texts, in both parts.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use cache_benches::contenders::{ours_get_user_l2, redis_get_user, store_raw_user};
use cache_benches::{
    Throughput, User, connected, cpu_time, format_ns, median, median_ns, median_ns_or_dash,
    redis_server_pid, run_tasks, summary, timing, user,
};
use cache_runtime::{Cache, Stats};
use cache_test_support::RedisCluster;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

const NAMESPACE: &str = "bench-cluster";
/// Users stored for both contenders.
const KEYS: u64 = 1024;
const TASKS: usize = 64;
const WORKERS: usize = 2;
/// Ours' throughput at least this times the raw cluster client's (issue 14).
const THROUGHPUT_TARGET: f64 = 0.9;

/// The contenders' names (criterion's ids are `cluster/<name>`).
const OURS: &str = "ours_l2_hit";
const RAW: &str = "raw_cluster_get_decode";
const RAW_DEADLINE: &str = "raw_cluster_deadline";
/// `RAW_DEADLINE`'s deadline per call: ours' default `l2_timeout`.
const DEADLINE: Duration = Duration::from_millis(200);

/// [`redis_get_user`] under a deadline, as ours runs every Redis call.
async fn redis_get_user_by(raw: &ClusterConnection, id: u64) -> Option<User> {
    tokio::time::timeout(DEADLINE, redis_get_user(raw, id))
        .await
        .expect("a GET on the local bench cluster within the deadline")
}

/// The key task `task` reads on its `call`-th call: ids equal to `task`
/// modulo `TASKS`, so no two tasks share a key.
fn key_of(task: usize, call: u64) -> u64 {
    task as u64 + TASKS as u64 * (call % (KEYS / TASKS as u64))
}

/// Both contenders, connected to the cluster on the runtime that will
/// drive them (each spawns its connection's tasks there).
struct Contenders {
    ours: Cache,
    raw: ClusterConnection,
}

impl Contenders {
    async fn connect(seeds: &[String]) -> Contenders {
        let ours = connected(
            Cache::builder()
                .namespace(NAMESPACE)
                .redis_cluster(seeds.iter().cloned()),
        )
        .await;
        let raw = ClusterClient::new(seeds.iter().map(String::as_str))
            .expect("the cluster's seed URLs")
            .get_async_connection()
            .await
            .expect("connect to the bench cluster");
        Contenders { ours, raw }
    }

    /// Reads every user through both contenders and checks the values.
    async fn read_all(&self) {
        for id in 0..KEYS {
            let expected = Some(user(id));
            assert_eq!(ours_get_user_l2(&self.ours, id).await, expected);
            assert_eq!(redis_get_user(&self.raw, id).await, expected);
        }
    }
}

fn main() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_urls();
    println!(
        "cluster: {} masters, {} nodes, seeds {}",
        cluster.masters().len(),
        seeds.len(),
        seeds.join(", ")
    );
    latency(&cluster, &seeds);
    throughput(&cluster, &seeds);
    drop(cluster);
}

/// Stores every user for both contenders (ours by loading it once), shows
/// how the keys spread over the masters, then measures single-task latency.
fn latency(cluster: &RedisCluster, seeds: &[String]) {
    let started = SystemTime::now();
    let mut criterion = cache_benches::criterion().configure_from_args();
    let runtime = cache_benches::current_thread_runtime();
    let contenders = runtime.block_on(async {
        let contenders = Contenders::connect(seeds).await;
        for id in 0..KEYS {
            assert!(ours_get_user_l2(&contenders.ours, id).await.is_some());
            store_raw_user(&contenders.raw, id).await;
        }
        contenders.ours.settled().await;
        contenders.read_all().await;
        contenders
    });
    let stored = contenders.ours.stats();
    assert_eq!(stored.loads, KEYS, "one load per user: {stored:?}");
    print_spread(cluster);

    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(2), Duration::from_secs(8), 100);
    let mut group = criterion.benchmark_group("cluster");
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
    let ours = &contenders.ours;
    let raw = &contenders.raw;
    group.bench_function(OURS, |bencher| {
        let mut next = 0u64;
        bencher.to_async(&runtime).iter(|| {
            let id = next % KEYS;
            next += 1;
            async move { ours_get_user_l2(ours, black_box(id)).await }
        })
    });
    group.bench_function(RAW, |bencher| {
        let mut next = 0u64;
        bencher.to_async(&runtime).iter(|| {
            let id = next % KEYS;
            next += 1;
            async move { redis_get_user(raw, black_box(id)).await }
        })
    });
    group.bench_function(RAW_DEADLINE, |bencher| {
        let mut next = 0u64;
        bencher.to_async(&runtime).iter(|| {
            let id = next % KEYS;
            next += 1;
            async move { redis_get_user_by(raw, black_box(id)).await }
        })
    });
    group.finish();
    criterion.final_summary();

    // Every measured call was an L2 hit: nothing loaded again.
    let after = contenders.ours.stats();
    println!(
        "\nLatency tier check: {} L2 hits, {} L1 hits, loads + coalesced + L2 errors/timeouts/skipped {}",
        after.l2_hits - stored.l2_hits,
        after.l1_hits - stored.l1_hits,
        trouble(&stored, &after)
    );
    assert_eq!(trouble(&stored, &after), 0, "{after:?}");
    assert_eq!(after.l1_hits, stored.l1_hits, "{after:?}");

    let home = cache_benches::criterion_home();
    let medians: Vec<Option<f64>> = [OURS, RAW, RAW_DEADLINE]
        .iter()
        .map(|id| median_ns(&home, &format!("cluster/{id}"), started))
        .collect();
    if let [Some(ours), Some(raw), deadline] = medians[..] {
        println!(
            "\nL2 hit median, one task: ours {}, raw cluster client {}: ours/raw {:.2}x",
            format_ns(ours),
            format_ns(raw),
            ours / raw
        );
        if let Some(deadline) = deadline {
            println!(
                "  raw with a deadline per call {}: {:.2}x raw; ours/it {:.2}x",
                format_ns(deadline),
                deadline / raw,
                ours / deadline
            );
        }
        // Not in criterion's test mode (no medians): it checks that the
        // calls work, which the measurement above did.
        let rounds = if cache_benches::quick() { 10 } else { 300 };
        let ratios = runtime.block_on(interleaved(&contenders, rounds));
        println!(
            "Interleaved check (batches of {BATCH} calls, {rounds} rounds): ours/raw {:.2}x \
             (median of the per-round ratios; rounds {})",
            median(&ratios),
            summary(&ratios, 2)
        );
    }
    // The caches' and connections' tasks live on this runtime: drop them
    // while it runs.
    runtime.block_on(async move { drop(contenders) });
}

/// Calls per batch of the interleaved latency check.
const BATCH: u64 = 100;

/// Time of `BATCH` calls of contender `id`, reading ids from `first` on.
async fn time_batch(contenders: &Contenders, id: &str, first: u64) -> Duration {
    let started = Instant::now();
    for call in first..first + BATCH {
        let key = call % KEYS;
        match id {
            OURS => black_box(ours_get_user_l2(&contenders.ours, black_box(key)).await),
            RAW => black_box(redis_get_user(&contenders.raw, black_box(key)).await),
            RAW_DEADLINE => black_box(redis_get_user_by(&contenders.raw, black_box(key)).await),
            other => unreachable!("no contender {other}"),
        };
    }
    started.elapsed()
}

/// The latency ratio again, as `hits` checks it: `rounds` rounds of a batch
/// of each contender back to back, alternating which goes first, so that a
/// burst of load from a neighbour lands on both sides of a ratio. Returns
/// the per-round time ratios ours / raw.
async fn interleaved(contenders: &Contenders, rounds: u64) -> Vec<f64> {
    // Warm both (the connections to every node, the branch predictors).
    time_batch(contenders, OURS, 0).await;
    time_batch(contenders, RAW, 0).await;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let first = round * BATCH;
        let (ours, raw) = if round % 2 == 0 {
            let ours = time_batch(contenders, OURS, first).await;
            (ours, time_batch(contenders, RAW, first).await)
        } else {
            let raw = time_batch(contenders, RAW, first).await;
            (time_batch(contenders, OURS, first).await, raw)
        };
        ratios.push(ours.as_secs_f64() / raw.as_secs_f64());
    }
    ratios
}

/// Loads, coalesced callers and Redis trouble between two snapshots: none
/// of them may happen while hits are measured.
fn trouble(before: &Stats, after: &Stats) -> u64 {
    (after.loads - before.loads)
        + (after.coalesced - before.coalesced)
        + (after.l2_errors - before.l2_errors)
        + (after.l2_timeouts - before.l2_timeouts)
        + (after.l2_skipped - before.l2_skipped)
}

/// Prints how many of each contender's keys every master holds, and fails
/// when one holds less than a sixth of a key set (an even spread gives a
/// third): the bench is meant to measure reads spread over the cluster.
fn print_spread(cluster: &RedisCluster) {
    println!("Keys per master:");
    for master in cluster.masters() {
        let count = |pattern: &str| -> u64 {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut master.client())
                .expect("KEYS on a master");
            keys.len() as u64
        };
        let (ours, raw) = (count(&format!("{NAMESPACE}:user:*")), count("raw:user:*"));
        println!("  127.0.0.1:{}: ours {ours}, raw {raw}", master.port());
        assert!(
            ours >= KEYS / 6 && raw >= KEYS / 6,
            "the keys did not spread over every master"
        );
    }
}

/// Runs `TASKS` tasks calling contender `id` for `duration`.
async fn run(id: &str, contenders: &'static Contenders, duration: Duration) -> Throughput {
    match id {
        OURS => {
            run_tasks(TASKS, duration, move |task, call| async move {
                black_box(ours_get_user_l2(&contenders.ours, key_of(task, call)).await);
            })
            .await
        }
        RAW => {
            run_tasks(TASKS, duration, move |task, call| async move {
                black_box(redis_get_user(&contenders.raw, key_of(task, call)).await);
            })
            .await
        }
        RAW_DEADLINE => {
            run_tasks(TASKS, duration, move |task, call| async move {
                black_box(redis_get_user_by(&contenders.raw, key_of(task, call)).await);
            })
            .await
        }
        other => unreachable!("no contender {other}"),
    }
}

/// 64 tasks on 2 workers, rounds alternating between the contenders.
fn throughput(cluster: &RedisCluster, seeds: &[String]) {
    let (rounds, duration) = if cache_benches::quick() {
        (2, Duration::from_millis(200))
    } else {
        (7, Duration::from_secs(1))
    };
    let runtime = cache_benches::multi_thread_runtime(WORKERS);
    println!(
        "\nthroughput: {TASKS} tasks, Tokio multi-thread runtime with {} workers, {KEYS} keys, \
         {rounds} rounds of {} ms per contender",
        runtime.metrics().num_workers(),
        duration.as_millis()
    );
    // Leaked: the tasks of `run_tasks` are `'static`. New caches and
    // connections on this runtime, reading what `latency` stored.
    let contenders: &'static Contenders = Box::leak(Box::new(runtime.block_on(async {
        let contenders = Contenders::connect(seeds).await;
        contenders.read_all().await;
        contenders
    })));
    // The masters serve every read; the replicas only follow them.
    let redis_pids: Vec<String> = cluster
        .masters()
        .iter()
        .filter_map(|master| redis_server_pid(master.port()))
        .collect();
    let redis_cpu = || -> Option<Duration> {
        let times: Option<Vec<Duration>> = redis_pids.iter().map(|pid| cpu_time(pid)).collect();
        Some(times?.into_iter().sum())
    };

    // `cargo bench -p cache-benches --bench cluster -- <text>...`: only the
    // contenders whose name contains one of the texts (criterion filters
    // its part by the same texts), to profile one, for instance.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let contender_ids: Vec<&str> = [OURS, RAW, RAW_DEADLINE]
        .into_iter()
        .filter(|id| filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str())))
        .collect();
    let before = contenders.ours.stats();
    let mut runs: Vec<Vec<Throughput>> = vec![Vec::new(); contender_ids.len()];
    // Per contender, the masters' CPU time per call in each round (ns).
    let mut redis_ns: Vec<Vec<f64>> = vec![Vec::new(); contender_ids.len()];
    runtime.block_on(async {
        // Warm both (connections to every node, the runtime's workers).
        for id in &contender_ids {
            run(id, contenders, Duration::from_millis(100)).await;
        }
        for round in 0..rounds {
            for offset in 0..contender_ids.len() {
                let at = (round + offset) % contender_ids.len();
                let redis_before = redis_cpu();
                let measured = run(contender_ids[at], contenders, duration).await;
                if let (Some(before), Some(after)) = (redis_before, redis_cpu()) {
                    let ns = after.saturating_sub(before).as_nanos() as f64;
                    redis_ns[at].push(ns / measured.calls as f64);
                }
                runs[at].push(measured);
            }
        }
    });
    let after = contenders.ours.stats();

    println!(
        "\nCalls per second, median (min–max) over {rounds} rounds of {} ms:",
        duration.as_millis()
    );
    for ((id, runs), redis) in contender_ids.iter().zip(&runs).zip(&redis_ns) {
        let (rate, cpu) = Throughput::rate_and_cpu(runs);
        println!(
            "  {id:<24} {rate:>30}   CPU per call: bench {cpu:>8}, masters {:>8}",
            median_ns_or_dash(redis)
        );
    }
    let runs_of = |id: &str| {
        contender_ids
            .iter()
            .position(|known| *known == id)
            .map(|at| &runs[at])
    };
    let ratios = |of: &[Throughput], to: &[Throughput]| -> Vec<f64> {
        of.iter()
            .zip(to)
            .map(|(of, to)| of.per_second() / to.per_second())
            .collect()
    };
    if let (Some(ours), Some(raw)) = (runs_of(OURS), runs_of(RAW)) {
        let ratios = ratios(ours, raw);
        let ratio = median(&ratios);
        let verdict = if ratio >= THROUGHPUT_TARGET {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "\nRatio (calls per second; median of the per-round ratios):\n  {OURS} vs {RAW}: \
             {ratio:.2}x (rounds: {})  (target >= {THROUGHPUT_TARGET:.2}x: {verdict})",
            summary(&ratios, 2)
        );
    }
    if let (Some(deadline), Some(raw)) = (runs_of(RAW_DEADLINE), runs_of(RAW)) {
        let to_raw = ratios(deadline, raw);
        println!(
            "  {RAW_DEADLINE} vs {RAW}: {:.2}x (rounds: {})",
            median(&to_raw),
            summary(&to_raw, 2)
        );
        if let Some(ours) = runs_of(OURS) {
            let ours_to_it = ratios(ours, deadline);
            println!(
                "  {OURS} vs {RAW_DEADLINE}: {:.2}x (rounds: {})",
                median(&ours_to_it),
                summary(&ours_to_it, 2)
            );
        }
    }

    let measured: u64 = runs_of(OURS).map_or(0, |runs| runs.iter().map(|run| run.calls).sum());
    println!(
        "\nThroughput tier check (cache.stats(), warm-up calls included): {} L2 hits \
         ({measured} measured calls), {} L1 hits, loads + coalesced + L2 errors/timeouts/skipped {}",
        after.l2_hits - before.l2_hits,
        after.l1_hits - before.l1_hits,
        trouble(&before, &after)
    );
    assert!(after.l2_hits - before.l2_hits >= measured, "{after:?}");
    assert_eq!(after.l1_hits, before.l1_hits, "{after:?}");
    assert_eq!(trouble(&before, &after), 0, "{after:?}");
}
