//! HTTP: routes, handlers, and how errors become responses.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use cache_runtime::BreakerState;
use cache_runtime::http::{
    CacheControl, CachedJson, ETag, IfNoneMatch, PreconditionFailed, Preconditions,
    read_your_writes,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::db::{OrgMembers, User};
use crate::repo::{ORG_STALE_SECS, Repo};

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub repo: Repo,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    let cache = state.repo.cache.clone();
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/orgs/{id}/users", get(org_members))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
        // A write's response carries a consistency token (header and
        // cookie); a read presenting it is never older than that write,
        // whichever instance serves it.
        .layer(middleware::from_fn_with_state(cache, read_your_writes))
}

/// `GET /users/{id}`: the user as JSON, with a strong `ETag` over the
/// body and `Last-Modified`; `If-None-Match` with that tag gets a bodiless
/// 304. `Cache-Control: private, no-cache`: the client revalidates before
/// each use, so it never shows a name older than the server's.
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
    let modified = user.modified();
    Ok(CachedJson::new(user)
        .last_modified(modified)
        .for_request(&if_none_match))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

/// `PUT /users/{id}` with `{"name": "..."}`: renames the user and answers
/// with the row this write stored (its `ETag` is that body's), replacing
/// the cached copy and dropping the organisation's list.
///
/// Preconditions (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) are
/// checked against the row read from the database, and the update only
/// applies to that same row (compare-and-set), so a client that sends the
/// `ETag` it read as `If-Match` never overwrites a rename it has not seen:
/// it gets `412 Precondition Failed` instead.
async fn put_user(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    preconditions: Preconditions,
    body: Result<Json<Rename>, JsonRejection>,
) -> Result<Response, AppError> {
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
    // A write landing between the check and the update makes the update
    // miss (compare-and-set): check again against the new row.
    let mut attempts = 0;
    let user = loop {
        let current = state.repo.current_user(id).await?;
        let current_tag = current
            .as_ref()
            .map(ETag::of_json)
            .transpose()
            .map_err(|error| {
                tracing::error!(%error, "a user does not serialise to JSON");
                AppError::Internal
            })?;
        preconditions.evaluate(current_tag.as_ref(), current.as_ref().map(User::modified))?;
        let Some(current) = current else {
            return Err(AppError::NotFound("user", id));
        };
        // Unconditional requests overwrite whatever is there; conditional
        // ones only the row their preconditions held for.
        let expected = (!preconditions.is_empty()).then_some(&current);
        if let Some(user) = state.repo.rename_user(id, name, expected).await? {
            break user;
        }
        attempts += 1;
        if attempts == 5 {
            return Err(AppError::BadRequest(
                StatusCode::CONFLICT,
                "the user changed during each of 5 attempts; try again".into(),
            ));
        }
    };
    let modified = user.modified();
    let mut response = CachedJson::new(user)
        .last_modified(modified)
        .into_response();
    // The body is the resource's representation as this write left it.
    if let Ok(location) = HeaderValue::try_from(format!("/users/{id}")) {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, location);
    }
    Ok(response)
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
    // As the server does (`stale = 300`), the client may use an old list
    // while it revalidates, or when the server fails.
    let control = CacheControl::no_cache().stale(Duration::from_secs(ORG_STALE_SECS));
    Ok(CachedJson::new(org)
        .cache_control(control)
        .for_request(&if_none_match))
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
    Precondition(PreconditionFailed),
    Database(sqlx::Error),
    Internal,
}

impl From<PreconditionFailed> for AppError {
    fn from(failed: PreconditionFailed) -> Self {
        AppError::Precondition(failed)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        AppError::Database(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest(status, message) => (status, message),
            AppError::NotFound(what, id) => (StatusCode::NOT_FOUND, format!("no {what} {id}")),
            AppError::Precondition(failed) => return failed.into_response(),
            AppError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            AppError::Database(error) => {
                // Details stay in the log; clients get no SQL or paths.
                tracing::error!(%error, "database error");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
