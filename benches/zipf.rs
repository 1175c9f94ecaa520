//! A Zipf-distributed key set ten times larger than L1: hit rate and
//! throughput, 64 tasks on a Tokio multi-thread runtime with 2 workers.
//!
//! 100 000 keys; ids drawn from a Zipf distribution with exponent 1.0
//! (`rand_distr::Zipf`, seeded, 2^20 draws generated once and shared by all
//! contenders, so they all see the same request stream). Every in-process
//! store holds at most 10 000 entries:
//!
//! | id                      | what one call does                                                                 |
//! |-------------------------|------------------------------------------------------------------------------------|
//! | `ours/l1`               | `#[cached]` fn on an in-process cache, `l1_capacity(10_000)`: hit, or load          |
//! | `ours/l1_l2`            | the same fn on a cache with Redis, L1 10 000 entries, all 100 000 keys in Redis      |
//! | `cached_crate/lru_ttl`  | `cached` 4.1 `#[cached(max_size = 10_000, ttl_secs = 3600)]` (an `LruTtlCache`)  |
//! | `raw/moka_future`       | `format!` the key, moka `future::Cache` (`max_capacity` 10 000) `get_with`, clone out |
//!
//! The body returns at once (it builds the `User`), so the throughput shows
//! what the cache itself costs; a miss counts one body run. Hit rate is
//! `1 - body runs / calls`; for ours, `cache.stats()` also splits hits into
//! L1 and L2. Before the rounds, `ours/l1_l2` is filled (every key loaded
//! once, so Redis holds all of them) and every contender runs one unmeasured
//! round to reach its steady state. Rounds interleave the contenders, with
//! the order rotating; the tables give the median over rounds (min–max).
//! `BENCH_QUICK=1`: 2 rounds of 0.3 s.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_benches::contenders::ours_get_user;
use cache_benches::keys::{
    MANY_KEYS as KEYS, ZIPF_DRAWS as DRAWS, ZIPF_EXPONENT as EXPONENT, ZIPF_SEED, walk, zipf_draws,
};
use cache_benches::{Throughput, User, median, run_tasks, summary, user};
use cache_runtime::{Cache, Stats};
use cache_test_support::RedisServer;

const TASKS: usize = 64;
const WORKERS: usize = 2;
const L1_CAPACITY: usize = 10_000;

/// Body runs of the contenders that have no stats of their own.
static CACHED_CRATE_LOADS: AtomicU64 = AtomicU64::new(0);
static MOKA_LOADS: AtomicU64 = AtomicU64::new(0);

#[cached::proc_macro::cached(max_size = 10_000, ttl_secs = 3600, companions = false)]
async fn cached_crate_get_user(id: u64) -> Option<User> {
    CACHED_CRATE_LOADS.fetch_add(1, Ordering::Relaxed);
    Some(user(id))
}

/// What a user of moka would write: `get_with` loads a missing key once
/// (concurrent callers of that key wait for it), then clone the value out.
async fn moka_get_with_user(
    moka: &moka::future::Cache<String, Arc<User>>,
    id: u64,
) -> Option<User> {
    let key = format!("user:{id}");
    let value = moka
        .get_with(key, async {
            MOKA_LOADS.fetch_add(1, Ordering::Relaxed);
            Arc::new(user(id))
        })
        .await;
    Some(User::clone(&value))
}

struct Contenders {
    draws: Vec<u32>,
    local: Cache,
    tiered: Cache,
    moka: moka::future::Cache<String, Arc<User>>,
}

impl Contenders {
    /// The id task `task` reads on its `call`-th call: each task walks the
    /// shared stream of draws from its own starting point.
    fn id(&self, task: usize, call: u64) -> u64 {
        walk(&self.draws, task, TASKS, call)
    }
}

const IDS: [&str; 4] = [
    "ours/l1",
    "ours/l1_l2",
    "cached_crate/lru_ttl",
    "raw/moka_future",
];

