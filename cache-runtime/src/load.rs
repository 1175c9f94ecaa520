//! The cache-aside path every `#[cached]` function runs through.
//!
//! 1. L1: a fresh entry of the right type is returned at once (no `await`).
//! 2. Single-flight: one caller per key and process goes on; the others
//!    wait for its outcome.
//! 3. L2: the leader reads Redis; a decodable entry fills L1 and returns.
//! 4. Load: the leader runs the body, stores `Ok` values (and `None`, when
//!    `negative` is set) in L1 and L2 with one jittered TTL, hands the value
//!    to the waiters and returns. `Err` is returned and never stored.
//!
//! Redis problems anywhere in this path are misses; they never reach the
//! caller.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, Inner, jittered};
use crate::codec;
use crate::flight::{Outcome, Role};
use crate::keys::{KeyBuf, storage_key};
use crate::l1::AnyValue;
use crate::shape::{CacheValue, Loaded, Shape};
use crate::stats::bump;

/// The static description of one `#[cached]` function, built by the macro.
#[derive(Debug)]
pub struct Site {
    /// The function's name, for logs.
    pub function: &'static str,
    /// The key template as written (logged instead of rendered keys, which
    /// may hold personal data).
    pub template: &'static str,
    /// How long a value is fresh.
    pub ttl: Duration,
    /// TTL jitter; `None` uses the cache's default.
    pub jitter: Option<f64>,
    /// How long a `None` is cached; `None` means it is not.
    pub negative: Option<Duration>,
    /// Whether this function uses the in-process tier.
    pub l1: bool,
}

