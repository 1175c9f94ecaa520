//! Holding a task at a point of a test's choosing, and bounding every wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A gate tasks wait at until the test opens it; it stays open.
///
/// Opening is a state, not a wake-up: a task that reaches the gate after it
/// was opened passes at once. (A `Notify::notify_waiters` is lost on a task
/// that has not started waiting yet, which hangs such a test.)
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cache_test_support::Gate;
/// let gate = Gate::closed();
/// gate.open();
/// gate.passed().await; // opened before anyone waited: passes
/// # }
/// ```
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Gate {
        Gate(Arc::new(watch::Sender::new(false)))
    }

    /// Lets every task through, now and later.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the gate is open.
    pub async fn passed(&self) {
        let mut open = self.0.subscribe();
        // The sender lives in `self`: the channel cannot close meanwhile.
        let _ = open.wait_for(|open| *open).await;
    }
}

/// Awaits `future` at most `limit`, and panics naming `what` when it takes
/// longer: a test that waits on something fails, it never hangs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let answer = cache_test_support::within(Duration::from_secs(1), "the answer", async { 42 }).await;
/// assert_eq!(answer, 42);
/// # }
/// ```
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_opened_before_anyone_waits_lets_them_pass() {
        let gate = Gate::closed();
        gate.open();
        within(Duration::from_secs(1), "the gate", gate.passed()).await;
    }

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened() {
        let gate = Gate::closed();
        let held = tokio::time::timeout(Duration::from_millis(50), gate.passed()).await;
        assert!(held.is_err(), "passed a closed gate");
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.passed().await }
        });
        gate.open();
        within(Duration::from_secs(1), "the waiting task", waiting)
            .await
            .unwrap();
    }

    #[tokio::test]
    #[should_panic(expected = "the never-ending thing: not done within")]
    async fn within_fails_a_wait_past_its_limit() {
        within(
            Duration::from_millis(20),
            "the never-ending thing",
            std::future::pending::<()>(),
        )
        .await;
    }
}
