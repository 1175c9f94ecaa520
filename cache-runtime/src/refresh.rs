//! Background refreshes for `early` and `stale`: at most one per key per
//! process, throttled after a failure.
//!
//! A refresh is marked running until it ends or its hard deadline
//! (`refresh_timeout`) passes, so a stuck body cannot block refreshes of its
//! key forever. After a failure the key is left alone for
//! `refresh_retry_after`; callers meanwhile get the stale value (fail-safe)
//! without starting a refresh per call.
//!
//! Memory: a record per key is kept only while it means something (a
//! refresh running, a failure within its `refresh_retry_after`). Records
//! past that are swept once the map holds [`SWEEP_FROM`] of them (at most
//! one sweep per [`SWEEP_EVERY`], each a pass over the map), and failures
//! stop being recorded at [`MAX_RECORDS`]: a key whose failure was not
//! recorded may be refreshed again before its pause, which costs a body
//! run, never a wrong value.
//!
//! A refresh itself ([`Refreshes::run`]): with `lock`, only the instance
//! that wins the lock refreshes, extending its lease while the body runs
//! and writing only if the lease held (see `lock.rs`); a newer value
//! another instance already wrote to Redis is taken instead of running the
//! body; otherwise the body runs under `refresh_timeout` and its value is
//! stored as a load's is (conditional Redis write, epoch-guarded L1
//! insert). The refresh runs in a task of its own, so its Redis write,
//! "filled" message and release are awaited there, in that order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::clock::after;
use crate::lock::{Attempt, Locks};
use crate::logging::Throttle;
use crate::shape::{CacheValue, Shape};
use crate::site::{Site, load_span};
use crate::stats::bump;
use crate::store::{Context, Prior, Read, Store};
use crate::tags::Tags;
use crate::value::{AnyValue, Outcome};

enum State {
    Running { id: u64, deadline: Instant },
    Failed { retry_at: Instant },
}

impl State {
    /// Whether the record still means something at `now`: a refresh past
    /// its deadline was written off, a failure past its pause is forgotten.
    fn is_live(&self, now: Instant) -> bool {
        match self {
            State::Running { deadline, .. } => *deadline > now,
            State::Failed { retry_at } => *retry_at > now,
        }
    }
}

/// Records past which failures are no longer recorded (each holds the key:
/// about 100 bytes plus the key's length).
const MAX_RECORDS: usize = 10_000;
/// Below this many records, none are swept.
const SWEEP_FROM: usize = 1_024;
/// Longest time between two sweeps of a map past [`SWEEP_FROM`] (shorter
/// when `refresh_retry_after` is).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The records of one cache, by key.
struct Records {
    states: HashMap<Box<str>, State>,
    /// No sweep before this: a sweep is a pass over the whole map.
    next_sweep: Instant,
}

impl Records {
    /// Drops the records that no longer mean anything, when the map is
    /// large enough to matter and the last sweep is `every` old.
    fn sweep(&mut self, now: Instant, every: Duration) {
        if self.states.len() < SWEEP_FROM || now < self.next_sweep {
            return;
        }
        self.states.retain(|_, state| state.is_live(now));
        self.next_sweep = after(now, every);
    }
}

pub(crate) struct Refreshes {
    keys: Mutex<Records>,
    next_id: std::sync::atomic::AtomicU64,
    /// Hard deadline of one refresh.
    timeout: Duration,
    /// Pause after a failed refresh of a key.
    retry_after: Duration,
    failure_log: Throttle,
}

/// Why no refresh was started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// One is running for this key.
    Running,
    /// The last one failed recently.
    FailedRecently,
}

/// Held by a running refresh; clears the running mark on drop, leaving a
/// failure mark if `failed` was called.
pub(crate) struct RefreshTicket {
    refreshes: Arc<Refreshes>,
    key: Box<str>,
    id: u64,
    failed: bool,
}

