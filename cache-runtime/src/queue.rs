//! Write-behind queues in Redis: where a queued write lives, what it holds,
//! and the commands that move it (append, read, claim, acknowledge, lease,
//! dead-letter). What runs the writes is `worker.rs`; the call that queues
//! one is `write_behind.rs`.
//!
//! # Layout
//!
//! A queue is split into [`PARTITIONS`] Redis Streams by the rendered key's
//! CRC16, so every write of one key lands in one stream, in the order
//! Redis took them, and each partition is applied by one worker at a time
//! (the holder of its lease): writes of one key are applied in order,
//! while the partitions spread the work over the workers.
//!
//! | key | holds |
//! |---|---|
//! | `{<ns> #queue <q> <p>}` | partition `p` of queue `q`: a Stream with the consumer group `workers` |
//! | `{<ns> #queue <q> <p>} #lease` | the id of the worker applying partition `p` (expires unless renewed) |
//! | `<ns> #dead <q>` | writes that failed `max_attempts` times: a Stream, replayable |
//! | `<ns> #workers <q>` | the workers alive on `q` (a sorted set of last heartbeats), for sharing partitions |
//!
//! `<q>` is the queue's name escaped as a key part (letters, digits, `%`).
//! Every key holds a space, which no rendered key can (see `keys.rs`). A
//! partition's stream and lease share a hash tag, so on a Redis Cluster
//! both live on one master while the partitions spread over the masters.
//!
//! # An entry
//!
//! Fields `k` (the rendered key), `t` (the fingerprint of the arguments'
//! type, so that a release whose function takes other arguments never
//! decodes them as its own), `a` (the arguments, bincode) and, for a
//! replayed dead letter, `w` (its original [`WriteId`]). Dead letters also
//! carry `e` (the last error) and `n` (the attempts).
//!
//! Applied entries are acknowledged and deleted (`XACK` and `XDEL` in one
//! script), so a stream's length is the number of writes not yet applied.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};

use crate::clock::millis;
use crate::error::Error;
use crate::keys::escape_key_part;
use crate::l2::{self, L2, Script};

/// How many streams a queue is split into: up to this many workers apply
/// one queue's writes at once. Fixed: writers and workers of every release
/// must agree on which partition a key belongs to.
pub(crate) const PARTITIONS: u16 = 16;

/// The consumer group every worker reads through.
const GROUP: &str = "workers";

/// Creates the consumer group (from the stream's start, so writes queued
/// before any worker ran are not skipped) unless it exists: also after a
/// `FLUSHDB` or a restart without data removed the stream and its group.
/// Put in front of every script that needs the group, so none of them
/// fails with `NOGROUP` (which the breaker would count as a failure).
/// `KEYS[1]` is the stream, `ARGV[1]` the group.
macro_rules! ensure_group {
    () => {
        "local exists = false \
         if redis.call('EXISTS', KEYS[1]) == 1 then \
           for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
             if group[2] == ARGV[1] then exists = true end \
           end \
         end \
         if not exists then redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM') end "
    };
}

/// The identity of one queued write: the stream id Redis gave it
/// (milliseconds of Redis' clock, and a sequence within that millisecond).
///
/// Writes of one key get increasing ids in the order Redis took them, so a
/// database that keeps the id of the last write it applied can refuse an
/// older one: at-least-once delivery then never applies a key's writes out
/// of order, even a duplicate delivered late. A write that ran at once
/// because Redis could not queue it gets an id from Redis' clock as this
/// process last saw it (the id of the last write it queued, carried on by
/// its monotonic clock), or from its wall clock if it never queued one.
///
/// # Example
///
/// ```
/// use cache_runtime::WriteId;
///
/// let first: WriteId = "1700000000000-0".parse().unwrap();
/// let second: WriteId = "1700000000000-1".parse().unwrap();
/// assert!(first < second);
/// assert!(first.as_i64() < second.as_i64());
/// assert_eq!(second.to_string(), "1700000000000-1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId {
    millis: u64,
    sequence: u64,
}

/// Bits of [`WriteId::as_i64`] that hold the sequence.
const SEQUENCE_BITS: u32 = 21;

