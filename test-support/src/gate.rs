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
