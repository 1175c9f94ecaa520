//! The write-behind worker: applies queued writes (`queue.rs`) with their
//! handlers (`write_behind.rs`), in order per key, at least once.
//!
//! # How partitions are shared
//!
//! Each queue is split into `queue::PARTITIONS` streams. A worker applies a
//! partition only while it holds the partition's lease (renewed every third
//! of [`lease`](WriteBehindWorkerBuilder::lease)), so one worker at a time
//! reads a partition, in stream order: writes of one key (one partition)
//! are applied in the order Redis took them. Workers announce themselves on
//! each queue, and each holds at most its share of the partitions (all of
//! them when alone), handing extra ones back when others join.
//!
//! # When a worker dies
//!
//! Its leases expire. The next holder of a partition first claims what the
//! dead worker had read and not acknowledged, once it was idle for
//! [`claim_idle`](WriteBehindWorkerBuilder::claim_idle) (`XAUTOCLAIM`), and
//! applies it before anything newer. A write is acknowledged after it was
//! applied, so a crash in between applies it again: at least once. Each
//! write carries its [`WriteId`](crate::WriteId) so that the database side
//! can be idempotent and refuse a write older than the one it holds.
//!
//! # Failures
//!
//! A write whose body fails is retried with randomised exponential pauses
//! ([`retry_backoff`](WriteBehindWorkerBuilder::retry_backoff)), and after
//! [`max_attempts`](WriteBehindWorkerBuilder::max_attempts) moved to the
//! queue's dead letters ([`Cache::replay_dead_letters`] puts them back).
//! While a key's write waits for a retry, the later writes of that key wait
//! behind it; other keys keep flowing. A write that can never apply (its
//! arguments are another release's type, or do not decode) goes to the
//! dead letters at once.
//!
//! [`Cache::replay_dead_letters`]: crate::Cache::replay_dead_letters

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::clock::{backoff_delay, now_ms};
use crate::engine::Cache;
use crate::error::Error;
use crate::l2::L2;
use crate::queue::{self, Durability, PARTITIONS, QueueKeys, QueuedWrite, Read};
use crate::stats::{Counters, bump};
use crate::write_behind::{Unstartable, WriteBehindHandler};

