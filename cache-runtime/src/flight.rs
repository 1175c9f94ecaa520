//! Single-flight: concurrent callers of one missing key share one load.
//!
//! The first caller of a missing key becomes the leader; later callers join
//! its flight and wait for its outcome. The leader's guard removes the flight
//! when it completes *or when it is dropped*: if the leader panics or its
//! future is cancelled, its waiters are released without an outcome and one
//! of them takes over as the new leader instead of hanging.
//!
//! Every call of a key missing from L1 goes through here, so the common case
//! (a flight nobody else joins) is kept cheap: the map is split into
//! [`SHARDS`] mutex-guarded shards picked by a fast hash of the key, the key
//! is copied once (into the flight's `Slot`, which the map holds and looks
//! keys up in), and a flight is a `Slot` with a write-once outcome and one
//! [`Notify`], no channel. The leader only wakes anybody when a waiter
//! joined.
//!
//! # Ordering
//!
//! A waiter joins under the shard lock: it finds the flight and sets the
//! slot's `joined` flag before unlocking. The leader ends the flight by
//! removing it under the same lock, and only then reads `joined`. So either
//! the waiter's join happened before the removal (the leader sees `joined`,
//! publishes an outcome, or `None` when it goes away without one, and wakes
//! the waiters), or it came after (the flight is gone, the caller becomes a
//! leader of its own). A waiter registers for the wake-up ([`Notify`]'s
//! `enable`) before it looks at the slot, so a publication between its look
//! and its wait is not lost.
//!
//! # Waiters that join after the leader read Redis
//!
//! Another instance's write reaches this one as a message, which may still
//! be on its way when a call starts after that write returned. If the call
//! joined a flight whose leader read Redis before the write landed and then
//! loaded, it would get a value older than the write. So the leader marks
//! when it sends its read ([`Leader::reading`]) and notes what it found when
//! it goes on to load ([`Leader::noting`]); a waiter that joined after the
//! read reads Redis itself before taking the leader's outcome, and runs its
//! own body when Redis changed meanwhile (`load.rs`).
//!
//! # A load that calls itself
//!
//! The body of a load may call the function again on the same key (or
//! another function sharing the key). That call would join the flight its
//! own task leads and wait for itself forever. So each task notes the loads
//! it runs ([`Flights::loading`], a task-local chain of keys), and a call
//! for a key its task is loading ([`Flights::is_loading`]) takes no flight:
//! the read path runs it without the cache. Only the same task is seen:
//! a body that spawns a task calling its own key, or two loads on different
//! tasks waiting on each other's keys, still wait for each other.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use foldhash::fast::RandomState;
use tokio::sync::Notify;

use crate::epochs::{Epochs, Snapshot};
use crate::value::Outcome;

/// Number of independently locked parts of the flight map.
const SHARDS: usize = 16;

tokio::task_local! {
    /// The innermost load the current task runs.
    static LOADING: Arc<Loading>;
}

/// One load a task runs: which cache's flights, which keys (several for a
/// batch), and the load it runs inside of, if any.
struct Loading {
    flights: usize,
    keys: Box<[Box<str>]>,
    outer: Option<Arc<Loading>>,
}

/// One flight, shared by its leader, its map entry and its waiters.
struct Slot {
    /// The key, the map's only copy of it.
    key: Box<str>,
    /// Set at most once: `Some` is the leader's outcome, `None` means the
    /// leader went away without one. Only set when `joined`.
    outcome: OnceLock<Option<Outcome>>,
    /// Wakes the waiters once `outcome` is set.
    ready: Notify,
    /// A waiter joined. Only set under the shard lock while the flight is in
    /// the map; the leader reads it after removing the flight.
    joined: AtomicBool,
    /// The invalidation epochs when the flight started: a caller that comes
    /// after an invalidation of the key does not join it (read-your-writes).
    started: Snapshot,
    /// The leader has sent its read of Redis: a caller that joins now may
    /// have started after another instance's write that the read missed
    /// (see [`Waiter::joined_after_read`]).
    reading: AtomicBool,
    /// What the leader's read of Redis found (a mark of it), when it found
    /// nothing usable.
    leaders_read: OnceLock<u64>,
}

impl Slot {
    /// Sets the outcome (unless one is set) and wakes every waiter.
    fn publish(&self, outcome: Option<Outcome>) {
        if self.outcome.set(outcome).is_ok() {
            self.ready.notify_waiters();
        }
    }
}

/// A map entry: a flight, looked up by its key.
struct Entry(Arc<Slot>);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

// Hash and equality of the key alone, as `Borrow<str>` requires.
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Entry {}

