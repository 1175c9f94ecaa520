//! The cache-aside read path every `#[cached]` function runs through.
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
//!    instance that holds it (see `lock.rs`); background refreshes run in
//!    `refresh.rs`.
//! 5. Load: the body runs, `Ok` values (and `None`, when `negative` is set)
//!    go to L1 and L2 with one jittered TTL, the value goes to the waiters,
//!    and the call returns. `Err` is returned and never stored. The Redis
//!    write is conditional on the key still holding what step 3 read, and
//!    the L1 insert on no invalidation having arrived meanwhile (see
//!    `store.rs`: no stale set).
//!
//! Redis problems anywhere in this path are misses; they never reach the
//! caller.
//!
//! Each run of a body (step 5, and background refreshes) is instrumented
//! with a `cache.load` span (see `site::load_span`); hits create no span.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::engine::{Cache, Engine};
use crate::flight::Role;
use crate::keys::KeyBuf;
use crate::lock::{Lock, Locked, Recheck};
use crate::refresh::{Refused, xfetch_due};
use crate::shape::Shape;
use crate::site::{Site, load_span};
use crate::stats::bump;
use crate::store::{Context, L2Write, Prior, Read, Served};
use crate::value::{AnyValue, Outcome};

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
    let call = Call::new(cache, site, &key, tags);
    serve::<R, M, _, _, _>(call, move || load, &NoRefresh).await
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
    let call = Call::new(cache, site, &key, tags);
    miss::<R, M, _, _, _>(call, move || load, &NoRefresh).await
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
    let background = Refresher { load: &load };
    let call = Call::new(cache, site, &key, tags);
    serve::<R, M, _, _, _>(call, &load, &background).await
}

/// One call of an annotated function: its cache, its site, its key.
#[derive(Clone, Copy)]
struct Call<'a> {
    cache: &'a Cache,
    site: &'static Site,
    key: &'a str,
    tags: &'a [KeyBuf],
}

impl<'a> Call<'a> {
    #[inline]
    fn new(cache: &'a Cache, site: &'static Site, key: &'a KeyBuf, tags: &'a [KeyBuf]) -> Self {
        Call {
            cache,
            site,
            key: key.as_str(),
            tags,
        }
    }
}

async fn serve<R, M, L, F, B>(call: Call<'_>, load: L, background: &B) -> R
where
    M: Shape<R>,
    L: FnOnce() -> F,
    F: Future<Output = R>,
    B: Background<R>,
{
    if call.site.l1
        && let Some(hit) = l1_lookup::<R, M>(call.cache.engine(), call.site, call.key)
    {
        after_hit::<R, M, B>(call, &hit.found, background);
        return hit.returned;
    }
    // Boxed: the miss path's state (L2 reads, lock waits, the load) is large,
    // and keeping it out of line keeps every call's future, and so a hit,
    // small.
    Box::pin(miss::<R, M, L, F, B>(call, load, background)).await
}

/// Starting a refresh of a key in the background (`early`, `stale`).
trait Background<R> {
    /// Starts one unless one runs or failed recently for this key.
    fn refresh<M: Shape<R>>(&self, call: Call<'_>, seen_written_at_ms: u64) -> Result<(), Refused>;
}

/// For functions without `early` / `stale`.
struct NoRefresh;

impl<R> Background<R> for NoRefresh {
    fn refresh<M: Shape<R>>(&self, _: Call<'_>, _: u64) -> Result<(), Refused> {
        Ok(())
    }
}

/// Starts refreshes as a task of their own (run by `refresh.rs`), which
/// keeps the cache alive while it runs.
struct Refresher<'a, F> {
    load: &'a F,
}

impl<R, F, Fut> Background<R> for Refresher<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    fn refresh<M: Shape<R>>(&self, call: Call<'_>, seen_written_at_ms: u64) -> Result<(), Refused> {
        let ticket = call.cache.engine().refreshes.begin(call.key)?;
        let body = (self.load)();
        let cache = call.cache.clone();
        let site = call.site;
        let key = call.key.to_owned();
        let tags: Vec<String> = call
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
            let engine = cache.engine();
            let refreshed = engine
                .refreshes
                .run::<R, M>(
                    &engine.store,
                    &engine.tags,
                    &engine.locks,
                    site,
                    &key,
                    &tags,
                    seen_written_at_ms,
                    body,
                    &caller,
                )
                .await;
            if !refreshed {
                ticket.failed();
            }
        });
        Ok(())
    }
}

/// How fresh a served entry was, to decide on a background refresh.
struct Fresh {
    stale: bool,
    early_due: bool,
    written_at_ms: u64,
}

struct L1Hit<R> {
    returned: R,
    found: Fresh,
}

