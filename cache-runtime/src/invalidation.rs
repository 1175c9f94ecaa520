//! Invalidation that reaches every instance, and never lets an older load
//! write over it.
//!
//! # Keys and hash slots
//!
//! Everything a key needs lives under that key or names itself after it:
//! the value at `<ns>:<key>` (an invalidation overwrites it with a
//! tombstone, see below), its lock at `<ns>:<key> #lock`, and each tag's
//! version counter at `<ns>:<tag> #tag`. Every Redis command on the request
//! path touches one key, so in Redis Cluster each goes to that key's hash
//! slot and no command spans slots. Runtime keys hold a space, which no
//! rendered template can, so they never collide with cached values.
//!
//! # Cross-instance L1 eviction
//!
//! Each cache subscribes to `<ns> #inval`. `invalidate`, `invalidate_tag`,
//! `#[invalidates]` and `#[write_through]` publish what they changed (keys,
//! and tags with their new versions), so receivers act without asking Redis.
//! Fills after a miss publish nothing there. When the subscription drops,
//! the cache clears its L1 on reconnecting (it may have missed messages).
//! At start it publishes a probe and counts its arrival, so a channel that
//! does not deliver shows in the stats instead of silently serving stale
//! data.
//!
//! # No stale set
//!
//! - L2: an invalidation writes a tombstone (unique bytes) instead of
//!   deleting, and a load writes its value with a script that checks the key
//!   still holds exactly what the load read before running the body. A load
//!   that overlapped an invalidation therefore fails its write.
//! - L1: per-key epochs (striped) and a tag epoch are read before a load and
//!   checked before its L1 insert; an invalidation bumps them.
//! - Tags: a load reads its tags' versions before running the body and
//!   stores them with the value; a value whose tag moved on is a miss.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many key stripes the L1 epochs use: an invalidation of one key
/// blocks L1 inserts of in-flight loads of 1/STRIPES of the keys.
const STRIPES: usize = 256;

/// Epochs that in-flight loads compare before inserting into L1.
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    tags: AtomicU64,
    hasher: std::hash::RandomState,
}

/// What a load saw before it started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Snapshot {
    stripe: u64,
    tags: u64,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            tags: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl Epochs {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    pub(crate) fn snapshot(&self, key: &str) -> Snapshot {
        Snapshot {
            stripe: self.stripe(key).load(Ordering::Acquire),
            tags: self.tags.load(Ordering::Acquire),
        }
    }

    /// Whether nothing that could concern `key` was invalidated since
    /// `before` (tags count only for tagged entries).
    pub(crate) fn unchanged(&self, key: &str, before: Snapshot, tagged: bool) -> bool {
        let now = self.snapshot(key);
        now.stripe == before.stripe && (!tagged || now.tags == before.tags)
    }

    pub(crate) fn bump_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn bump_tags(&self) {
        self.tags.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn bump_all(&self) {
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        self.bump_tags();
    }
}

/// The current versions of tags, as far as this instance knows: filled from
/// Redis on first use, updated by invalidation messages, cleared when the
/// subscription reconnects.
#[derive(Default)]
pub(crate) struct TagVersions {
    known: Mutex<HashMap<Box<str>, u64>>,
}

/// Bound on remembered tags; past it the map starts over (versions are
/// re-read from Redis as needed).
const MAX_KNOWN_TAGS: usize = 100_000;

impl TagVersions {
    pub(crate) fn get(&self, tag: &str) -> Option<u64> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .copied()
    }

    /// Records a version; versions only move forward.
    pub(crate) fn observe(&self, tag: &str, version: u64) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN_TAGS && !known.contains_key(tag) {
            known.clear();
        }
        let current = known.entry(tag.into()).or_insert(version);
        *current = (*current).max(version);
    }

    pub(crate) fn clear(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The invalidation channel of a namespace.
pub(crate) fn channel(namespace: &str) -> String {
    format!("{namespace} #inval")
}

/// The Redis key of a tag's version counter.
pub(crate) fn tag_version_key(namespace: &str, tag: &str) -> String {
    format!("{namespace}:{tag} #tag")
}

/// One change carried by an invalidation message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// This key's value changed or is gone.
    Key(String),
    /// This tag moved to this version.
    Tag(String, u64),
    /// A probe: no change, proves the channel delivers.
    Probe(u64),
}

/// A message: the sender's id on the first line, then one change per line
/// (`K <key>`, `T <tag> <version>`, `P <nonce>`). Keys and tags are rendered
/// templates, which hold no whitespace.
pub(crate) fn encode_message(sender: u64, changes: &[Change]) -> String {
    let mut out = format!("{sender:016x}");
    for change in changes {
        match change {
            Change::Key(key) => out.push_str(&format!("\nK {key}")),
            Change::Tag(tag, version) => out.push_str(&format!("\nT {tag} {version}")),
            Change::Probe(nonce) => out.push_str(&format!("\nP {nonce}")),
        }
    }
    out
}

