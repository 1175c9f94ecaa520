//! Conditional requests (RFC 9110 §13): `If-None-Match` for reads
//! ([`IfNoneMatch`], a 304), and the preconditions of writes
//! ([`Preconditions`], a 412).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, IF_UNMODIFIED_SINCE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ETag;

/// The request's `If-None-Match` header, as an axum extractor, for reads.
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
/// [`CachedJson::for_request`](super::CachedJson::for_request) ignores the
/// header on any other method. Writes evaluate it, with `If-Match` and
/// `If-Unmodified-Since`, through [`Preconditions`].
///
/// # Example
///
/// ```
/// use axum::http::{HeaderMap, Method, header};
/// use cache_runtime::http::{ETag, IfNoneMatch};
///
/// let tag = ETag::of_bytes(b"42");
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_NONE_MATCH, format!(r#""other", W/{tag}"#).parse().unwrap());
///
/// let if_none_match = IfNoneMatch::from_headers(&Method::GET, &headers);
/// assert!(if_none_match.matches(&tag));
/// assert!(!if_none_match.matches(&ETag::of_bytes(b"43")));
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

/// An `If-Match` or `If-None-Match` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Condition {
    /// No header, or an empty list.
    #[default]
    Absent,
    /// `*`.
    Any,
    /// A list of entity tags: the header lines, checked well-formed and
    /// scanned again on comparison (no allocation per tag).
    Tags(Vec<HeaderValue>),
    /// Not `*` and not a list of entity tags.
    Malformed,
}

impl Condition {
    /// Whether the list holds `etag`: by opaque tag alone (weak
    /// comparison), or only when both are strong (strong comparison).
    fn lists(&self, etag: &ETag, strong: bool) -> bool {
        let Condition::Tags(lines) = self else {
            return false;
        };
        if strong && etag.is_weak() {
            return false;
        }
        let hex = etag.hex();
        let mut found = false;
        for line in lines {
            // Checked by `parse_condition`: every line parses.
            let _ = parse_list(line.as_bytes(), &mut |opaque, weak| {
                found |= opaque == hex && !(strong && weak);
            });
        }
        found
    }
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
        let condition = match parse_condition(headers, &IF_NONE_MATCH) {
            Condition::Malformed => Condition::Absent,
            condition => condition,
        };
        IfNoneMatch {
            condition,
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
    /// assert!(any.matches(&ETag::of_bytes(b"anything")));
    /// ```
    pub fn matches(&self, etag: &ETag) -> bool {
        self.condition == Condition::Any || self.condition.lists(etag, false)
    }

    /// Whether a response with `etag` (`None`: the value has none) should
    /// be a 304.
    pub(super) fn not_modified(&self, etag: Option<&ETag>) -> bool {
        self.safe_method
            && match (&self.condition, etag) {
                (Condition::Any, _) => true,
                (_, Some(etag)) => self.matches(etag),
                (_, None) => false,
            }
    }

    /// Whether a 304 may answer the request at all.
    pub(super) fn applies(&self) -> bool {
        self.safe_method && !self.is_absent()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch::from_headers(&parts.method, &parts.headers))
    }
}

/// The preconditions of a request that changes a resource: `If-Match`,
/// `If-None-Match` and `If-Unmodified-Since` (RFC 9110 §13.1.1, §13.1.2,
/// §13.1.4), evaluated in the order of §13.2.2 against the resource's
/// current representation. A failed one is a `412 Precondition Failed`
/// ([`PreconditionFailed`]), and the handler must change nothing: this is
/// how clients prevent lost updates (send the `ETag` you read as
/// `If-Match`; another writer's change in between makes the write fail
/// instead of being overwritten).
///
/// Evaluate them against the **current** representation, read from the
/// source (the database), not a cached copy that may be older; and make
/// the write itself conditional on that representation still being there
/// (a compare-and-set such as `UPDATE … WHERE version = $read`), or a
/// write landing between the check and the write is still lost.
///
/// - `If-Match`: passes when it is `*` and the resource exists, or lists
///   the current tag, compared strongly (both strong, equal): weak tags
///   never match. Malformed: fails (a client asked for a condition that
///   cannot be checked).
/// - `If-Unmodified-Since` (only without `If-Match`): fails when the
///   resource was modified after that date (second precision). Ignored
///   when it is not a valid HTTP date or the resource has no modification
///   date.
/// - `If-None-Match`: fails when it is `*` and the resource exists, or it
///   lists the current tag (weak comparison); malformed fails. On `GET` and
///   `HEAD` it is left to [`IfNoneMatch`] (a 304, not a 412).
///
/// As an extractor it never rejects (its rejection is [`Infallible`]).
///
/// # Example
///
/// ```
/// use axum::http::{HeaderMap, Method, StatusCode, header};
/// use axum::response::IntoResponse;
/// use cache_runtime::http::{ETag, Preconditions};
///
/// let current = ETag::of_json(&serde_json::json!({"id": 42, "name": "Ada"})).unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_MATCH, current.to_header_value());
/// let preconditions = Preconditions::from_headers(&Method::PUT, &headers);
/// assert!(preconditions.evaluate(Some(&current), None).is_ok());
///
/// // Someone else wrote meanwhile: the tag the client holds is not current.
/// let newer = ETag::of_json(&serde_json::json!({"id": 42, "name": "Grace"})).unwrap();
/// let failed = preconditions.evaluate(Some(&newer), None).unwrap_err();
/// assert_eq!(failed.into_response().status(), StatusCode::PRECONDITION_FAILED);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    if_match: Condition,
    if_none_match: Condition,
    if_unmodified_since: Option<SystemTime>,
    safe_method: bool,
}

