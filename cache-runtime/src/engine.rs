//! The [`Cache`] handle and the engine behind it: one instance of each
//! feature's state, composed. Each part owns its state (its fields are
//! private to its module); the read path (`load.rs`), the write side
//! (`write.rs`) and the subscription (`subscription.rs`) run over them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::background::Background;
use crate::clock::Now;
use crate::config::CacheBuilder;
use crate::flight::Flights;
use crate::invalidation::Channel;
use crate::l1::L1;
use crate::l2::L2;
use crate::lock::Locks;
use crate::logging::Throttle;
use crate::recovery::Recovery;
use crate::refresh::Refreshes;
use crate::stats::{BreakerState, Counters, Gauges, Stats};
use crate::store::Store;
use crate::tags::Tags;
use crate::topology::RedisTarget;

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
    engine: Arc<Engine>,
}

impl Cache {
    pub(crate) fn from_engine(engine: Arc<Engine>) -> Cache {
        Cache { engine }
    }

    /// The engine behind this handle.
    #[inline]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

/// What a [`Cache`] handle points at.
pub(crate) struct Engine {
    pub store: Store,
    pub tags: Tags,
    pub channel: Channel,
    pub flights: Flights,
    pub locks: Locks,
    pub refreshes: Arc<Refreshes>,
    /// Invalidations Redis did not take, waiting to be replayed (shared
    /// with the replay task, which must not keep the engine alive).
    pub recovery: Arc<Recovery>,
    /// Redis work no caller waits for (see `background.rs`).
    pub background: Arc<Background>,
    /// How long the tombstone an invalidation leaves in Redis lives.
    pub tombstone_ttl: Duration,
    /// For `Debug`: where Redis is, URLs with their passwords replaced.
    pub redacted_url: Option<String>,
    /// Rate-limits the logs of calls that run their body without the cache
    /// (a key that cannot be rendered, a load calling itself; see
    /// `load.rs`).
    pub uncached_log: Throttle,
    /// Caching is off (`CacheBuilder::disabled`): every call runs its body.
    pub disabled: bool,
    /// Dropped with the engine, which ends its background tasks (see
    /// [`Engine::dropped`]).
    alive: tokio::sync::watch::Sender<()>,
}

impl Engine {
    /// An engine from validated settings, over `l2` (when Redis is configured).
    pub(crate) fn new(
        builder: CacheBuilder,
        counters: Arc<Counters>,
        l2: Option<Arc<L2>>,
    ) -> Engine {
        let now = Now::new(builder.test_clock.clone());
        // The cap bounds how long another instance's write can go unseen
        // when an invalidation message is lost. Without Redis there are no
        // other instances and no messages: the TTL alone decides.
        let l1_max_ttl = if l2.is_some() {
            builder.l1_max_ttl
        } else {
            Duration::MAX
        };
        let l1 = (builder.l1_capacity > 0 && !builder.disabled).then(|| {
            L1::new(
                builder.l1_capacity,
                builder.l1_max_bytes,
                builder.max_value_bytes,
                l1_max_ttl,
                counters.clone(),
                now.clone(),
            )
        });
        let background = Arc::new(Background::new(builder.background_limit, counters.clone()));
        let channel = Channel::new(
            builder.heartbeat_interval,
            &builder.namespace,
            l2.as_ref().map_or(0, |l2| l2.database()),
        );
        let locks = Locks::new(
            builder.lock_ttl,
            builder.lock_wait,
            &builder.namespace,
            background.clone(),
            counters.clone(),
        );
        Engine {
            redacted_url: builder.redis.as_ref().map(RedisTarget::redacted),
            store: Store::new(
                builder.namespace,
                l1,
                l2,
                counters,
                builder.default_jitter,
                builder.max_value_bytes,
                now,
            )
            .with_codec(builder.codec),
            tags: Tags::default(),
            channel,
            flights: Flights::default(),
            locks,
            refreshes: Arc::new(Refreshes::new(
                builder.refresh_timeout,
                builder.refresh_retry_after,
            )),
            recovery: Arc::new(Recovery::new(builder.invalidation_backlog)),
            background,
            tombstone_ttl: builder.tombstone_ttl,
            uncached_log: Throttle::default(),
            disabled: builder.disabled,
            alive: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Resolves once the engine is dropped: background tasks select on it
    /// so they end with the cache.
    pub(crate) fn dropped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut alive = self.alive.subscribe();
        async move { while alive.changed().await.is_ok() {} }
    }

    /// The breaker's state (`Disabled` without Redis).
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.store
            .l2()
            .map_or(BreakerState::Disabled, |l2| l2.breaker_state())
    }

    /// How much the engine's own maps hold now.
    pub(crate) fn footprint(&self) -> Footprint {
        let (known_tags, known_tag_bytes) = self.tags.footprint();
        Footprint {
            l1_entries: self.store.l1().map_or(0, L1::len),
            l1_bytes: self.store.l1().map_or(0, L1::weight),
            known_tags,
            known_tag_bytes,
            refresh_records: self.refreshes.len(),
        }
    }

    /// A snapshot of the counters and states; `heartbeat_window` is how
    /// long ago a heartbeat may have come back for the channel to count as
    /// verified (the subscription's silence window).
    pub(crate) fn stats(&self, heartbeat_window: Duration) -> Stats {
        let gauges = Gauges {
            l1_entries: self.store.l1().map_or(0, |l1| l1.len() as u64),
            invalidations_pending: self.recovery.len() as u64,
        };
        self.store
            .counters()
            .snapshot(self.breaker_state(), gauges, heartbeat_window)
    }
}

/// What a cache's own maps hold: for the soak test (`tests/soak.rs`), not
/// public API (`__private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Entries in L1.
    pub l1_entries: usize,
    /// Their weight: about the bytes they hold.
    pub l1_bytes: u64,
    /// Tags whose token is remembered.
    pub known_tags: usize,
    /// What they count for against their byte budget.
    pub known_tag_bytes: usize,
    /// Keys with a refresh record (running, or failed recently).
    pub refresh_records: usize,
}

/// What `cache`'s own maps hold now.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = cache_runtime::Cache::builder().build().await.unwrap();
/// assert_eq!(cache_runtime::__private::footprint(&cache).l1_entries, 0);
/// # }
/// ```
pub fn footprint(cache: &Cache) -> Footprint {
    cache.engine().footprint()
}
