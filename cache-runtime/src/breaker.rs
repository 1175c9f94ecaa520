//! The L2 circuit breaker: after a run of failures, skip Redis entirely.
//!
//! Closed -> (threshold consecutive failures) -> Open -> (cool-down) ->
//! HalfOpen: one call probes Redis; success closes, failure reopens. The
//! cool-down is drawn at random around the configured one on each opening,
//! so a fleet that lost Redis together does not come back at the same instant.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::BreakerState;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Open: when probing may start. HalfOpen: when a probe that never
    /// reported (its caller was cancelled) counts as lost and another may go.
    /// Milliseconds since `epoch`.
    next_probe_at_ms: AtomicU64,
    epoch: Instant,
    threshold: u32,
    cooldown: Duration,
    probe_window: Duration,
}

/// What the breaker decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Allowed,
    Rejected,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration, probe_window: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            next_probe_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            threshold: threshold.max(1),
            cooldown,
            probe_window,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to Redis now.
    #[inline]
    pub(crate) fn admit(&self) -> Admission {
        let state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Admission::Allowed;
        }
        let now = self.now_ms();
        if now < self.next_probe_at_ms.load(Ordering::Acquire) {
            return Admission::Rejected;
        }
        // One caller wins the right to probe; it pushes the deadline forward
        // so the others keep skipping while it runs.
        let current = self.next_probe_at_ms.load(Ordering::Acquire);
        if now >= current
            && self
                .next_probe_at_ms
                .compare_exchange(
                    current,
                    now + self.probe_window.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.state.store(HALF_OPEN, Ordering::Release);
            Admission::Allowed
        } else {
            Admission::Rejected
        }
    }

    pub(crate) fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.state.store(CLOSED, Ordering::Release);
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(crate) fn record_failure(&self) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let state = self.state.load(Ordering::Acquire);
        let should_open = state == HALF_OPEN || (state == CLOSED && failures >= self.threshold);
        if should_open && self.state.swap(OPEN, Ordering::AcqRel) != OPEN {
            let cooldown = jittered_cooldown(self.cooldown);
            self.next_probe_at_ms
                .store(self.now_ms() + cooldown.as_millis() as u64, Ordering::Release);
            return true;
        }
        false
    }
}

/// A cool-down drawn uniformly from 0.5x to 1.5x the configured one.
fn jittered_cooldown(cooldown: Duration) -> Duration {
    cooldown.mul_f64(0.5 + fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_one_probe() {
        let breaker = Breaker::new(3, Duration::from_millis(20), Duration::from_millis(500));
        assert_eq!(breaker.admit(), Admission::Allowed);
        assert!(!breaker.record_failure());
        assert!(!breaker.record_failure());
        assert!(breaker.record_failure());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.admit(), Admission::Rejected);

        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Allowed, "the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(), Admission::Rejected, "only one probe at a time");
        breaker.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(500));
        assert!(breaker.record_failure());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(breaker.admit(), Admission::Allowed);
        assert!(breaker.record_failure());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.admit(), Admission::Rejected);
    }

    #[test]
    fn a_lost_probe_lets_another_go_after_the_window() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(30));
        breaker.record_failure();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(breaker.admit(), Admission::Allowed);
        // That probe's caller was cancelled and never reported.
        assert_eq!(breaker.admit(), Admission::Rejected);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit(), Admission::Allowed);
    }

    #[test]
    fn successes_reset_the_failure_run() {
        let breaker = Breaker::new(2, Duration::from_millis(10), Duration::from_millis(30));
        breaker.record_failure();
        breaker.record_success();
        assert!(!breaker.record_failure());
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
