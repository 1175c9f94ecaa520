//! The invalidation channel: its messages, who sent them, and publishing.
//! How invalidation reaches every instance and never lets an older load
//! write over it is summed up here; the write side is `write.rs`, the
//! receiving side `subscription.rs`.
//!
//! # Keys and hash slots
//!
//! Everything a key needs lives under that key or in its cluster slot: the
//! value at `<ns>:<key>` (an invalidation overwrites it with a tombstone,
//! see below), its lock at `{<ns>:<key>} #lock`, and each tag's version
//! token at `<ns>:<tag> #tag` (`tags.rs`). The whole layout is in
//! `keys.rs`.
//!
//! # Cross-instance L1 eviction
//!
//! Each cache subscribes to `<ns> #inval db<N>`: pub/sub ignores database
//! numbers, so the channel names the database as well as the namespace
//! (staging on db 1 never reaches production on db 0). `invalidate`,
//! `invalidate_tag`, `invalidate_prefix`, `#[invalidates]` and
//! `#[write_through]` publish what they changed (keys, tags, prefixes);
//! receivers drop their copies of the keys and of the keys under the
//! prefixes, and forget the tags' tokens, which they read again from Redis
//! when next needed. A message never carries anything a receiver adopts, so a
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
//! # On a cluster: classic pub/sub
//!
//! Messages go out with classic `PUBLISH`, which a Redis Cluster relays to
//! every node, so the one subscription per cache (to any node, see
//! `topology.rs`) hears every instance. Sharded pub/sub (`SPUBLISH`,
//! Redis 7) would keep each message on the shard of its channel's slot,
//! which scales the fan-out with the cluster, but buys nothing here: a
//! cache has one channel, so all of its messages would still land on one
//! shard, and spreading them over channels per slot would take a
//! subscription per master that must move whenever a slot does (a
//! subscriber is unsubscribed when its channel's slot migrates), in
//! exchange for relaying small, infrequent messages (keys and tags, no
//! values) across the cluster bus. The heartbeat and the clearing of L1
//! after a reconnection hold as on one server: when the subscribed node
//! fails or is cut off, the subscription is made again on another node.
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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::consistency::{ConsistencyToken, Mark};
use crate::error::Error;
use crate::stats::bump;
use crate::store::Store;

/// How many changes whose message Redis did not take are kept to go out
/// with the next message. Past it they are replaced by one "forget
/// everything" ([`Change::Everything`]): receivers clear their L1.
const MAX_CARRIED: usize = 10_000;

/// How many other senders' message numbers a cache remembers. Past it the
/// map is cleared: marks of forgotten senders cannot be proven until their
/// next message (a heartbeat, within one interval), which only costs L1
/// hits to readers that present them.
const MAX_SENDERS: usize = 4_096;

/// This cache's identity on the channel, and its numbered messages.
///
/// # Numbering (read-your-writes across instances)
///
/// Every message this cache publishes carries a number, one more than the
/// last. Messages go out one PUBLISH at a time (callers that arrive while
/// one is on its way are sent together in the next), so Redis delivers
/// them to every subscriber in number order. A message Redis did not take
/// (an error, a timeout, a cancelled caller) does not lose its changes:
/// they go out again with the next message, heartbeats included. So once
/// an instance has received message `n` of this sender, it has received
/// every change this sender published before `n`, which is what a
/// [`ConsistencyToken`] asks for (see `consistency.rs`).
pub(crate) struct Channel {
    /// Identifies this cache's own messages.
    sender_id: u64,
    /// Digest of the channel's name (namespace and database): marks of
    /// other channels concern other caches.
    channel_id: u32,
    /// The probe this cache sends (at start, then as its heartbeat), to
    /// see the channel deliver.
    probe_nonce: u64,
    /// How often the probe is sent once subscribed.
    heartbeat_interval: Duration,
    outbox: Mutex<Outbox>,
    /// One message on its way at a time: numbers are delivered in order.
    sending: tokio::sync::Mutex<()>,
    /// The highest message number received from each other sender.
    received: Mutex<HashMap<u64, u64>>,
}

/// What waits to be published.
#[derive(Default)]
struct Outbox {
    /// The number of the last message taken to be sent.
    last_seq: u64,
    /// Changes of callers waiting for the next message, and the callers.
    queued: Vec<Change>,
    waiting: Vec<oneshot::Sender<Result<(), Error>>>,
    /// Changes of messages Redis did not take: sent again with the next.
    carried: Vec<Change>,
}

