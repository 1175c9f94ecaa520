//! What `Cache::stats()` says about Redis and the subscription is what is
//! true now (`channel_verified`, `since_heartbeat`, `since_l2_answer`,
//! `breaker`): against a real redis-server that is killed and restarted on
//! the same port, with no traffic meanwhile (only the cache's own
//! heartbeats).

use std::time::{Duration, Instant};

use cache_runtime::{BreakerState, Cache};
use cache_test_support::{RedisServer, eventually, subscribed};

const HEARTBEAT: Duration = Duration::from_millis(250);

/// The window past which a heartbeat that has not come back means the
/// subscription is not delivering: three intervals.
const WINDOW: Duration = Duration::from_millis(750);

async fn cache(url: String) -> Cache {
    Cache::builder()
        .namespace("health-stats")
        .redis_url(url)
        .heartbeat_interval(HEARTBEAT)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("valid configuration")
}

#[tokio::test]
async fn without_redis_nothing_was_ever_answered_or_verified() {
    let cache = Cache::builder().build().await.unwrap();
    let stats = cache.stats();
    assert_eq!(stats.breaker, BreakerState::Disabled);
    assert!(!stats.channel_verified);
    assert_eq!(stats.since_heartbeat, None);
    assert_eq!(stats.since_l2_answer, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_is_verified_only_while_heartbeats_come_back() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let cache = cache(redis.url()).await;
    subscribed(&cache).await;
    // Idle, and yet Redis answered recently (the heartbeats' PUBLISH) and
    // heartbeats come back: both ages stay around one interval.
    for _ in 0..4 {
        let stats = cache.stats();
        assert!(stats.channel_verified, "{stats:?}");
        assert!(stats.since_heartbeat.unwrap() <= WINDOW, "{stats:?}");
        assert!(stats.since_l2_answer.unwrap() <= WINDOW, "{stats:?}");
        assert_eq!(stats.breaker, BreakerState::Closed);
        tokio::time::sleep(HEARTBEAT).await;
    }

    redis.kill();
    let killed = Instant::now();
    let unverified = eventually(Duration::from_secs(5), async || {
        !cache.stats().channel_verified
    })
    .await;
    let stats = cache.stats();
    let outage = killed.elapsed();
    assert!(
        unverified,
        "still verified 5 s after Redis was killed: {stats:?}"
    );
    println!("unverified {outage:?} after the kill: {stats:?}");
    // Both last happened before the kill (a coarse clock: some slack).
    let slack = Duration::from_millis(20);
    assert!(
        stats.since_heartbeat.unwrap() + slack >= outage,
        "{stats:?}"
    );
    assert!(stats.since_heartbeat.unwrap() > WINDOW, "{stats:?}");
    assert!(
        stats.since_l2_answer.unwrap() + slack >= outage,
        "{stats:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = cache.stats();
    assert!(!later.channel_verified, "{later:?}");
    assert!(
        later.since_l2_answer.unwrap()
            >= stats.since_l2_answer.unwrap() + Duration::from_millis(900),
        "nothing answered meanwhile: {later:?}"
    );

    let _redis = RedisServer::start_on(port).expect("Redis restarts on its port");
    let restarted = Instant::now();
    let verified = eventually(Duration::from_secs(30), async || {
        cache.stats().channel_verified
    })
    .await;
    let stats = cache.stats();
    assert!(verified, "{stats:?}");
    println!("verified again {:?} after the restart", restarted.elapsed());
    assert!(
        stats.since_l2_answer.unwrap() < restarted.elapsed(),
        "{stats:?}"
    );
    assert!(stats.since_heartbeat.unwrap() <= WINDOW, "{stats:?}");
    assert_eq!(stats.breaker, BreakerState::Closed);
}
