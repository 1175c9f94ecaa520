//! The example app end to end on PostgreSQL (`DATABASE_URL=postgres://…`),
//! as on SQLite in `tests/app.rs`: a throwaway cluster per test
//! ([`PostgresServer`]), a real redis-server, the app's router on a free
//! loopback port, real HTTP requests.
//!
//! Not every test of `tests/app.rs` twice: the ones whose SQL differs
//! between the two databases or that depend on the database's answers:
//! reads through the cache and negative caching, `PUT` as a
//! compare-and-set with `UPDATE … RETURNING` (preconditions, concurrent
//! writers), the member list dropped by a rename, write-behind's upsert,
//! read counts and warming, and two instances sharing Redis and the
//! database.

use std::sync::Arc;
use std::time::Duration;

use axum_app::app::{App, Settings};
use axum_app::{db, warm};
use cache_test_support::{PostgresServer, RedisServer, eventually, subscribed};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use serde_json::{Value, json};

#[path = "support/sales_report.rs"]
mod sales_report;
use sales_report::expected_sales_report;

/// One app instance on Postgres, serving on `127.0.0.1:<free port>`.
struct TestApp {
    app: App,
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
    /// Starts an instance on `postgres`'s database with Redis at `redis`,
    /// its cache in `namespace` (instances that share data share it).
    async fn start(namespace: &str, postgres: &PostgresServer, redis: &RedisServer) -> TestApp {
        TestApp::start_on(namespace, postgres, Some(redis.url())).await
    }

