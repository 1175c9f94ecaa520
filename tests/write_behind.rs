//! Write-behind against a real Redis: a queued write is served from the
//! cache at once and applied by a worker later, in order per key, at least
//! once; a failing write goes to the dead letters after its attempts while
//! other keys keep flowing; a worker that dies leaves its writes to
//! another; Redis down or restarted loses nothing acknowledged. Uses the
//! programmatic form (`Cache::write_behind`, `WriteBehindHandler`); the
//! attribute expands to the same calls.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, WriteBehindHandler, WriteBehindWorker, WriteId, cached};
use cache_test_support::{RedisServer, TestRedis, eventually, on_every_topology};

/// Each application of a user's writes, in order: the value and the
/// write's id.
type Applied = BTreeMap<u64, Vec<(i64, Option<WriteId>)>>;

/// The database: every application of a write, in order, per user.
#[derive(Default)]
struct Db {
    applied: Mutex<Applied>,
    /// Users whose writes fail while set.
    failing: Mutex<HashSet<u64>>,
    /// Each application waits this long (a slow database).
    delay_ms: AtomicU64,
    attempts: AtomicU64,
}

impl Db {
    async fn save_seen(&self, id: u64, at: i64) -> Result<(), String> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.lock().unwrap().contains(&id) {
            return Err(format!("user {id}: constraint violated"));
        }
        let id_now = WriteId::current();
        self.applied
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push((at, id_now));
        Ok(())
    }

    fn last(&self, id: u64) -> Option<i64> {
        self.applied
            .lock()
            .unwrap()
            .get(&id)
            .and_then(|writes| writes.last())
            .map(|(at, _)| *at)
    }

    fn applications(&self) -> usize {
        self.applied.lock().unwrap().values().map(Vec::len).sum()
    }
}

const QUEUE: &str = "record_seen";

fn handler(db: &Arc<Db>) -> WriteBehindHandler {
    WriteBehindHandler::new(
        QUEUE,
        Arc::clone(db),
        |db: Arc<Arc<Db>>, (id, at): (u64, i64)| async move { db.save_seen(id, at).await },
    )
}

/// `#[write_behind]`'s call: the value goes to the cache, the write to the
/// queue (or to `db` at once when Redis cannot take it).
async fn record_seen(cache: &Cache, db: &Arc<Db>, id: u64, at: i64) -> Result<(), String> {
    let db = Arc::clone(db);
    cache
        .write_behind(
            QUEUE,
            &format!("user:{id}:seen"),
            at,
            Duration::from_secs(300),
            (id, at),
            |(id, at)| async move { db.save_seen(id, at).await },
        )
        .await
}

/// The reader of the same key.
#[cached(key = "user:<id>:seen", ttl = 300, cache = cache, skip(cache, loads))]
async fn last_seen(cache: &Cache, loads: &AtomicU64, id: u64) -> Option<i64> {
    loads.fetch_add(1, Ordering::SeqCst);
    None
}

fn worker(cache: &Cache, db: &Arc<Db>) -> cache_runtime::WriteBehindWorkerBuilder {
    WriteBehindWorker::builder(cache)
        .handler(handler(db))
        .lease(Duration::from_millis(600))
        .claim_idle(Duration::from_millis(400))
        .poll_interval(Duration::from_millis(10))
        .retry_backoff(Duration::from_millis(40))
}

async fn cache_on(redis: &TestRedis, namespace: &str) -> Cache {
    redis
        .connect(Cache::builder().namespace(namespace))
        .build()
        .await
        .expect("cache")
}

async fn drained(cache: &Cache) -> bool {
    eventually(Duration::from_secs(20), async || {
        cache
            .write_behind_backlog(QUEUE)
            .await
            .is_ok_and(|backlog| backlog.depth == 0)
    })
    .await
}

