//! `background`: Redis work no caller waits for, bounded.
//!
//! After a load, the conditional write of its value, the lock owner's
//! "filled" message and the lock's release need not delay the caller: with
//! a slow Redis they would cost three more round trips on its path. They
//! run in tasks of their own instead, at most a fixed number at once
//! (`background_limit` on the builder). When that many run, new work is
//! dropped and counted (`Stats::background_dropped`), never queued: a queue
//! would grow without bound exactly when Redis is slow. What a dropped job
//! costs is bounded too: a value not written is a later miss, a "filled"
//! message not sent leaves waiters to their periodic re-check, and a lock
//! not released lives out its lease (`lock_ttl`).
//!
//! A job's first step runs before the caller returns (it queues the first
//! command without waiting for its reply, see [`Admitted::spawn`]), so the
//! order of this instance's commands in Redis is the order of its calls.
//!
//! Without a Tokio runtime (a future dropped after its runtime ended) the
//! work is dropped as well.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::l2::Budget;
use crate::stats::{Counters, bump};

/// The background work of one cache: how many jobs may still start.
pub(crate) struct Background {
    permits: Arc<Semaphore>,
    /// The number of permits: all are free when no job runs.
    limit: usize,
    /// Woken each time a job ends.
    finished: Arc<Notify>,
    counters: Arc<Counters>,
}

/// Room for one job, taken from [`Background::admit`]; given back when the
/// job ends (or when this is dropped unused).
pub(crate) struct Admitted {
    permit: OwnedSemaphorePermit,
    finished: Arc<Notify>,
    runtime: tokio::runtime::Handle,
}

impl Background {
    /// Room for `limit` jobs at once (at least 1, at most
    /// [`Background::MAX_LIMIT`]: the builder validates it).
    pub(crate) fn new(limit: usize, counters: Arc<Counters>) -> Background {
        let limit = limit.clamp(1, Background::MAX_LIMIT);
        Background {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            finished: Arc::new(Notify::new()),
            counters,
        }
    }

    /// The largest limit: Tokio's semaphore holds at most this many permits.
    pub(crate) const MAX_LIMIT: usize = Semaphore::MAX_PERMITS;

    /// Room for one job, or `None` when the limit is reached or there is no
    /// Tokio runtime: the caller drops its job, which is counted here.
    ///
    /// Taken before the job is built, so a caller that gets `None` can
    /// settle what its job would have done (a lock left to its lease).
    pub(crate) fn admit(&self) -> Option<Admitted> {
        let admitted = tokio::runtime::Handle::try_current()
            .ok()
            .and_then(|runtime| {
                let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
                Some(Admitted {
                    permit,
                    finished: Arc::clone(&self.finished),
                    runtime,
                })
            });
        if admitted.is_none() {
            bump(&self.counters.background_dropped);
        }
        admitted
    }

    /// Runs `job` in the background, or drops it (counted) when there is no
    /// room; whether it runs.
    pub(crate) fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) -> bool {
        match self.admit() {
            Some(admitted) => {
                admitted.spawn(job);
                true
            }
            None => false,
        }
    }

    /// Resolves once no job runs (at once when none does). Jobs started
    /// while it waits are waited for too, so under steady traffic it may
    /// wait long: bound it with a timeout.
    pub(crate) async fn settled(&self) {
        loop {
            let finished = self.finished.notified();
            let mut finished = std::pin::pin!(finished);
            // Registered before the look: a job ending after it wakes us.
            finished.as_mut().enable();
            if self.permits.available_permits() == self.limit {
                return;
            }
            finished.await;
        }
    }
}

impl Admitted {
    /// Runs `job`: its first step here, at once, the rest in a task of its
    /// own; its room is given back when it ends (or is cancelled, with the
    /// runtime).
    ///
    /// The first step runs on the caller's path because it costs nothing
    /// to wait for: it builds the job's first Redis command and queues it
    /// on the connection, and stops at the reply. Queued now, the command
    /// reaches Redis ahead of anything this instance sends after the call
    /// returns (one connection, in order): a read or a `#[write_through]`
    /// that follows a load sees its write, as when the caller waited for it.
    /// Best effort: a command retried later (a script Redis had not
    /// loaded), or one that finds the caller's task out of its Tokio
    /// cooperative budget, is sent from the job's task, without that order;
    /// correctness never depends on it (writes are conditional, see
    /// `store.rs`).
    pub(crate) fn spawn(self, job: impl Future<Output = ()> + Send + 'static) {
        let Admitted {
            permit,
            finished,
            runtime,
        } = self;
        // Its commands have their own timeouts, not what the caller polling
        // its first step has left of its budget.
        let mut job = Box::pin(Budget::outside(job));
        // Polled again as soon as the task below starts, with that task's
        // waker: nothing waits on this one.
        let mut first_step = Context::from_waker(Waker::noop());
        if job.as_mut().poll(&mut first_step).is_ready() {
            drop(permit);
            finished.notify_waiters();
            return;
        }
        runtime.spawn(async move {
            job.await;
            drop(permit);
            finished.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_past_the_limit_are_dropped_and_counted_not_queued() {
        let counters = Arc::new(Counters::default());
        let background = Background::new(2, counters.clone());
        let (finish, finished) = tokio::sync::watch::channel(false);
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let job = || {
            let (mut finished, ran) = (finished.clone(), ran.clone());
            async move {
                let _ = finished.wait_for(|done| *done).await;
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        };
        assert!(background.spawn(job()));
        assert!(background.spawn(job()));
        assert!(!background.spawn(job()), "full: dropped");
        assert!(background.admit().is_none(), "full: no room either");
        assert_eq!(counters.background_dropped.get(), 2);

        let settled = background.settled();
        let mut settled = std::pin::pin!(settled);
        let waited = std::time::Duration::from_millis(20);
        assert!(
            tokio::time::timeout(waited, settled.as_mut())
                .await
                .is_err(),
            "jobs run: not settled"
        );
        finish.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), settled)
            .await
            .expect("finished jobs give their room back");
        let admitted = background.admit().expect("room again");
        admitted.spawn(job());
        assert!(background.spawn(job()), "room for both again");
        tokio::time::timeout(std::time::Duration::from_secs(5), background.settled())
            .await
            .expect("all admitted jobs ran");
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(
            counters.background_dropped.get(),
            2,
            "a wait for room is not a drop"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_jobs_first_step_runs_before_spawn_returns() {
        let counters = Arc::new(Counters::default());
        let background = Background::new(1, counters.clone());
        let steps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (go_on, mut gone_on) = tokio::sync::watch::channel(false);
        let job = {
            let steps = steps.clone();
            async move {
                steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = gone_on.wait_for(|go| *go).await;
                steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        };
        assert!(background.spawn(job));
        // One thread, and this task has not yielded: only the first step
        // can have run, here.
        assert_eq!(steps.load(std::sync::atomic::Ordering::SeqCst), 1);
        go_on.send_replace(true);
        background.settled().await;
        assert_eq!(steps.load(std::sync::atomic::Ordering::SeqCst), 2);

        // A job done in its first step gives its room back at once.
        assert!(background.spawn(async {}));
        assert!(background.spawn(async {}), "room again, without a yield");
        assert_eq!(counters.background_dropped.get(), 0);
    }

    #[test]
    fn without_a_runtime_nothing_runs() {
        let counters = Arc::new(Counters::default());
        let background = Background::new(4, counters.clone());
        assert!(!background.spawn(async {}));
        assert_eq!(counters.background_dropped.get(), 1);
    }
}
