//! The L2 circuit breaker: after a run of failures, or when too many calls
//! are slow, skip Redis entirely.
//!
//! Closed -> Open on either of:
//! - `threshold` consecutive failures (errors, timeouts);
//! - slowness: in a window of [`SLOW_CALL_WINDOW`] calls, at least
//!   `slow_call_rate` of them took `slow_call_duration` or longer (as
//!   resilience4j's `slowCallRateThreshold` does). A Redis that answers
//!   every call, but slowly, costs each caller its whole L2 timeout and
//!   never fails a call: only this opens the breaker on it.
//!
//! While open, calls skip Redis without waiting on anything; a background
//! probe (see `l2.rs`) pings Redis after a randomised cool-down, marking the
//! breaker HalfOpen while it runs, and closes it when Redis answers quickly
//! (within `slow_call_duration`). So requests never wait on a reconnection,
//! and a fleet that lost Redis together probes it at different moments.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use crate::clock::scaled;
use crate::stats::{BreakerState, Gauge};

// Also the values of the `cache_breaker_state` gauge (`metrics` feature).
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// How many calls the slow-call rate is judged over (a tumbling window:
/// judged when it fills, then started again).
pub(crate) const SLOW_CALL_WINDOW: u32 = 20;

/// How a call to Redis ended, as the breaker counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    /// Redis answered (even with an error reply) after this long.
    Answered(Duration),
    /// The connection failed.
    Failed,
    /// No answer within the time the call had.
    TimedOut,
}

/// When slowness opens the breaker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slowness {
    /// A call this long or longer is slow.
    pub duration: Duration,
    /// The share of slow calls in a window that opens the breaker.
    pub rate: f64,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    threshold: u32,
    cooldown: Duration,
    slowness: Slowness,
    /// Calls and slow calls in the current slow-call window.
    window_calls: AtomicU32,
    window_slow: AtomicU32,
    /// `cache_breaker_state`, set on each transition.
    gauge: Gauge,
}

impl Breaker {
    pub(crate) fn new(
        threshold: u32,
        cooldown: Duration,
        slowness: Slowness,
        gauge: Gauge,
    ) -> Self {
        gauge.set(f64::from(CLOSED));
        Breaker {
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            cooldown,
            slowness,
            window_calls: AtomicU32::new(0),
            window_slow: AtomicU32::new(0),
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

    /// Records how a call ended; true when this call opened the breaker (the
    /// caller then starts the probe).
    pub(crate) fn record(&self, call: Call) -> bool {
        let (failed, slow) = match call {
            Call::Answered(took) => (false, took >= self.slowness.duration),
            Call::Failed => (true, false),
            Call::TimedOut => (true, true),
        };
        let too_many_failures = if failed {
            self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1 >= self.threshold
        } else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            false
        };
        let too_slow = self.slow_rate_reached(slow);
        (too_many_failures || too_slow) && self.open()
    }

    /// Counts a call in the slow-call window; true when the call filled the
    /// window and the share of slow calls in it reached the rate.
    fn slow_rate_reached(&self, slow: bool) -> bool {
        if slow {
            self.window_slow.fetch_add(1, Ordering::AcqRel);
        }
        let calls = self.window_calls.fetch_add(1, Ordering::AcqRel) + 1;
        if calls != SLOW_CALL_WINDOW {
            // Not full yet, or another caller is judging this window (calls
            // counted past it meanwhile are lost: an approximation that
            // keeps the counting lock-free).
            return false;
        }
        let slow_calls = self.window_slow.swap(0, Ordering::AcqRel);
        self.window_calls.store(0, Ordering::Release);
        f64::from(slow_calls) >= self.slowness.rate * f64::from(SLOW_CALL_WINDOW)
    }

    /// Closed -> Open; true for the one caller that made the move.
    fn open(&self) -> bool {
        let opened = self
            .state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if opened {
            self.gauge.set(f64::from(OPEN));
        }
        opened
    }

    /// Whether a probe's answer, after `took`, may close the breaker: only
    /// a quick one (a slow answer means Redis is still slow).
    pub(crate) fn answer_closes(&self, took: Duration) -> bool {
        took < self.slowness.duration
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
        self.window_slow.store(0, Ordering::Relaxed);
        self.window_calls.store(0, Ordering::Relaxed);
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

    const NEVER_SLOW: Slowness = Slowness {
        duration: Duration::MAX,
        rate: 1.0,
    };

    fn breaker(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker::new(threshold, cooldown, NEVER_SLOW, Gauge::default())
    }

    fn quick() -> Call {
        Call::Answered(Duration::from_millis(1))
    }

    #[test]
    fn the_longest_cooldown_saturates() {
        let breaker = breaker(1, Duration::MAX);
        for _ in 0..100 {
            assert!(breaker.next_cooldown() >= Duration::MAX / 2);
        }
    }

    #[test]
    fn opens_once_after_the_threshold() {
        let breaker = breaker(3, Duration::from_secs(1));
        assert!(breaker.is_closed());
        assert!(!breaker.record(Call::Failed));
        assert!(!breaker.record(Call::Failed));
        assert!(breaker.record(Call::Failed), "the third failure opens it");
        assert!(
            !breaker.record(Call::Failed),
            "only one caller starts the probe"
        );
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.is_closed());
    }

    #[test]
    fn successes_reset_the_failure_run() {
        let breaker = breaker(2, Duration::from_secs(1));
        breaker.record(Call::Failed);
        breaker.record(quick());
        assert!(!breaker.record(Call::Failed));
        assert!(breaker.is_closed());
    }

    #[test]
    fn probe_cycle() {
        let breaker = breaker(1, Duration::from_secs(1));
        assert!(breaker.record(Call::Failed));
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
            breaker.record(Call::Failed),
            "the failure run restarted from zero"
        );
    }

