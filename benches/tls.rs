//! What TLS costs an L2 hit: `ours_get_user_l2` (`#[cached(l1 = false)]`,
//! every call a Redis `GET` and a decode) on two caches reading the same
//! entry from one redis-server, one over its plain port and one over its
//! TLS port (`rediss://`, TLS 1.3, the test support's private CA), in the
//! same run. Prints both medians and their ratio.
//!
//! Run with `cargo bench -p cache-benches --bench tls` (`BENCH_QUICK=1` for
//! a smoke run whose numbers are not worth reading).

use std::time::{Duration, SystemTime};

use cache_benches::contenders::ours_get_user_l2;
use cache_benches::{connected, format_ns, median_ns, timing};
use cache_runtime::Cache;
use cache_test_support::TlsRedisServer;

const ID: u64 = 42;

fn main() {
    let started = SystemTime::now();
    let mut criterion = cache_benches::criterion().configure_from_args();
    let runtime = cache_benches::current_thread_runtime();
    let server = TlsRedisServer::start();
    let (plain, tls) = runtime.block_on(async {
        let plain = connected(
            Cache::builder()
                .namespace("bench-tls")
                .redis_url(server.plain().url()),
        )
        .await;
        let tls = connected(
            Cache::builder()
                .namespace("bench-tls")
                .redis_url(server.url())
                .redis_tls_root_ca(server.ca_pem()),
        )
        .await;
        // The first call loads and writes the entry; both read it after.
        assert!(ours_get_user_l2(&plain, ID).await.is_some());
        plain.settled().await;
        (plain, tls)
    });

    let (warm_up, measurement, samples) =
        timing(Duration::from_secs(2), Duration::from_secs(8), 100);
    let mut group = criterion.benchmark_group("tls");
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples);
    for (name, cache) in [("plain", &plain), ("tls", &tls)] {
        group.bench_function(name, |bencher| {
            bencher
                .to_async(&runtime)
                .iter(|| async { ours_get_user_l2(cache, ID).await })
        });
    }
    group.finish();
    criterion.final_summary();

    // Every measured call was an L2 hit: nothing loaded again.
    let (plain_stats, tls_stats) = (plain.stats(), tls.stats());
    assert_eq!(plain_stats.loads, 1, "{plain_stats:?}");
    assert_eq!(tls_stats.loads, 0, "{tls_stats:?}");
    let home = cache_benches::criterion_home();
    let medians: Vec<Option<f64>> = ["tls/plain", "tls/tls"]
        .iter()
        .map(|id| median_ns(&home, id, started))
        .collect();
    if let [Some(plain), Some(tls)] = medians[..] {
        println!(
            "\nL2 hit median: plain TCP {}, TLS {}: TLS/plain {:.2}x",
            format_ns(plain),
            format_ns(tls),
            tls / plain
        );
    }
}
