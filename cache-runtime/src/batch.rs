//! Batch loads: `#[cached(..., batch(id in ids))]` and
//! [`Cache::get_many`](crate::Cache::get_many).
//!
//! A batch call reads many keys of one template and loads the missing ones
//! with one body call:
//!
//! 1. L1, key by key (no `await`).
//! 2. Single-flight, key by key, in key order: a key another call is
//!    loading (a batch or a single-key call) is waited for, and its outcome
//!    taken as `load.rs` takes it; the others are led by this call. Waiting
//!    in key order while leading what was joined before cannot deadlock:
//!    a call only ever waits for a key greater than every key it leads, so
//!    no chain of waits comes back to it.
//! 3. One read of Redis for every led key (`MGET`; on a cluster one
//!    `MGET` per slot, sent at once): decodable entries fill L1 and end
//!    their flights.
//! 4. One body call with the ids still missing. Each id it returned is
//!    stored under its own key as a single-key call stores its value (L1 at
//!    once, Redis conditionally on what step 3 read, in one background
//!    job); an id it did not return is a `None` (cached with `negative`).
//!    `Err` is returned as it is, nothing stored.
//!
//! Entries are the single-key function's: `user:<id>` written by a batch
//! is read by `get_user(id) -> Option<User>` and the other way round.
//! Redis problems are misses, under one budget for the whole call, as in
//! `load.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::engine::{Cache, Engine};
use crate::flight::{Leader, Role};
use crate::keys::KeyBuf;
use crate::l2::Budget;
use crate::load::{
    L2Lookup, Late, Uncached, disabled, judge, l1_allowed, l1_lookup, off, recheck_late, uncached,
};
use crate::shape::{self, CacheValue};
use crate::site::{Site, load_span};
use crate::stats::{CallResult, bump};
use crate::store::{Context, Failed, Kept, L2Write, Prior};
use crate::value::Outcome;

/// What a batch function returns: the entries found for the requested ids,
/// as `HashMap<K, V>` or `Result<HashMap<K, V>, E>` (any hasher). `Err` is
/// returned as it is and never stored.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use cache_runtime::Batched;
///
/// fn batched<R: Batched>() {}
/// batched::<HashMap<u64, String>>();
/// batched::<Result<HashMap<u64, String>, std::io::Error>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "a batch function returns `HashMap<K, V>` or `Result<HashMap<K, V>, E>`, not `{Self}`",
    label = "the entries found, by id",
    note = "ids missing from the map are \"not found\" (cached with `negative`)"
)]
pub trait Batched: Sized {
    /// The id of an entry.
    type Key: Clone + Eq + Hash;
    /// The value stored under each id's key.
    type Value: CacheValue;
    /// The map's hasher.
    type Hasher: BuildHasher + Default;
    /// The entries the body returned, or what it returned when it failed.
    #[doc(hidden)]
    fn split(self) -> Result<Entries<Self>, Self>;
    /// The return value holding `found`.
    #[doc(hidden)]
    fn found(found: Entries<Self>) -> Self;
}

/// The entries of a batch, by id.
#[doc(hidden)]
pub type Entries<R> = HashMap<<R as Batched>::Key, <R as Batched>::Value, <R as Batched>::Hasher>;

impl<K, V, S> Batched for HashMap<K, V, S>
where
    K: Clone + Eq + Hash,
    V: CacheValue,
    S: BuildHasher + Default,
{
    type Key = K;
    type Value = V;
    type Hasher = S;
    fn split(self) -> Result<HashMap<K, V, S>, Self> {
        Ok(self)
    }
    fn found(found: HashMap<K, V, S>) -> Self {
        found
    }
}

impl<K, V, S, E> Batched for Result<HashMap<K, V, S>, E>
where
    K: Clone + Eq + Hash,
    V: CacheValue,
    S: BuildHasher + Default,
{
    type Key = K;
    type Value = V;
    type Hasher = S;
    fn split(self) -> Result<HashMap<K, V, S>, Self> {
        self.map_err(Err)
    }
    fn found(found: HashMap<K, V, S>) -> Self {
        Ok(found)
    }
}

/// Each key's entry is stored as a single-key function returning
/// `Option<V>` stores it.
type PerKey = shape::Option;

