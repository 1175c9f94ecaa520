//! What the benches share: the cached value, quick mode, and reading
//! criterion's medians back.
#![allow(dead_code)] // Each bench uses a different part of this module.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// Where criterion writes its results, resolved as criterion does:
/// `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, cargo's target
/// directory, `./target/criterion`.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let output = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(PathBuf::from(metadata.get("target_directory")?.as_str()?))
    });
    from_metadata.map_or_else(
        || PathBuf::from("target/criterion"),
        |target| target.join("criterion"),
    )
}

/// The median (ns) criterion recorded for `id` in this run, if it ran.
pub fn median_ns(home: &Path, id: &str, started: SystemTime) -> Option<f64> {
    let path = home.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .ok()?;
    if modified < started {
        return None; // Left over from an earlier run (filtered out of this one).
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    estimates.get("median")?.get("point_estimate")?.as_f64()
}