/// What a read of Redis found, for the read path.
enum L2Lookup<R, V> {
    Hit(Served<R>, Fresh),
    /// A value for a function without L1 (`l1 = false`): nothing else holds
    /// it yet, so it is cloned for waiters only if some joined the flight.
    Unshared(V, Fresh),
    /// Redis answered: nothing usable (absent, a tombstone, undecodable,
    /// other shape, an old tag version, or stale for a function without
    /// `stale`). Holds what was there, for the conditional write.
    Miss(Prior),
    /// No Redis, or it did not answer (skipped, failed, timed out).
    Unavailable,
}

#[inline]
fn l1_lookup<R, M: Shape<R>>(engine: &Engine, site: &'static Site, key: &str) -> Option<L1Hit<R>> {
    let (entry, now) = engine.store.l1_get(key)?;
    let fresh = entry.is_fresh(now);
    if !fresh && site.stale.is_none() {
        return None;
    }
    if let Some(tags) = &entry.tags
        && !engine.tags.current(tags)
    {
        return None;
    }
    let counters = engine.store.counters();
    let returned = match &entry.value {
        Some(value) => M::from_value(value.downcast_ref::<M::Value>()?.clone()),
        None => {
            let absent = M::absent()?;
            bump(&counters.negative_hits);
            absent
        }
    };
    bump(&counters.l1_hits);
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
        found: Fresh {
            stale: !fresh,
            early_due,
            written_at_ms: entry.written_at_ms,
        },
    })
}

/// Starts the background refresh a hit calls for, and counts it.
fn after_hit<R, M: Shape<R>, B: Background<R>>(call: Call<'_>, found: &Fresh, background: &B) {
    let counters = call.cache.engine().store.counters();
    if found.stale {
        match background.refresh::<M>(call, found.written_at_ms) {
            Err(Refused::FailedRecently) => bump(&counters.fail_safe_serves),
            Ok(()) | Err(Refused::Running) => bump(&counters.stale_serves),
        }
    } else if found.early_due && background.refresh::<M>(call, found.written_at_ms).is_ok() {
        bump(&counters.early_refreshes);
    }
}