macro_rules! run_subject {
    ($id:expr, $c:expr, $duration:expr) => {{
        let c: &'static Contenders = $c;
        let duration: Duration = $duration;
        match $id {
            "ours/l1" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(ours_get_user(&c.local, c.id(task, call)).await);
                })
                .await
            }
            "ours/l1_l2" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(ours_get_user(&c.tiered, c.id(task, call)).await);
                })
                .await
            }
            "cached_crate/lru_ttl" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(cached_crate_get_user(c.id(task, call)).await);
                })
                .await
            }
            "raw/moka_future" => {
                run_tasks(TASKS, duration, move |task, call| async move {
                    black_box(moka_get_with_user(&c.moka, c.id(task, call)).await);
                })
                .await
            }
            other => unreachable!("no subject {other}"),
        }
    }};
}

/// What one round of one contender did.
struct Round {
    run: Throughput,
    /// Body runs.
    loads: u64,
    /// Ours only: (L1 hits, L2 hits).
    tiers: Option<(u64, u64)>,
}

impl Round {
    fn hit_rate(&self) -> f64 {
        1.0 - self.loads as f64 / self.run.calls as f64
    }
}

/// The counters a contender's round is read from.
fn counters(c: &Contenders, id: &str) -> (u64, Option<Stats>) {
    match id {
        "ours/l1" => (0, Some(c.local.stats())),
        "ours/l1_l2" => (0, Some(c.tiered.stats())),
        "cached_crate/lru_ttl" => (CACHED_CRATE_LOADS.load(Ordering::Relaxed), None),
        "raw/moka_future" => (MOKA_LOADS.load(Ordering::Relaxed), None),
        other => unreachable!("no subject {other}"),
    }
}

async fn round(c: &'static Contenders, id: &str, duration: Duration) -> Round {
    let (loads_before, stats_before) = counters(c, id);
    let run = run_subject!(id, c, duration);
    let (loads_after, stats_after) = counters(c, id);
    match (stats_before, stats_after) {
        (Some(before), Some(after)) => Round {
            run,
            loads: after.loads - before.loads,
            tiers: Some((
                after.l1_hits - before.l1_hits,
                after.l2_hits - before.l2_hits,
            )),
        },
        _ => Round {
            run,
            loads: loads_after - loads_before,
            tiers: None,
        },
    }
}

