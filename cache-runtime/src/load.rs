//! The cache-aside path every `#[cached]` function runs through, and the
//! store of `#[write_through]`.
//!
//! 1. L1: a fresh entry of the right type (whose tags are current) is
//!    returned at once (no `await`). With `stale`, an entry past its TTL but
//!    inside the stale window is returned too, and a background refresh
//!    starts; with `early`, a fresh hit may start one shortly before expiry
//!    (XFetch).
//! 2. Single-flight: one caller per key and process goes on; the others
//!    wait for its outcome.
//! 3. L2: the leader reads Redis; a decodable entry fills L1 and returns.
//! 4. `lock`: on a miss, the leader takes a Redis lock or waits for the
//!    instance that holds it (see `lock.rs`).
//! 5. Load: the body runs, `Ok` values (and `None`, when `negative` is set)
//!    go to L1 and L2 with one jittered TTL, the value goes to the waiters,
//!    and the call returns. `Err` is returned and never stored. The Redis
//!    write is conditional on the key still holding what step 3 read, and
//!    the L1 insert on no invalidation having arrived meanwhile (see
//!    `invalidation.rs`: no stale set).
//!
//! Redis problems anywhere in this path are misses; they never reach the
//! caller.
//!
//! Each run of a body (step 5, and background refreshes) is instrumented
//! with a `cache.load` span (see [`load_span`]); hits create no span.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cache::{Cache, Inner, jittered};
use crate::codec::{self, DecodeError, Lifetime, TagVersion};
use crate::flight::{Outcome, Role};
use crate::invalidation::{Change, Snapshot};
use crate::keys::{KeyBuf, storage_key};
use crate::l1::{AnyValue, Timing};
use crate::lock::{Attempt, Lock, RECHECK_INTERVAL, publish_fill, try_lock};
use crate::refresh::{Refused, xfetch_due};
use crate::shape::{CacheValue, Loaded, Shape};
use crate::stats::bump;

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

/// Runs one `#[cached]` call: returns the cached value or runs `load`.
pub async fn get_or_load<R, M, F>(
    cache: &Cache,
    site: &'static Site,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    serve::<R, M, _, _, _>(cache, site, key.as_str(), tags, move || load, &NoRefresh).await
}

/// [`get_or_load`] for functions without the in-process tier
/// (`l1 = false`): every call reads Redis, so the miss path runs inline,
/// in the caller's own future, rather than in a per-call allocation that
/// only keeps L1 hits small.
pub async fn get_or_load_l2<R, M, F>(
    cache: &Cache,
    site: &'static Site,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    debug_assert!(!site.l1, "`get_or_load_l2` is for `l1 = false` functions");
    let key = key.as_str();
    let miss = cache
        .inner
        .miss::<R, M, _, _, _>(cache, site, key, tags, move || load, &NoRefresh);
    miss.await
}

/// Like [`get_or_load`], for `early` / `stale` functions: `load` makes a
/// future that owns its inputs, so the body can also run in the background.
pub async fn get_or_refresh<R, M, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Fn() -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let background = Refresher { load: &load, tags };
    serve::<R, M, _, _, _>(cache, site, key.as_str(), tags, &load, &background).await
}

/// Runs after a `#[write_through]` body: on success stores the returned
/// value under the key (unconditionally: it is the newest value), in L1 and
/// Redis, and tells other instances to drop their L1 copies. `Err`, `None`
/// and `Ok(None)` touch nothing. Never fails the call: Redis problems are
/// logged.
///
/// A plain `fn` that clones the value first and returns a future that does
/// not borrow `returned`, so the annotated function's future stays `Send`
/// whatever its error type.
pub fn write_through<'a, R, M: Shape<R>>(
    cache: &'a Cache,
    site: &'static Site,
    key: KeyBuf,
    tags: &'a [KeyBuf],
    returned: &R,
) -> impl Future<Output = ()> + Send + use<'a, R, M> {
    let value = match M::peek(returned) {
        Loaded::Value(value) => Some(value.clone()),
        // `Err`, or `None` (nothing was written): nothing to store.
        Loaded::Absent(()) | Loaded::Failed(()) => None,
    };
    async move {
        if let Some(value) = value {
            cache
                .inner
                .write_through::<M::Value>(site, key.as_str(), tags, value)
                .await;
        }
    }
}

