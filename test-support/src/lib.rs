//! What the integration tests (`tests/`) and the benches (`benches/`) share,
//! as a dev-only crate (as redis-rs has `redis-test` and tracing has
//! `tracing-mock`): a real `redis-server` per test on a free loopback port
//! ([`RedisServer`]) and what its keys hold ([`Stored`]), a fault-injection
//! proxy ([`Proxy`]), ports and URLs where nothing listens, child processes
//! killed on drop ([`ChildProcess`]), bounded waits (polling until a
//! condition holds, [`within`], a [`Gate`] that cannot miss its opening),
//! captured logs ([`CapturedLogs`]), a `redis-server` that speaks TLS with
//! certificates made for the test ([`TlsRedisServer`]), a Sentinel set-up
//! (primary, replica, sentinel: [`SentinelSet`]), a local Redis Cluster
//! ([`RedisCluster`]), scenarios run on either ([`TestRedis`],
//! [`on_every_topology!`]), a throwaway PostgreSQL cluster
//! ([`PostgresServer`]), and the value every benchmark caches ([`User`]).

mod cluster;
mod gate;
mod logs;
mod postgres_server;
mod process;
mod proxy;
mod redis_server;
mod sentinel;
mod stored;
mod temp_sqlite;
mod tls_server;
mod topologies;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use cluster::{RedisCluster, key_slot};
pub use gate::{Gate, within};
pub use logs::CapturedLogs;
pub use postgres_server::PostgresServer;
pub use process::{ChildProcess, Finished, example_binary};
pub use proxy::Proxy;
pub use redis_server::{RedisServer, dead_url, free_port};
pub use sentinel::SentinelSet;
pub use stored::{Stored, StoredEntry};
pub use temp_sqlite::TempSqlite;
pub use tls_server::{Certificates, TlsRedisServer};
pub use topologies::{TestRedis, Topology};

/// Waits until `condition` holds, polling, for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition().await
}

/// Waits (at most 5 s) until `cache`'s start-up probe came back through its
/// invalidation channel, so that messages published from now on reach it;
/// panics with its stats otherwise.
pub async fn subscribed(cache: &cache_runtime::Cache) {
    let verified = eventually(Duration::from_secs(5), async || {
        cache.stats().channel_verified
    })
    .await;
    assert!(
        verified,
        "the start-up probe did not come back through the channel: {:?}",
        cache.stats()
    );
}

/// The value every benchmark caches: 80 bytes inline plus about 100 on the
/// heap (60 bytes encoded with bincode's standard config for id 42), five
/// allocations to clone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
}

/// The user with id `id`.
pub fn user(id: u64) -> User {
    User {
        id,
        name: format!("Ada Lovelace {id}"),
        email: format!("ada.lovelace.{id}@example.com"),
        roles: vec!["reader".to_owned(), "writer".to_owned()],
    }
}