    /// [`TestApp::start`] with Redis at `redis_url`, or an in-process
    /// cache only.
    async fn start_on(
        namespace: &str,
        postgres: &PostgresServer,
        redis_url: Option<String>,
    ) -> TestApp {
        let settings = Settings {
            database_url: postgres.url(),
            redis_url,
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
            base,
            http,
            _server: server,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        self.http.get(url).send().await.unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// `PUT /users/{id}` with `{"name": name}` and extra headers: the
    /// status, the ETag (empty if none) and the body.
    async fn put(
        &self,
        id: i64,
        name: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, Value) {
        let mut request = self
            .http
            .put(format!("{}/users/{id}", self.base))
            .json(&json!({ "name": name }));
        for (header, value) in headers {
            request = request.header(*header, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let etag = etag_of(&response);
        (status, etag, response.json().await.unwrap_or(Value::Null))
    }

    fn db_queries(&self) -> u64 {
        self.app.repo().db.queries()
    }
}

fn etag_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ETAG)
        .map(|tag| tag.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// What `tests/app.rs` checks on SQLite, on one instance over Postgres:
/// a miss then a hit (one query), `404` cached negatively, `PUT` then
/// `GET`, preconditions and concurrent `PUT`s (the compare-and-set
/// `UPDATE … RETURNING`), the member list cached and dropped by a
/// member's rename, a last-seen time written behind (the conditional
/// upsert), and read counts saved and used for warming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_invalidation_through_the_cache_on_postgres() {
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    let app = TestApp::start("app-postgres", &postgres, &redis).await;

    // A miss, then a hit: one query. An unknown id: one query, then 404s
    // from the cache.
    let first = app.get("/users/42").await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = etag_of(&first);
    let user: Value = first.json().await.unwrap();
    assert_eq!(
        (user["id"].as_i64(), user["org_id"].as_i64()),
        (Some(42), Some(42))
    );
    assert_eq!(app.json("/users/42").await, user);
    assert_eq!(app.db_queries(), 1, "the second GET is a cache hit");
    let before = app.db_queries();
    for _ in 0..3 {
        assert_eq!(
            app.get("/users/999999").await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(app.db_queries() - before, 1, "a 404 is cached negatively");

    // PUT, then GET: the new name and tag, not the cached ones.
    let (status, put_etag, body) = app.put(42, "Grace Renamed", &[]).await;
    assert_eq!(
        (status, &body["name"]),
        (StatusCode::OK, &json!("Grace Renamed"))
    );
    assert_ne!(put_etag, etag);
    assert!(body["updated_at"].as_i64() > user["updated_at"].as_i64());
    let after = app.json("/users/42").await;
    assert_eq!(after, body, "the GET shows what the PUT stored");
    let (status, _, _) = app.put(999_999, "Nobody", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Preconditions, checked against the row: the old tag loses, the
    // current one wins once.
    let (status, _, _) = app
        .put(42, "Lost Update", &[(IF_MATCH.as_str(), &etag)])
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = app
        .put(42, "Refused", &[(IF_NONE_MATCH.as_str(), "*")])
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = app
        .put(42, "Taken", &[(IF_MATCH.as_str(), &put_etag)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = app
        .put(42, "Too Late", &[(IF_MATCH.as_str(), &put_etag)])
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.json("/users/42").await["name"], "Taken");

    // Concurrent PUTs each answer with the row they stored; the last one
    // (the highest `updated_at`) is what a read shows.
    let app = Arc::new(app);
    let writers: Vec<_> = (0..10)
        .map(|writer| {
            let app = app.clone();
            tokio::spawn(async move {
                let name = format!("Writer {writer}");
                (name.clone(), app.put(31, &name, &[]).await)
            })
        })
        .collect();
    let mut stored = Vec::new();
    for writer in writers {
        let (name, (status, _, body)) = writer.await.unwrap();
        assert_eq!((status, &body["name"]), (StatusCode::OK, &json!(name)));
        stored.push(body);
    }
    let last = stored
        .iter()
        .max_by_key(|body| body["updated_at"].as_i64().unwrap())
        .unwrap();
    assert_eq!(&app.json("/users/31").await, last);

    // The member list: cached, dropped when a member is renamed, left
    // alone when a member of another organisation is.
    let org = app.json("/orgs/3/users").await;
    let members = org["members"].as_array().unwrap();
    assert_eq!(members.len() as i64, db::SEEDED_USERS / db::SEEDED_ORGS);
    let queries = app.db_queries();
    assert_eq!(app.json("/orgs/3/users").await, org);
    assert_eq!(app.db_queries(), queries, "the second read is a hit");
    assert_eq!(app.put(103, "Barbara Renamed", &[]).await.0, StatusCode::OK);
    let org = app.json("/orgs/3/users").await;
    assert!(
        org["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|member| member["id"] == 103 && member["name"] == "Barbara Renamed"),
        "{org}"
    );
    let queries = app.db_queries();
    assert_eq!(app.put(104, "Someone Else", &[]).await.0, StatusCode::OK);
    let put_queries = app.db_queries() - queries;
    app.json("/orgs/3/users").await;
    assert_eq!(
        app.db_queries() - queries,
        put_queries,
        "organisation 3 is still cached"
    );

    // Last-seen times: cached at once, written behind into Postgres by the
    // worker (an upsert that keeps the newest write).
    for at in [1_000, 2_000] {
        let response = app
            .http
            .post(format!("{}/users/8/seen", app.base))
            .json(&json!({ "at": at }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    assert_eq!(app.json("/users/8/seen").await["seen_at"], 2_000);
    let db = &app.app.repo().db;
    let applied = eventually(Duration::from_secs(10), async || {
        db.last_seen(8).await.unwrap() == Some(2_000)
    })
    .await;
    assert!(
        applied,
        "the worker did not write the last time to Postgres"
    );

    // Read counts are saved on shutdown, and warming loads the most-read
    // users (more reads than user 42 got above).
    for (id, reads) in [(11, 9), (12, 8), (13, 1)] {
        for _ in 0..reads {
            app.json(&format!("/users/{id}")).await;
        }
    }
    let TestApp { app: stopped, .. } = Arc::into_inner(app).expect("the writers are done");
    stopped.shutdown().await;
    let app = TestApp::start("app-postgres-warm", &postgres, &redis).await;
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
}

/// Two instances sharing Redis and one Postgres database: a `PUT` on one
/// reaches the other within a second, for the user and for the member
/// list it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_sees_a_write_within_a_second_on_postgres() {
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    // Started together on the fresh database: both create the schema and
    // seed it at once.
    let (first, second) = tokio::join!(
        TestApp::start("app-postgres-two", &postgres, &redis),
        TestApp::start("app-postgres-two", &postgres, &redis),
    );
    for app in [&first, &second] {
        subscribed(&app.app.repo().cache).await;
    }

    let old = first.json("/users/7").await;
    assert_eq!(second.json("/users/7").await, old);
    second.json("/orgs/7/users").await;
    let loads = second.app.repo().cache.stats().loads;
    assert_eq!(second.json("/users/7").await, old);
    second.json("/orgs/7/users").await;
    assert_eq!(
        second.app.repo().cache.stats().loads,
        loads,
        "served from cache"
    );

    assert_eq!(first.put(7, "Seen Everywhere", &[]).await.0, StatusCode::OK);
    let seen = eventually(Duration::from_secs(1), async || {
        second.json("/users/7").await["name"] == "Seen Everywhere"
    })
    .await;
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
    let stats = second.app.repo().cache.stats();
    assert!(stats.invalidations_received >= 1, "{stats:?}");
}

/// The sales report's SQL on Postgres (the seed's recursive `INSERT`, the
/// aggregate's casts): it adds up right, the next read is a hit, and
/// `PUT /orders/{id}` patches it with one organisation's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_report_on_postgres() {
    let postgres = PostgresServer::start();
    let app = TestApp::start_on("app-postgres-report", &postgres, None).await;

    let report = app.json("/reports/sales").await;
    assert_eq!(report, expected_sales_report(&postgres.url()).await);
    let orders: i64 = report["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["orders"].as_i64().unwrap())
        .sum();
    assert_eq!(orders, i64::from(db::DEFAULT_REPORT_ROWS));
    assert_eq!(app.json("/reports/sales").await, report);
    assert_eq!(app.db_queries(), 1, "the second read is a hit");

    let response = app
        .http
        .put(format!("{}/orders/7", app.base))
        .json(&json!({ "amount_cents": 123_456 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "id": 7, "user_id": 4, "amount_cents": 123_456 })
    );
    let patched = app.json("/reports/sales").await;
    assert_eq!(patched, expected_sales_report(&postgres.url()).await);
    assert_ne!(patched, report);
    assert_eq!(
        app.db_queries(),
        3,
        "the write's UPDATE and its organisation's line; the read after it is a hit"
    );
}
