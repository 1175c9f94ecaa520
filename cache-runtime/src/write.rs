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
use std::sync::Arc;
use std::time::Duration;

use crate::codec;
use crate::engine::{Cache, Engine};
use crate::error::Error;
use crate::invalidation::Change;
use crate::keys::KeyBuf;
use crate::shape::{CacheValue, Loaded, Shape, Succeeds};
use crate::site::Site;
use crate::store::{Context, Prior};
use crate::tags::{TAG_VERSION_TTL, new_token, version_key};

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
/// call: a Redis failure is logged at error level (the local copies are
/// dropped anyway, and other instances' expire within `l1_max_ttl`).
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
    if let Err(error) = invalidate(engine, &keys, &tags).await {
        tracing::error!(
            function = mutation.function,
            keys = ?mutation.key_templates,
            tags = ?mutation.tag_templates,
            %error,
            "invalidation did not reach Redis: other instances may serve the old value until it expires (at most l1_max_ttl in their L1, its TTL in Redis)"
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
/// the old value must not stay.
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
/// use cache_runtime::__private::{KeyBuf, Site, begin_write, shape_of_val, write_through};
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
        let engine = cache.engine();
        match pending.0 {
            Planned::Write(pending) => {
                store_written::<M::Value>(engine, site, pending, M::Value::clone(&value)).await;
            }
            Planned::Invalidate(key) => {
                tracing::error!(
                    function = site.function,
                    template = site.template,
                    tags = ?site.tag_templates,
                    "a placeholder's `Display` returned an error, so a tag cannot be rendered: the value is not stored, the key is invalidated instead (fix that `Display` impl)"
                );
                if let Err(error) = invalidate(engine, &[key.as_str()], &[]).await {
                    tracing::error!(function = site.function, template = site.template, %error, "invalidation did not reach Redis: other instances may serve the old value until it expires");
                }
            }
            Planned::Nothing => tracing::error!(
                function = site.function,
                template = site.template,
                "a placeholder's `Display` returned an error, so the key cannot be rendered: the value is not stored (fix that `Display` impl)"
            ),
        }
        M::from_value(value)
    })
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
            let published = engine
                .channel
                .publish(store, &[Change::Key(key.to_owned())])
                .await;
            match written.and_then(|written| published.map(|()| written)) {
                Ok(written) => written,
                Err(error) => {
                    tracing::error!(function = site.function, template = site.template, %error, "write-through did not reach Redis: other instances may serve the old value until it expires");
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
/// Invalidates keys and tags: locally at once, then in Redis (tombstones,
/// tag versions) and on the channel. Returns the first Redis failure; the
/// local part is done whatever happens.
pub(crate) async fn invalidate(engine: &Engine, keys: &[&str], tags: &[&str]) -> Result<(), Error> {
    let store = &engine.store;
    for key in keys {
        store.drop_local(key);
    }
    if !tags.is_empty() {
        store.epochs().bump_tags();
    }
    let Some(l2) = store.l2() else {
        // In-process only: this instance holds the tag tokens.
        for tag in tags {
            engine.tags.replace_locally(tag);
        }
        return Ok(());
    };
    let mut first_error = None;
    let mut changes = Vec::with_capacity(keys.len() + tags.len());
    for key in keys {
        let tombstone = codec::encode_tombstone();
        if let Err(error) = l2
            .set(&store.storage_key(key), &tombstone, engine.tombstone_ttl)
            .await
        {
            first_error.get_or_insert(error);
        }
        changes.push(Change::Key((*key).to_owned()));
    }
    for tag in tags {
        // Forgotten before (entries with the tag stop being served here at
        // once) and after (a token read meanwhile may be the old one).
        engine.tags.forget(tag);
        let replaced = l2
            .set(
                &version_key(store.namespace(), tag),
                new_token().to_string().as_bytes(),
                TAG_VERSION_TTL,
            )
            .await;
        engine.tags.forget(tag);
        if let Err(error) = replaced {
            first_error.get_or_insert(error);
        }
        changes.push(Change::Tag((*tag).to_owned()));
    }
    // Again, now that Redis holds the change: a read of this instance that
    // started after the first drop may have fetched the old value from Redis
    // before the tombstone landed, and kept it.
    for key in keys {
        store.drop_local(key);
    }
    if !tags.is_empty() {
        store.epochs().bump_tags();
    }
    if let Err(error) = engine.channel.publish(store, &changes).await {
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}
