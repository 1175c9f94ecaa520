//! A throwaway PostgreSQL cluster per test, on a free loopback port.
//!
//! `initdb` makes a cluster in a temporary directory; the `postgres` server
//! runs on it as a child process of the test (a [`ChildProcess`], like
//! [`RedisServer`](crate::RedisServer)), listening on 127.0.0.1 only, its
//! unix socket in that directory too (never the system's
//! `/var/run/postgresql`), tuned for speed rather than durability
//! (`fsync=off`, small shared buffers); `createdb` makes the database the
//! test uses. `Drop` stops it (`SIGQUIT`: PostgreSQL's immediate shutdown,
//! which ends its backends; `SIGKILL` if it has not exited within 10 s),
//! reaps it and deletes the directory, also when the test panics.
//!
//! Not `pg_ctl start`: it detaches the server, which init then owns; as the
//! test's own child, the server is stopped and reaped by the same
//! [`ChildProcess`] handling as every other process a test starts, and
//! once `Drop` returns it is gone, not a zombie waiting for init.
//!
//! The binaries: `PG_BIN_DIR` if set, else the directory `initdb` on `PATH`
//! really lives in (Debian keeps them in `/usr/lib/postgresql/<version>/bin`
//! and puts none of them on `PATH`; a symlink on `PATH` leads there), else
//! the newest `/usr/lib/postgresql/<version>/bin`.
//!
//! PostgreSQL refuses to run as root: when the tests do, `initdb` and the
//! server run as the `postgres` OS user (the Debian package creates it;
//! the child process switches to it before `exec`), in a directory it
//! owns.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{ChildProcess, free_port};

/// The OS user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";
/// The database user, and the database [`PostgresServer::start`] creates.
const SUPERUSER: &str = "postgres";
const DATABASE: &str = "cache_test";

/// How long `initdb` and `createdb` may take each (a busy two-core machine
/// runs `initdb` in about 5 s), and the server to accept connections.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long the server gets to exit after `SIGQUIT` before `SIGKILL`.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A running PostgreSQL server with one database, stopped and deleted on
/// drop.
///
/// ```no_run
/// let postgres = cache_test_support::PostgresServer::start();
/// assert!(postgres.url().starts_with("postgres://postgres@127.0.0.1:"));
/// ```
pub struct PostgresServer {
    binaries: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The postmaster, once started.
    process: Option<ChildProcess>,
}

