//! The write side: `#[invalidates]`, `#[write_through]`, and
//! [`Cache::invalidate`](crate::Cache::invalidate) /
//! [`invalidate_tag`](crate::Cache::invalidate_tag).
//!
//! Each acts locally at once (L1 copies dropped, in-flight loads kept from
//! putting older values back), then in Redis (a tombstone instead of the
//! value, a tag's version moved on, or the new value), then tells other
//! instances over the invalidation channel (`invalidation.rs`).

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::backoff_delay;
use crate::codec;
use crate::engine::{Cache, Engine};
use crate::error::Error;
use crate::invalidation::Change;
use crate::keys::KeyBuf;
use crate::recovery::{Invalidation, apply_in_redis};
use crate::shape::{CacheValue, Loaded, Shape, Succeeds};
use crate::site::Site;
use crate::store::{Context, Prior};

/// The static description of one `#[invalidates]` function.
#[derive(Debug)]
pub struct Mutation {
    /// The function's name, for logs.
    pub function: &'static str,
    /// Its key templates, for logs.
    pub key_templates: &'static [&'static str],
    /// Its tag templates, for logs.
    pub tag_templates: &'static [&'static str],
}

/// Runs after an `#[invalidates]` body, with what it returned: after an
/// error, hands the value back at once ([`ControlFlow::Break`]: nothing is
/// invalidated); after a success, gives the future that invalidates the
/// rendered keys and tags and then returns the value. Never fails the
/// call: a Redis failure is logged at error level (at most once per 10 s,
/// with a count of the lines held back); the local copies are dropped
/// anyway, and the invalidation is kept and replayed once Redis answers
/// again (`recovery.rs`).
///
/// A key or tag that could not be rendered (a placeholder's `Display`
/// returned an error) is not invalidated: which entry it names is unknown.
/// It is logged at error level; the others are invalidated.
///
/// The future holds the success part of the value (`T` of `Result<T, E>`),
/// never the error, so the annotated function's future is `Send` with a
/// `Box<dyn Error>` error type.
///
/// # Example
///
/// What `#[invalidates]` expands to, around the body's value:
///
/// ```
/// use std::ops::ControlFlow;
/// use cache_runtime::Cache;
/// use cache_runtime::__private::{KeyBuf, Mutation, invalidate_after, shape_of};
///
/// static MUTATION: Mutation = Mutation {
///     function: "update_user",
///     key_templates: &["user:<id>"],
///     tag_templates: &[],
/// };
///
/// async fn update_user(cache: &Cache, id: u64) -> Result<(), String> {
///     let mut key = KeyBuf::new();
///     key.literal("user:");
///     key.arg(&id);
///     let keys = [key];
///     let returned: Result<(), String> = Ok(()); // the body
///     let invalidation = match invalidate_after(cache, &MUTATION, &keys, &[], shape_of!(Result<(), String>), returned) {
///         ControlFlow::Continue(invalidation) => invalidation,
///         ControlFlow::Break(returned) => return returned,
///     };
///     invalidation.await
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let cache = Cache::builder().build().await.unwrap();
/// # assert_eq!(update_user(&cache, 1).await, Ok(()));
/// # }
/// ```
pub fn invalidate_after<'a, R, M: Succeeds<R>>(
    cache: &'a Cache,
    mutation: &'static Mutation,
    keys: &'a [KeyBuf],
    tags: &'a [KeyBuf],
    _shape: M,
    returned: R,
) -> ControlFlow<R, impl Future<Output = R> + use<'a, R, M>> {
    let kept = match M::succeeded(returned) {
        Ok(kept) => kept,
        Err(failed) => return ControlFlow::Break(failed),
    };
    ControlFlow::Continue(async move {
        invalidate_rendered(cache.engine(), mutation, keys, tags).await;
        M::rebuild(kept)
    })
}

/// Invalidates what an `#[invalidates]` function names, but the keys and
/// tags that could not be rendered (logged).
async fn invalidate_rendered(
    engine: &Engine,
    mutation: &'static Mutation,
    keys: &[KeyBuf],
    tags: &[KeyBuf],
) {
    let unrendered = |kind: &str, rendered: &[KeyBuf], templates: &[&'static str]| {
        for (at, _) in rendered
            .iter()
            .enumerate()
            .filter(|(_, it)| !it.is_complete())
        {
            tracing::error!(
                function = mutation.function,
                template = templates.get(at).copied().unwrap_or_default(),
                "a placeholder's `Display` returned an error, so this {kind} cannot be rendered and is not invalidated: the entries it names stay until they expire (fix that `Display` impl)"
            );
        }
    };
    unrendered("key", keys, mutation.key_templates);
    unrendered("tag", tags, mutation.tag_templates);
    let keys: Vec<&str> = rendered(keys);
    let tags: Vec<&str> = rendered(tags);
    if let Err(error) = invalidate(engine, &keys, &tags).await
        && let Some(suppressed) = engine.recovery.invalidation_log.admit()
    {
        tracing::error!(
            function = mutation.function,
            keys = ?mutation.key_templates,
            tags = ?mutation.tag_templates,
            %error,
            pending = engine.recovery.len(),
            suppressed,
            "invalidation did not reach Redis: kept and replayed when Redis answers again; until then other instances may serve the old value (from Redis, and from their L1 until the replayed message reaches them)"
        );
    }
}

