//! The functions every contender's call goes through, the same in every
//! bench: ours (`#[cached]`), the `cached` crate's, and what a user of moka,
//! quick_cache or redis-rs would write by hand. Hit functions use a 1 h TTL,
//! so that nothing expires during a run.
//!
//! [`Contenders`] has room for every key of the key patterns
//! ([`crate::keys`]), and [`Contenders::fill_keys`] puts them all in every
//! contender, so that each read of a pattern is a hit.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bincode::config::standard;
use cache_runtime::{Cache, cached};
use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::keys::MANY_KEYS;
use crate::{User, user};

/// Entries every in-process contender has room for: twice the keys of the
/// largest pattern, so that none of them evicts (or refuses to admit) a key
/// a pattern reads.
pub const CAPACITY: usize = 2 * MANY_KEYS as usize;

/// Calls in flight at once while [`Contenders::fill_keys`] fills and checks
/// the Redis-backed contenders: enough to keep one connection busy, few
/// enough that none waits past a client's response timeout (the `cached`
/// crate's store gives up after 500 ms) on a loaded machine.
const FILL_CONCURRENCY: usize = 16;

/// Ids never used before, for the miss paths (8 digits for the whole run,
/// so every body formats the same number of characters).
static FRESH: AtomicU64 = AtomicU64::new(10_000_000);

pub fn fresh() -> u64 {
    FRESH.fetch_add(1, Ordering::Relaxed)
}