    #[test]
    fn cooldowns_vary_around_the_configured_one() {
        let breaker = breaker(1, Duration::from_secs(2));
        let draws: Vec<Duration> = (0..100).map(|_| breaker.next_cooldown()).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3))
        );
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[test]
    fn a_window_of_slow_calls_opens_it_and_only_a_quick_probe_closes_it() {
        let slowness = Slowness {
            duration: Duration::from_millis(100),
            rate: 0.5,
        };
        let breaker = Breaker::new(5, Duration::from_secs(1), slowness, Gauge::default());
        let slow = Call::Answered(Duration::from_millis(150));
        // Half the window slow, half quick: the rate is reached on the
        // call that fills the window, not before.
        for call in 0..SLOW_CALL_WINDOW - 1 {
            let outcome = if call % 2 == 0 { slow } else { quick() };
            assert!(!breaker.record(outcome), "call {call}");
        }
        assert!(breaker.record(slow), "the window filled at the rate");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.answer_closes(Duration::from_millis(100)));
        assert!(breaker.answer_closes(Duration::from_millis(99)));
        breaker.close();
        // A window with few slow calls does not open it.
        for call in 0..SLOW_CALL_WINDOW * 3 {
            let outcome = if call % 4 == 0 { slow } else { quick() };
            assert!(!breaker.record(outcome), "call {call}");
        }
        assert!(breaker.is_closed());
    }

    #[test]
    fn timeouts_are_slow_and_failures_are_not() {
        let slowness = Slowness {
            duration: Duration::from_millis(100),
            rate: 1.0,
        };
        let breaker = Breaker::new(u32::MAX, Duration::from_secs(1), slowness, Gauge::default());
        for _ in 0..SLOW_CALL_WINDOW {
            assert!(!breaker.record(Call::Failed));
        }
        for _ in 0..SLOW_CALL_WINDOW - 1 {
            assert!(!breaker.record(Call::TimedOut));
        }
        assert!(breaker.record(Call::TimedOut));
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn gauge_encoding_matches_the_breakers_own_states() {
        // Transitions set the gauge from the state byte; the periodic
        // refresh uses `BreakerState::gauge_value`: they must agree.
        let breaker = breaker(1, Duration::from_secs(1));
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        breaker.record(Call::Failed);
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        breaker.probing();
        assert_eq!(breaker.state().gauge_value(), breaker.gauge_value());
        assert_eq!(BreakerState::Disabled.gauge_value(), -1.0);
    }
}
