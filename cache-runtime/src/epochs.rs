//! Local invalidation epochs: how a load that overlapped an invalidation
//! is kept from putting its older value into L1 (no stale set in L1).
//!
//! Per-key epochs (striped) and one tag epoch are read before a load and
//! compared before its L1 insert; an invalidation bumps them. No crate
//! imports.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many key stripes the L1 epochs use: an invalidation of one key
/// blocks L1 inserts of in-flight loads of 1/STRIPES of the keys.
const STRIPES: usize = 256;

/// Epochs that in-flight loads compare before inserting into L1.
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    tags: AtomicU64,
    hasher: std::hash::RandomState,
}

/// What a load saw before it started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Snapshot {
    stripe: u64,
    tags: u64,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            tags: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl Epochs {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    pub(crate) fn snapshot(&self, key: &str) -> Snapshot {
        Snapshot {
            stripe: self.stripe(key).load(Ordering::Acquire),
            tags: self.tags.load(Ordering::Acquire),
        }
    }

    /// Whether nothing that could concern `key` was invalidated since
    /// `before` (tags count only for tagged entries).
    pub(crate) fn unchanged(&self, key: &str, before: Snapshot, tagged: bool) -> bool {
        let now = self.snapshot(key);
        now.stripe == before.stripe && (!tagged || now.tags == before.tags)
    }

    pub(crate) fn bump_key(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }

    /// Moves `key`'s stripe on if nothing moved it since `before`: true when
    /// it did (the caller's write is then the latest this instance knows of).
    pub(crate) fn advance_key(&self, key: &str, before: Snapshot) -> bool {
        self.stripe(key)
            .compare_exchange(
                before.stripe,
                before.stripe.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(crate) fn bump_tags(&self) {
        self.tags.fetch_add(1, Ordering::AcqRel);
    }

    /// Moves every key's stripe on: no load of any key that began before
    /// may fill L1 (tags left alone).
    pub(crate) fn bump_every_key(&self) {
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn bump_all(&self) {
        self.bump_every_key();
        self.bump_tags();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_see_invalidations_of_their_key_and_of_tags() {
        let epochs = Epochs::default();
        let before = epochs.snapshot("user:1");
        assert!(epochs.unchanged("user:1", before, true));
        epochs.bump_tags();
        assert!(
            epochs.unchanged("user:1", before, false),
            "an untagged entry ignores tags"
        );
        assert!(!epochs.unchanged("user:1", before, true));
        let before = epochs.snapshot("user:1");
        epochs.bump_key("user:1");
        assert!(!epochs.unchanged("user:1", before, false));
        let before = epochs.snapshot("user:2");
        epochs.bump_all();
        assert!(!epochs.unchanged("user:2", before, false));
        let before = epochs.snapshot("user:4");
        epochs.bump_every_key();
        assert!(!epochs.unchanged("user:4", before, false));
        let before = epochs.snapshot("user:3");
        assert!(epochs.advance_key("user:3", before));
        assert!(
            !epochs.advance_key("user:3", before),
            "a second writer from the same snapshot loses"
        );
    }
}
