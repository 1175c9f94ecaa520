//! The builder and the validated configuration.

use std::fmt;
use std::time::Duration;

use crate::background::Background;
use crate::breaker::Slowness;
use crate::clock::TestClock;
use crate::codec::{Codec, MAX_PAYLOAD_CEILING};
use crate::error::Error;
use crate::keys::invalid_namespace_reason;
use crate::l2::L2Settings;
use crate::topology::{RedisTarget, Topology};

/// Builds a [`Cache`](crate::Cache). Every setting has a default; only bad settings make
/// [`build`](CacheBuilder::build) fail, never an unreachable Redis.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::Cache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::builder()
///     .namespace("app")
///     .l1_capacity(50_000)
///     .l2_timeout(Duration::from_millis(50))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
///
/// `Debug` shows every setting, Redis URLs with their passwords replaced.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct CacheBuilder {
    pub(crate) namespace: String,
    pub(crate) redis: Option<RedisTarget>,
    pub(crate) redis_tls_root_ca: Option<RootCa>,
    pub(crate) l1_capacity: usize,
    pub(crate) l1_max_bytes: u64,
    pub(crate) l1_max_ttl: Duration,
    pub(crate) l2_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) breaker_slow_call_duration: Option<Duration>,
    pub(crate) breaker_slow_call_rate: f64,
    pub(crate) default_jitter: f64,
    pub(crate) max_value_bytes: usize,
    pub(crate) codec: Codec,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) refresh_timeout: Duration,
    pub(crate) refresh_retry_after: Duration,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) invalidation_backlog: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) background_limit: usize,
    pub(crate) disabled: bool,
    pub(crate) test_clock: Option<TestClock>,
    pub(crate) strict_global: bool,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            namespace: "cache".to_owned(),
            redis: None,
            redis_tls_root_ca: None,
            l1_capacity: 10_000,
            l1_max_bytes: 64 << 20,
            l1_max_ttl: Duration::from_secs(60),
            l2_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(5),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(2),
            breaker_slow_call_duration: None,
            breaker_slow_call_rate: 0.5,
            default_jitter: 0.0,
            max_value_bytes: 4 << 20,
            codec: Codec::Bincode,
            lock_ttl: Duration::from_secs(5),
            lock_wait: Duration::from_secs(3),
            refresh_timeout: Duration::from_secs(30),
            refresh_retry_after: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(300),
            invalidation_backlog: 10_000,
            heartbeat_interval: Duration::from_secs(1),
            background_limit: 1_000,
            disabled: false,
            test_clock: None,
            strict_global: false,
        }
    }
}

