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
use crate::tags::version_key;

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
            store_written::<M::Value>(cache.engine(), site, key.as_str(), tags, value).await;
        }
    }
}

/// Stores a value a `#[write_through]` body returned.
async fn store_written<V: CacheValue>(
    engine: &Engine,
    site: &'static Site,
    key: &str,
    tags: &[KeyBuf],
    value: V,
) {
    let store = &engine.store;
    // In-flight loads of this key must not put an older value in L1.
    store.epochs().bump_key(key);
    let tags: Vec<&str> = tags.iter().map(KeyBuf::as_str).collect();
    let context = engine.tags.context(store, key, &tags).await;
    let lifetime = store.lifetime(site, site.ttl, Duration::ZERO);
    let bytes = store.encode(
        site,
        &value,
        lifetime,
        context.tags.as_deref().unwrap_or_default(),
    );
    let approx_bytes = bytes.as_ref().map_or(0, Vec::len);
    store.keep(
        site,
        key,
        Some(Arc::new(value)),
        &context.timing(&lifetime),
        approx_bytes,
        context.snapshot,
    );
    let Some(l2) = store.l2() else {
        return;
    };
    let stored = match bytes {
        Some(bytes) => {
            l2.set(&store.storage_key(key), &bytes, lifetime.total())
                .await
        }
        None => Ok(()),
    };
    let published = engine
        .channel
        .publish(store, &[Change::Key(key.to_owned())])
        .await;
    if let Err(error) = stored.and(published) {
        tracing::error!(function = site.function, template = site.template, %error, "write-through did not reach Redis: other instances may serve the old value until it expires");
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
        // In-process only: this instance holds the tag versions.
        for tag in tags {
            let next = engine.tags.get(tag).unwrap_or(0) + 1;
            engine.tags.observe(tag, next);
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
        match l2.incr(&version_key(store.namespace(), tag)).await {
            Ok(version) => {
                engine.tags.observe(tag, version);
                changes.push(Change::Tag((*tag).to_owned(), version));
            }
            Err(error) => {
                // Redis did not count it: move the local version on so
                // this instance stops serving the tag's entries.
                if let Some(known) = engine.tags.get(tag) {
                    engine.tags.observe(tag, known + 1);
                }
                first_error.get_or_insert(error);
            }
        }
    }
    if let Err(error) = engine.channel.publish(store, &changes).await {
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}
