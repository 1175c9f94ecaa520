//! The invalidation channel: its messages, who sent them, and publishing.
//! How invalidation reaches every instance and never lets an older load
//! write over it is summed up here; the write side is `write.rs`, the
//! receiving side `subscription.rs`.
//!
//! # Keys and hash slots
//!
//! Everything a key needs lives under that key or names itself after it:
//! the value at `<ns>:<key>` (an invalidation overwrites it with a
//! tombstone, see below), its lock at `<ns>:<key> #lock`, and each tag's
//! version token at `<ns>:<tag> #tag` (`tags.rs`). Every Redis command on the request
//! path touches one key, so in Redis Cluster each goes to that key's hash
//! slot and no command spans slots. Runtime keys hold a space, which no
//! rendered template can, so they never collide with cached values.
//!
//! # Cross-instance L1 eviction
//!
//! Each cache subscribes to `<ns> #inval db<N>`: pub/sub ignores database
//! numbers, so the channel names the database as well as the namespace
//! (staging on db 1 never reaches production on db 0). `invalidate`,
//! `invalidate_tag`, `#[invalidates]` and `#[write_through]` publish what
//! they changed (keys and tags); receivers drop their copies of the keys
//! and forget the tags' tokens, which they read again from Redis when next
//! needed. A message never carries anything a receiver adopts, so a
//! malformed, foreign or forged one can only cause misses; one that does
//! not parse is ignored and counted (`channel_messages_ignored`).
//! Fills after a miss publish nothing there. When the subscription drops,
//! the cache clears its L1 on reconnecting (it may have missed messages).
//! At start it publishes a probe and counts its arrival, so a channel that
//! does not deliver shows in the stats instead of silently serving stale
//! data; then it sends the same probe every `heartbeat_interval`, and a
//! subscription its own heartbeats stop coming back through (while Redis
//! takes them) is treated as a dropped one (`subscription.rs`).
//!
//! # No stale set
//!
//! - L2: an invalidation writes a tombstone (unique bytes) instead of
//!   deleting, and a load writes its value with a script that checks the key
//!   still holds exactly what the load read before running the body. A load
//!   that overlapped an invalidation therefore fails its write.
//! - Write-through: the same check, with what the key held before the body
//!   ran; when another mutation of the key landed in between, the
//!   write-through writes a tombstone instead of its value (either of the
//!   two may hold the newer data), so the last mutation to complete is
//!   never overwritten by an older one, in whatever order they arrive.
//! - L1: per-key epochs (striped) and a tag epoch are read before a load and
//!   checked before its L1 insert; an invalidation bumps them (`epochs.rs`).
//! - Tags: a load reads its tags' versions before running the body and
//!   stores them with the value; a value whose tag moved on is a miss
//!   (`tags.rs`).

use std::time::Duration;

use crate::error::Error;
use crate::stats::bump;
use crate::store::Store;

/// This cache's identity on the channel.
pub(crate) struct Channel {
    /// Identifies this cache's own messages.
    sender_id: u64,
    /// The probe this cache sends (at start, then as its heartbeat), to
    /// see the channel deliver.
    probe_nonce: u64,
    /// How often the probe is sent once subscribed.
    heartbeat_interval: Duration,
}

impl Channel {
    pub(crate) fn new(heartbeat_interval: Duration) -> Channel {
        Channel {
            sender_id: fastrand::u64(..),
            probe_nonce: fastrand::u64(..),
            heartbeat_interval,
        }
    }

    /// How often the probe is sent once subscribed.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Whether a message came from this cache.
    pub(crate) fn is_own(&self, sender: u64) -> bool {
        sender == self.sender_id
    }

    /// Whether `changes` hold this cache's start-up probe.
    pub(crate) fn holds_own_probe(&self, changes: &[Change]) -> bool {
        changes.contains(&Change::Probe(self.probe_nonce))
    }

    /// Publishes the probe (the start-up one, then each heartbeat); its
    /// return sets `channel_verified`. `Ok` when Redis took it.
    pub(crate) async fn send_probe(&self, store: &Store) -> Result<(), Error> {
        self.publish(store, &[Change::Probe(self.probe_nonce)])
            .await
    }

    /// Publishes `changes` to every instance (this one ignores its own).
    pub(crate) async fn publish(&self, store: &Store, changes: &[Change]) -> Result<(), Error> {
        let Some(l2) = store.l2() else {
            return Ok(());
        };
        let message = encode_message(self.sender_id, changes);
        l2.publish(&channel(store.namespace(), l2.database()), &message)
            .await?;
        if !matches!(changes, [Change::Probe(_)]) {
            bump(&store.counters().invalidations_sent);
        }
        Ok(())
    }
}

/// The invalidation channel of a namespace in a database.
pub(crate) fn channel(namespace: &str, database: i64) -> String {
    format!("{namespace} #inval db{database}")
}

/// Longest message a receiver reads; longer ones are ignored (and counted).
/// Far above what one mutation sends (its keys and tags are bounded).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// One change carried by an invalidation message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// This key's value changed or is gone.
    Key(String),
    /// This tag was dropped (its token replaced in Redis).
    Tag(String),
    /// A probe: no change, proves the channel delivers.
    Probe(u64),
}

/// A message: the sender's id on the first line, then one change per line
/// (`K <key>`, `T <tag>`, `P <nonce>`). Keys and tags are rendered
/// templates, which hold no whitespace.
pub(crate) fn encode_message(sender: u64, changes: &[Change]) -> String {
    let mut out = format!("{sender:016x}");
    for change in changes {
        match change {
            Change::Key(key) => out.push_str(&format!("\nK {key}")),
            Change::Tag(tag) => out.push_str(&format!("\nT {tag}")),
            Change::Probe(nonce) => out.push_str(&format!("\nP {nonce}")),
        }
    }
    out
}

/// Parses a message; `None` for anything malformed or oversized (ignored by
/// receivers).
pub(crate) fn decode_message(message: &str) -> Option<(u64, Vec<Change>)> {
    if message.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let mut lines = message.lines();
    let sender = u64::from_str_radix(lines.next()?, 16).ok()?;
    let mut changes = Vec::new();
    for line in lines {
        let (kind, rest) = line.split_once(' ')?;
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return None;
        }
        changes.push(match kind {
            "K" => Change::Key(rest.to_owned()),
            "T" => Change::Tag(rest.to_owned()),
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
            Change::Tag("org:7".into()),
            Change::Probe(99),
        ];
        let text = encode_message(0xABC, &changes);
        assert_eq!(decode_message(&text), Some((0xABC, changes)));
        assert_eq!(decode_message("not hex\nK a"), None);
        assert_eq!(decode_message("00000000000000ab\nX a"), None);
        assert_eq!(
            decode_message("00000000000000ab\nT tag 18446744073709551615"),
            None,
            "versions are not part of the format"
        );
        assert_eq!(decode_message("00000000000000ab\nK "), None);
        let huge = format!("00000000000000ab\nK {}", "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(decode_message(&huge), None);
    }

    #[test]
    fn the_channel_holds_a_space() {
        assert!(channel("app", 0).contains(' '));
        assert_ne!(channel("app", 0), channel("app", 1));
    }
}
