//! Invalidation: how soon another instance drops its L1 copy, and what tags
//! cost a hit. Two parts, in one run:
//!
//! 1. **Latency across instances** (a plain loop, N = 2000, 200 with
//!    `BENCH_QUICK=1`). Two `Cache`s, A and B, in this process share one
//!    namespace on one redis-server. In each round B reads a `#[cached]` key
//!    twice (a load, then an L1 hit, both checked), then A calls an
//!    `#[invalidates]` function for that key. The bench busy-polls
//!    `B.stats()` (spinning, and yielding to Tokio and to the OS between
//!    checks) until `invalidations_received` has grown and `l1_entries`
//!    has fallen (both are read without touching the entry), then checks
//!    that B's next read of the key is a load. The latency is the time from
//!    A's call returning to that observation. Each round also times the raw
//!    redis-rs equivalent on the same server: `PUBLISH` of a message of the
//!    same shape on a `MultiplexedConnection`, received by a task reading
//!    `client.get_async_pubsub()`, which counts messages in an atomic that
//!    the bench polls the same way. The two alternate within every round
//!    (which goes first alternates too), so load bursts hit both.
//! 2. **Cost of the tag check on an L1 hit** (criterion). The same
//!    `#[cached]` function, same signature and value (`cache_benches::User`),
//!    with and without `tags = ["org:<org>"]`, single task on a current-thread
//!    runtime; medians, their ratio, and the ratio measured again
//!    interleaved (alternating batches, median of per-round ratios), as in
//!    `hits`.
//!
//! Everything runs against a redis-server the bench starts on a free
//! loopback port (`cache_test_support::RedisServer`) and stops at the end.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cache_benches::{User, criterion_home, median_ns, timing, user};
use cache_runtime::{Cache, Stats, cached, invalidates};
use cache_test_support::RedisServer;
use futures_util::StreamExt;

/// The organisation every user of the bench belongs to.
const ORG: u32 = 7;
/// The key of part 2.
const ID: u64 = 42;
/// How long a poll waits for a delivery before the bench gives up.
const POLL_LIMIT: Duration = Duration::from_secs(2);

/// One application instance (part 1): its own cache.
struct Instance {
    cache: Cache,
}

impl Instance {
    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    async fn get_user(&self, id: u64) -> Option<User> {
        Some(user(id))
    }

    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn update_user(&self, id: u64) -> Result<(), Infallible> {
        black_box(id);
        Ok(())
    }
}

// Part 2: the same function with and without a tag. `org` is in both
// signatures (skipped: it only names the tag) so the calls do the same work
// apart from the tag.
#[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache, org))]
async fn untagged(cache: &Cache, org: u32, id: u64) -> Option<User> {
    let _ = org;
    Some(user(id))
}

#[cached(key = "user:<id>", ttl = 300, tags = ["org:<org>"], cache = cache, skip(cache, org))]
async fn tagged(cache: &Cache, org: u32, id: u64) -> Option<User> {
    let _ = org;
    Some(user(id))
}

