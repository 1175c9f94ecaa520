//! Write-behind in the example app, end to end with real processes: the
//! example binary (`examples/axum_app.rs`) started as separate OS
//! processes, a real redis-server, one temporary SQLite file that every
//! process shares and the test reads directly.
//!
//! - 10,000 last-seen writes over 500 users, through two processes that
//!   run no worker; a third process runs the worker and is `SIGKILL`ed
//!   while it applies writes, then a new one takes over: the database ends
//!   with every user's last time.
//! - Redis down: a write runs at once (the database has it when the reply
//!   comes), and once Redis is back nothing of it is queued or applied
//!   again.

#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_test_support::{
    ChildProcess, RedisServer, TempSqlite, eventually, example_binary, free_port,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

/// Users whose last-seen time the load test writes (ids 1..=USERS, seeded).
const USERS: i64 = 500;
/// Writes per user: 10,000 in all.
const WRITES_PER_USER: i64 = 20;
/// Users written concurrently: one task per group of users.
const WRITERS: i64 = 50;
/// The first `at` of the load test; each user's writes climb from here.
const FIRST_AT: i64 = 1_700_000_000_000;

/// The `at` of user `user`'s `index`-th write: increasing per user.
fn at_of(user: i64, index: i64) -> i64 {
    FIRST_AT + index * 1_000 + user
}

/// A worker's settings for the tests: a dead worker's partitions and
/// unapplied writes are taken over after about a second, not ten.
const QUICK_TAKEOVER: [(&str, &str); 2] = [
    ("WRITE_BEHIND_CLAIM_IDLE_SECS", "1"),
    ("WRITE_BEHIND_LEASE_SECS", "1"),
];

/// The example app running as a process of its own, on a free port.
struct AppProcess {
    child: ChildProcess,
    log: PathBuf,
    client: AppClient,
}

/// Requests to one app process (cheap to clone, for concurrent writers).
#[derive(Clone)]
struct AppClient {
    name: &'static str,
    base: String,
    http: reqwest::Client,
}

impl std::ops::Deref for AppProcess {
    type Target = AppClient;

    fn deref(&self) -> &AppClient {
        &self.client
    }
}

impl AppProcess {
    /// Starts the binary against `db` and `redis_url` with `env` on top,
    /// and waits (at most 30 s) until it answers `/health`.
    async fn start(
        name: &'static str,
        db: &TempSqlite,
        redis_url: &str,
        env: &[(&str, &str)],
    ) -> AppProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "cache-write-behind-app-{}-{name}-{port}.log",
            std::process::id()
        ));
        let mut command = Command::new(example_binary("axum_app"));
        command
            .env("PORT", port.to_string())
            .env("DATABASE_URL", db.url())
            .env("REDIS_URL", redis_url)
            .env_remove("REDIS_CLUSTER")
            .env_remove("WRITE_BEHIND_WORKER")
            // The load test's 10,000 POSTs would log a span each at `info`.
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
        for (variable, value) in env {
            command.env(variable, value);
        }
        let app = AppProcess {
            child: ChildProcess::spawn(&mut command),
            log,
            client: AppClient {
                name,
                base: format!("http://127.0.0.1:{port}"),
                // Never through a proxy from the environment: loopback only.
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap(),
            },
        };
        let up = eventually(Duration::from_secs(30), async || {
            app.http.get(app.url("/health")).send().await.is_ok()
        })
        .await;
        assert!(up, "{name} did not start: {}", app.output());
        app
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `SIGKILL`: no drain, no hand-back; its leases and unacknowledged
    /// writes stay in Redis for another worker to take over.
    fn kill(&mut self) {
        self.child.kill();
    }

    /// `SIGTERM`, then waits (at most 15 s) for a clean exit.
    fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait(Duration::from_secs(15));
        assert!(
            status.success(),
            "{} exited with {status}: {}",
            self.name,
            self.output()
        );
    }
}