/// A cache line of its own per shard, so that locking one shard does not
/// slow the others down.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<HashSet<Entry, RandomState>>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashSet<Entry, RandomState>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[derive(Default)]
pub(crate) struct Flights {
    shards: [Shard; SHARDS],
    /// Picks the shard. Seeded apart from the shards' own maps, so that
    /// the keys of one shard still spread over its map's buckets.
    pick: RandomState,
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Waiter(Waiter),
}

impl Flights {
    /// Joins the flight for `key`, starting one if none runs, or if the one
    /// that runs started before an invalidation of the key (or, for a
    /// `tagged` entry, of any tag) seen in `epochs`: its load may return the
    /// value that invalidation replaced, which a call starting after the
    /// invalidation must never receive. The new flight takes the old one's
    /// place in the map; the old leader finishes for the callers that
    /// joined it before.
    pub(crate) fn join(&self, key: &str, epochs: &Epochs, tagged: bool) -> Role<'_> {
        let shard = self.shard_of(key);
        let mut running = self.shards[shard].lock();
        let started = epochs.snapshot(key);
        if let Some(Entry(slot)) = running.get(key)
            && epochs.unchanged(key, slot.started, tagged)
        {
            slot.joined.store(true, Ordering::Relaxed);
            let late = slot.reading.load(Ordering::SeqCst);
            return Role::Waiter(Waiter {
                slot: Arc::clone(slot),
                late,
            });
        }
        let slot = Arc::new(Slot {
            key: key.into(),
            outcome: OnceLock::new(),
            ready: Notify::new(),
            joined: AtomicBool::new(false),
            started,
            reading: AtomicBool::new(false),
            leaders_read: OnceLock::new(),
        });
        // Replaces a flight that started before an invalidation, if any.
        running.replace(Entry(Arc::clone(&slot)));
        drop(running);
        Role::Leader(Leader {
            flights: self,
            shard,
            slot,
            removed: false,
        })
    }

    /// Whether the current task runs a load of `key` in this cache: a call
    /// for `key` now comes from inside that load's body, and joining its
    /// flight would wait for itself.
    pub(crate) fn is_loading(&self, key: &str) -> bool {
        let this = self.identity();
        LOADING
            .try_with(|innermost| {
                let mut loading = Some(&**innermost);
                while let Some(load) = loading {
                    if load.flights == this && load.keys.iter().any(|loaded| **loaded == *key) {
                        return true;
                    }
                    loading = load.outer.as_deref();
                }
                false
            })
            .unwrap_or(false)
    }

    /// `body`, a load of `key`, run as one for [`is_loading`]: inside it
    /// (in this task), `key` is being loaded.
    ///
    /// [`is_loading`]: Flights::is_loading
    pub(crate) fn loading<F: Future>(
        &self,
        key: &str,
        body: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        self.loading_all(&[key], body)
    }

    /// `body`, one load of all of `keys` (a batch), run as one for
    /// [`is_loading`].
    ///
    /// [`is_loading`]: Flights::is_loading
    pub(crate) fn loading_all<F: Future>(
        &self,
        keys: &[&str],
        body: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        let load = Loading {
            flights: self.identity(),
            keys: keys.iter().copied().map(Box::from).collect(),
            outer: LOADING.try_with(Arc::clone).ok(),
        };
        LOADING.scope(Arc::new(load), body)
    }

    /// Tells this cache's flights from another's (the address is stable:
    /// the flights live in the engine's `Arc`).
    fn identity(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn shard_of(&self, key: &str) -> usize {
        // The top bits: the best mixed ones of foldhash's output.
        (self.pick.hash_one(key) >> (u64::BITS - SHARDS.trailing_zeros())) as usize
    }

    /// The keys of the loads running now whose key starts with `prefix`.
    pub(crate) fn keys_starting_with(&self, prefix: &str) -> Vec<Box<str>> {
        let mut keys = Vec::new();
        for shard in &self.shards {
            let running = shard.lock();
            keys.extend(
                running
                    .iter()
                    .filter(|Entry(slot)| slot.key.starts_with(prefix))
                    .map(|Entry(slot)| slot.key.clone()),
            );
        }
        keys
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    #[cfg(test)]
    fn clear(&self) {
        self.shards.iter().for_each(|shard| shard.lock().clear());
    }
}

/// Held by the caller that runs the load.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    shard: usize,
    slot: Arc<Slot>,
    /// The flight is out of the map (by this guard): no waiter can join.
    removed: bool,
}

