#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// How the runtime is built: layers whose imports point one way (down this
// list). A module uses only modules of the layers below its own.
//
// | layer | module | responsibility |
// | --- | --- | --- |
// | basics (no crate imports) | `clock` | wall and coarse monotonic clocks, TTL jitter, reconnect backoff |
// | | `value` | `AnyValue`, `TagVersion`, a load's `Outcome` |
// | | `site` | `Site` (one annotated function, built by the macro) and the `cache.load` span |
// | | `epochs` | local invalidation epochs that guard L1 inserts |
// | | `consistency` | consistency tokens (read-your-writes across instances) and their task-local scope |
// | | `shape`, `error`, `logging`, `keys` | return shapes (picked by the type system: `shape_of!`), the error type, rate-limited logs, key rendering |
// | | `templates` | the templates seen in this process, and pairs that could render one key (uses `site`) |
// | | `fingerprint` | a value type's fingerprint: the digest of its serde structure |
// | parts | `metrics` | metric names and descriptions (`metrics` feature) |
// | | `stats` | the counters, declared once; the `Stats` snapshot |
// | | `background` | bounded Redis work no caller waits for (writes, fill messages, releases) |
// | | `codec` | the Redis envelope (no Redis) |
// | | `l1` | the in-process tier (no Redis, no codec) |
// | | `topology` | where Redis is (a URL, plain or TLS; a Sentinel-managed master) and how a connection is made |
// | | `breaker`, `nodes`, `l2` | a Redis client with deadlines and a breaker (one per master on a cluster), knowing nothing of what is stored |
// | | `config` | the builder and its validation |
// | shared state | `store` | the two tiers as one store: encode, the one decoder, guarded writes |
// | | `tags` | tag versions and the context a load reads before it runs |
// | | `flight` | single-flight in one process; the loads each task runs (a load calling itself) |
// | features | `invalidation` | the channel: messages, identity, publishing |
// | | `lock` | the Redis lock and waiting for another instance's load |
// | | `refresh` | background refreshes (`early`, `stale`), run in full |
// | | `recovery` | an invalidation's Redis part (with fallbacks for a full Redis), and the backlog of those Redis did not take |
// | | `queue` | write-behind queues in Redis: layout, entries, the commands that move them |
// | composition | `engine` | the `Cache` handle type and its engine: one of each part |
// | over the engine | `write` | `#[invalidates]`, `#[write_through]`, `invalidate`, `invalidate_tag`, the backlog's replay |
// | | `prefix` | `invalidate_prefix`: L1 by prefix, `SCAN` and tombstones on every master, the channel's `Prefix` |
// | | `subscription` | the pub/sub listener: invalidations and "filled" messages |
// | | `load` | the cache-aside read path |
// | batches | `batch` | batch loads: many keys, one read of Redis, one body call |
// | beside the attribute | `direct` | `Cache::get`, `set`, `get_or_load`, `get_many`, `remove`, and `Options`: the engine without the attribute |
// | write-behind | `write_behind` | `#[write_behind]` and `Cache::write_behind`: queue the write, store the value (over `write`); handlers |
// | | `worker` | the write-behind worker: leases, claims, batches, retries, dead letters |
// | handle | `cache` | `Cache`'s public API: build, global, stats, invalidation |
// | optional | `http` | axum responses (`axum` feature), over the public API |
mod background;
mod batch;
mod breaker;
mod cache;
mod clock;
mod codec;
mod config;
mod consistency;
mod direct;
mod engine;
mod epochs;
mod error;
mod fingerprint;
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
mod nodes;
mod prefix;
mod queue;
mod recovery;
mod refresh;
mod shape;
mod site;
mod stats;
mod store;
mod subscription;
mod tags;
mod templates;
mod topology;
mod value;
mod worker;
mod write;
mod write_behind;

pub use batch::Batched;
pub use cache_macros::{cached, invalidates, write_behind, write_through};
pub use clock::TestClock;
pub use codec::Codec;
pub use config::CacheBuilder;
pub use consistency::{ConsistencyToken, TokenError};
pub use direct::{Loadable, Options, Plain, Refreshing, Warm, Warmed};
pub use engine::Cache;
pub use error::Error;
pub use keys::escape_key_part;
pub use queue::{Backlog, InvalidWriteId, WriteId};
pub use site::IntoLifetime;
pub use stats::{BreakerState, Stats};
pub use worker::{WriteBehindWorker, WriteBehindWorkerBuilder};
pub use write_behind::{Deferred, Queueable, WriteBehindHandler};

/// Support for the code `#[cached]` generates. Not public API: no
/// stability promise, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::batch::get_many_or_load;

    /// The global cache for an attribute without `cache = ...`: `function`
    /// is named by the warning (or panic) when none was set.
    #[inline]
    pub fn global_cache(function: &'static str) -> GlobalCache {
        crate::Cache::global_for(function)
    }
    pub use crate::cache::GlobalCache;
    pub use crate::engine::{Footprint, footprint};
    pub use crate::keys::KeyBuf;
    pub use crate::load::{get_or_load, get_or_load_l2, get_or_refresh, l1_hit};
    pub use crate::site::{Site, SiteIndex, configured_lifetime};
    pub use crate::templates::TemplateCheck;
    pub use crate::write::{Mutation, PendingWrite, begin_write, invalidate_after, write_through};
    pub use crate::write_behind::{queued_argument, write_behind};
    pub use crate::{__cache_shape_of as shape_of, __cache_shape_of_val as shape_of_val};
    pub use std::sync::OnceLock;

    /// Return shapes (see the `shape` module).
    pub mod shape {
        pub use crate::shape::{
            CacheValue, HasNone, Loaded, Of, Option, OptionResult, Plain, Result, ResultOption,
            ResultResult, Select, Shape, Succeeds, negative,
        };
    }
}
