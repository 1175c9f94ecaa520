//! The response side: [`CachedJson`] and the [`CacheControl`] it sends.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ETag, IfNoneMatch};
use crate::logging::Throttle;

const APPLICATION_JSON: &str = "application/json";

/// What a response lets clients (and caches between them and the server)
/// do with it: the `Cache-Control` header [`CachedJson`] sends.
///
/// The default, [`CacheControl::no_cache`], fits mutable per-user data: the
/// client keeps the response but asks before each use (a cheap `304` when
/// nothing changed), so it never shows a value older than the server's.
/// [`max_age`](CacheControl::max_age) lets it use its copy without asking
/// for that long: fewer requests, but a write (even the client's own) is not
/// seen until the copy expires. Responses are `private` (only the user's own
/// client may keep them) unless [`public`](CacheControl::public) is asked
/// for.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// use cache_runtime::http::CacheControl;
///
/// assert_eq!(CacheControl::default().to_string(), "private, no-cache");
/// assert_eq!(CacheControl::no_store().to_string(), "no-store");
/// let list = CacheControl::max_age(Duration::from_secs(60))
///     .public()
///     .stale(Duration::from_secs(300));
/// assert_eq!(
///     list.to_string(),
///     "public, max-age=60, stale-while-revalidate=300, stale-if-error=300"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheControl {
    public: bool,
    freshness: Freshness,
    must_revalidate: bool,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freshness {
    NoStore,
    NoCache,
    MaxAge(Duration),
}

impl Default for CacheControl {
    fn default() -> Self {
        CacheControl::no_cache()
    }
}

impl CacheControl {
    fn with(freshness: Freshness) -> CacheControl {
        CacheControl {
            public: false,
            freshness,
            must_revalidate: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        }
    }

    /// `private, no-cache`: the client keeps the response and revalidates
    /// it (`If-None-Match`) before every use. It never shows a value older
    /// than what the server serves at that moment. The default.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::CacheControl;
    ///
    /// assert_eq!(CacheControl::no_cache().to_string(), "private, no-cache");
    /// ```
    pub fn no_cache() -> CacheControl {
        CacheControl::with(Freshness::NoCache)
    }

    /// `private, max-age=<whole seconds>`: the client uses its copy for
    /// `max_age` without asking. A change made meanwhile (by anyone,
    /// including this client) is not seen until the copy expires: choose
    /// it from how stale the data may be.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use cache_runtime::http::CacheControl;
    ///
    /// let control = CacheControl::max_age(Duration::from_millis(90_500));
    /// assert_eq!(control.to_string(), "private, max-age=90");
    /// ```
    pub fn max_age(max_age: Duration) -> CacheControl {
        CacheControl::with(Freshness::MaxAge(max_age))
    }

    /// `no-store`: nobody keeps the response (secrets, one-time answers).
    /// The stale directives are not sent with it.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::CacheControl;
    ///
    /// assert_eq!(CacheControl::no_store().public().to_string(), "no-store");
    /// ```
    pub fn no_store() -> CacheControl {
        CacheControl::with(Freshness::NoStore)
    }

    /// `public`: shared caches (proxies, CDNs) may keep it too. Only for
    /// responses that are the same for every user.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::CacheControl;
    ///
    /// assert_eq!(CacheControl::no_cache().public().to_string(), "public, no-cache");
    /// ```
    pub fn public(mut self) -> CacheControl {
        self.public = true;
        self
    }

    /// `must-revalidate`: once expired, the copy is never used without the
    /// server's word (no stale serving by the client, even offline).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use cache_runtime::http::CacheControl;
    ///
    /// let control = CacheControl::max_age(Duration::from_secs(5)).must_revalidate();
    /// assert_eq!(control.to_string(), "private, max-age=5, must-revalidate");
    /// ```
    pub fn must_revalidate(mut self) -> CacheControl {
        self.must_revalidate = true;
        self
    }