/// Each key's writes, as an idempotent database keeps them, are the values
/// written, in order. Delivery is at least once: a worker that dies after
/// applying writes it had not acknowledged leaves them to be applied again
/// by the next holder of the partition, with their `WriteId`, which is not
/// newer than what the database holds then, so it refuses them. A write
/// applied after a newer one of its key would be refused the same way and
/// be missing from what is kept.
fn assert_in_order(db: &Db, written: &BTreeMap<u64, Vec<i64>>) {
    let applied = db.applied.lock().unwrap();
    for (id, values) in written {
        let got = applied.get(id).cloned().unwrap_or_default();
        let mut kept = Vec::new();
        let mut newest: Option<WriteId> = None;
        for (at, write_id) in &got {
            match write_id {
                Some(write_id) if newest.is_some_and(|newest| *write_id <= newest) => {}
                Some(write_id) => {
                    newest = Some(*write_id);
                    kept.push(*at);
                }
                None => kept.push(*at),
            }
        }
        assert_eq!(&kept, values, "user {id}: applied {got:?}");
    }
}

async fn a_queued_write_is_served_at_once_and_applied_later_in_order(redis: TestRedis) {
    let cache = cache_on(&redis, "wb-order").await;
    let db = Arc::new(Db::default());
    let loads = AtomicU64::new(0);
    let mut written: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for round in 0..5 {
        for id in 0..20 {
            let at = 1000 * round + id as i64;
            assert_eq!(record_seen(&cache, &db, id, at).await, Ok(()));
            written.entry(id).or_default().push(at);
            assert_eq!(
                last_seen(&cache, &loads, id).await,
                Some(at),
                "served at once"
            );
        }
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "no read reached the database"
    );
    assert_eq!(db.applications(), 0, "nothing applied before a worker runs");
    assert_eq!(cache.stats().write_behind_queued, 100);
    let backlog = cache.write_behind_backlog(QUEUE).await.unwrap();
    assert_eq!(backlog.depth, 100);
    assert!(backlog.oldest.is_some());

    // Another instance reads the value from Redis.
    let other = cache_on(&redis, "wb-order").await;
    assert_eq!(last_seen(&other, &loads, 7).await, Some(4007));
    assert_eq!(loads.load(Ordering::SeqCst), 0);

    db.delay_ms.store(2, Ordering::SeqCst);
    let worker = worker(&cache, &db).start().await.expect("worker");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let stats = cache.stats();
            stats.write_behind_depth > 0 && stats.write_behind_lag.is_some()
        })
        .await,
        "the worker reports the backlog it found"
    );
    assert!(drained(&cache).await, "the worker applies the queue");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let stats = cache.stats();
            stats.write_behind_depth == 0 && stats.write_behind_lag.is_none()
        })
        .await,
        "and then that it is empty"
    );
    worker.shutdown().await;
    assert_in_order(&db, &written);
    assert!(cache.stats().write_behind_applied >= 100);
    assert_eq!(cache.stats().write_behind_synchronous, 0);
}

async fn two_workers_never_apply_one_key_out_of_order(redis: TestRedis) {
    let cache = cache_on(&redis, "wb-two").await;
    let db = Arc::new(Db::default());
    // Queued before the workers start, so that both have plenty to take
    // at once, and slow to apply, so that their batches overlap in time.
    let mut written: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for round in 0..30 {
        for id in 0..40 {
            let at = round * 100 + id as i64;
            record_seen(&cache, &db, id, at).await.unwrap();
            written.entry(id).or_default().push(at);
        }
    }
    db.delay_ms.store(1, Ordering::SeqCst);
    let first = worker(&cache, &db).batch_size(10).start().await.unwrap();
    let second_cache = cache_on(&redis, "wb-two").await;
    let second = worker(&second_cache, &db)
        .batch_size(10)
        .start()
        .await
        .unwrap();
    // Hand-over mid-stream: one worker leaves, a new one joins.
    assert!(eventually(Duration::from_secs(20), async || db.applications() >= 400).await);
    first.shutdown().await;
    let third = worker(&cache, &db).batch_size(10).start().await.unwrap();
    assert!(drained(&cache).await);
    second.shutdown().await;
    third.shutdown().await;
    assert_in_order(&db, &written);
}

