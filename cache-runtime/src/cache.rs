//! The `Cache` handle's public API: building, the global instance, stats
//! and invalidation (by key, tag or prefix). The handle type itself lives beside the engine it
//! points at (`engine.rs`), so the layers below can take a `&Cache` without
//! depending on this module.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;

use crate::config::CacheBuilder;
use crate::consistency::ConsistencyToken;
use crate::engine::{Cache, Engine};
use crate::error::Error;
use crate::keys::KeyBuf;
use crate::l2::L2;
use crate::prefix::invalidate_prefix;
use crate::stats::{Counters, Stats};
use crate::subscription::{listen, silence_window};
use crate::write::{invalidate, replay_pending};

static GLOBAL: ArcSwapOption<Engine> = ArcSwapOption::const_empty();

/// The first cache given to `set_global`, kept for the whole process, so
/// that a call reaches it by reference: no atomic read-modify-write (an
/// `Arc` count, arc-swap's debt slot) on every call through the global, as
/// long as it is not replaced ([`REPLACED`]).
static FIRST: OnceLock<Cache> = OnceLock::new();

/// Set once `set_global` installs a cache other than [`FIRST`]: calls then
/// take their handle from [`GLOBAL`].
static REPLACED: AtomicBool = AtomicBool::new(false);

/// The global cache as a call holds it: a borrow of the first cache set
/// (kept for the process), or a handle to the one that replaced it.
/// Dereferences to [`Cache`].
#[doc(hidden)]
pub enum GlobalCache {
    Kept(&'static Cache),
    Replaced(Cache),
}

impl std::ops::Deref for GlobalCache {
    type Target = Cache;

    #[inline]
    fn deref(&self) -> &Cache {
        match self {
            GlobalCache::Kept(cache) => cache,
            GlobalCache::Replaced(cache) => cache,
        }
    }
}

/// Set by a cache built with `strict_global`: an implicit default global
/// panics instead of warning.
static STRICT_GLOBAL: AtomicBool = AtomicBool::new(false);

impl Cache {
    /// A builder with the defaults (namespace `cache`, in-process only).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Builds the cache from validated settings: connects L2 in the
    /// background and keeps the cache subscribed to its channels.
    async fn start(builder: CacheBuilder) -> Result<Cache, Error> {
        // Registers the metrics (`metrics` feature) with the recorder installed now.
        let counters = Arc::new(Counters::new(&builder.namespace));
        let l2 = match builder.topology()? {
            Some(topology) => {
                Some(L2::start(&builder.l2_settings(), topology, counters.clone()).await)
            }
            None => None,
        };
        let connect_timeout = builder.connect_timeout;
        if builder.strict_global {
            STRICT_GLOBAL.store(true, Ordering::Relaxed);
        }
        let cache = Cache::assemble(builder, counters, l2);
        if cache.engine().store.l2().is_some() {
            let listener = listen(Arc::downgrade(cache.engine()), connect_timeout);
            // Ends (closing the subscription) when the cache is dropped.
            let dropped = cache.engine().dropped();
            tokio::spawn(async move {
                tokio::select! {
                    () = listener => {}
                    () = dropped => {}
                }
            });
            let replay = replay_pending(Arc::downgrade(cache.engine()));
            let dropped = cache.engine().dropped();
            tokio::spawn(async move {
                tokio::select! {
                    () = replay => {}
                    () = dropped => {}
                }
            });
        }
        Ok(cache)
    }

    fn assemble(builder: CacheBuilder, counters: Arc<Counters>, l2: Option<Arc<L2>>) -> Cache {
        let cache = Cache::from_engine(Arc::new(Engine::new(builder, counters, l2)));
        #[cfg(feature = "metrics")]
        cache.watch_gauges();
        cache
    }

    /// The cache installed with [`set_global`](Cache::set_global), or an
    /// in-process-only default (namespace `cache`) when none was set. That
    /// default is logged once, at warn level (a forgotten `set_global`
    /// would otherwise cost a fleet its Redis and its invalidation across
    /// instances without a word), or panics with
    /// [`CacheBuilder::strict_global`].
    ///
    /// # Example
    ///
    /// ```
    /// let cache = cache_runtime::Cache::global();
    /// assert_eq!(cache.namespace(), "cache");
    /// ```
    pub fn global() -> Cache {
        match Cache::global_for("Cache::global()") {
            GlobalCache::Kept(cache) => cache.clone(),
            GlobalCache::Replaced(cache) => cache,
        }
    }

