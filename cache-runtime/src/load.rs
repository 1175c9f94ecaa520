//! The cache-aside read path every `#[cached]` function runs through.
//!
//! 1. L1: a fresh entry of the right type (whose tags are current) is
//!    returned at once (no `await`); generated code asks first, through
//!    [`l1_hit`], before it renders the tags or builds the loader. With
//!    `stale`, an entry past its TTL but inside the stale window is returned
//!    too, and a background refresh starts; with `early`, a fresh hit may
//!    start one shortly before expiry (XFetch).
//! 2. Single-flight: one caller per key and process goes on; the others
//!    wait for its outcome.
//! 3. L2: the leader reads Redis; a decodable entry fills L1 and returns.
//! 4. `lock`: on a miss, the leader takes a Redis lock or waits for the
//!    instance that holds it (see `lock.rs`); background refreshes run in
//!    `refresh.rs`.
//! 5. Load: the body runs (with `lock`, the lock's lease is extended
//!    meanwhile), `Ok` values (and `None`, when `negative` is set) go to L1
//!    and L2 with one jittered TTL, the value goes to the waiters, and the
//!    call returns. `Err` is returned and never stored. The Redis write is
//!    conditional on the key still holding what step 3 read, and the L1
//!    insert on no invalidation having arrived meanwhile (see `store.rs`: no
//!    stale set).
//! 6. Then, in one bounded background job (see `background.rs`), in
//!    order: the Redis write, the lock owner's "filled" message and the
//!    lock's release. The caller waits on Redis for what it reads (steps 3
//!    and 4), never for what it writes: the write is queued on the
//!    connection before the call returns (so this instance's later commands
//!    reach Redis after it), and its reply is not waited for (so another
//!    instance reading right after the call may still miss). A job the
//!    background has no room for is dropped: the value is a later miss, the
//!    lock lives out its lease. (`#[write_through]` and invalidations are
//!    not loads: they write on the caller's path, see `write.rs`.)
//!
//! Redis problems anywhere in this path are misses; they never reach the
//! caller. Steps 2 to 5 run under one budget for Redis (`l2.rs`'s `Budget`):
//! however many commands they send, the caller waits on Redis at most the
//! L2 timeout in all, and once it is spent the rest of the path skips Redis.
//!
//! Some calls run their body without the cache (no L1, no flight, no
//! Redis, nothing stored), with a log:
//!
//! - a key or tag that could not be rendered (a placeholder's `Display`
//!   returned an error): what was rendered is only a prefix of the key, which
//!   other values share;
//! - a call for a key its own task is loading (the body called the function
//!   again on its key, see `flight.rs`): joining the flight would wait for
//!   itself.
//!
//! # `Send`
//!
//! What the body returned is never held across an `.await`: an `Err` is
//! returned at once, and a value or `None` is carried as the stored value
//! ([`Kept`]) until the return value is rebuilt at the end (see `shape.rs`).
//! So the caller's future is `Send` whenever the body's is, even when the
//! return type is not (`Result<T, Box<dyn Error>>`).
//!
//! Each run of a body (step 5, and background refreshes) is instrumented
//! with a `cache.load` span (see `site::load_span`); hits create no span.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;
use tracing::Instrument;

use crate::clock::millis;
use crate::consistency;
use crate::engine::{Cache, Engine};
use crate::flight::{Marked, Role};
use crate::keys::KeyBuf;
use crate::l2::Budget;
use crate::lock::{Lock, Locked, Recheck};
use crate::refresh::{Refused, xfetch_due};
use crate::shape::{self, CacheValue, Shape, absent};
use crate::site::{Site, load_span};
use crate::stats::{CallResult, bump};
use crate::store::{Context, Failed, Kept, L2Write, Prior, Read, Served};
use crate::tags::Probe;
use crate::value::{AnyValue, Outcome};