impl WriteId {
    /// An id for a write that runs now, outside any queue.
    pub(crate) fn local(millis: u64, sequence: u64) -> WriteId {
        WriteId { millis, sequence }
    }

    /// The id as one `i64` that orders as the ids do, for a database column:
    /// milliseconds in the top 42 bits (until the year 2109), the sequence
    /// in the low 21 (capped at 2,097,151 writes per millisecond and
    /// partition, far above what one stream takes).
    pub fn as_i64(&self) -> i64 {
        let sequence = self.sequence.min((1 << SEQUENCE_BITS) - 1);
        ((self.millis << SEQUENCE_BITS) | sequence) as i64 & i64::MAX
    }

    /// Milliseconds since the Unix epoch when the write was queued (by
    /// Redis' clock).
    pub fn millis(&self) -> u64 {
        self.millis
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.sequence)
    }
}

/// A text that is not a stream id (`<millis>-<sequence>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidWriteId;

impl fmt::Display for InvalidWriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a write id (`<millis>-<sequence>`)")
    }
}

impl std::error::Error for InvalidWriteId {}

impl std::str::FromStr for WriteId {
    type Err = InvalidWriteId;

    fn from_str(text: &str) -> Result<WriteId, InvalidWriteId> {
        let (millis, sequence) = text.split_once('-').ok_or(InvalidWriteId)?;
        Ok(WriteId {
            millis: millis.parse().map_err(|_| InvalidWriteId)?,
            sequence: sequence.parse().map_err(|_| InvalidWriteId)?,
        })
    }
}

/// The partition of a rendered key.
pub(crate) fn partition_of(key: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % PARTITIONS
}

/// The Redis keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    /// `<ns> #queue <q>`, the common start.
    base: String,
    dead: String,
    workers: String,
}

impl QueueKeys {
    pub(crate) fn new(namespace: &str, queue: &str) -> QueueKeys {
        let queue = escape_key_part(queue);
        QueueKeys {
            base: format!("{namespace} #queue {queue}"),
            dead: format!("{namespace} #dead {queue}"),
            workers: format!("{namespace} #workers {queue}"),
        }
    }

    /// The stream of partition `partition`.
    pub(crate) fn stream(&self, partition: u16) -> String {
        format!("{{{} {partition}}}", self.base)
    }

    /// The lease of partition `partition`.
    pub(crate) fn lease(&self, partition: u16) -> String {
        format!("{{{} {partition}}} #lease", self.base)
    }

    /// The dead letters.
    pub(crate) fn dead(&self) -> &str {
        &self.dead
    }

    /// The live workers.
    pub(crate) fn workers(&self) -> &str {
        &self.workers
    }
}

/// A write read from a partition (or the dead letters).
#[derive(Debug, Clone)]
pub(crate) struct QueuedWrite {
    /// The entry's id in the stream it was read from (what is acknowledged).
    pub entry: String,
    /// The write's identity: the entry's id, or the original one of a
    /// replayed dead letter.
    pub id: WriteId,
    /// The rendered key.
    pub key: String,
    /// The fingerprint of the arguments' type.
    pub fingerprint: u64,
    /// The arguments, bincode.
    pub arguments: Vec<u8>,
}

impl QueuedWrite {
    /// Where the entry is in its stream (what orders a partition).
    pub(crate) fn position(&self) -> WriteId {
        self.entry.parse().unwrap_or(self.id)
    }

    /// An entry as read, `Err` with the entry's id when its fields are not
    /// a queued write's (written by something else: dead-lettered as such).
    fn parse(entry: &StreamId) -> Result<QueuedWrite, String> {
        let text = |field: &str| -> Option<String> {
            match entry.map.get(field)? {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                Value::SimpleString(text) => Some(text.clone()),
                _ => None,
            }
        };
        let bytes = |field: &str| -> Option<Vec<u8>> {
            match entry.map.get(field)? {
                Value::BulkString(bytes) => Some(bytes.clone()),
                _ => None,
            }
        };
        let parsed = (|| {
            let id = match text("w") {
                Some(original) => original.parse().ok()?,
                None => entry.id.parse().ok()?,
            };
            Some(QueuedWrite {
                entry: entry.id.clone(),
                id,
                key: text("k")?,
                fingerprint: u64::from_str_radix(&text("t")?, 16).ok()?,
                arguments: bytes("a")?,
            })
        })();
        parsed.ok_or_else(|| entry.id.clone())
    }
}