fn main() {
    let quick = cache_benches::quick();
    let (rounds, duration) = if quick {
        (2, Duration::from_millis(300))
    } else {
        (5, Duration::from_secs(2))
    };
    let runtime = cache_benches::multi_thread_runtime(WORKERS);
    let server = RedisServer::start();
    let url = server.url();

    let draws = zipf_draws(KEYS, EXPONENT, DRAWS, ZIPF_SEED);
    let distinct = {
        let mut seen = vec![false; KEYS as usize];
        draws.iter().for_each(|&id| seen[id as usize] = true);
        seen.iter().filter(|&&seen| seen).count()
    };
    let top_share =
        draws.iter().filter(|&&id| u64::from(id) < 10_000).count() as f64 / DRAWS as f64;
    println!(
        "zipf: {KEYS} keys, exponent {EXPONENT}, {DRAWS} draws ({distinct} distinct ids; the 10 000 \
         most popular take {:.1}% of the draws: the hit rate of a cache holding exactly those), L1 \
         capacity {L1_CAPACITY}, {TASKS} tasks, {} workers, {rounds} rounds of {} ms, redis-server on {url}",
        top_share * 100.0,
        runtime.metrics().num_workers(),
        duration.as_millis()
    );

    let contenders: &'static Contenders = Box::leak(Box::new(runtime.block_on(async {
        let local = Cache::builder()
            .namespace("zipf-local")
            .l1_capacity(L1_CAPACITY)
            .l1_max_ttl(Duration::from_secs(3600))
            .build()
            .await
            .expect("valid configuration");
        let tiered = Cache::builder()
            .namespace("zipf")
            .redis_url(&url)
            .l1_capacity(L1_CAPACITY)
            .l1_max_ttl(Duration::from_secs(3600))
            .build()
            .await
            .expect("valid configuration");
        assert!(tiered.is_l2_connected());
        let moka = moka::future::Cache::<String, Arc<User>>::builder()
            .max_capacity(L1_CAPACITY as u64)
            .time_to_live(Duration::from_secs(3600))
            .build();
        Contenders {
            draws,
            local,
            tiered,
            moka,
        }
    })));

    let results: Vec<Vec<Round>> = runtime.block_on(async {
        fill_redis(contenders).await;
        for id in IDS {
            round(contenders, id, duration).await; // steady state
        }
        let mut results: Vec<Vec<Round>> = IDS.iter().map(|_| Vec::new()).collect();
        for r in 0..rounds {
            for offset in 0..IDS.len() {
                let at = (r + offset) % IDS.len();
                results[at].push(round(contenders, IDS[at], duration).await);
            }
        }
        results
    });

    println!(
        "\nMedian (min–max) over {rounds} rounds of {} ms:\n",
        duration.as_millis()
    );
    println!(
        "| contender | calls/s | hit rate | L1 hit rate | L2 hit rate | body runs/s | entries held |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (id, rounds) in IDS.iter().zip(&results) {
        let of = |figure: &dyn Fn(&Round) -> f64| rounds.iter().map(figure).collect::<Vec<_>>();
        let (l1, l2) = match rounds[0].tiers {
            Some(_) => (
                summary(
                    &of(&|r| r.tiers.map_or(0.0, |t| t.0 as f64) / r.run.calls as f64 * 100.0),
                    1,
                ) + " %",
                summary(
                    &of(&|r| r.tiers.map_or(0.0, |t| t.1 as f64) / r.run.calls as f64 * 100.0),
                    1,
                ) + " %",
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "| `{id}` | {} | {} % | {l1} | {l2} | {} | {} |",
            summary(&of(&|r| r.run.per_second()), 0),
            summary(&of(&|r| r.hit_rate() * 100.0), 1),
            summary(&of(&|r| r.loads as f64 / r.run.elapsed.as_secs_f64()), 0),
            runtime.block_on(entries(contenders, id)),
        );
    }
    println!("\nRatios (median of the per-round ratios):");
    let pairs = [
        ("ours/l1", "cached_crate/lru_ttl"),
        ("ours/l1", "raw/moka_future"),
        ("ours/l1_l2", "ours/l1"),
        ("ours/l1_l2", "raw/moka_future"),
    ];
    for (a, b) in pairs {
        let (ra, rb) = (
            &results[IDS.iter().position(|id| *id == a).unwrap()],
            &results[IDS.iter().position(|id| *id == b).unwrap()],
        );
        let throughput: Vec<f64> = ra
            .iter()
            .zip(rb)
            .map(|(a, b)| a.run.per_second() / b.run.per_second())
            .collect();
        let misses: Vec<f64> = ra
            .iter()
            .zip(rb)
            .map(|(a, b)| (1.0 - a.hit_rate()) / (1.0 - b.hit_rate()))
            .collect();
        let misses = if misses.iter().all(|m| m.is_finite()) {
            format!("{:.2}x", median(&misses))
        } else {
            "–".to_owned()
        };
        println!(
            "  {a} vs {b}: throughput {:.2}x, miss rate (body runs per call) {misses}",
            median(&throughput)
        );
    }
    let tiered = contenders.tiered.stats();
    println!(
        "\nours/l1_l2 over the whole run: L2 errors {}, timeouts {}, skipped {}, L1 evictions {}",
        tiered.l2_errors, tiered.l2_timeouts, tiered.l2_skipped, tiered.l1_evictions
    );
    drop(server);
}

/// Loads every key once through `ours/l1_l2`'s cache, 64 at a time, so
/// Redis holds all of them.
async fn fill_redis(c: &'static Contenders) {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS as u64 {
        tasks.spawn(async move {
            let mut id = task;
            while id < KEYS {
                assert_eq!(ours_get_user(&c.tiered, id).await, Some(user(id)));
                id += TASKS as u64;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a fill task panicked");
    }
    let stats = c.tiered.stats();
    assert_eq!(
        stats.l2_errors + stats.l2_timeouts + stats.l2_skipped,
        0,
        "Redis took every key"
    );
}

/// How many entries a contender holds now.
async fn entries(c: &Contenders, id: &str) -> u64 {
    match id {
        "ours/l1" => c.local.stats().l1_entries,
        "ours/l1_l2" => c.tiered.stats().l1_entries,
        "raw/moka_future" => {
            c.moka.run_pending_tasks().await;
            c.moka.entry_count()
        }
        // The static the macro declares, named after the function.
        "cached_crate/lru_ttl" => {
            cached::Cached::cache_size(&*CACHED_CRATE_GET_USER.read().await) as u64
        }
        other => unreachable!("no subject {other}"),
    }
}
