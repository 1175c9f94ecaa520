//! The `Cache` handle: configuration, tiers, stats, the global instance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::{CacheBuilder, redact_url};
use crate::error::Error;
use crate::flight::Flights;
use crate::invalidation::{Epochs, TagVersions, listen};
use crate::l1::L1;
use crate::l2::L2;
use crate::logging::Throttle;
use crate::refresh::Refreshes;
use crate::stats::{BreakerState, Counters, Stats};

/// A two-tier cache: an in-process tier (L1) and, optionally, Redis (L2).
///
/// `Cache` is a cheap handle (`Clone` copies an `Arc`); clones share tiers,
/// stats and the Redis connection. `#[cached]` functions use the cache given
/// by `cache = EXPR`, or [`Cache::global`].
///
/// # Example
///
/// ```
/// use cache_runtime::{cached, Cache};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// #[cached(key = "user:<id>", ttl = 300)]
/// async fn get_user(id: u64) -> Option<User> {
///     Some(User { id, name: "Ada".into() }) // a database query
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::builder().namespace("app").build().await?;
/// Cache::set_global(cache.clone());
/// get_user(7).await; // runs the body
/// get_user(7).await; // served from L1
/// assert_eq!(cache.stats().loads, 1);
/// assert_eq!(cache.stats().l1_hits, 1);
/// # Ok(()) }
/// ```
///
/// # When Redis is down, slow or restarting
///
/// Calls never fail because of Redis: each Redis call is bounded by
/// `l2_timeout`, a failure counts as a miss, and after `breaker_threshold`
/// consecutive failures the circuit breaker skips Redis entirely until a
/// probe succeeds (the in-process tier keeps working meanwhile).
/// Reconnection is automatic.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub namespace: String,
    pub l1: Option<L1>,
    pub l2: Option<Arc<L2>>,
    pub flights: Flights,
    pub counters: Arc<Counters>,
    pub default_jitter: f64,
    pub max_value_bytes: usize,
    pub unstorable_log: Throttle,
    pub refresh_log: Throttle,
    pub refreshes: Arc<Refreshes>,
    pub lock_ttl: Duration,
    pub lock_wait: Duration,
    pub refresh_timeout: Duration,
    pub tombstone_ttl: Duration,
    /// Identifies this cache's own messages on the invalidation channel.
    pub sender_id: u64,
    pub probe_nonce: u64,
    pub epochs: Epochs,
    pub tag_versions: TagVersions,
    /// Dropped with the cache, which ends its subscription task.
    _stop_listener: Option<tokio::sync::oneshot::Sender<()>>,
    /// Dropped with the cache, which ends its gauge refresh task.
    #[cfg(feature = "metrics")]
    _stop_gauges: tokio::sync::oneshot::Sender<()>,
    redacted_url: Option<String>,
}

static GLOBAL: ArcSwapOption<Inner> = ArcSwapOption::const_empty();

impl Cache {
    /// A builder with the defaults (namespace `cache`, in-process only).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Builds the cache from validated settings.
    pub(crate) async fn start(builder: CacheBuilder) -> Result<Cache, Error> {
        // Registers the metrics (`metrics` feature) with the recorder installed now.
        let counters = Arc::new(Counters::new(&builder.namespace));
        let l2 = match &builder.redis_url {
            Some(url) => Some(L2::start(&builder, url, counters.clone()).await?),
            None => None,
        };
        let connect_timeout = builder.connect_timeout;
        let (stop_listener, stopped) = tokio::sync::oneshot::channel::<()>();
        let cache = Cache::assemble(builder, counters, l2, Some(stop_listener));
        if let Some(l2) = &cache.inner.l2 {
            let listener = listen(
                Arc::downgrade(&cache.inner),
                l2.client.clone(),
                connect_timeout,
            );
            // Ends (closing the subscription) when the cache is dropped.
            tokio::spawn(async move {
                tokio::select! {
                    () = listener => {}
                    _ = stopped => {}
                }
            });
        }
        Ok(cache)
    }