/// Parses a message; `None` for anything malformed (ignored by receivers).
pub(crate) fn decode_message(message: &str) -> Option<(u64, Vec<Change>)> {
    let mut lines = message.lines();
    let sender = u64::from_str_radix(lines.next()?, 16).ok()?;
    let mut changes = Vec::new();
    for line in lines {
        let (kind, rest) = line.split_once(' ')?;
        changes.push(match kind {
            "K" => Change::Key(rest.to_owned()),
            "T" => {
                let (tag, version) = rest.rsplit_once(' ')?;
                Change::Tag(tag.to_owned(), version.parse().ok()?)
            }
            "P" => Change::Probe(rest.parse().ok()?),
            _ => return None,
        });
    }
    Some((sender, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        let changes = vec![
            Change::Key("user:1%3Aadmin".into()),
            Change::Tag("org:7".into(), 12),
            Change::Probe(99),
        ];
        let text = encode_message(0xABC, &changes);
        assert_eq!(decode_message(&text), Some((0xABC, changes)));
        assert_eq!(decode_message("not hex\nK a"), None);
        assert_eq!(decode_message("00000000000000ab\nX a"), None);
        assert_eq!(decode_message("00000000000000ab\nT tag notanumber"), None);
    }

    #[test]
    fn epochs_see_invalidations_of_their_key_and_of_tags() {
        let epochs = Epochs::default();
        let before = epochs.snapshot("user:1");
        assert!(epochs.unchanged("user:1", before, true));
        epochs.bump_tags();
        assert!(
            epochs.unchanged("user:1", before, false),
            "an untagged entry ignores tags"
        );
        assert!(!epochs.unchanged("user:1", before, true));
        let before = epochs.snapshot("user:1");
        epochs.bump_key("user:1");
        assert!(!epochs.unchanged("user:1", before, false));
        let before = epochs.snapshot("user:2");
        epochs.bump_all();
        assert!(!epochs.unchanged("user:2", before, false));
    }

    #[test]
    fn tag_versions_only_move_forward() {
        let versions = TagVersions::default();
        assert_eq!(versions.get("t"), None);
        versions.observe("t", 3);
        versions.observe("t", 2);
        assert_eq!(versions.get("t"), Some(3));
        versions.clear();
        assert_eq!(versions.get("t"), None);
    }

    #[test]
    fn runtime_keys_hold_a_space() {
        assert!(tag_version_key("app", "org:7").contains(' '));
        assert!(channel("app").contains(' '));
    }
}

/// Keeps this cache subscribed to its invalidation and "filled" channels:
/// applies invalidations to L1, wakes `lock` waiters, probes the channel
/// after each (re)subscription, and clears L1 after a reconnection (messages
/// may have been missed). Ends when the cache is dropped.
pub(crate) async fn listen(
    inner: std::sync::Weak<crate::cache::Inner>,
    client: redis::Client,
    connect_timeout: std::time::Duration,
) {
    use futures_util::StreamExt;

    let Some((invalidations, fills)) = inner.upgrade().map(|inner| {
        (
            channel(&inner.namespace),
            crate::lock::fill_channel(&inner.namespace),
        )
    }) else {
        return;
    };
    let mut subscribed_before = false;
    // Started without Redis: whatever this instance cached meanwhile was
    // never checked against other instances' invalidations.
    let mut started_disconnected = inner
        .upgrade()
        .is_some_and(|inner| inner.l2.as_ref().is_some_and(|l2| !l2.is_connected()));
    let mut attempt: u32 = 0;
    loop {
        let subscription = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[&invalidations, &fills]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscription {
            attempt = 0;
            let Some(cache) = inner.upgrade() else {
                return;
            };
            if subscribed_before || started_disconnected {
                cache.lost_messages(subscribed_before);
            }
            subscribed_before = true;
            started_disconnected = false;
            cache.send_probe().await;
            drop(cache);
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(cache) = inner.upgrade() else {
                    return;
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if message.get_channel_name() == fills {
                    if let Some(l2) = &cache.l2 {
                        l2.fills.notify(&payload);
                    }
                } else if let Some((sender, changes)) = decode_message(&payload) {
                    cache.apply(sender, &changes);
                }
            }
            tracing::warn!("invalidation subscription lost; reconnecting (L1 will be cleared)");
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(crate::l2::backoff_delay(
            attempt,
            std::time::Duration::from_secs(5),
        ))
        .await;
        attempt = attempt.saturating_add(1);
    }
}

impl crate::cache::Inner {
    /// Applies a message from the channel.
    pub(crate) fn apply(&self, sender: u64, changes: &[Change]) {
        use crate::stats::bump;
        self.counters
            .last_channel_message_ms
            .store(crate::codec::now_ms().max(1), Ordering::Relaxed);
        if sender == self.sender_id {
            // Our own message: its changes were applied when it was sent.
            if changes.contains(&Change::Probe(self.probe_nonce)) {
                self.counters.channel_verified.store(1, Ordering::Relaxed);
            }
            return;
        }
        // Another instance's start-up probe changes nothing here and is not
        // an invalidation received.
        if changes
            .iter()
            .all(|change| matches!(change, Change::Probe(_)))
        {
            return;
        }
        bump(&self.counters.invalidations_received);
        for change in changes {
            match change {
                Change::Key(key) => self.drop_local(key),
                Change::Tag(tag, version) => {
                    self.tag_versions.observe(tag, *version);
                    self.epochs.bump_tags();
                }
                Change::Probe(_) => {}
            }
        }
    }

    /// After a reconnection (or a first connection after starting without
    /// Redis): messages may have been missed, so nothing local can be
    /// trusted.
    pub(crate) fn lost_messages(&self, reconnected: bool) {
        if reconnected {
            crate::stats::bump(&self.counters.pubsub_reconnects);
        }
        self.epochs.bump_all();
        self.tag_versions.clear();
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }

    /// Publishes the start-up probe; its return sets `channel_verified`.
    pub(crate) async fn send_probe(&self) {
        let _ = self.publish(&[Change::Probe(self.probe_nonce)]).await;
    }

    pub(crate) async fn publish(&self, changes: &[Change]) -> Result<(), crate::Error> {
        let Some(l2) = &self.l2 else {
            return Ok(());
        };
        let message = encode_message(self.sender_id, changes);
        l2.publish(&channel(&self.namespace), &message).await?;
        if !matches!(changes, [Change::Probe(_)]) {
            crate::stats::bump(&self.counters.invalidations_sent);
        }
        Ok(())
    }

    /// Drops a key from this instance's L1, and keeps in-flight loads of it
    /// from putting their older value back.
    pub(crate) fn drop_local(&self, key: &str) {
        self.epochs.bump_key(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
    }

    /// Invalidates keys and tags: locally at once, then in Redis (tombstones,
    /// tag versions) and on the channel. Returns the first Redis failure;
    /// the local part is done whatever happens.
    pub(crate) async fn invalidate(
        &self,
        keys: &[&str],
        tags: &[&str],
    ) -> Result<(), crate::Error> {
        for key in keys {
            self.drop_local(key);
        }
        if !tags.is_empty() {
            self.epochs.bump_tags();
        }
        let Some(l2) = &self.l2 else {
            // In-process only: this instance holds the tag versions.
            for tag in tags {
                let next = self.tag_versions.get(tag).unwrap_or(0) + 1;
                self.tag_versions.observe(tag, next);
            }
            return Ok(());
        };
        let mut first_error = None;
        let mut changes = Vec::with_capacity(keys.len() + tags.len());
        for key in keys {
            let tombstone = crate::codec::encode_tombstone();
            let storage_key = crate::keys::storage_key(&self.namespace, key);
            match l2.set(&storage_key, &tombstone, self.tombstone_ttl).await {
                Ok(()) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
            changes.push(Change::Key((*key).to_owned()));
        }
        for tag in tags {
            match l2.incr(&tag_version_key(&self.namespace, tag)).await {
                Ok(version) => {
                    self.tag_versions.observe(tag, version);
                    changes.push(Change::Tag((*tag).to_owned(), version));
                }
                Err(error) => {
                    // Redis did not count it: move the local version on so
                    // this instance stops serving the tag's entries.
                    if let Some(known) = self.tag_versions.get(tag) {
                        self.tag_versions.observe(tag, known + 1);
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Err(error) = self.publish(&changes).await {
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The current versions of `tags`: known locally, or read from Redis (a
    /// tag never invalidated is at version 0). With Redis unreachable, an
    /// unknown tag is taken to be at 0 provisionally: entries stored under
    /// that guess only stay in this instance, whose tag versions are
    /// forgotten when its subscription comes back (it then re-reads them).
    pub(crate) async fn tag_versions_of(&self, tags: &[&str]) -> Vec<crate::codec::TagVersion> {
        let mut versions = Vec::with_capacity(tags.len());
        for tag in tags {
            let version = match self.tag_versions.get(tag) {
                Some(version) => version,
                None => {
                    let version = match &self.l2 {
                        Some(l2) => l2
                            .get_counter(&tag_version_key(&self.namespace, tag))
                            .await
                            .unwrap_or(0),
                        None => 0,
                    };
                    self.tag_versions.observe(tag, version);
                    version
                }
            };
            versions.push(((*tag).into(), version));
        }
        versions
    }

    /// Whether every tag of a stored entry is still at its stored version,
    /// as far as this instance knows (without asking Redis).
    pub(crate) fn tags_current(&self, stored: &[crate::codec::TagVersion]) -> bool {
        stored
            .iter()
            .all(|(tag, version)| self.tag_versions.get(tag) == Some(*version))
    }
}

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
pub fn invalidate_after<'a, R, M: crate::shape::Succeeds<R>>(
    cache: &'a crate::Cache,
    mutation: &'static Mutation,
    keys: &'a [crate::keys::KeyBuf],
    tags: &'a [crate::keys::KeyBuf],
    returned: &R,
) -> impl std::future::Future<Output = ()> + Send + use<'a, R, M> {
    let succeeded = M::succeeded(returned);
    async move {
        if !succeeded {
            return;
        }
        let keys: Vec<&str> = keys.iter().map(crate::keys::KeyBuf::as_str).collect();
        let tags: Vec<&str> = tags.iter().map(crate::keys::KeyBuf::as_str).collect();
        if let Err(error) = cache.inner.invalidate(&keys, &tags).await {
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