async fn serve<R, M, L, F, B>(
    cache: &Cache,
    site: &'static Site,
    key: &str,
    tags: &[KeyBuf],
    load: L,
    background: &B,
) -> R
where
    M: Shape<R>,
    L: FnOnce() -> F,
    F: Future<Output = R>,
    B: Background<R>,
{
    let inner = &*cache.inner;
    if site.l1
        && let Some(hit) = inner.l1_lookup::<R, M>(site, key)
    {
        inner.after_hit::<R, M, B>(cache, site, key, &hit.found, background);
        return hit.returned;
    }
    // Boxed: the miss path's state (L2 reads, lock waits, the load) is large,
    // and keeping it out of line keeps every call's future, and so a hit,
    // small.
    Box::pin(inner.miss::<R, M, L, F, B>(cache, site, key, tags, load, background)).await
}

/// Starting a refresh of a key in the background.
trait Background<R> {
    /// Starts one unless one runs or failed recently for this key.
    fn refresh<M: Shape<R>>(
        &self,
        cache: &Cache,
        site: &'static Site,
        key: &str,
        seen_written_at_ms: u64,
    ) -> Result<(), Refused>;
}

/// For functions without `early` / `stale`.
struct NoRefresh;

impl<R> Background<R> for NoRefresh {
    fn refresh<M: Shape<R>>(
        &self,
        _: &Cache,
        _: &'static Site,
        _: &str,
        _: u64,
    ) -> Result<(), Refused> {
        Ok(())
    }
}

struct Refresher<'a, F> {
    load: &'a F,
    tags: &'a [KeyBuf],
}

impl<R, F, Fut> Background<R> for Refresher<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    fn refresh<M: Shape<R>>(
        &self,
        cache: &Cache,
        site: &'static Site,
        key: &str,
        seen_written_at_ms: u64,
    ) -> Result<(), Refused> {
        let inner = &cache.inner;
        let ticket = inner.refreshes.begin(key, inner.refresh_timeout)?;
        let body = (self.load)();
        let cache = cache.clone();
        let key = key.to_owned();
        let tags: Vec<String> = self
            .tags
            .iter()
            .map(|tag| tag.as_str().to_owned())
            .collect();
        // The call that started the refresh, which the refresh's span
        // follows from (it is not its parent: the call returns first).
        let caller = tracing::Span::current();
        tokio::spawn(async move {
            let mut ticket = ticket;
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            if !cache
                .inner
                .refresh::<R, M>(site, &key, &tags, seen_written_at_ms, body, &caller)
                .await
            {
                ticket.failed();
            }
        });
        Ok(())
    }
}

/// A value to write to Redis once the caller's waiters are released.
struct L2Write {
    bytes: Vec<u8>,
    ttl: Duration,
}

/// What one call produced: its return value, what waiters get, what goes
/// to Redis.
struct Served<R> {
    returned: R,
    outcome: Outcome,
    l2_write: Option<L2Write>,
}

impl<R> Served<R> {
    /// A value read from Redis, for the caller and the flight's waiters.
    fn shared<M: Shape<R>>(value: M::Value) -> Served<R> {
        Served {
            returned: M::from_value(M::Value::clone(&value)),
            outcome: Outcome::Value(Arc::new(value)),
            l2_write: None,
        }
    }
}

/// How fresh a served entry was, to decide on a background refresh.
struct Found {
    stale: bool,
    early_due: bool,
    written_at_ms: u64,
}

struct L1Hit<R> {
    returned: R,
    found: Found,
}

/// What a load saw before it started: invalidations after `snapshot` make
/// its result unfit for L1; its tags' versions go with the stored value.
pub(crate) struct Context {
    snapshot: Snapshot,
    tags: Option<Arc<[TagVersion]>>,
}

