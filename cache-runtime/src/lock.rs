//! `lock`: one load per key in the whole fleet.
//!
//! After the in-process single-flight, the one local caller of a missing key
//! takes a lock in Redis, `SET {<storage key>} #lock <token> NX PX <lock ttl>`.
//! The key holds a space and braces, which no rendered template can, so it
//! never collides with a cached value; on a cluster the braces (a hash tag)
//! put it in its entry's slot (see `keys.rs`).
//!
//! - Whoever takes the lock reads Redis once more before loading: the
//!   previous owner may have stored its value and released the lock
//!   between the taker's last read and its `SET NX` (double-checked
//!   locking).
//! - The owner runs the body; while it runs the lock's lease is extended
//!   every third of its TTL, so a slow load does not let a second loader
//!   in. The extension runs beside the body, which is polled all the while:
//!   its result is returned as soon as it is ready, whatever the extension's
//!   reply is waiting for.
//! - Then, in order and in the background (see `background.rs`): the value
//!   is written (conditionally, see `store.rs`), the storage key is
//!   published on `<namespace> #filled`, and the lock is released with a
//!   compare-and-delete script (only its own token is deleted).
//! - A lease can be lost: an extension finds another token (the lease ran
//!   out, say while the process stalled, and another instance took the
//!   lock), or no extension is confirmed before the lease would have run out
//!   (Redis did not answer). The owner then does not write its value: the
//!   new owner may have written a newer one, which a write of ours could
//!   precede or replace. The caller still gets its value (and L1 keeps it);
//!   the loss is counted (`lock_leases_lost`).
//! - A lock released without a "filled" message (the body failed, the write
//!   was refused, the owner was cancelled) publishes the storage key all
//!   the same, so the waiters re-check and one of them takes over at once.
//! - An owner that goes away without releasing (its caller's future was
//!   dropped: an HTTP client disconnected) releases on drop, in the
//!   background. A lock attempt cut off before its reply came (a timeout or
//!   a cancellation) releases its token too, in case the `SET` went through.
//! - Other instances wait: they wake on the "filled" message for their key
//!   (on the cache's one subscription, see `invalidation.rs`), and re-check Redis
//!   at a bounded interval in case a message was lost. They also retry the
//!   lock, so an owner that failed (its body returned `Err`) hands over. A
//!   waiter gives up after `lock_wait` and runs the body itself, so a crashed
//!   owner delays others by at most that. What "filled" means (a usable
//!   entry) is the read path's business: [`Locks::lock_or_wait`] takes it
//!   as a re-check.
//! - With Redis unreachable, nothing waits: the call degrades to the
//!   in-process single-flight.
//! - A release the background has no room for (see `background.rs`) is not
//!   made: the lock lives out its lease, and waiters wait at most
//!   `lock_wait`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::background::Background;
use crate::clock::{after, millis};
use crate::error::Error;
use crate::l2::{L2, Script};
use crate::logging::Throttle;
use crate::site::Site;
use crate::stats::{Counters, bump};
use crate::store::{L2Write, Prior, Store};

/// How often a waiting instance re-checks Redis when no message came.
const RECHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The lock feature of one cache: its settings and the local waiters for
/// other instances' loads.
pub(crate) struct Locks {
    fills: Fills,
    shared: Arc<Shared>,
    /// How long a caller waits for another instance's load.
    wait: Duration,
}

/// What every lock of one cache uses, after its caller is gone too.
struct Shared {
    /// How long a lock lives without being extended.
    ttl: Duration,
    /// Where "filled" messages go: `<namespace> #filled db<n>`.
    namespace: String,
    /// Runs the releases of locks dropped without one.
    background: Arc<Background>,
    counters: Arc<Counters>,
    lease_log: Throttle,
}

