//! A small user service whose repository is cached with `#[cached]`.
//!
//! ```sh
//! cargo run --example axum_app                                  # in-process cache, SQLite file
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_app # plus Redis (L2)
//! ```
//!
//! Settings (environment): `PORT` (default 3000, on 127.0.0.1),
//! `DATABASE_URL` (default `sqlite:target/axum_app.sqlite?mode=rwc`, created,
//! migrated and seeded on start), `REDIS_URL` (optional), `RUST_LOG`.
//!
//! Routes: `GET /users/{id}` (404 cached negatively, 400 for a non-number),
//! `PUT /users/{id}` with `{"name": "..."}`, `GET /stats`, `GET /health`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

const SEEDED_USERS: i64 = 2_000;

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
struct User {
    id: i64,
    name: String,
    email: String,
}

/// The repository: the only place that talks to the database.
struct UserRepo {
    pool: SqlitePool,
    cache: Cache,
    /// Queries sent to the database, to show what the cache saves.
    queries: AtomicU64,
}

impl UserRepo {
    /// Cached for 5 minutes (±10%); unknown ids are cached for 30 s so a
    /// scan of missing ids does not reach the database every time.
    #[cached(key = "user:<id>", ttl = 300, jitter = 0.1, negative = 30, cache = self.cache)]
    async fn get_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        sqlx::query_as::<_, User>("SELECT id, name, email FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Renames a user; on success the cached copy is dropped everywhere
    /// (every instance sharing the Redis), before the call returns.
    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn rename_user(&self, id: i64, name: &str) -> Result<bool, sqlx::Error> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let updated = sqlx::query("UPDATE users SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(updated > 0)
    }
}

type AppState = Arc<UserRepo>;

async fn get_user(State(repo): State<AppState>, Path(id): Path<i64>) -> Response {
    match repo.get_user(id).await {
        Ok(Some(user)) => Json(user).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no user {id}\n")).into_response(),
        Err(error) => internal_error(error),
    }
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn put_user(
    State(repo): State<AppState>,
    Path(id): Path<i64>,
    body: Result<Json<Rename>, JsonRejection>,
) -> Response {
    let Json(Rename { name }) = match body {
        Ok(body) => body,
        Err(rejection) => {
            let message = format!(
                "expected a JSON body like {{\"name\": \"Ada\"}}: {}\n",
                rejection.body_text()
            );
            return (rejection.status(), message).into_response();
        }
    };
    if name.trim().is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "`name` must not be empty\n",
        )
            .into_response();
    }
    match repo.rename_user(id, &name).await {
        Ok(true) => get_user(State(repo), Path(id)).await,
        Ok(false) => (StatusCode::NOT_FOUND, format!("no user {id}\n")).into_response(),
        Err(error) => internal_error(error),
    }
}

async fn stats(State(repo): State<AppState>) -> Json<serde_json::Value> {
    let stats = repo.cache.stats();
    Json(serde_json::json!({
        "database_queries": repo.queries.load(Ordering::Relaxed),
        "hits": stats.hits,
        "l1_hits": stats.l1_hits,
        "l2_hits": stats.l2_hits,
        "misses": stats.misses,
        "loads": stats.loads,
        "l2_errors": stats.l2_errors,
        "l2_timeouts": stats.l2_timeouts,
        "breaker": format!("{:?}", stats.breaker),
        "l1_entries": stats.l1_entries,
    }))
}

fn internal_error(error: sqlx::Error) -> Response {
    tracing::error!(%error, "database error");
    (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
}

fn router(repo: AppState) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/stats", get(stats))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(repo)
}

async fn open_database(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await?;
    if count == 0 {
        let mut tx = pool.begin().await?;
        for id in 1..=SEEDED_USERS {
            sqlx::query("INSERT INTO users (id, name, email) VALUES (?, ?, ?)")
                .bind(id)
                .bind(format!("User {id}"))
                .bind(format!("user{id}@example.com"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(users = SEEDED_USERS, "seeded the database");
    }
    Ok(pool)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "sqlite:target/axum_app.sqlite?mode=rwc".into());
    let pool = open_database(&database_url).await?;

    let mut builder = Cache::builder().namespace("axum_app");
    if let Ok(url) = std::env::var("REDIS_URL") {
        builder = builder.redis_url(url);
    }
    let cache = builder.build().await?;
    tracing::info!(redis = cache.is_l2_connected(), "cache ready");

    let repo = Arc::new(UserRepo {
        pool,
        cache,
        queries: AtomicU64::new(0),
    });
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!("listening on http://{address}");
    axum::serve(listener, router(repo))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
