//! The one error type of the runtime.

use std::fmt;

/// What went wrong. Only configuration problems and the explicit APIs
/// ([`Cache::invalidate`](crate::Cache::invalidate)) return it: a
/// `#[cached]` function never sees a Redis error.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let error = cache_runtime::Cache::builder()
///     .redis_url("not a url")
///     .build()
///     .await
///     .unwrap_err();
/// assert!(error.is_config());
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is invalid; the message says which and how to fix it.
    Config {
        /// The setting.
        setting: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Redis is not reachable now (not connected yet, or the breaker is open).
    Unavailable,
    /// A Redis call did not answer within the L2 timeout.
    Timeout,
    /// Redis answered with an error or the connection failed.
    Redis(redis::RedisError),
    /// Redis is full: it reached `maxmemory` with the `noeviction` policy,
    /// so it still answers but refuses writes that need memory. The
    /// connection is fine (the breaker does not count it); invalidations
    /// fall back to deleting the key.
    OutOfMemory,
    /// The connection reaches a read-only replica (typically the old master
    /// after a failover): every write is refused. The cache reconnects in
    /// the background to find the master the URL points at now.
    ReadOnly,
}

impl Error {
    pub(crate) fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            setting,
            reason: reason.into(),
        }
    }

    /// The builder was given an invalid setting.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. })
    }

    /// A Redis call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// Redis refused a write because it is full (`maxmemory` reached with
    /// `noeviction`).
    ///
    /// # Example
    ///
    /// ```
    /// let error = cache_runtime::Error::OutOfMemory;
    /// assert!(error.is_out_of_memory() && error.is_l2());
    /// ```
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::OutOfMemory)
    }

    /// Redis refused a write because the connection reaches a read-only
    /// replica.
    ///
    /// # Example
    ///
    /// ```
    /// let error = cache_runtime::Error::ReadOnly;
    /// assert!(error.is_read_only() && error.is_l2());
    /// ```
    pub fn is_read_only(&self) -> bool {
        matches!(self, Error::ReadOnly)
    }

    /// Redis could not be used: unreachable, timed out, failed, full or
    /// read-only. The local tier was still updated.
    pub fn is_l2(&self) -> bool {
        matches!(
            self,
            Error::Unavailable
                | Error::Timeout
                | Error::Redis(_)
                | Error::OutOfMemory
                | Error::ReadOnly
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { setting, reason } => write!(f, "invalid cache setting `{setting}`: {reason}"),
            Error::Unavailable => f.write_str(
                "Redis is unavailable (not connected yet, or the circuit breaker is open after repeated failures); \
                 check that Redis is up and `redis_url` points at it",
            ),
            Error::Timeout => f.write_str("Redis did not answer within the L2 timeout (`l2_timeout` on the builder)"),
            Error::Redis(error) => write!(f, "Redis call failed: {error}"),
            Error::OutOfMemory => f.write_str(
                "Redis is out of memory (`maxmemory` reached with the `noeviction` policy) and refuses writes; \
                 raise `maxmemory` or use an evicting policy such as `allkeys-lru` for a cache",
            ),
            Error::ReadOnly => f.write_str(
                "Redis refused a write because the connection reaches a read-only replica (after a failover?); \
                 the cache reconnects to find the master: point `redis_url` at the master",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(error) => Some(error),
            _ => None,
        }
    }
}