/// Entries as read: the writes, and the ids of entries that were not
/// writes (to acknowledge and drop).
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub writes: Vec<QueuedWrite>,
    pub foreign: Vec<String>,
}

impl Read {
    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.foreign.is_empty()
    }

    fn of(entries: &[StreamId]) -> Read {
        let mut read = Read::default();
        for entry in entries {
            match QueuedWrite::parse(entry) {
                Ok(write) => read.writes.push(write),
                Err(id) => read.foreign.push(id),
            }
        }
        read
    }
}

/// How far a queue is behind, from [`Cache::write_behind_backlog`](crate::Cache::write_behind_backlog).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = cache_runtime::Cache::builder().build().await?;
/// let backlog = cache.write_behind_backlog("record_seen").await?;
/// assert_eq!(backlog.depth, 0); // no Redis: nothing is ever queued
/// assert_eq!(backlog.oldest, None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Writes queued and not yet applied (or dead-lettered).
    pub depth: u64,
    /// How long ago the oldest of them was queued (by Redis' clock against
    /// this process'); `None` when there is none.
    pub oldest: Option<Duration>,
    /// Writes in the dead letters, waiting for a replay.
    pub dead_letters: u64,
}

/// `XADD stream * k <key> t <fingerprint> a <arguments>`: a write's entry
/// (callers add the fields of a dead letter or a replay).
fn add_entry(stream: &str, key: &str, fingerprint: u64, arguments: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("*")
        .arg("k")
        .arg(key)
        .arg("t")
        .arg(format!("{fingerprint:016x}"))
        .arg("a")
        .arg(arguments);
    cmd
}

/// Appends a write to its key's partition; its id when Redis took it.
pub(crate) async fn append(
    l2: &Arc<L2>,
    keys: &QueueKeys,
    key: &str,
    fingerprint: u64,
    arguments: &[u8],
) -> Result<WriteId, Error> {
    let stream = keys.stream(partition_of(key));
    let cmd = add_entry(&stream, key, fingerprint, arguments);
    let id: String = l2.run(Some(&stream), &cmd).await?;
    id.parse().map_err(|_| Error::Unavailable)
}

/// Reads up to `count` entries of a partition for `consumer`: those never
/// delivered (`after = ">"`) or those delivered to it and not acknowledged
/// (`after = "0"`).
pub(crate) async fn read(
    l2: &Arc<L2>,
    stream: &str,
    consumer: &str,
    count: usize,
    after: &str,
) -> Result<Read, Error> {
    static READ: Script = Script::new(concat!(
        ensure_group!(),
        "return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[4])"
    ));
    let count = count.to_string();
    let reply: Option<StreamReadReply> = l2
        .script(
            &READ,
            &[stream],
            &[
                GROUP.as_bytes(),
                consumer.as_bytes(),
                count.as_bytes(),
                after.as_bytes(),
            ],
        )
        .await?;
    let entries: Vec<StreamId> = reply
        .into_iter()
        .flat_map(|reply| reply.keys)
        .flat_map(|key| key.ids)
        .collect();
    Ok(Read::of(&entries))
}

/// Claims for `consumer` the entries other consumers were given and did
/// not acknowledge for `min_idle` (`XAUTOCLAIM`), from `cursor`; the next
/// cursor (`"0-0"` once the whole stream was scanned) and the entries.
pub(crate) async fn claim(
    l2: &Arc<L2>,
    stream: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
    cursor: &str,
) -> Result<(String, Read), Error> {
    static CLAIM: Script = Script::new(concat!(
        ensure_group!(),
        "return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])"
    ));
    let min_idle = millis(min_idle).to_string();
    let count = count.to_string();
    let reply: StreamAutoClaimReply = l2
        .script(
            &CLAIM,
            &[stream],
            &[
                GROUP.as_bytes(),
                consumer.as_bytes(),
                min_idle.as_bytes(),
                cursor.as_bytes(),
                count.as_bytes(),
            ],
        )
        .await?;
    Ok((reply.next_stream_id, Read::of(&reply.claimed)))
}