    /// [`global`](Cache::global) for `function`, which the warning (or
    /// panic) about a missing `set_global` names.
    #[inline]
    pub(crate) fn global_for(function: &'static str) -> GlobalCache {
        if !REPLACED.load(Ordering::Acquire)
            && let Some(first) = FIRST.get()
        {
            return GlobalCache::Kept(first);
        }
        GlobalCache::Replaced(match GLOBAL.load_full() {
            Some(engine) => Cache::from_engine(engine),
            None => Cache::implicit_global(function),
        })
    }

    #[cold]
    fn implicit_global(function: &'static str) -> Cache {
        let advice =
            "call `Cache::set_global(cache)` at start-up, or give the attribute `cache = ...`";
        if STRICT_GLOBAL.load(Ordering::Relaxed) {
            panic!(
                "`{function}` uses the global cache, but none was set (`strict_global` is on): {advice}"
            );
        }
        let default = Cache::in_process_default();
        // Another thread may have set one meanwhile: keep whichever is there.
        let previous =
            GLOBAL.compare_and_swap(&None::<Arc<Engine>>, Some(default.engine().clone()));
        match &*previous {
            Some(engine) => Cache::from_engine(engine.clone()),
            None => {
                tracing::warn!(
                    function,
                    "`{function}` uses the global cache, but none was set: it runs with an in-process-only default (no Redis, no invalidation across instances); {advice}"
                );
                default
            }
        }
    }

    /// Makes `cache` the one `#[cached]` functions use when their attribute
    /// names no `cache = ...`. Calls already running keep the cache they
    /// started with.
    ///
    /// The first cache set is kept for the whole process, even once
    /// replaced: calls borrow it rather than count references to it,
    /// which keeps a hit through the global as fast as one through
    /// `cache = ...`. After a replacement, each call takes a handle to
    /// the current global (a few atomic operations more).
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
        GLOBAL.store(Some(cache.engine().clone()));
        let first = FIRST.get_or_init(|| cache.clone());
        if !Arc::ptr_eq(first.engine(), cache.engine()) {
            // After `GLOBAL`, so that a call that sees this sees the new
            // cache there.
            REPLACED.store(true, Ordering::Release);
        }
    }

    fn in_process_default() -> Cache {
        let builder = CacheBuilder::default();
        let counters = Arc::new(Counters::new(&builder.namespace));
        Cache::assemble(builder, counters, None)
    }

    /// The namespace every Redis key starts with.
    pub fn namespace(&self) -> &str {
        self.engine().store.namespace()
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
        let engine = self.engine();
        engine.stats(silence_window(engine.channel.heartbeat_interval()))
    }

    /// Whether a Redis connection has been made (Redis may be down again).
    pub fn is_l2_connected(&self) -> bool {
        self.engine().store.l2().is_some_and(|l2| l2.is_connected())
    }