/// What Redis held before a load, for its conditional write.
enum Prior {
    Absent,
    /// SHA-1 (hex) of the bytes held.
    Held(String),
}

impl Prior {
    fn of(bytes: &[u8]) -> Prior {
        Prior::Held(sha1_smol::Sha1::from(bytes).digest().to_string())
    }

    fn expected(&self) -> Option<&str> {
        match self {
            Prior::Absent => None,
            Prior::Held(sha1) => Some(sha1),
        }
    }
}

/// What a read of Redis found.
enum L2Lookup<R, V> {
    Hit(Served<R>, Found),
    /// A value for a function without L1 (`l1 = false`): nothing else holds
    /// it yet, so it is cloned for waiters only if some joined the flight.
    Unshared(V, Found),
    /// Redis answered: nothing usable (absent, a tombstone, undecodable,
    /// other shape, an old tag version, or stale for a function without
    /// `stale`). Holds what was there, for the conditional write.
    Miss(Prior),
    /// No Redis, or it did not answer (skipped, failed, timed out).
    Unavailable,
}

/// What the Redis lock gave a caller that missed.
enum Locked<R> {
    /// Another instance loaded the value meanwhile.
    Filled(Served<R>, Found),
    /// This caller holds the lock and loads.
    Owner(Lock),
    /// No lock (Redis unavailable, or the wait ran out): load anyway.
    Without,
}

impl Inner {
    async fn write_through<V: CacheValue>(
        &self,
        site: &'static Site,
        key: &str,
        tags: &[KeyBuf],
        value: V,
    ) {
        // In-flight loads of this key must not put an older value in L1.
        self.epochs.bump_key(key);
        let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
        let context = self.context(key, &tags).await;
        let lifetime = Lifetime {
            ttl: jittered(site.ttl, site.jitter.unwrap_or(self.default_jitter)),
            stale: site.stale.unwrap_or_default(),
            load: Duration::ZERO,
        };
        let bytes = self.encode(
            site,
            &value,
            lifetime,
            context.tags.as_deref().unwrap_or_default(),
        );
        let approx_bytes = bytes.as_ref().map_or(0, Vec::len);
        self.l1_store(
            site,
            key,
            Some(Arc::new(value)),
            &timing_of(&lifetime, &context),
            approx_bytes,
            context.snapshot,
        );
        let Some(l2) = &self.l2 else {
            return;
        };
        let stored = match bytes {
            Some(bytes) => {
                l2.set(&storage_key(&self.namespace, key), &bytes, lifetime.total())
                    .await
            }
            None => Ok(()),
        };
        let published = self.publish(&[Change::Key(key.to_owned())]).await;
        if let Err(error) = stored.and(published) {
            tracing::error!(function = site.function, template = site.template, %error, "write-through did not reach Redis: other instances may serve the old value until it expires");
        }
    }

    #[inline]
    fn l1_lookup<R, M: Shape<R>>(&self, site: &'static Site, key: &str) -> Option<L1Hit<R>> {
        let (entry, now) = self.l1.as_ref()?.get(key)?;
        let fresh = entry.is_fresh(now);
        if !fresh && site.stale.is_none() {
            return None;
        }
        if let Some(tags) = &entry.tags
            && !self.tags_current(tags)
        {
            return None;
        }
        let returned = match &entry.value {
            Some(value) => M::from_value(value.downcast_ref::<M::Value>()?.clone()),
            None => {
                let absent = M::absent()?;
                bump(&self.counters.negative_hits);
                absent
            }
        };
        bump(&self.counters.l1_hits);
        let early_due = fresh
            && site.early.is_some_and(|beta| {
                xfetch_due(
                    now,
                    entry.fresh_until,
                    u64::from(entry.load_ms) * 1_000_000,
                    beta,
                )
            });
        Some(L1Hit {
            returned,
            found: Found {
                stale: !fresh,
                early_due,
                written_at_ms: entry.written_at_ms,
            },
        })
    }