/// Applies queued writes: started by the application, any number per
/// queue, in any of its instances.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use cache_runtime::{Cache, WriteBehindHandler, WriteBehindWorker};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::builder().build().await?; // add `.redis_url(...)` for a queue
/// let handler = WriteBehindHandler::new("record_seen", (), |_: Arc<()>, (id, at): (u64, i64)| async move {
///     Ok::<(), String>(()) // the database write
/// });
/// let worker = WriteBehindWorker::builder(&cache).handler(handler).start().await?;
/// // ... serve requests ...
/// worker.shutdown().await; // applies what it holds, then hands its partitions back
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WriteBehindWorker {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Settings of a [`WriteBehindWorker`], from [`WriteBehindWorker::builder`].
#[derive(Debug)]
#[must_use = "call `start` to run the worker"]
pub struct WriteBehindWorkerBuilder {
    cache: Cache,
    handlers: Vec<WriteBehindHandler>,
    settings: Settings,
    require_durable: bool,
}

#[derive(Debug, Clone)]
struct Settings {
    batch_size: usize,
    max_attempts: u32,
    retry_backoff: Duration,
    claim_idle: Duration,
    lease: Duration,
    poll_interval: Duration,
    drain_timeout: Duration,
}

impl WriteBehindWorker {
    /// A worker for `cache`'s queues (add a handler per queue).
    pub fn builder(cache: &Cache) -> WriteBehindWorkerBuilder {
        WriteBehindWorkerBuilder {
            cache: cache.clone(),
            handlers: Vec::new(),
            settings: Settings {
                batch_size: 100,
                max_attempts: 5,
                retry_backoff: Duration::from_secs(5),
                claim_idle: Duration::from_secs(10),
                lease: Duration::from_secs(10),
                poll_interval: Duration::from_millis(100),
                drain_timeout: Duration::from_secs(10),
            },
            require_durable: false,
        }
    }

    /// Stops reading, applies what it holds (retrying failures for at most
    /// [`drain_timeout`](WriteBehindWorkerBuilder::drain_timeout)), and
    /// gives its partitions back, so another worker takes them at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WriteBehindWorker {
    /// Without [`shutdown`](WriteBehindWorker::shutdown): stops at once;
    /// what it held is claimed by another worker after `claim_idle`.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl WriteBehindWorkerBuilder {
    /// Runs `handler`'s queue.
    pub fn handler(mut self, handler: WriteBehindHandler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Writes read at once from a partition (default 100).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.settings.batch_size = batch_size.max(1);
        self
    }

    /// Attempts before a write goes to the dead letters (default 5).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.settings.max_attempts = max_attempts.max(1);
        self
    }

    /// The longest pause between two attempts of a failing write (default
    /// 5 s); pauses grow from a few milliseconds to it, randomised.
    pub fn retry_backoff(mut self, retry_backoff: Duration) -> Self {
        self.settings.retry_backoff = retry_backoff;
        self
    }

    /// How long a write read by another worker stays unacknowledged before
    /// this one may claim it (default 10 s): longer than that worker's
    /// slowest batch, or a live worker's writes get applied twice.
    pub fn claim_idle(mut self, claim_idle: Duration) -> Self {
        self.settings.claim_idle = claim_idle;
        self
    }

    /// How long a partition stays this worker's without a renewal (default
    /// 10 s; renewed every third of it): how soon another worker takes over
    /// after this one died.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The pause when no partition had work (default 100 ms): about the
    /// longest a queued write waits before a worker sees it. An idle worker
    /// sends one small script per partition it holds per pause.
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.settings.poll_interval = poll_interval;
        self
    }

    /// How long [`shutdown`](WriteBehindWorker::shutdown) keeps retrying
    /// failed writes it holds (default 10 s); those left are claimed by
    /// another worker after `claim_idle`.
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.settings.drain_timeout = drain_timeout;
        self
    }

    /// Refuse to start unless Redis persists every write before answering
    /// (`appendonly yes` with `appendfsync always`, or `everysec` which
    /// risks about the last second). Off by default: the worker then only
    /// warns when a restart of Redis would lose queued writes.
    pub fn require_durable(mut self, require_durable: bool) -> Self {
        self.require_durable = require_durable;
        self
    }

    /// Checks Redis' persistence and starts the worker in the background.
    /// Without Redis there is no queue (every write runs at once): the
    /// worker idles. `Err` only for a handler given twice for one queue,
    /// or with [`require_durable`](Self::require_durable) when Redis does
    /// not persist what it queues.
    pub async fn start(self) -> Result<WriteBehindWorker, Error> {
        let (stop, stopped) = watch::channel(false);
        for (at, handler) in self.handlers.iter().enumerate() {
            if self.handlers[..at]
                .iter()
                .any(|other| other.queue() == handler.queue())
            {
                return Err(Error::config(
                    "handler",
                    format!("two handlers for the queue `{}`", handler.queue()),
                ));
            }
        }
        let engine = self.cache.engine();
        let Some(l2) = engine.store.l2().cloned() else {
            tracing::info!(
                "write-behind worker idle: no Redis is configured, so every write runs at once"
            );
            return Ok(WriteBehindWorker { stop, task: None });
        };
        self.check_durability(&l2).await?;
        let worker = Worker {
            id: format!("{}-{:08x}", std::process::id(), fastrand::u32(..)),
            l2,
            counters: Arc::clone(engine.store.shared_counters()),
            queues: self
                .handlers
                .into_iter()
                .map(|handler| Queue {
                    keys: QueueKeys::new(engine.store.namespace(), handler.queue()),
                    handler,
                    partitions: Vec::new(),
                })
                .collect(),
            settings: self.settings,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(WriteBehindWorker {
            stop,
            task: Some(task),
        })
    }

    async fn check_durability(&self, l2: &Arc<L2>) -> Result<(), Error> {
        let refuse = |reason: String| {
            if self.require_durable {
                Err(Error::config(
                    "require_durable",
                    format!("queued writes would not survive a restart of Redis: {reason}"),
                ))
            } else {
                tracing::warn!(
                    %reason,
                    "write-behind: queued writes may not survive a restart of Redis (see the README on AOF)"
                );
                Ok(())
            }
        };
        match queue::durability(l2).await {
            Durability::Always => Ok(()),
            Durability::EverySecond => {
                tracing::info!(
                    "write-behind: Redis syncs its append-only file every second: a crash of its machine may lose about the last second of queued writes"
                );
                Ok(())
            }
            Durability::Weak(reason) => refuse(reason),
            Durability::Unknown(reason) => refuse(format!(
                "Redis' persistence settings could not be read (`CONFIG GET`): {reason}"
            )),
        }
    }
}

