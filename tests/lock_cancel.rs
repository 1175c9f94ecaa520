//! `lock` when its owner goes away or loses its lease: a cancelled owner
//! hands the lock over at once (the fleet does not wait for its lease), an
//! owner whose lease was lost does not write its value, and an extension
//! of the lease in flight never delays the body's result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_test_support::{Proxy, RedisServer, eventually};

/// How long the first load of a test runs (its owner is cancelled in it).
const LOAD: Duration = Duration::from_millis(800);

#[cached(key = "hot:<id>", ttl = 60, lock, cache = cache, skip(cache, loads))]
async fn hot(cache: &Cache, loads: &AtomicU64, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(LOAD).await;
    id * 10
}

async fn instance(url: &str, namespace: &str, lock_ttl: Duration, lock_wait: Duration) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .lock_ttl(lock_ttl)
        .lock_wait(lock_wait)
        .build()
        .await
        .unwrap()
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.client())
        .unwrap()
}

/// Three instances wait on one owner, which is cancelled mid-body (its
/// caller went away, as an HTTP client disconnecting drops the handler's
/// future). Its lock is released at once: one of the others takes it and
/// loads, everybody (the owner's instance included) has the value about
/// one load later, not after `lock_wait`, and two loads ran in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_owner_hands_the_lock_over_at_once() {
    let server = RedisServer::start();
    // A long lease and wait: waiting for either would be unmistakable.
    let (lock_ttl, lock_wait) = (Duration::from_secs(20), Duration::from_secs(6));
    let mut caches = Vec::new();
    for _ in 0..3 {
        caches.push(instance(&server.url(), "cancel", lock_ttl, lock_wait).await);
    }
    let loads = Arc::new(AtomicU64::new(0));
    let call = |cache: &Cache| {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move { hot(&cache, &loads, 7).await })
    };

    // The owner's caller gives up half-way through the body.
    let owner = {
        let (cache, loads) = (caches[0].clone(), loads.clone());
        tokio::spawn(async move { tokio::time::timeout(LOAD / 2, hot(&cache, &loads, 7)).await })
    };
    assert!(
        eventually(Duration::from_secs(5), async || loads
            .load(Ordering::SeqCst)
            == 1)
        .await,
        "the owner's body started"
    );
    assert!(
        exists(&server, "{cancel:hot:7} #lock"),
        "the owner holds the lock"
    );
    // The others wait: another caller on the owner's instance (it joins the
    // owner's flight) and one on each other instance (they wait on the lock).
    let others: Vec<_> = [&caches[0], &caches[1], &caches[2]]
        .into_iter()
        .map(call)
        .collect();
    assert!(
        eventually(Duration::from_secs(5), async || {
            caches[1].stats().lock_waits + caches[2].stats().lock_waits == 2
        })
        .await,
        "the other instances wait on the lock"
    );

    assert!(owner.await.unwrap().is_err(), "the owner was cancelled");
    let cancelled = Instant::now();
    for other in others {
        let value = tokio::time::timeout(lock_wait * 2, other)
            .await
            .expect("waiters finish")
            .unwrap();
        assert_eq!(value, 70);
    }
    let took = cancelled.elapsed();
    // About one load (800 ms) after the cancellation; waiting out
    // `lock_wait` (6 s) would take far longer.
    assert!(
        took < LOAD + Duration::from_millis(1_500),
        "the lock was handed over at once: {took:?}"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "the cancelled load and one more, not one per instance"
    );
    let sum = |count: fn(&cache_runtime::Stats) -> u64| -> u64 {
        caches.iter().map(|cache| count(&cache.stats())).sum()
    };
    assert_eq!(sum(|stats| stats.lock_wait_timeouts), 0);
    assert_eq!(
        sum(|stats| stats.lock_acquired),
        2,
        "the owner and one taker"
    );
    assert_eq!(sum(|stats| stats.background_dropped), 0);
}

