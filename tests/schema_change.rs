//! Schema changes during a rolling deploy (issue 12, part 5), against a real
//! redis-server: two releases whose value types under one key differ in
//! shape read each other's entries as misses, never as wrong values, and
//! leave them in place, so the releases do not overwrite each other's
//! entries on every miss.
//!
//! Each release's types are declared in a block of the test function, so
//! the two `Account`s have the same Rust type name, size and alignment:
//! everything the fingerprint used to be made of. bincode decodes either
//! release's bytes as the other's type without an error, and wrongly:
//! `first` and `last` swapped, `points` 10 read as 5 (a `u64` read as an
//! `i64`), `Plan::Pro` read as the `Plan::Team` inserted before it.

use std::sync::atomic::{AtomicU64, Ordering};

use cache_runtime::{Cache, cached};
use cache_test_support::{CapturedLogs, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};

async fn cache_on(server: &RedisServer, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .build()
        .await
        .expect("valid configuration")
}

/// What the fingerprint used to be made of.
fn old_fingerprint_inputs<T>() -> (&'static str, usize, usize) {
    (
        std::any::type_name::<T>(),
        std::mem::size_of::<T>(),
        std::mem::align_of::<T>(),
    )
}

fn stored(server: &RedisServer, key: &str) -> Vec<u8> {
    let bytes: Option<Vec<u8>> = server.client().get(key).unwrap();
    bytes.unwrap_or_else(|| panic!("{key} is in Redis"))
}

#[tokio::test]
async fn two_releases_with_different_shapes_share_a_key_without_misreading_or_overwriting() {
    let (account_1, row_1, inputs_1) = {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        enum Plan {
            Free,
            Pro,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Account {
            id: u64,
            first: String,
            last: String,
            points: u64,
            plan: Plan,
        }

        fn row(id: u64) -> Account {
            Account {
                id,
                first: "Ada".into(),
                last: "Lovelace".into(),
                points: 10,
                plan: Plan::Pro,
            }
        }

        #[cached(key = "account:<id>", ttl = 300, cache = cache, skip(cache, loads))]
        async fn account(cache: &Cache, loads: &AtomicU64, id: u64) -> Account {
            loads.fetch_add(1, Ordering::SeqCst);
            row(id)
        }

        (account, row, old_fingerprint_inputs::<Account>())
    };
    let (account_2, row_2, inputs_2) = {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        enum Plan {
            Free,
            Team,
            Pro,
        }

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Account {
            id: u64,
            last: String,
            first: String,
            points: i64,
            plan: Plan,
        }

        fn row(id: u64) -> Account {
            Account {
                id,
                last: "Lovelace".into(),
                first: "Ada".into(),
                points: 10,
                plan: Plan::Pro,
            }
        }

        #[cached(key = "account:<id>", ttl = 300, cache = cache, skip(cache, loads))]
        async fn account(cache: &Cache, loads: &AtomicU64, id: u64) -> Account {
            loads.fetch_add(1, Ordering::SeqCst);
            row(id)
        }

        (account, row, old_fingerprint_inputs::<Account>())
    };
    assert_eq!(
        inputs_1, inputs_2,
        "precondition: the old fingerprint (type name, size, alignment) could not tell the releases apart"
    );

    let server = RedisServer::start();
    let release_1 = cache_on(&server, "deploy").await;
    let release_2 = cache_on(&server, "deploy").await;
    let (loads_1, loads_2) = (AtomicU64::new(0), AtomicU64::new(0));

    // Release 1 caches account 7.
    assert_eq!(account_1(&release_1, &loads_1, 7).await, row_1(7));
    // (Loaded values reach Redis in the background, right after the call.)
    release_1.settled().await;
    let written_by_1 = stored(&server, "deploy:account:7");

    // Release 2 misses on it, serves its own row, and leaves the entry be.
    assert_eq!(account_2(&release_2, &loads_2, 7).await, row_2(7));
    release_2.settled().await;
    assert_eq!(loads_2.load(Ordering::SeqCst), 1);
    assert_eq!(release_2.stats().l2_undecodable, 1);
    assert_eq!(
        stored(&server, "deploy:account:7"),
        written_by_1,
        "release 2 overwrote release 1's entry"
    );
    // Its value is kept in its L1.
    assert_eq!(account_2(&release_2, &loads_2, 7).await, row_2(7));
    assert_eq!(loads_2.load(Ordering::SeqCst), 1);

    // Release 1 still reads its entry from Redis.
    release_1.clear_local();
    assert_eq!(account_1(&release_1, &loads_1, 7).await, row_1(7));
    assert_eq!(
        loads_1.load(Ordering::SeqCst),
        1,
        "release 1 lost its entry"
    );
    assert_eq!(release_1.stats().l2_hits, 1);

    // The other way round: release 2 caches account 8 first.
    assert_eq!(account_2(&release_2, &loads_2, 8).await, row_2(8));
    release_2.settled().await;
    let written_by_2 = stored(&server, "deploy:account:8");
    assert_eq!(account_1(&release_1, &loads_1, 8).await, row_1(8));
    release_1.settled().await;
    assert_eq!(loads_1.load(Ordering::SeqCst), 2);
    assert_eq!(stored(&server, "deploy:account:8"), written_by_2);
    release_2.clear_local();
    assert_eq!(account_2(&release_2, &loads_2, 8).await, row_2(8));
    assert_eq!(
        loads_2.load(Ordering::SeqCst),
        2,
        "release 2 lost its entry"
    );

    // Once release 1's entry is invalidated, the release that loads next
    // writes the key.
    release_2.invalidate("account:7").await.unwrap();
    assert_eq!(account_2(&release_2, &loads_2, 7).await, row_2(7));
    assert_eq!(loads_2.load(Ordering::SeqCst), 3);
    release_2.settled().await;
    assert_ne!(stored(&server, "deploy:account:7"), written_by_1);
    release_2.clear_local();
    assert_eq!(account_2(&release_2, &loads_2, 7).await, row_2(7));
    assert_eq!(loads_2.load(Ordering::SeqCst), 3);
}

/// `NonZeroU64` rejects the zero the tracer makes up, so the structure of
/// this type cannot be traced: it falls back to its type name and layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: std::num::NonZeroU64,
    total: u64,
}

#[cached(key = "order:<id>", ttl = 300, cache = cache, skip(cache, loads))]
async fn order(cache: &Cache, loads: &AtomicU64, id: u64) -> Order {
    loads.fetch_add(1, Ordering::SeqCst);
    Order {
        id: std::num::NonZeroU64::new(id).unwrap(),
        total: 5,
    }
}

#[tokio::test]
async fn a_type_whose_structure_cannot_be_traced_is_still_cached_with_one_warning() {
    let logs = CapturedLogs::start(tracing::Level::WARN);
    let server = RedisServer::start();
    let first = cache_on(&server, "untraced").await;
    let second = cache_on(&server, "untraced").await;
    let loads = AtomicU64::new(0);
    for cache in [&first, &second, &first] {
        assert_eq!(order(cache, &loads, 3).await.total, 5);
        cache.settled().await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(second.stats().l2_hits, 1);
    let text = logs.text();
    assert_eq!(
        text.matches("cannot trace the serde structure").count(),
        1,
        "one warning per type: {text}"
    );
    assert!(text.contains("schema_change::Order"), "{text}");
    assert!(text.contains("version in the key"), "{text}");
}
