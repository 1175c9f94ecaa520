//! The example binary's listen address: `HOST` (default 127.0.0.1) and
//! `PORT`. Loopback only: the tests never bind beyond this machine.

#![cfg(unix)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_test_support::{ChildProcess, TempSqlite, example_binary, free_port};

/// The example binary with a temporary SQLite database, no Redis, and
/// `environment`; its log on a piped stdout.
fn app_with(db: &TempSqlite, environment: &[(&str, &str)]) -> ChildProcess {
    let mut command = Command::new(example_binary("axum_app"));
    command
        .env("DATABASE_URL", db.url())
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER")
        .env_remove("HOST")
        .env("RUST_LOG", "info")
        .envs(environment.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildProcess::spawn(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_listens_where_host_and_port_say() {
    let db = TempSqlite::new("app-host");
    let port = free_port().to_string();
    let mut app = app_with(&db, &[("HOST", "127.0.0.1"), ("PORT", &port)]);
    let listening = format!("listening on http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    while !log.iter().any(|line: &String| line.contains(&listening)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match app.read_line(left) {
            Some(line) => log.push(line),
            None => panic!("the app never logged `{listening}`:\n{}", log.join("\n")),
        }
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

#[test]
fn a_host_that_is_not_an_ip_address_is_refused_before_anything_starts() {
    let db = TempSqlite::new("app-host");
    let port = free_port().to_string();
    let finished =
        app_with(&db, &[("HOST", "example.com"), ("PORT", &port)]).finish(Duration::from_secs(30));
    assert!(!finished.status.success(), "{finished:?}");
    let said = format!("{}{}", finished.stdout, finished.stderr);
    assert!(
        said.contains("HOST must be an IP address") && said.contains("`example.com`"),
        "{said}"
    );
}