    /// `stale-while-revalidate=<secs>`: for that long past expiry the client
    /// may use its copy while it revalidates in the background (RFC 5861).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use cache_runtime::http::CacheControl;
    ///
    /// let control = CacheControl::max_age(Duration::from_secs(60))
    ///     .stale_while_revalidate(Duration::from_secs(30));
    /// assert_eq!(control.to_string(), "private, max-age=60, stale-while-revalidate=30");
    /// ```
    pub fn stale_while_revalidate(mut self, window: Duration) -> CacheControl {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// `stale-if-error=<secs>`: for that long past expiry the client may use
    /// its copy when the server fails (RFC 5861).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use cache_runtime::http::CacheControl;
    ///
    /// let control = CacheControl::no_cache().stale_if_error(Duration::from_secs(600));
    /// assert_eq!(control.to_string(), "private, no-cache, stale-if-error=600");
    /// ```
    pub fn stale_if_error(mut self, window: Duration) -> CacheControl {
        self.stale_if_error = Some(window);
        self
    }

    /// Both stale directives with one window: pass the `stale = N` of the
    /// `#[cached]` function behind the response, so the client may use an
    /// old copy exactly as long as the server itself would serve one.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use cache_runtime::http::CacheControl;
    ///
    /// let control = CacheControl::no_cache().stale(Duration::from_secs(300));
    /// assert_eq!(
    ///     control.to_string(),
    ///     "private, no-cache, stale-while-revalidate=300, stale-if-error=300"
    /// );
    /// ```
    pub fn stale(self, window: Duration) -> CacheControl {
        self.stale_while_revalidate(window).stale_if_error(window)
    }

    /// The header value.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::CacheControl;
    ///
    /// assert_eq!(CacheControl::no_store().to_header_value(), "no-store");
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.to_string())
            .expect("ASCII letters, digits and punctuation are valid header value bytes")
    }
}

impl std::fmt::Display for CacheControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let visibility = if self.public { "public" } else { "private" };
        match self.freshness {
            Freshness::NoStore => return f.write_str("no-store"),
            Freshness::NoCache => write!(f, "{visibility}, no-cache")?,
            Freshness::MaxAge(age) => write!(f, "{visibility}, max-age={}", age.as_secs())?,
        }
        if self.must_revalidate {
            f.write_str(", must-revalidate")?;
        }
        if let Some(window) = self.stale_while_revalidate {
            write!(f, ", stale-while-revalidate={}", window.as_secs())?;
        }
        if let Some(window) = self.stale_if_error {
            write!(f, ", stale-if-error={}", window.as_secs())?;
        }
        Ok(())
    }
}

/// A JSON response with a strong [`ETag`] over the bytes sent and a
/// [`CacheControl`], answered with `304 Not Modified` when the client
/// already has those bytes.
///
/// - [`CachedJson::new`]`(value)` alone is a `200 OK`:
///   `Content-Type: application/json`, the body (serde_json), `ETag` and
///   `Cache-Control: private, no-cache` (see [`CacheControl`] for the
///   other choices: [`cache_control`](CachedJson::cache_control),
///   [`max_age`](CachedJson::max_age)).
/// - [`last_modified`](CachedJson::last_modified) adds `Last-Modified`.
/// - [`.for_request(&if_none_match)`](CachedJson::for_request) makes it a
///   `304 Not Modified` with the same `ETag` and `Cache-Control` and an
///   empty body when the request's [`IfNoneMatch`] matches the tag (or is
///   `*`) on a `GET` or `HEAD`.
///
/// The tag is [`ETag::of_json`] of the value: the body is serialised once,
/// hashed, and sent unless the answer is a 304. A value serde_json cannot
/// serialise gives a `500 Internal Server Error` with a short plain-text
/// body, and an error in the log; never a panic.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// use axum::http::{HeaderMap, Method, StatusCode, header};
/// use axum::response::IntoResponse;
/// use cache_runtime::http::{CachedJson, ETag, IfNoneMatch};
///
/// let value = vec!["Ada", "Grace"];
/// let fresh = CachedJson::new(value.clone()).into_response();
/// assert_eq!(fresh.status(), StatusCode::OK);
/// assert_eq!(fresh.headers()[header::CONTENT_TYPE], "application/json");
/// assert_eq!(fresh.headers()[header::CACHE_CONTROL], "private, no-cache");
/// assert_eq!(fresh.headers()[header::ETAG], ETag::of_bytes(br#"["Ada","Grace"]"#).to_string());
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_NONE_MATCH, fresh.headers()[header::ETAG].clone());
/// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
/// let revalidated = CachedJson::new(value)
///     .max_age(Duration::from_secs(60))
///     .for_request(&if_none_match)
///     .into_response();
/// assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
/// assert_eq!(revalidated.headers()[header::CACHE_CONTROL], "private, max-age=60");
/// ```
#[derive(Clone, Debug)]
pub struct CachedJson<T> {
    value: T,
    cache_control: CacheControl,
    last_modified: Option<SystemTime>,
    if_none_match: Option<IfNoneMatch>,
}