/// Records when the body ended.
#[cached(key = "lease:<id>", ttl = 60, lock, cache = cache, skip(cache, body, ended))]
async fn long_load(cache: &Cache, body: Duration, ended: &Mutex<Option<Instant>>, id: u64) -> u64 {
    tokio::time::sleep(body).await;
    *ended.lock().unwrap() = Some(Instant::now());
    id
}

/// The owner's lease is lost mid-body (here the lock key is replaced, so
/// its next extension finds another token: as if the lease had run out and
/// another instance had taken the lock). Its value may be older than what
/// the new owner writes: it is not written to Redis, and the loss is
/// counted. The same load with its lease kept is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_lost_its_lease_does_not_write() {
    let server = RedisServer::start();
    // Extended every 100 ms; the body runs 600 ms.
    let lock_ttl = Duration::from_millis(300);
    let cache = instance(&server.url(), "lease", lock_ttl, Duration::from_secs(3)).await;
    let body = Duration::from_millis(600);
    let ended = Mutex::new(None);

    // Kept: the value is written.
    assert_eq!(long_load(&cache, body, &ended, 1).await, 1);
    assert!(
        eventually(Duration::from_secs(3), async || exists(
            &server,
            "lease:lease:1"
        ))
        .await,
        "a load that kept its lease writes its value"
    );
    assert_eq!(cache.stats().lock_acquired, 1);

    // Lost: another token takes the lock while the body runs.
    let call = long_load(&cache, body, &ended, 2);
    let tamper = async {
        assert!(
            eventually(Duration::from_secs(3), async || exists(
                &server,
                "{lease:lease:2} #lock"
            ))
            .await
        );
        let () = redis::cmd("SET")
            .arg("{lease:lease:2} #lock")
            .arg("another owner's token")
            .arg("PX")
            .arg(10_000)
            .query(&mut server.client())
            .unwrap();
    };
    let (value, ()) = tokio::join!(call, tamper);
    assert_eq!(value, 2, "the caller still gets its value");
    // Give a write every chance to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !exists(&server, "lease:lease:2"),
        "an owner that lost its lease wrote its value"
    );
    let token: String = redis::cmd("GET")
        .arg("{lease:lease:2} #lock")
        .query(&mut server.client())
        .unwrap();
    assert_eq!(
        token, "another owner's token",
        "the other lock is left alone"
    );
    assert_eq!(cache.stats().lock_leases_lost, 1);
}

/// With a slow Redis (every reply 300 ms late), the body ends 100 ms after
/// an extension of the lease was sent: the call returns then, not when the
/// extension's reply comes (200 ms later, more on the script's first use),
/// and not after the write, the "filled" message and the release either
/// (they run in the background, after the extension's reply: it says
/// whether the lease held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_in_flight_does_not_hold_back_the_body() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder()
        .namespace("extend")
        .redis_url(proxy.url())
        // Extended every second; the lease outlives an extension that
        // takes three round trips (a script's first use), and replies
        // come well within the timeout.
        .lock_ttl(Duration::from_secs(3))
        .l2_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    assert!(cache.is_l2_connected());
    let reply = Duration::from_millis(300);
    proxy.set_latency(Duration::ZERO, reply);

    let ended = Mutex::new(None);
    let value = long_load(&cache, Duration::from_millis(1_100), &ended, 3).await;
    let returned = Instant::now();
    assert_eq!(value, 3);
    assert_eq!(cache.stats().lock_acquired, 1, "the call held the lock");
    let ended = ended.lock().unwrap().expect("the body ran");
    let after_body = returned.duration_since(ended);
    assert!(
        after_body < reply / 2,
        "the call returned {after_body:?} after its body ended"
    );
    // The extension kept the lease: the value is written, in the
    // background, once the replies come.
    assert!(
        eventually(Duration::from_secs(10), async || exists(
            &server,
            "extend:lease:3"
        ))
        .await,
        "the value reaches Redis: {:?}",
        cache.stats()
    );
    assert_eq!(cache.stats().lock_leases_lost, 0);
}