/// The keys (or tags) that rendered completely.
fn rendered(keys: &[KeyBuf]) -> Vec<&str> {
    keys.iter()
        .filter(|key| key.is_complete())
        .map(KeyBuf::as_str)
        .collect()
}

/// What a `#[write_through]` saw before its body ran, for its write after
/// the body.
pub struct PendingWrite(Planned);

impl PendingWrite {
    /// The rendered key, when it rendered.
    pub(crate) fn key(&self) -> Option<&str> {
        match &self.0 {
            Planned::Write(pending) => Some(pending.key.as_str()),
            Planned::Invalidate(key) => Some(key.as_str()),
            Planned::Nothing => None,
        }
    }
}

enum Planned {
    /// The key and its tags rendered: store the value.
    Write(Pending),
    /// A tag could not be rendered (a placeholder's `Display` returned an
    /// error): the entry cannot carry its tags, so the key is invalidated
    /// instead (the next read loads).
    Invalidate(KeyBuf),
    /// The key could not be rendered: which entry it names is unknown.
    Nothing,
}

/// The key, its tags' tokens, the local epochs, and what Redis held under
/// the key (`None`: no Redis, or no answer).
struct Pending {
    key: KeyBuf,
    context: Context,
    prior: Option<Prior>,
}

/// Runs before a `#[write_through]` body: notes what the key holds now, so
/// that the value written after the body cannot land over another mutation
/// of the key that completed meanwhile (see [`write_through`]).
///
/// See [`write_through`] for an example.
pub async fn begin_write(cache: &Cache, key: KeyBuf, tags: &[KeyBuf]) -> PendingWrite {
    if !key.is_complete() {
        return PendingWrite(Planned::Nothing);
    }
    if !tags.iter().all(KeyBuf::is_complete) {
        return PendingWrite(Planned::Invalidate(key));
    }
    let engine = cache.engine();
    let store = &engine.store;
    let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
    let context = engine.tags.context(store, key.as_str(), &tags).await;
    let prior = store.prior(&store.storage_key(key.as_str())).await;
    PendingWrite(Planned::Write(Pending {
        key,
        context,
        prior,
    }))
}

/// Runs after a `#[write_through]` body: on success stores the returned
/// value under the key, in L1 and Redis, and tells other instances to drop
/// their L1 copies. `Err`, `None` and `Ok(None)` touch nothing. Never fails
/// the call: Redis problems are logged.
///
/// The value goes to Redis only if the key still holds what it held before
/// the body ran. If another mutation of the key landed in between, either
/// of the two may carry the newer data, so a tombstone is written instead
/// (the next read loads from the source). The same holds when the value
/// cannot be stored (too large) or Redis did not answer before the body:
/// the old value must not stay. A full Redis (`OOM`) that refuses both gets
/// a `DEL` of the key instead; a write Redis did not take at all is kept as
/// an invalidation of the key and replayed once Redis answers again.
///
/// A key that could not be rendered (a placeholder's `Display` returned an
/// error) stores nothing: which entry it names is unknown. A tag that could
/// not be rendered leaves the entry unable to carry it: the key is
/// invalidated instead. Either is logged at error level.
///
/// Like [`invalidate_after`], a plain `fn` taking the body's value: after
/// an error or a `None` it hands the value back at once
/// ([`ControlFlow::Break`]: nothing to store); after a value, it gives the
/// future that stores it and then returns it. The future holds the stored
/// value (`Send`), never the error, so the annotated function's future is
/// `Send` with a `Box<dyn Error>` error type.
///
/// # Example
///
/// What `#[write_through]` expands to, around the body:
///
/// ```
/// use std::ops::ControlFlow;
/// use std::time::Duration;
/// use cache_runtime::Cache;
/// use cache_runtime::__private::{KeyBuf, Site, SiteIndex, begin_write, shape_of_val, write_through};
///
/// static SITE: Site = Site {
///     function: "rename_user",
///     template: "user:<id>",
///     ttl: Duration::from_secs(300),
///     jitter: None,
///     negative: None,
///     l1: true,
///     lock: false,
///     early: None,
///     stale: None,
///     tag_templates: &[],
///     index: SiteIndex::new(),
/// };
///
/// async fn rename_user(cache: &Cache, id: u64, name: String) -> Result<String, String> {
///     let mut key = KeyBuf::new();
///     key.literal("user:");
///     key.arg(&id);
///     let pending = begin_write(cache, key, &[]).await;
///     let write = {
///         let returned: Result<String, String> = Ok(name); // the body
///         match write_through(cache, &SITE, pending, shape_of_val!(&returned), returned) {
///             ControlFlow::Continue(write) => write,
///             ControlFlow::Break(returned) => return returned,
///         }
///     };
///     write.await
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let cache = Cache::builder().build().await.unwrap();
/// # assert_eq!(rename_user(&cache, 1, "ada".into()).await.as_deref(), Ok("ada"));
/// # }
/// ```
pub fn write_through<'a, R, M: Shape<R>>(
    cache: &'a Cache,
    site: &'static Site,
    pending: PendingWrite,
    _shape: M,
    returned: R,
) -> ControlFlow<R, impl Future<Output = R> + Send + use<'a, R, M>> {
    let value = match M::split(returned) {
        Loaded::Value(value) => value,
        // `None`: nothing was written.
        Loaded::Absent(none) => return ControlFlow::Break(M::from_none(none)),
        Loaded::Failed(failed) => return ControlFlow::Break(failed),
    };
    ControlFlow::Continue(async move {
        store_after_success(cache.engine(), site, pending, M::Value::clone(&value)).await;
        M::from_value(value)
    })
}