impl<T> CachedJson<T> {
    /// Serves `value` as JSON, `private, no-cache` (revalidated before each
    /// use).
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::header;
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::CachedJson;
    ///
    /// let response = CachedJson::new(42).into_response();
    /// assert_eq!(response.headers()[header::CACHE_CONTROL], "private, no-cache");
    /// ```
    pub fn new(value: T) -> Self {
        CachedJson {
            value,
            cache_control: CacheControl::default(),
            last_modified: None,
            if_none_match: None,
        }
    }

    /// Sends `cache_control` instead of the default `private, no-cache`.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::header;
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::{CacheControl, CachedJson};
    ///
    /// let response = CachedJson::new(42).cache_control(CacheControl::no_store()).into_response();
    /// assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    /// ```
    pub fn cache_control(mut self, cache_control: CacheControl) -> Self {
        self.cache_control = cache_control;
        self
    }

    /// Shorthand for [`CacheControl::max_age`]: `private, max-age=<secs>`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use axum::http::header;
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::CachedJson;
    ///
    /// let response = CachedJson::new(42).max_age(Duration::from_secs(5)).into_response();
    /// assert_eq!(response.headers()[header::CACHE_CONTROL], "private, max-age=5");
    /// ```
    pub fn max_age(self, max_age: Duration) -> Self {
        self.cache_control(CacheControl::max_age(max_age))
    }

    /// Sends `Last-Modified` (second precision, as HTTP dates have).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// use axum::http::header;
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::CachedJson;
    ///
    /// let modified = UNIX_EPOCH + Duration::from_secs(784_111_777);
    /// let response = CachedJson::new(42).last_modified(modified).into_response();
    /// assert_eq!(response.headers()[header::LAST_MODIFIED], "Sun, 06 Nov 1994 08:49:37 GMT");
    /// ```
    pub fn last_modified(mut self, modified: SystemTime) -> Self {
        self.last_modified = Some(modified);
        self
    }

    /// Answers `304 Not Modified` instead of the body when `if_none_match`
    /// matches the response's [`ETag`] (or is `*`) and the request is a
    /// `GET` or `HEAD`; otherwise the response stays a `200`.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, Method, StatusCode, header};
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::{CachedJson, IfNoneMatch};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_NONE_MATCH, r#""an old tag""#.parse().unwrap());
    /// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
    ///
    /// let response = CachedJson::new("new value").for_request(&if_none_match).into_response();
    /// assert_eq!(response.status(), StatusCode::OK);
    /// ```
    pub fn for_request(mut self, if_none_match: &IfNoneMatch) -> Self {
        self.if_none_match = if_none_match.applies().then(|| if_none_match.clone());
        self
    }
}

impl<T: Serialize> IntoResponse for CachedJson<T> {
    fn into_response(self) -> Response {
        let body = match serde_json::to_vec(&self.value) {
            Ok(body) => body,
            Err(error) => {
                static LOG: LazyLock<Throttle> = LazyLock::new(Throttle::default);
                if let Some(suppressed) = LOG.admit() {
                    tracing::error!(
                        value_type = std::any::type_name::<T>(),
                        %error,
                        suppressed,
                        "CachedJson: the value does not serialise to JSON"
                    );
                }
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed to serialise the response body",
                )
                    .into_response();
            }
        };
        let etag = ETag::of_bytes(&body);
        let not_modified = self
            .if_none_match
            .as_ref()
            .is_some_and(|condition| condition.not_modified(Some(&etag)));
        let mut response = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = body.into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON));
            response
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, etag.to_header_value());
        headers.insert(CACHE_CONTROL, self.cache_control.to_header_value());
        if let Some(modified) = self.last_modified
            && let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(modified))
        {
            headers.insert(LAST_MODIFIED, date);
        }
        response
    }
}