/// Runs one `#[cached]` call: returns the cached value or runs `load`.
///
/// `_shape` is the return type's marker, picked by
/// [`shape_of!`](crate::__private::shape_of).
pub async fn get_or_load<R, M, F>(
    cache: &Cache,
    site: &'static Site,
    _shape: M,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    if off(cache, site) {
        return disabled(cache, site, load).await;
    }
    if !rendered(&key, tags) {
        return uncached(cache, site, Uncached::Unrendered, load).await;
    }
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
    _shape: M,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    debug_assert!(!site.l1, "`get_or_load_l2` is for `l1 = false` functions");
    if off(cache, site) {
        return disabled(cache, site, load).await;
    }
    if !rendered(&key, tags) {
        return uncached(cache, site, Uncached::Unrendered, load).await;
    }
    let call = Call::new(cache, site, &key, tags);
    budgeted(call, miss::<R, M, _, _, _>(call, move || load, &NoRefresh)).await
}

/// Like [`get_or_load`], for `early` / `stale` functions: `load` makes a
/// future that owns its inputs, so the body can also run in the background.
pub async fn get_or_refresh<R, M, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    _shape: M,
    key: KeyBuf,
    tags: &[KeyBuf],
    load: F,
) -> R
where
    M: Shape<R>,
    F: Fn() -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: 'static,
{
    if off(cache, site) {
        return disabled(cache, site, load()).await;
    }
    if !rendered(&key, tags) {
        return uncached(cache, site, Uncached::Unrendered, load()).await;
    }
    let background = Refresher { load: &load };
    let call = Call::new(cache, site, &key, tags);
    serve::<R, M, _, _, _>(call, &load, &background).await
}

/// Reads `key` without loading it ([`Cache::get`](crate::Cache::get)):
/// L1, then Redis, as a call would (a hit fills L1, tags are checked), but
/// no body runs, no flight is joined and no lock taken; `None` on a miss or
/// a cached `None`.
pub(crate) async fn read<T: CacheValue>(
    cache: &Cache,
    site: &'static Site,
    key: &str,
) -> Option<T> {
    type Shaped = shape::Option;
    let engine = cache.engine();
    if site.l1
        && l1_allowed(engine)
        && let Some(hit) = l1_lookup::<Option<T>, Shaped>(engine, site, key)
    {
        return hit.returned;
    }
    let store = &engine.store;
    store.counters().call(site, CallResult::Miss);
    let l2 = store.l2()?;
    let storage_key = store.storage_key(key);
    let lookup = async {
        let context = engine.tags.context(store, key, &[]).await;
        match l2_lookup::<Option<T>, Shaped>(engine, site, key, &storage_key, &context).await {
            L2Lookup::Hit(served, _) => served.kept.returned::<Option<T>, Shaped>(),
            L2Lookup::Unshared(value, _) => Some(value),
            L2Lookup::Miss(_) | L2Lookup::Unavailable => None,
        }
    };
    Budget::scope(l2.timeout(), lookup).await
}

/// Whether calls of `site` run their bodies without the cache: the cache is
/// disabled (`CacheBuilder::disabled`), or the site's `ttl` expression was
/// out of range (logged when the site was made, see
/// `site::configured_lifetime`).
#[inline]
pub(crate) fn off(cache: &Cache, site: &Site) -> bool {
    cache.engine().disabled || !site.caches()
}

/// Runs a body for a call that does not use the cache ([`off`]): counted
/// as a miss and a load, nothing read or stored, no flight.
pub(crate) async fn disabled<F: Future>(cache: &Cache, site: &'static Site, body: F) -> F::Output {
    let counters = cache.engine().store.counters();
    counters.call(site, CallResult::Miss);
    bump(&counters.loads);
    body.await
}

/// Whether the key and every tag rendered completely.
#[inline]
fn rendered(key: &KeyBuf, tags: &[KeyBuf]) -> bool {
    key.is_complete() && tags.iter().all(KeyBuf::is_complete)
}

/// Why a call runs its body without the cache.
#[derive(Clone, Copy)]
pub(crate) enum Uncached {
    /// A placeholder's `Display` returned an error.
    Unrendered,
    /// The call comes from inside a load of its own key, in its own task.
    Reentrant,
    /// A programmatic batch load given tags, which batches do not carry.
    TaggedBatch,
}

