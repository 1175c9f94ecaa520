//! The in-process tier keeps to its byte budget, against a real
//! redis-server: values are weighed by their real size (also those too
//! large for Redis), an entry larger than L1 can hold is turned away and
//! counted, and a small budget still holds values of a quarter of it.

use std::sync::atomic::{AtomicU64, Ordering};

use cache_runtime::{Cache, cached};
use cache_test_support::RedisServer;
use serde::{Deserialize, Serialize};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Blob(Vec<u8>);

#[cached(key = "blob:<id>", ttl = 300, cache = cache, skip(cache, size, calls))]
async fn blob(cache: &Cache, size: usize, calls: &AtomicU64, id: u64) -> Blob {
    calls.fetch_add(1, Ordering::SeqCst);
    Blob(vec![id as u8; size])
}

async fn cache_with_budget(server: &RedisServer, namespace: &str, max_value: usize) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .l1_max_bytes(MIB as u64)
        .max_value_bytes(max_value)
        .build()
        .await
        .expect("valid configuration")
}

/// Loads 40 distinct 256 KiB values (10 MiB) into a cache with a 1 MiB L1.
async fn spray(cache: &Cache) {
    let calls = AtomicU64::new(0);
    for id in 0..40 {
        blob(cache, 256 * KIB, &calls, id).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 40);
}

/// Values too large for Redis used to weigh next to nothing in L1 (their
/// encoded length was taken as 0): 10 MiB were held under a 1 MiB budget.
#[tokio::test]
async fn values_too_large_for_redis_are_weighed_by_their_size() {
    let server = RedisServer::start();
    let cache = cache_with_budget(&server, "mem-unstorable", 64 * KIB).await;
    spray(&cache).await;
    let stats = cache.stats();
    assert_eq!(stats.l2_unstorable, 40, "too large for Redis: {stats:?}");
    assert!(
        stats.l1_entries <= 4,
        "{} entries of 256 KiB held under a 1 MiB budget",
        stats.l1_entries
    );
}

/// The same values, storable in Redis: each quick_cache shard used to get
/// a slice of the budget (1 MiB / 8) and turned every one of them away,
/// silently. A 1 MiB L1 holds some 256 KiB values, never more than 1 MiB.
#[tokio::test]
async fn a_small_budget_holds_values_of_a_quarter_of_it() {
    let server = RedisServer::start();
    let cache = cache_with_budget(&server, "mem-storable", 4 * MIB).await;
    spray(&cache).await;
    let stats = cache.stats();
    assert_eq!(stats.l2_unstorable, 0, "{stats:?}");
    assert!(
        (1..=4).contains(&stats.l1_entries),
        "{} entries of 256 KiB under a 1 MiB budget",
        stats.l1_entries
    );
    // What is held is served from L1 (the latest values, read back first).
    let calls = AtomicU64::new(0);
    let before = cache.stats().l1_hits;
    for id in (0..40).rev() {
        blob(&cache, 256 * KIB, &calls, id).await;
    }
    assert!(cache.stats().l1_hits > before, "{:?}", cache.stats());
}

/// An entry larger than L1 can hold is not kept, and that shows in the
/// stats (`l1_rejected`), not as an eviction.
#[tokio::test]
async fn an_entry_that_cannot_fit_is_counted() {
    let server = RedisServer::start();
    let cache = cache_with_budget(&server, "mem-rejected", 4 * MIB).await;
    let calls = AtomicU64::new(0);
    blob(&cache, 2 * MIB, &calls, 1).await;
    blob(&cache, 2 * MIB, &calls, 1).await;
    let stats = cache.stats();
    assert_eq!(stats.l1_entries, 0, "{stats:?}");
    assert_eq!(stats.l1_hits, 0, "{stats:?}");
    assert_eq!(stats.l2_hits, 1, "the second call reads Redis: {stats:?}");
    assert_eq!(stats.l1_rejected, 2, "{stats:?}");
    assert_eq!(stats.l1_evictions, 0, "a rejection is not an eviction");
}