impl Leader<'_> {
    /// The leader is about to read Redis: callers joining from now on may
    /// have started after a write that read misses.
    pub(crate) fn reading(&self) {
        self.slot.reading.store(true, Ordering::SeqCst);
    }

    /// Notes what the leader's read of Redis found, when nothing usable and
    /// the leader goes on to load (a mark of it, for late waiters to compare
    /// theirs with), and hands it back.
    pub(crate) fn noting<P: Marked>(&self, found: P) -> P {
        let _ = self.slot.leaders_read.set(found.mark());
        found
    }

    /// Hands the outcome to every waiter and ends the flight.
    pub(crate) fn complete(self, outcome: Outcome) {
        self.complete_with(|| outcome);
    }

    /// Ends the flight and hands the outcome `make` builds to every waiter;
    /// `make` runs only if a waiter joined, so a caller saves building
    /// (cloning) an outcome nobody reads.
    ///
    /// Race-free: the flight leaves the map (under the shard lock) before
    /// the leader looks for waiters, so no waiter can join unseen. If `make`
    /// panics, the waiters are released without an outcome and take over.
    pub(crate) fn complete_with(mut self, make: impl FnOnce() -> Outcome) {
        if self.remove() {
            self.slot.publish(Some(make()));
        }
        // Drop finds the flight removed and its outcome set.
    }

    /// Takes the flight out of the map, once; whether a waiter joined it.
    fn remove(&mut self) -> bool {
        if !self.removed {
            self.removed = true;
            let mut running = self.flights.shards[self.shard].lock();
            // Only our own flight: a waiter may already have started a new
            // one (it cannot while ours is in the map, but the map's
            // contents are not this guard's to assume).
            let key: &str = &self.slot.key;
            if running
                .get(key)
                .is_some_and(|Entry(slot)| Arc::ptr_eq(slot, &self.slot))
            {
                running.remove(key);
            }
        }
        // The shard lock orders every join of this flight before this load.
        self.slot.joined.load(Ordering::Relaxed)
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.remove() {
            // A no-op after `complete`; otherwise the waiters learn that the
            // leader went away and one of them takes over.
            self.slot.publish(None);
        }
    }
}

/// What a read of Redis found, reduced to a number that tells two
/// different findings apart (for [`Leader::noting`]).
pub(crate) trait Marked {
    fn mark(&self) -> u64;
}

/// Held by a caller waiting for a leader.
pub(crate) struct Waiter {
    slot: Arc<Slot>,
    /// Joined after the leader sent its read of Redis.
    late: bool,
}

impl Waiter {
    /// For a waiter that joined after the leader sent its read of Redis,
    /// when that read found nothing usable and the leader loaded: the mark
    /// of what it found. Such a waiter may have started after another
    /// instance's write that the leader's read missed, and whose message
    /// has not arrived yet: before taking the leader's outcome it reads
    /// Redis itself and compares (see `load.rs`).
    ///
    /// A leader whose read found an entry is not second-guessed: a write
    /// that slipped in between Redis answering and a waiter joining is a
    /// round trip's window, where a load's is the body's whole run.
    pub(crate) fn joined_after_read(&self) -> Option<u64> {
        if self.late {
            self.slot.leaders_read.get().copied()
        } else {
            None
        }
    }