impl PostgresServer {
    /// Makes a cluster, starts it on a free port and creates the database
    /// [`url`](PostgresServer::url) names; panics with the server's log
    /// when it does not start.
    pub fn start() -> PostgresServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let binaries = binaries();
        let dir = std::env::temp_dir().join(format!(
            "cache-test-postgres-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the cluster's temp dir");
        let mut server = PostgresServer {
            binaries,
            dir,
            port: 0,
            process: None,
        };
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(&server.dir, Some(uid), Some(gid))
                .expect("give the cluster's directory to the postgres user");
        }
        server.init();
        let mut last_log = String::new();
        // The port can be taken between our probe and the server's bind:
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.try_start() {
                server.create_database();
                return server;
            }
            server.stop();
            last_log = std::fs::read_to_string(server.log()).unwrap_or_default();
        }
        panic!("postgres did not start; its log:\n{last_log}");
    }

    /// The sqlx URL of its database (user `postgres`, no password: the
    /// cluster trusts connections from 127.0.0.1).
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn init(&self) {
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("--pgdata")
            .arg(self.data())
            .args(["--username", SUPERUSER, "--auth", "trust"])
            .args(["--encoding", "UTF8", "--locale", "C"])
            // A cluster that lives for one test need not survive a crash.
            .args(["--no-sync", "--no-instructions"]);
        run("initdb", &mut initdb);
        let settings = format!(
            "\n# cache_test_support::PostgresServer\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 60\n",
            self.dir.display()
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("initdb's postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
    }

    /// Starts the server on `self.port` and waits until it accepts
    /// connections; whether it does.
    fn try_start(&mut self) -> bool {
        let log = File::create(self.log()).expect("the server's log file");
        let mut postgres = self.server_command("postgres");
        postgres
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(ChildProcess::spawn(&mut postgres));
        let deadline = Instant::now() + COMMAND_LIMIT;
        while Instant::now() < deadline {
            if self.process.as_mut().is_none_or(ChildProcess::has_exited) {
                return false;
            }
            if self.accepts_connections() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the postmaster says it is ready (the status line of
    /// `postmaster.pid`, as `pg_ctl start --wait` reads it).
    fn accepts_connections(&self) -> bool {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .is_ok_and(|pid_file| pid_file.lines().nth(7).map(str::trim) == Some("ready"))
    }

    fn create_database(&self) {
        let mut createdb = Command::new(self.binaries.join("createdb"));
        createdb
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--username", SUPERUSER, DATABASE]);
        run("createdb", &mut createdb);
    }

    /// Stops the server if one runs, and reaps it: `SIGQUIT` (immediate
    /// shutdown: it ends its backends, then itself; nothing is kept), then
    /// `SIGKILL` if it is still there after [`STOP_LIMIT`].
    fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        if !process.has_exited() {
            let _ = Command::new("kill")
                .args(["-QUIT", &process.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_LIMIT;
            while !process.has_exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        process.kill();
    }

    /// `program` from the PostgreSQL binaries, switched to the server's OS
    /// user when the tests run as root (PostgreSQL refuses root), in the
    /// cluster's directory (that user may not read the caller's).
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.binaries.join(program));
        if let Some((uid, gid)) = server_user() {
            command.uid(uid).gid(gid);
        }
        command.current_dir(&self.dir);
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `command` to its end; panics with what it printed when it fails.
fn run(what: &str, command: &mut Command) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let finished = ChildProcess::spawn(command).finish(COMMAND_LIMIT);
    assert!(
        finished.status.success(),
        "{what} failed ({}):\n{}\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
}

/// The uid and gid of the `postgres` OS user when the tests run as root,
/// `None` otherwise (the server then runs as the tests' own user).
fn server_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if id(&["-u"]) != "0" {
            return None;
        }
        let number = |option: &str| {
            id(&[option, SERVER_USER])
                .parse::<u32>()
                .unwrap_or_else(|_| {
                    panic!(
                        "the tests run as root, which PostgreSQL refuses, and there is no \
                     `{SERVER_USER}` OS user to run it as (the postgresql package creates it)"
                    )
                })
        };
        Some((number("-u"), number("-g")))
    })
}

/// What `id <args>` prints.
fn id(args: &[&str]) -> String {
    let output = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
/// The directory holding `initdb`, `postgres` and `createdb`; panics
/// saying how to install them when there is none.
fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf));
    on_path
        .or_else(newest_debian_binaries)
        .filter(|dir| dir.join("postgres").is_file())
        .expect(
            "PostgreSQL's initdb and postgres are not installed (not on PATH nor in \
             /usr/lib/postgresql/<version>/bin); run ./scripts/test, which installs \
             `postgresql`, or set PG_BIN_DIR",
        )
}

/// `/usr/lib/postgresql/<version>/bin` of the highest version installed.
fn newest_debian_binaries() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// What `psql` prints for `query` on the server's database.
    fn psql(server: &PostgresServer, query: &str) -> String {
        let output = Command::new(server.binaries.join("psql"))
            .arg(server.url())
            .args(["--no-align", "--tuples-only", "--command", query])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn a_server_runs_on_loopback_and_is_gone_with_its_directory_after_a_panic() {
        let server = PostgresServer::start();
        let (port, dir) = (server.port(), server.dir.clone());
        let pid = server.process.as_ref().expect("a postmaster").id();
        assert_eq!(psql(&server, "SELECT current_database()"), DATABASE);
        assert_eq!(psql(&server, "SHOW listen_addresses"), "127.0.0.1");
        assert_eq!(psql(&server, "SHOW fsync"), "off");

        // A test that panics holding it still stops it.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _server = server;
            panic!("the test failed");
        }));
        assert!(panicked.is_err());
        // The postmaster is this test's child, reaped when stopped: never a
        // zombie that `kill -0` would still find.
        assert!(
            !crate::process::exists(pid),
            "the postmaster {pid} still runs"
        );
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections"
        );
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