/// Runs one call of a batch function: the entries of `requested` (each id
/// with its rendered key) that a tier holds, and one call of `load` with
/// the ids none held (see the module docs).
pub async fn get_many_or_load<R, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    requested: Vec<(R::Key, KeyBuf)>,
    load: F,
) -> R
where
    R: Batched,
    F: FnOnce(Vec<R::Key>) -> Fut,
    Fut: Future<Output = R>,
{
    if off(cache, site) {
        let ids = requested.into_iter().map(|(id, _)| id).collect();
        return disabled(cache, site, load(ids)).await;
    }
    if !requested.iter().all(|(_, key)| key.is_complete()) {
        let ids = requested.into_iter().map(|(id, _)| id).collect();
        return uncached(cache, site, Uncached::Unrendered, load(ids)).await;
    }
    let engine = cache.engine();
    let mut found = HashMap::with_capacity_and_hasher(requested.len(), R::Hasher::default());
    let from_l1 = site.l1 && l1_allowed(engine);
    let mut missing = Vec::new();
    for (id, key) in requested {
        if from_l1 && let Some(hit) = l1_lookup::<Option<R::Value>, PerKey>(engine, site, &key) {
            if let Some(value) = hit.returned {
                found.insert(id, value);
            }
            continue;
        }
        missing.push((id, key));
    }
    if missing.is_empty() {
        return R::found(found);
    }
    let filled = fill::<R, F, Fut>(cache, site, missing, load, &mut found);
    let filled = match engine.store.l2() {
        Some(l2) => Box::pin(Budget::scope(l2.timeout(), filled)).await,
        None => Box::pin(filled).await,
    };
    match filled {
        Ok(()) => R::found(found),
        Err(Failed(returned)) => returned,
    }
}

/// A key of the batch to load: its id, its key, and what its load knows.
struct ToLoad<'a, K> {
    id: K,
    key: KeyBuf,
    context: Context,
    /// This call's flight for the key; `None` when it loads the key without
    /// one (see [`fill`]).
    leader: Option<Leader<'a>>,
    /// What Redis held, for the conditional write; `None` when unknown
    /// (no flight, or Redis did not answer).
    prior: Option<Prior>,
}

/// Steps 2 to 4 of the module docs for the keys L1 did not hold: `found`
/// receives what they hold.
async fn fill<R, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    mut missing: Vec<(R::Key, KeyBuf)>,
    load: F,
    found: &mut Entries<R>,
) -> Result<(), Failed<R>>
where
    R: Batched,
    F: FnOnce(Vec<R::Key>) -> Fut,
    Fut: Future<Output = R>,
{
    let engine = cache.engine();
    missing.sort_unstable_by(|(_, a), (_, b)| a.as_str().cmp(b.as_str()));
    missing.dedup_by(|(_, a), (_, b)| a.as_str() == b.as_str());
    let mut led = Vec::new();
    let mut unshared = Vec::new();
    for (id, key) in missing {
        match join(engine, site, &key).await {
            Joined::Leader(leader) => led.push((id, key, leader)),
            Joined::Served(value) => {
                if let Some(value) = value {
                    found.insert(id, value);
                }
            }
            Joined::Alone => unshared.push((id, key)),
        }
    }
    let mut to_load = Vec::with_capacity(led.len() + unshared.len());
    let led_keys: Vec<&str> = led.iter().map(|(_, key, _)| key.as_str()).collect();
    let lookups = lookup_all::<R::Value>(engine, site, &led_keys).await;
    for ((id, key, leader), (context, lookup)) in led.into_iter().zip(lookups) {
        match lookup {
            L2Lookup::Hit(served, _) => {
                leader.complete(served.outcome);
                if let Kept::Value(value) = served.kept {
                    found.insert(id, value);
                }
            }
            L2Lookup::Unshared(value, _) => {
                leader.complete_with(|| Outcome::Value(Arc::new(value.clone())));
                found.insert(id, value);
            }
            L2Lookup::Miss(prior) => {
                let prior = Some(leader.noting(prior));
                to_load.push(ToLoad {
                    id,
                    key,
                    context,
                    leader: Some(leader),
                    prior,
                });
            }
            L2Lookup::Unavailable => to_load.push(ToLoad {
                id,
                key,
                context,
                leader: Some(leader),
                prior: None,
            }),
        }
    }
    let unshared_keys: Vec<&str> = unshared.iter().map(|(_, key)| key.as_str()).collect();
    let unshared_contexts = contexts(engine, &unshared_keys).await;
    to_load.extend(
        unshared
            .into_iter()
            .zip(unshared_contexts)
            .map(|((id, key), context)| ToLoad {
                id,
                key,
                context,
                leader: None,
                prior: None,
            }),
    );
    if to_load.is_empty() {
        return Ok(());
    }
    run_load::<R, F, Fut>(cache, site, to_load, load, found).await
}