    /// Starts the background refresh a hit calls for, and counts it.
    fn after_hit<R, M: Shape<R>, B: Background<R>>(
        &self,
        cache: &Cache,
        site: &'static Site,
        key: &str,
        found: &Found,
        background: &B,
    ) {
        if found.stale {
            match background.refresh::<M>(cache, site, key, found.written_at_ms) {
                Err(Refused::FailedRecently) => bump(&self.counters.fail_safe_serves),
                Ok(()) | Err(Refused::Running) => bump(&self.counters.stale_serves),
            }
        } else if found.early_due
            && background
                .refresh::<M>(cache, site, key, found.written_at_ms)
                .is_ok()
        {
            bump(&self.counters.early_refreshes);
        }
    }

    /// Reads what a load must know before it starts.
    pub(crate) async fn context(&self, key: &str, tags: &[&str]) -> Context {
        let snapshot = self.epochs.snapshot(key);
        let tags = if tags.is_empty() {
            None
        } else {
            Some(self.tag_versions_of(tags).await.into())
        };
        Context { snapshot, tags }
    }

    async fn miss<R, M, L, F, B>(
        &self,
        cache: &Cache,
        site: &'static Site,
        key: &str,
        tags: &[KeyBuf],
        load: L,
        background: &B,
    ) -> R
    where
        M: Shape<R>,
        L: FnOnce() -> F,
        F: Future<Output = R>,
        B: Background<R>,
    {
        let storage_key = storage_key(&self.namespace, key);
        let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
        let outcome = loop {
            match self.flights.join(key) {
                Role::Leader(leader) => {
                    let context = self.context(key, &tags).await;
                    let (locked, prior) = match self
                        .l2_lookup::<R, M>(site, key, &storage_key, &context)
                        .await
                    {
                        L2Lookup::Hit(served, found) => {
                            leader.complete(served.outcome);
                            self.after_hit::<R, M, B>(cache, site, key, &found, background);
                            return served.returned;
                        }
                        L2Lookup::Unshared(value, found) => {
                            leader.complete_with(|| {
                                Outcome::Value(Arc::new(M::Value::clone(&value)))
                            });
                            self.after_hit::<R, M, B>(cache, site, key, &found, background);
                            return M::from_value(value);
                        }
                        // Boxed: its state (a lock attempt, a timer, a second
                        // L2 read) would otherwise make every miss's future,
                        // and so every L2 read's allocation, larger.
                        L2Lookup::Miss(prior) if site.lock => (
                            Box::pin(self.lock_or_wait::<R, M>(site, key, &storage_key, &context))
                                .await,
                            Some(prior),
                        ),
                        L2Lookup::Miss(prior) => (Locked::Without, Some(prior)),
                        L2Lookup::Unavailable => (Locked::Without, None),
                    };
                    let (served, lock) = match locked {
                        Locked::Filled(served, found) => {
                            leader.complete(served.outcome);
                            self.after_hit::<R, M, B>(cache, site, key, &found, background);
                            return served.returned;
                        }
                        // The load and the write below are boxed: a miss
                        // runs the body anyway, while an L2 hit (the common
                        // way through here) then allocates a smaller future.
                        Locked::Owner(lock) => {
                            bump(&self.counters.misses);
                            let load = self.load::<R, M, F>(site, key, &context, load());
                            (Box::pin(lock.hold_while(load)).await, Some(lock))
                        }
                        Locked::Without => {
                            bump(&self.counters.misses);
                            let load = self.load::<R, M, F>(site, key, &context, load());
                            (Box::pin(load).await, None)
                        }
                    };
                    // Waiters are released before the Redis write.
                    leader.complete(served.outcome);
                    // Only write when the read just worked (`prior` is what
                    // it saw): after a failed or timed-out read a write would
                    // most likely wait out the timeout too, and a call waits
                    // on Redis at most once.
                    if let Some(prior) = prior {
                        Box::pin(self.l2_write(
                            &storage_key,
                            served.l2_write,
                            &prior,
                            lock.is_some(),
                        ))
                        .await;
                    }
                    if let Some(lock) = lock {
                        lock.release().await;
                    }
                    return served.returned;
                }
                Role::Waiter(waiter) => match waiter.outcome().await {
                    Some(outcome) => break outcome,
                    // The leader was cancelled or panicked: try to take over.
                    None => continue,
                },
            }
        };
        bump(&self.counters.misses);
        match outcome {
            Outcome::Value(value) => {
                if let Some(value) = value.downcast_ref::<M::Value>() {
                    bump(&self.counters.coalesced);
                    return M::from_value(value.clone());
                }
            }
            Outcome::Absent => {
                if let Some(absent) = M::absent() {
                    bump(&self.counters.coalesced);
                    return absent;
                }
            }
            Outcome::Failed => {}
        }
        // The leader's body failed (errors are not shared, so each waiter
        // gets its own) or its value has another type: run our own body,
        // without a flight. Its value goes to L1 only: with no read of Redis
        // before it, there is nothing to make a Redis write conditional on.
        let context = self.context(key, &tags).await;
        Box::pin(self.load::<R, M, F>(site, key, &context, load()))
            .await
            .returned
    }

