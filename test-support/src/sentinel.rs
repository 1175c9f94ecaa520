//! A Sentinel set-up on free loopback ports: a primary, a replica of it,
//! and one sentinel that watches them and promotes the replica when the
//! primary is gone (quorum 1, the primary counted down after 500 ms).
//! Every process is killed on drop, and the sentinel's directory (its
//! configuration, which it rewrites, and its log) removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildProcess, RedisServer, free_port};

/// A primary, its replica and a sentinel (see the module docs).
pub struct SentinelSet {
    // Declared first: dropped (killed) first, so it never acts on the
    // servers going away.
    sentinel: ChildProcess,
    sentinel_port: u16,
    primary: RedisServer,
    replica: RedisServer,
    dir: PathBuf,
}

impl SentinelSet {
    /// The name the sentinel knows the primary by.
    pub const MASTER: &str = "mymaster";

    /// Starts the primary, the replica (synchronised with it), then the
    /// sentinel, and waits (at most 10 s) until the sentinel knows the
    /// replica, so that it can promote it.
    pub fn start() -> SentinelSet {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(&primary);
        let dir = std::env::temp_dir().join(format!(
            "cache-test-sentinel-{}-{}",
            std::process::id(),
            primary.port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir for the sentinel");
        let mut last_log = String::new();
        // The port can be taken between our probe and the sentinel's bind:
        // try a few.
        for _ in 0..5 {
            match start_sentinel(&dir, &primary, &replica) {
                Ok((sentinel, sentinel_port)) => {
                    return SentinelSet {
                        sentinel,
                        sentinel_port,
                        primary,
                        replica,
                        dir,
                    };
                }
                Err(log) => last_log = log,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("the sentinel did not start; its log:\n{last_log}");
    }

    /// `redis://127.0.0.1:<sentinel port>`.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The server that was the primary at start.
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The server that was the replica at start.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// Kills the primary (`SIGKILL`): its port refuses connections, and
    /// the sentinel soon promotes the replica.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let address: Option<(String, u16)> = ask(
            self.sentinel_port,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(Self::MASTER),
        )?;
        address.map(|(_, port)| port)
    }

    /// Waits (at most `limit`) until the sentinel names the replica as the
    /// master and the replica says it is one.
    pub fn wait_for_promotion(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.master_port() == Some(self.replica.port()) && is_master(&self.replica) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        self.sentinel.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a sentinel watching `primary` on a free port, and waits (at
/// most 10 s) until it knows `replica`; its log otherwise.
fn start_sentinel(
    dir: &Path,
    primary: &RedisServer,
    replica: &RedisServer,
) -> Result<(ChildProcess, u16), String> {
    let port = free_port();
    let config = dir.join("sentinel.conf");
    let log = dir.join("sentinel.log");
    std::fs::write(
        &config,
        format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             dir {dir}\n\
             logfile {log}\n\
             sentinel monitor {master} 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds {master} 500\n\
             sentinel failover-timeout {master} 2000\n\
             sentinel parallel-syncs {master} 1\n",
            dir = dir.display(),
            log = log.display(),
            master = SentinelSet::MASTER,
            primary = primary.port(),
        ),
    )
    .expect("write the sentinel's configuration");
    let binary = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
    let mut sentinel = ChildProcess::spawn(
        Command::new(&binary)
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !sentinel.has_exited() {
        let replicas: Option<Vec<HashMap<String, String>>> = ask(
            port,
            redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(SentinelSet::MASTER),
        );
        let knows_replica = replicas.is_some_and(|replicas| {
            replicas
                .iter()
                .any(|known| known.get("port") == Some(&replica.port().to_string()))
        });
        if knows_replica {
            return Ok((sentinel, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sentinel.kill();
    Err(std::fs::read_to_string(&log).unwrap_or_default())
}

/// One command to the sentinel on `port`; `None` when it does not answer.
fn ask<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    command.query(&mut connection).ok()
}

/// Whether `server` says it is a master.
fn is_master(server: &RedisServer) -> bool {
    let info: redis::RedisResult<String> = redis::cmd("INFO")
        .arg("replication")
        .query(&mut server.client());
    info.is_ok_and(|info| info.contains("role:master"))
}
