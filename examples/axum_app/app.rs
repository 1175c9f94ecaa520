//! Putting the app together: settings, metrics recorder, database, cache,
//! repository and router. `main` and the end-to-end test both start the
//! app through [`App::start`].

use std::error::Error;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use cache_runtime::Cache;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use crate::db::{Db, PoolSettings};
use crate::repo::Repo;
use crate::routes::{AppState, router};
use crate::serve::Limits;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// How often read counts are written to `user_reads` (for `--warm`).
const READS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The app's settings, from the environment ([`Settings::from_env`]); the
/// defaults are what an empty environment gives.
///
/// ```
/// use std::time::Duration;
/// use axum_app::app::Settings;
/// use axum_app::serve::Limits;
///
/// let settings = Settings {
///     database_url: "sqlite::memory:".into(),
///     limits: Limits {
///         header_timeout: Duration::from_secs(1),
///         ..Limits::default()
///     },
///     ..Settings::default()
/// };
/// assert!(settings.cache_enabled);
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`: a SQLite (`sqlite:...`) or Postgres (`postgres://...`) URL.
    pub database_url: String,
    /// `REDIS_URL`: switches on the Redis tier, locks and cross-instance
    /// invalidation. Unset (and no `REDIS_CLUSTER`): in-process cache only.
    pub redis_url: Option<String>,
    /// `REDIS_CLUSTER`: the same on a Redis Cluster, through these seed
    /// nodes (comma-separated URLs). Empty: not a cluster.
    pub redis_cluster: Vec<String>,
    /// `CACHE=off` sends every read to the database.
    pub cache_enabled: bool,
    /// Redis keys and channels start with this; instances that share data
    /// must share it.
    pub namespace: String,
    /// What slow or numerous clients may hold, and how long a shutdown
    /// waits: `HEADER_TIMEOUT_SECS`, `REQUEST_TIMEOUT_SECS`,
    /// `MAX_CONNECTIONS`, `SHUTDOWN_GRACE_SECS`.
    pub limits: Limits,
    /// The database pool: `DB_MAX_CONNECTIONS`, `DB_ACQUIRE_TIMEOUT_SECS`.
    pub pool: PoolSettings,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            database_url: "sqlite:target/axum_app.sqlite?mode=rwc".into(),
            redis_url: None,
            redis_cluster: Vec::new(),
            cache_enabled: true,
            namespace: "axum_app".into(),
            limits: Limits::default(),
            pool: PoolSettings::default(),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, BoxError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let cache_enabled = match var("CACHE").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("CACHE must be `on` or `off`, not `{other}`").into()),
        };
        let defaults = Settings::default();
        let seconds = |name: &str, default: Duration| -> Result<Duration, BoxError> {
            let Some(value) = var(name) else {
                return Ok(default);
            };
            value
                .parse::<f64>()
                .ok()
                .filter(|seconds| *seconds > 0.0)
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .ok_or_else(|| {
                    format!("{name} must be a positive number of seconds, not `{value}`").into()
                })
        };
        let count = |name: &str| -> Result<Option<u32>, BoxError> {
            let Some(value) = var(name) else {
                return Ok(None);
            };
            match value.parse::<u32>() {
                Ok(count) if count > 0 => Ok(Some(count)),
                _ => Err(format!("{name} must be a positive whole number, not `{value}`").into()),
            }
        };
        let limits = Limits {
            header_timeout: seconds("HEADER_TIMEOUT_SECS", defaults.limits.header_timeout)?,
            request_timeout: seconds("REQUEST_TIMEOUT_SECS", defaults.limits.request_timeout)?,
            max_connections: count("MAX_CONNECTIONS")?
                .map_or(defaults.limits.max_connections, |count| count as usize),
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECS", defaults.limits.shutdown_grace)?,
        };
        let pool = PoolSettings {
            max_connections: count("DB_MAX_CONNECTIONS")?.or(defaults.pool.max_connections),
            acquire_timeout: seconds("DB_ACQUIRE_TIMEOUT_SECS", defaults.pool.acquire_timeout)?,
        };
        Ok(Settings {
            database_url: var("DATABASE_URL").unwrap_or(defaults.database_url),
            redis_url: var("REDIS_URL"),
            redis_cluster: var("REDIS_CLUSTER")
                .map(|seeds| {
                    seeds
                        .split(',')
                        .map(str::trim)
                        .filter(|seed| !seed.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            cache_enabled,
            limits,
            pool,
            ..defaults
        })
    }
}

/// A started app: its state (repository, metrics) and background work.
pub struct App {
    pub state: AppState,
    background: JoinHandle<()>,
}

impl App {
    pub async fn start(settings: &Settings) -> Result<App, BoxError> {
        // The recorder must exist before the cache is built: the cache binds
        // its metric handles then.
        let metrics = prometheus()?;
        let db = Db::connect_with(&settings.database_url, settings.pool).await?;
        let mut cache = Cache::builder().namespace(&settings.namespace);
        match (&settings.redis_url, settings.redis_cluster.as_slice()) {
            (Some(_), [_, ..]) => return Err("set REDIS_URL or REDIS_CLUSTER, not both".into()),
            (Some(url), []) => cache = cache.redis_url(url),
            (None, []) => {}
            (None, seeds) => cache = cache.redis_cluster(seeds),
        }
        let cache = cache.build().await?;
        let repo = Repo::new(db, cache, settings.cache_enabled);
        let background = tokio::spawn(background_work(repo.clone(), metrics.clone()));
        Ok(App {
            state: AppState { repo, metrics },
            background,
        })
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    pub fn repo(&self) -> &Repo {
        &self.state.repo
    }

    /// Stops background work and saves what it had not saved yet.
    pub async fn shutdown(self) {
        self.background.abort();
        if let Err(error) = self.state.repo.flush_reads().await {
            tracing::warn!(%error, "could not save read counts");
        }
        // The cache writes loaded values to Redis after their calls
        // returned: let the last ones land (bounded, Redis may be down).
        let settled = self.state.repo.cache.settled();
        if tokio::time::timeout(Duration::from_secs(5), settled)
            .await
            .is_err()
        {
            tracing::warn!("the cache's last Redis writes did not finish within 5 s");
        }
        self.state.repo.db.close().await;
    }
}

/// The process-wide Prometheus recorder, installed on first use.
fn prometheus() -> Result<PrometheusHandle, BoxError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            // Load times: from a fast index lookup to a slow report.
            .set_buckets_for_metric(
                Matcher::Full("cache_load_duration_seconds".into()),
                &[
                    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|error| format!("cannot install the metrics recorder: {error}"))
    });
    handle.clone().map_err(Into::into)
}

/// Saves read counts now and then, and runs the recorder's upkeep.
async fn background_work(repo: Repo, metrics: PrometheusHandle) {
    let mut tick = tokio::time::interval(READS_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.run_upkeep();
        if let Err(error) = repo.flush_reads().await {
            tracing::warn!(%error, "could not save read counts");
        }
    }
}
