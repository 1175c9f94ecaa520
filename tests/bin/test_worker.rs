//! A separate OS process for the cross-process tests, with its own `Cache`
//! on the Redis given.
//!
//! - `cache-test-worker stampede <redis url> <namespace> <callers> <body ms> [hang]`:
//!   runs many concurrent callers of one cold `lock` key and counts body
//!   runs in Redis (`INCR <namespace>-loads`), so the test can add up loads
//!   across processes. With `hang`, the body prints `LOADING` and never
//!   returns (the test kills the process mid-load). Prints `DONE <value>`.
//! - `cache-test-worker invalidate <redis url> <namespace> <key>`: invalidates
//!   one key (as another instance of the app would) and prints `DONE`.

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, cached};

struct Worker {
    cache: Cache,
    redis: redis::Client,
    loads_key: String,
    body: Duration,
    hang: bool,
}

impl Worker {
    #[cached(key = "hot", ttl = 60, lock, cache = self.cache)]
    async fn hot(&self) -> u64 {
        let mut connection = self
            .redis
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let loads: u64 = redis::cmd("INCR")
            .arg(&self.loads_key)
            .query_async(&mut connection)
            .await
            .expect("INCR");
        if self.hang {
            println!("LOADING");
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.body).await;
        loads * 1000
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, url, namespace, key] = args.as_slice()
        && command == "invalidate"
    {
        let cache = Cache::builder()
            .namespace(namespace.as_str())
            .redis_url(url.as_str())
            .build()
            .await
            .expect("cache");
        cache.invalidate(key).await.expect("invalidate");
        println!("DONE");
        return;
    }
    let [_, command, url, namespace, callers, body_ms, rest @ ..] = args.as_slice() else {
        panic!(
            "usage: cache-test-worker stampede <redis url> <namespace> <callers> <body ms> [hang]"
        );
    };
    assert_eq!(command, "stampede");
    let cache = Cache::builder()
        .namespace(namespace.as_str())
        .redis_url(url.as_str())
        .lock_wait(Duration::from_secs(10))
        .build()
        .await
        .expect("cache");
    let worker = Arc::new(Worker {
        cache,
        redis: redis::Client::open(url.as_str()).expect("url"),
        loads_key: format!("{namespace}-loads"),
        body: Duration::from_millis(body_ms.parse().expect("body ms")),
        hang: rest.first().is_some_and(|arg| arg == "hang"),
    });
    let callers: usize = callers.parse().expect("callers");
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let worker = worker.clone();
            tokio::spawn(async move { worker.hot().await })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.expect("caller"));
    }
    assert!(
        values.windows(2).all(|pair| pair[0] == pair[1]),
        "every caller got the same value"
    );
    println!("DONE {}", values[0]);
}
