//! The key patterns `hits` and `throughput` read, the same for every
//! contender: a service reads many keys, not one hot key, and how a cache
//! behaves when its entries no longer sit in the CPU's caches is part of
//! what a user pays.
//!
//! A pattern is a sequence of ids, built once and shared by every contender;
//! a caller walks it in order and wraps around. Reading the next id is the
//! same few instructions (a load from the sequence, an increment, a compare)
//! for every pattern and every contender, so a ratio between contenders on
//! one pattern compares the caches alone.

use std::cell::Cell;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// The id the one-hot-key pattern reads (`user:42`).
pub const HOT_ID: u64 = 42;

/// Keys of the larger patterns: the 100 000 keys of `zipf`. Every pattern
/// reads ids below it, so a contender holding ids `0..MANY_KEYS` serves
/// every pattern from its cache.
pub const MANY_KEYS: u64 = 100_000;

/// Keys of the larger patterns in test mode ([`crate::test_mode`]): a test
/// run checks that every path works, in a debug build where filling every
/// contender with 100 000 keys takes most of a minute per bench, 2 000 a
/// second.
pub const TEST_MODE_KEYS: u64 = 2_000;

/// Keys of the larger patterns in this run: [`MANY_KEYS`], or
/// [`TEST_MODE_KEYS`] in test mode. Every pattern reads ids below it.
pub fn many_keys() -> u64 {
    if crate::test_mode() {
        TEST_MODE_KEYS
    } else {
        MANY_KEYS
    }
}

/// The Zipf draws `zipf` makes and the Zipf pattern here reads: exponent
/// 1.0 over [`MANY_KEYS`] ids, 2^20 draws from a `SmallRng` seeded with 7,
/// so every run and every contender sees the same request stream.
pub const ZIPF_EXPONENT: f64 = 1.0;
pub const ZIPF_DRAWS: usize = 1 << 20;
pub const ZIPF_SEED: u64 = 7;

/// `draws` ids in `0..keys` drawn from a Zipf distribution with
/// `exponent` (id 0 the most popular), from a `SmallRng` seeded with `seed`.
pub fn zipf_draws(keys: u64, exponent: f64, draws: usize, seed: u64) -> Vec<u32> {
    let zipf = Zipf::new(keys as f64, exponent).expect("valid Zipf parameters");
    let mut rng = SmallRng::seed_from_u64(seed);
    // Zipf draws 1..=keys; ids are 0-based.
    (0..draws)
        .map(|_| zipf.sample(&mut rng) as u32 - 1)
        .collect()
}

/// How a bench chooses the key of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPattern {
    /// Every call reads [`HOT_ID`]: the benches' original case, where the
    /// entry and everything on its path stay in the CPU's caches.
    OneKey,
    /// Ids `0..1000` in turn: a small working set that fits in L2 cache.
    Rotation1k,
    /// Ids `0..100_000` in turn: each entry is cold in the CPU's caches
    /// again by the time it is read. (Ids below [`many_keys`] in test mode.)
    Rotation100k,
    /// [`ZIPF_DRAWS`] ids drawn with [`zipf_draws`] over [`MANY_KEYS`],
    /// in draw order: a few hot keys and a long tail, as `zipf` reads.
    /// (Over [`many_keys`] in test mode.)
    Zipf100k,
}

impl KeyPattern {
    /// The patterns every contender is measured on.
    pub const ALL: [KeyPattern; 4] = [
        KeyPattern::OneKey,
        KeyPattern::Rotation1k,
        KeyPattern::Rotation100k,
        KeyPattern::Zipf100k,
    ];

    /// The patterns that read many keys.
    pub const MANY: [KeyPattern; 3] = [
        KeyPattern::Rotation1k,
        KeyPattern::Rotation100k,
        KeyPattern::Zipf100k,
    ];

    /// The pattern's part of a benchmark id (`l1_hit/1000_keys/ours`).
    pub fn name(self) -> &'static str {
        match self {
            KeyPattern::OneKey => "one_key",
            KeyPattern::Rotation1k => "1000_keys",
            KeyPattern::Rotation100k => "100000_keys",
            KeyPattern::Zipf100k => "zipf_100000_keys",
        }
    }

    /// One line for a bench's header.
    pub fn describe(self) -> String {
        match self {
            KeyPattern::OneKey => format!("one key (id {HOT_ID}) on every call"),
            KeyPattern::Rotation1k => "ids 0..1000 in turn".to_owned(),
            KeyPattern::Rotation100k => format!("ids 0..{} in turn", many_keys()),
            KeyPattern::Zipf100k => format!(
                "{ZIPF_DRAWS} Zipf draws (exponent {ZIPF_EXPONENT}, seed {ZIPF_SEED}) over ids 0..{}",
                many_keys()
            ),
        }
    }

    /// The ids the pattern reads, in order.
    pub fn ids(self) -> Arc<[u32]> {
        match self {
            KeyPattern::OneKey => Arc::from([HOT_ID as u32]),
            KeyPattern::Rotation1k => (0..1000).collect(),
            KeyPattern::Rotation100k => (0..many_keys() as u32).collect(),
            KeyPattern::Zipf100k => {
                zipf_draws(many_keys(), ZIPF_EXPONENT, ZIPF_DRAWS, ZIPF_SEED).into()
            }
        }
    }
}

/// One single-task caller's walk through a pattern: the next id on each
/// call, wrapping around at the end (`hits`).
pub struct KeyStream {
    ids: Arc<[u32]>,
    next: Cell<usize>,
}

impl KeyStream {
    pub fn new(ids: Arc<[u32]>) -> KeyStream {
        assert!(!ids.is_empty(), "a key pattern reads at least one id");
        KeyStream {
            ids,
            next: Cell::new(0),
        }
    }

    /// The next id.
    #[inline]
    pub fn next_id(&self) -> u64 {
        let at = self.next.get();
        let id = self.ids[at];
        self.next
            .set(if at + 1 == self.ids.len() { 0 } else { at + 1 });
        u64::from(id)
    }
}

/// The id task `task` of `tasks` reads on its `call`-th call: every task
/// walks the same sequence, each from its own starting point spread evenly
/// over it (`throughput`, as `zipf`).
#[inline]
pub fn walk(ids: &[u32], task: usize, tasks: usize, call: u64) -> u64 {
    let start = (task * (ids.len() / tasks)) as u64;
    u64::from(ids[((start + call) % ids.len() as u64) as usize])
}
