//! The write side: `#[invalidates]`, `#[write_through]`, and
//! [`Cache::invalidate`](crate::Cache::invalidate) /
//! [`invalidate_tag`](crate::Cache::invalidate_tag).
//!
//! Each acts locally at once (L1 copies dropped, in-flight loads kept from
//! putting older values back), then in Redis (a tombstone instead of the
//! value, a tag's version moved on, or the new value), then tells other
//! instances over the invalidation channel (`invalidation.rs`).

use std::future::Future;
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

/// Runs after an `#[invalidates]` body: if it succeeded, invalidates the
/// rendered keys and tags. Never fails the call: a Redis failure is logged
/// at error level (the local copies are dropped anyway, and other instances'
/// expire within `l1_max_ttl`).
///
/// A plain `fn` returning a future that does not borrow `returned`, so the
/// annotated function's future stays `Send` whatever its return type.
pub fn invalidate_after<'a, R, M: Succeeds<R>>(
    cache: &'a Cache,
    mutation: &'static Mutation,
    keys: &'a [KeyBuf],
    tags: &'a [KeyBuf],
    returned: &R,
) -> impl Future<Output = ()> + Send + use<'a, R, M> {
    let succeeded = M::succeeded(returned);
    async move {
        if !succeeded {
            return;
        }
        let keys: Vec<&str> = keys.iter().map(KeyBuf::as_str).collect();
        let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
        if let Err(error) = invalidate(cache.engine(), &keys, &tags).await {
            tracing::error!(
                function = mutation.function,
                keys = ?mutation.key_templates,
                tags = ?mutation.tag_templates,
                %error,
                "invalidation did not reach Redis: other instances may serve the old value until it expires (at most l1_max_ttl in their L1, its TTL in Redis)"
            );
        }
    }
}

/// What a `#[write_through]` saw before its body ran, for its write after
/// the body: the key, its tags' tokens, the local epochs, and what Redis
/// held under the key (`None`: no Redis, or no answer).
pub struct PendingWrite {
    key: KeyBuf,
    context: Context,
    prior: Option<Prior>,
}

/// Runs before a `#[write_through]` body: notes what the key holds now, so
/// that the value written after the body cannot land over another mutation
/// of the key that completed meanwhile (see [`write_through`]).
pub async fn begin_write(cache: &Cache, key: KeyBuf, tags: &[KeyBuf]) -> PendingWrite {
    let engine = cache.engine();
    let store = &engine.store;
    let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
    let context = engine.tags.context(store, key.as_str(), &tags).await;
    let prior = store.prior(&store.storage_key(key.as_str())).await;
    PendingWrite {
        key,
        context,
        prior,
    }
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
/// A plain `fn` that clones the value first and returns a future that does
/// not borrow `returned`, so the annotated function's future stays `Send`
/// whatever its error type.
pub fn write_through<'a, R, M: Shape<R>>(
    cache: &'a Cache,
    site: &'static Site,
    pending: PendingWrite,
    returned: &R,
) -> impl Future<Output = ()> + Send + use<'a, R, M> {
    let value = match M::peek(returned) {
        Loaded::Value(value) => Some(value.clone()),
        // `Err`, or `None` (nothing was written): nothing to store.
        Loaded::Absent(()) | Loaded::Failed(()) => None,
    };
    async move {
        if let Some(value) = value {
            store_written::<M::Value>(cache.engine(), site, pending, value).await;
        }
    }
}

/// Stores a value a `#[write_through]` body returned.
async fn store_written<V: CacheValue>(
    engine: &Engine,
    site: &'static Site,
    pending: PendingWrite,
    value: V,
) {
    let store = &engine.store;
    let PendingWrite {
        key,
        context,
        prior,
    } = pending;
    let key = key.as_str();
    let lifetime = store.lifetime(site, site.ttl, Duration::ZERO);
    let bytes = store.encode(
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
            bytes.map_or(0, |bytes| bytes.len()),
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
