//! Putting the app together: settings, metrics recorder, database, cache,
//! repository and router. `main` and the end-to-end test both start the
//! app through [`App::start`].

use std::error::Error;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use cache_runtime::{Cache, WriteBehindWorker};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use crate::db::{DEFAULT_REPORT_ROWS, Db, PoolSettings};
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
    /// `REPORT_ROWS`: how many orders the database is seeded with, which
    /// is what makes `GET /reports/sales` expensive (default
    /// [`DEFAULT_REPORT_ROWS`], small so that starting the app stays quick;
    /// 200,000 take SQLite 100 ms or more to add up).
    pub report_rows: u32,
    /// The write-behind worker of this process: `WRITE_BEHIND_WORKER`,
    /// `WRITE_BEHIND_BATCH_SIZE`, `WRITE_BEHIND_CLAIM_IDLE_SECS`,
    /// `WRITE_BEHIND_LEASE_SECS`, `WRITE_BEHIND_REQUIRE_DURABLE`.
    pub write_behind: WriteBehindSettings,
}

/// How this process applies queued last-seen writes (`POST /users/{id}/seen`).
///
/// Any number of instances may run a worker: they share the queue's
/// partitions. Instances with `WRITE_BEHIND_WORKER=off` still queue writes
/// (and serve reads); some instance must run a worker, or the queue only
/// grows (`/health` shows its depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehindSettings {
    /// `WRITE_BEHIND_WORKER=on|off` (default on).
    pub worker: bool,
    /// `WRITE_BEHIND_BATCH_SIZE` (default 100): writes read at once from a
    /// partition.
    pub batch_size: usize,
    /// `WRITE_BEHIND_CLAIM_IDLE_SECS` (default 10): how long a write another
    /// worker read stays unapplied before this one may take it over (that
    /// worker died). Longer than the slowest batch.
    pub claim_idle: Duration,
    /// `WRITE_BEHIND_LEASE_SECS` (default 10): how long a dead worker's
    /// partitions stay its own before another worker takes them.
    pub lease: Duration,
    /// `WRITE_BEHIND_REQUIRE_DURABLE=on|off` (default off): refuse to start
    /// the worker unless Redis keeps an append-only file (see the README);
    /// off, the app only logs a warning.
    pub require_durable: bool,
}

impl Default for WriteBehindSettings {
    fn default() -> WriteBehindSettings {
        WriteBehindSettings {
            worker: true,
            batch_size: 100,
            claim_idle: Duration::from_secs(10),
            lease: Duration::from_secs(10),
            require_durable: false,
        }
    }
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
            report_rows: DEFAULT_REPORT_ROWS,
            write_behind: WriteBehindSettings::default(),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, BoxError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let switch = |name: &str, default: bool| -> Result<bool, BoxError> {
            match var(name).as_deref() {
                None => Ok(default),
                Some("on") => Ok(true),
                Some("off") => Ok(false),
                Some(other) => Err(format!("{name} must be `on` or `off`, not `{other}`").into()),
            }
        };
        let cache_enabled = switch("CACHE", true)?;
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
        let write_behind = WriteBehindSettings {
            worker: switch("WRITE_BEHIND_WORKER", defaults.write_behind.worker)?,
            batch_size: count("WRITE_BEHIND_BATCH_SIZE")?
                .map_or(defaults.write_behind.batch_size, |count| count as usize),
            claim_idle: seconds(
                "WRITE_BEHIND_CLAIM_IDLE_SECS",
                defaults.write_behind.claim_idle,
            )?,
            lease: seconds("WRITE_BEHIND_LEASE_SECS", defaults.write_behind.lease)?,
            require_durable: switch(
                "WRITE_BEHIND_REQUIRE_DURABLE",
                defaults.write_behind.require_durable,
            )?,
        };
        let report_rows = count("REPORT_ROWS")?.unwrap_or(defaults.report_rows);
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
            report_rows,
            write_behind,
            ..defaults
        })
    }
}

/// A started app: its state (repository, metrics), background work, and
/// the write-behind worker (unless `WRITE_BEHIND_WORKER=off`).
pub struct App {
    pub state: AppState,
    background: JoinHandle<()>,
    worker: Option<WriteBehindWorker>,
}

impl App {
    pub async fn start(settings: &Settings) -> Result<App, BoxError> {
        // The recorder must exist before the cache is built: the cache binds
        // its metric handles then.
        let metrics = prometheus()?;
        let db =
            Db::connect_with(&settings.database_url, settings.pool, settings.report_rows).await?;
        let mut cache = Cache::builder().namespace(&settings.namespace);
        match (&settings.redis_url, settings.redis_cluster.as_slice()) {
            (Some(_), [_, ..]) => return Err("set REDIS_URL or REDIS_CLUSTER, not both".into()),
            (Some(url), []) => cache = cache.redis_url(url),
            (None, []) => {}
            (None, seeds) => cache = cache.redis_cluster(seeds),
        }
        let cache = cache.build().await?;
        let repo = Repo::new(db, cache, settings.cache_enabled);
        let worker = if settings.write_behind.worker {
            Some(start_worker(&repo, settings.write_behind).await?)
        } else {
            None
        };
        let background = tokio::spawn(background_work(repo.clone(), metrics.clone()));
        Ok(App {
            state: AppState {
                repo,
                metrics,
                write_behind_worker: worker.is_some(),
            },
            background,
            worker,
        })
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    pub fn repo(&self) -> &Repo {
        &self.state.repo
    }

    /// Stops background work and saves what it had not saved yet: the
    /// write-behind worker applies the writes it read before it stops (the
    /// rest stay queued for the next worker).
    pub async fn shutdown(self) {
        self.background.abort();
        if let Some(worker) = self.worker {
            worker.shutdown().await;
        }
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

/// Starts the worker that applies queued last-seen writes.
async fn start_worker(
    repo: &Repo,
    settings: WriteBehindSettings,
) -> Result<WriteBehindWorker, BoxError> {
    let worker = WriteBehindWorker::builder(&repo.cache)
        .handler(repo.clone().record_seen_handler())
        .batch_size(settings.batch_size)
        .claim_idle(settings.claim_idle)
        .lease(settings.lease)
        .require_durable(settings.require_durable)
        .start()
        .await?;
    Ok(worker)
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