/// What the Redis lock gave a caller that missed.
pub(crate) enum Locked<T> {
    /// Another instance filled the key meanwhile: what the re-check found.
    Filled(T),
    /// This caller holds the lock and loads.
    Owner(Lock),
    /// No lock (Redis unavailable, or the wait ran out): load anyway.
    Without,
}

/// What a re-check of Redis found while waiting.
pub(crate) enum Recheck<T> {
    /// A usable entry.
    Filled(T),
    /// Still nothing usable.
    Missing,
    /// Redis did not answer: stop waiting.
    Unavailable,
}

impl Locks {
    pub(crate) fn new(
        ttl: Duration,
        wait: Duration,
        namespace: &str,
        background: Arc<Background>,
        counters: Arc<Counters>,
    ) -> Locks {
        Locks {
            fills: Fills::default(),
            shared: Arc::new(Shared {
                ttl,
                namespace: namespace.to_owned(),
                background,
                counters,
                lease_log: Throttle::default(),
            }),
            wait,
        }
    }

    /// The registry the subscription wakes on "filled" messages.
    pub(crate) fn fills(&self) -> &Fills {
        &self.fills
    }

    /// Takes the lock of `storage_key` (non-blocking): for a background
    /// refresh, which skips the key when another instance holds it.
    pub(crate) async fn try_lock(&self, l2: &Arc<L2>, storage_key: &str) -> Attempt {
        try_lock(&self.shared, l2, storage_key).await
    }

    /// Takes the Redis lock for a missing key, or waits for the instance
    /// that holds it to fill the key (woken by its "filled" message, with a
    /// bounded re-check through `recheck`), retrying the lock meanwhile.
    ///
    /// `recheck` is a plain closure returning a future (not an async
    /// closure): an async closure's future is generic over the closure's
    /// borrow, which makes rustc unable to prove the caller's future `Send`.
    pub(crate) async fn lock_or_wait<T, F: Future<Output = Recheck<T>>>(
        &self,
        l2: &Arc<L2>,
        site: &'static Site,
        storage_key: &str,
        mut recheck: impl FnMut() -> F,
    ) -> Locked<T> {
        let counters = &self.shared.counters;
        // Listen before trying, so a fill right after our attempt is heard.
        let watch = self.fills.watch(storage_key);
        let mut filled = pin!(watch.notify.notified());
        filled.as_mut().enable();
        match try_lock(&self.shared, l2, storage_key).await {
            Attempt::Acquired(lock) => {
                bump(&counters.lock_acquired);
                return unless_filled(lock, recheck()).await;
            }
            Attempt::Unavailable => return Locked::Without,
            Attempt::Held => bump(&counters.lock_waits),
        }
        let deadline = after(Instant::now(), self.wait);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bump(&counters.lock_wait_timeouts);
                tracing::debug!(
                    function = site.function,
                    template = site.template,
                    "gave up waiting for another instance's load"
                );
                return Locked::Without;
            }
            tokio::select! {
                () = filled.as_mut() => {}
                () = tokio::time::sleep(left.min(RECHECK_INTERVAL)) => {}
            }
            filled.set(watch.notify.notified());
            filled.as_mut().enable();
            match recheck().await {
                Recheck::Filled(found) => return Locked::Filled(found),
                Recheck::Unavailable => return Locked::Without,
                Recheck::Missing => {}
            }
            // The owner may have failed (no value), gone away (its release
            // woke us) or died (lock expired).
            match try_lock(&self.shared, l2, storage_key).await {
                Attempt::Acquired(lock) => {
                    bump(&counters.lock_acquired);
                    return unless_filled(lock, recheck()).await;
                }
                Attempt::Unavailable => return Locked::Without,
                Attempt::Held => {}
            }
        }
    }
}

static RELEASE: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
);

static EXTEND: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
);