impl Outbox {
    fn has_unsent(&self) -> bool {
        !self.queued.is_empty() || !self.carried.is_empty()
    }

    /// Keeps the changes of a message Redis did not take for the next one.
    fn carry(&mut self, changes: Vec<Change>) {
        if self.carried.first() == Some(&Change::Everything) {
            return;
        }
        // Forgetting everything covers every other change.
        if changes.contains(&Change::Everything) {
            self.carried = vec![Change::Everything];
            return;
        }
        // A probe that did not arrive proves nothing later.
        let changes = changes
            .into_iter()
            .filter(|change| !matches!(change, Change::Probe(_)));
        self.carried.extend(changes);
        if self.carried.len() > MAX_CARRIED {
            self.carried = vec![Change::Everything];
        }
    }
}

/// A message taken to be sent: if its sender goes away before Redis
/// answers, its changes go back to be carried by the next message.
struct Sending<'a> {
    outbox: &'a Mutex<Outbox>,
    changes: Option<Vec<Change>>,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(changes) = self.changes.take() {
            lock(self.outbox).carry(changes);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here panics while holding the lock; a poisoned one is still
    // consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Channel {
    /// The channel of `namespace` in Redis database `database`.
    pub(crate) fn new(heartbeat_interval: Duration, namespace: &str, database: i64) -> Channel {
        let digest = sha1_smol::Sha1::from(channel(namespace, database))
            .digest()
            .bytes();
        Channel {
            sender_id: fastrand::u64(..),
            channel_id: u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
            probe_nonce: fastrand::u64(..),
            heartbeat_interval,
            outbox: Mutex::default(),
            sending: tokio::sync::Mutex::new(()),
            received: Mutex::default(),
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

    /// Publishes the probe (the start-up one, then each heartbeat); when it
    /// comes back through the subscription, the channel has proved it
    /// delivers (`channel_verified`, `since_heartbeat`). `Ok` when Redis
    /// took it.
    pub(crate) async fn send_probe(&self, store: &Store) -> Result<(), Error> {
        self.publish(store, &[Change::Probe(self.probe_nonce)])
            .await
    }

    /// Publishes `changes` to every instance (this one ignores its own),
    /// in the next numbered message. `Ok` when Redis took the message that
    /// carried them; otherwise they go out again with the one after.
    pub(crate) async fn publish(&self, store: &Store, changes: &[Change]) -> Result<(), Error> {
        let Some(l2) = store.l2() else {
            return Ok(());
        };
        let (answer, mut answered) = oneshot::channel();
        {
            let mut outbox = lock(&self.outbox);
            outbox.queued.extend(changes.iter().cloned());
            outbox.waiting.push(answer);
        }
        let _turn = self.sending.lock().await;
        if let Ok(answer) = answered.try_recv() {
            // Sent, with others', while this caller waited for its turn.
            return answer;
        }
        let (seq, batch, waiting) = {
            let mut outbox = lock(&self.outbox);
            if !outbox.has_unsent() {
                // Its sender went away after taking it: carried, and sent
                // since by another caller.
                return Ok(());
            }
            outbox.last_seq += 1;
            let mut batch = std::mem::take(&mut outbox.carried);
            batch.append(&mut outbox.queued);
            (outbox.last_seq, batch, std::mem::take(&mut outbox.waiting))
        };
        let invalidates = batch
            .iter()
            .any(|change| !matches!(change, Change::Probe(_)));
        let message = encode_message(self.sender_id, seq, &batch);
        let mut sending = Sending {
            outbox: &self.outbox,
            changes: Some(batch),
        };
        let sent = l2
            .publish(&channel(store.namespace(), l2.database()), &message)
            .await;
        let outcome = match sent {
            Ok(()) => {
                sending.changes = None;
                if invalidates {
                    bump(&store.counters().invalidations_sent);
                }
                Ok(())
            }
            // `sending` carries the changes on drop.
            Err(error) => Err(error),
        };
        drop(sending);
        for waiter in waiting {
            let _ = waiter.send(match &outcome {
                Ok(()) => Ok(()),
                Err(_) => Err(Error::Unavailable),
            });
        }
        outcome
    }

    /// Publishes `change` in a message of its own, numbered and ordered
    /// with the others: for [`Change::Prefix`], which releases before it do
    /// not know. They reject a whole message holding an unknown line, so
    /// sent along with other callers' changes it would make them drop
    /// those too; alone, they drop only it (and keep their L1 copies under
    /// the prefix until those expire). When Redis does not take it, what is
    /// carried to the next message is [`Change::Everything`], which every
    /// release knows: receivers then forget all of L1 rather than the
    /// prefix, and no message mixes the new kind with others.
    pub(crate) async fn publish_alone(&self, store: &Store, change: Change) -> Result<(), Error> {
        let Some(l2) = store.l2() else {
            return Ok(());
        };
        let _turn = self.sending.lock().await;
        let seq = {
            let mut outbox = lock(&self.outbox);
            outbox.last_seq += 1;
            outbox.last_seq
        };
        let message = encode_message(self.sender_id, seq, std::slice::from_ref(&change));
        let mut sending = Sending {
            outbox: &self.outbox,
            changes: Some(vec![Change::Everything]),
        };
        let sent = l2
            .publish(&channel(store.namespace(), l2.database()), &message)
            .await;
        if sent.is_ok() {
            sending.changes = None;
            bump(&store.counters().invalidations_sent);
        }
        sent
    }

    /// The mark of everything this cache has published or will publish
    /// with its next message: what a write that returned asks readers to
    /// have seen.
    pub(crate) fn token(&self) -> ConsistencyToken {
        let outbox = lock(&self.outbox);
        ConsistencyToken::from_mark(Mark {
            channel: self.channel_id,
            sender: self.sender_id,
            seq: outbox.last_seq + u64::from(outbox.has_unsent()),
        })
    }

    /// Notes that message `seq` of another sender was received and
    /// applied.
    pub(crate) fn received(&self, sender: u64, seq: u64) {
        let mut received = lock(&self.received);
        if received.len() >= MAX_SENDERS && !received.contains_key(&sender) {
            received.clear();
        }
        let highest = received.entry(sender).or_insert(seq);
        *highest = (*highest).max(seq);
    }

    /// Whether this cache has applied every write `token` names on its
    /// channel: its own, or another sender's message numbered at least as
    /// high received.
    pub(crate) fn caught_up(&self, token: &ConsistencyToken) -> bool {
        let mut theirs = token
            .marks()
            .iter()
            .filter(|mark| mark.channel == self.channel_id && mark.sender != self.sender_id)
            .peekable();
        if theirs.peek().is_none() {
            return true;
        }
        let received = lock(&self.received);
        theirs.all(|mark| {
            received
                .get(&mark.sender)
                .is_some_and(|&seq| seq >= mark.seq)
        })
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// This key's value changed or is gone.
    Key(String),
    /// This tag was dropped (its token replaced in Redis).
    Tag(String),
    /// Every key starting with this (never empty) was invalidated
    /// (`Cache::invalidate_prefix`, `prefix.rs`). Sent in a message of its
    /// own ([`Channel::publish_alone`]): releases before it reject a message
    /// holding it.
    Prefix(String),
    /// A probe: no change, proves the channel delivers.
    Probe(u64),
    /// Changes were lost (more failed to reach Redis than are kept):
    /// receivers forget everything local.
    Everything,
}

/// A message that parsed: who sent it, its number, what it changes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub sender: u64,
    pub seq: u64,
    pub changes: Vec<Change>,
}

/// A message: the sender's id and the message's number on the first line,
/// then one change per line (`K <key>`, `T <tag>`, `X <prefix>`, `P
/// <nonce>`, `E`). Keys, tags and prefixes are rendered text, which holds no
/// whitespace.
///
/// A receiver rejects a whole message holding a line it does not know
/// (see [`decode_message`]): releases before `X` ignore (and count) a
/// message with a prefix, which is why one goes out alone.
pub(crate) fn encode_message(sender: u64, seq: u64, changes: &[Change]) -> String {
    let mut out = format!("{sender:016x} {seq}");
    for change in changes {
        match change {
            Change::Key(key) => out.push_str(&format!("\nK {key}")),
            Change::Tag(tag) => out.push_str(&format!("\nT {tag}")),
            Change::Prefix(prefix) => out.push_str(&format!("\nX {prefix}")),
            Change::Probe(nonce) => out.push_str(&format!("\nP {nonce}")),
            Change::Everything => out.push_str("\nE"),
        }
    }
    out
}

/// Parses a message; `None` for anything malformed or oversized (ignored by
/// receivers), a line of an unknown kind included: a change that is not
/// understood cannot be applied, so the message is not counted as received
/// either (a consistency token naming it is not met by it).
pub(crate) fn decode_message(message: &str) -> Option<Message> {
    if message.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let mut lines = message.lines();
    let (sender, seq) = lines.next()?.split_once(' ')?;
    if sender.len() != 16 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sender = u64::from_str_radix(sender, 16).ok()?;
    let seq = seq.parse().ok()?;
    let mut changes = Vec::new();
    for line in lines {
        if line == "E" {
            changes.push(Change::Everything);
            continue;
        }
        let (kind, rest) = line.split_once(' ')?;
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return None;
        }
        changes.push(match kind {
            "K" => Change::Key(rest.to_owned()),
            "T" => Change::Tag(rest.to_owned()),
            "X" => Change::Prefix(rest.to_owned()),
            "P" => Change::Probe(rest.parse().ok()?),
            _ => return None,
        });
    }
    Some(Message {
        sender,
        seq,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        let changes = vec![
            Change::Key("user:1%3Aadmin".into()),
            Change::Tag("org:7".into()),
            Change::Prefix("user:42:".into()),
            Change::Probe(99),
            Change::Everything,
        ];
        let text = encode_message(0xABC, 7, &changes);
        assert_eq!(
            decode_message(&text),
            Some(Message {
                sender: 0xABC,
                seq: 7,
                changes
            })
        );
        for garbage in [
            "not hex\nK a",
            "00000000000000ab\nK a", // no number
            "00000000000000ab -1\nK a",
            "00000000000000ab 1 2\nK a",
            "ab 1\nK a",
            "00000000000000ab 1\nY a", // a kind this release does not know
            "00000000000000ab 1\nK a\nY a",
            "00000000000000ab 1\nX ",
            "00000000000000ab 1\nT tag 18446744073709551615", // versions are not part of the format
            "00000000000000ab 1\nK ",
            "00000000000000ab 1\nE x",
        ] {
            assert_eq!(decode_message(garbage), None, "{garbage:?}");
        }
        let huge = format!("00000000000000ab 1\nK {}", "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(decode_message(&huge), None);
    }

    #[test]
    fn the_channel_holds_a_space() {
        assert!(channel("app", 0).contains(' '));
        assert_ne!(channel("app", 0), channel("app", 1));
    }

    #[test]
    fn carried_changes_are_bounded_and_probes_are_not_carried() {
        let mut outbox = Outbox::default();
        outbox.carry(vec![Change::Probe(1), Change::Key("a".into())]);
        assert_eq!(outbox.carried, [Change::Key("a".into())]);
        outbox.carry(
            (0..MAX_CARRIED)
                .map(|at| Change::Key(at.to_string()))
                .collect(),
        );
        assert_eq!(outbox.carried, [Change::Everything]);
        outbox.carry(vec![Change::Key("b".into())]);
        assert_eq!(outbox.carried, [Change::Everything]);

        let mut outbox = Outbox::default();
        outbox.carry(vec![Change::Key("a".into())]);
        outbox.carry(vec![Change::Everything]);
        assert_eq!(outbox.carried, [Change::Everything], "covers the key");
    }

    #[test]
    fn tokens_are_caught_up_with_by_receiving_a_message_numbered_as_high() {
        let writer = Channel::new(Duration::from_secs(1), "app", 0);
        let reader = Channel::new(Duration::from_secs(1), "app", 0);
        let elsewhere = Channel::new(Duration::from_secs(1), "app", 1);
        assert_eq!(writer.token().marks()[0].seq, 0);
        lock(&writer.outbox).last_seq = 4;
        let token = writer.token();
        assert!(writer.caught_up(&token), "a cache's own writes are applied");
        assert!(elsewhere.caught_up(&token), "another channel's marks");
        assert!(!reader.caught_up(&token));
        reader.received(writer.sender_id, 3);
        assert!(!reader.caught_up(&token));
        reader.received(writer.sender_id, 5);
        reader.received(writer.sender_id, 4);
        assert!(reader.caught_up(&token), "the highest number counts");

        // Something still to send: the token names the next message.
        lock(&writer.outbox).queued.push(Change::Key("a".into()));
        assert_eq!(writer.token().marks()[0].seq, 5);
        lock(&writer.outbox).queued.clear();
        lock(&writer.outbox).carry(vec![Change::Key("a".into())]);
        assert_eq!(writer.token().marks()[0].seq, 5);
    }
}