    /// Takes the Redis lock for a missing key, or waits for the instance
    /// that holds it to fill the key (woken by its "filled" message, with a
    /// bounded re-check), retrying the lock meanwhile.
    async fn lock_or_wait<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        storage_key: &str,
        context: &Context,
    ) -> Locked<R> {
        let Some(l2) = &self.l2 else {
            return Locked::Without;
        };
        // Listen before trying, so a fill right after our attempt is heard.
        let watch = l2.fills.watch(storage_key);
        let mut filled = pin!(watch.notify.notified());
        filled.as_mut().enable();
        match try_lock(l2, storage_key, self.lock_ttl).await {
            Attempt::Acquired(lock) => {
                bump(&self.counters.lock_acquired);
                return Locked::Owner(lock);
            }
            Attempt::Unavailable => return Locked::Without,
            Attempt::Held => bump(&self.counters.lock_waits),
        }
        let deadline = Instant::now() + self.lock_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bump(&self.counters.lock_wait_timeouts);
                tracing::debug!(
                    function = site.function,
                    template = site.template,
                    "gave up waiting for another instance's load"
                );
                return Locked::Without;
            }
            tokio::select! {
                () = filled.as_mut() => {}
                () = tokio::time::sleep(left.min(RECHECK_INTERVAL)) => {}
            }
            filled.set(watch.notify.notified());
            filled.as_mut().enable();
            match self
                .l2_lookup::<R, M>(site, key, storage_key, context)
                .await
            {
                L2Lookup::Hit(served, found) => return Locked::Filled(served, found),
                L2Lookup::Unshared(value, found) => {
                    return Locked::Filled(Served::shared::<M>(value), found);
                }
                L2Lookup::Unavailable => return Locked::Without,
                L2Lookup::Miss(_) => {}
            }
            // The owner may have failed (no value) or died (lock expired).
            match try_lock(l2, storage_key, self.lock_ttl).await {
                Attempt::Acquired(lock) => {
                    bump(&self.counters.lock_acquired);
                    return Locked::Owner(lock);
                }
                Attempt::Unavailable => return Locked::Without,
                Attempt::Held => {}
            }
        }
    }

    /// Reads Redis; a usable entry also fills L1.
    async fn l2_lookup<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        storage_key: &str,
        context: &Context,
    ) -> L2Lookup<R, M::Value> {
        let Some(l2) = self.l2.as_ref() else {
            return L2Lookup::Unavailable;
        };
        // Errors were counted and logged by L2: for a read they are a miss.
        let bytes = match l2.get(storage_key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return L2Lookup::Miss(Prior::Absent),
            Err(_) => return L2Lookup::Unavailable,
        };
        let decoded = match codec::decode::<M::Value>(&bytes, self.max_value_bytes) {
            Ok(decoded) => decoded,
            Err(DecodeError::Tombstone) => return L2Lookup::Miss(Prior::of(&bytes)),
            Err(reason) => {
                bump(&self.counters.l2_undecodable);
                tracing::debug!(
                    function = site.function,
                    template = site.template,
                    ?reason,
                    "undecodable value in Redis: treated as a miss and overwritten"
                );
                return L2Lookup::Miss(Prior::of(&bytes));
            }
        };
        let now_ms = codec::now_ms();
        let fresh = decoded.fresh_remaining(now_ms);
        let total = decoded.total_remaining(now_ms);
        if total.is_zero() || (fresh.is_zero() && site.stale.is_none()) {
            return L2Lookup::Miss(Prior::of(&bytes));
        }
        if !decoded.tags.is_empty() {
            let names: Vec<&str> = decoded.tags.iter().map(|(tag, _)| &**tag).collect();
            if self.tag_versions_of(&names).await != decoded.tags {
                // A tag moved on since it was stored.
                return L2Lookup::Miss(Prior::of(&bytes));
            }
        }
        let found = Found {
            stale: fresh.is_zero(),
            early_due: !fresh.is_zero()
                && site.early.is_some_and(|beta| {
                    xfetch_due(
                        0,
                        fresh.as_millis() as u64,
                        u64::from(decoded.load_ms),
                        beta,
                    )
                }),
            written_at_ms: decoded.written_at_ms,
        };
        if !site.l1
            && let Some(value) = decoded.value
        {
            bump(&self.counters.l2_hits);
            return L2Lookup::Unshared(value, found);
        }
        let (returned, value) = match decoded.value {
            Some(value) => (
                M::from_value(value.clone()),
                Some(Arc::new(value) as AnyValue),
            ),
            // A negative entry, read by a function that cannot return `None`
            // (another function shares the key): a miss for this one.
            None => match M::absent() {
                Some(absent) => (absent, None),
                None => return L2Lookup::Miss(Prior::of(&bytes)),
            },
        };
        if value.is_none() {
            bump(&self.counters.negative_hits);
        }
        bump(&self.counters.l2_hits);
        let timing = Timing {
            fresh,
            stale: total - fresh,
            load_ms: decoded.load_ms,
            written_at_ms: decoded.written_at_ms,
            tags: (!decoded.tags.is_empty()).then(|| decoded.tags.into()),
        };
        self.l1_store(
            site,
            key,
            value.clone(),
            &timing,
            bytes.len(),
            context.snapshot,
        );
        L2Lookup::Hit(
            Served {
                returned,
                outcome: value.map_or(Outcome::Absent, Outcome::Value),
                l2_write: None,
            },
            found,
        )
    }

    /// Runs the body and stores what may be stored in L1; returns the L2
    /// write still to do.
    async fn load<R, M, F>(
        &self,
        site: &'static Site,
        key: &str,
        context: &Context,
        load: F,
    ) -> Served<R>
    where
        M: Shape<R>,
        F: Future<Output = R>,
    {
        bump(&self.counters.loads);
        let span = load_span(site, false);
        let started = Instant::now();
        let returned = load.instrument(span.clone()).await;
        let took = started.elapsed();
        self.counters.exported.load_seconds.record(took);
        let served =
            span.in_scope(|| self.store_loaded::<R, M>(site, key, context, returned, took));
        span.record("outcome", outcome_name(&served.outcome));
        served
    }

    fn store_loaded<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        context: &Context,
        returned: R,
        took: Duration,
    ) -> Served<R> {
        let jitter = site.jitter.unwrap_or(self.default_jitter);
        let stale = site.stale.unwrap_or_default();
        let tags = context.tags.as_deref().unwrap_or_default();
        match M::split(returned) {
            Loaded::Value(value) => {
                let lifetime = Lifetime {
                    ttl: jittered(site.ttl, jitter),
                    stale,
                    load: took,
                };
                let bytes = self.encode(site, &value, lifetime, tags);
                let value = Arc::new(value);
                let approx_bytes = bytes.as_ref().map_or(0, Vec::len);
                self.l1_store(
                    site,
                    key,
                    Some(value.clone()),
                    &timing_of(&lifetime, context),
                    approx_bytes,
                    context.snapshot,
                );
                Served {
                    returned: M::from_value(M::Value::clone(&value)),
                    outcome: Outcome::Value(value),
                    l2_write: bytes.map(|bytes| L2Write {
                        bytes,
                        ttl: lifetime.total(),
                    }),
                }
            }
            Loaded::Absent(returned) => {
                let l2_write = site.negative.map(|negative| {
                    let lifetime = Lifetime {
                        ttl: jittered(negative, jitter),
                        stale,
                        load: took,
                    };
                    self.l1_store(
                        site,
                        key,
                        None,
                        &timing_of(&lifetime, context),
                        0,
                        context.snapshot,
                    );
                    L2Write {
                        bytes: codec::encode_negative::<M::Value>(lifetime, tags),
                        ttl: lifetime.total(),
                    }
                });
                Served {
                    returned,
                    outcome: Outcome::Absent,
                    l2_write,
                }
            }
            Loaded::Failed(returned) => {
                bump(&self.counters.load_errors);
                Served {
                    returned,
                    outcome: Outcome::Failed,
                    l2_write: None,
                }
            }
        }
    }

    /// One background refresh (`early`, `stale`): with `lock`, only if this
    /// instance wins the lock; takes a newer value another instance already
    /// wrote to Redis instead of running the body; otherwise runs the body
    /// under `refresh_timeout`. Returns false when the refresh failed.
    async fn refresh<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        tags: &[&str],
        seen_written_at_ms: u64,
        body: impl Future<Output = R>,
        caller: &tracing::Span,
    ) -> bool {
        let storage_key = storage_key(&self.namespace, key);
        let context = self.context(key, tags).await;
        let mut lock = None;
        let mut prior = None;
        if let Some(l2) = &self.l2 {
            if site.lock {
                match try_lock(l2, &storage_key, self.lock_ttl).await {
                    Attempt::Acquired(acquired) => lock = Some(acquired),
                    // Another instance refreshes this key.
                    Attempt::Held => return true,
                    Attempt::Unavailable => {}
                }
            }
            match self
                .take_newer_from_l2::<M::Value>(
                    site,
                    key,
                    &storage_key,
                    seen_written_at_ms,
                    &context,
                )
                .await
            {
                Newer::Taken => {
                    if let Some(lock) = lock {
                        lock.release().await;
                    }
                    return true;
                }
                Newer::NotThere(seen) => prior = seen,
            }
        }
        bump(&self.counters.loads);
        let span = load_span(site, true);
        span.follows_from(caller);
        let started = Instant::now();
        let ran = tokio::time::timeout(self.refresh_timeout, body.instrument(span.clone())).await;
        let took = started.elapsed();
        // A body cut off by the timeout is sampled too: it ran that long.
        self.counters.exported.load_seconds.record(took);
        let succeeded = match ran {
            Ok(returned) => {
                let served = span
                    .in_scope(|| self.store_loaded::<R, M>(site, key, &context, returned, took));
                span.record("outcome", outcome_name(&served.outcome));
                let stored = !matches!(served.outcome, Outcome::Failed);
                if let Some(prior) = &prior {
                    self.l2_write(&storage_key, served.l2_write, prior, lock.is_some())
                        .await;
                }
                stored
            }
            Err(_elapsed) => {
                span.record("outcome", "timeout");
                false
            }
        };
        if succeeded {
            self.refreshes.clear_failure(key);
        } else {
            bump(&self.counters.refresh_errors);
            if let Some(suppressed) = self.refresh_log.admit() {
                tracing::warn!(
                    function = site.function,
                    template = site.template,
                    suppressed,
                    "background refresh failed (the body returned Err or ran past refresh_timeout); serving the stale value meanwhile"
                );
            }
        }
        if let Some(lock) = lock {
            lock.release().await;
        }
        succeeded
    }

    /// Fills L1 from Redis when Redis holds a fresh value written after the
    /// one this instance has; otherwise says what Redis held.
    async fn take_newer_from_l2<V: CacheValue>(
        &self,
        site: &'static Site,
        key: &str,
        storage_key: &str,
        seen_written_at_ms: u64,
        context: &Context,
    ) -> Newer {
        let Some(l2) = &self.l2 else {
            return Newer::NotThere(None);
        };
        let bytes = match l2.get(storage_key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Newer::NotThere(Some(Prior::Absent)),
            Err(_) => return Newer::NotThere(None),
        };
        let prior = Some(Prior::of(&bytes));
        let Ok(decoded) = codec::decode::<V>(&bytes, self.max_value_bytes) else {
            return Newer::NotThere(prior);
        };
        let now_ms = codec::now_ms();
        let fresh = decoded.fresh_remaining(now_ms);
        if decoded.written_at_ms <= seen_written_at_ms
            || fresh.is_zero()
            || decoded.tags[..] != *context.tags.as_deref().unwrap_or_default()
        {
            return Newer::NotThere(prior);
        }
        let timing = Timing {
            fresh,
            stale: decoded.total_remaining(now_ms) - fresh,
            load_ms: decoded.load_ms,
            written_at_ms: decoded.written_at_ms,
            tags: context.tags.clone(),
        };
        self.l1_store(
            site,
            key,
            decoded.value.map(|v| Arc::new(v) as AnyValue),
            &timing,
            bytes.len(),
            context.snapshot,
        );
        self.refreshes.clear_failure(key);
        Newer::Taken
    }

    /// Encodes a value for Redis (its length also sizes the L1 entry).
    fn encode<V: CacheValue>(
        &self,
        site: &'static Site,
        value: &V,
        lifetime: Lifetime,
        tags: &[TagVersion],
    ) -> Option<Vec<u8>> {
        match codec::encode(value, lifetime, tags, self.max_value_bytes) {
            Ok(bytes) => Some(bytes),
            Err(reason) => {
                bump(&self.counters.l2_unstorable);
                if let Some(suppressed) = self.unstorable_log.admit() {
                    tracing::warn!(function = site.function, template = site.template, %reason, suppressed, "value not stored in Redis");
                }
                None
            }
        }
    }

    /// Inserts into L1, unless an invalidation that concerns the key arrived
    /// since `before` (the value may be older than it).
    fn l1_store(
        &self,
        site: &'static Site,
        key: &str,
        value: Option<AnyValue>,
        timing: &Timing,
        approx_bytes: usize,
        before: Snapshot,
    ) {
        if site.l1
            && let Some(l1) = &self.l1
            && self.epochs.unchanged(key, before, timing.tags.is_some())
        {
            l1.insert(key, value, timing, approx_bytes);
        }
    }

    /// Writes to Redis if the key still holds `prior`; with `announce`,
    /// also tells instances waiting on the lock that the key is filled.
    async fn l2_write(
        &self,
        storage_key: &str,
        write: Option<L2Write>,
        prior: &Prior,
        announce: bool,
    ) {
        if let (Some(l2), Some(write)) = (&self.l2, write) {
            // Failures were counted and logged by L2; the value is still
            // returned (and in L1). A refused write means an invalidation
            // or a newer value got there first: ours is older, drop it.
            if let Ok(true) = l2
                .set_if_unchanged(storage_key, prior.expected(), &write.bytes, write.ttl)
                .await
                && announce
            {
                let _ = publish_fill(l2, &self.namespace, storage_key).await;
            }
        }
    }
}

/// What a refresh found in Redis.
enum Newer {
    /// A newer value, now in L1.
    Taken,
    /// No newer value; what Redis held, if it answered.
    NotThere(Option<Prior>),
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
fn load_span(site: &'static Site, refresh: bool) -> tracing::Span {
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

/// The `outcome` of a load's span.
fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Value(_) => "ok",
        Outcome::Absent => "none",
        Outcome::Failed => "err",
    }
}

/// The L1 timing of a value just loaded.
fn timing_of(lifetime: &Lifetime, context: &Context) -> Timing {
    Timing {
        fresh: lifetime.ttl,
        stale: lifetime.stale,
        load_ms: lifetime.load.as_millis().min(u128::from(u32::MAX)) as u32,
        written_at_ms: codec::now_ms(),
        tags: context.tags.clone(),
    }
}
