//! Cache stampede: many concurrent callers of one cold key whose body takes
//! 50 ms. For each scenario the bench counts the body runs (loads) and
//! records how long each caller's call took (its wait), then prints loads
//! and the p50 / p99 / max wait.
//!
//! | scenario            | instances × callers | what a caller does                                                |
//! |---------------------|---------------------|-------------------------------------------------------------------|
//! | `naive cache-aside` | 1 × 1000            | redis-rs `GET`; on a miss run the body, then `SET .. EX 60`       |
//! | `ours, no lock`     | 1 × 1000, 4 × 250   | `#[cached(key = "hot:<id>", ttl = 60)]`: in-process single-flight |
//! | `ours, lock`        | 1 × 1000, 4 × 250   | the same with `lock`: one load per key across instances           |
//!
//! "Instances" are separate `Cache`s (each its own L1, single-flight,
//! connection and "filled" subscription) in this process, all on the one
//! redis-server the bench starts on a free loopback port. Callers are Tokio
//! tasks on a multi-thread runtime; they all wait on a barrier, then each
//! times its own call. Waking 1000 tasks takes the runtime a millisecond or
//! a few, so a caller that starts after the body began waits less than the
//! body; the bench prints that spread of start times too. It also measures
//! the body itself (Tokio's timer rounds the 50 ms sleep up, to ~51 ms), and
//! for the 4-instance scenarios splits the callers by whether their instance
//! ran the body: with `lock`, the callers of the other three instances are
//! the ones that pay for the lock (waiting for the "filled" message, then a
//! `GET`).
//!
//! Before the rounds, every instance is warmed with one call on a key of its
//! own, and the bench waits until each instance's subscription to its
//! "filled" channel shows in `PUBSUB NUMSUB`.
//!
//! Each scenario runs R times (5; 2 with `BENCH_QUICK=1`), on a fresh key
//! every time. The runs are interleaved (round 1 of every scenario, then
//! round 2, ...) so that a burst of load from a neighbour spreads over the
//! scenarios. The tables give the median of each figure over the rounds
//! with the min–max range; the counters (`cache.stats()`) are checked
//! against the body runs at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_benches::{percentile, summary};
use cache_runtime::{Cache, Stats, cached};
use cache_test_support::RedisServer;
use redis::aio::MultiplexedConnection;
use tokio::sync::Barrier;

/// How long the body of the cold key takes.
const BODY: Duration = Duration::from_millis(50);

/// What the bodies of one instance record.
#[derive(Default)]
struct Counter {
    /// Body runs.
    loads: AtomicU64,
    /// Their summed duration, in microseconds.
    body_us: AtomicU64,
}

/// The body every scenario runs on a miss: count the run, take 50 ms.
async fn body(counter: &Counter, id: u64) -> u64 {
    counter.loads.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(BODY).await;
    let took = start.elapsed().as_micros() as u64;
    counter.body_us.fetch_add(took, Ordering::SeqCst);
    id * 10
}

#[cached(key = "hot:<id>", ttl = 60, cache = cache, skip(cache, counter))]
async fn ours(cache: &Cache, counter: &Counter, id: u64) -> u64 {
    body(counter, id).await
}

#[cached(key = "hot:<id>", ttl = 60, lock, cache = cache, skip(cache, counter))]
async fn ours_lock(cache: &Cache, counter: &Counter, id: u64) -> u64 {
    body(counter, id).await
}

