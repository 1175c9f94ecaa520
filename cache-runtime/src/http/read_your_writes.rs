//! Read-your-writes for HTTP clients across instances: the
//! [`read_your_writes`] middleware hands out and honours
//! [`ConsistencyToken`]s.

use axum::extract::{Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::{Cache, ConsistencyToken};

/// The header a client sends its token in, and that write responses carry.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("consistency-token");

/// The cookie that carries the token for browsers.
pub const TOKEN_COOKIE: &str = "cache_token";

/// How long the cookie lives. Past a few pub/sub deliveries a token is
/// caught up with everywhere and costs a map lookup per request; the
/// cookie outlives that by far so that a client whose instance was cut off
/// from Redis still gets its writes back. A token naming an instance that
/// has stopped since can never be caught up with: its reads go to Redis
/// (never wrong, slower) until the cookie expires or the client writes
/// again through a live instance, hence not longer.
const COOKIE_MAX_AGE_SECS: u64 = 600;

/// Axum middleware: read-your-writes across instances, for every route it
/// wraps.
///
/// - On every request, the token the client presents (the
///   [`TOKEN_HEADER`] header and the [`TOKEN_COOKIE`] cookie, merged; a
///   malformed one is ignored) applies to the handler
///   ([`ConsistencyToken::scope`]): its `#[cached]` reads serve from L1
///   only when this instance has applied the writes the token names, and
///   otherwise read Redis or load. Without a token nothing changes.
/// - A successful (2xx) response to a request that is not `GET`, `HEAD`,
///   `OPTIONS` or `TRACE` carries the token merged with
///   [`Cache::consistency_token`] (taken when the handler returned, so it
///   names the handler's writes): in the header, and in the cookie
///   (`Path=/; HttpOnly; SameSite=Lax`, ten minutes).
///
/// A client that sends back what it got never receives, on any instance,
/// a value older than its own writes, however its requests are balanced.
/// A browser does this by itself with the cookie. Responses it may keep
/// without asking (`max-age`) are outside this: see
/// [`CacheControl`](super::CacheControl).
///
/// # Example
///
/// ```
/// use axum::body::Body;
/// use axum::http::{Request, StatusCode};
/// use axum::routing::{get, put};
/// use axum::{Router, middleware};
/// use cache_runtime::http::{TOKEN_HEADER, read_your_writes};
/// use cache_runtime::{Cache, invalidates};
/// use tower::ServiceExt; // oneshot
///
/// #[invalidates(key = "user:<id>", cache = Cache::global())]
/// async fn rename(id: u64) {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().build().await.unwrap();
/// Cache::set_global(cache.clone());
/// let app = Router::new()
///     .route("/users/7", put(|| rename(7)).get(|| async { "user 7" }))
///     .layer(middleware::from_fn_with_state(cache, read_your_writes));
///
/// let write = Request::put("/users/7").body(Body::empty()).unwrap();
/// let response = app.clone().oneshot(write).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// let token = response.headers()[TOKEN_HEADER].clone();
///
/// // The client's next read presents it (a browser sends the cookie).
/// let read = Request::get("/users/7").header(TOKEN_HEADER, token).body(Body::empty()).unwrap();
/// assert_eq!(app.oneshot(read).await.unwrap().status(), StatusCode::OK);
/// # }
/// ```
pub async fn read_your_writes(
    State(cache): State<Cache>,
    request: Request,
    next: Next,
) -> Response {
    let presented = presented_token(request.headers());
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let mut response = presented.clone().scope(next.run(request)).await;
    if writes && response.status().is_success() {
        let mut token = presented;
        token.merge(&cache.consistency_token());
        let text = token.to_string();
        let headers = response.headers_mut();
        // The token's text is hex digits, `-`, `.` and decimal digits.
        if let Ok(value) = HeaderValue::try_from(&text) {
            headers.insert(TOKEN_HEADER, value);
        }
        let cookie = format!(
            "{TOKEN_COOKIE}={text}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax"
        );
        if let Ok(value) = HeaderValue::try_from(cookie) {
            headers.append(SET_COOKIE, value);
        }
    }
    response
}

/// The token a request presents: its header and cookie, merged; anything
/// malformed is left out.
fn presented_token(headers: &HeaderMap) -> ConsistencyToken {
    let mut token = ConsistencyToken::default();
    let mut add = |text: &str| {
        if let Ok(presented) = text.trim().parse::<ConsistencyToken>() {
            token.merge(&presented);
        }
    };
    for value in headers.get_all(TOKEN_HEADER) {
        if let Ok(text) = value.to_str() {
            add(text);
        }
    }
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == TOKEN_COOKIE
            {
                add(value);
            }
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_is_read_from_the_header_and_the_cookie_and_garbage_is_ignored() {
        let cache = Cache::builder().build().await.unwrap();
        cache.invalidate("a").await.unwrap();
        let token = cache.consistency_token().to_string();
        let mut headers = HeaderMap::new();
        assert!(presented_token(&headers).is_empty());
        headers.insert(TOKEN_HEADER, HeaderValue::from_str(&token).unwrap());
        assert_eq!(presented_token(&headers).to_string(), token);
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {TOKEN_COOKIE}={token}; x=y")).unwrap(),
        );
        assert_eq!(presented_token(&headers).to_string(), token);
        headers.insert(TOKEN_HEADER, HeaderValue::from_static("garbage"));
        headers.append(COOKIE, HeaderValue::from_static("cache_token=also-garbage"));
        assert_eq!(presented_token(&headers).to_string(), token);
    }
}