    /// The leader's outcome, or `None` if the leader went away without one.
    pub(crate) async fn outcome(&self) -> Option<Outcome> {
        let slot = &self.slot;
        let mut ready = pin!(slot.ready.notified());
        // Registered before the look at the slot: a `publish` after the
        // look still wakes us.
        ready.as_mut().enable();
        loop {
            if let Some(outcome) = slot.outcome.get() {
                return outcome.clone();
            }
            ready.as_mut().await;
            // `notify_waiters` only follows a set, so this is set; loop
            // rather than assume it.
            ready.set(slot.ready.notified());
            ready.as_mut().enable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epochs no test invalidates (but the one about invalidations).
    static EPOCHS: std::sync::LazyLock<Epochs> = std::sync::LazyLock::new(Epochs::default);

    #[test]
    fn a_caller_after_an_invalidation_does_not_join_an_older_flight() {
        let flights = Flights::default();
        let epochs = Epochs::default();
        let Role::Leader(before) = flights.join("k", &epochs, false) else {
            panic!("first leads")
        };
        assert!(matches!(flights.join("k", &epochs, false), Role::Waiter(_)));
        epochs.bump_key("k");
        let Role::Leader(after) = flights.join("k", &epochs, false) else {
            panic!("a flight from before the invalidation is not joined")
        };
        assert!(
            matches!(flights.join("k", &epochs, false), Role::Waiter(_)),
            "the new flight is joined"
        );
        assert_eq!(flights.keys_starting_with("k"), [Box::from("k")]);
        assert!(flights.keys_starting_with("j").is_empty());
        before.complete(Outcome::Absent);
        assert_eq!(flights.len(), 1, "the old leader leaves the new flight");
        drop(after);
        assert_eq!(flights.len(), 0);
        // Tag invalidations count for tagged entries only.
        let Role::Leader(_untagged) = flights.join("u", &epochs, false) else {
            panic!()
        };
        epochs.bump_tags();
        assert!(matches!(flights.join("u", &epochs, false), Role::Waiter(_)));
        assert!(matches!(flights.join("u", &epochs, true), Role::Leader(_)));
    }

    struct Found(u64);

    impl Marked for Found {
        fn mark(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn only_waiters_that_joined_after_a_missing_read_recheck() {
        let flights = Flights::default();
        let leader = lead(&flights);
        let early = wait(&flights);
        leader.reading();
        let during = wait(&flights);
        let Found(mark) = leader.noting(Found(42));
        assert_eq!(mark, 42);
        let after = wait(&flights);
        assert_eq!(early.joined_after_read(), None, "joined before the read");
        assert_eq!(during.joined_after_read(), Some(42));
        assert_eq!(after.joined_after_read(), Some(42));
        // A leader whose read found an entry notes nothing.
        drop(leader);
        let hit = lead(&flights);
        hit.reading();
        assert_eq!(wait(&flights).joined_after_read(), None);
    }

    /// Joins "k" expecting to lead its flight.
    fn lead(flights: &Flights) -> Leader<'_> {
        match flights.join("k", &EPOCHS, false) {
            Role::Leader(leader) => leader,
            Role::Waiter(_) => panic!("expected to lead"),
        }
    }

    /// Joins "k" expecting to wait for a running flight.
    fn wait(flights: &Flights) -> Waiter {
        match flights.join("k", &EPOCHS, false) {
            Role::Waiter(waiter) => waiter,
            Role::Leader(_) => panic!("expected to wait"),
        }
    }
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn value_of(outcome: Option<Outcome>) -> u32 {
        match outcome {
            Some(Outcome::Value(v)) => *v.downcast_ref::<u32>().expect("a u32"),
            _ => panic!("expected a value"),
        }
    }

    #[tokio::test]
    async fn a_task_sees_the_loads_it_runs_and_only_those() {
        let flights = Flights::default();
        let other = Flights::default();
        assert!(!flights.is_loading("k"));
        flights
            .loading("k", async {
                assert!(flights.is_loading("k"));
                assert!(!flights.is_loading("j"), "another key");
                assert!(!other.is_loading("k"), "another cache");
                flights
                    .loading("j", async {
                        assert!(flights.is_loading("j") && flights.is_loading("k"));
                    })
                    .await;
                assert!(!flights.is_loading("j"), "the inner load ended");
                let elsewhere = tokio::spawn(async {
                    // Another task: its calls may wait for this one's.
                    LOADING.try_with(|_| ()).is_ok()
                });
                assert!(!elsewhere.await.unwrap());
            })
            .await;
        assert!(!flights.is_loading("k"), "the load ended");
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome() {
        let flights = Flights::default();
        let leader = lead(&flights);
        let waiter = wait(&flights);
        leader.complete(Outcome::Value(Arc::new(5u32)));
        assert_eq!(flights.len(), 0);
        assert_eq!(value_of(waiter.outcome().await), 5);
    }

    #[tokio::test]
    async fn a_waiter_waiting_before_completion_is_woken() {
        let flights = Arc::new(Flights::default());
        let leader = lead(&flights);
        let waiter = wait(&flights);
        let waiting = tokio::spawn(async move { waiter.outcome().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.complete(Outcome::Absent);
        assert!(matches!(waiting.await.unwrap(), Some(Outcome::Absent)));
    }

    #[tokio::test]
    async fn keys_fly_apart() {
        let flights = Flights::default();
        let leaders: Vec<_> = (0..100)
            .map(|i| match flights.join(&format!("k{i}"), &EPOCHS, false) {
                Role::Leader(leader) => leader,
                Role::Waiter(_) => panic!("a new key leads"),
            })
            .collect();
        assert_eq!(flights.len(), 100);
        drop(leaders);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters() {
        let flights = Flights::default();
        let leader = lead(&flights);
        let waiter = wait(&flights);
        drop(leader);
        assert!(waiter.outcome().await.is_none());
        assert!(
            matches!(flights.join("k", &EPOCHS, false), Role::Leader(_)),
            "a waiter can take over"
        );
    }

    #[tokio::test]
    async fn a_cancelled_leader_releases_a_waiting_waiter() {
        let flights = Arc::new(Flights::default());
        let (joined, joined_rx) = tokio::sync::oneshot::channel();
        let leading = tokio::spawn({
            let flights = Arc::clone(&flights);
            async move {
                let _leader = lead(&flights);
                joined.send(()).unwrap();
                std::future::pending::<()>().await;
            }
        });
        joined_rx.await.unwrap();
        let waiter = wait(&flights);
        let waiting = tokio::spawn(async move { waiter.outcome().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        leading.abort();
        assert!(waiting.await.unwrap().is_none());
        let leader = lead(&flights);
        let waiter = wait(&flights);
        leader.complete(Outcome::Value(Arc::new(7u32)));
        assert_eq!(value_of(waiter.outcome().await), 7);
    }

    #[tokio::test]
    async fn an_old_leader_does_not_remove_a_new_flight() {
        let flights = Flights::default();
        let first = lead(&flights);
        // Simulate the first flight being removed and a new one starting.
        flights.clear();
        let second = lead(&flights);
        let waiter = wait(&flights);
        drop(first);
        assert_eq!(flights.len(), 1);
        assert!(matches!(flights.join("k", &EPOCHS, false), Role::Waiter(_)));
        second.complete(Outcome::Value(Arc::new(2u32)));
        assert_eq!(value_of(waiter.outcome().await), 2);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn complete_with_builds_the_outcome_only_for_waiters() {
        let flights = Flights::default();
        let alone = lead(&flights);
        alone.complete_with(|| panic!("nobody waits: not built"));
        assert_eq!(flights.len(), 0);

        let leader = lead(&flights);
        let waiter = wait(&flights);
        let built = AtomicUsize::new(0);
        leader.complete_with(|| {
            built.fetch_add(1, Ordering::Relaxed);
            Outcome::Value(Arc::new(9u32))
        });
        assert_eq!(built.load(Ordering::Relaxed), 1);
        assert_eq!(flights.len(), 0);
        assert_eq!(value_of(waiter.outcome().await), 9);
    }

    #[tokio::test]
    async fn a_panic_in_complete_with_releases_waiters() {
        let flights = Flights::default();
        let leader = lead(&flights);
        let waiter = wait(&flights);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            leader.complete_with(|| panic!("building failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(flights.len(), 0);
        assert!(waiter.outcome().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_waiters_get_the_value() {
        let flights = Arc::new(Flights::default());
        let leader = lead(&flights);
        let waiting: Vec<_> = (0..256)
            .map(|_| {
                let waiter = wait(&flights);
                tokio::spawn(async move { waiter.outcome().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.complete(Outcome::Value(Arc::new(3u32)));
        for waiting in waiting {
            assert_eq!(value_of(waiting.await.unwrap()), 3);
        }
        assert_eq!(flights.len(), 0);
    }

    /// Joins racing completions from other threads: every caller either
    /// leads, gets the value, or is released and retries; none hangs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_joining_right_before_completion_never_hangs() {
        // Leaked: the completing thread borrows it for 'static.
        let flights: &'static Flights = Box::leak(Box::default());
        for round in 0..2_000u32 {
            let leader = lead(flights);
            let joining: Vec<_> = (0..3)
                .map(|_| {
                    tokio::spawn(async move {
                        loop {
                            match flights.join("k", &EPOCHS, false) {
                                // Joined after the end: leads (and ends) its own.
                                Role::Leader(_) => return None,
                                Role::Waiter(waiter) => {
                                    if let Some(outcome) = waiter.outcome().await {
                                        return Some(value_of(Some(outcome)));
                                    }
                                    // Released without an outcome: retry.
                                }
                            }
                        }
                    })
                })
                .collect();
            // Complete (or drop) on another thread, racing the joins.
            let completing = tokio::task::spawn_blocking(move || match round % 3 {
                0 => leader.complete(Outcome::Value(Arc::new(round))),
                1 => leader.complete_with(|| Outcome::Value(Arc::new(round))),
                _ => drop(leader),
            });
            for joining in joining {
                let got = tokio::time::timeout(Duration::from_secs(5), joining)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a waiter hangs"))
                    .unwrap();
                if let Some(value) = got {
                    assert_eq!(value, round);
                    assert_ne!(round % 3, 2, "a dropped leader hands out no value");
                }
            }
            completing.await.unwrap();
            assert_eq!(flights.len(), 0);
        }
    }
}
