//! HTTP caching and consistency for axum 0.8 handlers:
//!
//! - [`CachedJson`]: a JSON response with a strong [`ETag`] (a digest of
//!   the bytes sent), `Last-Modified` if given, and a [`CacheControl`]
//!   (default `private, no-cache`), answered with a bodiless `304 Not
//!   Modified` when the request's [`IfNoneMatch`] already holds it;
//! - [`Preconditions`]: `If-Match`, `If-None-Match` and
//!   `If-Unmodified-Since` on writes, a `412` ([`PreconditionFailed`])
//!   when one fails, so clients can prevent lost updates;
//! - [`read_your_writes`]: middleware that gives a write's response a
//!   [`ConsistencyToken`](crate::ConsistencyToken) (header and cookie) and
//!   makes later reads that present it never older than the write, on any
//!   instance.
//!
//! Enabled by the `axum` feature:
//! `cache-runtime = { version = "0.1", features = ["axum"] }`.
//!
//! # Example
//!
//! ```
//! use axum::body::Body;
//! use axum::extract::{Path, State};
//! use axum::http::{Request, StatusCode, header};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::get;
//! use axum::{Router, middleware};
//! use cache_runtime::http::{CachedJson, IfNoneMatch, read_your_writes};
//! use cache_runtime::{cached, Cache};
//! use tower::ServiceExt; // oneshot
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: i64, name: String }
//!
//! #[derive(Debug)]
//! enum AppError { NotFound }
//!
//! impl IntoResponse for AppError {
//!     fn into_response(self) -> Response {
//!         StatusCode::NOT_FOUND.into_response()
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct AppState { cache: Cache }
//!
//! impl AppState {
//!     #[cached(key = "user:<id>", ttl = 300, negative = 60, cache = self.cache)]
//!     async fn get_user(&self, id: i64) -> Result<Option<User>, AppError> {
//!         Ok((id == 42).then(|| User { id, name: "Ada".into() })) // the database query
//!     }
//! }
//!
//! async fn get_user(
//!     Path(id): Path<i64>,
//!     if_none_match: IfNoneMatch,
//!     State(repo): State<AppState>,
//! ) -> Result<CachedJson<User>, AppError> {
//!     let user = repo.get_user(id).await?.ok_or(AppError::NotFound)?;
//!     Ok(CachedJson::new(user).for_request(&if_none_match))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = Cache::builder().build().await.unwrap();
//! let app = Router::new()
//!     .route("/users/{id}", get(get_user))
//!     .with_state(AppState { cache: cache.clone() })
//!     .layer(middleware::from_fn_with_state(cache, read_your_writes));
//!
//! // First visit: the JSON, its ETag, and "ask me before you use it".
//! let request = Request::get("/users/42").body(Body::empty()).unwrap();
//! let response = app.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()[header::CACHE_CONTROL], "private, no-cache");
//! let etag = response.headers()[header::ETAG].clone();
//!
//! // Revalidation: the client sends the ETag back and gets an empty 304.
//! let request = Request::get("/users/42")
//!     .header(header::IF_NONE_MATCH, etag.clone())
//!     .body(Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
//! assert_eq!(response.headers()[header::ETAG], etag);
//! # }
//! ```
//!
//! # What each `Cache-Control` leaves a client
//!
//! With `#[cached]` behind a handler, instance B may still serve an old
//! value from its L1 until instance A's invalidation message reaches it
//! (one pub/sub delivery; up to the L1 lifetime cap while B is cut off
//! from Redis). What a client sees on top of that depends on the header:
//!
//! | `Cache-Control` | the client may show an old value |
//! | --- | --- |
//! | `private, no-cache` (default) | never from its own copy: each use is revalidated; with a consistency token, never older than its own writes on any instance |
//! | `private, max-age=N` | for up to N seconds after any write, its own included, without asking |
//! | `…, stale-while-revalidate=S` / `stale-if-error=S` | S seconds more, while it revalidates / while the server fails |
//! | `no-store` | never: it keeps nothing (and gets no 304s) |
//!
//! `public` additionally lets shared caches (proxies, CDNs) keep the
//! response: only for data that is the same for every user.
//!
//! # Why a strong ETag over the bytes
//!
//! The tag is a hash of the exact body, not a counter or a random token
//! kept by one process, so every instance behind a load balancer computes
//! the same tag for the same body, a client's revalidation gets its 304
//! whichever instance answers, and the tag is strong: `If-Match` may use
//! it to guard writes. [`ETag::of`] gives a weak (`W/`) tag of a value
//! without serialising it, for `If-None-Match` only.

