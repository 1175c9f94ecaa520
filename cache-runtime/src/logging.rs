//! Rate-limited logging: a Redis outage must not log once per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    epoch: Instant,
    interval_ms: u64,
    next_at_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_at_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were
    /// held back since the last one; `None` when it should be dropped.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_at_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_at_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// How many events were held back since the last one let through, and
    /// starts that count over: for a closing line ("recovered; n
    /// suppressed") that is not itself an event.
    pub(crate) fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_a_count_of_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(30));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.take_suppressed(), 1);
        assert_eq!(throttle.take_suppressed(), 0);
    }
}
