//! HTTP: routes, handlers, and how errors become responses.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::BreakerState;
use cache_runtime::http::{CachedJson, IfNoneMatch};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::db::{self, OrgMembers, User};
use crate::repo::{ORG_TTL_SECS, Repo, USER_TTL_SECS};

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub repo: Repo,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/orgs/{id}/users", get(org_members))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
}

/// `GET /users/{id}`: the user as JSON, with an `ETag` derived from the
/// cached value; `If-None-Match` with that tag gets a bodiless 304.
async fn get_user(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    if_none_match: IfNoneMatch,
) -> Result<CachedJson<User>, AppError> {
    let id = parse_id(id)?;
    let user = state
        .repo
        .user(id)
        .await?
        .ok_or(AppError::NotFound("user", id))?;
    Ok(CachedJson::new(user, Duration::from_secs(USER_TTL_SECS)).for_request(&if_none_match))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

/// `PUT /users/{id}` with `{"name": "..."}`: renames the user, drops the
/// cached copies (the user's and their organisation's list) everywhere,
/// and answers with the new state.
async fn put_user(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<Rename>, JsonRejection>,
) -> Result<CachedJson<User>, AppError> {
    let id = parse_id(id)?;
    let Json(Rename { name }) = body.map_err(|rejection| {
        AppError::BadRequest(
            rejection.status(),
            format!(
                "expected a JSON body like {{\"name\": \"Ada\"}}: {}",
                rejection.body_text()
            ),
        )
    })?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::BadRequest(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`name` must be 1 to 100 characters".into(),
        ));
    }
    // The organisation is needed to drop its member list; it never changes
    // in this app, so reading it through the cache is fine.
    let user = state
        .repo
        .user(id)
        .await?
        .ok_or(AppError::NotFound("user", id))?;
    if !state.repo.rename_user(user.org_id, id, name).await? {
        return Err(AppError::NotFound("user", id));
    }
    let user = state
        .repo
        .user(id)
        .await?
        .ok_or(AppError::NotFound("user", id))?;
    Ok(CachedJson::new(user, Duration::from_secs(USER_TTL_SECS)))
}

/// `GET /orgs/{id}/users`: the organisation's members, cached as one list.
async fn org_members(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    if_none_match: IfNoneMatch,
) -> Result<CachedJson<OrgMembers>, AppError> {
    let id = parse_id(id)?;
    let org = state
        .repo
        .org_members(id)
        .await?
        .ok_or(AppError::NotFound("organisation", id))?;
    Ok(CachedJson::new(org, Duration::from_secs(ORG_TTL_SECS)).for_request(&if_none_match))
}

/// `GET /metrics`: the cache's metrics (`cache_*`, recorded by
/// cache-runtime's `metrics` feature) in Prometheus' text format, plus this
/// instance's database query count.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render();
    let repo = &state.repo;
    // Rendered per instance rather than recorded globally, so that two apps
    // in one process (the end-to-end test) each report their own database.
    let _ = write!(
        body,
        "# HELP app_db_queries_total Queries sent to the database for requests.\n\
         # TYPE app_db_queries_total counter\n\
         app_db_queries_total {}\n\
         # HELP app_cache_enabled 1 unless the app runs with CACHE=off.\n\
         # TYPE app_cache_enabled gauge\n\
         app_cache_enabled {}\n",
        repo.db.queries(),
        u8::from(repo.cache_enabled()),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `GET /health`: 200 while the database answers. Redis is reported but
/// does not fail the check: the app serves without it.
async fn health(State(state): State<AppState>) -> Response {
    let stats = state.repo.cache.stats();
    let redis = match stats.breaker {
        BreakerState::Disabled => "disabled",
        BreakerState::Closed if state.repo.cache.is_l2_connected() => "connected",
        _ => "unavailable",
    };
    let (status, database) = match state.repo.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(error) => {
            tracing::error!(%error, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let body = serde_json::json!({
        "database": database,
        "redis": redis,
        "cache": if state.repo.cache_enabled() { "on" } else { "off" },
        "invalidation_channel_verified": stats.channel_verified,
    });
    (status, Json(body)).into_response()
}

fn parse_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, AppError> {
    id.map(|Path(id)| id).map_err(|rejection| {
        AppError::BadRequest(
            StatusCode::BAD_REQUEST,
            format!("the id must be an integer: {}", rejection.body_text()),
        )
    })
}

/// Every way a request can fail, as a status and a JSON `{"error": ...}`.
#[derive(Debug)]
pub enum AppError {
    BadRequest(StatusCode, String),
    NotFound(&'static str, i64),
    Database(sqlx::Error),
    /// The database is too busy to answer now (see [`db::is_overloaded`]):
    /// `503` with `Retry-After`, so clients back off and retry instead of
    /// reporting a failure.
    Overloaded(sqlx::Error),
}

/// Seconds an overloaded app asks clients to wait (`Retry-After`): the
/// pool's wait for a connection is about as long.
const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        if db::is_overloaded(&error) {
            AppError::Overloaded(error)
        } else {
            AppError::Database(error)
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest(status, message) => (status, message),
            AppError::NotFound(what, id) => (StatusCode::NOT_FOUND, format!("no {what} {id}")),
            AppError::Database(error) => {
                // Details stay in the log; clients get no SQL or paths.
                tracing::error!(%error, "database error");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
            AppError::Overloaded(error) => {
                tracing::warn!(%error, "database overloaded: answering 503");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, OVERLOAD_RETRY_AFTER_SECS.to_string())],
                    Json(serde_json::json!({ "error": "too busy, retry shortly" })),
                )
                    .into_response();
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
