//! `lock`: one load per key across instances and processes, bounded waits
//! when the owner dies, and graceful degradation without Redis.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{ChildProcess, RedisServer, dead_url, within};

#[cached(key = "hot:<id>", ttl = 60, lock, cache = cache, skip(cache, loads))]
async fn hot(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    id * 10
}

async fn instance(url: &str, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .build()
        .await
        .unwrap()
}

/// `instances` caches, `callers` concurrent calls on each, one cold key.
async fn stampede(caches: &[Cache], callers: usize) -> u64 {
    let loads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for cache in caches {
        for _ in 0..callers {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move { hot(&cache, &loads, 7).await }));
        }
    }
    for task in tasks {
        let value = within(Duration::from_secs(30), "a caller of the hot key", task).await;
        assert_eq!(value.unwrap(), 70);
    }
    loads.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_of_a_hundred_callers_load_once() {
    let server = RedisServer::start();
    let mut caches = Vec::new();
    for _ in 0..4 {
        caches.push(instance(&server.url(), "fleet").await);
    }
    assert_eq!(stampede(&caches, 100).await, 1);
    let acquired: u64 = caches.iter().map(|c| c.stats().lock_acquired).sum();
    let waits: u64 = caches.iter().map(|c| c.stats().lock_waits).sum();
    assert_eq!(acquired, 1);
    assert_eq!(
        waits, 3,
        "one waiter per other instance (single-flight below it)"
    );
    assert_eq!(
        caches
            .iter()
            .map(|c| c.stats().lock_wait_timeouts)
            .sum::<u64>(),
        0
    );
    assert!(
        !server.client_exists("{fleet:hot:7} #lock"),
        "the owner released the lock"
    );
}

/// Runs `cache-test-worker stampede` processes (killed when dropped).
fn workers(
    url: &str,
    namespace: &str,
    count: usize,
    callers: usize,
    body_ms: u64,
    hang: bool,
) -> Vec<ChildProcess> {
    (0..count)
        .map(|_| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_cache-test-worker"));
            command.args([
                "stampede",
                url,
                namespace,
                &callers.to_string(),
                &body_ms.to_string(),
            ]);
            if hang {
                command.arg("hang");
            }
            ChildProcess::spawn(command.stdout(Stdio::piped()).stderr(Stdio::inherit()))
        })
        .collect()
}

#[test]
fn four_processes_of_250_callers_load_once() {
    let server = RedisServer::start();
    let children = workers(&server.url(), "procs", 4, 250, 300, false);
    for child in children {
        let finished = child.finish(Duration::from_secs(60));
        assert!(finished.status.success());
        assert_eq!(finished.stdout.trim(), "DONE 1000");
    }
    let loads: u64 = redis::cmd("GET")
        .arg("procs-loads")
        .query(&mut server.client())
        .unwrap();
    assert_eq!(loads, 1, "counted in Redis across the four processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_owner_delays_waiters_by_the_bounded_wait_only() {
    let server = RedisServer::start();
    let mut owner = workers(&server.url(), "dead", 1, 1, 0, true).remove(0);
    assert_eq!(
        owner.read_line(Duration::from_secs(30)).as_deref(),
        Some("LOADING"),
        "the worker holds the lock and is mid-load"
    );
    owner.kill();

    // The lock lives on in Redis (its TTL, 5 s by default, is no longer
    // extended); waiters give up after `lock_wait` and load themselves.
    let cache = Cache::builder()
        .namespace("dead")
        .redis_url(server.url())
        .lock_wait(Duration::from_millis(800))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let loads = Arc::new(AtomicU64::new(0));
    #[cached(key = "hot", ttl = 60, lock, cache = cache, skip(cache, loads))]
    async fn hot_again(cache: &Cache, loads: &AtomicU64) -> u64 {
        loads.fetch_add(1, Ordering::SeqCst);
        5
    }
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move { hot_again(&cache, &loads).await })
        })
        .collect();
    for task in tasks {
        let value = within(Duration::from_secs(30), "a waiter", task).await;
        assert_eq!(value.unwrap(), 5);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "they did wait for the owner: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "but not for long: {took:?}");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "single-flight still holds in this instance"
    );
    assert_eq!(cache.stats().lock_wait_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_lock_degrades_to_single_flight() {
    let cache = Cache::builder()
        .redis_url(dead_url())
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(stampede(std::slice::from_ref(&cache), 200).await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cache.stats().lock_acquired, 0);
}

trait ClientExists {
    fn client_exists(&self, key: &str) -> bool;
}

impl ClientExists for RedisServer {
    fn client_exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query(&mut self.client())
            .unwrap()
    }
}