/// The running worker (its own task).
struct Worker {
    /// This worker's consumer name: the process id and a random part, new
    /// on each start, so a restarted process claims its former pending
    /// writes like any other worker's.
    id: String,
    l2: Arc<L2>,
    counters: Arc<Counters>,
    queues: Vec<Queue>,
    settings: Settings,
}

struct Queue {
    keys: QueueKeys,
    handler: WriteBehindHandler,
    /// The partitions this worker holds.
    partitions: Vec<Partition>,
}

/// A partition this worker holds the lease of.
struct Partition {
    number: u16,
    stream: String,
    lease: String,
    /// Whether the writes other workers left pending were claimed and
    /// applied: until then nothing newer is read.
    caught_up: bool,
    /// When the lease was last taken or renewed.
    renewed: Instant,
    /// Whether the lease was found to be another worker's.
    lost: bool,
    /// Keys whose oldest write failed and waits for a retry, with the
    /// later writes of the key read meanwhile (applied after it).
    waiting: HashMap<String, Waiting>,
}

struct Waiting {
    writes: VecDeque<QueuedWrite>,
    /// Failed attempts of the first write.
    attempts: u32,
    next_try: Instant,
}

impl Partition {
    fn waiting_writes(&self) -> usize {
        self.waiting
            .values()
            .map(|waiting| waiting.writes.len())
            .sum()
    }
}

/// What applying one write came to.
enum Outcome {
    Applied,
    /// The body failed (or panicked): retry.
    Failed(String),
    /// It can never apply: dead-letter at once.
    Unusable(String),
}

/// What work on one queue's partitions uses, borrowed from the worker.
struct Turn<'a> {
    l2: &'a Arc<L2>,
    counters: &'a Counters,
    worker: &'a str,
    settings: &'a Settings,
    keys: &'a QueueKeys,
    handler: &'a WriteBehindHandler,
}

