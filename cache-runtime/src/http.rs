//! HTTP caching for axum 0.8 handlers: a content-derived [`ETag`], the
//! [`IfNoneMatch`] extractor and the [`CachedJson`] responder, which answers
//! `304 Not Modified` without serialising the body when the client already
//! has the value, and otherwise `200` with the JSON, the `ETag` and
//! `Cache-Control: private, max-age=<secs>`.
//!
//! Enabled by the `axum` feature:
//! `cache-runtime = { version = "0.1", features = ["axum"] }`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::body::Body;
//! use axum::extract::{Path, State};
//! use axum::http::{Request, StatusCode, header};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::get;
//! use axum::Router;
//! use cache_runtime::http::{CachedJson, IfNoneMatch};
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
//!     Ok(CachedJson::new(user, Duration::from_secs(300)).for_request(&if_none_match))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = Cache::builder().build().await.unwrap();
//! let app = Router::new()
//!     .route("/users/{id}", get(get_user))
//!     .with_state(AppState { cache });
//!
//! // First visit: the JSON, its ETag, and how long the browser may keep it.
//! let request = Request::get("/users/42").body(Body::empty()).unwrap();
//! let response = app.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()[header::CACHE_CONTROL], "private, max-age=300");
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
//! # Why `private`
//!
//! These responses usually carry one user's data, so only the user's own
//! client may keep them: `private` forbids shared caches (proxies, CDNs) from
//! storing them. There is deliberately no way to make them `public`.
//!
//! # Why a content-derived ETag
//!
//! The ETag is a hash of the value, not a counter or a random token kept by
//! one process, so every instance behind a load balancer computes the same
//! ETag for the same value and a client's revalidation gets its 304 whichever
//! instance answers it. See [`ETag`] for what "the same value" means.

use std::convert::Infallible;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;

use crate::logging::Throttle;

/// Bytes of the SHA-1 digest kept in an ETag (128 bits).
const ETAG_BYTES: usize = 16;
/// `"` + 32 hex digits + `"`.
const QUOTED_LEN: usize = 2 + 2 * ETAG_BYTES;
const APPLICATION_JSON: &str = "application/json";

/// A strong entity tag derived from a value's content.
///
/// [`ETag::of`] streams the value's serde serialisation (bincode 2, standard
/// configuration: the encoding the cache stores in Redis) into SHA-1 and
/// keeps the first 128 bits, without building the encoded bytes or the JSON
/// body. It is displayed, and sent, as 32 lowercase hex digits in quotes.
///
/// # Stability
///
/// The tag depends only on the bytes of that encoding, so it is the same in
/// every process, on every platform and with every Rust version, for as long
/// as the type serialises the same way. Two things follow:
///
/// - A `HashMap` or `HashSet` serialises in its iteration order, which
///   differs from process to process: values that contain one get a
///   different tag on each instance (the JSON body differs too). Use a
///   `BTreeMap` / `BTreeSet` (or an order-preserving map) in values that
///   are served with an ETag.
/// - The encoding holds field values, not field names: a change that only
///   renames JSON fields (`#[serde(rename)]`) keeps the tag, so clients may
///   keep an old-shaped body until `max-age` and the next changed value.
///   Version such changes in the URL or the value.
///
/// # Example
///
/// ```
/// use cache_runtime::http::ETag;
///
/// #[derive(serde::Serialize)]
/// struct User { id: i64, name: String }
///
/// let ada = ETag::of(&User { id: 42, name: "Ada".into() }).unwrap();
/// assert_eq!(ada, ETag::of(&User { id: 42, name: "Ada".into() }).unwrap());
/// assert_ne!(ada, ETag::of(&User { id: 42, name: "Grace".into() }).unwrap());
///
/// let text = ada.to_string();
/// assert_eq!(text.len(), 34);
/// assert!(text.starts_with('"') && text.ends_with('"'));
/// assert_eq!(ada.to_header_value(), text.as_str());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ETag {
    digest: [u8; ETAG_BYTES],
}