on_every_topology!(
    a_queued_write_is_served_at_once_and_applied_later_in_order,
    two_workers_never_apply_one_key_out_of_order,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_goes_to_the_dead_letters_while_others_flow_and_replays() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = cache_on(&redis, "wb-dead").await;
    let db = Arc::new(Db::default());
    db.failing.lock().unwrap().insert(13);
    let worker = worker(&cache, &db).max_attempts(3).start().await.unwrap();
    record_seen(&cache, &db, 13, 1).await.unwrap();
    record_seen(&cache, &db, 13, 2).await.unwrap(); // waits behind the first
    for id in 0..50 {
        record_seen(&cache, &db, id + 100, 5).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            (100..150).all(|id| db.last(id) == Some(5))
        })
        .await,
        "other keys flow while user 13's write is retried"
    );
    assert!(
        eventually(Duration::from_secs(10), async || {
            cache
                .write_behind_backlog(QUEUE)
                .await
                .unwrap()
                .dead_letters
                == 2
        })
        .await,
        "after 3 attempts each of user 13's writes is a dead letter"
    );
    let stats = cache.stats();
    assert_eq!(stats.write_behind_dead_letters, 2);
    assert!(stats.write_behind_retries >= 4, "{stats:?}");
    assert_eq!(db.last(13), None);
    assert!(drained(&cache).await);

    // Fixed: replaying applies them, in order, with their original ids.
    db.failing.lock().unwrap().clear();
    assert_eq!(cache.replay_dead_letters(QUEUE).await.unwrap(), 2);
    assert!(eventually(Duration::from_secs(10), async || db.last(13) == Some(2)).await);
    let applied = db.applied.lock().unwrap()[&13].clone();
    assert_eq!(
        applied.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        [1, 2]
    );
    let backlog = cache.write_behind_backlog(QUEUE).await.unwrap();
    assert_eq!((backlog.depth, backlog.dead_letters), (0, 0));
    assert!(
        applied[0].1.unwrap() < applied[1].1.unwrap(),
        "ids kept their order"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_s_writes_are_claimed_by_another_after_claim_idle() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = cache_on(&redis, "wb-claim").await;
    let db = Arc::new(Db::default());
    let mut written: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for round in 0..10 {
        for id in 0..30 {
            record_seen(&cache, &db, id, round).await.unwrap();
            written.entry(id).or_default().push(round);
        }
    }
    // A slow database: the first worker holds a batch when it dies.
    db.delay_ms.store(20, Ordering::SeqCst);
    let dying = worker(&cache, &db).batch_size(50).start().await.unwrap();
    assert!(eventually(Duration::from_secs(10), async || db.applications() >= 3).await);
    drop(dying); // no shutdown: its leases expire, its batch stays unacknowledged
    let applied_then = db.applications();
    assert!(applied_then < 300, "it died mid-stream");
    db.delay_ms.store(0, Ordering::SeqCst);
    let other = worker(&cache, &db).start().await.unwrap();
    assert!(
        drained(&cache).await,
        "the other worker claims and applies the rest"
    );
    other.shutdown().await;
    assert_in_order(&db, &written);
    for id in 0..30 {
        assert_eq!(db.last(id), Some(9));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_runs_the_body_at_once_and_queues_nothing_later() {
    let mut redis = RedisServer::start();
    let cache = Cache::builder()
        .namespace("wb-down")
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    let db = Arc::new(Db::default());
    redis.kill();
    for at in 0..20 {
        assert_eq!(record_seen(&cache, &db, 1, at).await, Ok(()));
        assert_eq!(db.last(1), Some(at), "applied before the call returned");
    }
    assert_eq!(cache.stats().write_behind_synchronous, 20);
    assert_eq!(cache.stats().write_behind_queued, 0);
    let applied = db.applied.lock().unwrap()[&1].clone();
    assert!(
        applied.iter().all(|(_, id)| id.is_some()),
        "each ran as a write"
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), async || cache
            .write_behind_backlog(QUEUE)
            .await
            .is_ok())
        .await
    );
    assert_eq!(cache.write_behind_backlog(QUEUE).await.unwrap().depth, 0);
    let worker = worker(&cache, &db).start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.shutdown().await;
    assert_eq!(db.applications(), 20, "nothing was queued to run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_aof_restarted_mid_stream_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let cache = Cache::builder()
        .namespace("wb-aof")
        .redis_url(redis.url())
        .l2_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let db = Arc::new(Db::default());
    let worker = worker(&cache, &db)
        .require_durable(true)
        .start()
        .await
        .expect("AOF always is durable");
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let (cache, db, writing) = (cache.clone(), Arc::clone(&db), Arc::clone(&writing));
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut at = 0;
                while writing.load(Ordering::SeqCst) {
                    let id = writer * 10 + (at as u64 % 10);
                    if record_seen(&cache, &db, id, at).await.is_ok() {
                        acknowledged.push((id, at));
                    }
                    at += 1;
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    writing.store(false, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(acknowledged.len() > 100, "{} writes", acknowledged.len());
    assert!(drained(&cache).await);
    worker.shutdown().await;
    let applied = db.applied.lock().unwrap();
    let lost: Vec<&(u64, i64)> = acknowledged
        .iter()
        .filter(|(id, at)| {
            !applied
                .get(id)
                .is_some_and(|writes| writes.iter().any(|(a, _)| a == at))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    for (id, writes) in applied.iter() {
        let last = acknowledged
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, at)| *at)
            .max();
        assert_eq!(writes.iter().map(|(at, _)| *at).max(), last, "user {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durability_check_refuses_a_redis_that_forgets_on_request() {
    let redis = RedisServer::start(); // no AOF, no snapshots
    let cache = Cache::builder()
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    let db = Arc::new(Db::default());
    let refused = worker(&cache, &db)
        .require_durable(true)
        .start()
        .await
        .unwrap_err();
    assert!(refused.is_config(), "{refused}");
    assert!(refused.to_string().contains("restart"), "{refused}");
    // Without the option it starts (and warns).
    worker(&cache, &db).start().await.unwrap().shutdown().await;

    // An append-only file is not enough when Redis may evict the queue.
    let evicting = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let cache = Cache::builder()
        .redis_url(evicting.url())
        .build()
        .await
        .unwrap();
    let refused = worker(&cache, &db)
        .require_durable(true)
        .start()
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("allkeys-lru"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_by_a_release_with_other_arguments_waits_for_that_release() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = cache_on(&redis, "wb-release").await;
    let db = Arc::new(Db::default());
    record_seen(&cache, &db, 1, 7).await.unwrap();
    // The previous release's worker: the same queue, other arguments.
    let old_release =
        WriteBehindHandler::new(QUEUE, (), |_: Arc<()>, (_name, _at): (String, i64)| async {
            Ok::<(), String>(())
        });
    let old_worker = WriteBehindWorker::builder(&cache)
        .handler(old_release)
        .max_attempts(2)
        .retry_backoff(Duration::from_millis(20))
        .poll_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            cache
                .write_behind_backlog(QUEUE)
                .await
                .unwrap()
                .dead_letters
                == 1
        })
        .await,
        "retried, then dead-lettered, never decoded as the wrong type"
    );
    old_worker.shutdown().await;
    assert_eq!(db.applications(), 0);
    assert!(cache.stats().write_behind_retries >= 1);

    // Once this release's workers run, a replay applies it.
    let new_worker = worker(&cache, &db).start().await.unwrap();
    assert_eq!(cache.replay_dead_letters(QUEUE).await.unwrap(), 1);
    assert!(eventually(Duration::from_secs(10), async || db.last(1) == Some(7)).await);
    new_worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_applies_only_the_last_write_of_a_key_read_together() {
    let redis = TestRedis::start(cache_test_support::Topology::Server);
    let cache = cache_on(&redis, "wb-coalesce").await;
    let db = Arc::new(Db::default());
    for at in 0..10 {
        record_seen(&cache, &db, 1, at).await.unwrap();
    }
    let worker = WriteBehindWorker::builder(&cache)
        .handler(handler(&db).coalesce(true))
        .poll_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    assert!(drained(&cache).await);
    worker.shutdown().await;
    assert_eq!(db.last(1), Some(9));
    assert_eq!(db.applications(), 1, "{:?}", db.applied.lock().unwrap());
    assert_eq!(cache.stats().write_behind_coalesced, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_every_write_runs_at_once_and_the_worker_idles() {
    let cache = Cache::builder().build().await.unwrap();
    let db = Arc::new(Db::default());
    let loads = AtomicU64::new(0);
    let worker = worker(&cache, &db).start().await.unwrap();
    record_seen(&cache, &db, 3, 42).await.unwrap();
    assert_eq!(db.last(3), Some(42));
    assert_eq!(last_seen(&cache, &loads, 3).await, Some(42));
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    worker.shutdown().await;
}