/// A lock just taken, unless the entry is there by now: the owner before
/// may have stored its value and released the lock between this caller's
/// last look at Redis and its taking the lock, and loading again would run
/// the body twice for one fill (double-checked locking). Then the lock is
/// released at once (dropped: in the background, which wakes the waiters)
/// and the value used.
async fn unless_filled<T>(lock: Lock, recheck: impl Future<Output = Recheck<T>>) -> Locked<T> {
    match recheck.await {
        Recheck::Filled(found) => {
            drop(lock);
            Locked::Filled(found)
        }
        Recheck::Missing | Recheck::Unavailable => Locked::Owner(lock),
    }
}

/// The lock key of a stored key: in the stored key's cluster slot, as the
/// stored key holds no braces and the hash tag is all of it.
pub(crate) fn lock_key(storage_key: &str) -> String {
    format!("{{{storage_key}}} #lock")
}

/// The channel "filled" messages go to (scoped to the database, as pub/sub
/// ignores databases).
pub(crate) fn fill_channel(namespace: &str, database: i64) -> String {
    format!("{namespace} #filled db{database}")
}

/// A lock this process holds (or may hold: see [`try_lock`]).
///
/// Dropped without [`finish`](Lock::finish) or
/// [`abandon`](Lock::abandon), it releases itself in the background.
pub(crate) struct Lock {
    shared: Arc<Shared>,
    l2: Arc<L2>,
    storage_key: String,
    key: String,
    token: String,
    lease: Lease,
    /// An extension sent while the body ran, whose reply had not come when
    /// the body ended: [`finish`](Lock::finish) waits for it (in the
    /// background) before it decides whether the lease held. In a `Mutex`
    /// only to make `Lock` `Sync` (a future need not be); never contended:
    /// reached through `&mut self`.
    extension: Mutex<Option<Extension>>,
    /// Still to be released: cleared by a release, or by giving the lock
    /// up to its lease.
    armed: bool,
}

/// An extension of the lease on its way: its reply, and when it was sent.
struct Extension {
    reply: Pin<Box<dyn Future<Output = Result<i64, Error>> + Send>>,
    sent: Instant,
}

/// What this process knows of its lock's lease.
struct Lease {
    /// Until when the lock is ours for sure: the send time of the last
    /// confirmed `SET`/extension, plus the TTL.
    until: Instant,
    /// An extension found another token (or none): the lock is not ours.
    lost: bool,
    /// The loss was counted.
    counted: bool,
}

/// What trying the lock gave.
pub(crate) enum Attempt {
    Acquired(Lock),
    /// Another caller holds it.
    Held,
    /// Redis did not answer: go on without a lock.
    Unavailable,
}

async fn try_lock(shared: &Arc<Shared>, l2: &Arc<L2>, storage_key: &str) -> Attempt {
    let sent = Instant::now();
    // Unique enough across processes: random 128 bits.
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    // Armed from the start: if this future is dropped while the `SET` is
    // on its way, or it times out, the `SET` may still have taken the lock,
    // and the drop releases our token (a no-op if it is not there).
    let mut lock = Lock {
        shared: Arc::clone(shared),
        l2: Arc::clone(l2),
        storage_key: storage_key.to_owned(),
        key: lock_key(storage_key),
        token,
        lease: Lease {
            until: after(sent, shared.ttl),
            lost: false,
            counted: false,
        },
        extension: Mutex::new(None),
        armed: true,
    };
    match l2.set_if_absent(&lock.key, &lock.token, shared.ttl).await {
        Ok(true) => Attempt::Acquired(lock),
        Ok(false) => {
            lock.armed = false;
            Attempt::Held
        }
        // Not sent: nothing to release.
        Err(Error::Unavailable) => {
            lock.armed = false;
            Attempt::Unavailable
        }
        // Perhaps set: dropped, the lock releases its token.
        Err(_) => Attempt::Unavailable,
    }
}

