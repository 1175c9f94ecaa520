//! Invalidations in Redis, and auto-recovery for those Redis did not take.
//!
//! An invalidation's Redis part ([`apply_in_redis`]) writes a tombstone over
//! each key, replaces each tag's token, then publishes the change. A full
//! Redis (`OOM` under `noeviction`) refuses both writes while it still
//! accepts a `DEL`, so each falls back to deleting: the key (no value left
//! to serve), or the tag's version key (a missing token makes every entry
//! carrying the tag a miss, `tags.rs`).
//!
//! What still did not reach Redis (unreachable, timed out, read-only
//! replica) is kept in a [`Backlog`]: bounded, one entry per key and per
//! tag, oldest first. A background task (`write.rs::replay_pending`)
//! replays it in order as soon as Redis answers again, with randomised
//! pauses between attempts. While it is not empty this instance does not
//! read Redis (`Store::hold_l2_reads`): Redis may still hold the values
//! the kept invalidations remove, so reads are misses, bodies run, and L1
//! keeps what this instance loads itself.
//!
//! # When the backlog is full
//!
//! The oldest entry is dropped for the new one: the newest invalidations
//! are the likeliest to concern values other instances still serve, and
//! an old one's value may have expired meanwhile. A dropped key or tag may
//! be served from Redis by other instances until its entries expire (what
//! happened to every lost invalidation before this backlog existed); each
//! drop is counted (`invalidations_dropped`) and logged (rate-limited).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::codec;
use crate::error::Error;
use crate::invalidation::{Change, Channel};
use crate::logging::Throttle;
use crate::stats::bump;
use crate::store::Store;
use crate::tags::{TAG_VERSION_TTL, Tags, new_token, version_key};

/// One invalidation waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Invalidation {
    /// A rendered key (without the namespace).
    Key(Box<str>),
    /// A rendered tag.
    Tag(Box<str>),
}

/// Pending invalidations, oldest first, each key and tag once.
#[derive(Debug, Default)]
struct Backlog {
    /// By arrival: the sequence number of each entry's latest invalidation.
    order: BTreeMap<u64, Invalidation>,
    /// Where each entry sits in `order`.
    at: HashMap<Invalidation, u64>,
    next: u64,
}