/// After a write's body succeeded (or its write was queued, see
/// `write_behind.rs`): stores `value` as planned before the body ran.
pub(crate) async fn store_after_success<V: CacheValue>(
    engine: &Engine,
    site: &'static Site,
    pending: PendingWrite,
    value: V,
) {
    match pending.0 {
        Planned::Write(pending) if site.caches() => {
            store_written(engine, site, pending, value).await;
        }
        // The site stores nothing (its `ttl` is out of range, logged when
        // it was made), but the old value must not stay.
        Planned::Write(Pending { key, .. }) => invalidate_key(engine, site, &key).await,
        Planned::Invalidate(key) => {
            tracing::error!(
                function = site.function,
                template = site.template,
                tags = ?site.tag_templates,
                "a placeholder's `Display` returned an error, so a tag cannot be rendered: the value is not stored, the key is invalidated instead (fix that `Display` impl)"
            );
            invalidate_key(engine, site, &key).await;
        }
        Planned::Nothing => tracing::error!(
            function = site.function,
            template = site.template,
            "a placeholder's `Display` returned an error, so the key cannot be rendered: the value is not stored (fix that `Display` impl)"
        ),
    }
}

/// Invalidates the key of a write that stores nothing.
async fn invalidate_key(engine: &Engine, site: &'static Site, key: &KeyBuf) {
    if let Err(error) = invalidate(engine, &[key.as_str()], &[]).await {
        write_failed(engine, site, &error);
    }
}

/// Stores a value a `#[write_through]` body returned.
async fn store_written<V: CacheValue>(
    engine: &Engine,
    site: &'static Site,
    pending: Pending,
    value: V,
) {
    let store = &engine.store;
    let Pending {
        key,
        context,
        prior,
    } = pending;
    let key = key.as_str();
    let lifetime = store.lifetime(site, site.ttl, Duration::ZERO);
    let (bytes, size) = store.encode(
        site,
        &value,
        lifetime,
        context.tags.as_deref().unwrap_or_default(),
    );
    let written = match store.l2() {
        // In-process only: L1 is the whole cache.
        None => true,
        Some(l2) => {
            let storage_key = store.storage_key(key);
            let tombstone = codec::encode_tombstone();
            let written = match (&bytes, &prior) {
                (Some(bytes), Some(prior)) => {
                    store
                        .replace_if_unchanged(
                            &storage_key,
                            prior,
                            bytes,
                            lifetime.total(),
                            Some((&tombstone, engine.tombstone_ttl)),
                        )
                        .await
                }
                // Unstorable, or what the key held is unknown: the old
                // value must go.
                _ => l2
                    .set(&storage_key, &tombstone, engine.tombstone_ttl)
                    .await
                    .map(|()| false),
            };
            // Full: neither the value nor a tombstone fits, but the old
            // value can still go.
            let written = match written {
                Err(Error::OutOfMemory) => l2.del(&storage_key).await.map(|()| false),
                written => written,
            };
            let published = engine
                .channel
                .publish(store, &[Change::Key(key.to_owned())])
                .await;
            match written.and_then(|written| published.map(|()| written)) {
                Ok(written) => written,
                Err(error) => {
                    // The old value may still be in Redis and in other
                    // instances' L1: removed by the replay.
                    engine.recovery.keep(store, &[key], &[]);
                    write_failed(engine, site, &error);
                    false
                }
            }
        }
    };
    // In L1 only what Redis now holds, and only if no other mutation of the
    // key reached this instance since the body began.
    if written && store.epochs().advance_key(key, context.snapshot) {
        let snapshot = store.epochs().snapshot(key);
        store.keep(
            site,
            key,
            Some(Arc::new(value)),
            &context.timing(&lifetime),
            size,
            snapshot,
        );
    } else {
        store.drop_local(key);
    }
}
/// Logs (rate-limited) a `#[write_through]` whose write did not reach Redis.
fn write_failed(engine: &Engine, site: &'static Site, error: &Error) {
    if let Some(suppressed) = engine.recovery.write_log.admit() {
        tracing::error!(
            function = site.function,
            template = site.template,
            %error,
            pending = engine.recovery.len(),
            suppressed,
            "write-through did not reach Redis: the key is invalidated when Redis answers again; until then other instances may serve the old value"
        );
    }
}