impl Refreshes {
    pub(crate) fn new(timeout: Duration, retry_after: Duration) -> Self {
        Refreshes {
            keys: Mutex::new(Records {
                states: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            next_id: Default::default(),
            timeout,
            retry_after,
            failure_log: Throttle::default(),
        }
    }

    /// Marks `key` as refreshing unless a refresh runs or failed recently.
    pub(crate) fn begin(self: &Arc<Self>, key: &str) -> Result<RefreshTicket, Refused> {
        let hard_timeout = self.timeout;
        let now = Instant::now();
        let mut records = self.records();
        records.sweep(now, self.sweep_every());
        let keys = &mut records.states;
        match keys.get(key) {
            Some(State::Running { deadline, .. }) if *deadline > now => {
                return Err(Refused::Running);
            }
            Some(State::Failed { retry_at }) if *retry_at > now => {
                return Err(Refused::FailedRecently);
            }
            _ => {}
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        keys.insert(
            key.into(),
            State::Running {
                id,
                deadline: after(now, hard_timeout),
            },
        );
        Ok(RefreshTicket {
            refreshes: self.clone(),
            key: key.into(),
            id,
            failed: false,
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep_every(&self) -> Duration {
        self.retry_after.min(SWEEP_EVERY)
    }

    /// Forgets a failure (a fresh value arrived by another way).
    pub(crate) fn clear_failure(&self, key: &str) {
        let keys = &mut self.records().states;
        if matches!(keys.get(key), Some(State::Failed { .. })) {
            keys.remove(key);
        }
    }

    /// The keys whose background refresh runs now and starts with `prefix`.
    pub(crate) fn running_starting_with(&self, prefix: &str) -> Vec<Box<str>> {
        let now = Instant::now();
        self.records()
            .states
            .iter()
            .filter(|(key, state)| {
                key.starts_with(prefix)
                    && matches!(state, State::Running { .. })
                    && state.is_live(now)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// How many keys have a record now (running or failed).
    pub(crate) fn len(&self) -> usize {
        self.records().states.len()
    }

    /// One background refresh of `key`, whose L1 copy was written at
    /// `seen_written_at_ms`. Returns false when the refresh failed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run<R, M: Shape<R>>(
        &self,
        store: &Store,
        tags: &Tags,
        locks: &Locks,
        site: &'static Site,
        key: &str,
        tag_names: &[&str],
        seen_written_at_ms: u64,
        body: impl Future<Output = R>,
        caller: &tracing::Span,
    ) -> bool {
        let storage_key = store.storage_key(key);
        let context = tags.context(store, key, tag_names).await;
        let mut lock = None;
        let mut prior = None;
        if let Some(l2) = store.l2() {
            if site.lock {
                match locks.try_lock(l2, &storage_key).await {
                    Attempt::Acquired(acquired) => lock = Some(acquired),
                    // Another instance refreshes this key.
                    Attempt::Held => return true,
                    Attempt::Unavailable => {}
                }
            }
            match self
                .take_newer_from_l2::<M::Value>(
                    store,
                    tags,
                    site,
                    key,
                    &storage_key,
                    seen_written_at_ms,
                    &context,
                )
                .await
            {
                Newer::Taken => {
                    if let Some(lock) = lock {
                        lock.finish(store, None, None).await;
                    }
                    return true;
                }
                Newer::NotThere(seen) => prior = seen,
            }
        }
        bump(&store.counters().loads);
        let span = load_span(site, true);
        span.follows_from(caller);
        let started = Instant::now();
        // The lease is extended while the body runs, as a load's is.
        let body = tokio::time::timeout(self.timeout, body.instrument(span.clone()));
        let finished = async {
            match &mut lock {
                Some(lock) => lock.hold_while(body).await,
                None => body.await,
            }
        };
        // What the body returned is stored or dropped within this
        // statement: it is never held across an `.await` (it need not be
        // `Send`), only the `Served` part is.
        let served = match finished.await {
            Ok(returned) => {
                let took = started.elapsed();
                store.counters().loaded(site, took);
                match span
                    .in_scope(|| store.store_loaded::<R, M>(site, key, &context, returned, took))
                {
                    Ok(served) => {
                        span.record("outcome", served.outcome.name());
                        Some(served)
                    }
                    Err(_failed) => {
                        store.counters().function_load_failed(site);
                        span.record("outcome", Outcome::Failed.name());
                        None
                    }
                }
            }
            Err(_elapsed) => {
                // A body cut off by the timeout is sampled too: it ran that
                // long.
                store.counters().loaded(site, started.elapsed());
                span.record("outcome", "timeout");
                None
            }
        };
        let succeeded = served.is_some();
        // Write, announce, release: this task is itself off every caller's
        // path.
        let write = served.and_then(|served| served.l2_write);
        match lock {
            Some(lock) => lock.finish(store, write, prior.as_ref()).await,
            None => {
                if let Some(prior) = &prior {
                    store.write_if_unchanged(&storage_key, write, prior).await;
                }
            }
        }
        if succeeded {
            self.clear_failure(key);
        } else {
            bump(&store.counters().refresh_errors);
            if let Some(suppressed) = self.failure_log.admit() {
                tracing::warn!(
                    function = site.function,
                    template = site.template,
                    suppressed,
                    "background refresh failed (the body returned Err or ran past refresh_timeout); serving the stale value meanwhile"
                );
            }
        }
        succeeded
    }

    /// Fills L1 from Redis when Redis holds a fresh value written after the
    /// one this instance has; otherwise says what Redis held.
    #[allow(clippy::too_many_arguments)]
    async fn take_newer_from_l2<V: CacheValue>(
        &self,
        store: &Store,
        tags: &Tags,
        site: &'static Site,
        key: &str,
        storage_key: &str,
        seen_written_at_ms: u64,
        context: &Context,
    ) -> Newer {
        let probe = tags.probe(store, context);
        let found = match store.read::<V>(site, storage_key, probe.keys()).await {
            Read::Entry(found) => found,
            Read::Unusable(prior) => return Newer::NotThere(Some(prior)),
            Read::Unavailable => return Newer::NotThere(None),
        };
        if found.decoded.written_at_ms <= seen_written_at_ms
            || found.fresh.is_zero()
            || !tags
                .still_current(store, &found.decoded.tags, &probe, &found.along)
                .await
        {
            return Newer::NotThere(Some(found.prior()));
        }
        let timing = found.timing(context.tags.clone());
        store.keep(
            site,
            key,
            found.decoded.value.map(|v| Arc::new(v) as AnyValue),
            &timing,
            found.bytes.len(),
            context.snapshot,
        );
        self.clear_failure(key);
        Newer::Taken
    }
}

/// What a refresh found in Redis.
enum Newer {
    /// A newer value, now in L1.
    Taken,
    /// No newer value; what Redis held, if it answered.
    NotThere(Option<Prior>),
}

impl RefreshTicket {
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for RefreshTicket {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut records = self.refreshes.records();
        let keys = &mut records.states;
        if !matches!(keys.get(&self.key), Some(State::Running { id, .. }) if *id == self.id) {
            return; // Timed out and replaced by a newer refresh (or swept).
        }
        keys.remove(&self.key);
        if self.failed {
            records.sweep(now, self.refreshes.sweep_every());
            if records.states.len() < MAX_RECORDS {
                let retry_at = after(now, self.refreshes.retry_after);
                records
                    .states
                    .insert(self.key.clone(), State::Failed { retry_at });
            }
        }
    }
}

/// XFetch (Vattani et al., VLDB 2015): refresh when
/// `now - delta * beta * ln(rand()) >= expiry`, i.e. with a probability that
/// rises as expiry nears, faster for values that took long to compute.
/// Times in any one unit (here: nanoseconds).
pub(crate) fn xfetch_due(now: u64, fresh_until: u64, delta: u64, beta: f64) -> bool {
    // 1 - f64() is in (0, 1], so ln is finite and <= 0.
    let gap = delta as f64 * beta * -(1.0 - fastrand::f64()).ln();
    now as f64 + gap >= fresh_until as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_timeouts_saturate() {
        let refreshes = Arc::new(Refreshes::new(Duration::MAX, Duration::MAX));
        let mut ticket = refreshes.begin("k").unwrap();
        assert_eq!(refreshes.begin("k").err(), Some(Refused::Running));
        ticket.failed();
        drop(ticket);
        assert_eq!(refreshes.begin("k").err(), Some(Refused::FailedRecently));
    }

    #[test]
    fn one_refresh_per_key_then_throttled_after_failure() {
        let refreshes = Arc::new(Refreshes::new(
            Duration::from_secs(10),
            Duration::from_millis(50),
        ));
        let mut ticket = refreshes.begin("k").unwrap();
        assert_eq!(refreshes.begin("k").err(), Some(Refused::Running));
        assert!(refreshes.begin("other").is_ok());
        ticket.failed();
        drop(ticket);
        assert_eq!(refreshes.begin("k").err(), Some(Refused::FailedRecently));
        std::thread::sleep(Duration::from_millis(60));
        let ticket = refreshes.begin("k").unwrap();
        drop(ticket);
        assert!(refreshes.begin("k").is_ok());
    }

    #[test]
    fn a_stuck_refresh_is_written_off_after_its_deadline() {
        let refreshes = Arc::new(Refreshes::new(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ));
        let stuck = refreshes.begin("k").unwrap();
        std::thread::sleep(Duration::from_millis(220));
        let newer = refreshes.begin("k").expect("deadline passed");
        drop(stuck); // must not clear the newer one's mark
        // The newer one has not passed its own deadline yet.
        assert_eq!(refreshes.begin("k").err(), Some(Refused::Running));
        drop(newer);
    }

    fn fail(refreshes: &Arc<Refreshes>, key: &str) {
        let mut ticket = refreshes.begin(key).expect("no record yet");
        ticket.failed();
    }

    /// A failure record is worthless past its pause: one per distinct key
    /// that ever failed used to stay until that key was refreshed again.
    #[test]
    fn failure_records_past_their_pause_are_swept() {
        let refreshes = Arc::new(Refreshes::new(
            Duration::from_secs(10),
            Duration::from_millis(200),
        ));
        for round in 0..5 {
            for i in 0..3_000 {
                fail(&refreshes, &format!("round{round}:key{i}"));
            }
            assert_eq!(
                refreshes.begin(&format!("round{round}:key2999")).err(),
                Some(Refused::FailedRecently),
                "a live failure is kept"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        // Without sweeping: 15 000. Each round's records expire before the
        // next round, whose first failure sweeps them.
        assert!(refreshes.len() <= 3_000, "{} records", refreshes.len());
    }

    /// However many distinct keys fail within one pause, the map stays
    /// bounded; a key past the bound is not throttled (refreshed again).
    #[test]
    fn failure_records_are_capped() {
        let refreshes = Arc::new(Refreshes::new(
            Duration::from_secs(10),
            Duration::from_secs(3600),
        ));
        for i in 0..MAX_RECORDS + 500 {
            fail(&refreshes, &format!("key{i}"));
        }
        assert_eq!(refreshes.len(), MAX_RECORDS);
        assert_eq!(refreshes.begin("key0").err(), Some(Refused::FailedRecently));
        let past_the_cap = format!("key{}", MAX_RECORDS + 100);
        assert!(refreshes.begin(&past_the_cap).is_ok());
    }

    #[test]
    fn xfetch_is_rare_far_from_expiry_and_certain_past_it() {
        let delta = 100; // a 100-unit load
        let far = (0..10_000)
            .filter(|_| xfetch_due(0, 100_000, delta, 1.0))
            .count();
        assert!(far < 5, "{far} refreshes 1000 loads before expiry");
        let near = (0..10_000)
            .filter(|_| xfetch_due(99_900, 100_000, delta, 1.0))
            .count();
        assert!(
            (3_000..4_500).contains(&near),
            "P = e^-1 one load before expiry: {near}"
        );
        assert!(xfetch_due(100_000, 100_000, delta, 1.0));
        let eager = (0..10_000)
            .filter(|_| xfetch_due(99_900, 100_000, delta, 3.0))
            .count();
        assert!(eager > near, "a larger beta refreshes earlier");
    }
}
