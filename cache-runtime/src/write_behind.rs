//! Write-behind: a call stores the new value in the cache and queues the
//! write in Redis (`queue.rs`); a worker (`worker.rs`) runs the body later.
//!
//! The order of a call is that of `#[write_through]` with the queue in the
//! body's place: what the key holds is read first ([`begin_write`]), then
//! the write is queued, then the value is stored only if the key still
//! holds what was read. Two calls on one key that overlap thus leave either
//! the value of the one queued last or a tombstone, never the value of the
//! one queued first over the other's: the cache never disagrees with the
//! order the database will see.
//!
//! When Redis cannot take the write (none configured, down, breaker open,
//! full), the body runs at once in the caller's task and the call returns
//! what it returned, as a `#[write_through]` would: nothing acknowledged is
//! ever only in memory.
//!
//! [`begin_write`]: crate::__private::begin_write

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::{coarse_now_nanos, now_ms};
use crate::codec;
use crate::engine::{Cache, Engine};
use crate::error::Error;
use crate::fingerprint::fingerprint;
use crate::keys::KeyBuf;
use crate::logging::Throttle;
use crate::queue::{self, QueueKeys, WriteId};
use crate::shape::CacheValue;
use crate::site::{Site, SiteSpec};
use crate::stats::bump;
use crate::write::{PendingWrite, begin_write, store_after_success};

/// What a `#[write_behind]` function may return: the call returns before
/// its body runs, so the caller can only learn "taken" (`()` or `Ok(())`).
/// A worker reads the body's outcome through [`failure`](Deferred::failure)
/// (an `Err` is retried, then dead-lettered).
///
/// # Example
///
/// ```
/// use cache_runtime::Deferred;
///
/// assert_eq!(<Result<(), String> as Deferred>::queued(), Ok(()));
/// assert_eq!(Err::<(), _>("disk full").failure(), Some("disk full".to_owned()));
/// assert_eq!(().failure(), None);
/// ```
#[diagnostic::on_unimplemented(
    message = "a `#[write_behind]` function returns before its body runs, so it cannot return `{Self}`",
    label = "return `()` or `Result<(), E>` (with `E: Display`)",
    note = "the caller learns only that the write was taken; a worker runs the body later"
)]
pub trait Deferred: Sized {
    /// What the call returns once the write is queued.
    fn queued() -> Self;
    /// Why the body failed (`Err`), or `None` when it succeeded.
    fn failure(&self) -> Option<String>;
}

impl Deferred for () {
    fn queued() {}
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<E: Display> Deferred for Result<(), E> {
    fn queued() -> Self {
        Ok(())
    }
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

tokio::task_local! {
    /// The id of the write whose body runs in this task.
    static CURRENT: WriteId;
}

impl WriteId {
    /// The id of the write whose body is running, inside the body of a
    /// `#[write_behind]` function (run by a worker, or at once because
    /// Redis could not queue it); `None` anywhere else.
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(cache_runtime::WriteId::current(), None);
    /// ```
    pub fn current() -> Option<WriteId> {
        CURRENT.try_with(|id| *id).ok()
    }

    /// Runs `body` as the write `id`.
    pub(crate) fn scope<F: Future>(self, body: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, body)
    }

    /// An id for a write that runs at once: Redis' clock as this process
    /// last saw it (see [`RedisClock`]), or this process' clock when it
    /// never queued a write, and a sequence that orders two such writes
    /// within one millisecond.
    fn now() -> WriteId {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        WriteId::local(REDIS_CLOCK.now_ms(), SEQUENCE.fetch_add(1, Relaxed))
    }
}

/// Redis' clock, as read from the id of the last write this process queued
/// (a stream id holds Redis' time) and carried on by this process'
/// monotonic clock since.
///
/// A write that runs at once (Redis could not queue it) is numbered on it
/// rather than on the wall clock: queued writes are numbered by Redis, so a
/// host whose wall clock is ahead of Redis' would otherwise give its
/// synchronous writes ids that later queued writes of the same key cannot
/// pass, and an idempotent database would refuse those newer writes.
struct RedisClock {
    /// Redis' milliseconds at the last queued write; 0 for never.
    millis: AtomicU64,
    /// This process' monotonic nanoseconds then.
    seen_at: AtomicU64,
}

static REDIS_CLOCK: RedisClock = RedisClock {
    millis: AtomicU64::new(0),
    seen_at: AtomicU64::new(0),
};

impl RedisClock {
    fn observe(&self, id: WriteId) {
        // Two writers racing may pair one's time with the other's moment:
        // a few milliseconds off at most, which ids of one key never need.
        self.seen_at.store(coarse_now_nanos(), Relaxed);
        self.millis.store(id.millis(), Relaxed);
    }