impl Backlog {
    /// Adds `pending` as the newest entry (moving it there if it was
    /// already kept). Returns how many of the oldest were dropped to stay
    /// within `capacity`.
    fn push(&mut self, pending: Invalidation, capacity: usize) -> u64 {
        let sequence = self.next;
        self.next += 1;
        if let Some(previous) = self.at.insert(pending.clone(), sequence) {
            self.order.remove(&previous);
        }
        self.order.insert(sequence, pending);
        let mut dropped = 0;
        while self.order.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.at.remove(&oldest);
            dropped += 1;
        }
        dropped
    }

    /// Up to `limit` of the oldest entries, with their sequence numbers.
    fn oldest(&self, limit: usize) -> Vec<(u64, Invalidation)> {
        self.order
            .iter()
            .take(limit)
            .map(|(sequence, pending)| (*sequence, pending.clone()))
            .collect()
    }

    /// Removes the entries of `replayed` that were not invalidated again
    /// since they were taken (those stay, as newer invalidations). Returns
    /// how many were removed.
    fn remove(&mut self, replayed: &[(u64, Invalidation)]) -> u64 {
        let mut removed = 0;
        for (sequence, pending) in replayed {
            if self.at.get(pending) == Some(sequence) {
                self.at.remove(pending);
                self.order.remove(sequence);
                removed += 1;
            }
        }
        removed
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// The backlog of one cache, and the logs of invalidations and writes that
/// did not reach Redis.
pub(crate) struct Recovery {
    backlog: Mutex<Backlog>,
    capacity: usize,
    /// Wakes the replay task when the backlog gains entries.
    wake: tokio::sync::Notify,
    overflow_log: Throttle,
    /// `#[invalidates]` calls whose invalidation did not reach Redis.
    pub invalidation_log: Throttle,
    /// `#[write_through]` calls whose write did not reach Redis.
    pub write_log: Throttle,
}

impl Recovery {
    pub(crate) fn new(capacity: usize) -> Recovery {
        Recovery {
            backlog: Mutex::default(),
            capacity: capacity.max(1),
            wake: tokio::sync::Notify::new(),
            overflow_log: Throttle::default(),
            invalidation_log: Throttle::default(),
            write_log: Throttle::default(),
        }
    }

    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Invalidations waiting to be replayed.
    pub(crate) fn len(&self) -> usize {
        self.backlog().len()
    }

    /// Keeps the invalidation of `keys` and `tags` to be replayed, and
    /// stops this instance's reads of Redis until it is.
    pub(crate) fn keep(&self, store: &Store, keys: &[&str], tags: &[&str]) {
        let entries = keys
            .iter()
            .map(|key| Invalidation::Key((*key).into()))
            .chain(tags.iter().map(|tag| Invalidation::Tag((*tag).into())));
        let (dropped, pending) = {
            let mut backlog = self.backlog();
            let dropped: u64 = entries
                .map(|entry| backlog.push(entry, self.capacity))
                .sum();
            // Under the lock, so that it cannot land after the replay task
            // found the backlog empty and resumed reads.
            store.hold_l2_reads(backlog.len() > 0);
            (dropped, backlog.len())
        };
        for _ in 0..dropped {
            bump(&store.counters().invalidations_dropped);
        }
        if dropped > 0
            && let Some(suppressed) = self.overflow_log.admit()
        {
            tracing::error!(
                dropped,
                pending,
                suppressed,
                "the backlog of invalidations waiting for Redis is full (`invalidation_backlog`): \
                 the oldest were dropped, other instances may serve their old values from Redis until they expire"
            );
        }
        self.wake.notify_one();
    }

    /// Resolves once the backlog holds something.
    pub(crate) async fn pending(&self) {
        loop {
            let woken = self.wake.notified();
            if self.len() > 0 {
                return;
            }
            woken.await;
        }
    }

    /// Up to `limit` of the oldest pending invalidations.
    pub(crate) fn oldest(&self, limit: usize) -> Vec<(u64, Invalidation)> {
        self.backlog().oldest(limit)
    }

    /// Removes what was replayed (counted), and resumes this instance's
    /// reads of Redis once nothing is left. Returns how many are left.
    pub(crate) fn replayed(&self, store: &Store, replayed: &[(u64, Invalidation)]) -> usize {
        let (removed, left) = {
            let mut backlog = self.backlog();
            let removed = backlog.remove(replayed);
            store.hold_l2_reads(backlog.len() > 0);
            (removed, backlog.len())
        };
        for _ in 0..removed {
            bump(&store.counters().invalidations_replayed);
        }
        left
    }
}

/// Writes an invalidation to Redis: a tombstone over each key and a new
/// token for each tag, falling back to `DEL` for what a full Redis refuses;
/// then one message to the other instances. Returns the first failure
/// (counted and logged by L2); what did not fail is done. Without Redis,
/// nothing to do.
pub(crate) async fn apply_in_redis(
    store: &Store,
    known_tags: &Tags,
    channel: &Channel,
    tombstone_ttl: Duration,
    keys: &[&str],
    tags: &[&str],
) -> Result<(), Error> {
    let Some(l2) = store.l2() else {
        return Ok(());
    };
    let mut first_error = None;
    let mut changes = Vec::with_capacity(keys.len() + tags.len());
    for key in keys {
        let storage_key = store.storage_key(key);
        let tombstone = codec::encode_tombstone();
        let written = match l2.set(&storage_key, &tombstone, tombstone_ttl).await {
            // Full: no tombstone, but no old value either.
            Err(Error::OutOfMemory) => l2.del(&storage_key).await,
            written => written,
        };
        if let Err(error) = written {
            first_error.get_or_insert(error);
        }
        changes.push(Change::Key((*key).to_owned()));
    }
    for tag in tags {
        // Forgotten before (entries with the tag stop being served here at
        // once) and after (a token read meanwhile may be the old one).
        known_tags.forget(tag);
        let version_key = version_key(store.namespace(), tag);
        let replaced = match l2
            .set(
                &version_key,
                new_token().to_string().as_bytes(),
                TAG_VERSION_TTL,
            )
            .await
        {
            // Full: a missing token is replaced by a new one on the next
            // read, which no stored entry carries.
            Err(Error::OutOfMemory) => l2.del(&version_key).await,
            replaced => replaced,
        };
        known_tags.forget(tag);
        if let Err(error) = replaced {
            first_error.get_or_insert(error);
        }
        changes.push(Change::Tag((*tag).to_owned()));
    }
    if let Err(error) = channel.publish(store, &changes).await {
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Invalidation {
        Invalidation::Key(name.into())
    }

    #[test]
    fn one_entry_per_key_and_tag_newest_last() {
        let mut backlog = Backlog::default();
        assert_eq!(backlog.push(key("a"), 10), 0);
        assert_eq!(backlog.push(Invalidation::Tag("a".into()), 10), 0);
        assert_eq!(backlog.push(key("b"), 10), 0);
        assert_eq!(backlog.push(key("a"), 10), 0);
        assert_eq!(backlog.len(), 3);
        let names: Vec<Invalidation> = backlog.oldest(10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(names, [Invalidation::Tag("a".into()), key("b"), key("a")]);
    }

    #[test]
    fn a_full_backlog_drops_the_oldest() {
        let mut backlog = Backlog::default();
        for name in ["a", "b", "c"] {
            assert_eq!(backlog.push(key(name), 2), u64::from(name == "c"));
        }
        let names: Vec<Invalidation> = backlog.oldest(10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(names, [key("b"), key("c")]);
        assert_eq!(backlog.at.len(), 2);
    }

    #[test]
    fn an_entry_invalidated_again_during_its_replay_stays() {
        let mut backlog = Backlog::default();
        backlog.push(key("a"), 10);
        backlog.push(key("b"), 10);
        let taken = backlog.oldest(10);
        backlog.push(key("a"), 10);
        assert_eq!(backlog.remove(&taken), 1);
        let names: Vec<Invalidation> = backlog.oldest(10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(names, [key("a")]);
    }
}