async fn miss<R, M, L, F, B>(call: Call<'_>, load: L, background: &B) -> R
where
    M: Shape<R>,
    L: FnOnce() -> F,
    F: Future<Output = R>,
    B: Background<R>,
{
    let Call {
        cache,
        site,
        key,
        tags,
    } = call;
    let engine = cache.engine();
    let store = &engine.store;
    let storage_key = store.storage_key(key);
    let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
    let outcome = loop {
        match engine.flights.join(key, store.epochs(), !tags.is_empty()) {
            Role::Leader(leader) => {
                let context = engine.tags.context(store, key, &tags).await;
                let (locked, prior) =
                    match l2_lookup::<R, M>(engine, site, key, &storage_key, &context).await {
                        L2Lookup::Hit(served, found) => {
                            leader.complete(served.outcome);
                            after_hit::<R, M, B>(call, &found, background);
                            return served.returned;
                        }
                        L2Lookup::Unshared(value, found) => {
                            leader.complete_with(|| {
                                Outcome::Value(Arc::new(M::Value::clone(&value)))
                            });
                            after_hit::<R, M, B>(call, &found, background);
                            return M::from_value(value);
                        }
                        // Boxed: its state (a lock attempt, a timer, a second
                        // L2 read) would otherwise make every miss's future,
                        // and so every L2 read's allocation, larger.
                        L2Lookup::Miss(prior) if site.lock => (
                            Box::pin(lock_or_wait::<R, M>(
                                engine,
                                site,
                                key,
                                &storage_key,
                                &context,
                            ))
                            .await,
                            Some(prior),
                        ),
                        L2Lookup::Miss(prior) => (Locked::Without, Some(prior)),
                        L2Lookup::Unavailable => (Locked::Without, None),
                    };
                let (served, lock) = match locked {
                    Locked::Filled((served, found)) => {
                        leader.complete(served.outcome);
                        after_hit::<R, M, B>(call, &found, background);
                        return served.returned;
                    }
                    // The load and the write below are boxed: a miss
                    // runs the body anyway, while an L2 hit (the common
                    // way through here) then allocates a smaller future.
                    Locked::Owner(lock) => {
                        bump(&store.counters().misses);
                        let load = run_load::<R, M, F>(engine, site, key, &context, load());
                        (Box::pin(lock.hold_while(load)).await, Some(lock))
                    }
                    Locked::Without => {
                        bump(&store.counters().misses);
                        let load = run_load::<R, M, F>(engine, site, key, &context, load());
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
                    Box::pin(write_loaded(
                        engine,
                        &storage_key,
                        served.l2_write,
                        &prior,
                        lock.as_ref(),
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
    bump(&store.counters().misses);
    match outcome {
        Outcome::Value(value) => {
            if let Some(value) = value.downcast_ref::<M::Value>() {
                bump(&store.counters().coalesced);
                return M::from_value(value.clone());
            }
        }
        Outcome::Absent => {
            if let Some(absent) = M::absent() {
                bump(&store.counters().coalesced);
                return absent;
            }
        }
        Outcome::Failed => {}
    }
    // The leader's body failed (errors are not shared, so each waiter
    // gets its own) or its value has another type: run our own body,
    // without a flight. Its value goes to L1 only: with no read of Redis
    // before it, there is nothing to make a Redis write conditional on.
    let context = engine.tags.context(store, key, &tags).await;
    Box::pin(run_load::<R, M, F>(engine, site, key, &context, load()))
        .await
        .returned
}

/// Takes the Redis lock for a missing key, or waits for the instance that
/// holds it to fill the key (see `lock.rs`).
async fn lock_or_wait<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    storage_key: &str,
    context: &Context,
) -> Locked<(Served<R>, Fresh)> {
    let Some(l2) = engine.store.l2() else {
        return Locked::Without;
    };
    let recheck = || async {
        match l2_lookup::<R, M>(engine, site, key, storage_key, context).await {
            L2Lookup::Hit(served, found) => Recheck::Filled((served, found)),
            L2Lookup::Unshared(value, found) => {
                Recheck::Filled((Served::shared::<M>(value), found))
            }
            L2Lookup::Unavailable => Recheck::Unavailable,
            L2Lookup::Miss(_) => Recheck::Missing,
        }
    };
    engine
        .locks
        .lock_or_wait(l2, engine.store.counters(), site, storage_key, recheck)
        .await
}

/// Reads Redis; a usable entry also fills L1.
async fn l2_lookup<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    storage_key: &str,
    context: &Context,
) -> L2Lookup<R, M::Value> {
    let store = &engine.store;
    let probe = engine.tags.probe(store, context);
    let mut found = match store
        .read::<M::Value>(site, storage_key, probe.keys())
        .await
    {
        Read::Entry(found) => found,
        Read::Unusable(prior) => return L2Lookup::Miss(prior),
        Read::Unavailable => return L2Lookup::Unavailable,
    };
    if (found.fresh.is_zero() && site.stale.is_none())
        || !engine
            .tags
            .still_current(store, &found.decoded.tags, &probe, &found.along)
            .await
    {
        // Stale for a function without `stale`, or a tag moved on since it
        // was stored.
        return L2Lookup::Miss(found.prior());
    }
    let fresh = Fresh {
        stale: found.fresh.is_zero(),
        early_due: !found.fresh.is_zero()
            && site.early.is_some_and(|beta| {
                xfetch_due(
                    0,
                    found.fresh.as_millis() as u64,
                    u64::from(found.decoded.load_ms),
                    beta,
                )
            }),
        written_at_ms: found.decoded.written_at_ms,
    };
    let counters = store.counters();
    if !site.l1
        && let Some(value) = found.decoded.value.take()
    {
        bump(&counters.l2_hits);
        return L2Lookup::Unshared(value, fresh);
    }
    let tags = std::mem::take(&mut found.decoded.tags);
    let timing = found.timing((!tags.is_empty()).then(|| tags.into()));
    let (returned, value) = match found.decoded.value.take() {
        Some(value) => (
            M::from_value(value.clone()),
            Some(Arc::new(value) as AnyValue),
        ),
        // A negative entry, read by a function that cannot return `None`
        // (another function shares the key): a miss for this one.
        None => match M::absent() {
            Some(absent) => (absent, None),
            None => return L2Lookup::Miss(found.prior()),
        },
    };
    if value.is_none() {
        bump(&counters.negative_hits);
    }
    bump(&counters.l2_hits);
    store.keep(
        site,
        key,
        value.clone(),
        &timing,
        found.bytes.len(),
        context.snapshot,
    );
    L2Lookup::Hit(
        Served {
            returned,
            outcome: value.map_or(Outcome::Absent, Outcome::Value),
            l2_write: None,
        },
        fresh,
    )
}

/// Runs the body and stores what may be stored in L1; returns the L2
/// write still to do.
async fn run_load<R, M, F>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    context: &Context,
    load: F,
) -> Served<R>
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    let store = &engine.store;
    bump(&store.counters().loads);
    let span = load_span(site, false);
    let started = Instant::now();
    let returned = load.instrument(span.clone()).await;
    let took = started.elapsed();
    store.counters().exported.load_seconds.record(took);
    let served = span.in_scope(|| store.store_loaded::<R, M>(site, key, context, returned, took));
    span.record("outcome", served.outcome.name());
    served
}

/// Writes a loaded value to Redis if the key still holds `prior`; the lock
/// owner then tells instances waiting on it that the key is filled.
async fn write_loaded(
    engine: &Engine,
    storage_key: &str,
    write: Option<L2Write>,
    prior: &Prior,
    lock: Option<&Lock>,
) {
    if engine
        .store
        .write_if_unchanged(storage_key, write, prior)
        .await
        && let Some(lock) = lock
    {
        lock.announce_fill(engine.store.namespace(), storage_key)
            .await;
    }
}
