//! The HTTP server: the router served over HTTP/1.1 with every client
//! bounded in time and in number, and a shutdown that ends.
//!
//! `axum::serve` has no header-read timeout, no request or connection
//! limit, and its graceful shutdown waits for every connection however
//! long it takes: one client sending its headers a byte at a time held a
//! connection open indefinitely and kept SIGTERM from completing, and a few
//! hundred such clients used up the process's file descriptors. Here:
//!
//! - hyper's `header_read_timeout` bounds the time to a request's complete
//!   headers; it runs from when the connection opened or answered its
//!   previous request, so it is also the keep-alive idle timeout;
//! - tower's `Timeout` bounds each request from its headers to its
//!   response, reading the body included, so a body that trickles in gets
//!   `408 Request Timeout`;
//! - a semaphore bounds the connections open at once: past it the server
//!   stops accepting, and new connections wait in the kernel's listen
//!   backlog (without using a file descriptor of this process) until the
//!   timeouts free a slot;
//! - on the shutdown signal it stops accepting, closes idle connections,
//!   lets requests in flight finish for `shutdown_grace`, then closes what
//!   is left.
//!
//! Only HTTP/1.1 is served: hyper's HTTP/2 server has no header-read
//! timeout, so a silent HTTP/2 connection would hold its slot until the
//! grace period of a shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

/// How long and how many: what slow or numerous clients may hold, and how
/// long a shutdown waits for them. The defaults suit the example app
/// (answers in milliseconds, loopback clients); `Settings::from_env` reads
/// each from the environment.
///
/// ```
/// use std::time::Duration;
/// use axum_app::serve::Limits;
///
/// let limits = Limits {
///     header_timeout: Duration::from_secs(1),
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_connections, Limits::default().max_connections);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a request's complete
    /// headers, counted from when it opened or answered its previous
    /// request: so also how long a kept-alive connection may sit idle.
    /// Past it the connection is closed. `HEADER_TIMEOUT_SECS`, default
    /// 10 s.
    pub header_timeout: Duration,
    /// How long a request may take from its headers to its response,
    /// reading its body included. Past it the answer is `408 Request
    /// Timeout` and the connection is closed. `REQUEST_TIMEOUT_SECS`,
    /// default 15 s: above the database's worst case (a 2 s wait for a
    /// pooled connection plus SQLite's 5 s busy timeout).
    pub request_timeout: Duration,
    /// Connections open at once; more wait to be accepted until one
    /// closes. `MAX_CONNECTIONS`, default 768: under the usual 1024
    /// open-file limit with room for the database, Redis and the log, and
    /// above the load test's 512 requests in flight.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after the shutdown
    /// signal before their connections are closed anyway.
    /// `SHUTDOWN_GRACE_SECS`, default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            max_connections: 768,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown_signal`
/// resolves, then shuts down gracefully for at most
/// `limits.shutdown_grace`. Returns once every connection is closed.
///
/// Fails only if the listener cannot report its address; an error
/// accepting one connection is logged and the server goes on (after a
/// second's pause if the process is out of file descriptors).
///
/// ```no_run
/// use axum::Router;
/// use axum::routing::get;
/// use axum_app::serve::{Limits, serve};
///
/// # async fn run() -> std::io::Result<()> {
/// let router = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let ctrl_c = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// serve(listener, router, Limits::default(), ctrl_c).await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown_signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(request_failed))
        .layer(TimeoutLayer::new(limits.request_timeout))
        .service(router);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Zero would never accept anything.
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Owns the connections' tasks: dropping it (past the grace period, or
    // when this future is dropped) closes them.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown_signal);

    loop {
        while connections.try_join_next().is_some() {}
        // The slot is taken before accepting, so that past the limit the
        // connections wait in the listen backlog, not in this process.
        let slot = tokio::select! {
            () = &mut shutdown_signal => break,
            slot = connection_slots.clone().acquire_owned() => {
                slot.expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown_signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors (some other part of the
                        // process used them up), most likely: give them
                        // time to close rather than spin.
                        tracing::error!(%error, "accept error");
                        tokio::select! {
                            () = &mut shutdown_signal => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        // Answers are small and written whole: send them at once.
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                // Header timeouts and clients that hang up land here.
                tracing::debug!(%error, %peer, "connection closed with an error");
            }
            drop(slot);
        });
    }

    drop(listener);
    while connections.try_join_next().is_some() {}
    tracing::info!(
        %address,
        open = connections.len(),
        "stopped accepting; letting requests in flight finish"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        tracing::warn!(
            still_open = connections.len(),
            "requests still in flight after the {:?} shutdown grace period: closing their connections",
            limits.shutdown_grace
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// What the request timeout (the one fallible layer) turns into.
async fn request_failed(error: BoxError) -> Response {
    if error.is::<Elapsed>() {
        let mut response = (
            StatusCode::REQUEST_TIMEOUT,
            Json(
                serde_json::json!({ "error": "the request took too long to arrive or to answer" }),
            ),
        )
            .into_response();
        // Its body may be half read: the connection cannot carry another.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    tracing::error!(%error, "request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": "internal error" })),
    )
        .into_response()
}

/// Errors that concern one connection (the client gave up before it was
/// accepted), not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