impl ETag {
    /// The tag of `value`: SHA-1 of its bincode 2 serde encoding (standard
    /// configuration), truncated to 128 bits.
    ///
    /// # Errors
    ///
    /// [`ETagError`] when bincode cannot encode the value: a `Serialize`
    /// impl that fails, a sequence or map of unknown length (as
    /// `#[serde(flatten)]` produces) or `collect_str`. Such values cannot be
    /// stored by `#[cached]` either.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::ETag;
    ///
    /// let tag = ETag::of(&(42_u64, "Ada")).unwrap();
    /// assert_eq!(tag.to_string(), r#""ba2c382281fdef89e33170268214614c""#);
    /// ```
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<ETag, ETagError> {
        let mut hasher = Sha1Writer(sha1_smol::Sha1::new());
        bincode::serde::encode_into_writer(value, &mut hasher, bincode::config::standard())
            .map_err(ETagError)?;
        let full = hasher.0.digest().bytes();
        let mut digest = [0; ETAG_BYTES];
        digest.copy_from_slice(&full[..ETAG_BYTES]);
        Ok(ETag { digest })
    }

    /// The tag as an `ETag` header value (`"<hex>"`, quotes included).
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, header};
    /// use cache_runtime::http::ETag;
    ///
    /// let tag = ETag::of("hello").unwrap();
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::ETAG, tag.to_header_value());
    /// assert_eq!(headers[header::ETAG], tag.to_string());
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.quoted())
            .expect("quotes and lowercase hex digits are valid header value bytes")
    }

    /// The opaque tag: 32 lowercase hex digits, without the quotes.
    fn hex(&self) -> [u8; 2 * ETAG_BYTES] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 2 * ETAG_BYTES];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.digest) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }

    fn quoted(&self) -> [u8; QUOTED_LEN] {
        let mut out = [b'"'; QUOTED_LEN];
        out[1..QUOTED_LEN - 1].copy_from_slice(&self.hex());
        out
    }
}

impl fmt::Display for ETag {
    /// `"<32 hex digits>"`, quotes included, as sent in the header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are ASCII by construction.
        f.write_str(std::str::from_utf8(&self.quoted()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({self})")
    }
}

impl From<ETag> for HeaderValue {
    fn from(tag: ETag) -> HeaderValue {
        tag.to_header_value()
    }
}

impl From<&ETag> for HeaderValue {
    fn from(tag: &ETag) -> HeaderValue {
        tag.to_header_value()
    }
}

/// Feeds bincode's output straight into the hash: no buffer.
struct Sha1Writer(sha1_smol::Sha1);

impl Writer for Sha1Writer {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0.update(bytes);
        Ok(())
    }
}

/// Why [`ETag::of`] could not hash a value: bincode could not encode it.
///
/// # Example
///
/// ```
/// use cache_runtime::http::ETag;
///
/// struct Broken;
///
/// impl serde::Serialize for Broken {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(serde::ser::Error::custom("not today"))
///     }
/// }
///
/// let error = ETag::of(&Broken).unwrap_err();
/// assert!(error.to_string().contains("not today"));
/// ```
#[derive(Debug)]
pub struct ETagError(EncodeError);

impl fmt::Display for ETagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot compute an ETag: bincode cannot encode the value ({}); \
             avoid #[serde(flatten)], unknown-length sequences and collect_str in it",
            self.0
        )
    }
}

impl std::error::Error for ETagError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The request's `If-None-Match` header, as an axum extractor.
///
/// It never rejects a request (its rejection is [`Infallible`]): a missing
/// header, and a malformed one (anything that is not `*` or a
/// comma-separated list of entity tags, RFC 9110 §13.1.2), both read as
/// absent, which means "send the full response". Several `If-None-Match`
/// lines make one list.
///
/// Comparison is weak, as RFC 9110 requires for `If-None-Match`: `W/"x"`
/// matches `"x"`. `*` matches any value.
///
/// # Methods
///
/// A `304 Not Modified` answers only `GET` and `HEAD` requests:
/// [`CachedJson::for_request`] ignores the header on any other method. A
/// handler of another method that honours the precondition checks
/// [`IfNoneMatch::matches`] itself before changing anything, and answers
/// `412 Precondition Failed` when it matches.
///
/// # Example
///
/// ```
/// use axum::http::{HeaderMap, Method, header};
/// use cache_runtime::http::{ETag, IfNoneMatch};
///
/// let tag = ETag::of(&42_u64).unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_NONE_MATCH, format!(r#""other", W/{tag}"#).parse().unwrap());
///
/// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
/// assert!(if_none_match.matches(&tag));
/// assert!(!if_none_match.matches(&ETag::of(&43_u64).unwrap()));
/// ```
///
/// As an extractor, in any handler (with any state):
///
/// ```
/// use axum::{Router, routing::get};
/// use cache_runtime::http::IfNoneMatch;
///
/// async fn handler(if_none_match: IfNoneMatch) -> &'static str {
///     if if_none_match.is_absent() { "first visit" } else { "revalidation" }
/// }
///
/// let app: Router = Router::new().route("/", get(handler));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfNoneMatch {
    condition: Condition,
    /// `GET` or `HEAD`: the methods a 304 may answer.
    safe_method: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Condition {
    /// No header, an empty list, or a malformed header.
    #[default]
    Absent,
    /// `*`.
    Any,
    /// A list of entity tags: the header lines, checked well-formed and
    /// scanned again on comparison (no allocation per tag).
    Tags(Vec<HeaderValue>),
}

