//! HTTP: routes, handlers, and how errors become responses.

use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{
    FromRequestParts, MatchedPath, OriginalUri, Path, RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use cache_runtime::BreakerState;
use cache_runtime::http::{
    CacheControl, CachedJson, ETag, IfNoneMatch, PreconditionFailed, Preconditions,
    read_your_writes,
};
use icu_properties::CodePointSetData;
use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::db::{self, Order, OrgMembers, SalesReport, User};
use crate::repo::{ORG_STALE_SECS, Repo, SEEN_QUEUE};

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub repo: Repo,
    pub metrics: PrometheusHandle,
    /// Whether this process runs a write-behind worker (`/health` says so).
    pub write_behind_worker: bool,
}

pub fn router(state: AppState) -> Router {
    let cache = state.repo.cache.clone();
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/users/{id}/seen", get(get_seen).post(post_seen))
        .route("/orgs/{id}/users", get(org_members))
        .route("/reports/sales", get(sales_report))
        .route("/orders/{id}", put(put_order))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route_layer(middleware::from_fn(canonical_ids))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
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

/// The body of `PUT /users/{id}`: a JSON object whose one field is `name`.
struct Rename {
    name: String,
}

/// By hand rather than derived: serde's derive also accepts a sequence for
/// a struct, so `["Ada"]` would be read as `{"name": "Ada"}`. Only an
/// object is a valid body; unknown and repeated fields are refused.
impl<'de> Deserialize<'de> for Rename {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rename, D::Error> {
        struct RenameObject;

        impl<'de> Visitor<'de> for RenameObject {
            type Value = Rename;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object like {\"name\": \"Ada\"}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Rename, A::Error> {
                let mut name = None;
                while let Some(field) = fields.next_key::<String>()? {
                    match field.as_str() {
                        "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                        "name" => name = Some(fields.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["name"])),
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                Ok(Rename { name })
            }
        }

        deserializer.deserialize_map(RenameObject)
    }
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
    let name = validate_name(&name)?;
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

/// When a user was last seen, as `GET /users/{id}/seen` answers and
/// `POST` records it.
#[derive(Debug, Clone, Serialize)]
struct Seen {
    id: i64,
    /// Milliseconds since the Unix epoch.
    seen_at: i64,
}

/// The body of `POST /users/{id}/seen`: nothing, or `{"at": <ms>}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenAt {
    at: i64,
}

/// `POST /users/{id}/seen`, with no body (seen now) or `{"at": <ms since
/// the Unix epoch>}`: records the time through write-behind and answers
/// `202 Accepted` with it. The cache holds it at once (`GET` reads it, on
/// any instance); the database gets it when a worker applies the queued
/// write, or before the answer when Redis cannot queue it. Unknown users
/// get 404, so no write that can never apply is queued.
async fn post_seen(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    let id = parse_id(id)?;
    let at = if body.iter().all(u8::is_ascii_whitespace) {
        db::now_ms()
    } else {
        // Through a map: serde's derive also reads a sequence as a struct
        // (`[1]` as `{"at": 1}`), and only an object is a valid body.
        let SeenAt { at } = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
            &body,
        )
        .and_then(|object| serde_json::from_value(object.into()))
        .map_err(|error| {
            AppError::BadRequest(
                StatusCode::BAD_REQUEST,
                format!("expected no body or a JSON body like {{\"at\": 1700000000000}}: {error}"),
            )
        })?;
        if at < 0 {
            return Err(AppError::BadRequest(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`at` must be milliseconds since the Unix epoch, not {at}"),
            ));
        }
        at
    };
    if !state.repo.user_exists(id).await? {
        return Err(AppError::NotFound("user", id));
    }
    state.repo.record_seen(id, at).await?;
    Ok((
        StatusCode::ACCEPTED,
        [no_store()],
        Json(Seen { id, seen_at: at }),
    )
        .into_response())
}

/// `GET /users/{id}/seen`: when the user was last seen, `404` if never.
async fn get_seen(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    if_none_match: IfNoneMatch,
) -> Result<CachedJson<Seen>, AppError> {
    let id = parse_id(id)?;
    let seen_at = state
        .repo
        .last_seen(id)
        .await?
        .ok_or(AppError::NotFound("last-seen time of user", id))?;
    Ok(CachedJson::new(Seen { id, seen_at }).for_request(&if_none_match))
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

/// `GET /reports/sales`: every organisation's orders, revenue and
/// customers, added up over all orders (an expensive query, cached).
async fn sales_report(
    State(state): State<AppState>,
    if_none_match: IfNoneMatch,
) -> Result<CachedJson<SalesReport>, AppError> {
    let report = state.repo.sales_report().await?;
    Ok(CachedJson::new(report).for_request(&if_none_match))
}

/// The body of `PUT /orders/{id}`: `{"amount_cents": <n>}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAmount {
    amount_cents: i64,
}

/// The largest amount of one order: $1,000,000, so that no sum over the
/// orders can overflow.
const MAX_AMOUNT_CENTS: i64 = 100_000_000;

/// `PUT /orders/{id}` with `{"amount_cents": <n>}`: sets the order's
/// amount and answers with the order as stored. The cached sales report is
/// patched (its organisation's line added up again), so the next
/// `GET /reports/sales` shows it without adding up every order.
async fn put_order(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<Json<Order>, AppError> {
    let id = parse_id(id)?;
    let expected = "expected a JSON body like {\"amount_cents\": 1999}";
    // Through a map: serde's derive also reads a sequence as a struct
    // (`[1999]` as `{"amount_cents": 1999}`), and only an object is valid.
    let Json(object) = body.map_err(|rejection| {
        AppError::BadRequest(
            rejection.status(),
            format!("{expected}: {}", rejection.body_text()),
        )
    })?;
    let SetAmount { amount_cents } = serde_json::from_value(object.into()).map_err(|error| {
        AppError::BadRequest(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{expected}: {error}"),
        )
    })?;
    if !(0..=MAX_AMOUNT_CENTS).contains(&amount_cents) {
        return Err(AppError::BadRequest(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`amount_cents` must be 0..={MAX_AMOUNT_CENTS}, not {amount_cents}"),
        ));
    }
    let order = state
        .repo
        .set_order_amount(id, amount_cents)
        .await?
        .ok_or(AppError::NotFound("order", id))?;
    Ok(Json(order))
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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Redis counts as connected while it answered a command within this long
/// (and the breaker is closed). Without traffic the cache's heartbeats
/// still send it one every `heartbeat_interval` (1 s) while its
/// subscription is up, so a working Redis stays well below this.
const REDIS_ANSWERED_WITHIN: Duration = Duration::from_secs(3);

/// `GET /health`: 200 while the database answers. Redis is reported but
/// does not fail the check: the app serves without it (from the database,
/// and from L1, whose entries miss other instances' writes while the
/// subscription is down).
///
/// `redis` is what is true now, from [`cache_runtime::Stats`]:
/// - `status`: `connected` when Redis answered a command within the last
///   3 s and the breaker is closed, `unavailable` otherwise, `disabled`
///   without `REDIS_URL`;
/// - `last_ok_ms_ago`: how long ago Redis last answered (`null`: never);
/// - `subscription`: `alive` while the cache's heartbeats come back through
///   its invalidation channel (`channel_verified`), else `down`;
/// - `last_heartbeat_ms_ago`: how long ago one last came back (`null`:
///   never);
/// - `breaker`: `closed`, `open` (Redis is skipped) or `half_open` (a probe
///   runs).
///
/// `write_behind` is the last-seen queue (`POST /users/{id}/seen`):
/// - `worker`: whether this process applies it (`WRITE_BEHIND_WORKER`);
/// - `depth`, `oldest_ms`, `dead_letters`: read from Redis now (the
///   queue is shared, so every instance reports the same): writes queued
///   and not yet applied, the age of the oldest (`null`: none), and writes
///   that failed for good; `null` when Redis cannot be read;
/// - `queued`, `synchronous`: this process' calls that queued their write,
///   or ran it at once because Redis could not take it;
/// - `applied`, `retries`, `dead_lettered`, `coalesced`: what this
///   process' worker did.
async fn health(State(state): State<AppState>) -> Response {
    let stats = state.repo.cache.stats();
    let (status, database) = match state.repo.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(error) => {
            tracing::error!(%error, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let body = serde_json::json!({
        "database": database,
        "redis": redis_health(&stats),
        "cache": if state.repo.cache_enabled() { "on" } else { "off" },
        "write_behind": write_behind_health(&state, &stats).await,
    });
    (status, [no_store()], Json(body)).into_response()
}

/// The `redis` object of `/health` (see [`health`]).
fn redis_health(stats: &cache_runtime::Stats) -> serde_json::Value {
    let ms =
        |age: Option<Duration>| age.map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    let (status, breaker) = match stats.breaker {
        BreakerState::Disabled => ("disabled", "disabled"),
        BreakerState::Closed
            if stats
                .since_l2_answer
                .is_some_and(|age| age <= REDIS_ANSWERED_WITHIN) =>
        {
            ("connected", "closed")
        }
        BreakerState::Closed => ("unavailable", "closed"),
        BreakerState::Open => ("unavailable", "open"),
        BreakerState::HalfOpen => ("unavailable", "half_open"),
        _ => ("unavailable", "unknown"),
    };
    let subscription = match (stats.breaker, stats.channel_verified) {
        (BreakerState::Disabled, _) => "disabled",
        (_, true) => "alive",
        (_, false) => "down",
    };
    serde_json::json!({
        "status": status,
        "last_ok_ms_ago": ms(stats.since_l2_answer),
        "subscription": subscription,
        "last_heartbeat_ms_ago": ms(stats.since_heartbeat),
        "breaker": breaker,
    })
}

/// The longest `/health` waits for the queue's backlog: Redis may be slow
/// or gone, and the health check must answer anyway.
const BACKLOG_READ_LIMIT: Duration = Duration::from_secs(1);

/// The `write_behind` object of `/health` (see [`health`]).
async fn write_behind_health(state: &AppState, stats: &cache_runtime::Stats) -> serde_json::Value {
    let backlog = tokio::time::timeout(
        BACKLOG_READ_LIMIT,
        state.repo.cache.write_behind_backlog(SEEN_QUEUE),
    )
    .await;
    let backlog = match backlog {
        Ok(Ok(backlog)) => Some(backlog),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: the write-behind backlog cannot be read");
            None
        }
        Err(_) => None,
    };
    serde_json::json!({
        "queue": SEEN_QUEUE,
        "worker": state.write_behind_worker,
        "depth": backlog.map(|backlog| backlog.depth),
        "oldest_ms": backlog
            .and_then(|backlog| backlog.oldest)
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        "dead_letters": backlog.map(|backlog| backlog.dead_letters),
        "queued": stats.write_behind_queued,
        "synchronous": stats.write_behind_synchronous,
        "applied": stats.write_behind_applied,
        "retries": stats.write_behind_retries,
        "dead_lettered": stats.write_behind_dead_letters,
        "coalesced": stats.write_behind_coalesced,
    })
}

fn parse_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, AppError> {
    id.map(|Path(id)| id).map_err(|rejection| {
        AppError::BadRequest(
            StatusCode::BAD_REQUEST,
            format!("the id must be an integer: {}", rejection.body_text()),
        )
    })
}

/// Redirects a request whose path spells an `{id}` other than canonically
/// (`/users/042`, `/users/+42`, `/users/%34%32`) to the canonical path
/// (`/users/42`), with `308 Permanent Redirect` (which keeps the method and
/// body, so a `PUT` is redirected too). Otherwise each spelling would be an
/// entry of its own in a browser's cache, which a write to the canonical
/// path does not replace. Every path parameter of this app is an integer
/// id; an id that is no integer goes on to the handler, which answers 400.
async fn canonical_ids(request: Request, next: Next) -> Response {
    let (mut head, body) = request.into_parts();
    match canonical_location(&mut head).await {
        Some(location) => redirect(&location),
        None => next.run(Request::from_parts(head, body)).await,
    }
}

/// Where [`canonical_ids`] sends a request with this head, or `None` when
/// its path is canonical (or an id is no integer).
async fn canonical_location(head: &mut Parts) -> Option<String> {
    let template = head.extensions.get::<MatchedPath>()?.as_str().to_owned();
    // Percent-decoded; not UTF-8 (`%FF`) is no integer: left to the handler.
    let params = RawPathParams::from_request_parts(head, &()).await.ok()?;
    let mut canonical = template;
    for (name, value) in &params {
        let id: i64 = value.parse().ok()?;
        canonical = canonical.replace(&format!("{{{name}}}"), &id.to_string());
    }
    // The path as the client sent it, percent-encoding included (the
    // original one under a nested router, which strips its prefix).
    let sent = head
        .extensions
        .get::<OriginalUri>()
        .map_or(&head.uri, |original| &original.0);
    if sent.path() == canonical {
        return None;
    }
    Some(match sent.query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    })
}

/// `308` to `location`. The spelling-to-path mapping never changes, so the
/// redirect may be cached for a day.
fn redirect(location: &str) -> Response {
    let Ok(location_header) = HeaderValue::from_str(location) else {
        // Built from a path and query that arrived as a valid URI.
        return AppError::BadRequest(StatusCode::BAD_REQUEST, "malformed path".into())
            .into_response();
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [
            (header::LOCATION, location_header),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        Json(serde_json::json!({ "location": location })),
    )
        .into_response()
}

/// Any path no route matches: a JSON 404 like every other error.
async fn no_route(method: Method, uri: Uri) -> AppError {
    AppError::NoRoute(method, uri)
}

/// A route that exists, with a method it does not take: a JSON 405 (axum
/// adds the `Allow` header listing the methods it takes).
async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(method, uri)
}

/// The longest name, in characters.
const NAME_MAX_CHARS: usize = 100;

/// A new name, trimmed, or a 422 naming what is wrong with it. Names are
/// text people read, in lists and logs: no control characters or line
/// breaks (NUL, escape sequences, U+0085, U+2028, U+2029), no
/// bidirectional controls (U+202A-202E, U+2066-2069, U+200E/F, U+061C,
/// which can make a name display as something else), and at least one
/// visible character (not only whitespace and default-ignorable
/// characters such as zero-width spaces and joiners). A zero-width joiner
/// inside an emoji sequence, next to visible characters, is fine.
fn validate_name(name: &str) -> Result<&str, AppError> {
    let invalid = |message: String| AppError::BadRequest(StatusCode::UNPROCESSABLE_ENTITY, message);
    let name = name.trim();
    let bidi_controls = CodePointSetData::new::<BidiControl>();
    for (index, character) in name.chars().enumerate() {
        let problem = if character.is_control() || matches!(character, '\u{2028}' | '\u{2029}') {
            "control characters or line breaks"
        } else if bidi_controls.contains(character) {
            "bidirectional control characters"
        } else {
            continue;
        };
        return Err(invalid(format!(
            "`name` must not contain {problem} (U+{:04X} at character {})",
            u32::from(character),
            index + 1
        )));
    }
    let invisible = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    if name
        .chars()
        .all(|character| character.is_whitespace() || invisible.contains(character))
    {
        return Err(invalid(
            "`name` has no visible characters (it is empty, or only whitespace and invisible characters)".into(),
        ));
    }
    let length = name.chars().count();
    if length > NAME_MAX_CHARS {
        return Err(invalid(format!(
            "`name` must be at most {NAME_MAX_CHARS} characters, not {length}"
        )));
    }
    Ok(name)
}

/// `Cache-Control: no-store`, for answers no client should keep.
fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// Every way a request can fail, as a status and a JSON `{"error": ...}`.
///
/// Errors carry `Cache-Control: no-store`: a client asks again rather than
/// keep an error. For a 404 of an unknown user or organisation that costs
/// no query: the server answers it from its negative cache entry (kept
/// 30 s), and `no-store` keeps the client from adding its own 30 s on top
/// of the server's.
#[derive(Debug)]
pub enum AppError {
    BadRequest(StatusCode, String),
    NotFound(&'static str, i64),
    Precondition(PreconditionFailed),
    NoRoute(Method, Uri),
    MethodNotAllowed(Method, Uri),
    Database(sqlx::Error),
    /// The database is too busy to answer now (see [`db::is_overloaded`]):
    /// `503` with `Retry-After`, so clients back off and retry instead of
    /// reporting a failure.
    Overloaded(sqlx::Error),
    Internal,
}

impl From<PreconditionFailed> for AppError {
    fn from(failed: PreconditionFailed) -> Self {
        AppError::Precondition(failed)
    }
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

/// At most this much of a request's path is echoed in an error.
const ECHOED_PATH_CHARS: usize = 200;

fn echoed_path(uri: &Uri) -> String {
    let path = uri.path();
    match path.char_indices().nth(ECHOED_PATH_CHARS) {
        Some((cut, _)) => format!("{}...", &path[..cut]),
        None => path.to_owned(),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest(status, message) => (status, message),
            AppError::NotFound(what, id) => (StatusCode::NOT_FOUND, format!("no {what} {id}")),
            AppError::Precondition(failed) => return failed.into_response(),
            AppError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            AppError::NoRoute(method, uri) => (
                StatusCode::NOT_FOUND,
                format!("no route for {method} {}", echoed_path(&uri)),
            ),
            AppError::MethodNotAllowed(method, uri) => (
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on {} (the Allow header lists what is)",
                    echoed_path(&uri)
                ),
            ),
            AppError::Database(error) => {
                // Details stay in the log; clients get no SQL or paths.
                tracing::error!(%error, "database error");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
            AppError::Overloaded(error) => {
                tracing::warn!(%error, "database overloaded: answering 503");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (
                            header::RETRY_AFTER,
                            HeaderValue::from(OVERLOAD_RETRY_AFTER_SECS),
                        ),
                        no_store(),
                    ],
                    Json(serde_json::json!({ "error": "too busy, retry shortly" })),
                )
                    .into_response();
            }
        };
        (
            status,
            [no_store()],
            Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}