/// What joining a key's flight came to.
enum Joined<'a, V> {
    /// This call leads the flight: it reads Redis, then loads.
    Leader(Leader<'a>),
    /// Another call's outcome (or a read of Redis a late waiter made): the
    /// value, or `None` for a cached "not found".
    Served(Option<V>),
    /// Loaded by this call without a flight: the key is loaded by this
    /// task already (a body that calls its own function), or the leader
    /// this call waited for failed, loaded another type, or may be older
    /// than a write made since (see `load.rs`'s `recheck_late`).
    Alone,
}

/// Joins `key`'s flight, waiting for its leader when another call leads it.
async fn join<'a, V: CacheValue>(
    engine: &'a Engine,
    site: &'static Site,
    key: &str,
) -> Joined<'a, V> {
    let store = &engine.store;
    if engine.flights.is_loading(key) {
        return Joined::Alone;
    }
    loop {
        let waiter = match engine.flights.join(key, store.epochs(), false) {
            Role::Leader(leader) => {
                leader.reading();
                return Joined::Leader(leader);
            }
            Role::Waiter(waiter) => waiter,
        };
        // The leader was cancelled or panicked: try to take over.
        let Some(outcome) = waiter.outcome().await else {
            continue;
        };
        if let Some(leaders_read) = waiter.joined_after_read() {
            let storage_key = store.storage_key(key);
            match recheck_late::<Option<V>, PerKey>(
                engine,
                site,
                key,
                &storage_key,
                &[],
                leaders_read,
            )
            .await
            {
                Late::Served(value) => return Joined::Served(value),
                Late::LeadersHolds => {}
                Late::Changed => return Joined::Alone,
            }
        }
        return match outcome {
            Outcome::Value(value) => match value.downcast_ref::<V>() {
                Some(value) => {
                    bump(&store.counters().coalesced);
                    Joined::Served(Some(value.clone()))
                }
                None => Joined::Alone,
            },
            Outcome::Absent => {
                bump(&store.counters().coalesced);
                Joined::Served(None)
            }
            Outcome::Failed => Joined::Alone,
        };
    }
}

/// The load context of each key (no tags: a batch function has none).
async fn contexts(engine: &Engine, keys: &[&str]) -> Vec<Context> {
    let mut contexts = Vec::with_capacity(keys.len());
    for key in keys {
        contexts.push(engine.tags.context(&engine.store, key, &[]).await);
    }
    contexts
}

/// Reads `keys` (rendered keys) from Redis in one round trip (see
/// `Store::read_many`), each judged as `load.rs` judges a read of one key
/// (a usable entry also fills L1), with the context it was read in. Each
/// context is taken before the read: an invalidation arriving after it
/// keeps what the read finds out of L1.
async fn lookup_all<V: CacheValue>(
    engine: &Engine,
    site: &'static Site,
    keys: &[&str],
) -> Vec<(Context, L2Lookup<V, ()>)> {
    let store = &engine.store;
    let contexts = contexts(engine, keys).await;
    let storage_keys: Vec<KeyBuf> = keys.iter().map(|key| store.storage_key(key)).collect();
    let storage_keys: Vec<&str> = storage_keys.iter().map(KeyBuf::as_str).collect();
    let reads = store.read_many::<V>(site, &storage_keys).await;
    let mut lookups = Vec::with_capacity(keys.len());
    for ((key, context), read) in keys.iter().zip(contexts).zip(reads) {
        let probe = engine.tags.probe(store, &context);
        let lookup = judge::<Option<V>, PerKey>(engine, site, key, &context, &probe, read).await;
        lookups.push((context, lookup));
    }
    lookups
}