impl IfNoneMatch {
    /// Reads the `If-None-Match` lines of `headers` for a request made with
    /// `method`. This is what the extractor does; use it outside axum
    /// handlers.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, Method, header};
    /// use cache_runtime::http::IfNoneMatch;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_NONE_MATCH, "not an entity tag".parse().unwrap());
    /// assert!(IfNoneMatch::from_headers(&Method::GET, &headers).is_absent());
    /// ```
    pub fn from_headers(method: &Method, headers: &HeaderMap) -> IfNoneMatch {
        IfNoneMatch {
            condition: parse_condition(headers),
            safe_method: method == Method::GET || method == Method::HEAD,
        }
    }

    /// No usable `If-None-Match` header: missing, empty or malformed.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, Method};
    /// use cache_runtime::http::IfNoneMatch;
    ///
    /// assert!(IfNoneMatch::from_headers(&Method::GET, &HeaderMap::new()).is_absent());
    /// assert!(IfNoneMatch::default().is_absent());
    /// ```
    pub fn is_absent(&self) -> bool {
        self.condition == Condition::Absent
    }

    /// Whether the header matches a representation tagged `etag`: it is
    /// `*`, or it lists `etag` in strong or weak (`W/`) form.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, Method, header};
    /// use cache_runtime::http::{ETag, IfNoneMatch};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
    /// let any = IfNoneMatch::from_headers(&Method::GET, &headers);
    /// assert!(any.matches(&ETag::of("anything").unwrap()));
    /// ```
    pub fn matches(&self, etag: &ETag) -> bool {
        match &self.condition {
            Condition::Absent => false,
            Condition::Any => true,
            Condition::Tags(lines) => {
                let hex = etag.hex();
                let mut found = false;
                for line in lines {
                    // Checked by `parse_condition`: every line parses.
                    let _ = parse_list(line.as_bytes(), &mut |opaque| found |= opaque == hex);
                }
                found
            }
        }
    }

    /// Whether a response with `etag` (`None`: the value has none) should
    /// be a 304.
    fn not_modified(&self, etag: Option<&ETag>) -> bool {
        self.safe_method
            && match (&self.condition, etag) {
                (Condition::Any, _) => true,
                (_, Some(etag)) => self.matches(etag),
                (_, None) => false,
            }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch::from_headers(&parts.method, &parts.headers))
    }
}

/// Parses every `If-None-Match` line; anything malformed makes it absent.
fn parse_condition(headers: &HeaderMap) -> Condition {
    let mut tags = 0_usize;
    let mut any = false;
    let mut lines = Vec::new();
    for line in headers.get_all(IF_NONE_MATCH) {
        match parse_list(line.as_bytes(), &mut |_| tags += 1) {
            Some(star) => any |= star,
            None => return Condition::Absent,
        }
        lines.push(line.clone());
    }
    match (any, tags) {
        (true, 0) => Condition::Any,
        // `*` is the whole field value, never a list member.
        (true, _) => Condition::Absent,
        (false, 0) => Condition::Absent,
        (false, _) => Condition::Tags(lines),
    }
}

