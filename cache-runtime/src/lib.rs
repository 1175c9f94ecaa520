#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod breaker;
mod cache;
mod codec;
mod config;
mod error;
mod flight;
#[cfg(feature = "axum")]
pub mod http;
mod invalidation;
mod keys;
mod l1;
mod l2;
mod load;
mod lock;
mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
mod refresh;
mod shape;
mod stats;

pub use cache::Cache;
pub use cache_macros::{cached, invalidates, write_through};
pub use config::CacheBuilder;
pub use error::Error;
pub use keys::escape_key_part;
pub use stats::{BreakerState, Stats};

/// Support for the code `#[cached]` generates. Not public API: no
/// stability promise, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::invalidation::{Mutation, invalidate_after};
    pub use crate::keys::KeyBuf;
    pub use crate::load::{Site, get_or_load, get_or_load_l2, get_or_refresh, write_through};

    /// Return shapes (see the `shape` module).
    pub mod shape {
        pub use crate::shape::{
            CacheValue, Loaded, Option, Plain, Result, ResultOption, Shape, Succeeds,
        };
    }
}