mod conditions;
mod etag;
mod read_your_writes;
mod response;

pub use conditions::{IfNoneMatch, PreconditionFailed, Preconditions};
pub use etag::{ETag, ETagError};
pub use read_your_writes::{TOKEN_COOKIE, TOKEN_HEADER, read_your_writes};
pub use response::{CacheControl, CachedJson};

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
    use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{any, get};
    use serde::{Serialize, Serializer};
    use tower::ServiceExt;

    use super::*;

    #[derive(Clone, Serialize)]
    struct User {
        id: i64,
        name: String,
    }

    fn ada() -> User {
        User {
            id: 42,
            name: "Ada".into(),
        }
    }

    const ADA_JSON: &[u8] = br#"{"id":42,"name":"Ada"}"#;

    /// A router answering `/` (any method) with `value`, honouring
    /// If-None-Match, and `/plain` without `.for_request`. Its state type is
    /// not `()`, to exercise the extractor's `S` parameter.
    fn app<T: Serialize + Clone + Send + Sync + 'static>(value: T) -> Router {
        #[derive(Clone)]
        struct AppState<T>(T);

        async fn conditional<T: Serialize + Clone>(
            State(AppState(value)): State<AppState<T>>,
            if_none_match: IfNoneMatch,
        ) -> CachedJson<T> {
            CachedJson::new(value).for_request(&if_none_match)
        }

        async fn plain<T: Serialize + Clone>(
            State(AppState(value)): State<AppState<T>>,
            _if_none_match: IfNoneMatch,
        ) -> CachedJson<T> {
            CachedJson::new(value).max_age(Duration::from_secs(300))
        }

        Router::new()
            .route("/", any(conditional::<T>))
            .route("/plain", get(plain::<T>))
            .with_state(AppState(value))
    }

    async fn call(
        app: Router,
        method: Method,
        uri: &str,
        if_none_match: &[&[u8]],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder().method(method).uri(uri);
        for value in if_none_match {
            request = request.header(IF_NONE_MATCH, HeaderValue::from_bytes(value).unwrap());
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, body)
    }

    async fn get_with(app: Router, if_none_match: &[&[u8]]) -> (StatusCode, HeaderMap, Bytes) {
        call(app, Method::GET, "/", if_none_match).await
    }

    fn ada_tag() -> String {
        ETag::of_bytes(ADA_JSON).to_string()
    }

    #[tokio::test]
    async fn fresh_request_gets_200_with_json_strong_etag_and_no_cache() {
        let (status, headers, body) = get_with(app(ada()), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers[CACHE_CONTROL], "private, no-cache");
        assert_eq!(headers[ETAG], ada_tag());
        assert!(!ada_tag().starts_with("W/"));
        assert_eq!(&body[..], ADA_JSON);
    }

    #[tokio::test]
    async fn matching_if_none_match_gets_304_with_headers_and_empty_body() {
        let tag = ada_tag();
        let weak = format!("W/{tag}");
        for header in [&tag, &weak] {
            let (status, headers, body) = get_with(app(ada()), &[header.as_bytes()]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{header}");
            assert!(body.is_empty());
            assert_eq!(headers[ETAG], tag);
            assert_eq!(headers[CACHE_CONTROL], "private, no-cache");
            assert!(headers.get(CONTENT_TYPE).is_none());
        }
    }

    #[tokio::test]
    async fn list_holding_the_etag_matches_in_one_line_or_several() {
        let tag = ada_tag();
        let list = format!(r#""a", {tag}"#);
        let (status, _, _) = get_with(app(ada()), &[list.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);

        let spaced = format!("\t, W/\"a\" ,,{tag} ,");
        let (status, _, _) = get_with(app(ada()), &[spaced.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);

        let (status, _, _) = get_with(app(ada()), &[br#""a", "b""#, tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn star_matches() {
        let (status, headers, body) = get_with(app(ada()), &[b"*"]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(headers[ETAG], ada_tag());
    }

    #[tokio::test]
    async fn non_matching_or_malformed_if_none_match_gets_200() {
        let tag = ada_tag();
        let hex = tag.trim_matches('"');
        let cases: Vec<Vec<u8>> = vec![
            br#""someone else's tag""#.to_vec(),
            format!(r#""{}""#, hex.to_uppercase()).into_bytes(), // octet-by-octet comparison
            b"".to_vec(),
            b" , ,".to_vec(),
            b"garbage".to_vec(),
            hex.as_bytes().to_vec(),               // unquoted
            format!("w/{tag}").into_bytes(),       // `W/` is case-sensitive
            format!("{tag} garbage").into_bytes(), // the whole line is malformed
            format!("{tag}, \"unterminated").into_bytes(),
            format!("*, {tag}").into_bytes(), // `*` is not a list member
            format!("{tag}{tag}").into_bytes(), // no comma between tags
            br#""with space""#.to_vec(),      // not etagc
            b"\"\xff\xfe\"".to_vec(),         // obs-text: valid, does not match
            ETag::of(&ada()).unwrap().to_string().into_bytes(), // the value's weak tag: other bytes
        ];
        for case in cases {
            let (status, headers, body) = get_with(app(ada()), &[&case]).await;
            let shown = String::from_utf8_lossy(&case);
            assert_eq!(status, StatusCode::OK, "If-None-Match: {shown}");
            assert_eq!(headers[ETAG], tag, "If-None-Match: {shown}");
            assert_eq!(&body[..], ADA_JSON, "If-None-Match: {shown}");
        }
        // A malformed line spoils a matching one: no 304.
        let (status, _, _) = get_with(app(ada()), &[tag.as_bytes(), b"garbage"]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_for_request_it_is_always_200() {
        let tag = ada_tag();
        for header in [tag.as_bytes(), b"*"] {
            let (status, headers, body) = call(app(ada()), Method::GET, "/plain", &[header]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[ETAG], tag);
            assert_eq!(headers[CACHE_CONTROL], "private, max-age=300");
            assert_eq!(&body[..], ADA_JSON);
        }
    }

    #[tokio::test]
    async fn only_get_and_head_get_a_304() {
        let tag = ada_tag();
        let (status, _, body) = call(app(ada()), Method::HEAD, "/", &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let (status, _, body) = call(app(ada()), method.clone(), "/", &[tag.as_bytes()]).await;
            assert_eq!(status, StatusCode::OK, "{method}");
            assert_eq!(&body[..], ADA_JSON);
        }
    }

    #[test]
    fn cache_control_choices_render_as_the_rfc_spells_them() {
        for (control, expected) in [
            (
                CacheControl::max_age(Duration::from_millis(999)),
                "private, max-age=0",
            ),
            (
                CacheControl::max_age(Duration::from_millis(1500)),
                "private, max-age=1",
            ),
            (
                CacheControl::max_age(Duration::from_secs(86_400)).public(),
                "public, max-age=86400",
            ),
            (
                CacheControl::no_cache().must_revalidate(),
                "private, no-cache, must-revalidate",
            ),
            (
                CacheControl::no_store().stale(Duration::from_secs(1)),
                "no-store",
            ),
        ] {
            let response = CachedJson::new(ada())
                .cache_control(control)
                .into_response();
            assert_eq!(response.headers()[CACHE_CONTROL], expected);
        }
    }

    /// Fails for serde_json: a response that serialises the body cannot
    /// succeed with it.
    #[derive(Clone)]
    struct NoJson;

    impl Serialize for NoJson {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON for this type"))
        }
    }

    #[tokio::test]
    async fn a_value_without_json_is_a_short_500() {
        for header in [&b""[..], b"*"] {
            let (status, headers, body) = get_with(app(NoJson), &[header]).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(
                headers[CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            assert_eq!(&body[..], b"failed to serialise the response body");
            assert!(headers.get(ETAG).is_none() && headers.get(CACHE_CONTROL).is_none());
        }
    }

    /// Counts how often serde_json visits it.
    #[derive(Clone, Default)]
    struct Counted(Arc<AtomicUsize>);

    impl Serialize for Counted {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            serializer.serialize_str("counted")
        }
    }

    #[tokio::test]
    async fn the_body_is_serialised_once_per_response() {
        let value = Counted::default();
        let tag = ETag::of_bytes(br#""counted""#).to_string();
        get_with(app(value.clone()), &[]).await;
        assert_eq!(value.0.load(Ordering::SeqCst), 1);
        get_with(app(value.clone()), &[br#""nope""#]).await;
        assert_eq!(value.0.load(Ordering::SeqCst), 2);
        let (status, _, _) = get_with(app(value.clone()), &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(value.0.load(Ordering::SeqCst), 3);
    }
}