impl Worker {
    /// The context of work on `queue`, and its partitions.
    fn turn<'a>(
        l2: &'a Arc<L2>,
        counters: &'a Counters,
        worker: &'a str,
        settings: &'a Settings,
        queue: &'a mut Queue,
    ) -> (Turn<'a>, &'a mut Vec<Partition>) {
        let turn = Turn {
            l2,
            counters,
            worker,
            settings,
            keys: &queue.keys,
            handler: &queue.handler,
        };
        (turn, &mut queue.partitions)
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut next_upkeep = Instant::now();
        while !*stopped.borrow() {
            if Instant::now() >= next_upkeep {
                self.upkeep().await;
                next_upkeep = Instant::now() + self.settings.lease / 3;
            }
            let mut worked = false;
            for queue in &mut self.queues {
                let (turn, partitions) =
                    Worker::turn(&self.l2, &self.counters, &self.id, &self.settings, queue);
                for partition in partitions {
                    worked |= turn.step(partition).await;
                }
            }
            if !worked {
                tokio::select! {
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
        self.drain().await;
    }

    /// Every third of the lease: tells the queue this worker is alive,
    /// renews its leases, takes or hands back partitions to hold its share,
    /// and reads the backlog into the stats.
    async fn upkeep(&mut self) {
        let mut depth = 0;
        let mut oldest: Option<Duration> = None;
        for queue in &mut self.queues {
            let (turn, partitions) =
                Worker::turn(&self.l2, &self.counters, &self.id, &self.settings, queue);
            let lease_time = turn.settings.lease;
            let live = queue::heartbeat(turn.l2, turn.keys, turn.worker, lease_time * 2)
                .await
                .unwrap_or(1)
                .max(1);
            let share = usize::from(PARTITIONS).div_ceil(live as usize);
            let mut kept = Vec::with_capacity(partitions.len());
            for mut partition in partitions.drain(..) {
                // Not answered: kept, renewed next time if still ours.
                if turn.renew(&mut partition).await != Some(false) {
                    kept.push(partition);
                    continue;
                }
                tracing::warn!(
                    queue = turn.handler.queue(),
                    partition = partition.number,
                    waiting = partition.waiting_writes(),
                    "write-behind: lost a partition's lease (this worker stalled longer than the lease): another worker applies it now"
                );
            }
            *partitions = kept;
            // Hand back partitions beyond the share (those with nothing
            // waiting), so that a worker that joined gets some.
            while partitions.len() > share {
                let Some(at) = partitions.iter().position(|p| p.waiting.is_empty()) else {
                    break;
                };
                let partition = partitions.swap_remove(at);
                let _ = queue::release_lease(turn.l2, &partition.lease, turn.worker).await;
            }
            let start = fastrand::u16(..PARTITIONS);
            for offset in 0..PARTITIONS {
                if partitions.len() >= share {
                    break;
                }
                let number = (start + offset) % PARTITIONS;
                if partitions.iter().any(|p| p.number == number) {
                    continue;
                }
                let lease = turn.keys.lease(number);
                if let Ok(true) = queue::take_lease(turn.l2, &lease, turn.worker, lease_time).await
                {
                    partitions.push(Partition {
                        number,
                        stream: turn.keys.stream(number),
                        lease,
                        caught_up: false,
                        renewed: Instant::now(),
                        lost: false,
                        waiting: HashMap::new(),
                    });
                }
            }
            if let Ok(backlog) = queue::backlog(turn.l2, turn.keys, now_ms()).await {
                depth += backlog.depth;
                oldest = oldest.max(backlog.oldest);
            }
        }
        self.counters.write_behind_observed(depth, oldest);
    }

    /// At shutdown: retries what waits until it is applied or
    /// dead-lettered, or `drain_timeout` passed; then hands the partitions
    /// back.
    async fn drain(mut self) {
        let deadline = Instant::now() + self.settings.drain_timeout;
        for queue in &mut self.queues {
            let (turn, partitions) =
                Worker::turn(&self.l2, &self.counters, &self.id, &self.settings, queue);
            for partition in partitions {
                while !partition.waiting.is_empty() && Instant::now() < deadline {
                    let next = partition
                        .waiting
                        .values()
                        .map(|waiting| waiting.next_try)
                        .min()
                        .unwrap_or_else(Instant::now);
                    tokio::time::sleep_until(next.min(deadline).into()).await;
                    turn.retry_due(partition).await;
                }
                if !partition.waiting.is_empty() {
                    tracing::warn!(
                        queue = turn.handler.queue(),
                        partition = partition.number,
                        waiting = partition.waiting_writes(),
                        "write-behind worker stopped with failing writes: another worker claims them after claim_idle"
                    );
                }
                let _ = queue::release_lease(turn.l2, &partition.lease, turn.worker).await;
            }
            let _ = queue::leave(turn.l2, turn.keys, turn.worker).await;
        }
    }
}

impl Turn<'_> {
    /// Renews the partition's lease when a third of it passed since the
    /// last renewal: before each write, so that a long batch never outlives
    /// it. False once the lease is another worker's (the writes not applied
    /// yet are left to it: it claims them after `claim_idle`), or when
    /// Redis did not answer and the lease may have run out.
    async fn keep_lease(&self, partition: &mut Partition) -> bool {
        if partition.lost {
            return false;
        }
        if partition.renewed.elapsed() < self.settings.lease / 3 {
            return true;
        }
        match self.renew(partition).await {
            Some(ours) => ours,
            None => partition.renewed.elapsed() < self.settings.lease * 2 / 3,
        }
    }

    /// Renews the partition's lease now: `Some(false)` when it is another
    /// worker's (the partition is marked lost), `None` without an answer.
    async fn renew(&self, partition: &mut Partition) -> Option<bool> {
        let lease = self.settings.lease;
        let renewed = queue::renew_lease(self.l2, &partition.lease, self.worker, lease).await;
        match renewed {
            Ok(true) => partition.renewed = Instant::now(),
            Ok(false) => partition.lost = true,
            Err(_) => {}
        }
        renewed.ok()
    }

    /// One turn on a partition: catch up on what other workers left, retry
    /// what is due, read and apply a batch. Whether there was work.
    async fn step(&self, partition: &mut Partition) -> bool {
        if partition.lost {
            return false;
        }
        if !partition.caught_up {
            match self.catch_up(partition).await {
                Ok(Some(left)) => {
                    if !left.is_empty() {
                        self.apply_batch(partition, left).await;
                    }
                    partition.caught_up = true;
                }
                // Another worker's writes are not idle long enough yet.
                Ok(None) | Err(_) => return false,
            }
        }
        let retried = self.retry_due(partition).await;
        if partition.waiting_writes() >= self.settings.batch_size * 10 {
            // Too much waits behind failing writes: read no more until it clears.
            return retried;
        }
        let batch = self.settings.batch_size;
        match queue::read(self.l2, &partition.stream, self.worker, batch, ">").await {
            Ok(read) if !read.is_empty() => {
                self.apply_batch(partition, read).await;
                true
            }
            _ => retried,
        }
    }

    /// What a partition's previous holders left unacknowledged, in stream
    /// order: this worker's own (from before it lost the lease) and, once
    /// idle for `claim_idle`, other workers'. `None` while some of those are
    /// not idle long enough to claim.
    async fn catch_up(&self, partition: &Partition) -> Result<Option<Read>, Error> {
        let (l2, stream, worker) = (self.l2, &partition.stream, self.worker);
        let batch = self.settings.batch_size;
        let mut left = queue::read(l2, stream, worker, batch * 11, "0").await?;
        let mut cursor = "0-0".to_owned();
        loop {
            let claim_idle = self.settings.claim_idle;
            let (next, claimed) =
                queue::claim(l2, stream, worker, claim_idle, batch, &cursor).await?;
            left.writes.extend(claimed.writes);
            left.foreign.extend(claimed.foreign);
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        if queue::pending_elsewhere(l2, stream, worker).await? > 0 {
            // Claimed ones stay this worker's: applied on the next try,
            // with those that become idle meanwhile.
            return Ok(None);
        }
        left.writes.sort_by_key(QueuedWrite::position);
        Ok(Some(left))
    }

    /// Applies writes read together, in order: a key with a write waiting
    /// for a retry gets the new ones queued behind it. Acknowledges what
    /// was applied (or dead-lettered, or coalesced) in one round trip.
    async fn apply_batch(&self, partition: &mut Partition, read: Read) {
        let span = tracing::info_span!(
            "cache.write_behind",
            queue = self.handler.queue(),
            partition = partition.number,
            writes = read.writes.len(),
            applied = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        async {
            let mut done: Vec<String> = read.foreign;
            let mut writes = read.writes;
            if self.handler.coalesces() {
                self.coalesce(partition, &mut writes, &mut done);
            }
            let (mut applied, mut failed) = (0u64, 0u64);
            for write in writes {
                if let Some(waiting) = partition.waiting.get_mut(&write.key) {
                    waiting.writes.push_back(write);
                    continue;
                }
                if !self.keep_lease(partition).await {
                    // The rest is the next holder's (left unacknowledged).
                    break;
                }
                match apply(self.handler, &write).await {
                    Outcome::Applied => {
                        applied += 1;
                        bump(&self.counters.write_behind_applied);
                        done.push(write.entry);
                    }
                    Outcome::Unusable(reason) => {
                        failed += 1;
                        if self.bury(&write, &reason, 1).await {
                            done.push(write.entry);
                        } else {
                            // Redis did not take the dead letter: the next
                            // retry buries it (it fails again at once).
                            self.wait(partition, write, self.settings.max_attempts);
                        }
                    }
                    Outcome::Failed(_) => {
                        failed += 1;
                        bump(&self.counters.write_behind_retries);
                        self.wait(partition, write, 1);
                    }
                }
            }
            let done: Vec<&str> = done.iter().map(String::as_str).collect();
            let _ = queue::acknowledge(self.l2, &partition.stream, &done).await;
            let span = tracing::Span::current();
            span.record("applied", applied);
            span.record("failed", failed);
        }
        .instrument(span)
        .await;
    }

    /// Keeps each key's last write of `writes` (all of a key that waits for
    /// a retry); the others are superseded, to acknowledge unapplied.
    fn coalesce(
        &self,
        partition: &Partition,
        writes: &mut Vec<QueuedWrite>,
        done: &mut Vec<String>,
    ) {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (at, write) in writes.iter().enumerate() {
            last.insert(&write.key, at);
        }
        let keep: Vec<bool> = writes
            .iter()
            .enumerate()
            .map(|(at, write)| {
                last[write.key.as_str()] == at || partition.waiting.contains_key(&write.key)
            })
            .collect();
        let mut at = 0;
        writes.retain(|write| {
            let kept = keep[at];
            at += 1;
            if !kept {
                bump(&self.counters.write_behind_coalesced);
                done.push(write.entry.clone());
            }
            kept
        });
    }

    /// Holds a failed write (the first of its key to wait) for a retry.
    fn wait(&self, partition: &mut Partition, write: QueuedWrite, attempts: u32) {
        let next_try = Instant::now() + backoff_delay(attempts, self.settings.retry_backoff);
        let writes = VecDeque::from([write]);
        let key = writes[0].key.clone();
        partition.waiting.insert(
            key,
            Waiting {
                writes,
                attempts,
                next_try,
            },
        );
    }

    /// Retries the keys whose pause is over: each key's writes in order,
    /// until one fails again. Whether anything was tried.
    async fn retry_due(&self, partition: &mut Partition) -> bool {
        let now = Instant::now();
        let due: Vec<String> = partition
            .waiting
            .iter()
            .filter(|(_, waiting)| waiting.next_try <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &due {
            if !self.keep_lease(partition).await {
                return true;
            }
            let Some(waiting) = partition.waiting.get_mut(key) else {
                continue;
            };
            let mut done: Vec<String> = Vec::new();
            while let Some(write) = waiting.writes.pop_front() {
                let attempts = waiting.attempts + 1;
                let retry_later = match apply(self.handler, &write).await {
                    Outcome::Applied => {
                        bump(&self.counters.write_behind_applied);
                        false
                    }
                    Outcome::Failed(_) if attempts < self.settings.max_attempts => {
                        bump(&self.counters.write_behind_retries);
                        true
                    }
                    // Not in the dead letters (Redis did not take it): try
                    // again later.
                    Outcome::Failed(reason) | Outcome::Unusable(reason) => {
                        !self.bury(&write, &reason, attempts).await
                    }
                };
                if retry_later {
                    waiting.attempts = attempts;
                    waiting.next_try =
                        Instant::now() + backoff_delay(attempts, self.settings.retry_backoff);
                    waiting.writes.push_front(write);
                    break;
                }
                waiting.attempts = 0;
                done.push(write.entry);
            }
            if waiting.writes.is_empty() {
                partition.waiting.remove(key);
            }
            let done: Vec<&str> = done.iter().map(String::as_str).collect();
            let _ = queue::acknowledge(self.l2, &partition.stream, &done).await;
        }
        !due.is_empty()
    }

    /// Moves a write to the dead letters; false when Redis did not take it.
    async fn bury(&self, write: &QueuedWrite, reason: &str, attempts: u32) -> bool {
        let buried = queue::bury(self.l2, self.keys, write, reason, attempts)
            .await
            .is_ok();
        if buried {
            bump(&self.counters.write_behind_dead_letters);
            tracing::error!(
                queue = self.handler.queue(),
                write = %write.id,
                attempts,
                %reason,
                "write-behind: a write failed for good and went to the dead letters (Cache::replay_dead_letters puts it back)"
            );
        }
        buried
    }
}

/// Runs one write's body in a task of its own (a panic is a failure, not
/// the worker's end), as the write `write.id`.
async fn apply(handler: &WriteBehindHandler, write: &QueuedWrite) -> Outcome {
    let body = match handler.start(write.fingerprint, &write.arguments) {
        Ok(body) => body,
        // During a rolling deploy, a worker of the release that queued it
        // may take the partition over: retried, then dead-lettered (and
        // replayable once every worker runs that release).
        Err(Unstartable::OtherRelease) => {
            return Outcome::Failed(
                "queued by a release whose function takes other arguments (their type's fingerprint differs)".to_owned(),
            );
        }
        Err(Unstartable::Undecodable(reason)) => return Outcome::Unusable(reason),
    };
    // In the batch's span, which a spawned task would not otherwise be in.
    match tokio::spawn(write.id.scope(body).in_current_span()).await {
        Ok(Ok(())) => Outcome::Applied,
        Ok(Err(reason)) => Outcome::Failed(reason),
        Err(_) => Outcome::Failed("the body panicked".to_owned()),
    }
}