/// Runs the body without the cache (see the module docs): nothing is read,
/// stored or shared. Logged, at most once per interval per cache.
#[cold]
pub(crate) async fn uncached<F: Future>(
    cache: &Cache,
    site: &'static Site,
    why: Uncached,
    body: F,
) -> F::Output {
    if let Some(suppressed) = cache.engine().uncached_log.admit() {
        match why {
            Uncached::Unrendered => tracing::error!(
                function = site.function,
                template = site.template,
                suppressed,
                "a placeholder's `Display` returned an error, so the key cannot be rendered: the call runs its body without the cache (fix that `Display` impl)"
            ),
            Uncached::Reentrant => tracing::warn!(
                function = site.function,
                template = site.template,
                suppressed,
                "the body of a load called the function again on the key it is loading: that call runs its body without the cache (waiting for its own load would never end)"
            ),
            Uncached::TaggedBatch => tracing::error!(
                function = site.function,
                suppressed,
                "`Cache::get_many_or_load` was given `Options` with tags, which batch loads do not carry: the call loads every id without the cache (drop the tags, or load one key at a time with `get_or_load_with`)"
            ),
        }
    }
    body.await
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
        && l1_allowed(call.cache.engine())
        && let Some(hit) = l1_lookup::<R, M>(call.cache.engine(), call.site, call.key)
    {
        after_hit::<R, M, B>(call, &hit.found, background);
        return hit.returned;
    }
    // Boxed: the miss path's state (L2 reads, lock waits, the load) is large,
    // and keeping it out of line keeps every call's future, and so a hit,
    // small.
    Box::pin(budgeted(
        call,
        miss::<R, M, L, F, B>(call, load, background),
    ))
    .await
}

/// Whether this call may serve from L1: always, unless it runs in a
/// [`ConsistencyToken::scope`](crate::ConsistencyToken::scope) whose
/// writes this instance has not been told of yet (then it reads Redis,
/// which holds them, or runs its body; counted).
#[inline]
pub(crate) fn l1_allowed(engine: &Engine) -> bool {
    consistency::l1_allowed(|token| {
        let caught_up = engine.channel.caught_up(token);
        if !caught_up {
            bump(&engine.store.counters().l1_skipped_for_token);
        }
        caught_up
    })
}

