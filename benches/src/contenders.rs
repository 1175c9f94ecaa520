//! The functions every contender's call goes through, the same in every
//! bench: ours (`#[cached]`), the `cached` crate's, and what a user of moka,
//! quick_cache or redis-rs would write by hand. Hit functions use a 1 h TTL,
//! so that nothing expires during a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bincode::config::standard;
use cache_runtime::{Cache, cached};
use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::{User, user};

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
        // would turn some L1 hits into L2 hits).
        let cache = crate::connected(
            Cache::builder()
                .namespace("bench")
                .redis_url(url)
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
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let moka_sync = moka::sync::Cache::<String, Arc<User>>::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let quick = quick_cache::sync::Cache::<String, Arc<User>>::new(10_000);
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
}
