//! What both benches share: the cached value, and quick mode.
#![allow(dead_code)] // Each bench uses a different part of this module.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The value every benchmark caches: 80 bytes inline plus about 100 on the
/// heap (60 bytes encoded with bincode's standard config for id 42), five
/// allocations to clone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
}

/// The user with id `id`.
pub fn user(id: u64) -> User {
    User {
        id,
        name: format!("Ada Lovelace {id}"),
        email: format!("ada.lovelace.{id}@example.com"),
        roles: vec!["reader".to_owned(), "writer".to_owned()],
    }
}

/// `BENCH_QUICK=1` (any value but empty or `0`): very short measurements,
/// to smoke-test a full pass; the numbers are then not worth reading.
pub fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some_and(|value| !value.is_empty() && value != "0")
}

/// Criterion's base settings: in quick mode, no plots (drawing them takes
/// longer than the measurements).
pub fn criterion() -> criterion::Criterion {
    let criterion = criterion::Criterion::default();
    if quick() {
        criterion.without_plots()
    } else {
        criterion
    }
}

/// Warm-up, measurement time and sample count for a group: `normal` in a
/// real run, a fraction of a second in quick mode.
pub fn timing(
    warm_up: Duration,
    measurement: Duration,
    samples: usize,
) -> (Duration, Duration, usize) {
    if quick() {
        (Duration::from_millis(200), Duration::from_millis(500), 10)
    } else {
        (warm_up, measurement, samples)
    }
}