/// Runs a miss under one budget for Redis: everything the caller waits on
/// in Redis (tag versions, the read, the lock) takes at most the L2 timeout
/// in all (see `l2.rs`).
///
/// Not an `async fn`: one would take `miss` into its own state and then
/// move it again into the budget's scope, copying the whole miss path's
/// state twice more per call (`memmove` was 6% of the worker threads' samples
/// with 64 tasks reading Redis, `l1 = false`; it is not sampled since).
fn budgeted<F: Future>(call: Call<'_>, miss: F) -> impl Future<Output = F::Output> {
    match call.cache.engine().store.l2() {
        Some(l2) => Either::Left(Budget::scope(l2.timeout(), miss)),
        None => Either::Right(miss),
    }
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
    R: 'static,
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
pub(crate) struct Fresh {
    stale: bool,
    early_due: bool,
    written_at_ms: u64,
}

pub(crate) struct L1Hit<R> {
    pub(crate) returned: R,
    found: Fresh,
}

/// What a read of Redis found, for the read path.
pub(crate) enum L2Lookup<V, N> {
    Hit(Served<V, N>, Fresh),
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

/// The first step of a `#[cached]` call with L1 and without `early`, which
/// generated code runs before it renders the tags or builds the loader: the
/// value of a fresh L1 entry, or `None` for everything else (no entry, a
/// stale one, the cache off, an unrenderable key, a consistency scope),
/// which the whole path ([`get_or_load`], [`get_or_refresh`]) then takes
/// from its start.
///
/// A hit needs no tags rendered (the entry holds its tags' versions) and
/// no loader, so a call that hits builds neither: a tag whose `Display`
/// fails is noticed on a miss (the call then runs uncached), not on a hit.
///
/// Not for `early`: whether a hit starts an early refresh is a random draw
/// (XFetch), which declining here and drawing again on the whole path
/// would make rarer than configured.
#[inline]
pub fn l1_hit<R, M: Shape<R>>(
    cache: &Cache,
    site: &'static Site,
    _shape: M,
    key: &KeyBuf,
) -> Option<R> {
    debug_assert!(
        site.early.is_none(),
        "`l1_hit` is for sites without `early`"
    );
    let engine = cache.engine();
    if off(cache, site) || !key.is_complete() || !l1_allowed(engine) {
        return None;
    }
    l1_find::<R, M>(engine, site, key.as_str(), Wanted::Fresh).map(|hit| hit.returned)
}

#[inline]
pub(crate) fn l1_lookup<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
) -> Option<L1Hit<R>> {
    l1_find::<R, M>(engine, site, key, Wanted::Any)
}

/// Which L1 entries a lookup serves.
#[derive(Clone, Copy, PartialEq)]
enum Wanted {
    /// Any the site may serve: stale ones too with `stale`, whatever
    /// background refresh they call for.
    Any,
    /// Fresh ones only (see [`l1_hit`]).
    Fresh,
}

#[inline]
fn l1_find<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    wanted: Wanted,
) -> Option<L1Hit<R>> {
    let (entry, now) = engine.store.l1_get(key)?;
    let fresh = entry.is_fresh(now);
    if !fresh && (site.stale.is_none() || wanted == Wanted::Fresh) {
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
            let absent = absent::<R, M>()?;
            bump(&counters.negative_hits);
            absent
        }
    };
    counters.call(site, CallResult::L1Hit);
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
    if engine.flights.is_loading(key) {
        return uncached(cache, site, Uncached::Reentrant, load()).await;
    }
    let store = &engine.store;
    let storage_key = store.storage_key(key);
    let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
    let outcome = loop {
        match engine.flights.join(key, store.epochs(), !tags.is_empty()) {
            Role::Leader(leader) => {
                let context = engine.tags.context(store, key, &tags).await;
                leader.reading();
                let (locked, prior) =
                    match l2_lookup::<R, M>(engine, site, key, &storage_key, &context).await {
                        L2Lookup::Hit(served, found) => {
                            leader.complete(served.outcome);
                            after_hit::<R, M, B>(call, &found, background);
                            return served.kept.returned::<R, M>();
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
                            Some(leader.noting(prior)),
                        ),
                        L2Lookup::Miss(prior) => (Locked::Without, Some(leader.noting(prior))),
                        L2Lookup::Unavailable => (Locked::Without, None),
                    };
                let lock = match locked {
                    Locked::Filled((served, found)) => {
                        leader.complete(served.outcome);
                        after_hit::<R, M, B>(call, &found, background);
                        return served.kept.returned::<R, M>();
                    }
                    Locked::Owner(lock) => Some(lock),
                    Locked::Without => None,
                };
                store.counters().call(site, CallResult::Miss);
                // The load and the write below are boxed: a miss runs the
                // body anyway, while an L2 hit (the common way through
                // here) then allocates a smaller future.
                let load = run_load::<R, M, F>(engine, site, key, &context, load());
                let mut lock = lock;
                let loaded = async {
                    match &mut lock {
                        Some(lock) => lock.hold_while(load).await,
                        None => load.await,
                    }
                };
                // An `Err` goes back at once: it is not stored, and it is
                // not held across an `.await` (it need not be `Send`; hence
                // no local holds it, only this statement's temporary). The
                // lock, dropped, releases itself in the background.
                let served = match Box::pin(loaded).await {
                    Ok(served) => served,
                    Err(Failed(returned)) => {
                        leader.complete(Outcome::Failed);
                        drop(lock);
                        return returned;
                    }
                };
                // Waiters are released before the Redis write.
                leader.complete(served.outcome);
                settle(cache, storage_key, served.l2_write, prior, lock);
                return served.kept.returned::<R, M>();
            }
            Role::Waiter(waiter) => {
                // The leader was cancelled or panicked: try to take over.
                let Some(outcome) = waiter.outcome().await else {
                    continue;
                };
                let Some(leaders_read) = waiter.joined_after_read() else {
                    break outcome;
                };
                match Box::pin(recheck_late::<R, M>(
                    engine,
                    site,
                    key,
                    &storage_key,
                    &tags,
                    leaders_read,
                ))
                .await
                {
                    Late::Served(returned) => return returned,
                    Late::LeadersHolds => break outcome,
                    // Run our own body, below.
                    Late::Changed => break Outcome::Failed,
                }
            }
        }
    };
    store.counters().call(site, CallResult::Miss);
    match outcome {
        Outcome::Value(value) => {
            if let Some(value) = value.downcast_ref::<M::Value>() {
                bump(&store.counters().coalesced);
                return M::from_value(value.clone());
            }
        }
        Outcome::Absent => {
            if let Some(absent) = absent::<R, M>() {
                bump(&store.counters().coalesced);
                return absent;
            }
        }
        Outcome::Failed => {}
    }
    // The leader's body failed (errors are not shared, so each waiter
    // gets its own), its value has another type, or Redis changed since
    // the leader read it (`recheck_late`): run our own body,
    // without a flight. Its value goes to L1 only: with no read of Redis
    // before it, there is nothing to make a Redis write conditional on.
    let context = engine.tags.context(store, key, &tags).await;
    match Box::pin(run_load::<R, M, F>(engine, site, key, &context, load())).await {
        Ok(served) => served.kept.returned::<R, M>(),
        Err(Failed(returned)) => returned,
    }
}