impl Lock {
    /// Runs `body`, extending the lease every third of the TTL until it
    /// ends. The body is polled while an extension waits for its reply:
    /// its output is returned as soon as it is ready, and an extension
    /// still on its way is kept for [`finish`](Lock::finish) to wait for.
    ///
    /// The output is never held across an `.await` (it may be a `!Send`
    /// error).
    pub(crate) async fn hold_while<T>(&mut self, body: impl Future<Output = T>) -> T {
        let mut body = pin!(body);
        let period = self.shared.ttl / 3;
        while !self.lease.lost {
            if let Ok(output) = tokio::time::timeout(period, &mut body).await {
                return output;
            }
            let mut extension = self.extend();
            let replied = tokio::select! {
                biased;
                output = &mut body => Err(output),
                reply = &mut extension.reply => Ok(reply),
            };
            match replied {
                Ok(reply) => self.note_extension(reply, extension.sent),
                Err(output) => {
                    *self.extension_mut() = Some(extension);
                    return output;
                }
            }
        }
        // Not ours any more: nothing to extend.
        body.await
    }

    /// Sends an extension of the lease (owning what it needs, so that it
    /// can outlive [`hold_while`](Lock::hold_while)).
    fn extend(&self) -> Extension {
        let (l2, key, token) = (Arc::clone(&self.l2), self.key.clone(), self.token.clone());
        let ttl_ms = millis(self.shared.ttl).to_string();
        Extension {
            reply: Box::pin(async move {
                l2.script::<i64>(&EXTEND, &[&key], &[token.as_bytes(), ttl_ms.as_bytes()])
                    .await
            }),
            sent: Instant::now(),
        }
    }

    /// What an extension's reply says of the lease.
    fn note_extension(&mut self, reply: Result<i64, Error>, sent: Instant) {
        match reply {
            // Another token, or none: the lease ran out.
            Ok(0) => {
                self.lease.lost = true;
                self.count_lost_lease();
            }
            Ok(_) => self.lease.until = after(sent, self.shared.ttl),
            // No answer: the lease may still hold until `until`, and the
            // next extension may confirm it.
            Err(_) => {}
        }
    }

