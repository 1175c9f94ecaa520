//! Time, read and drawn: the clocks the crate reads and the randomised
//! durations it draws (TTL jitter, reconnect pauses). No crate imports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First pause between background connection attempts.
pub(crate) const RECONNECT_BASE_DELAY: Duration = Duration::from_millis(100);

/// Wall-clock time in milliseconds since the Unix epoch: the time written
/// with an entry, comparable across processes.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Monotonic time in nanoseconds, read cheaply at a resolution of a few ms.
///
/// `CLOCK_MONOTONIC_COARSE` costs ~6 ns here against ~26 ns for
/// `Instant::now()` (a seventh of an L1 hit), at a resolution of a few
/// milliseconds, which is nothing next to TTLs counted in seconds.
#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn coarse_now_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE
    // exists on every Linux since 2.6.32, and the call cannot fail with it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Monotonic time in nanoseconds since the first call.
#[cfg(not(target_os = "linux"))]
#[inline]
pub(crate) fn coarse_now_nanos() -> u64 {
    static EPOCH: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_nanos() as u64
}

/// A clock a test moves by hand, for the expiry of a cache built with
/// [`CacheBuilder::test_clock`](crate::CacheBuilder::test_clock).
///
/// A cache reads its clocks at a resolution of a few milliseconds, from the
/// operating system: a paused Tokio clock does not move them, and a test
/// that waits for a TTL to pass would sleep for it. With a test clock, that
/// cache sees time as the system's plus whatever the test advanced: its
/// in-process entries expire once the clock passed their TTL, and entries
/// it reads from Redis look that much older (Redis itself expires keys on
/// its own clock). Clones share one clock; other caches are not affected.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::{Cache, TestClock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = TestClock::new();
/// let cache = Cache::builder().test_clock(&clock).build().await.unwrap();
/// cache.set("greeting", &"hello".to_owned(), Duration::from_secs(60)).await;
/// clock.advance(Duration::from_secs(59));
/// assert!(cache.get::<String>("greeting").await.is_some());
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(cache.get::<String>("greeting").await, None); // expired, no sleep
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestClock {
    advanced_nanos: Arc<AtomicU64>,
}

impl TestClock {
    /// A clock at the system's time (advanced by nothing yet).
    pub fn new() -> TestClock {
        TestClock::default()
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        let _ =
            self.advanced_nanos
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |advanced| {
                    Some(advanced.saturating_add(by))
                });
    }

    /// How far the clock was moved in all.
    pub fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_nanos.load(Ordering::Relaxed))
    }
}

/// The time one cache reads: the system's clocks, moved by its
/// [`TestClock`] if it has one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Now(Option<TestClock>);

impl Now {
    pub(crate) fn new(test_clock: Option<TestClock>) -> Now {
        Now(test_clock)
    }

    /// [`coarse_now_nanos`], moved by the test clock.
    #[inline]
    pub(crate) fn coarse_nanos(&self) -> u64 {
        let now = coarse_now_nanos();
        match &self.0 {
            None => now,
            Some(clock) => now.saturating_add(clock.advanced_nanos.load(Ordering::Relaxed)),
        }
    }

    /// [`now_ms`], moved by the test clock.
    pub(crate) fn ms(&self) -> u64 {
        let now = now_ms();
        match &self.0 {
            None => now,
            Some(clock) => now.saturating_add(millis(clock.advanced())),
        }
    }
}

/// A TTL drawn uniformly from `ttl * (1 ± jitter)`, saturating at
/// `Duration::MAX`.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
    scaled(ttl, factor).max(Duration::from_millis(1))
}

/// `duration * factor` (`factor` finite and >= 0), saturating at
/// `Duration::MAX` where `Duration::mul_f64` would panic.
pub(crate) fn scaled(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// `now + duration`, or the latest instant the platform can represent
/// near it: a configured duration of years (or `Duration::MAX`) means "never"
/// and must not panic as `Instant + Duration` does.
pub(crate) fn after(now: Instant, duration: Duration) -> Instant {
    if let Some(later) = now.checked_add(duration) {
        return later;
    }
    // A hundred years is "never" for a process; halve until it fits.
    let mut step = Duration::from_secs(100 * 365 * 24 * 3600);
    loop {
        if let Some(later) = now.checked_add(step) {
            return later;
        }
        step /= 2;
    }
}

/// Whole milliseconds, saturating at `u64::MAX` (where `as u64` would
/// wrap).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// "Full jitter": a uniform draw between zero and the exponential bound, so
/// processes that lost Redis together spread their attempts out.
pub(crate) fn backoff_delay(attempt: u32, max_delay: Duration) -> Duration {
    let bound = RECONNECT_BASE_DELAY
        .saturating_mul(1u32 << attempt.min(16))
        .min(max_delay);
    scaled(bound, fastrand::f64()).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let ttl = Duration::from_secs(100);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(ttl, 0.2)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(80) && *d <= Duration::from_secs(120))
        );
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_secs(20),
            "spread {min:?}..{max:?}"
        );
        assert_eq!(jittered(ttl, 0.0), ttl);
    }

    #[test]
    fn backoff_is_bounded_and_random() {
        let max = Duration::from_secs(5);
        let delays: Vec<Duration> = (0..50).map(|_| backoff_delay(10, max)).collect();
        assert!(delays.iter().all(|d| *d <= max));
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "delays must vary");
        assert!(backoff_delay(0, max) <= RECONNECT_BASE_DELAY);
    }

    #[test]
    fn the_longest_durations_saturate_instead_of_panicking() {
        let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
        for jitter in [0.0, 0.1, 0.5, 0.99] {
            for _ in 0..100 {
                assert!(jittered(Duration::MAX, jitter) > ten_years);
            }
        }
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + ten_years);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_nanos(7)), 7);
    }
}