impl Preconditions {
    /// Reads the preconditions of a request made with `method`: what the
    /// extractor does, for use outside axum handlers.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{HeaderMap, Method};
    /// use cache_runtime::http::Preconditions;
    ///
    /// let none = Preconditions::from_headers(&Method::PUT, &HeaderMap::new());
    /// assert!(none.is_empty());
    /// ```
    pub fn from_headers(method: &Method, headers: &HeaderMap) -> Preconditions {
        // An invalid date (or a list of dates) is ignored (§13.1.4).
        let mut lines = headers.get_all(IF_UNMODIFIED_SINCE).iter();
        let if_unmodified_since = match (lines.next(), lines.next()) {
            (Some(line), None) => line
                .to_str()
                .ok()
                .and_then(|text| httpdate::parse_http_date(text).ok()),
            _ => None,
        };
        Preconditions {
            if_match: parse_condition(headers, &IF_MATCH),
            if_none_match: parse_condition(headers, &IF_NONE_MATCH),
            if_unmodified_since,
            safe_method: method == Method::GET || method == Method::HEAD,
        }
    }

    /// Whether the request states no precondition (the write is
    /// unconditional).
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::http::Preconditions;
    ///
    /// assert!(Preconditions::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.if_match == Condition::Absent
            && (self.safe_method || self.if_none_match == Condition::Absent)
            && self.if_unmodified_since.is_none()
    }

    /// Evaluates the preconditions against the current representation:
    /// its strong tag (`None`: the resource does not exist) and its last
    /// modification time, if it has one. `Ok` when the request may go on.
    ///
    /// # Errors
    ///
    /// [`PreconditionFailed`] (a `412` response) when one fails.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    ///
    /// use axum::http::{HeaderMap, Method, header};
    /// use cache_runtime::http::{ETag, Preconditions};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_UNMODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
    /// let preconditions = Preconditions::from_headers(&Method::PUT, &headers);
    /// let tag = ETag::of_bytes(b"{}");
    /// // Modified since 1994: the write must not go ahead.
    /// assert!(preconditions.evaluate(Some(&tag), Some(SystemTime::now())).is_err());
    ///
    /// // `If-None-Match: *`: create only, never overwrite.
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
    /// let create_only = Preconditions::from_headers(&Method::PUT, &headers);
    /// assert!(create_only.evaluate(None, None).is_ok());
    /// assert!(create_only.evaluate(Some(&tag), None).is_err());
    /// ```
    pub fn evaluate(
        &self,
        current: Option<&ETag>,
        last_modified: Option<SystemTime>,
    ) -> Result<(), PreconditionFailed> {
        let failed = |header: HeaderName| {
            Err(PreconditionFailed {
                header,
                current: current.copied(),
            })
        };
        match &self.if_match {
            Condition::Absent => {
                if let (Some(since), Some(_), Some(modified)) =
                    (self.if_unmodified_since, current, last_modified)
                    && whole_seconds(modified) > whole_seconds(since)
                {
                    return failed(IF_UNMODIFIED_SINCE);
                }
            }
            Condition::Any if current.is_some() => {}
            condition @ Condition::Tags(_)
                if current.is_some_and(|current| condition.lists(current, true)) => {}
            _ => return failed(IF_MATCH),
        }
        if !self.safe_method {
            let holds = match &self.if_none_match {
                Condition::Absent => true,
                Condition::Any => current.is_none(),
                condition @ Condition::Tags(_) => {
                    !current.is_some_and(|current| condition.lists(current, false))
                }
                Condition::Malformed => false,
            };
            if !holds {
                return failed(IF_NONE_MATCH);
            }
        }
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Preconditions {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Preconditions::from_headers(&parts.method, &parts.headers))
    }
}

