//! One test, every topology: a scenario written once against [`TestRedis`]
//! runs on one `redis-server` and on a local Redis Cluster
//! ([`on_every_topology!`](crate::on_every_topology)), instead of a copy of
//! each suite per topology.

use std::collections::BTreeSet;

use cache_runtime::CacheBuilder;
use redis::cluster::ClusterClient;

use crate::{RedisCluster, RedisServer};

/// Which Redis a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `redis-server`.
    Server,
    /// 3 masters and 3 replicas ([`RedisCluster`]).
    Cluster,
}

/// A running Redis of either topology, stopped on drop.
pub enum TestRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Starts one of `topology`.
    pub fn start(topology: Topology) -> TestRedis {
        match topology {
            Topology::Server => TestRedis::Server(RedisServer::start()),
            Topology::Cluster => TestRedis::Cluster(RedisCluster::start()),
        }
    }

    pub fn topology(&self) -> Topology {
        match self {
            TestRedis::Server(_) => Topology::Server,
            TestRedis::Cluster(_) => Topology::Cluster,
        }
    }

    /// `builder` pointed at this Redis (`redis_url` or `redis_cluster`).
    pub fn connect(&self, builder: CacheBuilder) -> CacheBuilder {
        match self {
            TestRedis::Server(server) => builder.redis_url(server.url()),
            TestRedis::Cluster(cluster) => builder.redis_cluster(cluster.seed_urls()),
        }
    }

    /// A connection for looking at (and tampering with) what the cache
    /// stored: a plain connection, or a cluster connection that routes
    /// each command by its key.
    pub fn client(&self) -> Box<dyn redis::ConnectionLike> {
        match self {
            TestRedis::Server(server) => Box::new(server.client()),
            TestRedis::Cluster(cluster) => Box::new(
                ClusterClient::new(cluster.seed_urls())
                    .and_then(|client| client.get_connection())
                    .expect("connect to the test cluster"),
            ),
        }
    }

    /// What `key` holds (`None` when absent).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut *self.client())
            .expect("GET")
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query(&mut *self.client())
            .expect("EXISTS")
    }

    /// Every key, on every master, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.keys_per_master()
            .into_iter()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The keys each master holds (one list for one server).
    pub fn keys_per_master(&self) -> Vec<Vec<String>> {
        let keys = |node: &RedisServer| -> Vec<String> {
            redis::cmd("KEYS")
                .arg("*")
                .query(&mut node.client())
                .expect("KEYS")
        };
        match self {
            TestRedis::Server(server) => vec![keys(server)],
            TestRedis::Cluster(cluster) => cluster.masters().into_iter().map(keys).collect(),
        }
    }
}

/// Runs each scenario (an `async fn(TestRedis)` in the calling module) as
/// two tests, `on_one_server::<scenario>` and `on_a_cluster::<scenario>`,
/// each on a Redis of its own.
///
/// ```ignore
/// async fn hits_are_shared(redis: TestRedis) { /* ... */ }
/// cache_test_support::on_every_topology!(hits_are_shared);
/// ```
#[macro_export]
macro_rules! on_every_topology {
    ($($scenario:ident),+ $(,)?) => {
        mod on_one_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::TestRedis::start($crate::Topology::Server)).await
                }
            )+
        }
        mod on_a_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::TestRedis::start($crate::Topology::Cluster)).await
                }
            )+
        }
    };
}
