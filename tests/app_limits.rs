//! The example app (`examples/axum_app.rs`) against misbehaving clients,
//! over real TCP on loopback: headers that never finish, a body that
//! trickles in, idle keep-alive connections, more connections than the
//! process has file descriptors, SIGTERM while a slow client is attached,
//! and a database pool that cannot keep up. Every limit is set small here
//! (through `Settings` in process, through the environment for the binary)
//! so that each test takes seconds, and every wait is bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum_app::app::{App, Settings, WriteBehindSettings};
use axum_app::db::{DEFAULT_REPORT_ROWS, PoolSettings};
use axum_app::serve::{Limits, serve};
use cache_test_support::{TempSqlite, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The limits of the in-process app: small, so that the tests are quick.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// What a limit may overrun by on a busy 2-core machine before a test calls
/// it unbounded.
const SLACK: Duration = Duration::from_secs(4);

/// The app served in this process by the app's own server function, with
/// the test's limits; stopped on drop.
struct LimitedApp {
    _app: App,
    address: SocketAddr,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LimitedApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LimitedApp {
    async fn start(db: &TempSqlite, limits: Limits, pool: PoolSettings) -> LimitedApp {
        let settings = Settings {
            database_url: db.url(),
            redis_url: None,
            redis_cluster: Vec::new(),
            cache_enabled: true,
            namespace: "app-limits".into(),
            limits,
            pool,
            report_rows: DEFAULT_REPORT_ROWS,
            write_behind: WriteBehindSettings::default(),
        };
        let app = App::start(&settings).await.expect("the app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = app.router();
        let server = tokio::spawn(async move {
            serve(listener, router, limits, std::future::pending())
                .await
                .unwrap();
        });
        LimitedApp {
            _app: app,
            address,
            // Never through a proxy from the environment: loopback only.
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    async fn user_name(&self, id: i64) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/users/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()["name"].clone()
    }

    /// A normal request still gets a normal answer.
    async fn assert_serves(&self) {
        let response = self.http.get(self.url("/users/1")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// The limits of the tests about slow clients.
fn small_limits() -> Limits {
    Limits {
        header_timeout: HEADER_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        ..Limits::default()
    }
}

/// What the server sent on `stream` until it closed it, and when it did;
/// `None` if it was still open after `limit`. A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(limit, read_all).await.ok()?;
    Some((received, closed))
}

/// One response read off a kept-alive connection: its status line and
/// headers, and its body (`Content-Length` framed, as the app sends).
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8(received[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&buffer[..n]);
    }
    (head, body)
}

/// Writes `bytes` one at a time, `every` apart, until done or the server
/// closes; in a task of its own so the test can read meanwhile.
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            tokio::time::sleep(every).await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
        }
        // All sent: keep the connection open (never finish the request).
        std::future::pending::<()>().await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let db = TempSqlite::new("app-limits");
    let app = LimitedApp::start(&db, small_limits(), PoolSettings::default()).await;

    // One client goes silent after the request line, the other keeps
    // sending a header a byte every 100 ms, never ending it.
    let mut silent = app.connect().await;
    silent
        .write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let (mut trickling_reader, mut trickling_writer) = app.connect().await.into_split();
    trickling_writer
        .write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let header = b"X-Slow: ".iter().chain(&[b'a'; 200]).copied().collect();
    let writer = trickle(trickling_writer, header, Duration::from_millis(100));
    let started = Instant::now();

    let silent_closed = read_until_closed(&mut silent, HEADER_TIMEOUT + SLACK).await;
    let mut buffer = Vec::new();
    let trickling_closed = tokio::time::timeout(HEADER_TIMEOUT + SLACK, async {
        let _ = trickling_reader.read_to_end(&mut buffer).await;
    })
    .await;
    writer.abort();
    let (sent, _) = silent_closed.unwrap_or_else(|| {
        panic!("a client silent after its request line was still connected after {HEADER_TIMEOUT:?} + {SLACK:?}")
    });
    assert!(
        trickling_closed.is_ok(),
        "a client trickling its headers was still connected after {:?}",
        started.elapsed()
    );
    for answer in [&sent, &buffer] {
        assert!(
            !answer.starts_with(b"HTTP/1.1 2"),
            "unfinished headers got a success: {:?}",
            String::from_utf8_lossy(answer)
        );
    }
    app.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickling_in_is_cut_off() {
    let db = TempSqlite::new("app-limits");
    let app = LimitedApp::start(&db, small_limits(), PoolSettings::default()).await;
    let before = app.user_name(1).await;

    // A PUT announcing 200 bytes of body and sending one every 100 ms: it
    // would take 20 s.
    let (mut reader, mut writer) = app.connect().await.into_split();
    writer
        .write_all(
            b"PUT /users/1 HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let body = format!("{{\"name\": \"{}\"}}", "a".repeat(188)).into_bytes();
    assert_eq!(body.len(), 200);
    let writer = trickle(writer, body, Duration::from_millis(100));
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(REQUEST_TIMEOUT + SLACK, async {
        let _ = reader.read_to_end(&mut answer).await;
    })
    .await;
    let elapsed = started.elapsed();
    writer.abort();
    assert!(
        closed.is_ok(),
        "a body trickling in was still being read after {elapsed:?}"
    );
    // 408, or closed without an answer if the reset overtook it; never a
    // success for a request whose body never arrived.
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    println!(
        "trickling body cut off after {elapsed:?} with {:?}",
        String::from_utf8_lossy(&answer).lines().next()
    );
    assert_eq!(
        app.user_name(1).await,
        before,
        "the unfinished PUT changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let db = TempSqlite::new("app-limits");
    let app = LimitedApp::start(&db, small_limits(), PoolSettings::default()).await;

    let mut connection = app.connect().await;
    for _ in 0..2 {
        connection
            .write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut connection).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!body.is_empty());
    }
    // Both requests went over one connection: it is kept alive, for a while.
    let idle_from = Instant::now();
    let closed = read_until_closed(&mut connection, HEADER_TIMEOUT + SLACK).await;
    let (sent, _) = closed.unwrap_or_else(|| {
        panic!("an idle keep-alive connection was still open after {HEADER_TIMEOUT:?} + {SLACK:?}")
    });
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    println!("idle connection closed after {:?}", idle_from.elapsed());
    app.assert_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_database_pool_answers_503_with_retry_after() {
    use sqlx::{Connection, Executor};

    let db = TempSqlite::new("app-limits");
    let pool = PoolSettings {
        max_connections: Some(2),
        acquire_timeout: Duration::from_millis(300),
    };
    // Requests may outlast SQLite's busy timeout (5 s), as with the
    // default limits: the writes stuck behind the lock end with its error.
    let limits = Limits {
        request_timeout: Duration::from_secs(15),
        ..small_limits()
    };
    let app = LimitedApp::start(&db, limits, pool).await;
    app.assert_serves().await;

    // Another process's long write transaction: every write of the app
    // waits for SQLite's lock (busy_timeout, 5 s), holding its pooled
    // connection meanwhile.
    let mut other_writer = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
    other_writer.execute("BEGIN IMMEDIATE").await.unwrap();
    let writes: Vec<_> = (2..8)
        .map(|id| {
            let (http, url) = (app.http.clone(), app.url(&format!("/users/{id}")));
            tokio::spawn(async move {
                let started = Instant::now();
                let response = http
                    .put(url)
                    .json(&serde_json::json!({ "name": "Blocked Writer" }))
                    .send()
                    .await
                    .unwrap();
                let retry_after = response.headers().get("retry-after").cloned();
                (response.status(), retry_after, started.elapsed())
            })
        })
        .collect();

    // A read of a user nobody has read (a cache miss) finds no connection
    // free: a quick 503 asking to retry, not a 500, not a 30 s wait.
    let mut next_id = 100;
    let mut overloaded = None;
    let seen = eventually(Duration::from_secs(4), async || {
        next_id += 1;
        let started = Instant::now();
        let response = app
            .http
            .get(app.url(&format!("/users/{next_id}")))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            overloaded = Some((response, started.elapsed()));
        }
        overloaded.is_some()
    })
    .await;
    assert!(seen, "no read got 503 while the pool was exhausted");
    let (response, took) = overloaded.unwrap();
    assert!(took < Duration::from_secs(2), "the 503 took {took:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");

    // The writes stuck behind the lock give up with 503 too: those that
    // never got a connection at once, those holding one when SQLite's busy
    // timeout ends.
    for write in writes {
        let (status, retry_after, took) = tokio::time::timeout(Duration::from_secs(12), write)
            .await
            .expect("a blocked write answered within 12 s")
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "after {took:?}");
        assert_eq!(
            retry_after.as_ref().map(|value| value.as_bytes()),
            Some(&b"1"[..])
        );
    }

    other_writer.execute("ROLLBACK").await.unwrap();
    let response = app
        .http
        .put(app.url("/users/2"))
        .json(&serde_json::json!({ "name": "Unblocked Writer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "served again once the lock is gone"
    );
}

/// The example binary, built by `cargo test` next to the test binaries.
#[cfg(unix)]
mod binary {
    use std::process::{Command, Stdio};

    use cache_test_support::{ChildProcess, TempSqlite, free_port};

    use super::*;

    pub struct RunningBinary {
        pub child: ChildProcess,
        pub port: u16,
        pub log: PathBuf,
        pub http: reqwest::Client,
    }

    impl Drop for RunningBinary {
        fn drop(&mut self) {
            self.child.kill();
            let _ = std::fs::remove_file(&self.log);
        }
    }

    impl RunningBinary {
        /// Starts `examples/axum_app` with `env`, under `sh -c 'ulimit -n
        /// <open_files>'`, and waits until it answers.
        pub async fn start(
            db: &TempSqlite,
            open_files: u32,
            env: &[(&str, &str)],
        ) -> RunningBinary {
            let binary = cache_test_support::example_binary("axum_app");
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "cache-app-limits-{}-{port}.log",
                std::process::id()
            ));
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("ulimit -n {open_files} && exec \"$0\""))
                .arg(&binary)
                .env("PORT", port.to_string())
                .env("DATABASE_URL", db.url())
                .env_remove("REDIS_URL")
                .env("RUST_LOG", "info")
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::null());
            for (name, value) in env {
                command.env(name, value);
            }
            let running = RunningBinary {
                child: ChildProcess::spawn(&mut command),
                port,
                log,
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(12))
                    .build()
                    .unwrap(),
            };
            let up = eventually(Duration::from_secs(30), async || {
                running
                    .http
                    .get(running.url("/health"))
                    .send()
                    .await
                    .is_ok()
            })
            .await;
            assert!(up, "the app did not start: {}", running.output());
            running
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        pub fn output(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        pub fn open_files(&self) -> usize {
            std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
                .map(|entries| entries.count())
                .unwrap_or(0)
        }

        pub fn signal(&self, signal: &str) {
            let sent = Command::new("kill")
                .args([signal, &self.child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
    }
}

/// 150 clients that open a connection, send half a request and go silent,
/// against a process allowed 96 open files: before limits it ran out
/// (`accept error: Too many open files`) and a normal GET hung; now the
/// connections beyond the limit wait to be accepted, the silent ones are
/// dropped after the header timeout, and the normal GET is served once
/// their slots free.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_beyond_the_connection_limit_neither_exhaust_files_nor_starve_a_get() {
    let db = TempSqlite::new("app-limits");
    let app = binary::RunningBinary::start(
        &db,
        96,
        &[("MAX_CONNECTIONS", "32"), ("HEADER_TIMEOUT_SECS", "1")],
    )
    .await;
    let baseline = app.open_files();

    let mut slow = Vec::new();
    for _ in 0..150 {
        let mut connection = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        connection
            .write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        slow.push(connection);
    }
    let most_open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pid_files = format!("/proc/{}/fd", app.child.id());
    let sampler = {
        let most_open = most_open.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(entries) = std::fs::read_dir(&pid_files) {
                    most_open.fetch_max(entries.count(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A client of its own: not the kept-alive connection of the start-up
    // check, which would skip the queue.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(12))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = fresh.get(app.url("/users/1")).send().await;
    let took = started.elapsed();
    sampler.abort();
    let output = app.output();
    let response = response.unwrap_or_else(|error| {
        panic!(
            "a normal GET failed behind 150 slow clients after {took:?}: {error}; log:\n{output}"
        )
    });
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        !output.contains("Too many open files"),
        "the app ran out of file descriptors:\n{output}"
    );
    println!(
        "GET served after {took:?} behind 150 slow clients; open files: {baseline} idle, at most {} under the flood",
        most_open.load(Ordering::Relaxed)
    );
    drop(slow);
}

/// SIGTERM while one client trickles a request body, another has not
/// finished its headers and a third idles on a kept-alive connection, with
/// request and header timeouts far away (60 s): the process gives them the
/// shutdown grace period (2 s), then exits cleanly.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_within_the_grace_period_while_slow_clients_hold_connections() {
    let db = TempSqlite::new("app-limits");
    let app = binary::RunningBinary::start(
        &db,
        1024,
        &[
            ("SHUTDOWN_GRACE_SECS", "2"),
            ("HEADER_TIMEOUT_SECS", "60"),
            ("REQUEST_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let connect = async || TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();

    let (_body_reader, mut body_writer) = connect().await.into_split();
    body_writer
        .write_all(
            b"PUT /users/1 HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n{",
        )
        .await
        .unwrap();
    let trickling = trickle(body_writer, vec![b' '; 150], Duration::from_millis(100));
    let mut unfinished_headers = connect().await;
    unfinished_headers
        .write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let mut idle = connect().await;
    idle.write_all(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Let the server read the PUT's head, so the request is in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut app = app;
    let signalled = Instant::now();
    app.signal("-TERM");
    let exited = eventually(Duration::from_secs(10), async || app.child.has_exited()).await;
    let took = signalled.elapsed();
    trickling.abort();
    let output = app.output();
    assert!(
        exited,
        "the app was still running 10 s after SIGTERM; log:\n{output}"
    );
    let status = app.child.wait(Duration::ZERO);
    assert!(status.success(), "exit status {status}; log:\n{output}");
    assert!(
        took < Duration::from_secs(2) + SLACK,
        "SIGTERM took {took:?} with a 2 s grace period"
    );
    println!("exited {took:?} after SIGTERM; log:\n{output}");
    drop(unfinished_headers);
}

/// 200 keep-alive clients at once, three reads each with the cache off (so
/// every read is a query), against a process allowed 96 open files: before
/// limits the accepted connections used up the descriptors SQLite needed
/// to open its connections ("unable to open database file"; reads that
/// waited out the pool's retries failed with `500`); now every read is
/// answered, `200` or at worst `503` with `Retry-After`, and the process
/// keeps descriptors to spare.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_keep_alive_clients_gets_answers_never_500() {
    let db = TempSqlite::new("app-limits");
    let app =
        binary::RunningBinary::start(&db, 96, &[("MAX_CONNECTIONS", "32"), ("CACHE", "off")]).await;
    let port = app.port;
    let clients: Vec<_> = (0..200)
        .map(|client| {
            tokio::spawn(async move {
                let mut connection = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let mut statuses = Vec::new();
                for read in 0..3 {
                    let id = 1 + (client * 3 + read) % 5000;
                    let request = format!("GET /users/{id} HTTP/1.1\r\nHost: test\r\n\r\n");
                    if connection.write_all(request.as_bytes()).await.is_err() {
                        statuses.push("closed before the request was sent".to_owned());
                        break;
                    }
                    let (head, _) = read_response(&mut connection).await;
                    statuses.push(head.lines().next().unwrap_or_default().to_owned());
                }
                statuses
            })
        })
        .collect();
    let started = Instant::now();
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    for client in clients {
        let statuses = tokio::time::timeout(Duration::from_secs(12), client)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a client was not answered within 12 s; log:\n{}",
                    app.output()
                )
            })
            .unwrap();
        for status in statuses {
            *answers.entry(status).or_default() += 1;
        }
    }
    println!(
        "200 clients answered in {:?}: {answers:?}",
        started.elapsed()
    );
    let output = app.output();
    assert!(
        answers
            .keys()
            .all(|status| status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 503")),
        "{answers:?}; log:\n{output}"
    );
    assert!(
        !output.contains("Too many open files") && !output.contains("unable to open database file"),
        "the app ran out of file descriptors:\n{output}"
    );
}
