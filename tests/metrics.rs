//! The `metrics` feature of cache-runtime against a real redis-server, read
//! the way Prometheus reads it: the text `metrics-exporter-prometheus`
//! renders. (The root package's dependency on cache-runtime enables it.)
//!
//! Each cache is built while its own Prometheus recorder is the thread's
//! local recorder (`metrics::set_default_local_recorder`): handles bind at
//! build time, so two caches sharing a namespace (and so Redis keys) still
//! report apart, and tests running in parallel never mix.

use std::collections::BTreeMap;
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_test_support::{RedisServer, eventually};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// A cache built while a fresh Prometheus recorder was installed, and
/// that recorder's scrape handle.
async fn cache_with_scrape(
    namespace: &str,
    builder: cache_runtime::CacheBuilder,
) -> (Cache, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cache = builder.namespace(namespace).build().await.unwrap();
    (cache, scrape)
}

/// The value of the series `name` whose labels are exactly `labels`, in
/// the Prometheus text rendered now; `None` when there is none.
fn value(scrape: &PrometheusHandle, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let text = scrape.render();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let have: BTreeMap<&str, &str> = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            (series_name == name && have == wanted).then(|| value.parse().unwrap())
        })
}

#[cached(key = "user:<id>", ttl = 60, cache = cache, skip(cache))]
async fn get_user(cache: &Cache, id: u64) -> String {
    format!("user {id}")
}

#[tokio::test]
async fn l2_hits_and_invalidations_reach_a_prometheus_scrape() {
    let server = RedisServer::start();
    let builder = || Cache::builder().redis_url(server.url());
    let (writer, writer_scrape) = cache_with_scrape("prom", builder()).await;
    let (reader, reader_scrape) = cache_with_scrape("prom", builder()).await;
    let ns = ("namespace", "prom");

    assert_eq!(get_user(&writer, 1).await, "user 1"); // loads, writes Redis
    writer.settled().await; // (in the background)
    assert_eq!(get_user(&reader, 1).await, "user 1"); // from Redis
    assert_eq!(get_user(&reader, 1).await, "user 1"); // from L1

    assert_eq!(value(&writer_scrape, "cache_loads_total", &[ns]), Some(1.0));
    assert_eq!(
        value(&writer_scrape, "cache_misses_total", &[ns]),
        Some(1.0)
    );
    assert_eq!(value(&reader_scrape, "cache_loads_total", &[ns]), Some(0.0));
    assert_eq!(
        value(&reader_scrape, "cache_hits_total", &[ns, ("tier", "l2")]),
        Some(1.0)
    );
    assert_eq!(
        value(&reader_scrape, "cache_hits_total", &[ns, ("tier", "l1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&writer_scrape, "cache_load_duration_seconds_count", &[ns]),
        Some(1.0),
        "one sample:\n{}",
        writer_scrape.render()
    );
    assert_eq!(
        value(&reader_scrape, "cache_breaker_state", &[ns]),
        Some(0.0)
    );

    // The reader's start-up probe came back (so its subscription is live
    // and will hear the invalidation); the gauge follows within a second.
    assert!(
        eventually(Duration::from_secs(5), async || {
            value(&reader_scrape, "cache_channel_verified", &[ns]) == Some(1.0)
        })
        .await,
        "{}",
        reader_scrape.render()
    );
    assert!(reader.stats().channel_verified);

    writer.invalidate("user:1").await.unwrap();
    assert_eq!(
        value(&writer_scrape, "cache_invalidations_sent_total", &[ns]),
        Some(1.0)
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            value(&reader_scrape, "cache_invalidations_received_total", &[ns]) == Some(1.0)
        })
        .await,
        "the reader got the message:\n{}",
        reader_scrape.render()
    );
}

#[tokio::test]
async fn a_frozen_redis_shows_as_timeouts_and_an_open_breaker() {
    let server = RedisServer::start();
    let (cache, scrape) = cache_with_scrape(
        "prom-frozen",
        Cache::builder()
            .redis_url(server.url())
            .l2_timeout(Duration::from_millis(100))
            .breaker_threshold(1)
            .breaker_cooldown(Duration::from_secs(60)),
    )
    .await;
    let ns = ("namespace", "prom-frozen");
    assert_eq!(value(&scrape, "cache_breaker_state", &[ns]), Some(0.0));

    server.freeze();
    assert_eq!(get_user(&cache, 7).await, "user 7");
    server.thaw();

    assert_eq!(value(&scrape, "cache_l2_timeouts_total", &[ns]), Some(1.0));
    assert_eq!(
        value(&scrape, "cache_breaker_opens_total", &[ns]),
        Some(1.0)
    );
    // Set on the transition, not a second later.
    assert_eq!(
        value(&scrape, "cache_breaker_state", &[ns]),
        Some(1.0),
        "open:\n{}",
        scrape.render()
    );
    assert_eq!(get_user(&cache, 8).await, "user 8");
    assert!(value(&scrape, "cache_l2_skipped_total", &[ns]).unwrap() >= 1.0);
}