    fn now_ms(&self) -> u64 {
        match self.millis.load(Relaxed) {
            0 => now_ms(),
            millis => {
                let since = coarse_now_nanos().saturating_sub(self.seen_at.load(Relaxed));
                millis + since / 1_000_000
            }
        }
    }
}

/// Checks at compile time that a parameter of a `#[write_behind]` function
/// can travel in the queue (the macro calls it once per parameter, spanned
/// at its type). Does nothing at run time.
///
/// ```
/// cache_runtime::__private::queued_argument::<String>();
/// ```
#[diagnostic::on_unimplemented(
    message = "a `#[write_behind]` parameter travels in the queue, so `{Self}` must be an owned, serialisable type",
    label = "must be `Serialize + DeserializeOwned + Send + 'static`",
    note = "take an owned value (`String`, not `&str`); only the first parameter may be a reference: the handle the worker lends"
)]
pub trait Queueable: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Queueable for T {}

/// See [`Queueable`].
#[inline]
pub fn queued_argument<T: Queueable>() {}

/// Logs the calls that ran their body at once although Redis is configured.
static SYNCHRONOUS_LOG: LazyLock<Throttle> = LazyLock::new(Throttle::default);

/// What a `#[write_behind]` call runs once the key and tags are rendered
/// and [`begin_write`] read what the key holds: queues `arguments` in
/// `queue` and stores `value` under the key (then returns
/// [`Deferred::queued`]), or, when Redis cannot take the write, runs
/// `body(arguments)` now and stores `value` if it succeeded (then returns
/// what it returned).
///
/// # Example
///
/// What `#[write_behind(key = "user:<id>:seen", ttl = 300, value = at)]`
/// expands to:
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::Cache;
/// use cache_runtime::__private::{KeyBuf, Site, SiteIndex, begin_write, write_behind};
///
/// static SITE: Site = Site {
///     function: "record_seen",
///     template: "user:<id>:seen",
///     ttl: Duration::from_secs(300),
///     jitter: None,
///     negative: None,
///     l1: true,
///     lock: false,
///     early: None,
///     stale: None,
///     tag_templates: &[],
///     index: SiteIndex::new(),
/// };
///
/// async fn save_seen(id: u64, at: i64) -> Result<(), String> {
///     Ok(()) // the database write
/// }
///
/// async fn record_seen(cache: &Cache, id: u64, at: i64) -> Result<(), String> {
///     let mut key = KeyBuf::new();
///     key.literal("user:");
///     key.arg(&id);
///     key.literal(":seen");
///     let pending = begin_write(cache, key, &[]).await;
///     write_behind(cache, &SITE, "record_seen", pending, at, (id, at), |(id, at)| save_seen(id, at)).await
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let cache = Cache::builder().build().await.unwrap();
/// # assert_eq!(record_seen(&cache, 1, 5).await, Ok(())); // no Redis: the body ran at once
/// # }
/// ```
pub async fn write_behind<V, A, R, F, Fut>(
    cache: &Cache,
    site: &'static Site,
    queue: &'static str,
    pending: PendingWrite,
    value: V,
    arguments: A,
    body: F,
) -> R
where
    V: CacheValue,
    A: Queueable,
    R: Deferred,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = R>,
{
    let engine = cache.engine();
    match enqueue(engine, queue, pending.key(), &arguments).await {
        Ok(_) => {
            bump(&engine.store.counters().write_behind_queued);
            store_after_success(engine, site, pending, value).await;
            R::queued()
        }
        Err(reason) => {
            bump(&engine.store.counters().write_behind_synchronous);
            if let Some(reason) = reason
                && let Some(suppressed) = SYNCHRONOUS_LOG.admit()
            {
                tracing::warn!(
                    function = site.function,
                    queue,
                    %reason,
                    suppressed,
                    "write-behind could not queue the write, so its body ran at once (as a write-through would)"
                );
            }
            let returned = WriteId::now().scope(body(arguments)).await;
            if returned.failure().is_none() {
                store_after_success(engine, site, pending, value).await;
            }
            returned
        }
    }
}