/// `If-None-Match = "*" / #entity-tag` (RFC 9110 §13.1.2, list syntax of
/// §5.6.1: empty elements and optional whitespace around commas accepted).
/// Calls `tag` with each entity tag's opaque part (between the quotes,
/// without `W/`: the comparison is weak). `Some(true)` when the line holds
/// `*`, `None` when it is malformed.
fn parse_list(bytes: &[u8], tag: &mut dyn FnMut(&[u8])) -> Option<bool> {
    let is_ows = |b: u8| b == b' ' || b == b'\t';
    let mut any = false;
    let mut i = 0;
    loop {
        // Whitespace and empty list elements.
        while i < bytes.len() && (is_ows(bytes[i]) || bytes[i] == b',') {
            i += 1;
        }
        if i == bytes.len() {
            return Some(any);
        }
        if bytes[i] == b'*' {
            any = true;
            i += 1;
        } else {
            // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; "W/" is case-sensitive.
            if bytes[i..].starts_with(b"W/") {
                i += 2;
            }
            if bytes.get(i) != Some(&b'"') {
                return None;
            }
            let start = i + 1;
            let len = bytes[start..].iter().position(|&b| b == b'"')?;
            let opaque = &bytes[start..start + len];
            // etagc = %x21 / %x23-7E / obs-text
            if !opaque
                .iter()
                .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return None;
            }
            tag(opaque);
            i = start + len + 1;
        }
        // After an element: whitespace, then a comma or the end.
        while i < bytes.len() && is_ows(bytes[i]) {
            i += 1;
        }
        if i < bytes.len() && bytes[i] != b',' {
            return None;
        }
    }
}

/// A JSON response with an [`ETag`] and `Cache-Control: private,
/// max-age=<secs>`, answered with `304 Not Modified` when the client
/// already has the value.
///
/// - [`CachedJson::new`]`(value, max_age)` alone is always a `200 OK`:
///   `Content-Type: application/json`, the body (serde_json), `ETag` and
///   `Cache-Control: private, max-age=<whole seconds of max_age>`.
/// - [`.for_request(&if_none_match)`](CachedJson::for_request) makes it a
///   `304 Not Modified` with the same `ETag` and `Cache-Control` and an
///   empty body when the request's [`IfNoneMatch`] matches the value's tag
///   (or is `*`) on a `GET` or `HEAD`. The JSON body is then never
///   serialised.
///
/// The tag is computed once per response. A value [`ETag::of`] cannot hash
/// is still served, as a `200` without `ETag` (a warning is logged). A value
/// serde_json cannot serialise gives a `500 Internal Server Error` with a
/// short plain-text body, and an error in the log; never a panic.
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
/// let fresh = CachedJson::new(value.clone(), Duration::from_secs(60)).into_response();
/// assert_eq!(fresh.status(), StatusCode::OK);
/// assert_eq!(fresh.headers()[header::CONTENT_TYPE], "application/json");
/// assert_eq!(fresh.headers()[header::CACHE_CONTROL], "private, max-age=60");
/// assert_eq!(fresh.headers()[header::ETAG], ETag::of(&value).unwrap().to_string());
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_NONE_MATCH, fresh.headers()[header::ETAG].clone());
/// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
/// let revalidated = CachedJson::new(value, Duration::from_secs(60))
///     .for_request(&if_none_match)
///     .into_response();
/// assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
/// ```
#[derive(Clone, Debug)]
pub struct CachedJson<T> {
    value: T,
    max_age: Duration,
    etag: TagState,
    not_modified: bool,
}

#[derive(Clone, Copy, Debug)]
enum TagState {
    NotComputed,
    Computed(Option<ETag>),
}

impl<T> CachedJson<T> {
    /// Serves `value` as JSON that the client may keep for `max_age`
    /// (whole seconds; the fraction is dropped).
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
    /// let response = CachedJson::new(42, Duration::from_millis(90_500)).into_response();
    /// assert_eq!(response.headers()[header::CACHE_CONTROL], "private, max-age=90");
    /// ```
    pub fn new(value: T, max_age: Duration) -> Self {
        CachedJson {
            value,
            max_age,
            etag: TagState::NotComputed,
            not_modified: false,
        }
    }
}

