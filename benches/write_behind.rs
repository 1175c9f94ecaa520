//! What write-behind costs and buys, in one run, against one redis-server
//! (AOF on, `appendfsync everysec`, as the README recommends for a queue)
//! and one SQLite file with the example app's settings (WAL, `synchronous =
//! NORMAL`, 5 s busy timeout).
//!
//! Per-write latency (criterion, one task on a current-thread runtime):
//!
//! | id                          | what one call does                                                           |
//! |-----------------------------|------------------------------------------------------------------------------|
//! | `write_behind/direct_sqlite`| the app's idempotent upsert into `user_seen`, nothing else                   |
//! | `write_behind/write_through`| `#[write_through]` over that upsert: the upsert, then the value stored        |
//! | `write_behind/write_behind` | `Cache::write_behind`: the value stored and the write queued (`XADD`); no upsert |
//!
//! Then the worker's drain rate: `N` writes queued while no worker runs, a
//! `WriteBehindWorker` (batches of 100, no coalescing) started, and the
//! time until it applied all `N`; against `N` upserts run one after the
//! other in this task (the database's own rate), in the same round; and the
//! same drain with a body that does nothing (the queue's own rate). Three
//! rounds of 10,000 writes (`BENCH_QUICK=1`: one round of 1,000, and short
//! criterion measurements whose numbers are not worth reading).
//!
//! Run with `cargo bench -p cache-benches --bench write_behind`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cache_benches::{connected, format_ns, median, median_ns, quick, summary, timing};
use cache_runtime::{Cache, WriteBehindHandler, WriteBehindWorker, WriteId, write_through};
use cache_test_support::{RedisServer, TempSqlite};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Users each contender cycles through; each contender has its own range
/// of ids, so that no contender's rows (and write ids) decide whether
/// another's upsert changes a row.
const USERS: i64 = 1_000;
const DIRECT_IDS: i64 = 0;
const WRITE_THROUGH_IDS: i64 = 10_000;
const WRITE_BEHIND_IDS: i64 = 20_000;
const DRAIN_IDS: i64 = 30_000;

const QUEUE: &str = "bench_seen";
const TTL: Duration = Duration::from_secs(300);

/// Write ids for the writes that do not go through a queue (the direct
/// upserts and the write-throughs): increasing, as the queue's are.
static NEXT_WRITE_ID: AtomicI64 = AtomicI64::new(1);

/// The example app's upsert (`examples/axum_app/db.rs`, `save_seen`).
async fn save_seen(db: &SqlitePool, id: i64, at: i64, write_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_seen (user_id, seen_at, write_id) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET seen_at = excluded.seen_at, write_id = excluded.write_id
         WHERE excluded.write_id > user_seen.write_id",
    )
    .bind(id)
    .bind(at)
    .bind(write_id)
    .execute(db)
    .await
    .map(drop)
}

async fn direct(db: &SqlitePool, id: i64, at: i64) -> Result<(), sqlx::Error> {
    save_seen(db, id, at, NEXT_WRITE_ID.fetch_add(1, Ordering::Relaxed)).await
}

#[write_through(key = "seen:<id>", ttl = 300, cache = cache)]
async fn write_through_seen(
    cache: &Cache,
    db: &SqlitePool,
    id: i64,
    at: i64,
) -> Result<i64, sqlx::Error> {
    save_seen(db, id, at, NEXT_WRITE_ID.fetch_add(1, Ordering::Relaxed)).await?;
    Ok(at)
}

/// The body a queued write runs (in the worker, or at once when Redis
/// cannot take it), as the example app's: the upsert with the write's id.
async fn apply_seen(db: &SqlitePool, id: i64, at: i64) -> Result<(), sqlx::Error> {
    let write = WriteId::current()
        .ok_or_else(|| sqlx::Error::Protocol("a queued write runs with a write id".to_owned()))?;
    save_seen(db, id, at, write.as_i64()).await
}

async fn write_behind_seen(cache: &Cache, db: &SqlitePool, id: i64, at: i64) {
    let queued: Result<(), sqlx::Error> = cache
        .write_behind(
            QUEUE,
            &format!("seen:{id}"),
            at,
            TTL,
            (id, at),
            |(id, at)| apply_seen(db, id, at),
        )
        .await;
    queued.expect("queued, or applied at once");
}

fn handler(db: SqlitePool) -> WriteBehindHandler {
    WriteBehindHandler::new(QUEUE, db, |db, (id, at): (i64, i64)| async move {
        apply_seen(&db, id, at).await
    })
}

async fn open(file: &TempSqlite) -> SqlitePool {
    let options: SqliteConnectOptions = file.url().parse().expect("a SQLite URL");
    let db = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("open the SQLite file");
    sqlx::query(
        "CREATE TABLE user_seen (
             user_id BIGINT PRIMARY KEY,
             seen_at BIGINT NOT NULL,
             write_id BIGINT NOT NULL)",
    )
    .execute(&db)
    .await
    .expect("create user_seen");
    db
}

/// A handler whose body does nothing: what the queue's machinery (read,
/// decode, run, acknowledge) alone drains.
fn noop_handler() -> WriteBehindHandler {
    WriteBehindHandler::new(QUEUE, (), |_, (_, _): (i64, i64)| async move {
        Ok::<(), sqlx::Error>(())
    })
}