impl AppClient {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /users/{id}/seen` with `{"at": at}`: the status.
    async fn post_seen(&self, id: i64, at: i64) -> StatusCode {
        self.http
            .post(self.url(&format!("/users/{id}/seen")))
            .json(&json!({ "at": at }))
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST to {}: {error}", self.name))
            .status()
    }

    /// `GET /users/{id}/seen`: the time, `None` on 404.
    async fn get_seen(&self, id: i64) -> Option<i64> {
        let response = self
            .http
            .get(self.url(&format!("/users/{id}/seen")))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => response.json::<Value>().await.unwrap()["seen_at"].as_i64(),
            other => panic!("GET /users/{id}/seen on {}: {other}", self.name),
        }
    }

    /// The `write_behind` object of `/health`.
    async fn write_behind(&self) -> Value {
        let health: Value = self
            .http
            .get(self.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["write_behind"].clone()
    }

    /// Writes queued and not yet applied, as `/health` reads them from
    /// Redis (`None` while Redis cannot be read).
    async fn depth(&self) -> Option<u64> {
        self.write_behind().await["depth"].as_u64()
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The test's own connection to the apps' SQLite file.
async fn open(db: &TempSqlite) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db.url())
        .await
        .expect("open the apps' SQLite file")
}

/// Every row of `user_seen`: `(user, seen_at, write_id)`, by user.
async fn seen_rows(db: &SqlitePool) -> Vec<(i64, i64, i64)> {
    sqlx::query("SELECT user_id, seen_at, write_id FROM user_seen ORDER BY user_id")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Writes read by a worker and not acknowledged, over every partition of
/// every queue (`XPENDING`): what a worker killed mid-batch leaves.
fn unacknowledged(redis: &RedisServer) -> u64 {
    let mut client = redis.client();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("* #queue *")
        .query(&mut client)
        .unwrap();
    keys.iter()
        .filter(|key| !key.ends_with("#lease"))
        .map(|stream| {
            // A stream a writer made before any worker read it has no
            // group yet (`NOGROUP`): nothing of it was read.
            let summary: redis::Value = match redis::cmd("XPENDING")
                .arg(stream)
                .arg("workers")
                .query(&mut client)
            {
                Err(error) if error.code() == Some("NOGROUP") => return 0,
                summary => summary.unwrap(),
            };
            match summary {
                redis::Value::Array(fields) => match fields.first() {
                    Some(redis::Value::Int(count)) => *count as u64,
                    _ => 0,
                },
                _ => 0,
            }
        })
        .sum()
}

/// 10,000 writes over 500 users, sent through A and B (no worker): each
/// user's writes in order and alternating between the two, users
/// concurrently. W applies them, batches of 50; it is `SIGKILL`ed while
/// it does (the database holds some of the writes, the queue the rest, and
/// W had read writes it never acknowledged), and a new W takes over after
/// the lease and claim times (1 s each here). Once the queue is empty the
/// database holds every user's last time, as do the cache's readers: no
/// write lost, and the writes W applied twice changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_no_write() {
    let started = Instant::now();
    let redis = RedisServer::start();
    let db = TempSqlite::new("write-behind-app");
    let no_worker = [("WRITE_BEHIND_WORKER", "off")];
    let a = AppProcess::start("A", &db, &redis.url(), &no_worker).await;
    let b = AppProcess::start("B", &db, &redis.url(), &no_worker).await;
    let worker_env = [
        QUICK_TAKEOVER[0],
        QUICK_TAKEOVER[1],
        ("WRITE_BEHIND_BATCH_SIZE", "50"),
    ];
    let reader = open(&db).await;

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (a, b) = (a.client.clone(), b.client.clone());
            tokio::spawn(async move {
                let users: Vec<i64> = (1..=USERS).filter(|id| id % WRITERS == writer).collect();
                // Each user's writes in order (the next waits for the
                // reply), the group's users interleaved.
                for index in 0..WRITES_PER_USER {
                    for &user in &users {
                        let app = if (user + index) % 2 == 0 { &a } else { &b };
                        let status = app.post_seen(user, at_of(user, index)).await;
                        assert_eq!(status, StatusCode::ACCEPTED, "user {user}, write {index}");
                    }
                }
            })
        })
        .collect();

    // W starts once a backlog has built up, so that it drains without
    // pausing (a worker that keeps up with the writers spends most of its
    // time in its idle pause, where a kill leaves nothing unacknowledged).
    assert!(
        eventually(Duration::from_secs(30), async || a
            .depth()
            .await
            .is_some_and(|depth| depth >= 1_500))
        .await,
        "the writers queued a backlog"
    );
    let mut w = AppProcess::start("W", &db, &redis.url(), &worker_env).await;

    // Kill W while it applies: the database holds some writes and the queue
    // others. A kill between two batches leaves nothing unacknowledged;
    // then a new W is started and killed again, until one left writes
    // read and unapplied (or at least unacknowledged).
    let mut kills = 0;
    let mid_batch = loop {
        let applying = eventually(Duration::from_secs(20), async || {
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_seen")
                .fetch_one(&reader)
                .await
                .unwrap();
            applied > 0 && a.depth().await.is_some_and(|depth| depth > 0)
        })
        .await;
        assert!(
            applying,
            "W never applied writes with a backlog to kill it in (kills so far: {kills}); W's log: {}",
            w.output()
        );
        w.kill();
        kills += 1;
        let left = unacknowledged(&redis);
        let applied = seen_rows(&reader).await.len();
        w = AppProcess::start("W", &db, &redis.url(), &worker_env).await;
        if left > 0 {
            break (left, applied);
        }
        assert!(kills < 10, "10 kills of W each came between two batches");
    };
    let killed_at = started.elapsed();

    for writer in writers {
        writer.await.expect("a writer failed");
    }
    let sent_in = started.elapsed();
    let drained = eventually(Duration::from_secs(30), async || a.depth().await == Some(0)).await;
    assert!(
        drained,
        "the queue did not drain: {} ; W's log: {}",
        a.write_behind().await,
        w.output()
    );
    let drained_in = started.elapsed();

    let rows = seen_rows(&reader).await;
    assert_eq!(rows.len(), USERS as usize, "a row per user");
    for &(user, seen_at, _) in &rows {
        assert_eq!(
            seen_at,
            at_of(user, WRITES_PER_USER - 1),
            "user {user}'s last write"
        );
    }
    for user in 1..=USERS {
        assert_eq!(
            b.get_seen(user).await,
            Some(at_of(user, WRITES_PER_USER - 1)),
            "what the cache serves for user {user}"
        );
    }
    let health = w.write_behind().await;
    assert_eq!(health["dead_letters"], 0, "{health}");
    assert!(
        health["applied"].as_u64() > Some(0),
        "the new W applied the rest: {health}"
    );
    for app in [&*a, &*b] {
        let health = app.write_behind().await;
        assert_eq!(health["worker"], false, "{health}");
        assert_eq!(health["synchronous"], 0, "Redis took every write: {health}");
    }
    // W stops cleanly (drained) on SIGTERM.
    w.terminate();
    eprintln!(
        "killed W {kills} time(s), the last with {} writes unacknowledged and {} users written, at {killed_at:?}; \
         10,000 writes sent in {sent_in:?}, queue empty at {drained_in:?}",
        mid_batch.0, mid_batch.1
    );
}

/// With Redis down, `POST /users/{id}/seen` runs the database write at
/// once: the row is there when the reply comes. When Redis is back,
/// nothing of those writes is queued or applied again: the queue stays
/// empty, the rows keep the ids of the writes that made them, and the
/// worker applies only what is queued after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_writes_run_at_once_and_are_never_queued_later() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let db = TempSqlite::new("write-behind-app");
    let app = AppProcess::start("app", &db, &redis.url(), &QUICK_TAKEOVER).await;
    let reader = open(&db).await;

    // The routes: never seen is 404, so is an unknown user; a body must be
    // `{"at": <ms>}` or nothing (then: now).
    assert_eq!(app.get_seen(7).await, None);
    assert_eq!(app.post_seen(999_999, 1_000).await, StatusCode::NOT_FOUND);
    let post = |body: &'static str| {
        app.http
            .post(app.url("/users/8/seen"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post("[1]").await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        post(r#"{"at": 1, "extra": 2}"#).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let before_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(post("").await.unwrap().status(), StatusCode::ACCEPTED);
    let now = app.get_seen(8).await.expect("seen now");
    assert!(
        (before_now..before_now + 10_000).contains(&now),
        "{now} is now"
    );

    // Redis up: queued, then applied by the app's worker.
    assert_eq!(app.post_seen(7, 1_000).await, StatusCode::ACCEPTED);
    let applied = eventually(Duration::from_secs(10), async || {
        seen_rows(&reader).await.iter().any(|row| row.0 == 7)
    })
    .await;
    assert!(
        applied,
        "the queued write was not applied: {}",
        app.output()
    );
    // Both writes (users 8 and 7), counted once their bodies returned.
    let counted = eventually(Duration::from_secs(5), async || {
        app.write_behind().await["applied"] == 2
    })
    .await;
    assert!(counted, "{}", app.write_behind().await);
    let before = app.write_behind().await;
    assert_eq!(before["queued"], 2, "{before}");

    redis.kill();
    for user in 11..=30 {
        let at = 2_000 + user;
        assert_eq!(app.post_seen(user, at).await, StatusCode::ACCEPTED);
        let rows = seen_rows(&reader).await;
        let row = rows.iter().find(|row| row.0 == user);
        assert_eq!(
            row.map(|row| row.1),
            Some(at),
            "user {user}: in the database when the reply came"
        );
        assert_eq!(app.get_seen(user).await, Some(at));
    }
    let down = app.write_behind().await;
    assert_eq!(down["synchronous"], 20, "{down}");
    assert_eq!(down["queued"], 2, "{down}");
    assert_eq!(down["depth"], Value::Null, "Redis cannot be read: {down}");
    let synchronous_rows: Vec<_> = seen_rows(&reader)
        .await
        .into_iter()
        .filter(|row| row.0 >= 11)
        .collect();

    // Redis back, empty (no persistence): the app reconnects, its worker
    // polls the queue again, and nothing turns up in it.
    let _redis_again = RedisServer::start_on(port).expect("redis-server restarts on its port");
    let reconnected = eventually(Duration::from_secs(15), async || {
        app.depth().await == Some(0)
    })
    .await;
    assert!(
        reconnected,
        "the app did not read the queue again: {}",
        app.write_behind().await
    );
    // Longer than a lease and a claim: a worker holding anything would
    // have applied it by now.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let now = app.write_behind().await;
        assert_eq!(now["depth"], 0, "{now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app.write_behind().await;
    assert_eq!(
        (&after["queued"], &after["applied"], &after["synchronous"]),
        (&json!(2), &json!(2), &json!(20)),
        "nothing was queued or applied again: {after}"
    );
    let rows_after: Vec<_> = seen_rows(&reader)
        .await
        .into_iter()
        .filter(|row| row.0 >= 11)
        .collect();
    assert_eq!(
        rows_after, synchronous_rows,
        "the rows are as the writes left them"
    );

    // And the queue works again: a later time of user 11 is queued and
    // applied over the one written at once.
    assert_eq!(app.post_seen(11, 5_000).await, StatusCode::ACCEPTED);
    let applied_again = eventually(Duration::from_secs(10), async || {
        seen_rows(&reader)
            .await
            .iter()
            .any(|row| row.0 == 11 && row.1 == 5_000)
    })
    .await;
    assert!(applied_again, "{}", app.write_behind().await);
    // The worker counts a write once its body returned: a moment after the
    // row changed.
    let counted = eventually(Duration::from_secs(5), async || {
        app.write_behind().await["applied"] == 3
    })
    .await;
    assert!(counted, "{}", app.write_behind().await);
}