#[cached(key = "user:<id>", ttl = 3600, cache = cache, skip(cache))]
pub async fn ours_get_user(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

#[cached(key = "user:<id>", ttl = 3600)]
pub async fn ours_get_user_global(id: u64) -> Option<User> {
    Some(user(id))
}

/// `ours_get_user` with one tag: an L1 hit also checks that the tag was not
/// invalidated since the entry was stored. `org` only names the tag; its
/// own key template keeps its entries apart from `ours_get_user`'s.
#[cached(key = "tagged:<id>", ttl = 3600, tags = ["org:<org>"], cache = cache, skip(cache, org))]
pub async fn ours_get_user_tagged(cache: &Cache, org: u32, id: u64) -> Option<User> {
    let _ = org;
    Some(user(id))
}

#[cached(key = "user:<id>", ttl = 3600, cache = cache, skip(cache), l1 = false)]
pub async fn ours_get_user_l2(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

/// Called with a fresh id every time: always a miss. A 1 s TTL keeps what
/// the misses write to Redis small.
#[cached(key = "miss:<id>", ttl = 1, cache = cache, skip(cache))]
pub async fn ours_miss(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

/// The body of every function above, on its own.
pub async fn body(id: u64) -> Option<User> {
    Some(user(id))
}

// `cached` 4.1 renamed `time` to `ttl_secs` (`time = 300` is a compile error).
#[cached::proc_macro::cached(ttl_secs = 3600, companions = false)]
pub async fn cached_crate_get_user(id: u64) -> Option<User> {
    Some(user(id))
}

/// What a user of moka would write: render the key, get, clone the value out.
pub async fn moka_get_user(moka: &moka::future::Cache<String, Arc<User>>, id: u64) -> Option<User> {
    let key = format!("user:{id}");
    moka.get(&key).await.map(|user| User::clone(&user))
}

/// The same with moka's synchronous cache (called from the async task, as
/// a user would).
pub async fn moka_sync_get_user(
    moka: &moka::sync::Cache<String, Arc<User>>,
    id: u64,
) -> Option<User> {
    let key = format!("user:{id}");
    moka.get(&key).map(|user| User::clone(&user))
}

/// The same with a bare `quick_cache` (no TTL of its own).
pub async fn quick_cache_get_user(
    quick: &quick_cache::sync::Cache<String, Arc<User>>,
    id: u64,
) -> Option<User> {
    let key = format!("user:{id}");
    quick.get(&key).map(|user| User::clone(&user))
}

/// What a user of redis-rs would write: render the key, `GET`, decode.
/// The connection is one server's `MultiplexedConnection` or a cluster's
/// `ClusterConnection` (benches/cluster.rs): the same code either way.
pub async fn redis_get_user<C>(connection: &C, id: u64) -> Option<User>
where
    C: ConnectionLike + Clone,
{
    let key = format!("raw:user:{id}");
    let mut connection = connection.clone();
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("GET from the bench redis-server");
    bytes.map(|bytes| {
        bincode::serde::decode_from_slice::<User, _>(&bytes, standard())
            .expect("decode the raw value")
            .0
    })
}

/// Stores user `id` where [`redis_get_user`] reads it: `raw:user:<id>`,
/// the bincode encoding of the `User`, no expiry.
pub async fn store_raw_user<C>(connection: &C, id: u64)
where
    C: ConnectionLike + Clone,
{
    let encoded = bincode::serde::encode_to_vec(user(id), standard()).expect("encode");
    let () = redis::cmd("SET")
        .arg(format!("raw:user:{id}"))
        .arg(encoded)
        .query_async(&mut connection.clone())
        .await
        .expect("SET the raw value");
}

/// Hand-written cache-aside on a miss: `GET`, then the body, then
/// `SET .. EX 1` of the encoded value (two round trips, as ours).
pub async fn redis_miss_set(connection: &MultiplexedConnection, id: u64) -> Option<User> {
    let key = format!("raw:miss:{id}");
    let mut connection = connection.clone();
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("GET from the bench redis-server");
    if let Some(bytes) = bytes {
        return Some(
            bincode::serde::decode_from_slice::<User, _>(&bytes, standard())
                .expect("decode the raw value")
                .0,
        );
    }
    let value = body(id).await;
    if let Some(user) = &value {
        let encoded = bincode::serde::encode_to_vec(user, standard()).expect("encode");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(encoded)
            .arg("EX")
            .arg(1)
            .query_async(&mut connection)
            .await
            .expect("SET on the bench redis-server");
    }
    value
}

/// The `cached` crate's Redis store, read directly: its `#[concurrent_cached]`
/// macro on a Redis store needs a fn returning `Result` (store errors go
/// through `?`), so it cannot wrap a fn of the same signature.
pub async fn cached_crate_redis_get_user(
    store: &AsyncRedisCache<u64, User>,
    id: u64,
) -> Option<User> {
    store
        .async_cache_get(&id)
        .await
        .expect("GET from the bench redis-server")
}

/// Every contender of `hits` and `allocations`, set up against one
/// redis-server: ours in four configurations, the raw structures, a raw
/// redis-rs connection holding `raw:user:<id>`, and the `cached` crate's
/// Redis store.
pub struct Contenders {
    /// The value every hit returns, for the `user_clone` baseline.
    pub template: User,
    /// Ours with Redis, installed as the global cache: L1 and L2 hits.
    pub cache: Cache,
    /// Ours, in-process only: misses.
    pub local: Cache,
    /// Ours with Redis (its own namespace and L1): misses.
    pub misses: Cache,
    /// Ours with a redis-server that was killed: the breaker opens.
    pub down: Cache,
    pub moka: moka::future::Cache<String, Arc<User>>,
    pub moka_sync: moka::sync::Cache<String, Arc<User>>,
    pub quick: quick_cache::sync::Cache<String, Arc<User>>,
    pub connection: MultiplexedConnection,
    pub redis_store: AsyncRedisCache<u64, User>,
}

impl Contenders {
    /// Builds every contender, all empty; `bench` names the `cached`
    /// crate's store. `template` is the `User` of id `template_id`.
    pub async fn set_up(bench: &str, url: &str, down_url: &str, template_id: u64) -> Contenders {
        // L1 keeps entries for the whole run (the default 60 s lifetime cap
        // would turn some L1 hits into L2 hits) and has room for every key
        // of the patterns (the default is 10 000 entries).
        let cache = crate::connected(
            Cache::builder()
                .namespace("bench")
                .redis_url(url)
                .l1_capacity(CAPACITY)
                .l1_max_ttl(Duration::from_secs(3600)),
        )
        .await;
        Cache::set_global(cache.clone());
        let local = Cache::builder()
            .namespace("local")
            .build()
            .await
            .expect("valid configuration");
        let misses = Cache::builder()
            .namespace("misses")
            .redis_url(url)
            .build()
            .await
            .expect("valid configuration");
        assert!(misses.is_l2_connected());
        // A cool-down of an hour: the breaker's probe does not run during
        // the measurement, so the breaker stays `Open` (it would be
        // `HalfOpen` while a probe ran; calls skip Redis in both states).
        let down = Cache::builder()
            .namespace("down")
            .redis_url(down_url)
            .breaker_cooldown(Duration::from_secs(3600))
            .build()
            .await
            .expect("valid configuration");
        assert!(down.is_l2_connected());

        let moka = moka::future::Cache::<String, Arc<User>>::builder()
            .max_capacity(CAPACITY as u64)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let moka_sync = moka::sync::Cache::<String, Arc<User>>::builder()
            .max_capacity(CAPACITY as u64)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let quick = quick_cache::sync::Cache::<String, Arc<User>>::new(CAPACITY);
        let client = redis::Client::open(url).expect("redis URL");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the bench redis-server");
        let redis_store = AsyncRedisCache::<u64, User>::builder(bench)
            .namespace("cached-crate")
            .ttl_secs(3600)
            .connection_string(url)
            .build()
            .await
            .expect("cached crate's AsyncRedisCache");
        Contenders {
            template: user(template_id),
            cache,
            local,
            misses,
            down,
            moka,
            moka_sync,
            quick,
            connection,
            redis_store,
        }
    }

    /// Stores user `id` where the hand-written contenders read it: moka
    /// (future and sync), quick_cache, `raw:user:<id>` in Redis and the
    /// `cached` crate's Redis store. Ours and the `cached` crate's
    /// in-memory macro fill themselves on their first call.
    pub async fn fill_raw(&self, id: u64) {
        let key = format!("user:{id}");
        self.moka.insert(key.clone(), Arc::new(user(id))).await;
        self.moka_sync.insert(key.clone(), Arc::new(user(id)));
        self.quick.insert(key, Arc::new(user(id)));
        store_raw_user(&self.connection, id).await;
        self.redis_store
            .async_cache_set(id, user(id))
            .await
            .expect("prime the cached crate's store");
    }
    /// Puts users `ids` in every contender, then checks that each contender
    /// serves them as hits: ours holds them in L1 and in Redis, the `cached`
    /// crate in memory and in its Redis store, moka, moka sync and
    /// quick_cache in memory, Redis under `raw:user:<id>`. Returns how long
    /// each step took.
    ///
    /// Redis traffic runs [`FILL_CONCURRENCY`] calls at a time (pipelined
    /// for the raw values). Every id is read back from every in-process
    /// contender; from the Redis-backed ones, every 100th id (each of their
    /// writes was acknowledged, and the bench's redis-server evicts nothing:
    /// `noeviction`, no key expires within the hour), so that 100 000 keys
    /// take seconds. The benches' tier checks catch any read of ours that
    /// was not the hit it claims to be.
    pub async fn fill_keys(&self, ids: Range<u64>) -> String {
        let mut steps = Vec::new();
        let mut step = Instant::now();
        let mut done = |name: &str, step: &mut Instant| {
            steps.push(format!("{name} {:.1} s", step.elapsed().as_secs_f64()));
            *step = Instant::now();
        };
        let count = ids.end - ids.start;
        for id in ids.clone() {
            let key = format!("user:{id}");
            self.moka.insert(key.clone(), Arc::new(user(id))).await;
            self.moka_sync.insert(key.clone(), Arc::new(user(id)));
            self.quick.insert(key, Arc::new(user(id)));
            // The `cached` crate's in-memory macro fills itself on a miss.
            assert_eq!(cached_crate_get_user(id).await, Some(user(id)));
        }
        done("in-process", &mut step);

        let ids_vec: Vec<u64> = ids.clone().collect();
        for chunk in ids_vec.chunks(1000) {
            let mut pipe = redis::pipe();
            for &id in chunk {
                let encoded = bincode::serde::encode_to_vec(user(id), standard()).expect("encode");
                pipe.cmd("SET")
                    .arg(format!("raw:user:{id}"))
                    .arg(encoded)
                    .ignore();
            }
            let () = pipe
                .query_async(&mut self.connection.clone())
                .await
                .expect("SET the raw values");
        }
        done("raw Redis", &mut step);

        futures_util::stream::iter(ids.clone())
            .for_each_concurrent(FILL_CONCURRENCY, |id| async move {
                self.redis_store
                    .async_cache_set(id, user(id))
                    .await
                    .expect("prime the cached crate's store");
            })
            .await;
        done("the cached crate's Redis store", &mut step);

        let before = self.cache.stats();
        futures_util::stream::iter(ids.clone())
            .for_each_concurrent(FILL_CONCURRENCY, |id| async move {
                // A miss: loads, writes Redis and L1.
                assert_eq!(ours_get_user(&self.cache, id).await, Some(user(id)));
            })
            .await;
        // A load writes its value to Redis in the background: let every
        // write land, and none be dropped (`background_limit`).
        self.cache.settled().await;
        let after = self.cache.stats();
        assert_eq!(
            (
                after.background_dropped - before.background_dropped,
                after.l2_errors - before.l2_errors,
                after.l2_timeouts - before.l2_timeouts,
                after.l2_skipped - before.l2_skipped,
            ),
            (0, 0, 0, 0),
            "ours wrote every key it loaded to Redis without trouble"
        );
        done("ours", &mut step);

        // Every read below must be a hit: ours counts its tiers, the
        // `cached` crate's macro its entries, the others return `None` on
        // a miss.
        let before = self.cache.stats();
        for id in ids.clone() {
            let expected = Some(user(id));
            assert_eq!(ours_get_user(&self.cache, id).await, expected);
            assert_eq!(moka_get_user(&self.moka, id).await, expected);
            assert_eq!(moka_sync_get_user(&self.moka_sync, id).await, expected);
            assert_eq!(quick_cache_get_user(&self.quick, id).await, expected);
        }
        let held = cached::Cached::cache_size(&*CACHED_CRATE_GET_USER.read().await) as u64;
        assert!(
            held >= count,
            "the cached crate holds {held} entries, fewer than the {count} filled"
        );
        let sampled: Vec<u64> = ids.step_by(100).collect();
        futures_util::stream::iter(sampled.iter().copied())
            .for_each_concurrent(FILL_CONCURRENCY, |id| async move {
                let expected = Some(user(id));
                assert_eq!(ours_get_user_l2(&self.cache, id).await, expected);
                assert_eq!(redis_get_user(&self.connection, id).await, expected);
                assert_eq!(
                    cached_crate_redis_get_user(&self.redis_store, id).await,
                    expected
                );
            })
            .await;
        let after = self.cache.stats();
        assert_eq!(
            (
                after.loads - before.loads,
                after.l1_hits - before.l1_hits,
                after.l2_hits - before.l2_hits,
            ),
            (0, count, sampled.len() as u64),
            "ours serves every filled key from L1, and from Redis with L1 off"
        );
        done("read back", &mut step);
        steps.join(", ")
    }
}