fn main() {
    let quick = cache_benches::quick();
    let rounds = if quick { 200 } else { 2000 };
    let server = RedisServer::start();
    let url = server.url();

    let part1_started = Instant::now();
    let latency = latency_part(&url, rounds);
    let part1_took = part1_started.elapsed();

    let part2_started = Instant::now();
    let tag_check = tag_check_part(&url, quick);
    let part2_took = part2_started.elapsed();
    drop(server);

    latency.print(rounds);
    tag_check.print(quick);
    println!(
        "\n(part 1 ran {:.1} s, part 2 {:.1} s)",
        part1_took.as_secs_f64(),
        part2_took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Part 1: invalidation latency across instances.

/// One round's times, measured from the start of the call or publish.
#[derive(Clone, Copy)]
struct Sample {
    /// Until the call (ours) or `PUBLISH` (raw) returned.
    call: Duration,
    /// Until the receiver was seen done.
    seen: Duration,
    /// Whether the receiver was done at the first poll after the return.
    done_at_return: bool,
}

impl Sample {
    /// From the return to the receiver seen done: the measured latency.
    fn after_return(&self) -> Duration {
        self.seen - self.call
    }
}

struct LatencyResults {
    ours: Vec<Sample>,
    raw: Vec<Sample>,
    workers: usize,
    checks: Vec<String>,
}

fn latency_part(url: &str, rounds: usize) -> LatencyResults {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workers = runtime.metrics().num_workers();
    let url = url.to_owned();
    let results = runtime.block_on(async move {
        // The measuring loop runs as a task on a worker, so that its
        // `yield_now` lets the runtime's other tasks run.
        tokio::spawn(async move { measure_latency(&url, rounds).await })
            .await
            .expect("the measuring task")
    });
    LatencyResults { workers, ..results }
}

async fn instance(url: &str) -> Instance {
    let cache = cache_benches::connected(
        Cache::builder()
            .namespace("inval")
            .redis_url(url)
            .l1_max_ttl(Duration::from_secs(3600)),
    )
    .await;
    // A plain loop rather than `cache_test_support::eventually`: its async
    // closure would make this future not `Send` (the task is spawned).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cache.stats().channel_verified {
        assert!(
            Instant::now() < deadline,
            "the start-up probe came back through the channel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Instance { cache }
}

async fn measure_latency(url: &str, rounds: usize) -> LatencyResults {
    let a = instance(url).await;
    let b = instance(url).await;
    // Each start-up probe reaches the other instance (and counts there as a
    // received message); let them all land before the first round.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The raw redis-rs pair: a subscriber task counting messages, and a
    // multiplexed connection publishing.
    let client = redis::Client::open(url).expect("redis URL");
    let raw_channel = "raw #bench";
    let mut subscriber = client
        .get_async_pubsub()
        .await
        .expect("connect the raw subscriber");
    subscriber
        .subscribe(raw_channel)
        .await
        .expect("subscribe the raw subscriber");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let listener = tokio::spawn(async move {
        let mut messages = subscriber.into_on_message();
        while let Some(message) = messages.next().await {
            // Read the payload, as our listener does.
            if let Ok(payload) = message.get_payload::<String>() {
                black_box(payload);
                counter.fetch_add(1, Ordering::Release);
            }
        }
    });
    let mut publisher = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect the raw publisher");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(raw_channel)
            .query_async(&mut publisher)
            .await
            .expect("PUBSUB NUMSUB");
        if counts.first().is_some_and(|(_, count)| *count == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the raw subscriber is subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let b_start = b.cache.stats();
    let mut ours = Vec::with_capacity(rounds);
    let mut raw = Vec::with_capacity(rounds);
    let mut next_read_loads = 0;
    for round in 0..rounds {
        let id = 1_000 + round as u64;
        let raw_payload = format!("{:016x}\nK user:{id}", 0x5eed_u64);
        if round % 2 == 0 {
            ours.push(ours_round(&a, &b, id, &mut next_read_loads).await);
            raw.push(raw_round(&mut publisher, raw_channel, &raw_payload, &received).await);
        } else {
            raw.push(raw_round(&mut publisher, raw_channel, &raw_payload, &received).await);
            ours.push(ours_round(&a, &b, id, &mut next_read_loads).await);
        }
    }
    let (a_end, b_end) = (a.cache.stats(), b.cache.stats());
    listener.abort();

    let checks = latency_checks(rounds, next_read_loads, &b_start, &a_end, &b_end);
    LatencyResults {
        ours,
        raw,
        workers: 0,
        checks,
    }
}

/// One round of ours: B caches the key in L1, A invalidates it, B is
/// polled until its listener has applied the message.
async fn ours_round(a: &Instance, b: &Instance, id: u64, next_read_loads: &mut usize) -> Sample {
    let before_reads = b.cache.stats();
    assert_eq!(b.get_user(id).await, Some(user(id)));
    assert_eq!(b.get_user(id).await, Some(user(id)));
    let before = b.cache.stats();
    assert_eq!(
        (
            before.loads - before_reads.loads,
            before.l1_hits - before_reads.l1_hits
        ),
        (1, 1),
        "B's first read loads and its second is an L1 hit"
    );
    assert!(before.l1_entries >= 1, "B holds the key in L1");

    let done = || {
        let now = b.cache.stats();
        now.invalidations_received > before.invalidations_received
            && now.l1_entries < before.l1_entries
    };
    let start = Instant::now();
    a.update_user(id).await.expect("infallible");
    let sample = poll(start, done).await;

    // B's next read must be a load: the entry is gone from its L1 (and L2
    // holds A's tombstone).
    let loads = b.cache.stats().loads;
    assert_eq!(b.get_user(id).await, Some(user(id)));
    let after = b.cache.stats();
    if after.loads == loads + 1 && after.l1_hits == before.l1_hits {
        *next_read_loads += 1;
    }
    // Start the next round with an empty L1 (this key was just loaded back).
    b.cache.clear_local();
    sample
}

/// One round of the raw baseline: `PUBLISH`, then poll the subscriber's
/// counter.
async fn raw_round(
    publisher: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: &str,
    received: &AtomicU64,
) -> Sample {
    let before = received.load(Ordering::Acquire);
    let start = Instant::now();
    let receivers: u64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(publisher)
        .await
        .expect("PUBLISH on the bench redis-server");
    assert_eq!(receivers, 1, "one subscriber");
    poll(start, || received.load(Ordering::Acquire) > before).await
}

/// Busy-polls `done` and returns the times since `start`; call it right
/// after the call returns. Between checks it yields to the OS scheduler as
/// well as to Tokio: a thread that only spins keeps a whole vCPU of the two,
/// and in trial runs that left redis-server and the other worker waiting for
/// a time slice, adding 1–5 ms tails to a fifth of the rounds (of the raw
/// baseline as much as ours).
async fn poll(start: Instant, mut done: impl FnMut() -> bool) -> Sample {
    let call = start.elapsed();
    let done_at_return = done();
    if done_at_return {
        return Sample {
            call,
            seen: start.elapsed().max(call),
            done_at_return,
        };
    }
    let mut checks: u32 = 0;
    loop {
        std::hint::spin_loop();
        std::thread::yield_now();
        tokio::task::yield_now().await;
        if done() {
            return Sample {
                call,
                seen: start.elapsed(),
                done_at_return,
            };
        }
        checks = checks.wrapping_add(1);
        if checks.is_multiple_of(64) {
            assert!(
                start.elapsed() < POLL_LIMIT,
                "no delivery within {POLL_LIMIT:?}"
            );
        }
    }
}

fn latency_checks(
    rounds: usize,
    next_read_loads: usize,
    b_start: &Stats,
    a_end: &Stats,
    b_end: &Stats,
) -> Vec<String> {
    let received = b_end.invalidations_received - b_start.invalidations_received;
    let mut checks = vec![
        format!("B's next read after each invalidation was a load: {next_read_loads} of {rounds}"),
        format!(
            "A sent {} invalidations; B received {received} during the rounds",
            a_end.invalidations_sent
        ),
        format!(
            "L2 errors A/B {}/{}, timeouts {}/{}, skipped {}/{}; subscription reconnects A/B {}/{}",
            a_end.l2_errors,
            b_end.l2_errors,
            a_end.l2_timeouts,
            b_end.l2_timeouts,
            a_end.l2_skipped,
            b_end.l2_skipped,
            a_end.pubsub_reconnects,
            b_end.pubsub_reconnects
        ),
    ];
    let trouble = next_read_loads != rounds
        || received != rounds as u64
        || a_end.invalidations_sent != rounds as u64
        || a_end.l2_errors + b_end.l2_errors + a_end.l2_timeouts + b_end.l2_timeouts != 0
        || a_end.l2_skipped + b_end.l2_skipped != 0
        || a_end.pubsub_reconnects + b_end.pubsub_reconnects != 0;
    if trouble {
        checks.push("WARNING: some rounds were not what they claim to be".to_owned());
    }
    checks
}

impl LatencyResults {
    fn print(&self, rounds: usize) {
        println!(
            "\nPart 1: invalidation latency, {rounds} rounds, Tokio multi-thread runtime with {} \
             workers (µs)",
            self.workers
        );
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "p50", "p90", "p99", "max", "mean"
        );
        let rows: [Row<'_>; 6] = [
            (
                "ours: A's call returned -> B's L1 dropped",
                &self.ours,
                Sample::after_return,
            ),
            (
                "raw: PUBLISH returned -> message received",
                &self.raw,
                Sample::after_return,
            ),
            (
                "ours: A's call started -> B's L1 dropped",
                &self.ours,
                |sample| sample.seen,
            ),
            (
                "raw: PUBLISH started -> message received",
                &self.raw,
                |sample| sample.seen,
            ),
            (
                "ours: A's call (tombstone SET + PUBLISH)",
                &self.ours,
                |sample| sample.call,
            ),
            ("raw: PUBLISH", &self.raw, |sample| sample.call),
        ];
        let mut summaries = Vec::new();
        for (label, samples, field) in rows {
            let summary = Summary::of(samples.iter().map(field));
            println!(
                "{label:<44} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                summary.p50, summary.p90, summary.p99, summary.max, summary.mean
            );
            summaries.push(summary);
        }
        for (what, ours, raw) in [
            ("from the return", &summaries[0], &summaries[1]),
            ("from the start", &summaries[2], &summaries[3]),
        ] {
            let pairs = [
                ("p50", ours.p50, raw.p50),
                ("p90", ours.p90, raw.p90),
                ("p99", ours.p99, raw.p99),
                ("max", ours.max, raw.max),
            ];
            let ratios: Vec<String> = pairs
                .iter()
                .map(|(name, ours, raw)| format!("{name} {}", ratio(*ours, *raw)))
                .collect();
            let differences: Vec<String> = pairs
                .iter()
                .map(|(name, ours, raw)| format!("{name} {:+.1}", ours - raw))
                .collect();
            println!(
                "ours/raw, {what}: {} (ours - raw, µs: {})",
                ratios.join(", "),
                differences.join(", ")
            );
        }
        let early = |samples: &[Sample]| samples.iter().filter(|s| s.done_at_return).count();
        println!(
            "already done when the call returned: ours {} of {rounds}, raw {} of {rounds}",
            early(&self.ours),
            early(&self.raw)
        );
        println!("Checks (cache.stats()):");
        for check in &self.checks {
            println!("  {check}");
        }
    }
}

/// `ours / raw`, or `-` when the raw figure is under 1 µs (the message was
/// already there when `PUBLISH` returned: the ratio would mean nothing).
fn ratio(ours: f64, raw: f64) -> String {
    if raw < 1.0 {
        "-".to_owned()
    } else {
        format!("{:.2}x", ours / raw)
    }
}

/// A line of part 1's table: label, samples, which time of a sample.
type Row<'a> = (&'a str, &'a [Sample], fn(&Sample) -> Duration);

/// Nearest-rank percentiles, in µs.
struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Summary {
    fn of(times: impl Iterator<Item = Duration>) -> Summary {
        let mut us: Vec<f64> = times.map(|time| time.as_secs_f64() * 1e6).collect();
        assert!(!us.is_empty());
        us.sort_by(f64::total_cmp);
        let rank = |p: f64| us[((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
        Summary {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: us[us.len() - 1],
            mean: us.iter().sum::<f64>() / us.len() as f64,
        }
    }
}

// ---------------------------------------------------------------------------
// Part 2: the tag check on an L1 hit.

const TAG_IDS: [&str; 2] = ["tag_check/untagged_l1_hit", "tag_check/tagged_l1_hit"];

struct TagCheckResults {
    medians: [Option<f64>; 2],
    interleaved: Option<f64>,
    check: String,
}

fn tag_check_part(url: &str, quick: bool) -> TagCheckResults {
    let started = SystemTime::now();
    let mut criterion = cache_benches::criterion().configure_from_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache = runtime.block_on(async {
        Cache::builder()
            .namespace("tagcheck")
            .redis_url(url)
            .l1_max_ttl(Duration::from_secs(3600))
            .build()
            .await
            .expect("valid configuration")
    });
    assert!(cache.is_l2_connected());

    // Warm both (a load each, then an L1 hit each), and check the values.
    // Different ids, so the two functions do not share an entry.
    let (untagged_id, tagged_id) = (ID, ID + 1);
    let before = runtime.block_on(async {
        for _ in 0..2 {
            assert_eq!(
                untagged(&cache, ORG, untagged_id).await,
                Some(user(untagged_id))
            );
            assert_eq!(tagged(&cache, ORG, tagged_id).await, Some(user(tagged_id)));
        }
        cache.stats()
    });
    assert_eq!(
        (before.loads, before.l1_hits),
        (2, 2),
        "warm-up: one load and one L1 hit each"
    );

    {
        let mut group = criterion.benchmark_group("tag_check");
        let (warm_up, measurement, samples) =
            timing(Duration::from_secs(2), Duration::from_secs(5), 100);
        group
            .warm_up_time(warm_up)
            .measurement_time(measurement)
            .sample_size(samples);
        group.bench_function("untagged_l1_hit", |b| {
            b.to_async(&runtime)
                .iter(|| untagged(&cache, black_box(ORG), black_box(untagged_id)));
        });
        group.bench_function("tagged_l1_hit", |b| {
            b.to_async(&runtime)
                .iter(|| tagged(&cache, black_box(ORG), black_box(tagged_id)));
        });
        group.finish();
    }
    criterion.final_summary();
    let after_criterion = cache.stats();

    let home = criterion_home();
    let medians = TAG_IDS.map(|id| median_ns(&home, id, started));
    let interleaved = medians.iter().all(Option::is_some).then(|| {
        let (calls, rounds) = if quick { (10_000, 20) } else { (10_000, 300) };
        runtime.block_on(async {
            let time = async |tagged_side: bool| {
                let start = Instant::now();
                for _ in 0..calls {
                    if tagged_side {
                        black_box(tagged(&cache, black_box(ORG), black_box(tagged_id)).await);
                    } else {
                        black_box(untagged(&cache, black_box(ORG), black_box(untagged_id)).await);
                    }
                }
                start.elapsed().as_secs_f64()
            };
            time(true).await;
            time(false).await;
            let mut ratios = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let (t_tagged, t_untagged) = if round % 2 == 0 {
                    let t = time(true).await;
                    (t, time(false).await)
                } else {
                    let u = time(false).await;
                    (time(true).await, u)
                };
                ratios.push(t_tagged / t_untagged);
            }
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        })
    });
    let after = cache.stats();

    let check = format!(
        "criterion part: {} L1 hits, {} L2 hits, {} loads; all of it: {} loads, {} L2 errors",
        after_criterion.l1_hits - before.l1_hits,
        after_criterion.l2_hits - before.l2_hits,
        after_criterion.loads - before.loads,
        after.loads - before.loads,
        after.l2_errors
    ) + if after.loads != before.loads || after.l2_hits != before.l2_hits {
        "\n  WARNING: some measured calls were not L1 hits"
    } else {
        ""
    };
    TagCheckResults {
        medians,
        interleaved,
        check,
    }
}

impl TagCheckResults {
    fn print(&self, quick: bool) {
        println!(
            "\nPart 2: L1 hit with and without tags = [\"org:<org>\"] (criterion medians, \
             median.point_estimate)"
        );
        for (id, median) in TAG_IDS.iter().zip(self.medians) {
            match median {
                Some(ns) => println!("  {id:<28} {ns:>9.1} ns"),
                None => println!("  {id:<28} not measured in this run"),
            }
        }
        match self.medians {
            [Some(untagged), Some(tagged)] => println!(
                "  tagged / untagged: {:.2}x (criterion), {:.2}x (interleaved, median of {} rounds); \
                 difference of the medians {:+.1} ns",
                tagged / untagged,
                self.interleaved.unwrap_or(f64::NAN),
                if quick { 20 } else { 300 },
                tagged - untagged
            ),
            _ => println!("  tagged / untagged: not measured in this run"),
        }
        println!("  Tier check (cache.stats()): {}", self.check);
    }
}