    fn assemble(
        builder: CacheBuilder,
        counters: Arc<Counters>,
        l2: Option<Arc<L2>>,
        stop_listener: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Cache {
        let l1 = (builder.l1_capacity > 0).then(|| {
            L1::new(
                builder.l1_capacity,
                builder.l1_max_bytes,
                builder.l1_max_ttl,
                counters.clone(),
            )
        });
        #[cfg(feature = "metrics")]
        let (stop_gauges, gauges_stopped) = tokio::sync::oneshot::channel();
        let inner = Arc::new(Inner {
            namespace: builder.namespace,
            l1,
            l2,
            flights: Flights::default(),
            counters,
            default_jitter: builder.default_jitter,
            max_value_bytes: builder.max_value_bytes,
            unstorable_log: Throttle::default(),
            refresh_log: Throttle::default(),
            refreshes: Arc::new(Refreshes::new(builder.refresh_retry_after)),
            lock_ttl: builder.lock_ttl,
            lock_wait: builder.lock_wait,
            refresh_timeout: builder.refresh_timeout,
            tombstone_ttl: builder.tombstone_ttl,
            sender_id: fastrand::u64(..),
            probe_nonce: fastrand::u64(..),
            epochs: Epochs::default(),
            tag_versions: TagVersions::default(),
            _stop_listener: stop_listener,
            #[cfg(feature = "metrics")]
            _stop_gauges: stop_gauges,
            redacted_url: builder.redis_url.as_deref().map(redact_url),
        });
        #[cfg(feature = "metrics")]
        crate::metrics::watch_gauges(&inner, gauges_stopped);
        Cache { inner }
    }

    /// The cache installed with [`set_global`](Cache::set_global), or an
    /// in-process-only default (namespace `cache`) when none was set.
    ///
    /// # Example
    ///
    /// ```
    /// let cache = cache_runtime::Cache::global();
    /// assert_eq!(cache.namespace(), "cache");
    /// ```
    pub fn global() -> Cache {
        if let Some(inner) = GLOBAL.load_full() {
            return Cache { inner };
        }
        let default = Cache::in_process_default();
        // Another thread may have set one meanwhile: keep whichever is there.
        let previous = GLOBAL.compare_and_swap(&None::<Arc<Inner>>, Some(default.inner.clone()));
        match &*previous {
            Some(inner) => Cache {
                inner: inner.clone(),
            },
            None => default,
        }
    }

    /// Makes `cache` the one `#[cached]` functions use when their attribute
    /// names no `cache = ...`. Calls already running keep the cache they
    /// started with.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().namespace("app").build().await.unwrap();
    /// cache_runtime::Cache::set_global(cache.clone());
    /// assert_eq!(cache_runtime::Cache::global().namespace(), "app");
    /// # }
    /// ```
    pub fn set_global(cache: Cache) {
        GLOBAL.store(Some(cache.inner));
    }

    fn in_process_default() -> Cache {
        let builder = CacheBuilder::default();
        let counters = Arc::new(Counters::new(&builder.namespace));
        Cache::assemble(builder, counters, None, None)
    }

    /// The namespace every Redis key starts with.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// A snapshot of the counters.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().build().await.unwrap();
    /// assert_eq!(cache.stats().breaker, cache_runtime::BreakerState::Disabled);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let breaker = inner
            .l2
            .as_ref()
            .map_or(BreakerState::Disabled, |l2| l2.breaker_state());
        let l1_entries = inner.l1.as_ref().map_or(0, |l1| l1.len() as u64);
        inner.counters.snapshot(breaker, l1_entries)
    }

    /// Whether a Redis connection has been made (Redis may be down again).
    pub fn is_l2_connected(&self) -> bool {
        self.inner.l2.as_ref().is_some_and(|l2| l2.is_connected())
    }

    /// Invalidates one entry everywhere, by its rendered key without the
    /// namespace (`"user:42"` for `key = "user:<id>"` and `id = 42`; escape
    /// non-trivial values with [`escape_key_part`](crate::escape_key_part)).
    ///
    /// This instance's L1 copy is dropped at once; in Redis the value is
    /// replaced by a tombstone (so a load that started earlier cannot write
    /// its older value back); other instances drop their L1 copies when the
    /// invalidation message reaches them (one pub/sub delivery).
    ///
    /// # Errors
    ///
    /// When Redis is configured but did not take the invalidation
    /// (unavailable, timeout, failure). The local copy is dropped anyway;
    /// other instances' copies then expire within `l1_max_ttl`.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// cache.invalidate("user:42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate(&self, key: &str) -> Result<(), Error> {
        self.inner.invalidate(&[key], &[]).await
    }

    /// Drops every entry carrying `tag` (a rendered tag of `tags = [...]`),
    /// on every instance, in O(1) Redis work: the tag's version counter moves
    /// on, and entries stored with an older version read as misses.
    ///
    /// # Errors
    ///
    /// As for [`invalidate`](Cache::invalidate); locally, entries with the
    /// tag stop being served either way.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// cache.invalidate_tag("org:7").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), Error> {
        self.inner.invalidate(&[], &[tag]).await
    }

    /// Drops every entry of this instance's in-process tier.
    pub fn clear_local(&self) {
        if let Some(l1) = &self.inner.l1 {
            l1.clear();
        }
    }
}

/// A TTL drawn uniformly from `ttl * (1 ± jitter)`.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
    ttl.mul_f64(factor).max(Duration::from_millis(1))
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.namespace)
            .field("redis", &self.inner.redacted_url)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let ttl = Duration::from_secs(100);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(ttl, 0.2)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(80) && *d <= Duration::from_secs(120))
        );
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_secs(20),
            "spread {min:?}..{max:?}"
        );
        assert_eq!(jittered(ttl, 0.0), ttl);
    }

    #[tokio::test]
    async fn global_defaults_then_follows_set_global() {
        let default = Cache::global();
        assert_eq!(default.namespace(), "cache");
        let app = Cache::builder()
            .namespace("app-global-test")
            .build()
            .await
            .unwrap();
        Cache::set_global(app.clone());
        assert_eq!(Cache::global().namespace(), "app-global-test");
    }

    #[tokio::test]
    async fn debug_hides_the_password() {
        let cache = Cache::builder()
            .redis_url("redis://:hunter2@127.0.0.1:1")
            .connect_timeout(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        let shown = format!("{cache:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}