/// What a user would write by hand: cache-aside on a multiplexed connection.
/// A failed `GET` counts as a miss and a failed `SET` is ignored, both
/// counted in `errors`.
async fn naive(
    connection: &MultiplexedConnection,
    counter: &Counter,
    errors: &AtomicU64,
    id: u64,
) -> u64 {
    let key = format!("naive:hot:{id}");
    let mut connection = connection.clone();
    let cached: redis::RedisResult<Option<u64>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await;
    match cached {
        Ok(Some(value)) => return value,
        Ok(None) => {}
        Err(_) => {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let value = body(counter, id).await;
    let stored: redis::RedisResult<()> = redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query_async(&mut connection)
        .await;
    if stored.is_err() {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    value
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Naive,
    Ours,
    OursLock,
}

struct Scenario {
    name: &'static str,
    kind: Kind,
    instances: usize,
    callers: usize,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "naive cache-aside",
        kind: Kind::Naive,
        instances: 1,
        callers: 1000,
    },
    Scenario {
        name: "ours, no lock",
        kind: Kind::Ours,
        instances: 1,
        callers: 1000,
    },
    Scenario {
        name: "ours, no lock",
        kind: Kind::Ours,
        instances: 4,
        callers: 250,
    },
    Scenario {
        name: "ours, lock",
        kind: Kind::OursLock,
        instances: 1,
        callers: 1000,
    },
    Scenario {
        name: "ours, lock",
        kind: Kind::OursLock,
        instances: 4,
        callers: 250,
    },
];

/// A scenario's long-lived parts: its `Cache` instances (none for the
/// naive baseline) and the raw connection.
struct Setup {
    caches: Vec<Cache>,
    connection: MultiplexedConnection,
    errors: Arc<AtomicU64>,
}

/// The figures of one run of a scenario; waits and durations in ms.
struct Run {
    /// Body runs, all instances together.
    loads: u64,
    /// Mean duration of those body runs (the 50 ms sleep as Tokio's timer
    /// delivers it).
    body: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Time from the first caller's start to the last one's (waking 1000
    /// tasks on the runtime's workers is not instantaneous).
    spread: f64,
    /// p50 and max wait of the callers on instances where the body ran.
    loaders: Option<(f64, f64)>,
    /// p50 and max wait of the callers on instances where it did not (they
    /// got another instance's value: `lock`).
    others: Option<(f64, f64)>,
}

fn main() {
    let rounds = if cache_benches::quick() { 2 } else { 5 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workers = runtime.metrics().num_workers();
    let server = RedisServer::start();
    let url = server.url();
    println!(
        "stampede: body {} ms, {rounds} rounds, Tokio multi-thread runtime with {workers} workers, \
         redis-server on {url}",
        BODY.as_millis()
    );

    let started = Instant::now();
    let results = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("redis URL");
        let mut setups = Vec::new();
        for (index, scenario) in SCENARIOS.iter().enumerate() {
            setups.push(setup(&client, &url, index, scenario).await);
        }
        let before: Vec<Option<Stats>> = setups.iter().map(total_stats).collect();

        let mut results: Vec<Vec<Run>> = SCENARIOS.iter().map(|_| Vec::new()).collect();
        let mut next_id = 1;
        for round in 1..=rounds {
            for (index, scenario) in SCENARIOS.iter().enumerate() {
                let run = run_once(scenario, &setups[index], next_id).await;
                next_id += 1;
                println!(
                    "round {round}/{rounds}  {:<24} loads {:>4}  body {:>6.2}  p50 {:>6.2}  p99 {:>6.2}  max {:>6.2}  starts spread {:>5.2} (ms)",
                    label(scenario),
                    run.loads,
                    run.body,
                    run.p50,
                    run.p99,
                    run.max,
                    run.spread
                );
                results[index].push(run);
            }
        }

        println!("\nChecks (cache.stats() summed over instances, over all rounds):");
        for (index, scenario) in SCENARIOS.iter().enumerate() {
            check(
                scenario,
                &setups[index],
                before[index].as_ref(),
                &results[index],
            );
        }
        results
    });
    let took = started.elapsed();
    drop(server);
    print_tables(rounds, &results);
    println!("\n(scenarios ran {:.1} s)", took.as_secs_f64());
}

fn print_tables(rounds: usize, results: &[Vec<Run>]) {
    println!(
        "\nMedian (min–max) over {rounds} rounds. Wait: each caller's own call, start to return, in ms. \
         Body: mean duration of the body runs, in ms. Starts spread: first to last caller's start, in ms.\n"
    );
    println!(
        "| scenario          | instances × callers | loads            | body             | wait p50         | wait p99         | wait max         | starts spread    |"
    );
    println!(
        "|-------------------|---------------------|-----------------:|-----------------:|-----------------:|-----------------:|-----------------:|-----------------:|"
    );
    for (scenario, runs) in SCENARIOS.iter().zip(results) {
        let of = |figure: fn(&Run) -> f64| runs.iter().map(figure).collect::<Vec<_>>();
        println!(
            "| {:<17} | {:<19} | {:>16} | {:>16} | {:>16} | {:>16} | {:>16} | {:>16} |",
            scenario.name,
            format!("{} × {}", scenario.instances, scenario.callers),
            summary(&of(|run| run.loads as f64), 0),
            summary(&of(|run| run.body), 1),
            summary(&of(|run| run.p50), 1),
            summary(&of(|run| run.p99), 1),
            summary(&of(|run| run.max), 1),
            summary(&of(|run| run.spread), 1),
        );
    }

    println!(
        "\nMulti-instance scenarios, callers split by whether their instance ran the body \
         (median (min–max) of the p50 / max wait, ms; the last column is the difference of the \
         two p50s within each round):\n"
    );
    println!(
        "| scenario          | instances × callers | ran the body: p50 | ran the body: max | did not: p50      | did not: max      | did not − ran, p50 |"
    );
    println!(
        "|-------------------|---------------------|------------------:|------------------:|------------------:|------------------:|-------------------:|"
    );
    for (scenario, runs) in SCENARIOS.iter().zip(results) {
        if scenario.instances < 2 {
            continue;
        }
        let split = |group: fn(&Run) -> Option<(f64, f64)>, max: bool| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(group)
                .map(|(p50, top)| if max { top } else { p50 })
                .collect();
            if values.is_empty() {
                "–".to_owned()
            } else {
                summary(&values, 1)
            }
        };
        // Within each round, so both sides saw the same stampede.
        let differences: Vec<f64> = runs
            .iter()
            .filter_map(|run| Some(run.others?.0 - run.loaders?.0))
            .collect();
        let paired = if differences.is_empty() {
            "–".to_owned()
        } else {
            summary(&differences, 1)
        };
        println!(
            "| {:<17} | {:<19} | {:>17} | {:>17} | {:>17} | {:>17} | {:>18} |",
            scenario.name,
            format!("{} × {}", scenario.instances, scenario.callers),
            split(|run| run.loaders, false),
            split(|run| run.loaders, true),
            split(|run| run.others, false),
            split(|run| run.others, true),
            paired,
        );
    }
}

fn label(scenario: &Scenario) -> String {
    format!(
        "{} {}x{}",
        scenario.name, scenario.instances, scenario.callers
    )
}

/// Builds a scenario's instances (each scenario its own namespace), waits
/// until every one is connected and subscribed to its "filled" channel,
/// and warms each with one call on a key of its own.
async fn setup(client: &redis::Client, url: &str, index: usize, scenario: &Scenario) -> Setup {
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the bench redis-server");
    let mut caches = Vec::new();
    if scenario.kind != Kind::Naive {
        let namespace = format!("s{index}");
        for _ in 0..scenario.instances {
            let cache =
                cache_benches::connected(Cache::builder().namespace(&namespace).redis_url(url))
                    .await;
            caches.push(cache);
        }
        // The waiters of `lock` wake on a message on this channel (a
        // re-check every 200 ms covers lost ones); the subscriptions are
        // made in the background, so make sure they are there. Channels
        // are named per database; the bench server's URL names none (0).
        let channel = format!("{namespace} #filled db0");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, subscribers): (String, usize) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut connection.clone())
                .await
                .expect("PUBSUB NUMSUB");
            if subscribers >= scenario.instances {
                break;
            }
            if Instant::now() > deadline {
                println!(
                    "WARNING: {}: {subscribers} of {} instances subscribed to {channel:?}",
                    label(scenario),
                    scenario.instances
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let setup = Setup {
        caches,
        connection,
        errors: Arc::new(AtomicU64::new(0)),
    };
    // Warm each instance's (or the raw connection's) path with key 0.
    let warm = Counter::default();
    match scenario.kind {
        Kind::Naive => {
            naive(&setup.connection, &warm, &setup.errors, 0).await;
        }
        Kind::Ours | Kind::OursLock => {
            for cache in &setup.caches {
                let value = if scenario.kind == Kind::Ours {
                    ours(cache, &warm, 0).await
                } else {
                    ours_lock(cache, &warm, 0).await
                };
                assert_eq!(value, 0);
            }
        }
    }
    setup
}

/// One stampede: every caller of every instance calls key `id` at once.
async fn run_once(scenario: &Scenario, setup: &Setup, id: u64) -> Run {
    let counters: Vec<Arc<Counter>> = (0..scenario.instances)
        .map(|_| Arc::new(Counter::default()))
        .collect();
    let total = scenario.instances * scenario.callers;
    let barrier = Arc::new(Barrier::new(total));
    let kind = scenario.kind;
    let mut tasks = Vec::with_capacity(total);
    for (instance, counter) in counters.iter().enumerate() {
        for _ in 0..scenario.callers {
            let cache = setup.caches.get(instance).cloned();
            let connection = setup.connection.clone();
            let (counter, errors, barrier) =
                (counter.clone(), setup.errors.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let value = match (kind, &cache) {
                    (Kind::Naive, _) => naive(&connection, &counter, &errors, id).await,
                    (Kind::Ours, Some(cache)) => ours(cache, &counter, id).await,
                    (Kind::OursLock, Some(cache)) => ours_lock(cache, &counter, id).await,
                    _ => unreachable!("a scenario of ours has its caches"),
                };
                (instance, value, start, start.elapsed().as_secs_f64() * 1e3)
            }));
        }
    }
    let mut waits = Vec::with_capacity(total);
    let (mut loaders, mut others) = (Vec::new(), Vec::new());
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for task in tasks {
        let (instance, value, start, wait) = task.await.expect("caller task");
        first = Some(first.map_or(start, |first| first.min(start)));
        last = Some(last.map_or(start, |last| last.max(start)));
        assert_eq!(value, id * 10, "every caller gets the value");
        waits.push(wait);
        if counters[instance].loads.load(Ordering::SeqCst) > 0 {
            loaders.push(wait);
        } else {
            others.push(wait);
        }
    }
    let loads: u64 = counters
        .iter()
        .map(|counter| counter.loads.load(Ordering::SeqCst))
        .sum();
    let body_us: u64 = counters
        .iter()
        .map(|counter| counter.body_us.load(Ordering::SeqCst))
        .sum();
    let p50_max = |mut waits: Vec<f64>| {
        waits.sort_by(f64::total_cmp);
        (!waits.is_empty()).then(|| (percentile(&waits, 0.50), waits[waits.len() - 1]))
    };
    waits.sort_by(f64::total_cmp);
    Run {
        loads,
        body: body_us as f64 / 1e3 / loads.max(1) as f64,
        p50: percentile(&waits, 0.50),
        p99: percentile(&waits, 0.99),
        max: waits[waits.len() - 1],
        spread: match (first, last) {
            (Some(first), Some(last)) => (last - first).as_secs_f64() * 1e3,
            _ => 0.0,
        },
        loaders: p50_max(loaders),
        others: p50_max(others),
    }
}

