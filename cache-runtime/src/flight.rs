//! Single-flight: concurrent callers of one missing key share one load.
//!
//! The first caller of a missing key becomes the leader; later callers
//! subscribe to its outcome. The leader's guard removes the flight when it
//! completes *or when it is dropped*: if the leader panics or its future is
//! cancelled, the channel closes and a waiter takes over as the new leader
//! instead of hanging.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::l1::AnyValue;

/// What a finished flight hands its waiters.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The value the leader stored (or found in L2).
    Value(AnyValue),
    /// The leader got `None`.
    Absent,
    /// The leader's body returned `Err`. Errors are not shared (the error type
    /// need not be `Clone`): each waiter runs its own body.
    Failed,
}

type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<Box<str>, (u64, Slot)>>,
    next_id: AtomicU64,
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Waiter(Waiter),
}

impl Flights {
    /// Joins the flight for `key`, starting one if none runs.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, slot)) = running.get(key) {
            return Role::Waiter(Waiter(slot.clone()));
        }
        let (sender, slot) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        running.insert(key.into(), (id, slot));
        Role::Leader(Leader {
            flights: self,
            key: key.into(),
            id,
            sender,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

/// Held by the caller that runs the load.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Box<str>,
    id: u64,
    sender: watch::Sender<Option<Outcome>>,
}

impl Leader<'_> {
    /// Hands the outcome to every waiter and ends the flight.
    pub(crate) fn complete(self, outcome: Outcome) {
        self.sender.send_replace(Some(outcome));
        // Drop removes the flight.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut running = self
            .flights
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Only our own flight: a waiter may already have started a new one.
        if running.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            running.remove(&self.key);
        }
    }
}

/// Held by a caller waiting for a leader.
pub(crate) struct Waiter(Slot);

impl Waiter {
    /// The leader's outcome, or `None` if the leader went away without one.
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first is leader")
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("second waits")
        };
        leader.complete(Outcome::Value(Arc::new(5u32)));
        assert_eq!(flights.len(), 0);
        match waiter.outcome().await {
            Some(Outcome::Value(v)) => assert_eq!(v.downcast_ref::<u32>(), Some(&5)),
            _ => panic!("expected the value"),
        }
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(waiter.outcome().await.is_none());
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a waiter can take over"
        );
    }

    #[tokio::test]
    async fn an_old_leader_does_not_remove_a_new_flight() {
        let flights = Flights::default();
        let Role::Leader(first) = flights.join("k") else {
            panic!()
        };
        // Simulate the first flight being removed and a new one starting.
        flights.running.lock().unwrap().clear();
        let Role::Leader(_second) = flights.join("k") else {
            panic!()
        };
        drop(first);
        assert_eq!(flights.len(), 1);
    }
}