/// How many entries of a partition were given to consumers other than
/// `consumer` and not acknowledged (`XPENDING` summary).
pub(crate) async fn pending_elsewhere(
    l2: &Arc<L2>,
    stream: &str,
    consumer: &str,
) -> Result<u64, Error> {
    static PENDING_ELSEWHERE: Script = Script::new(concat!(
        ensure_group!(),
        "local summary = redis.call('XPENDING', KEYS[1], ARGV[1]) \
         local elsewhere = 0 \
         if summary[4] then \
           for _, consumer in ipairs(summary[4]) do \
             if consumer[1] ~= ARGV[2] then elsewhere = elsewhere + tonumber(consumer[2]) end \
           end \
         end \
         return elsewhere"
    ));
    l2.script(
        &PENDING_ELSEWHERE,
        &[stream],
        &[GROUP.as_bytes(), consumer.as_bytes()],
    )
    .await
}

/// Acknowledges and deletes applied (or dead-lettered) entries.
pub(crate) async fn acknowledge(l2: &Arc<L2>, stream: &str, entries: &[&str]) -> Result<(), Error> {
    static ACKNOWLEDGE: Script = Script::new(
        "redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2)) \
         redis.call('XDEL', KEYS[1], unpack(ARGV, 2)) \
         return 1",
    );
    if entries.is_empty() {
        return Ok(());
    }
    let mut arguments: Vec<&[u8]> = Vec::with_capacity(entries.len() + 1);
    arguments.push(GROUP.as_bytes());
    arguments.extend(entries.iter().map(|entry| entry.as_bytes()));
    l2.script::<i64>(&ACKNOWLEDGE, &[stream], &arguments)
        .await
        .map(drop)
}

/// Moves a write that failed `attempts` times to the dead letters; the
/// caller acknowledges it in its partition afterwards (a crash in between
/// leaves it in both: applied again, harmless for an idempotent write).
pub(crate) async fn bury(
    l2: &Arc<L2>,
    keys: &QueueKeys,
    write: &QueuedWrite,
    error: &str,
    attempts: u32,
) -> Result<(), Error> {
    let mut cmd = add_entry(keys.dead(), &write.key, write.fingerprint, &write.arguments);
    cmd.arg("w")
        .arg(write.id.to_string())
        .arg("e")
        .arg(error)
        .arg("n")
        .arg(attempts);
    l2.run::<String>(Some(keys.dead()), &cmd).await.map(drop)
}

/// Puts up to `count` dead letters back at the end of their partitions,
/// keeping their original ids: how many were moved, and how many dead
/// letters were read (entries that are not writes are dropped).
pub(crate) async fn replay(
    l2: &Arc<L2>,
    keys: &QueueKeys,
    count: usize,
) -> Result<(u64, usize), Error> {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(keys.dead())
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count);
    let dead: StreamRangeReply = l2.run(Some(keys.dead()), &cmd).await?;
    let mut moved = 0;
    for entry in &dead.ids {
        if let Ok(write) = QueuedWrite::parse(entry) {
            let stream = keys.stream(partition_of(&write.key));
            let mut cmd = add_entry(&stream, &write.key, write.fingerprint, &write.arguments);
            cmd.arg("w").arg(write.id.to_string());
            l2.run::<String>(Some(&stream), &cmd).await?;
            moved += 1;
        }
        // After the copy: a crash in between leaves the write in both
        // places (applied twice, harmless), never in neither.
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(keys.dead()).arg(&entry.id);
        l2.run::<i64>(Some(keys.dead()), &cmd).await?;
    }
    Ok((moved, dead.ids.len()))
}

/// Takes a partition's lease for `worker` if nobody holds it.
pub(crate) async fn take_lease(
    l2: &Arc<L2>,
    lease: &str,
    worker: &str,
    ttl: Duration,
) -> Result<bool, Error> {
    l2.set_if_absent(lease, worker, ttl).await
}

/// Extends `worker`'s lease; false when it is not `worker`'s any more.
pub(crate) async fn renew_lease(
    l2: &Arc<L2>,
    lease: &str,
    worker: &str,
    ttl: Duration,
) -> Result<bool, Error> {
    static RENEW: Script = Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0",
    );
    let ttl = l2::millis(ttl);
    let renewed: i64 = l2
        .script(&RENEW, &[lease], &[worker.as_bytes(), ttl.as_bytes()])
        .await?;
    Ok(renewed == 1)
}

