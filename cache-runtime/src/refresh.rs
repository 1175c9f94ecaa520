//! Background refreshes for `early` and `stale`: at most one per key per
//! process, throttled after a failure.
//!
//! A refresh is marked running until it ends or its hard deadline
//! (`refresh_timeout`) passes, so a stuck body cannot block refreshes of its
//! key forever. After a failure the key is left alone for
//! `refresh_retry_after`; callers meanwhile get the stale value (fail-safe)
//! without starting a refresh per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

enum State {
    Running { id: u64, deadline: Instant },
    Failed { retry_at: Instant },
}

pub(crate) struct Refreshes {
    keys: Mutex<HashMap<Box<str>, State>>,
    next_id: std::sync::atomic::AtomicU64,
    retry_after: Duration,
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
    pub(crate) fn new(retry_after: Duration) -> Self {
        Refreshes {
            keys: Mutex::default(),
            next_id: Default::default(),
            retry_after,
        }
    }

    /// Marks `key` as refreshing unless a refresh runs or failed recently.
    pub(crate) fn begin(
        self: &Arc<Self>,
        key: &str,
        hard_timeout: Duration,
    ) -> Result<RefreshTicket, Refused> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
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
                deadline: now + hard_timeout,
            },
        );
        Ok(RefreshTicket {
            refreshes: self.clone(),
            key: key.into(),
            id,
            failed: false,
        })
    }

    /// Forgets a failure (a fresh value arrived by another way).
    pub(crate) fn clear_failure(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(keys.get(key), Some(State::Failed { .. })) {
            keys.remove(key);
        }
    }
}

impl RefreshTicket {
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for RefreshTicket {
    fn drop(&mut self) {
        let mut keys = self
            .refreshes
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !matches!(keys.get(&self.key), Some(State::Running { id, .. }) if *id == self.id) {
            return; // Timed out and replaced by a newer refresh.
        }
        if self.failed {
            let retry_at = Instant::now() + self.refreshes.retry_after;
            keys.insert(self.key.clone(), State::Failed { retry_at });
        } else {
            keys.remove(&self.key);
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
    fn one_refresh_per_key_then_throttled_after_failure() {
        let refreshes = Arc::new(Refreshes::new(Duration::from_millis(50)));
        let mut ticket = refreshes.begin("k", Duration::from_secs(10)).unwrap();
        assert_eq!(
            refreshes.begin("k", Duration::from_secs(10)).err(),
            Some(Refused::Running)
        );
        assert!(refreshes.begin("other", Duration::from_secs(10)).is_ok());
        ticket.failed();
        drop(ticket);
        assert_eq!(
            refreshes.begin("k", Duration::from_secs(10)).err(),
            Some(Refused::FailedRecently)
        );
        std::thread::sleep(Duration::from_millis(60));
        let ticket = refreshes.begin("k", Duration::from_secs(10)).unwrap();
        drop(ticket);
        assert!(refreshes.begin("k", Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_stuck_refresh_is_written_off_after_its_deadline() {
        let refreshes = Arc::new(Refreshes::new(Duration::from_secs(1)));
        let stuck = refreshes.begin("k", Duration::from_millis(20)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let newer = refreshes
            .begin("k", Duration::from_secs(10))
            .expect("deadline passed");
        drop(stuck); // must not clear the newer one's mark
        assert_eq!(
            refreshes.begin("k", Duration::from_secs(10)).err(),
            Some(Refused::Running)
        );
        drop(newer);
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
