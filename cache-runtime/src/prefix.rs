//! Prefix invalidation ([`Cache::invalidate_prefix`](crate::Cache::invalidate_prefix)):
//! every entry whose rendered key starts with a prefix, found with `SCAN`.
//!
//! Like `invalidate` (`write.rs`) it acts locally first, then in Redis, then
//! on the channel:
//!
//! 1. Locally: the L1 entries under the prefix go, and every key's epoch
//!    moves on, so that no load of this process that began before can put
//!    its value into L1 (`Store::drop_local_prefix`).
//! 2. In Redis: a tombstone over the key of each load of this process that
//!    runs now under the prefix (its key may be absent from Redis, where
//!    `SCAN` cannot find it, and its conditional write must fail); then
//!    `SCAN MATCH <ns>:<prefix>*` over the whole keyspace of the server, or
//!    of every master of a cluster, and a tombstone over each entry found,
//!    in pipelines of [`TOMBSTONE_BATCH`] sent to the server or master that
//!    `SCAN` step came from (addressed like the step, not through the
//!    client's slot map). The runtime's own keys (locks, tag versions, queues) hold
//!    a space, which no rendered key does: they are skipped. `KEYS` is never
//!    used: it blocks the server for the whole walk.
//! 3. The L1 entries under the prefix go again (a read that began after the
//!    first drop may have fetched a value from Redis before its tombstone
//!    landed), then one message tells the other instances
//!    ([`Change::Prefix`], alone in its message, see
//!    `Channel::publish_alone`). They drop their L1 entries under the
//!    prefix and write a tombstone over the keys of their own loads
//!    running under it ([`tombstone_loads_in_flight`]).
//!
//! # Slots moving during the scan
//!
//! Each master's keyspace is walked with its own cursor. A slot that moves
//! from a master not walked yet to one walked already (resharding) takes
//! its keys past the walk, so the slot map is read before and after: when
//! it changed, every master is walked again (at most [`MAX_PASSES`] walks,
//! then a warning). A migration still under way when the last walk ends
//! leaves the map unchanged (a slot changes owner only once all its keys
//! moved), so keys it moved behind the walk meanwhile can still be missed:
//! like the entries of a walk Redis failed, they stay until they expire or
//! the call is made again. A key seen twice (on both sides of a move) gets
//! two tombstones, which is harmless.
//!
//! # What remains uncovered
//!
//! A load on another instance of a key absent from Redis, whose conditional
//! write lands after the walk passed the key and before that instance
//! received the message, stores its value: nothing in Redis marked the key
//! yet. The window is one pub/sub delivery; `invalidate` on the exact key,
//! or a tag, has none. An empty prefix (every entry of the namespace) goes
//! out as [`Change::Everything`], on which receivers clear L1 but write no
//! tombstones: for them the window lasts as long as their running loads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::codec;
use crate::engine::Engine;
use crate::error::Error;
use crate::invalidation::Change;
use crate::keys::MAX_KEY_LEN;
use crate::l2::{L2, millis};
use crate::nodes::Node;
use crate::stats::bump;

/// How many keys one `SCAN` step examines (its `COUNT`): large enough that
/// walking a million keys takes about a thousand round trips per master,
/// small enough that one step keeps the server busy well under a
/// millisecond, and that one batch of tombstones stays small.
const SCAN_COUNT: usize = 1000;

/// How many tombstones go in one round trip (one pipeline to the server or
/// master). Each round trip has the L2 timeout to itself, so a `SCAN`
/// step's matches (up to about [`SCAN_COUNT`]) go in a few smaller ones: a
/// thousand scripts in one could need the whole timeout on a busy server,
/// and a timeout counts against the breaker.
const TOMBSTONE_BATCH: usize = 100;

/// The most walks over a cluster's masters while slots keep moving.
const MAX_PASSES: usize = 3;

/// Writes a tombstone over `KEYS[1]` (`ARGV[1]`, for `ARGV[2]` ms), and
/// returns 1 when the key held an entry, 0 when it was absent or already a
/// tombstone (its head, `ARGV[3]`): `GETRANGE` reads four bytes, not the
/// value.
const TOMBSTONE_OVER: &str = "local head = redis.call('GETRANGE', KEYS[1], 0, 3) \
     redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
     if head == '' or head == ARGV[3] then return 0 end return 1";