/// Gives up `worker`'s lease (nothing when another worker holds it).
pub(crate) async fn release_lease(l2: &Arc<L2>, lease: &str, worker: &str) -> Result<(), Error> {
    static RELEASE: Script = Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
    );
    l2.script::<i64>(&RELEASE, &[lease], &[worker.as_bytes()])
        .await
        .map(drop)
}

/// Records that `worker` is alive on a queue and returns how many workers
/// are (those heard from within `ttl`, by Redis' clock).
pub(crate) async fn heartbeat(
    l2: &Arc<L2>,
    keys: &QueueKeys,
    worker: &str,
    ttl: Duration,
) -> Result<u64, Error> {
    static HEARTBEAT: Script = Script::new(
        "local time = redis.call('TIME') \
         local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) \
         redis.call('ZADD', KEYS[1], now, ARGV[1]) \
         redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2])) \
         redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         return redis.call('ZCARD', KEYS[1])",
    );
    let ttl = l2::millis(ttl);
    l2.script(
        &HEARTBEAT,
        &[keys.workers()],
        &[worker.as_bytes(), ttl.as_bytes()],
    )
    .await
}

/// Takes `worker` off a queue's live workers (at shutdown).
pub(crate) async fn leave(l2: &Arc<L2>, keys: &QueueKeys, worker: &str) -> Result<(), Error> {
    let mut cmd = redis::cmd("ZREM");
    cmd.arg(keys.workers()).arg(worker);
    l2.run::<i64>(Some(keys.workers()), &cmd).await.map(drop)
}

/// How far a queue is behind: every partition's length and oldest entry,
/// and the dead letters' length, in one round trip (on a cluster, all
/// commands at once).
pub(crate) async fn backlog(l2: &Arc<L2>, keys: &QueueKeys, now_ms: u64) -> Result<Backlog, Error> {
    let mut commands = Vec::with_capacity(2 * usize::from(PARTITIONS) + 1);
    for partition in 0..PARTITIONS {
        let stream = keys.stream(partition);
        let mut length = redis::cmd("XLEN");
        length.arg(&stream);
        let mut first = redis::cmd("XRANGE");
        first.arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
        commands.extend([length, first]);
    }
    let mut dead = redis::cmd("XLEN");
    dead.arg(keys.dead());
    commands.push(dead);
    let replies: Vec<Value> = l2.each(commands).await?;
    let unexpected = |_| Error::Unavailable;
    let mut backlog = Backlog::default();
    let mut oldest_ms: Option<u64> = None;
    let mut replies = replies.into_iter();
    for _ in 0..PARTITIONS {
        let (Some(length), Some(first)) = (replies.next(), replies.next()) else {
            return Err(Error::Unavailable);
        };
        backlog.depth += redis::from_redis_value::<u64>(length).map_err(unexpected)?;
        let first: StreamRangeReply = redis::from_redis_value(first).map_err(unexpected)?;
        if let Some(id) = first
            .ids
            .first()
            .and_then(|entry| entry.id.parse::<WriteId>().ok())
        {
            oldest_ms = Some(oldest_ms.map_or(id.millis, |oldest| oldest.min(id.millis)));
        }
    }
    backlog.oldest = oldest_ms.map(|at| Duration::from_millis(now_ms.saturating_sub(at)));
    let dead = replies.next().ok_or(Error::Unavailable)?;
    backlog.dead_letters = redis::from_redis_value(dead).map_err(unexpected)?;
    Ok(backlog)
}

/// What the server's persistence settings mean for a queue's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Durability {
    /// AOF with `appendfsync always`: an acknowledged write survives a
    /// crash of Redis.
    Always,
    /// AOF with `appendfsync everysec`: a crash of Redis loses at most
    /// about the last second of writes.
    EverySecond,
    /// Something weaker: what it risks, for the log.
    Weak(String),
    /// The settings could not be read (`CONFIG` renamed or refused, as on
    /// many managed services): why.
    Unknown(String),
}

