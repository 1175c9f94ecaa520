//! The static description of one annotated function, and the span each run
//! of its body is instrumented with; the descriptions of programmatic calls
//! (made once per distinct set of options). No crate imports.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
#[cfg(feature = "metrics")]
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;

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
    /// Where this function's per-function metrics are in each cache (see
    /// `crate::metrics`): `SiteIndex::new()`.
    pub index: SiteIndex,
}

impl Site {
    /// Whether this function's values are cached at all: not when its
    /// `ttl`, written as an expression, was out of range on its first call
    /// (see [`configured_lifetime`]), which leaves the TTL zero. Every call
    /// then runs its body; a write invalidates its key.
    #[inline]
    pub(crate) fn caches(&self) -> bool {
        !self.ttl.is_zero()
    }
}

/// What `ttl`, `negative` and `stale` accept when written as an expression
/// rather than a literal: a `u64` of whole seconds, or a [`Duration`].
///
/// The expression is evaluated once, on the function's first call, and
/// checked then: a lifetime under a millisecond or over ten years is
/// logged at error level and the option is dropped (for `ttl`, the
/// function runs without the cache). It never panics.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::cached;
///
/// const USER_TTL_SECS: u64 = 300;
/// const STALE: Duration = Duration::from_secs(600);
///
/// #[cached(key = "user:<id>", ttl = USER_TTL_SECS, stale = STALE, negative = Duration::from_secs(30))]
/// async fn get_user(id: u64) -> Result<Option<String>, String> {
///     Ok(Some(format!("user {id}")))
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # assert_eq!(get_user(1).await, Ok(Some("user 1".to_string())));
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lifetime: `ttl`, `negative` and `stale` take whole seconds as a `u64`, or a `std::time::Duration`",
    label = "expected a `u64` of seconds or a `Duration`"
)]
pub trait IntoLifetime {
    /// The lifetime this value stands for.
    fn into_lifetime(self) -> Duration;
}

impl IntoLifetime for u64 {
    fn into_lifetime(self) -> Duration {
        Duration::from_secs(self)
    }
}

impl IntoLifetime for Duration {
    fn into_lifetime(self) -> Duration {
        self
    }
}

/// The longest `ttl`, `negative` or `stale`: ten years, as the attribute
/// checks for literals. Far inside what Redis (expiries in milliseconds as
/// an `i64`) and `Instant` arithmetic represent, even with `ttl + stale`
/// and the most jitter added.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A `ttl`, `negative` or `stale` written as an expression, checked when
/// `function` first runs: `None`, logged at error level, when it is under
/// a millisecond (the precision of Redis expiries) or over ten years.
pub fn configured_lifetime(
    function: &'static str,
    option: &'static str,
    value: impl IntoLifetime,
) -> Option<Duration> {
    let lifetime = value.into_lifetime();
    if (Duration::from_millis(1)..=MAX_LIFETIME).contains(&lifetime) {
        return Some(lifetime);
    }
    let effect = match option {
        "ttl" => {
            "the function runs without the cache: every call runs its body, and its writes invalidate the key instead of storing"
        }
        "negative" => "`None` is not cached",
        _ => "values are not kept past `ttl`",
    };
    tracing::error!(
        function,
        option,
        value = ?lifetime,
        "`{option}` of `{function}` must be at least 1 ms and at most 10 years: {effect} (fix the expression)"
    );
    None
}

/// A site's number in this process, given on first use: each cache keeps
/// its per-function metric handles in a table indexed by it, so a call
/// finds its function's handles without hashing (see `crate::metrics`).
#[derive(Debug, Default)]
pub struct SiteIndex(
    #[cfg_attr(
        not(feature = "metrics"),
        expect(dead_code, reason = "read only by the per-function metrics")
    )]
    AtomicU32,
);

/// The next number to give a site; 0 means "not given yet".
#[cfg(feature = "metrics")]
static NEXT_INDEX: AtomicU32 = AtomicU32::new(1);

impl SiteIndex {
    /// An index not given yet (what every `Site` starts with).
    pub const fn new() -> SiteIndex {
        SiteIndex(AtomicU32::new(0))
    }

    /// The site's number, from 0: given on its first call, then read with
    /// one relaxed load.
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn get(&self) -> usize {
        match self.0.load(Relaxed) {
            0 => self.assign(),
            index => index as usize - 1,
        }
    }

    /// Gives the site a number; of two racing threads, the first to store
    /// its number wins (the other's is left unused).
    #[cfg(feature = "metrics")]
    #[cold]
    fn assign(&self) -> usize {
        // At most 2^32 - 1 sites: each is a static or a leaked allocation.
        let mine = NEXT_INDEX.fetch_add(1, Relaxed).max(1);
        let index = match self.0.compare_exchange(0, mine, Relaxed, Relaxed) {
            Ok(_) => mine,
            Err(theirs) => theirs,
        };
        index as usize - 1
    }
}

/// What a programmatic call's [`Site`] is made of (`Cache::get_or_load`'s
/// options, `Cache::write_behind`'s queue and TTL): two equal specs share
/// one site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SiteSpec {
    /// The name logs and spans give the call.
    pub name: Cow<'static, str>,
    pub ttl: Duration,
    /// `f64::to_bits`, so that the spec is `Eq + Hash`.
    pub jitter: Option<u64>,
    pub negative: Option<Duration>,
    pub l1: bool,
    pub lock: bool,
    /// The XFetch beta, as `f64::to_bits` (see `jitter`).
    pub early: Option<u64>,
    pub stale: Option<Duration>,
}

/// The sites made so far. Read on every programmatic call that has not
/// kept its site and written once per distinct spec, so readers take no
/// lock and the rare writer copies the map.
static SITES: ArcSwapOption<HashMap<SiteSpec, &'static Site>> = ArcSwapOption::const_empty();

/// Held while a site is made and stored.
static MAKING: Mutex<()> = Mutex::new(());

impl SiteSpec {
    /// A spec named `name` with a TTL, and nothing else: no negative
    /// caching, the cache's jitter, L1 on, no lock, no early refresh, no
    /// stale window.
    pub(crate) fn new(name: Cow<'static, str>, ttl: Duration) -> SiteSpec {
        SiteSpec {
            name,
            ttl,
            jitter: None,
            negative: None,
            l1: true,
            lock: false,
            early: None,
            stale: None,
        }
    }

    /// The one site of this spec, made (and leaked: sites live as long as
    /// the process, as the attribute's statics do) on first use.
    pub(crate) fn site(&self) -> &'static Site {
        if let Some(site) = SITES.load().as_deref().and_then(|sites| sites.get(self)) {
            return site;
        }
        let _one_at_a_time = MAKING.lock().unwrap_or_else(PoisonError::into_inner);
        let known = SITES.load_full();
        if let Some(site) = known.as_deref().and_then(|sites| sites.get(self)) {
            return site;
        }
        let function: &'static str = match &self.name {
            Cow::Borrowed(name) => name,
            Cow::Owned(name) => Box::leak(name.clone().into_boxed_str()),
        };
        let site: &'static Site = Box::leak(Box::new(Site {
            function,
            template: "(rendered key)",
            ttl: self.ttl,
            jitter: self.jitter.map(f64::from_bits),
            negative: self.negative,
            l1: self.l1,
            lock: self.lock,
            early: self.early.map(f64::from_bits),
            stale: self.stale,
            tag_templates: &[],
            index: SiteIndex::new(),
        }));
        let mut sites = known.as_deref().cloned().unwrap_or_default();
        sites.insert(self.clone(), site);
        SITES.store(Some(Arc::new(sites)));
        site
    }
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