/// A scenario's counters, summed over its instances (none for the naive
/// baseline).
fn total_stats(setup: &Setup) -> Option<Stats> {
    let mut caches = setup.caches.iter().map(Cache::stats);
    let mut total = caches.next()?;
    for stats in caches {
        total.loads += stats.loads;
        total.coalesced += stats.coalesced;
        total.l2_hits += stats.l2_hits;
        total.l2_errors += stats.l2_errors;
        total.l2_timeouts += stats.l2_timeouts;
        total.l2_skipped += stats.l2_skipped;
        total.lock_acquired += stats.lock_acquired;
        total.lock_waits += stats.lock_waits;
        total.lock_wait_timeouts += stats.lock_wait_timeouts;
    }
    Some(total)
}

/// Prints what the counters say about the measured rounds, and warns when
/// they disagree with the loads the bodies counted.
fn check(scenario: &Scenario, setup: &Setup, before: Option<&Stats>, runs: &[Run]) {
    let counted: u64 = runs.iter().map(|run| run.loads).sum();
    let (Some(before), Some(after)) = (before, total_stats(setup)) else {
        let errors = setup.errors.load(Ordering::Relaxed);
        println!(
            "  {:<24} body runs {counted}, redis errors {errors}",
            label(scenario)
        );
        if errors != 0 {
            println!("  WARNING: some GET/SET failed (treated as misses / ignored)");
        }
        return;
    };
    let delta = |field: fn(&Stats) -> u64| field(&after) - field(before);
    let loads = delta(|s| s.loads);
    let trouble = delta(|s| s.l2_errors) + delta(|s| s.l2_timeouts) + delta(|s| s.l2_skipped);
    println!(
        "  {:<24} body runs {counted}, stats.loads {loads}, coalesced {}, L2 hits {}, \
         lock acquired {}, lock waits {}, lock wait timeouts {}, L2 errors/timeouts/skipped {trouble}",
        label(scenario),
        delta(|s| s.coalesced),
        delta(|s| s.l2_hits),
        delta(|s| s.lock_acquired),
        delta(|s| s.lock_waits),
        delta(|s| s.lock_wait_timeouts),
    );
    if loads != counted || trouble != 0 || delta(|s| s.lock_wait_timeouts) != 0 {
        println!("  WARNING: the counters disagree with the runs, or Redis misbehaved");
    }
}
