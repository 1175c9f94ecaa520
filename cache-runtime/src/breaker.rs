//! The L2 circuit breaker: after a run of failures, skip Redis entirely.
//!
//! Closed -> (`threshold` consecutive failures) -> Open. While open, calls
//! skip Redis without waiting on anything; a background probe (see `l2.rs`)
//! pings Redis after a randomised cool-down, marking the breaker HalfOpen
//! while it runs, and closes it when Redis answers. So requests never wait
//! on a reconnection, and a fleet that lost Redis together probes it at
//! different moments.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use crate::clock::scaled;
use crate::stats::{BreakerState, Gauge};

// Also the values of the `cache_breaker_state` gauge (`metrics` feature).
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    threshold: u32,
    cooldown: Duration,
    /// `cache_breaker_state`, set on each transition.
    gauge: Gauge,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration, gauge: Gauge) -> Self {
        gauge.set(f64::from(CLOSED));
        Breaker {
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            cooldown,
            gauge,
        }
    }

    /// Moves to `state` and reports it. Two racing transitions may leave
    /// the gauge on the loser's value; the periodic gauge refresh (see
    /// `metrics.rs`) repairs that within a second.
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.gauge.set(f64::from(state));
    }

    /// The gauge value of the current state.
    #[cfg(all(test, feature = "metrics"))]
    fn gauge_value(&self) -> f64 {
        f64::from(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether calls may go to Redis.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    pub(crate) fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failed call; true when this failure opened the breaker (the
    /// caller then starts the probe).
    pub(crate) fn record_failure(&self) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let opened = failures >= self.threshold
            && self
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if opened {
            self.gauge.set(f64::from(OPEN));
        }
        opened
    }

    /// The probe is about to ping Redis.
    pub(crate) fn probing(&self) {
        self.set(HALF_OPEN);
    }

    /// The probe failed: stay open for another cool-down.
    pub(crate) fn reopen(&self) {
        self.set(OPEN);
    }

    /// The probe succeeded: calls use Redis again.
    pub(crate) fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.set(CLOSED);
    }

    /// A cool-down drawn uniformly from 0.5x to 1.5x the configured one
    /// (saturating at `Duration::MAX`).
    pub(crate) fn next_cooldown(&self) -> Duration {
        scaled(self.cooldown, 0.5 + fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_cooldown_saturates() {
        let breaker = Breaker::new(1, Duration::MAX, Gauge::default());
        for _ in 0..100 {
            assert!(breaker.next_cooldown() >= Duration::MAX / 2);
        }
    }

    #[test]
    fn opens_once_after_the_threshold() {
        let breaker = Breaker::new(3, Duration::from_secs(1), Gauge::default());
        assert!(breaker.is_closed());
        assert!(!breaker.record_failure());
        assert!(!breaker.record_failure());
        assert!(breaker.record_failure(), "the third failure opens it");
        assert!(
            !breaker.record_failure(),
            "only one caller starts the probe"
        );
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.is_closed());
    }

    #[test]
    fn successes_reset_the_failure_run() {
        let breaker = Breaker::new(2, Duration::from_secs(1), Gauge::default());
        breaker.record_failure();
        breaker.record_success();
        assert!(!breaker.record_failure());
        assert!(breaker.is_closed());
    }

    #[test]
    fn probe_cycle() {
        let breaker = Breaker::new(1, Duration::from_secs(1), Gauge::default());
        assert!(breaker.record_failure());
        breaker.probing();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(
            !breaker.is_closed(),
            "calls keep skipping while the probe runs"
        );
        breaker.reopen();
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker.probing();
        breaker.close();
        assert!(breaker.is_closed());
        assert!(
            breaker.record_failure(),
            "the failure run restarted from zero"
        );
    }

    #[test]
    fn cooldowns_vary_around_the_configured_one() {
        let breaker = Breaker::new(1, Duration::from_secs(2), Gauge::default());
        let draws: Vec<Duration> = (0..100).map(|_| breaker.next_cooldown()).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3))
        );
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn gauge_encoding_matches_the_breakers_own_states() {
        // Transitions set the gauge from the state byte; the periodic
        // refresh uses `BreakerState::gauge_value`: they must agree.
        let breaker = Breaker::new(1, Duration::from_secs(1), Gauge::default());
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        breaker.record_failure();
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        breaker.probing();
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        assert_eq!(BreakerState::Disabled.gauge_value(), -1.0);
    }
}