/// Invalidates keys and tags: locally at once, then in Redis (tombstones,
/// tag versions, or deletes where a full Redis refuses those) and on the
/// channel. Returns the first Redis failure; the local part is done whatever
/// happens, and what did not reach Redis is kept and replayed once Redis
/// answers again (`recovery.rs`).
pub(crate) async fn invalidate(engine: &Engine, keys: &[&str], tags: &[&str]) -> Result<(), Error> {
    let store = &engine.store;
    for key in keys {
        store.drop_local(key);
    }
    if !tags.is_empty() {
        store.epochs().bump_tags();
    }
    if store.l2().is_none() {
        // In-process only: this instance holds the tag tokens.
        for tag in tags {
            engine.tags.replace_locally(tag);
        }
        return Ok(());
    }
    let applied = apply_in_redis(
        store,
        &engine.tags,
        &engine.channel,
        engine.tombstone_ttl,
        keys,
        tags,
    )
    .await;
    // Again, now that Redis holds the change: a read of this instance that
    // started after the first drop may have fetched the old value from Redis
    // before the tombstone landed, and kept it.
    for key in keys {
        store.drop_local(key);
    }
    if !tags.is_empty() {
        store.epochs().bump_tags();
    }
    if applied.is_err() {
        // Redis may still hold the old tokens: a token of this instance's
        // own until the replay, so that reading Redis's cannot bring back
        // the entries that carry the old one.
        for tag in tags {
            engine.tags.replace_locally(tag);
        }
        engine.recovery.keep(store, keys, tags);
    }
    applied
}

/// How many pending invalidations one replay round sends (then one message).
const REPLAY_BATCH: usize = 64;

/// Longest pause between two replay attempts while Redis does not answer.
/// Short: while the breaker is open an attempt costs nothing (it is skipped
/// at once), so this mostly bounds how long after the breaker closes the
/// replay starts.
const REPLAY_MAX_DELAY: Duration = Duration::from_millis(250);

/// Replays, oldest first, the invalidations that did not reach Redis, as
/// soon as Redis answers again (randomised pauses between failed attempts),
/// until the cache is dropped. Holds the engine only while a round runs.
pub(crate) async fn replay_pending(engine: Weak<Engine>) {
    let Some(recovery) = engine.upgrade().map(|engine| engine.recovery.clone()) else {
        return;
    };
    let mut attempt: u32 = 0;
    let mut replayed: u64 = 0;
    loop {
        recovery.pending().await;
        let Some(cache) = engine.upgrade() else {
            return;
        };
        let batch = recovery.oldest(REPLAY_BATCH);
        let mut keys = Vec::new();
        let mut tags = Vec::new();
        for (_, pending) in &batch {
            match pending {
                Invalidation::Key(key) => keys.push(&**key),
                Invalidation::Tag(tag) => tags.push(&**tag),
            }
        }
        let applied = apply_in_redis(
            &cache.store,
            &cache.tags,
            &cache.channel,
            cache.tombstone_ttl,
            &keys,
            &tags,
        )
        .await;
        if applied.is_ok() {
            attempt = 0;
            replayed += batch.len() as u64;
            if recovery.replayed(&cache.store, &batch) == 0 {
                tracing::info!(
                    replayed,
                    suppressed_invalidation_logs = recovery.invalidation_log.take_suppressed(),
                    suppressed_write_logs = recovery.write_log.take_suppressed(),
                    "Redis takes invalidations again: the pending ones were replayed, this instance reads Redis again"
                );
                replayed = 0;
            }
            continue;
        }
        drop(cache);
        tokio::time::sleep(backoff_delay(attempt, REPLAY_MAX_DELAY)).await;
        attempt = attempt.saturating_add(1);
    }
}