/// What a waiter that joined after its leader read Redis found there.
pub(crate) enum Late<R> {
    /// A usable entry: served (it is at least as new as the leader's).
    Served(R),
    /// What the leader read is still there: the leader's outcome holds.
    LeadersHolds,
    /// Redis changed since the leader read it (another instance's write,
    /// whose message has not reached this instance yet, may be the cause):
    /// the leader's outcome may be older than a write that returned before
    /// this call started.
    Changed,
}

/// Reads Redis for a waiter that joined after its leader read Redis (see
/// `flight.rs`'s `Waiter::joined_after_read`), and compares with what the
/// leader found (`leaders_read`). A tagged key compares no tokens: any
/// miss is [`Late::Changed`].
pub(crate) async fn recheck_late<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    storage_key: &str,
    tags: &[&str],
    leaders_read: u64,
) -> Late<R> {
    let context = engine.tags.context(&engine.store, key, tags).await;
    match l2_lookup::<R, M>(engine, site, key, storage_key, &context).await {
        L2Lookup::Hit(served, _) => Late::Served(served.kept.returned::<R, M>()),
        L2Lookup::Unshared(value, _) => Late::Served(M::from_value(value)),
        L2Lookup::Miss(prior) if tags.is_empty() && leaders_read == prior.mark() => {
            Late::LeadersHolds
        }
        L2Lookup::Miss(_) => Late::Changed,
        // Nothing to compare with: what the leader loaded is the best known.
        L2Lookup::Unavailable => Late::LeadersHolds,
    }
}

/// Takes the Redis lock for a missing key, or waits for the instance that
/// holds it to fill the key (see `lock.rs`).
async fn lock_or_wait<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    storage_key: &str,
    context: &Context,
) -> Locked<(Served<M::Value, M::None>, Fresh)> {
    let Some(l2) = engine.store.l2() else {
        return Locked::Without;
    };
    let recheck = || async {
        match l2_lookup::<R, M>(engine, site, key, storage_key, context).await {
            L2Lookup::Hit(served, found) => Recheck::Filled((served, found)),
            L2Lookup::Unshared(value, found) => Recheck::Filled((Served::shared(value), found)),
            L2Lookup::Unavailable => Recheck::Unavailable,
            L2Lookup::Miss(_) => Recheck::Missing,
        }
    };
    engine
        .locks
        .lock_or_wait(l2, site, storage_key, recheck)
        .await
}