    /// What a read must have seen to be at least as new as every write
    /// this cache has made so far (`#[invalidates]`, `#[write_through]`,
    /// [`invalidate`](Cache::invalidate), ...): take it after a write
    /// returns, hand it to the client, and run the client's later reads in
    /// [`ConsistencyToken::scope`]. On another instance sharing the Redis
    /// and namespace, those reads then serve from L1 only once that
    /// instance has received this cache's invalidation messages up to the
    /// write, and read Redis (or run their body) until then. See
    /// [`ConsistencyToken`].
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// cache.invalidate("user:42").await?;
    /// let token = cache.consistency_token();
    /// assert!(!token.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn consistency_token(&self) -> ConsistencyToken {
        self.engine().channel.token()
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
    /// A full Redis (`maxmemory` under `noeviction`) refuses the tombstone:
    /// the key is deleted instead, which it still accepts.
    ///
    /// # Errors
    ///
    /// When Redis is configured but did not take the invalidation
    /// (unavailable, timeout, failure, read-only replica). The local copy is
    /// dropped anyway, and the invalidation is kept and replayed as soon as
    /// Redis answers again; until then this instance does not read Redis,
    /// and other instances may serve the old value (see
    /// [`CacheBuilder::invalidation_backlog`](crate::CacheBuilder::invalidation_backlog)).
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
        let key = KeyBuf::rendered(key);
        invalidate(self.engine(), &[key.as_str()], &[]).await
    }

    /// Drops every entry carrying `tag` (a rendered tag of `tags = [...]`),
    /// on every instance, in O(1) Redis work: the tag's version token is
    /// replaced, and entries stored with another token read as misses.
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
        let tag = KeyBuf::rendered(tag);
        invalidate(self.engine(), &[], &[tag.as_str()]).await
    }

    /// Invalidates every entry whose rendered key (without the namespace)
    /// starts with `prefix`, everywhere: `"user:42:"` drops what
    /// `key = "user:<id>:profile"` and `key = "user:<id>:posts"` stored for
    /// `id = 42`. Returns how many entries Redis held under the prefix (0
    /// without Redis: this instance's L1 copies go all the same).
    ///
    /// # What a prefix matches
    ///
    /// It is a text prefix of rendered keys, nothing more: `"user:4"`
    /// matches the keys of `user:4`, `user:42`, `user:420` and `user:4x`.
    /// End it at a separator of the template (`"user:42:"`) to mean one
    /// id. That is safe because placeholder values are escaped (every byte
    /// outside `[A-Za-z0-9]` becomes `%XX`, see
    /// [`escape_key_part`](crate::escape_key_part)): a value never holds a
    /// template's separator, so no other id's keys start with `user:42:`.
    /// Build the id part of a prefix with `escape_key_part` too. Glob
    /// characters (`* ? [ ] \`) are matched literally; a prefix holding
    /// whitespace matches nothing (no rendered key holds any), nor does one
    /// longer than 1024 bytes (longer keys are stored shortened to their
    /// first 1024 bytes and a digest).
    ///
    /// # Cost
    ///
    /// One `SCAN` walk of the whole keyspace of Redis, of every master on a
    /// cluster: O(keys in Redis), not O(matches), about one round trip per
    /// 1000 keys per master (and never `KEYS`, which would block Redis for
    /// the walk), plus a pass over L1 on this and every other instance.
    /// Fine for an occasional clean-up; to drop a group of entries often,
    /// give them a tag (`tags = [...]`) and call
    /// [`invalidate_tag`](Cache::invalidate_tag), which is O(1).
    ///
    /// # How
    ///
    /// This instance's L1 entries under the prefix are dropped at once, and
    /// no load that began before can put its value back into L1 (every
    /// key's epoch moves on: the keys under a prefix cannot be singled
    /// out, so loads of other keys running now skip their L1 insert once).
    /// In Redis each entry found gets a tombstone, as with
    /// [`invalidate`](Cache::invalidate), so a load that read it before
    /// cannot write its older value over it; so do the keys of loads under
    /// the prefix that run now on this instance (absent from Redis, the
    /// walk cannot find them). Other instances drop their L1 entries under
    /// the prefix, and tombstone the keys of their own running loads under
    /// it, when the message reaches them. An instance of a release before
    /// this method ignores that message (it rejects a message with a line
    /// it does not know, and the prefix goes out alone, so nothing else is
    /// lost): it keeps its L1 copies until they expire, and reads the
    /// tombstones from Redis. Keys a resharding moves behind the walk
    /// may be missed (see the `prefix` module).
    ///
    /// # Errors
    ///
    /// When Redis is configured but failed during the walk or the
    /// tombstones (unavailable, timeout, failure, read-only replica). The
    /// local part is done anyway, and so is what Redis took before it
    /// failed. The other instances are told once a message of this
    /// instance gets through again: if the prefix's own message was not
    /// taken, the next one tells them to forget all of L1 instead (what
    /// every release understands). The entries not reached yet stay in
    /// Redis until they expire or the call is made again (unlike
    /// [`invalidate`](Cache::invalidate), nothing is kept to be replayed:
    /// retry it).
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::{cached, Cache};
    ///
    /// #[cached(key = "user:<id>:profile", ttl = 300)]
    /// async fn profile(id: u64) -> String {
    ///     format!("profile of {id}") // a database query
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = Cache::builder().namespace("app").build().await?;
    /// Cache::set_global(cache.clone());
    /// profile(42).await;
    /// profile(420).await;
    /// // Without Redis there is nothing to walk: 0 Redis entries.
    /// assert_eq!(cache.invalidate_prefix("user:42:").await?, 0);
    /// profile(42).await; // loaded again
    /// profile(420).await; // still in L1: `user:420:` does not start with `user:42:`
    /// assert_eq!(cache.stats().loads, 3);
    /// assert_eq!(cache.stats().l1_hits, 1);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        invalidate_prefix(self.engine(), prefix).await
    }

    /// Waits until the Redis work this cache runs in the background has
    /// ended: the writes of loaded values, `lock`'s "filled" messages and
    /// lock releases, which a `#[cached]` call does not wait for (it returns
    /// as soon as it has its value). Returns at once when none runs.
    ///
    /// Await it before the Tokio runtime shuts down (a short-lived program,
    /// a graceful shutdown), or the values loaded last may never reach
    /// Redis; or before another instance is expected to find them there.
    /// Work started while it waits is waited for too, so under steady
    /// traffic bound it with a timeout. Background refreshes (`early`,
    /// `stale`) are not waited for.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{cached, Cache};
    ///
    /// #[cached(key = "report:<day>", ttl = 3600)]
    /// async fn report(day: u32) -> String {
    ///     format!("report of day {day}") // a slow query
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = Cache::builder().namespace("app").build().await?;
    /// Cache::set_global(cache.clone());
    /// report(1).await; // loaded; with Redis, written in the background
    /// // Before the program ends: let the writes land, for at most 5 s.
    /// let _ = tokio::time::timeout(Duration::from_secs(5), cache.settled()).await;
    /// # Ok(()) }
    /// ```
    pub async fn settled(&self) {
        self.engine().background.settled().await;
    }

    /// Drops every entry of this instance's in-process tier.
    pub fn clear_local(&self) {
        self.engine().store.clear_l1();
    }

    /// Sets the state gauges (`metrics` feature) of a cache just built, and
    /// keeps them current.
    ///
    /// The breaker's gauge is also set on each transition (`breaker.rs`);
    /// the entry count is not: it changes on every insert, eviction and
    /// expiry, and reading it takes a read lock on every L1 shard, too much
    /// for each insert. So a small task re-reads all three every
    /// `GAUGE_PERIOD` (which also repairs the breaker gauge if two
    /// transitions raced). It ends when the cache is dropped. Without a
    /// Tokio runtime at hand (the [`Cache::global`] default first used
    /// outside one) the gauges are set once.
    #[cfg(feature = "metrics")]
    fn watch_gauges(&self) {
        refresh_gauges(self.engine());
        if self.engine().store.l1().is_none() && self.engine().store.l2().is_none() {
            return; // Nothing that changes.
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let engine = Arc::downgrade(self.engine());
        let dropped = self.engine().dropped();
        runtime.spawn(async move {
            let refresh = async {
                let mut ticks = tokio::time::interval(crate::metrics::GAUGE_PERIOD);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await; // The first tick is immediate: set above.
                loop {
                    ticks.tick().await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    refresh_gauges(&engine);
                }
            };
            tokio::select! {
                () = refresh => {}
                () = dropped => {}
            }
        });
    }
}