/// Step 4: one body call for `to_load`, each id's outcome stored and handed
/// to its flight's waiters; the Redis writes go in one background job.
async fn run_load<R, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    to_load: Vec<ToLoad<'_, R::Key>>,
    load: F,
    found: &mut Entries<R>,
) -> Result<(), Failed<R>>
where
    R: Batched,
    F: FnOnce(Vec<R::Key>) -> Fut,
    Fut: Future<Output = R>,
{
    let engine = cache.engine();
    let store = &engine.store;
    let counters = store.counters();
    bump(&counters.loads);
    for _ in &to_load {
        counters.call(site, CallResult::Miss);
    }
    let ids = to_load.iter().map(|load| load.id.clone()).collect();
    let keys: Vec<&str> = to_load.iter().map(|load| load.key.as_str()).collect();
    let span = load_span(site, false);
    let started = Instant::now();
    let returned = engine
        .flights
        .loading_all(&keys, load(ids).instrument(span.clone()))
        .await;
    let took = started.elapsed();
    counters.loaded(site, took);
    let mut loaded = match R::split(returned) {
        Ok(loaded) => loaded,
        Err(failed) => {
            bump(&counters.load_errors);
            counters.function_load_failed(site);
            span.record("outcome", Outcome::Failed.name());
            for load in to_load {
                if let Some(leader) = load.leader {
                    leader.complete(Outcome::Failed);
                }
            }
            return Err(Failed(failed));
        }
    };
    span.record("outcome", Outcome::VALUE_NAME);
    let mut writes = Vec::new();
    let _entered = span.enter();
    for load in to_load {
        let value = loaded.remove(&load.id);
        // `Option` has no error: every outcome stores.
        let Ok(served) = store.store_loaded::<Option<R::Value>, PerKey>(
            site,
            &load.key,
            &load.context,
            value,
            took,
        ) else {
            continue;
        };
        if let Some(leader) = load.leader {
            leader.complete(served.outcome);
        }
        if let (Some(write), Some(prior)) = (served.l2_write, load.prior) {
            writes.push((store.storage_key(&load.key), write, prior));
        }
        if let Kept::Value(value) = served.kept {
            found.insert(load.id, value);
        }
    }
    write_all(engine, writes);
    Ok(())
}

/// Writes the loaded values to Redis, each conditional on what its key
/// held before the load, in one background job (see `load.rs`'s
/// `settle`): the writes are sent together, and the caller does not wait
/// for them. Without room in the background nothing is written (later
/// misses).
fn write_all(engine: &Arc<Engine>, writes: Vec<(KeyBuf, L2Write, Prior)>) {
    if writes.is_empty() {
        return;
    }
    let Some(admitted) = engine.background.admit() else {
        return;
    };
    let engine = Arc::clone(engine);
    admitted.spawn(async move {
        let store = &engine.store;
        let writes = writes
            .into_iter()
            .map(|(storage_key, write, prior)| async move {
                store
                    .write_if_unchanged(&storage_key, Some(write), &prior)
                    .await;
            });
        futures_util::future::join_all(writes).await;
    });
}

/// Reads `keys` (rendered keys) without loading them, as
/// [`Cache::get`](crate::Cache::get) reads one: L1 key by key, then the
/// keys L1 did not hold in one read of Redis (a hit fills L1). No flight is
/// joined and nothing loaded.
pub(crate) async fn read_many<T: CacheValue>(
    cache: &Cache,
    site: &'static Site,
    keys: &[&str],
) -> Vec<Option<T>> {
    let engine = cache.engine();
    let store = &engine.store;
    let from_l1 = site.l1 && l1_allowed(engine);
    let mut values: Vec<Option<T>> = Vec::with_capacity(keys.len());
    let mut unread = Vec::new();
    for (at, key) in keys.iter().enumerate() {
        match from_l1
            .then(|| l1_lookup::<Option<T>, PerKey>(engine, site, key))
            .flatten()
        {
            Some(hit) => values.push(hit.returned),
            None => {
                store.counters().call(site, CallResult::Miss);
                values.push(None);
                unread.push(at);
            }
        }
    }
    let Some(l2) = store.l2() else {
        return values;
    };
    if unread.is_empty() {
        return values;
    }
    let unread_keys: Vec<&str> = unread.iter().map(|&at| keys[at]).collect();
    let lookup = async {
        let lookups = lookup_all::<T>(engine, site, &unread_keys).await;
        for (&at, (_, lookup)) in unread.iter().zip(lookups) {
            values[at] = match lookup {
                L2Lookup::Hit(served, _) => served.kept.returned::<Option<T>, PerKey>(),
                L2Lookup::Unshared(value, _) => Some(value),
                L2Lookup::Miss(_) | L2Lookup::Unavailable => None,
            };
        }
    };
    Budget::scope(l2.timeout(), lookup).await;
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_body_comes_back_as_it_is() {
        let failed: Result<HashMap<u64, String>, &str> = Err("down");
        assert_eq!(Batched::split(failed).unwrap_err(), Err("down"));
        let found = HashMap::from([(1u64, "Ada".to_owned())]);
        assert_eq!(
            <Result<_, &str> as Batched>::found(found.clone()),
            Ok(found.clone())
        );
        assert_eq!(found.clone().split().unwrap(), found);
    }
}
