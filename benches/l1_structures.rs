//! The measurement behind the choice of L1 structure (see
//! `cache-runtime/src/l1.rs`): single-threaded latency of a `get` that
//! clones the value out, over 10k warm entries keyed `user:<id>`.
//!
//! Values are `Arc<User>`, as in L1, so every `get` returns a clone of the
//! `Arc`; `user_clone` is the cost of then cloning the `User` itself, which
//! every L1 hit pays on top of its lookup.
//!
//! Run with `cargo bench -p cache-benches --bench l1_structures` (`BENCH_QUICK=1` for a
//! smoke test); numbers and their context are in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cache_benches::{User, timing, user};
use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};

const ENTRIES: u64 = 10_000;
/// Room for every entry: no structure may evict while it is filled.
const CAPACITY: u64 = 2 * ENTRIES;
/// Lookups walk the keys with a stride coprime with `ENTRIES`, so that
/// consecutive lookups land far apart in every table.
const STRIDE: usize = 7_919;

/// Pre-rendered keys: key formatting is not what is measured here.
fn keys() -> Vec<String> {
    (0..ENTRIES).map(|id| format!("user:{id}")).collect()
}

/// An endless walk over `keys`.
fn walk<'a>(keys: &'a [String]) -> impl FnMut() -> &'a str {
    let mut at = 0;
    move || {
        at = (at + STRIDE) % keys.len();
        keys[at].as_str()
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(1), Duration::from_secs(3), 100);
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn l1_structures(c: &mut Criterion) {
    let keys = keys();
    let values: Vec<Arc<User>> = (0..ENTRIES).map(|id| Arc::new(user(id))).collect();
    let runtime = runtime();

    let mut group = c.benchmark_group("l1_get_clone");
    configure(&mut group);

    let moka_future = moka::future::Cache::<String, Arc<User>>::builder()
        .max_capacity(CAPACITY)
        .build();
    let moka_future_ttl = moka::future::Cache::<String, Arc<User>>::builder()
        .max_capacity(CAPACITY)
        .time_to_live(Duration::from_secs(300))
        .build();
    runtime.block_on(async {
        for (key, value) in keys.iter().zip(&values) {
            moka_future.insert(key.clone(), value.clone()).await;
            moka_future_ttl.insert(key.clone(), value.clone()).await;
        }
        moka_future.run_pending_tasks().await;
        moka_future_ttl.run_pending_tasks().await;
        for key in &keys {
            assert!(
                moka_future.get(key.as_str()).await.is_some(),
                "moka future lost {key}"
            );
            assert!(
                moka_future_ttl.get(key.as_str()).await.is_some(),
                "moka future (ttl) lost {key}"
            );
        }
    });
    for (name, cache) in [
        ("moka_future", &moka_future),
        ("moka_future_ttl", &moka_future_ttl),
    ] {
        group.bench_function(name, |b| {
            let mut next = walk(&keys);
            b.to_async(&runtime).iter(|| {
                let key = next();
                async move { black_box(cache.get(black_box(key)).await) }
            });
        });
    }
    drop((moka_future, moka_future_ttl));

    let moka_sync = moka::sync::Cache::<String, Arc<User>>::builder()
        .max_capacity(CAPACITY)
        .build();
    for (key, value) in keys.iter().zip(&values) {
        moka_sync.insert(key.clone(), value.clone());
    }
    moka_sync.run_pending_tasks();
    assert!(
        keys.iter().all(|key| moka_sync.get(key.as_str()).is_some()),
        "moka sync lost entries"
    );
    group.bench_function("moka_sync", |b| {
        let mut next = walk(&keys);
        b.iter(|| black_box(moka_sync.get(black_box(next()))));
    });
    drop(moka_sync);

    let quick = quick_cache::sync::Cache::<String, Arc<User>>::new(CAPACITY as usize);
    for (key, value) in keys.iter().zip(&values) {
        quick.insert(key.clone(), value.clone());
    }
    assert!(
        keys.iter().all(|key| quick.get(key.as_str()).is_some()),
        "quick_cache lost entries"
    );
    group.bench_function("quick_cache_sync", |b| {
        let mut next = walk(&keys);
        b.iter(|| black_box(quick.get(black_box(next()))));
    });
    drop(quick);

    group.bench_function("user_clone", |b| {
        let value = user(42);
        b.iter(|| black_box(black_box(&value).clone()));
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = cache_benches::criterion();
    targets = l1_structures
}
criterion_main!(benches);