/// Queues `writes` writes, then starts a worker with `handler` and waits
/// until it applied them all: writes per second from its start.
async fn drain(
    cache: &Cache,
    db: &SqlitePool,
    handler: WriteBehindHandler,
    writes: i64,
    at: impl Fn(i64) -> i64,
) -> f64 {
    for n in 0..writes {
        write_behind_seen(cache, db, DRAIN_IDS + n % USERS, at(n)).await;
    }
    let queued = cache.write_behind_backlog(QUEUE).await.expect("backlog");
    assert_eq!(queued.depth, writes as u64, "every write was queued");
    let applied_before = cache.stats().write_behind_applied;
    let started = Instant::now();
    let worker = WriteBehindWorker::builder(cache)
        .handler(handler)
        .start()
        .await
        .expect("the worker starts");
    let deadline = started + Duration::from_secs(120);
    while cache.stats().write_behind_applied - applied_before < writes as u64 {
        assert!(Instant::now() < deadline, "the worker did not drain");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = writes as f64 / started.elapsed().as_secs_f64();
    worker.shutdown().await;
    assert_eq!(cache.write_behind_backlog(QUEUE).await.unwrap().depth, 0);
    rate
}

/// One drain round: `writes` upserts in this task, then `writes` queued
/// and applied by a worker started for them, then the same with a body
/// that does nothing. The three rates, writes per second.
async fn drain_round(cache: &Cache, db: &SqlitePool, writes: i64, round: i64) -> (f64, f64, f64) {
    let at = |n: i64| 1_700_000_000_000 + round * 1_000_000 + n;
    let started = Instant::now();
    for n in 0..writes {
        direct(db, DRAIN_IDS + n % USERS, at(n))
            .await
            .expect("upsert");
    }
    let direct_rate = writes as f64 / started.elapsed().as_secs_f64();
    let drain_rate = drain(cache, db, handler(db.clone()), writes, at).await;
    let noop_rate = drain(cache, db, noop_handler(), writes, at).await;
    (direct_rate, drain_rate, noop_rate)
}

fn main() {
    let started = SystemTime::now();
    let mut criterion = cache_benches::criterion().configure_from_args();
    let runtime = cache_benches::current_thread_runtime();
    let redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        // The latency group queues a write per call, with no worker:
        // room for them, and none evicted.
        "--maxmemory",
        "1gb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let file = TempSqlite::new("bench-write-behind");
    let (cache, db) = runtime.block_on(async {
        let cache = connected(
            Cache::builder()
                .namespace("bench-write-behind")
                .redis_url(redis.url()),
        )
        .await;
        (cache, open(&file).await)
    });

    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(2), Duration::from_secs(6), 60);
    let mut group = criterion.benchmark_group("write_behind");
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
    let call = AtomicI64::new(0);
    let next = || {
        let n = call.fetch_add(1, Ordering::Relaxed);
        (n % USERS, 1_700_000_000_000 + n)
    };
    group.bench_function("direct_sqlite", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            let (user, at) = next();
            direct(&db, DIRECT_IDS + user, at).await.expect("upsert");
        })
    });
    group.bench_function("write_through", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            let (user, at) = next();
            write_through_seen(&cache, &db, WRITE_THROUGH_IDS + user, at)
                .await
                .expect("upsert");
        })
    });
    group.bench_function("write_behind", |bencher| {
        bencher.to_async(&runtime).iter(|| async {
            let (user, at) = next();
            write_behind_seen(&cache, &db, WRITE_BEHIND_IDS + user, at).await;
        })
    });
    group.finish();
    criterion.final_summary();

    let latency_stats = cache.stats();
    assert_eq!(
        latency_stats.write_behind_synchronous, 0,
        "Redis took every write: {latency_stats:?}"
    );
    // The latency group's queued writes are not the drain's: drop them.
    runtime.block_on(async {
        let mut client = redis.client();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("* #queue *")
            .query(&mut client)
            .expect("KEYS");
        for key in keys {
            let _: i64 = redis::cmd("DEL").arg(&key).query(&mut client).expect("DEL");
        }
    });

    let (rounds, writes) = if quick() { (1, 1_000) } else { (3, 10_000) };
    let mut direct_rates = Vec::new();
    let mut drain_rates = Vec::new();
    let mut noop_rates = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (direct_rate, drain_rate, noop_rate) =
            runtime.block_on(drain_round(&cache, &db, writes, round));
        direct_rates.push(direct_rate);
        drain_rates.push(drain_rate);
        noop_rates.push(noop_rate);
        ratios.push(drain_rate / direct_rate);
    }

    let home = cache_benches::criterion_home();
    let medians: Vec<Option<f64>> = [
        "write_behind/direct_sqlite",
        "write_behind/write_through",
        "write_behind/write_behind",
    ]
    .iter()
    .map(|id| median_ns(&home, id, started))
    .collect();
    if let [Some(direct), Some(through), Some(behind)] = medians[..] {
        println!(
            "\nPer-write latency (median): direct SQLite upsert {}, #[write_through] {}, write-behind {}",
            format_ns(direct),
            format_ns(through),
            format_ns(behind)
        );
        println!(
            "  write-behind/direct {:.2}x, write-behind/write-through {:.2}x, write-through/direct {:.2}x",
            behind / direct,
            behind / through,
            through / direct
        );
    }
    println!(
        "Drain, {writes} writes queued, {rounds} round(s), writes/s median (min–max): worker {}, direct upserts {}; worker/direct {:.2}x (median of per-round ratios)",
        summary(&drain_rates, 0),
        summary(&direct_rates, 0),
        median(&ratios)
    );
    println!(
        "  the queue alone (a body that does nothing): {} writes/s",
        summary(&noop_rates, 0)
    );
}