/// Reads Redis; a usable entry also fills L1.
async fn l2_lookup<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    storage_key: &str,
    context: &Context,
) -> L2Lookup<M::Value, M::None> {
    let store = &engine.store;
    let probe = engine.tags.probe(store, context);
    let read = store
        .read::<M::Value>(site, storage_key, probe.keys())
        .await;
    judge::<R, M>(engine, site, key, context, &probe, read).await
}

/// What a read of `key` from Redis means for a call in `context` (whose
/// tags' versions were read along, by `probe`): a usable entry (which also
/// fills L1), or a miss.
pub(crate) async fn judge<R, M: Shape<R>>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    context: &Context,
    probe: &Probe,
    read: Read<M::Value>,
) -> L2Lookup<M::Value, M::None> {
    let store = &engine.store;
    let mut found = match read {
        Read::Entry(found) => found,
        Read::Unusable(prior) => return L2Lookup::Miss(prior),
        Read::Unavailable => return L2Lookup::Unavailable,
    };
    if (found.fresh.is_zero() && site.stale.is_none())
        || !engine
            .tags
            .still_current(store, &found.decoded.tags, probe, &found.along)
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
                    millis(found.fresh),
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
        counters.call(site, CallResult::L2Hit);
        return L2Lookup::Unshared(value, fresh);
    }
    let tags = std::mem::take(&mut found.decoded.tags);
    let timing = found.timing((!tags.is_empty()).then(|| tags.into()));
    let (kept, value) = match found.decoded.value.take() {
        Some(value) => (
            Kept::Value(value.clone()),
            Some(Arc::new(value) as AnyValue),
        ),
        // A negative entry, read by a function that cannot return `None`
        // (another function shares the key): a miss for this one.
        None => match M::none() {
            Some(none) => (Kept::None(none), None),
            None => return L2Lookup::Miss(found.prior()),
        },
    };
    if value.is_none() {
        bump(&counters.negative_hits);
    }
    counters.call(site, CallResult::L2Hit);
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
            kept,
            outcome: value.map_or(Outcome::Absent, Outcome::Value),
            l2_write: None,
        },
        fresh,
    )
}

/// Runs the body (marked as a load of `key` for this task, see
/// `flight.rs`) and stores what may be stored in L1; returns the L2 write
/// still to do, or the body's error.
async fn run_load<R, M, F>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    context: &Context,
    load: F,
) -> Result<Served<M::Value, M::None>, Failed<R>>
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    let store = &engine.store;
    bump(&store.counters().loads);
    let span = load_span(site, false);
    let started = Instant::now();
    let returned = engine
        .flights
        .loading(key, load.instrument(span.clone()))
        .await;
    let took = started.elapsed();
    store.counters().loaded(site, took);
    let loaded = span.in_scope(|| store.store_loaded::<R, M>(site, key, context, returned, took));
    let outcome = match &loaded {
        Ok(served) => served.outcome.name(),
        Err(_) => {
            store.counters().function_load_failed(site);
            Outcome::Failed.name()
        }
    };
    span.record("outcome", outcome);
    loaded
}

/// The Redis side of a load, off the caller's path (see `background.rs`):
/// the value is written if Redis still holds `prior` (`None`: the read
/// failed, and after a failed or timed-out read a write would most likely
/// fail too), then the lock owner tells the instances waiting on it, then
/// releases the lock, in that order, in one background job. Without room
/// in the background nothing is written (a later miss) and the lock lives
/// out its lease.
fn settle(
    cache: &Cache,
    storage_key: KeyBuf,
    write: Option<L2Write>,
    prior: Option<Prior>,
    lock: Option<Lock>,
) {
    let writes = write.is_some() && prior.is_some();
    if !writes && lock.is_none() {
        return;
    }
    let engine = cache.engine();
    let Some(admitted) = engine.background.admit() else {
        if let Some(lock) = lock {
            lock.abandon();
        }
        return;
    };
    let engine = Arc::clone(engine);
    admitted.spawn(async move {
        match lock {
            Some(lock) => lock.finish(&engine.store, write, prior.as_ref()).await,
            None => {
                if let Some(prior) = prior {
                    engine
                        .store
                        .write_if_unchanged(&storage_key, write, &prior)
                        .await;
                }
            }
        }
    });
}