/// Queues a write; `Err(None)` without Redis (the body runs at once, which
/// is the normal case then), `Err(Some(why))` when Redis did not take it.
async fn enqueue<A: Queueable>(
    engine: &Engine,
    queue: &str,
    key: Option<&str>,
    arguments: &A,
) -> Result<WriteId, Option<String>> {
    let Some(l2) = engine.store.l2() else {
        return Err(None);
    };
    let Some(key) = key else {
        return Err(Some(
            "the key could not be rendered (a placeholder's `Display` failed)".to_owned(),
        ));
    };
    let encoded = codec::encode_arguments(arguments)
        .map_err(|error| Some(format!("the arguments do not serialise: {error}")))?;
    let keys = QueueKeys::new(engine.store.namespace(), queue);
    let id = queue::append(l2, &keys, key, fingerprint::<A>(), &encoded)
        .await
        .map_err(|error| Some(error.to_string()))?;
    REDIS_CLOCK.observe(id);
    Ok(id)
}

/// The future a handler's body runs as, with its outcome as text.
type Applied = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs a queued write from its arguments' bytes: `Err` when they do not
/// decode (dead-lettered at once: retrying cannot help).
type Apply = dyn Fn(&[u8]) -> Result<Applied, String> + Send + Sync;

/// How a worker runs the writes of one queue: the function's body, the
/// handle it borrows, and how to decode its arguments.
///
/// `#[write_behind]` generates one per function (`<function>_handler`);
/// build one by hand for writes queued with
/// [`Cache::write_behind`](crate::Cache::write_behind).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use cache_runtime::WriteBehindHandler;
///
/// struct Db; // a connection pool
/// impl Db {
///     async fn save_seen(&self, id: u64, at: i64) -> Result<(), String> { Ok(()) }
/// }
///
/// let handler = WriteBehindHandler::new("record_seen", Db, |db: Arc<Db>, (id, at): (u64, i64)| async move {
///     db.save_seen(id, at).await
/// })
/// .coalesce(true); // the last write of a key is all that matters
/// assert_eq!(handler.queue(), "record_seen");
/// ```
#[derive(Clone)]
pub struct WriteBehindHandler {
    queue: String,
    coalesce: bool,
    fingerprint: u64,
    apply: Arc<Apply>,
}

impl std::fmt::Debug for WriteBehindHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehindHandler")
            .field("queue", &self.queue)
            .field("coalesce", &self.coalesce)
            .finish_non_exhaustive()
    }
}

impl WriteBehindHandler {
    /// The handler of `queue`: `run(handle, arguments)` applies one write.
    /// The handle (a connection pool, a repository) is shared by every
    /// write the worker runs.
    pub fn new<H, A, F, Fut, R>(queue: impl Into<String>, handle: H, run: F) -> WriteBehindHandler
    where
        H: Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        F: Fn(Arc<H>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Deferred,
    {
        let handle = Arc::new(handle);
        let apply = move |bytes: &[u8]| -> Result<Applied, String> {
            let arguments: A = codec::decode_arguments(bytes)?;
            let applied = run(Arc::clone(&handle), arguments);
            Ok(Box::pin(async move {
                match applied.await.failure() {
                    None => Ok(()),
                    Some(failure) => Err(failure),
                }
            }))
        };
        WriteBehindHandler {
            queue: queue.into(),
            coalesce: false,
            fingerprint: fingerprint::<A>(),
            apply: Arc::new(apply),
        }
    }

    /// Whether the worker may apply only the last of several writes of one
    /// key it reads together (the others are acknowledged unapplied). Only
    /// for writes that replace (a last-seen time), never for writes that
    /// add up (a view count). Off by default.
    pub fn coalesce(mut self, coalesce: bool) -> WriteBehindHandler {
        self.coalesce = coalesce;
        self
    }

    /// The queue this handler applies.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub(crate) fn coalesces(&self) -> bool {
        self.coalesce
    }