impl<T: Serialize> CachedJson<T> {
    /// Answers `304 Not Modified` instead of the body when `if_none_match`
    /// matches the value's [`ETag`] (or is `*`) and the request is a `GET`
    /// or `HEAD`; otherwise the response stays a `200`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use axum::http::{HeaderMap, Method, StatusCode, header};
    /// use axum::response::IntoResponse;
    /// use cache_runtime::http::{CachedJson, IfNoneMatch};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_NONE_MATCH, r#""an old tag""#.parse().unwrap());
    /// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
    ///
    /// let response = CachedJson::new("new value", Duration::from_secs(5))
    ///     .for_request(&if_none_match)
    ///     .into_response();
    /// assert_eq!(response.status(), StatusCode::OK);
    /// ```
    pub fn for_request(mut self, if_none_match: &IfNoneMatch) -> Self {
        if !if_none_match.is_absent() && if_none_match.safe_method {
            let etag = self.etag();
            self.not_modified = if_none_match.not_modified(etag.as_ref());
        }
        self
    }

    /// The value's tag, computed on first use.
    fn etag(&mut self) -> Option<ETag> {
        if let TagState::Computed(etag) = self.etag {
            return etag;
        }
        let etag = match ETag::of(&self.value) {
            Ok(etag) => Some(etag),
            Err(error) => {
                static LOG: LazyLock<Throttle> = LazyLock::new(Throttle::default);
                if let Some(suppressed) = LOG.admit() {
                    tracing::warn!(
                        value_type = std::any::type_name::<T>(),
                        %error,
                        suppressed,
                        "CachedJson: no ETag for this value; serving it without one"
                    );
                }
                None
            }
        };
        self.etag = TagState::Computed(etag);
        etag
    }
}

impl<T: Serialize> IntoResponse for CachedJson<T> {
    fn into_response(mut self) -> Response {
        let etag = self.etag();
        let mut response = if self.not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            match serde_json::to_vec(&self.value) {
                Ok(body) => {
                    let mut response = body.into_response();
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON));
                    response
                }
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
            }
        };
        let headers = response.headers_mut();
        if let Some(etag) = etag {
            headers.insert(ETAG, etag.to_header_value());
        }
        headers.insert(CACHE_CONTROL, cache_control(self.max_age));
        response
    }
}

