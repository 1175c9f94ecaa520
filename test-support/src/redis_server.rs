//! A real `redis-server` per test, on a free loopback port.
//!
//! Modelled on redis-rs's `redis-test`: the port comes from a `127.0.0.1:0`
//! listener, the server runs without persistence, start-up waits until it
//! answers `PING`, a failed start panics with the server's log, and `Drop`
//! kills it (it is a [`ChildProcess`]). `REDIS_SERVER_BIN` overrides the
//! binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ChildProcess;

pub struct RedisServer {
    process: ChildProcess,
    port: u16,
    dir: PathBuf,
    /// The extra settings it was started with (for a restart).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server on a free port with more command-line settings
    /// (`["--maxmemory-policy", "noeviction"]`); later ones win over the
    /// defaults.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut last_log = String::new();
        // The port can be taken between our probe and the server's bind:
        // try a few.
        for _ in 0..5 {
            match RedisServer::start_on_with(free_port(), args) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start; its log:\n{last_log}");
    }

    /// Starts a read-only replica of `primary` on a free port, and waits
    /// (at most 10 s) until it has synchronised with it: writes sent to it
    /// get `-READONLY`, like a client still connected to the old master
    /// after a failover.
    pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let port = primary.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut client = replica.client();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut client)
                .expect("INFO replication");
            if info.contains("master_link_status:up") {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not synchronise with its primary: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server on `port`, or returns its log when it does not answer.
    pub fn start_on(port: u16) -> Result<RedisServer, String> {
        RedisServer::start_on_with(port, &[])
    }

    /// [`start_on`](RedisServer::start_on) with more command-line settings.
    pub fn start_on_with(port: u16, args: &[&str]) -> Result<RedisServer, String> {
        let binary = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let dir =
            std::env::temp_dir().join(format!("cache-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("redis.log");
        let mut command = Command::new(&binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "64mb", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = ChildProcess::try_spawn(&mut command).unwrap_or_else(|error| {
            panic!(
                "cannot run `{binary}` ({error}); run ./scripts/test, which installs redis-server"
            )
        });
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut server = RedisServer {
            process,
            port,
            dir,
            args,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.ping() {
                return Ok(server);
            }
            if server.process.has_exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        server.kill();
        Err(log)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers `PING` now.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// A synchronous client for inspecting and tampering with the data.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis-server")
    }

    /// How many connections are subscribed to `namespace`'s invalidation
    /// channel (database 0) on this server.
    pub fn invalidation_subscribers(&self, namespace: &str) -> u64 {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{namespace} #inval db0"))
            .query(&mut self.client())
            .expect("PUBSUB NUMSUB");
        counts.first().map_or(0, |(_, count)| *count)
    }

    /// Suspends the server process (`kill -STOP`): connections stay open and
    /// nothing answers, like a server stuck in a long command or a GC pause.
    pub fn freeze(&self) {
        signal(self.process.id(), "-STOP");
    }

    /// Resumes a frozen server (`kill -CONT`).
    pub fn thaw(&self) {
        signal(self.process.id(), "-CONT");
    }

    /// Kills the server (`SIGKILL`: no shutdown save) and starts it again on
    /// the same port, directory and settings: with `--appendonly yes` it
    /// reloads what its append-only file holds.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let restarted = RedisServer::start_on_with(self.port, &args)
            .unwrap_or_else(|log| panic!("redis-server did not restart; its log:\n{log}"));
        // The new one owns the process; the directory is the same.
        let old = std::mem::replace(self, restarted);
        std::mem::forget(old);
    }

    /// Stops the server (it is gone, its port refuses connections).
    pub fn kill(&mut self) {
        if !self.process.has_exited() {
            // SIGKILL ends a stopped process too; resuming a frozen one
            // first is only belt and braces.
            let _ = Command::new("kill")
                .args(["-CONT", &self.process.id().to_string()])
                .status();
        }
        self.process.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A port nothing listens on (taken from the OS, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// A Redis URL where nothing listens: connections are refused at once.
pub fn dead_url() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}