/// Reads `appendonly`, `appendfsync`, `save`, `maxmemory` and
/// `maxmemory-policy` (`CONFIG GET`).
pub(crate) async fn durability(l2: &Arc<L2>) -> Durability {
    let setting = async |name: &str| -> Result<String, Error> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let pairs: Vec<String> = l2.run(None, &cmd).await?;
        Ok(pairs.into_iter().nth(1).unwrap_or_default())
    };
    let read = async || -> Result<[String; 5], Error> {
        Ok([
            setting("appendonly").await?,
            setting("appendfsync").await?,
            setting("save").await?,
            setting("maxmemory").await?,
            setting("maxmemory-policy").await?,
        ])
    };
    match read().await {
        Err(error) => Durability::Unknown(error.to_string()),
        Ok([appendonly, appendfsync, save, maxmemory, policy]) => {
            let persistence = persistence(&appendonly, &appendfsync, &save);
            // Streams have no TTL: `volatile-*` policies never evict them.
            if maxmemory != "0" && policy.starts_with("allkeys-") {
                let eviction = format!(
                    "maxmemory-policy is `{policy}`: under memory pressure Redis may evict a queue's stream and the writes in it; use `noeviction`, or a `volatile-*` policy (cache entries have a TTL, queues do not)"
                );
                return match persistence {
                    Durability::Weak(weak) => Durability::Weak(format!("{weak}; {eviction}")),
                    _ => Durability::Weak(eviction),
                };
            }
            persistence
        }
    }
}

/// What the persistence settings alone mean for queued writes.
fn persistence(appendonly: &str, appendfsync: &str, save: &str) -> Durability {
    match (appendonly, appendfsync) {
        ("yes", "always") => Durability::Always,
        ("yes", "everysec") => Durability::EverySecond,
        ("yes", other) => Durability::Weak(format!(
            "appendfsync is `{other}`: the OS decides when the append-only file reaches the disk, so a crash of the machine can lose many seconds of queued writes"
        )),
        _ if save.trim().is_empty() => Durability::Weak(
            "no append-only file and no snapshots (`appendonly no`, `save \"\"`): a restart of Redis loses every queued write".to_owned(),
        ),
        _ => Durability::Weak(format!(
            "no append-only file, snapshots only (`save {save}`): a restart of Redis loses the writes queued since the last snapshot"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_integers_and_round_trip() {
        let ids: Vec<WriteId> = [
            "1-0",
            "1-1",
            "2-0",
            "1700000000000-5",
            "4398046511103-2097151",
        ]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(
                pair[0].as_i64() < pair[1].as_i64(),
                "{} {}",
                pair[0],
                pair[1]
            );
        }
        assert!(ids.iter().all(|id| id.as_i64() >= 0));
        assert_eq!(ids[3].to_string(), "1700000000000-5");
        assert!("17".parse::<WriteId>().is_err());
        assert!("a-1".parse::<WriteId>().is_err());
    }

    #[test]
    fn a_partition_s_stream_and_lease_share_a_slot_and_partitions_spread() {
        let keys = QueueKeys::new("app", "record seen");
        assert_eq!(keys.stream(3), "{app #queue record%20seen 3}");
        assert_eq!(keys.lease(3), "{app #queue record%20seen 3} #lease");
        let slot = |key: &str| {
            crc16::State::<crc16::XMODEM>::calculate(
                key.split_once('{')
                    .and_then(|(_, rest)| rest.split_once('}'))
                    .map_or(key, |(tag, _)| tag)
                    .as_bytes(),
            ) % 16384
        };
        assert_eq!(slot(&keys.stream(3)), slot(&keys.lease(3)));
        let slots: std::collections::HashSet<u16> =
            (0..PARTITIONS).map(|p| slot(&keys.stream(p))).collect();
        assert_eq!(slots.len(), PARTITIONS as usize);
    }

    #[test]
    fn every_key_of_one_name_lands_in_one_partition() {
        assert_eq!(partition_of("user:1:seen"), partition_of("user:1:seen"));
        let used: std::collections::HashSet<u16> = (0..1000)
            .map(|id| partition_of(&format!("user:{id}:seen")))
            .collect();
        assert_eq!(used.len(), PARTITIONS as usize);
    }
}
