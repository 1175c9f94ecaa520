//! The static description of one annotated function, and the span each run
//! of its body is instrumented with. No crate imports.

use std::time::Duration;

/// The static description of one `#[cached]` (or `#[write_through]`)
/// function, built by the macro.
#[derive(Debug)]
pub struct Site {
    /// The function's name, for logs.
    pub function: &'static str,
    /// The key template as written (logged instead of rendered keys, which
    /// may hold personal data).
    pub template: &'static str,
    /// How long a value is fresh.
    pub ttl: Duration,
    /// TTL jitter; `None` uses the cache's default.
    pub jitter: Option<f64>,
    /// How long a `None` is cached; `None` means it is not.
    pub negative: Option<Duration>,
    /// Whether this function uses the in-process tier.
    pub l1: bool,
    /// One load per key across all instances (Redis lock).
    pub lock: bool,
    /// Probabilistic early refresh with this beta.
    pub early: Option<f64>,
    /// How long a value may be served stale after `ttl`.
    pub stale: Option<Duration>,
    /// The tag templates, for logs (the rendered tags come with each call).
    pub tag_templates: &'static [&'static str],
}

/// The span around one run of a function body to fill the cache.
///
/// `cache.load`, at info level, with the fields `function`, `key` (the key
/// TEMPLATE: the rendered key may hold personal data and is never put on a
/// span), `refresh` (true for a background refresh, `early` or `stale`, a
/// root span that follows from the call that started it), and `outcome`,
/// recorded when the body ends: `ok` (a value), `none` (`None` or
/// `Ok(None)`), `err` (`Err`), or `timeout` (a background refresh past
/// `refresh_timeout`). It stays empty when the caller was cancelled first.
pub(crate) fn load_span(site: &'static Site, refresh: bool) -> tracing::Span {
    if refresh {
        tracing::info_span!(
            parent: None,
            "cache.load",
            function = site.function,
            key = site.template,
            refresh,
            outcome = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "cache.load",
            function = site.function,
            key = site.template,
            refresh,
            outcome = tracing::field::Empty,
        )
    }
}