impl CacheBuilder {
    /// Prefix of every key in Redis: keys are `<namespace>:<rendered template>`.
    /// Default `cache`. Same character rules as key templates (no whitespace,
    /// none of `{ } * ? [ ]`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Redis URL (`redis://[user:password@]host:port[/db]`, or
    /// `rediss://...` for TLS). Without it the cache is in-process only. The
    /// password never appears in logs, errors or `Debug` output. Replaces a
    /// [`redis_sentinel`](Self::redis_sentinel) set before.
    ///
    /// Over TLS, the server's certificate is checked against the system's
    /// trust store, or against [`redis_tls_root_ca`](Self::redis_tls_root_ca);
    /// `rediss://host:port/#insecure` checks nothing (for local testing
    /// only; logged as a warning). A certificate that does not verify is a
    /// connection failure: logged, retried in the background, and calls run
    /// their bodies meanwhile.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_url("redis://:secret@127.0.0.1:6380/0") // or rediss:// for TLS
    ///     .connect_timeout(Duration::from_millis(100))
    ///     .build()
    ///     .await?; // also when Redis cannot be reached now
    /// assert!(!format!("{cache:?}").contains("secret"));
    /// # Ok(()) }
    /// ```
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisTarget::Server(url.into()));
        self
    }

    /// Redis through Sentinel: the master named `master` by the sentinels at
    /// `sentinel_urls` (`redis://host:26379`, or `rediss://` for TLS).
    /// Replaces a [`redis_url`](Self::redis_url) set before.
    ///
    /// The cache asks the sentinels for the master whenever it connects, and
    /// connects again when a call fails on the connection, times out, or
    /// meets a replica (`READONLY`): after a failover it finds the new master
    /// by itself (within about a [`reconnect_max_delay`](Self::reconnect_max_delay)
    /// once the sentinels have promoted it), and its invalidation
    /// subscription follows. Meanwhile calls run their bodies, waiting on
    /// Redis no longer than the [`l2_timeout`](Self::l2_timeout).
    ///
    /// The user, password and database of the first URL are used for the
    /// master and for every sentinel, and its scheme for all of them (TLS
    /// for both, with [`redis_tls_root_ca`](Self::redis_tls_root_ca) if
    /// set).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_sentinel(
    ///         "mymaster",
    ///         ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380", "redis://127.0.0.1:26381"],
    ///     )
    ///     .connect_timeout(Duration::from_millis(100))
    ///     .build()
    ///     .await?; // also when no sentinel answers now
    /// # drop(cache); Ok(()) }
    /// ```
    pub fn redis_sentinel(
        mut self,
        master: impl Into<String>,
        sentinel_urls: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.redis = Some(RedisTarget::Sentinel {
            master: master.into(),
            sentinels: sentinel_urls.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// A Redis Cluster, found through `seed_urls` (some of its nodes:
    /// `redis://host:7001`, or `rediss://` for TLS; list several, so that
    /// one node down does not matter). Replaces a
    /// [`redis_url`](Self::redis_url) or
    /// [`redis_sentinel`](Self::redis_sentinel) set before.
    ///
    /// Each entry lives on the master of its key's slot, so entries spread
    /// over every master; a lock shares its entry's slot (see
    /// [Scaling out](crate#scaling-out) for the key layout). The cache follows redirections
    /// while slots move and the new master after a failover by itself;
    /// meanwhile the calls concerned run their bodies, waiting on Redis no
    /// longer than the [`l2_timeout`](Self::l2_timeout). Invalidations are
    /// classic pub/sub messages, which reach every node; the subscription
    /// is made to one seed node and moves to the next when that one fails.
    ///
    /// The seed URLs must agree on the user, password and scheme: they are
    /// used for every node the cluster reports (with
    /// [`redis_tls_root_ca`](Self::redis_tls_root_ca) if set).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_cluster(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
    ///     .connect_timeout(Duration::from_millis(100))
    ///     .build()
    ///     .await?; // also when no node answers now
    /// # drop(cache); Ok(()) }
    /// ```
    pub fn redis_cluster(mut self, seed_urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.redis = Some(RedisTarget::Cluster(
            seed_urls.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// The certificate authority (or several: a PEM bundle) that Redis'
    /// TLS certificates are checked against, instead of the system's trust
    /// store: for a Redis whose certificate a private CA signed. Needs a
    /// `rediss://` URL (or `rediss://` sentinels) and the `tls` feature (on
    /// by default). [`build`](Self::build) fails when `pem` holds no
    /// certificate or one that does not parse; a server certificate it does
    /// not verify (another CA, another host name) is a connection failure,
    /// logged, never an error of a call.
    ///
    /// ```
    /// # #[cfg(feature = "tls")]
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("cache-doc-ca-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let path = dir.join("ca.pem");
    /// # std::fs::write(&path, concat!(
    /// # "-----BEGIN CERTIFICATE-----\n",
    /// # "MIIBkDCCATegAwIBAgIUZ3ceSJMN/5ul+z5nbAXEVeWRpQ4wCgYIKoZIzj0EAwIw\n",
    /// # "HTEbMBkGA1UEAwwSZXhhbXBsZSBwcml2YXRlIENBMCAXDTI2MTEzMDA1MDkyMFoY\n",
    /// # "DzIxMjYxMTA2MDUwOTIwWjAdMRswGQYDVQQDDBJleGFtcGxlIHByaXZhdGUgQ0Ew\n",
    /// # "WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQN0mgCtcNvPcaYpWpo3zSpLQpBC3se\n",
    /// # "YInp8MKh9ATV9fHIc6+zU0ybrfV1eykb/5l3ch0z/9KWLl922QqIyGyso1MwUTAd\n",
    /// # "BgNVHQ4EFgQUz9ddtebiBNlb/XI8TP79qc4eRh8wHwYDVR0jBBgwFoAUz9ddtebi\n",
    /// # "BNlb/XI8TP79qc4eRh8wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBE\n",
    /// # "AiAjFKfRu6VcY1vXDrfP8UPfNqJymrITYgDUbY/ry/CZtgIgTt4x4Lt52I9aJjCE\n",
    /// # "bOqUhOOR7s0x5mUIHNGC8kpnUyI=\n",
    /// # "-----END CERTIFICATE-----\n",
    /// # ))?;
    /// let ca = std::fs::read(&path)?; // e.g. "/etc/redis/ca.pem"
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_url("rediss://127.0.0.1:6380")
    ///     .redis_tls_root_ca(ca)
    ///     .connect_timeout(std::time::Duration::from_millis(100))
    ///     .build()
    ///     .await?;
    ///
    /// let not_a_ca = cache_runtime::Cache::builder()
    ///     .redis_url("rediss://127.0.0.1:6380")
    ///     .redis_tls_root_ca(path.to_string_lossy().as_bytes()) // its path, not its contents
    ///     .build()
    ///     .await;
    /// assert!(not_a_ca.unwrap_err().is_config());
    /// # drop(cache);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// # #[cfg(not(feature = "tls"))] fn main() {} // TLS needs the `tls` feature
    /// ```
    pub fn redis_tls_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.redis_tls_root_ca = Some(RootCa(pem.into()));
        self
    }

    /// Maximum number of entries in the in-process tier (default 10 000).
    /// `0` turns the in-process tier off.
    pub fn l1_capacity(mut self, entries: usize) -> Self {
        self.l1_capacity = entries;
        self
    }

    /// Approximate byte budget of the in-process tier (default 64 MiB).
    /// Each entry weighs its value's encoded size (measured also for
    /// values too large for Redis), its key and about 160 bytes of
    /// bookkeeping.
    ///
    /// The tier is split into shards (one lock each, at most four per
    /// core), each with an equal part of the budget, and an entry must fit
    /// in one shard. The shard count is chosen so that a shard holds a
    /// value of [`max_value_bytes`](CacheBuilder::max_value_bytes): with the
    /// defaults, 8 shards of 8 MiB; below `max_value_bytes`, the whole
    /// budget is one shard (a 1 MiB budget keeps values of up to about
    /// 1 MiB). A value larger than a shard's part is returned but not kept
    /// in L1, and counted in `Stats::l1_rejected` (logged at most once per
    /// 10 s).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// // 16 MiB, in shards that each hold a 1 MiB value.
    /// let cache = cache_runtime::Cache::builder()
    ///     .l1_max_bytes(16 << 20)
    ///     .max_value_bytes(1 << 20)
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.stats().l1_rejected, 0);
    /// # Ok(()) }
    /// ```
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1_max_bytes = bytes;
        self
    }

    /// With Redis configured: the longest time an entry stays in the
    /// in-process tier, whatever its TTL (default 60 s). It bounds how long
    /// another instance's write can go unseen here if an invalidation
    /// message is lost; past it the entry is read from Redis again. Without
    /// Redis there are no other instances and no messages, so it does not
    /// apply: an entry stays in L1 for its TTL (and `stale`).
    pub fn l1_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.l1_max_ttl = max_ttl;
        self
    }

    /// How long one call waits on Redis in all (default 200 ms): every
    /// Redis command a call waits on (tag versions, the read, the lock)
    /// draws from this one budget; when it runs out the call treats Redis
    /// as a miss and runs its body. A command that times out counts as a
    /// failure for the circuit breaker.
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.l2_timeout = timeout;
        self
    }

    /// Deadline of one connection attempt (default 1 s); `build` waits at
    /// most this long for the first one.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest pause between two background connection attempts while Redis
    /// cannot be reached at start (default 5 s). Pauses are randomised.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// Consecutive Redis failures that open the circuit breaker (default 5).
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker_threshold = failures;
        self
    }

    /// How long the breaker stays open before one call probes Redis again
    /// (default 2 s; each opening draws from 0.5x to 1.5x of it).
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = cooldown;
        self
    }

    /// A Redis call that takes this long or longer is slow (default: half
    /// the L2 timeout). When at least
    /// [`breaker_slow_call_rate`](Self::breaker_slow_call_rate) of a window
    /// of 20 calls are slow, the circuit breaker opens, as it does after
    /// repeated failures: a Redis that answers, but slowly, would otherwise
    /// cost every call its whole L2 timeout. The breaker's probe closes it
    /// only on an answer quicker than this.
    pub fn breaker_slow_call_duration(mut self, slow: Duration) -> Self {
        self.breaker_slow_call_duration = Some(slow);
        self
    }

    /// The share of slow calls in a window of 20 that opens the circuit
    /// breaker (default 0.5; in `0.0 < rate <= 1.0`). See
    /// [`breaker_slow_call_duration`](Self::breaker_slow_call_duration).
    pub fn breaker_slow_call_rate(mut self, rate: f64) -> Self {
        self.breaker_slow_call_rate = rate;
        self
    }

    /// Jitter for functions whose attribute sets none (default 0: exact TTLs).
    /// Must be in `0.0..1.0`.
    pub fn default_jitter(mut self, jitter: f64) -> Self {
        self.default_jitter = jitter;
        self
    }

    /// Largest encoded value stored in Redis (default 4 MiB, at most 64 MiB).
    /// Larger values are still returned, and counted in
    /// `Stats::l2_unstorable`; they are kept in L1 when they fit in one of
    /// its shards, which are sized to hold a value of this size (see
    /// [`l1_max_bytes`](CacheBuilder::l1_max_bytes)).
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// How values are encoded in Redis (default [`Codec::Bincode`]): JSON
    /// for entries that services in other languages read, postcard for a
    /// maintained compact format. Each entry records its codec: an entry of
    /// another codec under one of this cache's keys is a miss, left in
    /// place, never decoded (see [`Codec`]). `max_value_bytes` bounds the
    /// encoded value in the chosen codec.
    ///
    /// ```
    /// use cache_runtime::{Cache, Codec};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = Cache::builder()
    ///     .namespace("profiles")
    ///     .codec(Codec::Json)
    ///     .build()
    ///     .await?;
    /// # let _ = cache;
    /// # Ok(()) }
    /// ```
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// `lock`: how long the Redis lock lives without being extended (default
    /// 5 s). The owner extends it every third of this while its body runs,
    /// so it only bounds how long a crashed owner keeps the lock.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// `lock`: how long a caller waits for another instance's load before
    /// running the body itself (default 3 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// `early` / `stale`: hard deadline of a background refresh (default
    /// 30 s), so a stuck refresh cannot pin a stale value forever.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout;
        self
    }

    /// `stale`: after a failed background refresh, how long before the next
    /// attempt for that key (default 5 s); meanwhile callers get the stale
    /// value (fail-safe) without triggering refreshes.
    pub fn refresh_retry_after(mut self, pause: Duration) -> Self {
        self.refresh_retry_after = pause;
        self
    }

    /// How long the tombstone an invalidation leaves in Redis lives (default
    /// 5 min). A load that started before an invalidation and ends within
    /// this time cannot write its older value back.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// How many invalidations (keys and tags, each counted once however
    /// often it is invalidated) are kept while Redis does not take them, to
    /// be replayed when it answers again (default 10 000, at least 1).
    ///
    /// While any are kept, this instance does not read Redis (other
    /// instances may still hold the old values there). When the backlog is
    /// full the oldest entry is dropped for the new one (counted in
    /// `Stats::invalidations_dropped` and logged): its key may then be
    /// served from Redis by other instances until it expires. Each entry
    /// costs about twice its key's length plus 100 bytes.
    ///
    /// # Example
    /// Most Redis jobs run in the background at once (default 1 000): a
    /// load's Redis write, its `lock` "filled" message and the lock's
    /// release, which the caller does not wait for. When that many run
    /// (Redis is slow), new ones are dropped, never queued, and counted in
    /// `Stats::background_dropped`: a value not written is a later miss, a
    /// lock not released lives out its `lock_ttl`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .invalidation_backlog(50_000)
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.stats().invalidations_pending, 0);
    /// # Ok(()) }
    /// ```
    pub fn invalidation_backlog(mut self, entries: usize) -> Self {
        self.invalidation_backlog = entries;
        self
    }

    /// How often this cache sends a heartbeat through its own invalidation
    /// channel (default 1 s), to notice a subscription that stopped
    /// delivering without closing. When a heartbeat Redis took has not
    /// come back within three intervals, and Redis still takes the later
    /// ones, the subscription is treated as lost: L1 is cleared (messages
    /// were missed), the pub/sub connection is replaced, and
    /// `Stats::channel_silences` counts it. Another instance's
    /// invalidation is then missed for at most about four intervals. While
    /// Redis does not answer at all, nothing is concluded (invalidations
    /// cannot be published either, and L1 keeps serving).
    ///
    /// Cost: one `PUBLISH` per interval, off the request path; every
    /// instance on the channel receives every other one's heartbeats (one
    /// short message per instance per interval), so a large fleet may want
    /// a longer interval.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::builder()
    ///     .heartbeat_interval(Duration::from_secs(5)) // silences noticed within ~20 s
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.stats().channel_silences, 0);
    /// # Ok(()) }
    /// ```
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Most Redis jobs run in the background at once (default 1 000): a
    /// load's Redis write, its `lock` "filled" message and the lock's
    /// release, which the caller does not wait for. When that many run
    /// (Redis is slow), new ones are dropped, never queued, and counted in
    /// `Stats::background_dropped`: a value not written is a later miss, a
    /// lock not released lives out its `lock_ttl`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .background_limit(200)
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.stats().background_dropped, 0);
    /// # Ok(()) }
    /// ```
    pub fn background_limit(mut self, jobs: usize) -> Self {
        self.background_limit = jobs;
        self
    }

    /// Turns caching off (`true`), for tests of code that uses the cache
    /// or to compare with and without it: every call runs its body, nothing
    /// is read or stored, Redis is not connected (its settings are still
    /// validated), and concurrent calls of one key each run their body (no
    /// single-flight). The stats still count each call as a miss and a
    /// load. Invalidations succeed and do nothing; `#[write_behind]` runs
    /// its body at once.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().disabled(true).build().await?;
    /// let load = || async { Some(42u32) };
    /// cache.get_or_load("answer", Duration::from_secs(60), load).await;
    /// cache.get_or_load("answer", Duration::from_secs(60), load).await;
    /// assert_eq!((cache.stats().misses, cache.stats().loads), (2, 2));
    /// # Ok(()) }
    /// ```
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled;
        self
    }

    /// Expiry by `clock`, a [`TestClock`] the test moves by hand, instead
    /// of the system's clocks alone (which a paused Tokio clock does not
    /// move). See [`TestClock`] for an example.
    pub fn test_clock(mut self, clock: &TestClock) -> Self {
        self.test_clock = Some(clock.clone());
        self
    }

    /// Once this cache is built, a function that reaches for
    /// [`Cache::global`](crate::Cache::global) before any
    /// [`set_global`](crate::Cache::set_global) panics (naming the
    /// function) instead of warning and running with an in-process-only
    /// default: for test suites that want a forgotten `set_global` to fail
    /// loudly. Applies to the whole process, from the `build`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // In a test suite's set-up (it applies to the whole process):
    /// let cache = cache_runtime::Cache::builder().strict_global(true).build().await.unwrap();
    /// let _ = cache_runtime::Cache::global(); // panics: no set_global yet
    /// # }
    /// ```
    pub fn strict_global(mut self, strict: bool) -> Self {
        self.strict_global = strict;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Some(reason) = invalid_namespace_reason(&self.namespace) {
            return Err(Error::config(
                "namespace",
                format!("{:?} is not a valid namespace: {reason}", self.namespace),
            ));
        }
        if !(0.0..1.0).contains(&self.default_jitter) {
            return Err(Error::config(
                "default_jitter",
                format!(
                    "{} is outside 0.0..1.0 (0.2 means TTLs vary by ±20%)",
                    self.default_jitter
                ),
            ));
        }
        for (setting, value) in [
            ("l1_max_ttl", self.l1_max_ttl),
            ("l2_timeout", self.l2_timeout),
            ("connect_timeout", self.connect_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("reconnect_max_delay", self.reconnect_max_delay),
            ("lock_ttl", self.lock_ttl),
            ("lock_wait", self.lock_wait),
            ("refresh_timeout", self.refresh_timeout),
            ("refresh_retry_after", self.refresh_retry_after),
            ("tombstone_ttl", self.tombstone_ttl),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if value.is_zero() {
                return Err(Error::config(setting, "must be greater than zero"));
            }
        }
        if self.breaker_slow_call_duration == Some(Duration::ZERO) {
            return Err(Error::config(
                "breaker_slow_call_duration",
                "must be greater than zero",
            ));
        }
        if !(self.breaker_slow_call_rate > 0.0 && self.breaker_slow_call_rate <= 1.0) {
            return Err(Error::config(
                "breaker_slow_call_rate",
                format!(
                    "{} is outside 0.0 < rate <= 1.0 (0.5 opens the breaker when half the calls are slow)",
                    self.breaker_slow_call_rate
                ),
            ));
        }
        if self.breaker_threshold == 0 {
            return Err(Error::config("breaker_threshold", "must be at least 1"));
        }
        if self.invalidation_backlog == 0 {
            return Err(Error::config(
                "invalidation_backlog",
                "must be at least 1 (invalidations Redis did not take are kept to be replayed)",
            ));
        }
        if self.background_limit == 0 || self.background_limit > Background::MAX_LIMIT {
            return Err(Error::config(
                "background_limit",
                format!("must be between 1 and {}", Background::MAX_LIMIT),
            ));
        }
        if self.l1_capacity > 0 && self.l1_max_bytes == 0 {
            return Err(Error::config(
                "l1_max_bytes",
                "must be greater than zero (use `l1_capacity(0)` to turn L1 off)",
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_PAYLOAD_CEILING {
            return Err(Error::config(
                "max_value_bytes",
                format!("must be between 1 and {MAX_PAYLOAD_CEILING} bytes"),
            ));
        }
        self.topology()?;
        Ok(())
    }

    /// How L2 connects, when Redis is configured and caching is not
    /// [`disabled`](CacheBuilder::disabled); checks the Redis settings
    /// (URLs, the CA) without any I/O, also when it is.
    pub(crate) fn topology(&self) -> Result<Option<Topology>, Error> {
        let topology = self.configured_topology()?;
        Ok(topology.filter(|_| !self.disabled))
    }

    fn configured_topology(&self) -> Result<Option<Topology>, Error> {
        self.redis
            .as_ref()
            .map(|target| {
                Topology::new(
                    target,
                    self.redis_tls_root_ca.as_ref().map(|ca| ca.0.as_slice()),
                    self.connect_timeout,
                )
            })
            .transpose()
    }

    /// What L2 needs of these settings.
    pub(crate) fn l2_settings(&self) -> L2Settings {
        L2Settings {
            timeout: self.l2_timeout,
            connect_timeout: self.connect_timeout,
            reconnect_max_delay: self.reconnect_max_delay,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
            slowness: Slowness {
                duration: self
                    .breaker_slow_call_duration
                    .unwrap_or(self.l2_timeout / 2),
                rate: self.breaker_slow_call_rate,
            },
        }
    }
}

/// CA certificates (PEM) to trust; `Debug` shows only their size.
#[derive(Clone)]
pub(crate) struct RootCa(pub(crate) Vec<u8>);

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of PEM>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_and_shows_every_setting() {
        let builder = CacheBuilder::default().redis_url("redis://:hunter2@127.0.0.1:1");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://:***@127.0.0.1:1"), "{shown}");
        for setting in [
            "reconnect_max_delay",
            "tombstone_ttl",
            "refresh_retry_after",
            "invalidation_backlog",
            "heartbeat_interval",
        ] {
            assert!(shown.contains(setting), "{setting} missing from {shown}");
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = [
            CacheBuilder::default().namespace("a b"),
            CacheBuilder::default().namespace(""),
            CacheBuilder::default().default_jitter(1.0),
            CacheBuilder::default().default_jitter(-0.1),
            CacheBuilder::default().l2_timeout(Duration::ZERO),
            CacheBuilder::default().breaker_threshold(0),
            CacheBuilder::default().breaker_slow_call_rate(0.0),
            CacheBuilder::default().breaker_slow_call_rate(1.5),
            CacheBuilder::default().breaker_slow_call_rate(f64::NAN),
            CacheBuilder::default().breaker_slow_call_duration(Duration::ZERO),
            CacheBuilder::default().heartbeat_interval(Duration::ZERO),
            CacheBuilder::default().max_value_bytes(0),
            CacheBuilder::default().invalidation_backlog(0),
            CacheBuilder::default().background_limit(0),
            CacheBuilder::default().redis_url("not a url"),
            CacheBuilder::default().redis_url("http://:hunter2@127.0.0.1"),
            CacheBuilder::default().redis_sentinel("mymaster", Vec::<String>::new()),
            CacheBuilder::default().redis_sentinel("", ["redis://127.0.0.1:26379"]),
            CacheBuilder::default().redis_sentinel("mymaster", ["not a url"]),
            CacheBuilder::default().redis_sentinel(
                "mymaster",
                [
                    "redis://:hunter2@127.0.0.1:1",
                    "http://:hunter2@127.0.0.1:2",
                ],
            ),
            CacheBuilder::default()
                .redis_sentinel("mymaster", ["redis://127.0.0.1:1", "rediss://127.0.0.1:2"]),
            CacheBuilder::default()
                .redis_url("rediss://:hunter2@127.0.0.1:1")
                .redis_tls_root_ca(b"hunter2".to_vec()),
            CacheBuilder::default().redis_cluster(Vec::<String>::new()),
            CacheBuilder::default().redis_cluster(["redis://:hunter2@127.0.0.1:1", "not a url"]),
            CacheBuilder::default()
                .redis_cluster(["redis://:hunter2@127.0.0.1:1", "rediss://127.0.0.1:2"]),
            CacheBuilder::default()
                .redis_cluster(["redis://:hunter2@127.0.0.1:1", "redis://127.0.0.1:2"]),
            CacheBuilder::default()
                .redis_cluster(["redis://:hunter2@127.0.0.1:1"])
                .redis_tls_root_ca(b"-----BEGIN CERTIFICATE-----".to_vec()),
        ];
        for builder in bad {
            let error = builder.validate().unwrap_err();
            assert!(error.is_config(), "{error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert!(CacheBuilder::default().validate().is_ok());
        assert!(
            CacheBuilder::default()
                .redis_url("redis://127.0.0.1:1")
                .validate()
                .is_ok()
        );
        assert!(
            CacheBuilder::default()
                .redis_sentinel(
                    "mymaster",
                    ["redis://:pw@127.0.0.1:26379/2", "redis://127.0.0.1:26380"]
                )
                .validate()
                .is_ok()
        );
        assert!(
            CacheBuilder::default()
                .redis_cluster(["redis://:pw@127.0.0.1:7001", "redis://:pw@127.0.0.1:7002"])
                .validate()
                .is_ok()
        );
        let shown = format!(
            "{:?}",
            CacheBuilder::default().redis_cluster(["redis://:hunter2@127.0.0.1:7001"])
        );
        assert!(
            shown.contains("cluster [redis://:***@127.0.0.1:7001]"),
            "{shown}"
        );
        // The last of `redis_url` and `redis_sentinel` wins.
        let builder = CacheBuilder::default()
            .redis_url("redis://127.0.0.1:1")
            .redis_sentinel("mymaster", ["redis://:hunter2@127.0.0.1:26379"]);
        let shown = format!("{builder:?}");
        assert!(
            shown.contains(r#"master "mymaster" via sentinels [redis://:***@127.0.0.1:26379]"#),
            "{shown}"
        );
        assert!(!shown.contains("redis://127.0.0.1:1)"), "{shown}");
    }
}