    /// Starts applying one write. `Err` when it cannot: queued by a
    /// release whose function takes other arguments ([`Unstartable::OtherRelease`]:
    /// a worker of that release may still apply it), or its bytes do not
    /// decode ([`Unstartable::Undecodable`]: nothing ever will).
    pub(crate) fn start(&self, fingerprint: u64, arguments: &[u8]) -> Result<Applied, Unstartable> {
        if fingerprint != self.fingerprint {
            return Err(Unstartable::OtherRelease);
        }
        (self.apply)(arguments).map_err(Unstartable::Undecodable)
    }
}

/// Why a queued write could not start.
pub(crate) enum Unstartable {
    OtherRelease,
    Undecodable(String),
}

impl Cache {
    /// Write-behind without the attribute: stores `value` under `key` (a
    /// rendered key, see [`escape_key_part`](crate::escape_key_part)) for
    /// `ttl`, in both tiers, dropping other instances' L1 copies, and queues
    /// `arguments` in `queue` for a worker running that queue's
    /// [`WriteBehindHandler`]; returns [`Deferred::queued`]. When Redis
    /// cannot take the write, runs `body(arguments)` now instead and
    /// returns what it returned (storing `value` if it succeeded).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// let (id, at) = (42u64, 1_700_000_000i64);
    /// let taken: Result<(), String> = cache
    ///     .write_behind("record_seen", &format!("user:{id}:seen"), at, Duration::from_secs(300), (id, at), |(id, at)| async move {
    ///         Ok(()) // the database write: here at once, as no Redis is configured
    ///     })
    ///     .await;
    /// assert_eq!(taken, Ok(()));
    /// # Ok(()) }
    /// ```
    pub async fn write_behind<V, A, R, F, Fut>(
        &self,
        queue: &str,
        key: &str,
        value: V,
        ttl: Duration,
        arguments: A,
        body: F,
    ) -> R
    where
        V: CacheValue,
        A: Queueable,
        R: Deferred,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = R>,
    {
        // The queue names the entries in logs, and is the site's function.
        let site = SiteSpec::new(Cow::Owned(queue.to_owned()), ttl).site();
        let pending = begin_write(self, KeyBuf::rendered(key), &[]).await;
        write_behind(self, site, site.function, pending, value, arguments, body).await
    }

    /// How far `queue` is behind: writes not yet applied, the age of the
    /// oldest, and the dead letters. Zeros without Redis.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// assert_eq!(cache.write_behind_backlog("record_seen").await?.depth, 0);
    /// # Ok(()) }
    /// ```
    pub async fn write_behind_backlog(&self, queue: &str) -> Result<queue::Backlog, Error> {
        let store = &self.engine().store;
        match store.l2() {
            None => Ok(queue::Backlog::default()),
            Some(l2) => {
                queue::backlog(l2, &QueueKeys::new(store.namespace(), queue), now_ms()).await
            }
        }
    }

    /// Puts `queue`'s dead letters back in the queue (keeping their
    /// original [`WriteId`]s, so an idempotent database write still refuses
    /// one older than what it holds); how many were moved. Fix what made
    /// them fail first.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// assert_eq!(cache.replay_dead_letters("record_seen").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn replay_dead_letters(&self, queue: &str) -> Result<u64, Error> {
        let store = &self.engine().store;
        let Some(l2) = store.l2() else {
            return Ok(0);
        };
        let keys = QueueKeys::new(store.namespace(), queue);
        let mut moved = 0;
        loop {
            let (batch, read) = queue::replay(l2, &keys, 100).await?;
            moved += batch;
            if read == 0 {
                return Ok(moved);
            }
        }
    }
}
