//! A local Redis Cluster per test: 3 masters and 3 replicas on free
//! loopback ports, formed with `redis-cli --cluster create`, stopped (every
//! node killed, its directory removed) on drop.
//!
//! `cluster-node-timeout` is 1 s, so a killed master's replica takes over
//! within about 2 s. Nodes write nothing to disk but `nodes.conf` (which a
//! cluster node needs) in their own temporary directory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls_server::tls_args;
use crate::{Certificates, ChildProcess, RedisServer, free_port};

/// How long a cluster may take to form, or to take over for a failed master.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster of real `redis-server` processes.
pub struct RedisCluster {
    /// `None` once killed.
    nodes: Vec<Option<RedisServer>>,
    /// For a cluster over TLS: the certificates, and each node's TLS port.
    tls: Option<(Certificates, Vec<u16>)>,
}

/// The settings of every node.
const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "1000",
    // A node's nodes.conf lives in its own directory (the server's
    // `--dir`), named the same for every node.
    "--cluster-config-file",
    "nodes.conf",
    // Replicas sync at once (the default waits 5 s for more replicas): a
    // replica that never synced refuses to take over.
    "--repl-diskless-sync-delay",
    "0",
];

impl RedisCluster {
    /// Starts 3 masters and 3 replicas and waits until every node reports
    /// `cluster_state:ok` and knows all 16384 slots (a few seconds).
    ///
    /// ```no_run
    /// let cluster = cache_test_support::RedisCluster::start();
    /// assert_eq!(cluster.seed_urls().len(), 6);
    /// ```
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_with(NODE_ARGS)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        create(&addresses, &[]);
        let cluster = RedisCluster {
            nodes: nodes.into_iter().map(Some).collect(),
            tls: None,
        };
        cluster.wait_until_ok();
        cluster
    }

    /// The same over TLS: clients and the cluster bus speak TLS on each
    /// node's TLS port, with certificates for `127.0.0.1` signed by a CA
    /// of the cluster's own ([`ca_pem`](RedisCluster::ca_pem)); the plain
    /// ports stay open for the test to inspect.
    /// [`seed_urls`](RedisCluster::seed_urls) are `rediss://` URLs.
    pub fn start_tls() -> RedisCluster {
        let certificates = Certificates::generate(&["127.0.0.1"]);
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        for _ in 0..30 {
            if nodes.len() == 6 {
                break;
            }
            // The cluster bus listens 10000 ports above the TLS port.
            let tls_port = loop {
                let port = free_port();
                if port < 55_000 {
                    break port;
                }
            };
            let mut args: Vec<String> = NODE_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
            args.extend(tls_args(tls_port, &certificates));
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Ok(node) = RedisServer::start_on_with(free_port(), &args) {
                nodes.push(node);
                tls_ports.push(tls_port);
            }
        }
        assert_eq!(nodes.len(), 6, "TLS cluster nodes did not start");
        let addresses: Vec<String> = tls_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let ca = certificates.ca_file().to_string_lossy().into_owned();
        create(&addresses, &["--tls", "--cacert", &ca]);
        let cluster = RedisCluster {
            nodes: nodes.into_iter().map(Some).collect(),
            tls: Some((certificates, tls_ports)),
        };
        cluster.wait_until_ok();
        cluster
    }

    /// The CA that signed a TLS cluster's certificates (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        let (certificates, _) = self.tls.as_ref().expect("a cluster started with start_tls");
        certificates.ca_pem()
    }

    /// The URLs of the nodes still running, to seed a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        match &self.tls {
            None => self.nodes.iter().flatten().map(RedisServer::url).collect(),
            Some((_, tls_ports)) => self
                .nodes
                .iter()
                .zip(tls_ports)
                .filter(|(node, _)| node.is_some())
                .map(|(_, port)| format!("rediss://127.0.0.1:{port}"))
                .collect(),
        }
    }

    /// The nodes still running that are masters now.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .flatten()
            .filter(|node| role(node).as_deref() == Some("master"))
            .collect()
    }

    /// Kills (SIGKILL) the master serving `key`'s slot, and returns its
    /// port. Its replica takes over within a few seconds
    /// ([`wait_until_ok`](RedisCluster::wait_until_ok) waits for it).
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let slot = key_slot(key);
        let at = self
            .nodes
            .iter()
            .position(|node| {
                node.as_ref().is_some_and(|node| {
                    role(node).as_deref() == Some("master") && serves_slot(node, slot)
                })
            })
            .expect("a master serves every slot");
        let mut node = self.nodes[at].take().expect("running");
        let port = node.port();
        node.kill();
        port
    }

    /// Freezes (SIGSTOP) the master serving `key`'s slot, and returns its
    /// port: it keeps its connections open but answers nothing, until the
    /// cluster fails it over (or [`thaw`](RedisCluster::thaw)). Killed on
    /// drop like the others.
    pub fn freeze_master_of(&self, key: &str) -> u16 {
        let master = self
            .master_serving(key_slot(key))
            .expect("a master serves every slot");
        master.freeze();
        master.port()
    }

    /// Resumes every frozen node.
    pub fn thaw(&self) {
        for node in self.nodes.iter().flatten() {
            node.thaw();
        }
    }

    /// Moves `count` slots from the master serving `slot` (which must
    /// serve the `count` slots from `slot` on) to another master with
    /// `redis-cli --cluster reshard`, keys included (`MIGRATE`), and
    /// returns when it is done: the ports of the master they left and of
    /// the one they reached. Blocking: run it beside the load under test
    /// (`spawn_blocking`).
    pub fn reshard(&self, slot: u16, count: u16) -> (u16, u16) {
        let masters = self.masters();
        let from = masters
            .iter()
            .find(|master| (slot..slot + count).all(|slot| serves_slot(master, slot)))
            .expect("one master serves the slots to move");
        let to = masters
            .iter()
            .find(|master| master.port() != from.port())
            .expect("another master");
        let output = Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", from.port()),
            ])
            .args(["--cluster-from", &node_id(from)])
            .args(["--cluster-to", &node_id(to)])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (from.port(), to.port())
    }

    /// The port of the master serving `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.master_serving(slot).map(RedisServer::port)
    }

    /// The running master serving `slot` now.
    fn master_serving(&self, slot: u16) -> Option<&RedisServer> {
        self.masters()
            .into_iter()
            .find(|master| serves_slot(master, slot))
    }

    /// Waits (at most 30 s) until every running node reports
    /// `cluster_state:ok` with all slots served, there are 3 masters, and
    /// every running replica has synchronised with its master (so that it
    /// can take over).
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let states: Vec<String> = self.nodes.iter().flatten().map(cluster_info).collect();
            let all_ok = states.iter().all(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            let replicas_synced = self.nodes.iter().flatten().all(|node| {
                let info = replication_info(node);
                !info.contains("role:slave") || info.contains("master_link_status:up")
            });
            if all_ok && replicas_synced && self.masters().len() == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach a good state within {FORM_TIMEOUT:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `redis-cli --cluster create` over `addresses`, 3 masters and a replica
/// each (`options`: `--tls` and its CA for a TLS cluster).
fn create(addresses: &[String], options: &[&str]) {
    let finished = ChildProcess::spawn(
        Command::new("redis-cli")
            .args(options)
            .args(["--cluster", "create"])
            .args(addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    // Nodes that cannot meet leave it waiting for ever.
    .finish(FORM_TIMEOUT);
    assert!(
        finished.status.success(),
        "redis-cli --cluster create failed:\n{}{}",
        finished.stdout,
        finished.stderr
    );
}

/// A node's id in the cluster (`CLUSTER MYID`).
fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.client())
        .expect("CLUSTER MYID")
}

/// `CLUSTER INFO` of a node (empty when it does not answer).
fn cluster_info(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut node.client())
        .unwrap_or_default()
}

/// `INFO replication` of a node (empty when it does not answer).
fn replication_info(node: &RedisServer) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut node.client())
        .unwrap_or_default()
}

/// The node's `role` from `INFO replication`.
fn role(node: &RedisServer) -> Option<String> {
    replication_info(node)
        .lines()
        .find_map(|line| line.strip_prefix("role:"))
        .map(|role| role.trim().to_owned())
}

/// Whether `node` (a master) serves `slot`: its own line (`myself`) of
/// `CLUSTER NODES` lists its slot ranges from the ninth field on.
fn serves_slot(node: &RedisServer, slot: u16) -> bool {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut node.client())
        .unwrap_or_default();
    let Some(own) = nodes.lines().find(|line| line.contains("myself")) else {
        return false;
    };
    own.split_whitespace().skip(8).any(|range| {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        match (start.parse::<u16>(), end.parse::<u16>()) {
            (Ok(start), Ok(end)) => (start..=end).contains(&slot),
            _ => false, // an importing/migrating marker
        }
    })
}

/// The cluster slot of `key` (CRC16/XMODEM of the key, or of its hash tag,
/// mod 16384), as Redis computes it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16(hashed) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // Examples from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
    }
}