/// Invalidates every entry whose rendered key starts with `prefix`: see
/// the module docs. Returns how many entries Redis held (tombstones not
/// counted), or the first Redis failure, after doing what it could: the
/// local part always, and in Redis every master and batch that answered.
pub(crate) async fn invalidate_prefix(engine: &Engine, prefix: &str) -> Result<u64, Error> {
    let store = &engine.store;
    if prefix.contains(char::is_whitespace) || prefix.len() > MAX_KEY_LEN {
        // No rendered key holds whitespace; a longer key is stored shortened
        // to its first `MAX_KEY_LEN` bytes and a digest, which a longer
        // prefix cannot match (see `keys.rs`).
        return Ok(0);
    }
    store.drop_local_prefix(prefix);
    let Some(l2) = store.l2() else {
        return Ok(0);
    };
    let mut first_error = None;
    let mut invalidated = 0;
    let in_flight = loads_in_flight(engine, prefix);
    match tombstone_with(l2, engine.tombstone_ttl, &in_flight).await {
        Ok(entries) => invalidated += entries,
        Err(error) => {
            first_error.get_or_insert(error);
        }
    }
    let (scanned, error) = scan_and_tombstone(engine, l2, prefix).await;
    invalidated += scanned;
    if let Some(error) = error {
        first_error.get_or_insert(error);
    }
    store.drop_local_prefix(prefix);
    // An empty prefix is every entry: what `Change::Everything` says, in a
    // form every release knows.
    let change = if prefix.is_empty() {
        Change::Everything
    } else {
        Change::Prefix(prefix.to_owned())
    };
    if let Err(error) = engine.channel.publish_alone(store, change).await {
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(invalidated), Err)
}

/// On receiving another instance's prefix invalidation: a tombstone over
/// the key of each load of this instance running under `prefix`, in the
/// background, so that its conditional write fails (the key may be absent
/// from Redis, where the sender's `SCAN` could not find it). The message's
/// receiver already dropped its L1 entries under the prefix.
pub(crate) fn tombstone_loads_in_flight(engine: &Engine, prefix: &str) {
    let Some(l2) = engine.store.l2() else {
        return;
    };
    let keys = loads_in_flight(engine, prefix);
    if keys.is_empty() {
        return;
    }
    let (l2, ttl) = (Arc::clone(l2), engine.tombstone_ttl);
    engine.background.spawn(async move {
        // A failure is counted and logged by L2; the window it leaves is
        // the one the module docs describe.
        let _ = tombstone_with(&l2, ttl, &keys).await;
    });
}

/// The storage keys of the loads (and background refreshes) this instance
/// runs now under `prefix`.
fn loads_in_flight(engine: &Engine, prefix: &str) -> Vec<String> {
    let keys: BTreeSet<Box<str>> = engine
        .flights
        .keys_starting_with(prefix)
        .into_iter()
        .chain(engine.refreshes.running_starting_with(prefix))
        .collect();
    keys.iter()
        .map(|key| engine.store.storage_key(key).as_str().to_owned())
        .collect()
}

/// Walks the keyspace (every master's on a cluster) for entries under
/// `prefix` and tombstones them: how many entries it found, and the first
/// failure (the other masters are walked anyway).
async fn scan_and_tombstone(engine: &Engine, l2: &Arc<L2>, prefix: &str) -> (u64, Option<Error>) {
    let storage_prefix = engine.store.storage_key(prefix).as_str().to_owned();
    let pattern = format!("{}*", escape_glob(&storage_prefix));
    let mut layout = match l2.cluster_masters().await {
        Ok(None) => return scan_master(engine, l2, None, &pattern, &storage_prefix).await,
        Ok(Some(layout)) => layout,
        Err(error) => return (0, Some(error)),
    };
    let mut invalidated = 0;
    for pass in 1..=MAX_PASSES {
        let (masters, before) = layout;
        let walks = masters
            .iter()
            .map(|master| scan_master(engine, l2, Some(master), &pattern, &storage_prefix));
        let mut first_error = None;
        for (found, error) in futures_util::future::join_all(walks).await {
            invalidated += found;
            if let Some(error) = error {
                first_error.get_or_insert(error);
            }
        }
        if first_error.is_some() {
            return (invalidated, first_error);
        }
        layout = match l2.cluster_masters().await {
            Ok(Some(after)) => after,
            Ok(None) => return (invalidated, None),
            Err(error) => return (invalidated, Some(error)),
        };
        if layout.1 == before {
            return (invalidated, None);
        }
        if pass == MAX_PASSES {
            tracing::warn!(
                prefix,
                passes = MAX_PASSES,
                "slots kept moving while invalidate_prefix walked the cluster: entries moved behind the walk may remain until they expire (call it again once the resharding is over)"
            );
        }
    }
    (invalidated, None)
}

