//! A user service whose repository is cached with `#[cached]`, with HTTP
//! caching (`ETag`, 304, `Cache-Control`) and Prometheus metrics.
//!
//! ```sh
//! cargo run --example axum_app                                  # in-process cache, SQLite file
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_app # plus Redis (L2, locks, invalidation)
//! REDIS_CLUSTER=redis://127.0.0.1:7001,redis://127.0.0.1:7002 cargo run --example axum_app # on a Redis Cluster
//! cargo run --example axum_app -- --warm 500                    # load the 500 most-read users first
//! ```
//!
//! Settings (environment): `HOST` (the IP address to listen on, default
//! 127.0.0.1: this machine only; `0.0.0.0` in a container), `PORT`
//! (default 3000), `DATABASE_URL` (default
//! `sqlite:target/axum_app.sqlite?mode=rwc`; a `postgres://` URL works
//! too; created, migrated and seeded on start),
//! `REDIS_URL` or `REDIS_CLUSTER` (seed URLs, comma-separated; optional),
//! `CACHE=off` (bypass the cache, to measure it),
//! `WARM=N` (same as `--warm N`), `REPORT_ROWS` (orders seeded for
//! `GET /reports/sales`, default 10,000; 200,000 make it a query of 100 ms
//! or more in SQLite), `RUST_LOG` (default `info`).
//!
//! Limits (environment; seconds may have a fraction): `HEADER_TIMEOUT_SECS`
//! (default 10: a connection's time to send a request's complete headers,
//! and so how long a kept-alive connection may idle), `REQUEST_TIMEOUT_SECS`
//! (15: from a request's headers to its response, body included; then
//! `408`), `MAX_CONNECTIONS` (768: more wait to be accepted),
//! `SHUTDOWN_GRACE_SECS` (10: what requests in flight get after Ctrl-C or
//! SIGTERM before their connections are closed), `DB_MAX_CONNECTIONS`
//! (4 for SQLite, 16 for Postgres), `DB_ACQUIRE_TIMEOUT_SECS` (2: the wait
//! for a pooled connection before the request gets `503` with
//! `Retry-After`). See `axum_app::serve`.
//!
//! Write-behind (environment; see `axum_app::app::WriteBehindSettings`):
//! `WRITE_BEHIND_WORKER` (`on`, default, or `off`: this process queues
//! last-seen writes but applies none; another instance's worker does),
//! `WRITE_BEHIND_BATCH_SIZE` (100), `WRITE_BEHIND_CLAIM_IDLE_SECS` (10: how
//! long a dead worker's unapplied writes wait before another worker takes
//! them), `WRITE_BEHIND_LEASE_SECS` (10: how long its partitions stay its
//! own), `WRITE_BEHIND_REQUIRE_DURABLE` (`off`, default, or `on`: refuse to
//! start the worker unless Redis keeps an append-only file).
//!
//! Routes: `GET /users/{id}`, `PUT /users/{id}` with `{"name": "..."}`,
//! `POST /users/{id}/seen` with no body or `{"at": <ms>}` (written behind
//! the cache), `GET /users/{id}/seen`, `GET /orgs/{id}/users`,
//! `GET /metrics`, `GET /health` (with the write-behind queue's backlog).
//!
//! The modules live in `examples/axum_app/`, the root package's library
//! `axum_app`; `tests/app.rs` starts the same app through `app::App::start`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum_app::app::{App, BoxError, Settings};
use axum_app::serve::serve;
use axum_app::warm;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Each load's `cache.load` span (function, key template, outcome)
        // is logged with its duration when it closes; a hit logs nothing.
        // `RUST_LOG=info,cache_runtime=warn` hides them.
        .with_span_events(FmtSpan::CLOSE)
        .init();

    let settings = Settings::from_env()?;
    let address = listen_address()?;
    let warm = warm_count()?;

    let app = App::start(&settings).await?;
    tracing::info!(
        database = %redact(&settings.database_url),
        redis = settings.redis_url.is_some() || !settings.redis_cluster.is_empty(),
        cache = settings.cache_enabled,
        "started"
    );
    if warm > 0 {
        if settings.cache_enabled {
            let warmed = warm::warm(app.repo(), warm).await?;
            tracing::info!(loaded = warmed.loaded, failed = warmed.failed, "warmed");
        } else {
            tracing::warn!("CACHE=off: not warming");
        }
    }

    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    serve(listener, app.router(), settings.limits, shutdown_signal()).await?;
    tracing::info!("shutting down: connections closed");
    app.shutdown().await;
    Ok(())
}

/// Where to listen: `HOST` (an IP address, default 127.0.0.1: only this
/// machine can connect; `0.0.0.0` in a container, whose port is published)
/// and `PORT` (default 3000).
fn listen_address() -> Result<SocketAddr, BoxError> {
    let host: IpAddr = match std::env::var("HOST") {
        Ok(host) => host.parse().map_err(|_| {
            format!("HOST must be an IP address (127.0.0.1, 0.0.0.0, ::), not `{host}`")
        })?,
        Err(_) => Ipv4Addr::LOCALHOST.into(),
    };
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, not `{port}`"))?,
        Err(_) => 3000,
    };
    Ok(SocketAddr::new(host, port))
}

/// `--warm N` or `WARM=N`; 0 when neither is given.
fn warm_count() -> Result<usize, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut value = std::env::var("WARM").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--warm" => value = Some(args.next().ok_or("--warm needs a number")?),
            other => return Err(format!("unknown argument `{other}` (expected --warm N)").into()),
        }
    }
    match value {
        None => Ok(0),
        Some(value) => value
            .parse()
            .map_err(|_| format!("--warm/WARM must be a number of users, not `{value}`").into()),
    }
}

/// Resolves on Ctrl-C (or SIGTERM): the server stops accepting, gives the
/// requests in flight `SHUTDOWN_GRACE_SECS` to finish, and `main` saves
/// what is left to save.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The database URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