    fn extension_mut(&mut self) -> &mut Option<Extension> {
        self.extension
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The owner's end of a load, in order: writes `write` if Redis still
    /// holds `prior` (no `prior`: Redis was not read, nothing is written)
    /// and the lease held throughout, tells the waiters that the key is
    /// filled, and releases the lock (which also wakes the waiters when no
    /// value was written, so one of them takes over).
    pub(crate) async fn finish(
        mut self,
        store: &Store,
        write: Option<L2Write>,
        prior: Option<&Prior>,
    ) {
        // The body ended while an extension was on its way: its reply says
        // whether the lease held.
        if let Some(extension) = self.extension_mut().take() {
            let reply = extension.reply.await;
            self.note_extension(reply, extension.sent);
        }
        let written = match prior {
            Some(prior) if write.is_some() && self.still_held() => {
                store
                    .write_if_unchanged(&self.storage_key, write, prior)
                    .await
            }
            _ => false,
        };
        if written {
            self.announce(&self.storage_key).await;
        }
        self.armed = false;
        if !self.lease.lost {
            release(
                &self.shared,
                &self.l2,
                &self.storage_key,
                &self.key,
                &self.token,
                !written,
            )
            .await;
        }
    }

    /// Leaves the lock to its lease: for a caller whose release could not
    /// run (the background had no room).
    pub(crate) fn abandon(mut self) {
        self.armed = false;
    }

    /// Whether the lease still holds (it was never found lost, and it was
    /// confirmed recently enough not to have run out); counts the loss once.
    fn still_held(&mut self) -> bool {
        if !self.lease.lost && Instant::now() < self.lease.until {
            return true;
        }
        self.count_lost_lease();
        false
    }

    fn count_lost_lease(&mut self) {
        if std::mem::replace(&mut self.lease.counted, true) {
            return;
        }
        bump(&self.shared.counters.lock_leases_lost);
        if let Some(suppressed) = self.shared.lease_log.admit() {
            tracing::warn!(
                key = %self.storage_key,
                lock_ttl_ms = u64::try_from(self.shared.ttl.as_millis()).unwrap_or(u64::MAX),
                suppressed,
                "the Redis lock's lease was lost while the body ran (the process stalled past `lock_ttl`, or Redis did not answer); its value is not written to Redis"
            );
        }
    }

    /// Tells instances waiting on this lock that the key is filled.
    async fn announce(&self, storage_key: &str) {
        publish_fill(&self.shared, &self.l2, storage_key).await;
    }
}

impl Drop for Lock {
    /// A lock neither finished nor abandoned (its caller's future was
    /// dropped, or its body failed): released in the background, which
    /// wakes the waiters. Not when the lease is known lost (the lock is
    /// another's), nor without room in the background (it lives out its
    /// lease).
    fn drop(&mut self) {
        if !self.armed || self.lease.lost {
            return;
        }
        self.armed = false;
        let shared = Arc::clone(&self.shared);
        let l2 = Arc::clone(&self.l2);
        let storage_key = std::mem::take(&mut self.storage_key);
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        self.shared.background.spawn(async move {
            release(&shared, &l2, &storage_key, &key, &token, true).await;
        });
    }
}

/// Deletes the lock `key` if it still holds `token`; if it did and
/// `wake` is set, publishes the storage key on the "filled" channel so
/// that the waiters re-check and one of them takes the lock at once.
async fn release(
    shared: &Shared,
    l2: &Arc<L2>,
    storage_key: &str,
    key: &str,
    token: &str,
    wake: bool,
) {
    let deleted = l2
        .script::<i64>(&RELEASE, &[key], &[token.as_bytes()])
        .await;
    if wake && matches!(deleted, Ok(1)) {
        publish_fill(shared, l2, storage_key).await;
    }
}

async fn publish_fill(shared: &Shared, l2: &Arc<L2>, storage_key: &str) {
    let _ = l2
        .publish(&fill_channel(&shared.namespace, l2.database()), storage_key)
        .await;
}

/// Local waiters for "filled" messages, by storage key.
#[derive(Default)]
pub(crate) struct Fills {
    waiting: Mutex<HashMap<Box<str>, Waiters>>,
}

/// The wake-up shared by the waiters of one key, and how many there are.
type Waiters = (Arc<Notify>, usize);

/// Registration of one waiter; unregisters on drop.
pub(crate) struct FillWatch<'a> {
    fills: &'a Fills,
    key: Box<str>,
    pub notify: Arc<Notify>,
}

impl Fills {
    pub(crate) fn watch(&self, storage_key: &str) -> FillWatch<'_> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let entry = waiting
            .entry(storage_key.into())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        FillWatch {
            fills: self,
            key: storage_key.into(),
            notify: entry.0.clone(),
        }
    }

    pub(crate) fn notify(&self, storage_key: &str) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((notify, _)) = waiting.get(storage_key) {
            notify.notify_waiters();
        }
    }
}

impl Drop for FillWatch<'_> {
    fn drop(&mut self) {
        let mut waiting = self.fills.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = waiting.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiting.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_cannot_be_rendered_keys() {
        assert_eq!(lock_key("app:user:1"), "{app:user:1} #lock");
        assert!(
            lock_key("x").contains(' '),
            "templates and escaped values never hold a space"
        );
        assert!(fill_channel("app", 0).contains(' '));
    }

    #[tokio::test]
    async fn fill_watches_count_and_clean_up() {
        let fills = Fills::default();
        let first = fills.watch("k");
        let second = fills.watch("k");
        let woken = first.notify.notified();
        fills.notify("k");
        woken.await;
        drop(first);
        assert_eq!(fills.waiting.lock().unwrap().get("k").unwrap().1, 1);
        drop(second);
        assert!(fills.waiting.lock().unwrap().is_empty());
    }
}