/// `private, max-age=<whole seconds>`.
fn cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::try_from(format!("private, max-age={}", max_age.as_secs()))
        .expect("ASCII letters, digits and punctuation are valid header value bytes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::Request;
    use axum::routing::{any, get};
    use serde::Serializer;
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
            CachedJson::new(value, Duration::from_secs(300)).for_request(&if_none_match)
        }

        async fn plain<T: Serialize + Clone>(
            State(AppState(value)): State<AppState<T>>,
            _if_none_match: IfNoneMatch,
        ) -> CachedJson<T> {
            CachedJson::new(value, Duration::from_secs(300))
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

    fn etag_of<T: Serialize>(value: &T) -> String {
        ETag::of(value).unwrap().to_string()
    }

    #[tokio::test]
    async fn fresh_request_gets_200_with_json_etag_and_private_cache_control() {
        let (status, headers, body) = get_with(app(ada()), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers[CACHE_CONTROL], "private, max-age=300");
        assert_eq!(headers[ETAG], etag_of(&ada()));
        assert_eq!(&body[..], br#"{"id":42,"name":"Ada"}"#);
    }

    #[test]
    fn etag_is_quoted_128_bit_hex_of_sha1_over_the_bincode_encoding() {
        // Fixed expectations computed outside Rust (`printf '\x2a\x03Ada' |
        // sha1sum`): the tag must not change between processes, platforms,
        // Rust versions or releases of this crate.
        assert_eq!(
            etag_of(&(42_u64, "Ada")),
            r#""ba2c382281fdef89e33170268214614c""#
        );
        // `()` encodes to no bytes: SHA-1 of the empty input.
        assert_eq!(etag_of(&()), r#""da39a3ee5e6b4b0d3255bfef95601890""#);
        let tag = ETag::of(&ada()).unwrap();
        assert_eq!(tag.to_header_value(), tag.to_string().as_str());
        assert_eq!(HeaderValue::from(&tag), HeaderValue::from(tag));
        assert_eq!(format!("{tag:?}"), format!("ETag({tag})"));
    }

    #[test]
    fn same_value_same_etag_different_value_different_etag() {
        assert_eq!(ETag::of(&ada()).unwrap(), ETag::of(&ada()).unwrap());
        let grace = User {
            name: "Grace".into(),
            ..ada()
        };
        assert_ne!(ETag::of(&ada()).unwrap(), ETag::of(&grace).unwrap());
        let other_id = User { id: 43, ..ada() };
        assert_ne!(ETag::of(&ada()).unwrap(), ETag::of(&other_id).unwrap());
    }

    #[tokio::test]
    async fn matching_if_none_match_gets_304_with_headers_and_empty_body() {
        let tag = etag_of(&ada());
        let (status, headers, body) = get_with(app(ada()), &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(headers[ETAG], tag);
        assert_eq!(headers[CACHE_CONTROL], "private, max-age=300");
        assert!(headers.get(CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn weak_form_of_the_etag_matches() {
        let weak = format!("W/{}", etag_of(&ada()));
        let (status, headers, _) = get_with(app(ada()), &[weak.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[ETAG], etag_of(&ada()));
    }

    #[tokio::test]
    async fn list_holding_the_etag_matches_in_one_line_or_several() {
        let tag = etag_of(&ada());
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
        assert_eq!(headers[ETAG], etag_of(&ada()));
    }

    #[tokio::test]
    async fn non_matching_or_malformed_if_none_match_gets_200() {
        let tag = etag_of(&ada());
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
        ];
        for case in cases {
            let (status, headers, body) = get_with(app(ada()), &[&case]).await;
            let shown = String::from_utf8_lossy(&case);
            assert_eq!(status, StatusCode::OK, "If-None-Match: {shown}");
            assert_eq!(headers[ETAG], tag, "If-None-Match: {shown}");
            assert_eq!(
                &body[..],
                br#"{"id":42,"name":"Ada"}"#,
                "If-None-Match: {shown}"
            );
        }
        // A malformed line spoils a matching one: no 304.
        let (status, _, _) = get_with(app(ada()), &[tag.as_bytes(), b"garbage"]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn parsing_keeps_opaque_tags_and_reads_malformed_as_absent() {
        let parse = |lines: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(IF_NONE_MATCH, HeaderValue::from_bytes(line).unwrap());
            }
            match IfNoneMatch::from_headers(&Method::GET, &headers).condition {
                Condition::Tags(lines) => {
                    let mut tags = Vec::new();
                    for line in lines {
                        parse_list(line.as_bytes(), &mut |t| tags.push(t.to_vec())).unwrap();
                    }
                    Parsed::Tags(tags)
                }
                Condition::Any => Parsed::Any,
                Condition::Absent => Parsed::Absent,
            }
        };
        #[derive(Debug, PartialEq)]
        enum Parsed {
            Absent,
            Any,
            Tags(Vec<Vec<u8>>),
        }
        let tags = |list: &[&[u8]]| Parsed::Tags(list.iter().map(|t| t.to_vec()).collect());
        assert_eq!(parse(&[]), Parsed::Absent);
        assert_eq!(parse(&[b"*"]), Parsed::Any);
        assert_eq!(parse(&[b" * "]), Parsed::Any);
        assert_eq!(parse(&[br#""""#]), tags(&[b""]));
        assert_eq!(parse(&[br#"W/"a", "b""#]), tags(&[b"a", b"b"]));
        assert_eq!(parse(&[br#""a""#, br#"W/"b""#]), tags(&[b"a", b"b"]));
        assert_eq!(parse(&[b"\"!#~\x80\""]), tags(&[b"!#~\x80"]));
        assert_eq!(parse(&[br#""a""#, b"*"]), Parsed::Absent);
        assert_eq!(parse(&[br#"W/ "a""#]), Parsed::Absent);
        assert_eq!(parse(&[b"W/"]), Parsed::Absent);
        assert_eq!(parse(&[b"\""]), Parsed::Absent);
        assert_eq!(parse(&[br#""a"b""#]), Parsed::Absent);
    }

    #[tokio::test]
    async fn without_for_request_it_is_always_200() {
        let tag = etag_of(&ada());
        for header in [tag.as_bytes(), b"*"] {
            let (status, headers, body) = call(app(ada()), Method::GET, "/plain", &[header]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[ETAG], tag);
            assert_eq!(headers[CACHE_CONTROL], "private, max-age=300");
            assert_eq!(&body[..], br#"{"id":42,"name":"Ada"}"#);
        }
    }

    #[tokio::test]
    async fn only_get_and_head_get_a_304() {
        let tag = etag_of(&ada());
        let (status, _, body) = call(app(ada()), Method::HEAD, "/", &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let (status, _, body) = call(app(ada()), method.clone(), "/", &[tag.as_bytes()]).await;
            assert_eq!(status, StatusCode::OK, "{method}");
            assert_eq!(&body[..], br#"{"id":42,"name":"Ada"}"#);
        }
        // The handler of a write can still evaluate the precondition itself.
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
        let put = IfNoneMatch::from_headers(&Method::PUT, &headers);
        assert!(put.matches(&ETag::of(&ada()).unwrap()));
    }

    #[test]
    fn max_age_is_whole_seconds_and_never_public() {
        for (max_age, expected) in [
            (Duration::from_millis(999), "private, max-age=0"),
            (Duration::from_millis(1500), "private, max-age=1"),
            (Duration::from_secs(86_400), "private, max-age=86400"),
        ] {
            let response = CachedJson::new(ada(), max_age).into_response();
            assert_eq!(response.headers()[CACHE_CONTROL], expected);
        }
    }

    /// Serialises as a number for the hasher (bincode is not human
    /// readable) and fails for serde_json: a response that serialises the
    /// body cannot succeed with it.
    #[derive(Clone)]
    struct NoJson(u32);

    impl Serialize for NoJson {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if serializer.is_human_readable() {
                Err(serde::ser::Error::custom("no JSON for this type"))
            } else {
                serializer.serialize_u32(self.0)
            }
        }
    }

    #[tokio::test]
    async fn not_modified_does_not_serialise_the_body() {
        // Without a matching header the body is serialised, and that fails:
        // a short plain-text 500 without caching headers.
        let (status, headers, body) = get_with(app(NoJson(7)), &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(&body[..], b"failed to serialise the response body");
        assert!(headers.get(ETAG).is_none() && headers.get(CACHE_CONTROL).is_none());

        // With one, the 304 comes back: serde_json never ran.
        let tag = etag_of(&NoJson(7));
        let (status, headers, body) = get_with(app(NoJson(7)), &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(headers[ETAG], tag);
    }

    /// Counts how often each serialiser visits it.
    #[derive(Clone, Default)]
    struct Counted {
        hashed: Arc<AtomicUsize>,
        json: Arc<AtomicUsize>,
    }

    impl Serialize for Counted {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let counter = if serializer.is_human_readable() {
                &self.json
            } else {
                &self.hashed
            };
            counter.fetch_add(1, Ordering::SeqCst);
            serializer.serialize_str("counted")
        }
    }

    #[tokio::test]
    async fn etag_is_computed_once_per_response() {
        let counts = |value: &Counted| {
            (
                value.hashed.load(Ordering::SeqCst),
                value.json.load(Ordering::SeqCst),
            )
        };
        let value = Counted::default();
        let tag = etag_of(&value);
        value.hashed.store(0, Ordering::SeqCst);

        // Plain 200: one hash, one JSON serialisation.
        get_with(app(value.clone()), &[]).await;
        assert_eq!(counts(&value), (1, 1));

        // A non-matching header: the tag computed in `for_request` is reused.
        get_with(app(value.clone()), &[br#""nope""#]).await;
        assert_eq!(counts(&value), (2, 2));

        // A match: one hash, no JSON.
        let (status, _, _) = get_with(app(value.clone()), &[tag.as_bytes()]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(counts(&value), (3, 2));
    }

    /// A map of unknown length: serde_json writes it, bincode refuses it.
    #[derive(Clone)]
    struct UnknownLength;

    impl Serialize for UnknownLength {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(None)?;
            map.serialize_entry("a", &1)?;
            map.end()
        }
    }

    #[tokio::test]
    async fn value_without_etag_is_served_without_one() {
        let error = ETag::of(&UnknownLength).unwrap_err();
        assert!(error.to_string().starts_with("cannot compute an ETag"));
        assert!(std::error::Error::source(&error).is_some());

        let (status, headers, body) = get_with(app(UnknownLength), &[br#""x""#]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(ETAG).is_none());
        assert_eq!(headers[CACHE_CONTROL], "private, max-age=300");
        assert_eq!(&body[..], br#"{"a":1}"#);

        // `*` still holds: the resource exists.
        let (status, headers, _) = get_with(app(UnknownLength), &[b"*"]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(headers.get(ETAG).is_none());
    }
}
