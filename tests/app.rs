//! End-to-end tests of the example app (`examples/axum_app.rs`, whose
//! modules this test uses as the root package's library, `axum_app`): its
//! router served on a free loopback port, a temporary SQLite file, a real
//! redis-server, and real HTTP requests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum_app::app::{App, Settings};
use axum_app::{db, warm};
use cache_test_support::{ChildProcess, RedisServer, eventually, subscribed};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

/// A SQLite file in the temporary directory, removed on drop.
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new() -> TempDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cache-app-test-{}-{}.sqlite",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TempDb {
            path: std::env::temp_dir().join(name),
        }
    }

    fn url(&self) -> String {
        format!("sqlite:{}?mode=rwc", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One app instance serving on `127.0.0.1:<free port>`.
///
/// The tests run in parallel in one process, and every cache reports to
/// the one process-wide Prometheus recorder the app installs: each test
/// gives its instances a namespace of its own (the label every cache
/// metric carries), so the counts it reads are its own.
struct TestApp {
    app: App,
    namespace: String,
    base: String,
    http: reqwest::Client,
    _server: AbortOnDrop,
}

/// Stops the server task with the test app.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TestApp {
    /// Starts an instance whose cache uses `namespace` (instances that
    /// share data share it; other tests use other ones).
    async fn start(
        namespace: &str,
        db: &TempDb,
        redis: Option<&RedisServer>,
        cache_enabled: bool,
    ) -> TestApp {
        let settings = Settings {
            database_url: db.url(),
            redis_url: redis.map(RedisServer::url),
            cache_enabled,
            namespace: namespace.to_owned(),
            ..Settings::default()
        };
        let app = App::start(&settings).await.expect("the app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app.router();
        let limits = settings.limits;
        let server = AbortOnDrop(tokio::spawn(async move {
            axum_app::serve::serve(listener, router, limits, std::future::pending())
                .await
                .unwrap();
        }));
        // Never through a proxy from the environment: loopback only.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        TestApp {
            app,
            namespace: namespace.to_owned(),
            base,
            http,
            _server: server,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn get_if_none_match(&self, path: &str, etag: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap()
    }

    async fn put_name(&self, id: i64, name: &str) -> reqwest::Response {
        self.http
            .put(format!("{}/users/{id}", self.base))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    fn db_queries(&self) -> u64 {
        self.app.repo().db.queries()
    }

    /// The sum of this instance's namespace's samples of `name` whose
    /// labels contain `label`, as `/metrics` reports them.
    async fn metric(&self, name: &str, label: &str) -> f64 {
        let body = self.get("/metrics").await.text().await.unwrap();
        let namespace = format!("namespace=\"{}\"", self.namespace);
        body.lines()
            .filter(|line| line.starts_with(name) && line.contains(label))
            .filter(|line| line.contains(&namespace))
            .filter(|line| matches!(line.as_bytes().get(name.len()), Some(b'{' | b' ')))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn etag_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ETAG)
        .expect("an ETag header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_304_negative_caching_and_bad_input() {
    let redis = RedisServer::start();
    let db = TempDb::new();
    let app = TestApp::start("app-etag", &db, Some(&redis), true).await;

    // Miss, then hit: one query.
    let first = app.get("/users/42").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[CACHE_CONTROL], "private, max-age=300");
    let etag = etag_of(&first);
    let user: Value = first.json().await.unwrap();
    assert_eq!(user["id"], 42);
    let hits_before = app.metric("cache_hits_total", "tier=\"l1\"").await;
    let second = app.get("/users/42").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(etag_of(&second), etag, "the same value has the same ETag");
    assert_eq!(second.json::<Value>().await.unwrap(), user);
    assert_eq!(app.db_queries(), 1, "the second GET is a cache hit");
    let hits_after = app.metric("cache_hits_total", "tier=\"l1\"").await;
    assert_eq!(
        hits_after,
        hits_before + 1.0,
        "/metrics shows the one L1 hit of the second GET"
    );

    // If-None-Match: 304 with the headers and no body.
    let not_modified = app.get_if_none_match("/users/42", &etag).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&not_modified), etag);
    assert_eq!(
        not_modified.headers()[CACHE_CONTROL],
        "private, max-age=300"
    );
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let other = app
        .get_if_none_match("/users/42", "\"something-else\"")
        .await;
    assert_eq!(other.status(), StatusCode::OK);

    // Unknown user: 404, cached negatively, so the database is asked once.
    let before = app.db_queries();
    for _ in 0..3 {
        let missing = app.get("/users/999999").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let body: Value = missing.json().await.unwrap();
        assert_eq!(body["error"], "no user 999999");
    }
    assert_eq!(app.db_queries() - before, 1, "a 404 is cached negatively");
    assert_eq!(
        app.metric("cache_negative_hits_total", "").await,
        2.0,
        "the second and third GET of the unknown user"
    );

    // Not a number: 400 with a message, no query.
    let before = app.db_queries();
    let bad = app.get("/users/abc").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("integer"),
        "{body}"
    );
    assert_eq!(app.db_queries(), before);

    // Bad bodies: 4xx with a clear message, nothing changed.
    let url = format!("{}/users/42", app.base);
    let cases = [
        (
            app.http.put(&url).body("{\"name\": \"x\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            app.http
                .put(&url)
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.http.put(&url).json(&json!({ "nom": "x" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            app.http.put(&url).json(&json!({ "name": "   " })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    }
    assert_eq!(
        app.json("/users/42").await,
        user,
        "bad PUTs changed nothing"
    );

    // PUT, then GET: the new name, a new ETag; the old ETag gets a 200.
    let put = app.put_name(42, "Grace Renamed").await;
    assert_eq!(put.status(), StatusCode::OK);
    let put_etag = etag_of(&put);
    assert_ne!(put_etag, etag);
    assert_eq!(put.json::<Value>().await.unwrap()["name"], "Grace Renamed");
    let after = app.get_if_none_match("/users/42", &etag).await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(etag_of(&after), put_etag);
    assert_eq!(
        after.json::<Value>().await.unwrap()["name"],
        "Grace Renamed"
    );

    let missing = app.put_name(999_999, "Nobody").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_member_list_is_cached_and_dropped_when_a_member_changes() {
    let redis = RedisServer::start();
    let db = TempDb::new();
    let app = TestApp::start("app-org", &db, Some(&redis), true).await;

    let org = app.json("/orgs/3/users").await;
    let members = org["members"].as_array().unwrap();
    assert_eq!(members.len() as i64, db::SEEDED_USERS / db::SEEDED_ORGS);
    assert!(
        members
            .iter()
            .all(|member| member["id"].as_i64().unwrap() % 100 == 3)
    );
    let queries = app.db_queries();
    assert_eq!(app.json("/orgs/3/users").await, org);
    assert_eq!(app.db_queries(), queries, "the second read is a hit");
    let etag = etag_of(&app.get("/orgs/3/users").await);
    let not_modified = app.get_if_none_match("/orgs/3/users", &etag).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()[CACHE_CONTROL], "private, max-age=60");

    // Renaming a member (user 103 is in organisation 3) drops the list.
    assert_eq!(
        app.put_name(103, "Barbara Renamed").await.status(),
        StatusCode::OK
    );
    let org = app.json("/orgs/3/users").await;
    let renamed = org["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["id"] == 103)
        .unwrap();
    assert_eq!(renamed["name"], "Barbara Renamed");
    // A member of another organisation leaves it alone.
    let queries = app.db_queries();
    assert_eq!(
        app.put_name(104, "Someone Else").await.status(),
        StatusCode::OK
    );
    let put_queries = app.db_queries() - queries;
    app.json("/orgs/3/users").await;
    assert_eq!(
        app.db_queries() - queries,
        put_queries,
        "organisation 3 is still cached"
    );

    assert_eq!(
        app.get("/orgs/999/users").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/orgs/x/users").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_sees_a_write_within_a_second() {
    let redis = RedisServer::start();
    let db = TempDb::new();
    let first = TestApp::start("app-two", &db, Some(&redis), true).await;
    let second = TestApp::start("app-two", &db, Some(&redis), true).await;
    for app in [&first, &second] {
        subscribed(&app.app.repo().cache).await;
    }

    // Both instances hold user 7 and organisation 7's list in L1.
    let old = first.json("/users/7").await;
    assert_eq!(second.json("/users/7").await, old);
    second.json("/orgs/7/users").await;
    second.json("/orgs/7/users").await;
    let loads = second.app.repo().cache.stats().loads;
    assert_eq!(second.json("/users/7").await, old);
    assert_eq!(
        second.app.repo().cache.stats().loads,
        loads,
        "served from cache"
    );

    let written = Instant::now();
    assert_eq!(
        first.put_name(7, "Seen Everywhere").await.status(),
        StatusCode::OK
    );
    let seen = eventually(Duration::from_secs(1), async || {
        second.json("/users/7").await["name"] == "Seen Everywhere"
    })
    .await;
    let user_after = written.elapsed();
    assert!(
        seen,
        "the second instance still served the old name after 1 s"
    );
    let list_seen = eventually(Duration::from_secs(1), async || {
        let org = second.json("/orgs/7/users").await;
        org["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|member| member["name"] == "Seen Everywhere")
    })
    .await;
    assert!(
        list_seen,
        "the second instance's member list is dropped too"
    );
    println!("the second instance served the new name {user_after:?} after the PUT returned");
    assert!(second.app.repo().cache.stats().invalidations_received >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_without_redis_and_when_redis_is_killed() {
    // No Redis at all: in-process cache.
    let db = TempDb::new();
    let app = TestApp::start("app-killed", &db, None, true).await;
    assert_eq!(app.json("/users/5").await["id"], 5);
    assert_eq!(app.json("/users/5").await["id"], 5);
    assert_eq!(app.db_queries(), 1);
    assert_eq!(app.put_name(5, "Local Only").await.status(), StatusCode::OK);
    assert_eq!(app.json("/users/5").await["name"], "Local Only");
    let health = app.json("/health").await;
    assert_eq!(health["redis"], "disabled");
    drop(app);

    // Redis killed while serving.
    let mut redis = RedisServer::start();
    let app = TestApp::start("app-killed", &db, Some(&redis), true).await;
    assert_eq!(app.json("/users/6").await["id"], 6);
    assert_eq!(app.json("/health").await["redis"], "connected");
    redis.kill();
    let started = Instant::now();
    assert_eq!(app.json("/users/6").await["id"], 6, "an L1 hit");
    assert_eq!(
        app.json("/users/8").await["id"],
        8,
        "a miss, loaded without L2"
    );
    assert_eq!(app.put_name(6, "Redis Gone").await.status(), StatusCode::OK);
    assert_eq!(app.json("/users/6").await["name"], "Redis Gone");
    assert_eq!(app.json("/orgs/6/users").await["org_id"], 6);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests with Redis gone took {:?}",
        started.elapsed()
    );
    let health = app.get("/health").await;
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "Redis is not needed to be healthy"
    );
    assert_eq!(
        health.json::<Value>().await.unwrap()["redis"],
        "unavailable"
    );
    let stats = app.app.repo().cache.stats();
    assert!(
        stats.l2_errors + stats.l2_skipped + stats.l2_timeouts > 0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_loads_the_most_read_users() {
    let db = TempDb::new();
    let app = TestApp::start("app-warm", &db, None, true).await;
    for (id, reads) in [(11, 5), (12, 3), (13, 1)] {
        for _ in 0..reads {
            app.json(&format!("/users/{id}")).await;
        }
    }
    let app = app.app;
    app.shutdown().await; // saves the read counts

    let app = TestApp::start("app-warm", &db, None, true).await;
    let warmed = warm::warm(app.app.repo(), 2).await.unwrap();
    assert_eq!(
        warmed,
        warm::Warmed {
            loaded: 2,
            failed: 0
        }
    );
    let queries = app.db_queries();
    app.json("/users/11").await;
    app.json("/users/12").await;
    assert_eq!(
        app.db_queries(),
        queries,
        "the two most-read users were warmed"
    );
    app.json("/users/13").await;
    assert_eq!(app.db_queries(), queries + 1, "the third was not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_off_sends_every_read_to_the_database() {
    let db = TempDb::new();
    let app = TestApp::start("app-off", &db, None, false).await;
    for _ in 0..3 {
        assert_eq!(app.json("/users/9").await["id"], 9);
    }
    assert_eq!(app.db_queries(), 3);
    let body = app.get("/metrics").await.text().await.unwrap();
    assert!(body.contains("app_cache_enabled 0"), "{body}");
    assert!(body.contains("app_db_queries_total 3"), "{body}");
    assert_eq!(app.json("/health").await["cache"], "off");
}

/// The example binary itself: Ctrl-C (SIGINT) stops it cleanly, and what it
/// had not saved yet (read counts) is saved on the way out.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_shuts_down_gracefully_on_ctrl_c() {
    use std::process::{Command, Stdio};

    // `cargo test` builds the examples next to the test binaries' `deps/`.
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/axum_app");
    assert!(
        binary.exists(),
        "{} is missing: run the whole `cargo test`, which builds the examples",
        binary.display()
    );
    let db = TempDb::new();
    let port = cache_test_support::free_port();
    let log =
        std::env::temp_dir().join(format!("cache-app-test-{}-{port}.log", std::process::id()));
    let mut child = ChildProcess::spawn(
        Command::new(&binary)
            .env("PORT", port.to_string())
            .env("DATABASE_URL", db.url())
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), async || {
        http.get(format!("{base}/health")).send().await.is_ok()
    })
    .await;
    assert!(
        up,
        "the app did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for _ in 0..3 {
        let response = http.get(format!("{base}/users/21")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let stopped = eventually(Duration::from_secs(10), async || child.has_exited()).await;
    assert!(stopped, "the app did not stop within 10 s of SIGINT");
    let status = child.wait(Duration::ZERO);
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "exit status {status}; log:\n{output}");
    assert!(output.contains("shutting down"), "{output}");

    // The three reads were saved at shutdown (the periodic save is 10 s away).
    let db = db::Db::connect(&db.url()).await.unwrap();
    assert_eq!(db.most_read_users(1).await.unwrap(), vec![21]);
    db.close().await;
}