/// Runs one `#[cached]` call: returns the cached value or runs `load`.
pub async fn get_or_load<R, M, F>(cache: &Cache, site: &'static Site, key: KeyBuf, load: F) -> R
where
    M: Shape<R>,
    F: Future<Output = R>,
{
    let inner = &*cache.inner;
    if site.l1
        && let Some(hit) = inner.l1_lookup::<R, M>(key.as_str())
    {
        return hit;
    }
    inner.miss::<R, M, F>(site, key.as_str(), load).await
}

/// A value to write to Redis once the caller's waiters are released.
struct L2Write {
    bytes: Vec<u8>,
    ttl: Duration,
}

/// What one call produced: its return value, what waiters get, what goes
/// to Redis.
struct Served<R> {
    returned: R,
    outcome: Outcome,
    l2_write: Option<L2Write>,
}

/// What a read of Redis found.
enum L2Lookup<R> {
    Hit(Served<R>),
    /// Redis answered: nothing usable (absent, undecodable, other shape).
    Miss,
    /// No Redis, or it did not answer (skipped, failed, timed out).
    Unavailable,
}

impl Inner {
    #[inline]
    fn l1_lookup<R, M: Shape<R>>(&self, key: &str) -> Option<R> {
        let entry = self.l1.as_ref()?.get(key)?;
        let found = match &entry.value {
            Some(value) => M::from_value(value.downcast_ref::<M::Value>()?.clone()),
            None => {
                let absent = M::absent()?;
                bump(&self.counters.negative_hits);
                absent
            }
        };
        bump(&self.counters.l1_hits);
        Some(found)
    }

    async fn miss<R, M, F>(&self, site: &'static Site, key: &str, load: F) -> R
    where
        M: Shape<R>,
        F: Future<Output = R>,
    {
        let storage_key = storage_key(&self.namespace, key);
        let outcome = loop {
            match self.flights.join(key) {
                Role::Leader(leader) => {
                    let lookup = self.l2_lookup::<R, M>(site, key, &storage_key).await;
                    let l2_answered = matches!(lookup, L2Lookup::Miss);
                    let served = match lookup {
                        L2Lookup::Hit(served) => served,
                        L2Lookup::Miss | L2Lookup::Unavailable => {
                            bump(&self.counters.misses);
                            self.load::<R, M, F>(site, key, load).await
                        }
                    };
                    // Waiters are released before the Redis write.
                    leader.complete(served.outcome);
                    // Only write when the read just worked: after a failed or
                    // timed-out read a write would most likely wait out the
                    // timeout too, and a call waits on Redis at most once.
                    if l2_answered {
                        self.l2_write(&storage_key, served.l2_write).await;
                    }
                    return served.returned;
                }
                Role::Waiter(waiter) => match waiter.outcome().await {
                    Some(outcome) => break outcome,
                    // The leader was cancelled or panicked: try to take over.
                    None => continue,
                },
            }
        };
        bump(&self.counters.misses);
        match outcome {
            Outcome::Value(value) => {
                if let Some(value) = value.downcast_ref::<M::Value>() {
                    bump(&self.counters.coalesced);
                    return M::from_value(value.clone());
                }
            }
            Outcome::Absent => {
                if let Some(absent) = M::absent() {
                    bump(&self.counters.coalesced);
                    return absent;
                }
            }
            Outcome::Failed => {}
        }
        // The leader's body failed (errors are not shared, so each waiter
        // gets its own) or its value has another type: run our own body,
        // without a flight.
        let served = self.load::<R, M, F>(site, key, load).await;
        self.l2_write(&storage_key, served.l2_write).await;
        served.returned
    }

    /// Reads Redis; a usable entry also fills L1.
    async fn l2_lookup<R, M: Shape<R>>(
        &self,
        site: &'static Site,
        key: &str,
        storage_key: &str,
    ) -> L2Lookup<R> {
        let Some(l2) = self.l2.as_ref() else {
            return L2Lookup::Unavailable;
        };
        // Errors were counted and logged by L2: for a read they are a miss.
        let bytes = match l2.get(storage_key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return L2Lookup::Miss,
            Err(_) => return L2Lookup::Unavailable,
        };
        let decoded = match codec::decode::<M::Value>(&bytes, self.max_value_bytes) {
            Ok(decoded) => decoded,
            Err(reason) => {
                bump(&self.counters.l2_undecodable);
                tracing::debug!(
                    function = site.function,
                    template = site.template,
                    ?reason,
                    "undecodable value in Redis: treated as a miss and overwritten"
                );
                return L2Lookup::Miss;
            }
        };
        let remaining = decoded.remaining(codec::now_ms());
        let (returned, value) = match decoded.value {
            Some(value) => (
                M::from_value(value.clone()),
                Some(Arc::new(value) as AnyValue),
            ),
            // A negative entry, read by a function that cannot return `None`
            // (another function shares the key): a miss for this one.
            None => match M::absent() {
                Some(absent) => (absent, None),
                None => return L2Lookup::Miss,
            },
        };
        if value.is_none() {
            bump(&self.counters.negative_hits);
        }
        bump(&self.counters.l2_hits);
        self.l1_store(site, key, value.clone(), remaining, bytes.len());
        L2Lookup::Hit(Served {
            returned,
            outcome: value.map_or(Outcome::Absent, Outcome::Value),
            l2_write: None,
        })
    }

    /// Runs the body and stores what may be stored in L1; returns the L2
    /// write still to do.
    async fn load<R, M, F>(&self, site: &'static Site, key: &str, load: F) -> Served<R>
    where
        M: Shape<R>,
        F: Future<Output = R>,
    {
        bump(&self.counters.loads);
        let started = Instant::now();
        let returned = load.await;
        let took = started.elapsed();
        let jitter = site.jitter.unwrap_or(self.default_jitter);
        match M::split(returned) {
            Loaded::Value(value) => {
                let ttl = jittered(site.ttl, jitter);
                let bytes = self.encode(site, &value, ttl, took);
                let value = Arc::new(value);
                self.l1_store(
                    site,
                    key,
                    Some(value.clone()),
                    ttl,
                    bytes.as_ref().map_or(0, Vec::len),
                );
                Served {
                    returned: M::from_value(M::Value::clone(&value)),
                    outcome: Outcome::Value(value),
                    l2_write: bytes.map(|bytes| L2Write { bytes, ttl }),
                }
            }
            Loaded::Absent(returned) => {
                let l2_write = site.negative.map(|negative| {
                    let ttl = jittered(negative, jitter);
                    self.l1_store(site, key, None, ttl, 0);
                    L2Write {
                        bytes: codec::encode_negative::<M::Value>(ttl, took),
                        ttl,
                    }
                });
                Served {
                    returned,
                    outcome: Outcome::Absent,
                    l2_write,
                }
            }
            Loaded::Failed(returned) => {
                bump(&self.counters.load_errors);
                Served {
                    returned,
                    outcome: Outcome::Failed,
                    l2_write: None,
                }
            }
        }
    }

    /// Encodes a value for Redis (its length also sizes the L1 entry).
    fn encode<V: CacheValue>(
        &self,
        site: &'static Site,
        value: &V,
        ttl: Duration,
        took: Duration,
    ) -> Option<Vec<u8>> {
        match codec::encode(value, ttl, took, self.max_value_bytes) {
            Ok(bytes) => Some(bytes),
            Err(reason) => {
                bump(&self.counters.l2_unstorable);
                if let Some(suppressed) = self.unstorable_log.admit() {
                    tracing::warn!(function = site.function, template = site.template, %reason, suppressed, "value not stored in Redis");
                }
                None
            }
        }
    }

    fn l1_store(
        &self,
        site: &'static Site,
        key: &str,
        value: Option<AnyValue>,
        ttl: Duration,
        approx_bytes: usize,
    ) {
        if site.l1
            && let Some(l1) = &self.l1
        {
            l1.insert(key, value, ttl, approx_bytes);
        }
    }

    async fn l2_write(&self, storage_key: &str, write: Option<L2Write>) {
        if let (Some(l2), Some(write)) = (&self.l2, write) {
            // Failures were counted and logged by L2; the value is still
            // returned and in L1.
            let _ = l2.set(storage_key, &write.bytes, write.ttl).await;
        }
    }
}