/// Seconds since the Unix epoch: HTTP dates have second precision.
fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A precondition of [`Preconditions`] failed: as a response, `412
/// Precondition Failed` with `{"error": "..."}` naming the header, the
/// current `ETag` (when the resource exists) and `Cache-Control:
/// no-store`.
///
/// # Example
///
/// ```
/// use axum::http::{HeaderMap, Method, StatusCode, header};
/// use axum::response::IntoResponse;
/// use cache_runtime::http::{ETag, Preconditions};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::IF_MATCH, r#""stale""#.parse().unwrap());
/// let current = ETag::of_bytes(b"now");
/// let failed = Preconditions::from_headers(&Method::PUT, &headers)
///     .evaluate(Some(&current), None)
///     .unwrap_err();
/// assert_eq!(failed.header(), header::IF_MATCH);
/// let response = failed.into_response();
/// assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
/// assert_eq!(response.headers()[header::ETAG], current.to_string());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreconditionFailed {
    header: HeaderName,
    current: Option<ETag>,
}

impl PreconditionFailed {
    /// The header whose condition failed.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }
}

impl IntoResponse for PreconditionFailed {
    fn into_response(self) -> Response {
        let message = format!(
            "precondition failed: {} does not hold for the current representation",
            self.header
        );
        let body = serde_json::json!({ "error": message }).to_string();
        let mut response = (StatusCode::PRECONDITION_FAILED, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(current) = self.current {
            headers.insert(ETAG, current.to_header_value());
        }
        response
    }
}

/// Parses every line of `name` (`If-Match` or `If-None-Match`).
fn parse_condition(headers: &HeaderMap, name: &HeaderName) -> Condition {
    let mut tags = 0_usize;
    let mut any = false;
    let mut lines = Vec::new();
    for line in headers.get_all(name) {
        match parse_list(line.as_bytes(), &mut |_, _| tags += 1) {
            Some(star) => any |= star,
            None => return Condition::Malformed,
        }
        lines.push(line.clone());
    }
    match (any, tags) {
        (true, 0) => Condition::Any,
        // `*` is the whole field value, never a list member.
        (true, _) => Condition::Malformed,
        (false, 0) => Condition::Absent,
        (false, _) => Condition::Tags(lines),
    }
}

/// `If-None-Match = "*" / #entity-tag` (RFC 9110 §13.1.2; `If-Match` has
/// the same syntax; list syntax of §5.6.1: empty elements and optional
/// whitespace around commas accepted). Calls `tag` with each entity tag's
/// opaque part (between the quotes) and whether it was weak (`W/`).
/// `Some(true)` when the line holds `*`, `None` when it is malformed.
pub(super) fn parse_list(bytes: &[u8], tag: &mut dyn FnMut(&[u8], bool)) -> Option<bool> {
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
            let weak = bytes[i..].starts_with(b"W/");
            if weak {
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
            tag(opaque, weak);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn evaluate(
        lines: &[(&HeaderName, &str)],
        current: Option<&ETag>,
        modified: Option<SystemTime>,
    ) -> Result<(), HeaderName> {
        Preconditions::from_headers(&Method::PUT, &headers(lines))
            .evaluate(current, modified)
            .map_err(|failed| failed.header().clone())
    }

    #[test]
    fn if_match_compares_strongly_and_fails_closed() {
        let current = ETag::of_bytes(b"current");
        let tag = current.to_string();
        let weak = format!("W/{tag}");
        let weak_current = ETag::of(&1).unwrap();
        assert_eq!(evaluate(&[(&IF_MATCH, &tag)], Some(&current), None), Ok(()));
        assert_eq!(
            evaluate(
                &[(&IF_MATCH, &format!(r#""a", {tag}"#))],
                Some(&current),
                None
            ),
            Ok(())
        );
        assert_eq!(evaluate(&[(&IF_MATCH, "*")], Some(&current), None), Ok(()));
        for (header, current) in [
            (r#""other""#, Some(&current)),
            (weak.as_str(), Some(&current)), // weak never matches strongly
            ("*", None),                     // nothing to match
            (tag.as_str(), None),
            ("garbage", Some(&current)),
            (&weak_current.to_string(), Some(&weak_current)),
        ] {
            assert_eq!(
                evaluate(&[(&IF_MATCH, header)], current, None),
                Err(IF_MATCH),
                "If-Match: {header}"
            );
        }
    }

    #[test]
    fn if_none_match_on_writes_compares_weakly() {
        let current = ETag::of_bytes(b"current");
        let tag = current.to_string();
        assert_eq!(evaluate(&[(&IF_NONE_MATCH, "*")], None, None), Ok(()));
        assert_eq!(
            evaluate(&[(&IF_NONE_MATCH, r#""x""#)], Some(&current), None),
            Ok(())
        );
        for header in ["*", tag.as_str(), &format!("W/{tag}"), "garbage"] {
            assert_eq!(
                evaluate(&[(&IF_NONE_MATCH, header)], Some(&current), None),
                Err(IF_NONE_MATCH),
                "If-None-Match: {header}"
            );
        }
        // On a GET it is the 304's business, not a 412's.
        let get = Preconditions::from_headers(&Method::GET, &headers(&[(&IF_NONE_MATCH, "*")]));
        assert!(get.is_empty());
        assert!(get.evaluate(Some(&current), None).is_ok());
    }

    #[test]
    fn if_unmodified_since_holds_until_a_later_modification() {
        let current = ETag::of_bytes(b"current");
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let then = httpdate::parse_http_date(date).unwrap();
        let since = [(&IF_UNMODIFIED_SINCE, date)];
        assert_eq!(evaluate(&since, Some(&current), Some(then)), Ok(()));
        // Same second: not modified since.
        let same_second = then + Duration::from_millis(999);
        assert_eq!(evaluate(&since, Some(&current), Some(same_second)), Ok(()));
        let later = then + Duration::from_secs(1);
        assert_eq!(
            evaluate(&since, Some(&current), Some(later)),
            Err(IF_UNMODIFIED_SINCE)
        );
        // No modification date, an invalid date, a list of dates, or an
        // If-Match that holds: ignored.
        assert_eq!(evaluate(&since, Some(&current), None), Ok(()));
        let invalid = [(&IF_UNMODIFIED_SINCE, "yesterday")];
        assert_eq!(evaluate(&invalid, Some(&current), Some(later)), Ok(()));
        let twice = [(&IF_UNMODIFIED_SINCE, date), (&IF_UNMODIFIED_SINCE, date)];
        assert_eq!(evaluate(&twice, Some(&current), Some(later)), Ok(()));
        let tag = current.to_string();
        let with_if_match = [(&IF_UNMODIFIED_SINCE, date), (&IF_MATCH, tag.as_str())];
        assert_eq!(
            evaluate(&with_if_match, Some(&current), Some(later)),
            Ok(())
        );
    }

    #[test]
    fn parsing_keeps_opaque_tags_and_flags_malformed_lines() {
        let parse = |lines: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(IF_NONE_MATCH, HeaderValue::from_bytes(line).unwrap());
            }
            match parse_condition(&headers, &IF_NONE_MATCH) {
                Condition::Tags(lines) => {
                    let mut tags = Vec::new();
                    for line in lines {
                        parse_list(line.as_bytes(), &mut |t, weak| {
                            tags.push((t.to_vec(), weak))
                        })
                        .unwrap();
                    }
                    Parsed::Tags(tags)
                }
                Condition::Any => Parsed::Any,
                Condition::Absent => Parsed::Absent,
                Condition::Malformed => Parsed::Malformed,
            }
        };
        #[derive(Debug, PartialEq)]
        enum Parsed {
            Absent,
            Any,
            Malformed,
            Tags(Vec<(Vec<u8>, bool)>),
        }
        let tags = |list: &[(&[u8], bool)]| {
            Parsed::Tags(list.iter().map(|(t, weak)| (t.to_vec(), *weak)).collect())
        };
        assert_eq!(parse(&[]), Parsed::Absent);
        assert_eq!(parse(&[b" , ,"]), Parsed::Absent);
        assert_eq!(parse(&[b"*"]), Parsed::Any);
        assert_eq!(parse(&[b" * "]), Parsed::Any);
        assert_eq!(parse(&[br#""""#]), tags(&[(b"", false)]));
        assert_eq!(
            parse(&[br#"W/"a", "b""#]),
            tags(&[(b"a", true), (b"b", false)])
        );
        assert_eq!(
            parse(&[br#""a""#, br#"W/"b""#]),
            tags(&[(b"a", false), (b"b", true)])
        );
        assert_eq!(parse(&[b"\"!#~\x80\""]), tags(&[(b"!#~\x80", false)]));
        assert_eq!(parse(&[br#""a""#, b"*"]), Parsed::Malformed);
        assert_eq!(parse(&[br#"W/ "a""#]), Parsed::Malformed);
        assert_eq!(parse(&[b"W/"]), Parsed::Malformed);
        assert_eq!(parse(&[b"\""]), Parsed::Malformed);
        assert_eq!(parse(&[br#""a"b""#]), Parsed::Malformed);
    }
}