impl CacheBuilder {
    /// Checks the settings and builds the cache.
    ///
    /// With Redis configured, connecting happens in the background: `build`
    /// waits for the first attempt at most `connect_timeout`, and an
    /// unreachable Redis is not an error (the cache works in-process and
    /// keeps trying, with randomised pauses). Needs a Tokio runtime then.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unparsable URL, a TLS root CA that is no
    /// certificate, an invalid namespace, a jitter outside `0.0..1.0`, or a
    /// zero timeout, threshold or lifetime.
    pub async fn build(self) -> Result<Cache, Error> {
        self.validate()?;
        Cache::start(self).await
    }
}

/// Sets the state gauges (`metrics` feature) from the engine's state now.
#[cfg(feature = "metrics")]
fn refresh_gauges(engine: &Engine) {
    let store = &engine.store;
    let exported = &store.counters().exported;
    exported
        .breaker_state
        .set(engine.breaker_state().gauge_value());
    let l1_entries = store.l1().map_or(0, |l1| l1.len());
    exported.l1_entries.set(l1_entries as f64);
    let window = silence_window(engine.channel.heartbeat_interval());
    let verified = store.counters().channel_verified(window);
    exported.channel_verified.set(f64::from(u8::from(verified)));
    exported
        .invalidations_pending
        .set(engine.recovery.len() as f64);
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.namespace())
            .field("redis", &self.engine().redacted_url)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
