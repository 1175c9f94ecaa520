//! `lock`: one load per key in the whole fleet.
//!
//! After the in-process single-flight, the one local caller of a missing key
//! takes a lock in Redis, `SET <storage key> #lock <token> NX PX <lock ttl>`.
//! The key holds a space, which no rendered template can, so it never
//! collides with a cached value.
//!
//! - The owner runs the body; while it runs the lock's TTL is extended
//!   every third of it, so a slow load does not let a second loader in. It
//!   stores the value, publishes the storage key on `<namespace> #filled`,
//!   and releases the lock with a compare-and-delete script (only its own
//!   token is deleted).
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

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::{after, millis};
use crate::l2::{L2, Script};
use crate::site::Site;
use crate::stats::{Counters, bump};

/// How often a waiting instance re-checks Redis when no message came.
const RECHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The lock feature of one cache: its settings and the local waiters for
/// other instances' loads.
pub(crate) struct Locks {
    fills: Fills,
    /// How long a lock lives without being extended.
    ttl: Duration,
    /// How long a caller waits for another instance's load.
    wait: Duration,
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
    pub(crate) fn new(ttl: Duration, wait: Duration) -> Locks {
        Locks {
            fills: Fills::default(),
            ttl,
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
        try_lock(l2, storage_key, self.ttl).await
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
        counters: &Counters,
        site: &'static Site,
        storage_key: &str,
        mut recheck: impl FnMut() -> F,
    ) -> Locked<T> {
        // Listen before trying, so a fill right after our attempt is heard.
        let watch = self.fills.watch(storage_key);
        let mut filled = pin!(watch.notify.notified());
        filled.as_mut().enable();
        match try_lock(l2, storage_key, self.ttl).await {
            Attempt::Acquired(lock) => {
                bump(&counters.lock_acquired);
                return Locked::Owner(lock);
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
            // The owner may have failed (no value) or died (lock expired).
            match try_lock(l2, storage_key, self.ttl).await {
                Attempt::Acquired(lock) => {
                    bump(&counters.lock_acquired);
                    return Locked::Owner(lock);
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

/// The lock key of a stored key.
pub(crate) fn lock_key(storage_key: &str) -> String {
    format!("{storage_key} #lock")
}

/// The channel "filled" messages go to (scoped to the database, as pub/sub
/// ignores databases).
pub(crate) fn fill_channel(namespace: &str, database: i64) -> String {
    format!("{namespace} #filled db{database}")
}

/// A lock this process holds.
pub(crate) struct Lock {
    l2: Arc<L2>,
    key: String,
    token: String,
    ttl: Duration,
}

/// What trying the lock gave.
pub(crate) enum Attempt {
    Acquired(Lock),
    /// Another caller holds it.
    Held,
    /// Redis did not answer: go on without a lock.
    Unavailable,
}

async fn try_lock(l2: &Arc<L2>, storage_key: &str, ttl: Duration) -> Attempt {
    let key = lock_key(storage_key);
    // Unique enough across processes: random 128 bits.
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    match l2.set_if_absent(&key, &token, ttl).await {
        Ok(true) => Attempt::Acquired(Lock {
            l2: l2.clone(),
            key,
            token,
            ttl,
        }),
        Ok(false) => Attempt::Held,
        Err(_) => Attempt::Unavailable,
    }
}

impl Lock {
    /// Runs `body`, extending the lock every third of its TTL until it ends.
    ///
    /// The body's output is returned as soon as it is ready, never held
    /// across the extension's `.await` (it may be a `!Send` error).
    pub(crate) async fn hold_while<T>(&self, body: impl Future<Output = T>) -> T {
        let mut body = std::pin::pin!(body);
        let period = self.ttl / 3;
        loop {
            if let Ok(output) = tokio::time::timeout(period, &mut body).await {
                return output;
            }
            let ttl_ms = millis(self.ttl).to_string();
            let _ = self
                .l2
                .script::<i64>(
                    &EXTEND,
                    &[&self.key],
                    &[self.token.as_bytes(), ttl_ms.as_bytes()],
                )
                .await;
        }
    }

    /// Deletes the lock if it is still ours.
    pub(crate) async fn release(self) {
        let _ = self
            .l2
            .script::<i64>(&RELEASE, &[&self.key], &[self.token.as_bytes()])
            .await;
    }

    /// Deletes the lock if it is still ours, in a task of its own: for a
    /// caller that must return without another `.await`. Without a Tokio
    /// runtime the lock simply expires.
    pub(crate) fn release_soon(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.release());
        }
    }

    /// Tells instances waiting on this lock that the key is filled.
    pub(crate) async fn announce_fill(&self, namespace: &str, storage_key: &str) {
        let _ = self
            .l2
            .publish(&fill_channel(namespace, self.l2.database()), storage_key)
            .await;
    }
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
        assert_eq!(lock_key("app:user:1"), "app:user:1 #lock");
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