/// Walks one server's (or one master's) keyspace: each `SCAN` step's
/// entries are tombstoned (in batches of [`TOMBSTONE_BATCH`]) on the
/// server or master that returned them before the next step. How many
/// entries it found, and the failure that ended the walk early, if one
/// did.
async fn scan_master(
    engine: &Engine,
    l2: &Arc<L2>,
    master: Option<&Arc<Node>>,
    pattern: &str,
    storage_prefix: &str,
) -> (u64, Option<Error>) {
    let mut invalidated = 0;
    let mut cursor = 0;
    loop {
        let (next, found) = match l2.scan(master, cursor, pattern, SCAN_COUNT).await {
            Ok(step) => step,
            Err(error) => return (invalidated, Some(error)),
        };
        let entries: Vec<String> = found
            .into_iter()
            .filter_map(|key| String::from_utf8(key).ok())
            // `MATCH` already keeps only these; checked again so that a
            // pattern escaped wrongly could never reach other keys.
            .filter(|key| key.starts_with(storage_prefix) && !key.contains(' '))
            .collect();
        for batch in entries.chunks(TOMBSTONE_BATCH) {
            match tombstone_on(engine, l2, master, batch).await {
                Ok(count) => invalidated += count,
                Err(error) => return (invalidated, Some(error)),
            }
        }
        if next == 0 {
            return (invalidated, None);
        }
        cursor = next;
    }
}

/// Tombstones `keys` (storage keys `master` just returned from `SCAN`)
/// in one pipeline on that master, addressed like the `SCAN` step rather
/// than routed by the client's slot map: right after a resharding that map
/// is stale, and a hundred commands answered `MOVED` at once cost the
/// cluster client a refresh of its map that can outlast the L2 timeout.
/// A key whose slot moved since the step (`MOVED`, `ASK`, `TRYAGAIN`) is
/// tombstoned again by key, which follows the slot; one a full Redis
/// refused (`OOM`) is deleted instead. How many held an entry.
async fn tombstone_on(
    engine: &Engine,
    l2: &Arc<L2>,
    master: Option<&Arc<Node>>,
    keys: &[String],
) -> Result<u64, Error> {
    let replies = l2
        .pipeline_on(master, tombstone_commands(keys, engine.tombstone_ttl))
        .await?;
    let mut invalidated = 0;
    let (mut moved, mut full) = (Vec::new(), Vec::new());
    for (key, reply) in keys.iter().zip(replies) {
        match reply {
            redis::Value::ServerError(error) => match error.code() {
                "MOVED" | "ASK" | "TRYAGAIN" => moved.push(key.clone()),
                "OOM" => full.push(key.clone()),
                _ => return Err(Error::Redis(error.into())),
            },
            reply => invalidated += count(&reply),
        }
    }
    if !moved.is_empty() {
        invalidated += tombstone_with(l2, engine.tombstone_ttl, &moved).await?;
    }
    if !full.is_empty() {
        // Counted as L2 counts a refusal it sees itself (the pipeline
        // answered, so it saw none).
        bump(&engine.store.counters().l2_out_of_memory);
        invalidated += delete(l2, &full).await?;
    }
    Ok(invalidated)
}

/// Tombstones `keys` (storage keys) for `ttl`, each routed by its key, in
/// one round trip on one server (all at once on a cluster): how many held
/// an entry. A full Redis (`OOM` under `noeviction`) refuses tombstones
/// but takes `DEL`: the keys are deleted instead.
async fn tombstone_with(l2: &Arc<L2>, ttl: Duration, keys: &[String]) -> Result<u64, Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    match l2.each::<redis::Value>(tombstone_commands(keys, ttl)).await {
        Err(Error::OutOfMemory) => delete(l2, keys).await,
        replies => Ok(replies?.iter().map(count).sum()),
    }
}

/// `DEL` of each of `keys`, for a full Redis: how many existed (a
/// tombstone written just before included, so the count may be high).
async fn delete(l2: &Arc<L2>, keys: &[String]) -> Result<u64, Error> {
    let deletes = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            cmd
        })
        .collect();
    Ok(l2
        .each::<redis::Value>(deletes)
        .await?
        .iter()
        .map(count)
        .sum())
}

/// A [`TOMBSTONE_OVER`] script per key, each with a tombstone of its own.
fn tombstone_commands(keys: &[String], ttl: Duration) -> Vec<redis::Cmd> {
    let ttl = millis(ttl);
    let head = codec::tombstone_head();
    keys.iter()
        .map(|key| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(TOMBSTONE_OVER)
                .arg(1)
                .arg(key)
                .arg(codec::encode_tombstone())
                .arg(&ttl)
                .arg(&head[..]);
            cmd
        })
        .collect()
}

/// What an integer reply counts (a script's 0 or 1, `DEL`'s count).
fn count(reply: &redis::Value) -> u64 {
    match reply {
        redis::Value::Int(count) => u64::try_from(*count).unwrap_or(0),
        _ => 0,
    }
}

/// `text` with the characters `SCAN MATCH` reads as a glob (`* ? [ ] \`)
/// escaped with a backslash, so that it matches only itself.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("app:user:42:"), "app:user:42:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
