//! Where Redis is, and how a connection to it is made: one server named by
//! a URL (plain TCP, or TLS for `rediss://`), the master a set of Redis
//! Sentinels names, asked again whenever the master may have changed, or a
//! Redis Cluster reached through seed nodes.
//!
//! # TLS
//!
//! Through redis-rs's rustls connections (the `tls` feature). A server
//! certificate is checked against the system's trust store, or against the
//! CA certificates given to `redis_tls_root_ca` instead; `#insecure` at the
//! end of a URL (redis-rs's fragment) checks nothing, for local testing. A
//! certificate that does not verify fails the connection like a server that
//! is down (logged, retried, calls skip Redis): only a CA that does not
//! parse fails `build()`. rustls needs a process-wide crypto provider: when
//! the application installed none, `ring`'s is installed the first time a
//! TLS set-up is built (rustls would panic otherwise when more than one
//! provider is compiled in).
//!
//! # Sentinel
//!
//! Each connection (the first, each one made after a failure, and each
//! pub/sub subscription) asks the sentinels for the master first
//! (`SENTINEL MASTERS`, then `ROLE` on the master named), so after a
//! failover the next connection reaches the new master. L2 makes one when a
//! call fails on the connection or times out, when the breaker's probe
//! fails, and when a new subscription finds another master than the one its
//! connection for calls reaches (see `l2.rs`). The credentials and database
//! of the first sentinel URL are used for the master and every sentinel,
//! and its scheme for all of them (`rediss://` for TLS).
//!
//! # Cluster
//!
//! Calls go through redis-rs's cluster connection ([`Connection::Cluster`]):
//! it learns the slot map from the seeds, sends each command to the master
//! of its key's slot, follows `MOVED` and `ASK` while slots move, and
//! learns the map again when a node fails or a replica takes over. A
//! multi-key read (`MGET`) is split per slot by redis-rs and sent to every
//! master concerned at once; the few commands the cache sends together
//! otherwise (tag tokens) go as single commands at once rather than as one
//! pipeline, which a cluster only takes within one slot. Nothing the cache
//! does needs two keys in one script (see `keys.rs` for the layout).
//!
//! The subscription is a plain pub/sub connection to one node, taken from
//! the seeds in turn: classic `PUBLISH` reaches the subscribers of every
//! node of a cluster, so any node will do, and when that node fails the
//! next subscription is made to the next seed. (Why not sharded pub/sub:
//! see `invalidation.rs`.) The seed URLs must agree on credentials and
//! scheme, which redis-rs uses for every node it finds.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue,
    IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value,
};

use crate::error::Error;

/// Where the builder was told Redis is.
#[derive(Clone)]
pub(crate) enum RedisTarget {
    /// One server (`redis_url`).
    Server(String),
    /// The master named `master` by the sentinels at `sentinels`
    /// (`redis_sentinel`).
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
    /// A Redis Cluster, found through these seed nodes (`redis_cluster`).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// For logs, errors and `Debug`: URLs with their passwords replaced.
    pub(crate) fn redacted(&self) -> String {
        match self {
            RedisTarget::Server(url) => redact_url(url),
            RedisTarget::Sentinel { master, sentinels } => {
                format!(
                    "master {master:?} via sentinels [{}]",
                    redact_all(sentinels)
                )
            }
            RedisTarget::Cluster(seeds) => format!("cluster [{}]", redact_all(seeds)),
        }
    }

    /// The builder setting that names this target, for configuration errors.
    fn setting(&self) -> &'static str {
        match self {
            RedisTarget::Server(_) => "redis_url",
            RedisTarget::Sentinel { .. } => "redis_sentinel",
            RedisTarget::Cluster(_) => "redis_cluster",
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How connections to Redis are made (see the module docs).
pub(crate) struct Topology {
    servers: Servers,
    database: i64,
    insecure: bool,
    redacted: String,
}

enum Servers {
    /// One server, always the same.
    One(Client),
    /// The master the sentinels name now. A lock, as asking takes `&mut`
    /// (the sentinel client keeps its connections to the sentinels);
    /// asking happens off the request path, one connection at a time.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A cluster: `client` for calls, and a client per seed node for the
    /// subscription, used in turn (see the module docs).
    Cluster {
        client: ClusterClient,
        seeds: Vec<Client>,
        next_seed: AtomicUsize,
    },
}

/// A connection for calls, cheap to clone (each clone shares it).
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (or the master the sentinels named), multiplexed. Made
    /// again by `l2.rs` after it broke: not redis-rs's `ConnectionManager`,
    /// whose every command pays for reconnecting (a boxed future, a shared
    /// connection future cloned and polled, a second clone of the
    /// connection: about 0.3 µs a call, 5% of the CPU of a Redis hit under
    /// load).
    Server(MultiplexedConnection),
    /// A cluster: a multiplexed connection per node, each command routed
    /// by its key's slot.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Runs `commands` together: one pipeline (one round trip) to one
    /// server; on a cluster, each command on its own and all at once, as a
    /// pipeline is only taken within one slot.
    pub(crate) async fn each<T: FromRedisValue>(
        &mut self,
        commands: Vec<Cmd>,
    ) -> RedisResult<Vec<T>> {
        match self {
            Connection::Server(connection) => {
                let mut pipeline = redis::pipe();
                for command in commands {
                    pipeline.add_command(command);
                }
                pipeline.query_async(connection).await
            }
            Connection::Cluster(connection) => {
                futures_util::future::try_join_all(commands.into_iter().map(|command| {
                    let mut connection = connection.clone();
                    async move { command.query_async::<T>(&mut connection).await }
                }))
                .await
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Topology {
    /// Checks the settings and prepares the connections (no I/O).
    /// `connect_timeout` bounds each connection attempt a cluster
    /// connection makes to a node by itself.
    pub(crate) fn new(
        target: &RedisTarget,
        tls_root_ca: Option<&[u8]>,
        connect_timeout: Duration,
    ) -> Result<Topology, Error> {
        let setting = target.setting();
        let unusable = |url: &str, error: &redis::RedisError| {
            Error::config(
                setting,
                format!(
                    "{} is not a usable Redis URL ({}); expected redis://[user:password@]host:port[/db], or rediss:// for TLS",
                    redact_url(url),
                    kind_name(error)
                ),
            )
        };
        let parse_all = |urls: &[String]| {
            urls.iter()
                .map(|url| {
                    url.as_str()
                        .into_connection_info()
                        .map_err(|error| unusable(url, &error))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let (servers, first) = match target {
            RedisTarget::Server(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|error| unusable(url, &error))?;
                let client = match tls_root_ca {
                    None => Client::open(info.clone()).map_err(|error| unusable(url, &error))?,
                    Some(pem) => with_root_ca(info.clone(), pem)?,
                };
                (Servers::One(client), info)
            }
            RedisTarget::Sentinel { master, sentinels } => {
                let infos = parse_all(sentinels)?;
                let client = sentinel_client(master, &infos, tls_root_ca)?;
                (
                    Servers::Sentinel(tokio::sync::Mutex::new(client)),
                    infos[0].clone(),
                )
            }
            RedisTarget::Cluster(seeds) => {
                let infos = parse_all(seeds)?;
                let servers = cluster(&infos, tls_root_ca, connect_timeout)?;
                (servers, infos[0].clone())
            }
        };
        let insecure = matches!(first.addr(), ConnectionAddr::TcpTls { insecure: true, .. });
        if matches!(first.addr(), ConnectionAddr::TcpTls { .. }) {
            install_crypto_provider();
        }
        Ok(Topology {
            servers,
            database: first.redis_settings().db(),
            insecure,
            redacted: target.redacted(),
        })
    }

    /// A client for one server to connect to now: for Sentinel, the master
    /// the sentinels name (and confirm with `ROLE`) at this moment; on a
    /// cluster, the next seed node (for a subscription: see the module
    /// docs).
    pub(crate) async fn client(&self) -> RedisResult<Client> {
        match &self.servers {
            Servers::One(client) => Ok(client.clone()),
            Servers::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Servers::Cluster {
                seeds, next_seed, ..
            } => Ok(seeds[next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len()].clone()),
        }
    }

    /// A connection for calls, and for one server (not a cluster) the
    /// address of the server it reaches.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<(Connection, Option<ConnectionAddr>)> {
        if let Servers::Cluster { client, .. } = &self.servers {
            return Ok((
                Connection::Cluster(client.get_async_connection().await?),
                None,
            ));
        }
        let client = self.client().await?;
        let address = client.get_connection_info().addr().clone();
        Ok((
            Connection::Server(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ),
            Some(address),
        ))
    }

    /// Whether the server may change under the same settings (a failover
    /// Sentinel carries out), so a failed connection is worth making again
    /// through [`client`](Self::client).
    pub(crate) fn follows_failover(&self) -> bool {
        matches!(self.servers, Servers::Sentinel(_))
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.servers, Servers::Cluster { .. })
    }

    /// The database number: channels are scoped to it, as pub/sub ignores
    /// databases.
    pub(crate) fn database(&self) -> i64 {
        self.database
    }

    /// Whether TLS certificates go unchecked (`#insecure`).
    pub(crate) fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// For logs: the URLs with their passwords replaced.
    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// A client for `info` (a `rediss://` URL) that trusts the CA certificates
/// in `pem` instead of the system's.
fn with_root_ca(info: ConnectionInfo, pem: &[u8]) -> Result<Client, Error> {
    let certificates = root_certificates(pem)?;
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(Error::config(
            "redis_tls_root_ca",
            "a CA to trust needs a TLS connection: use a rediss:// URL",
        ));
    }
    build_with_tls(info, &certificates)
}

/// The sentinel client for `master`: the first URL's credentials, database
/// and scheme for every connection (see the module docs).
fn sentinel_client(
    master: &str,
    sentinels: &[ConnectionInfo],
    tls_root_ca: Option<&[u8]>,
) -> Result<SentinelClient, Error> {
    let invalid = |reason: String| Error::config("redis_sentinel", reason);
    if master.is_empty() {
        return Err(invalid("the master's name is empty".to_owned()));
    }
    let Some(first) = sentinels.first() else {
        return Err(invalid("no sentinel URL given".to_owned()));
    };
    let tls_mode = |info: &ConnectionInfo| match info.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => Some(*insecure),
        _ => None,
    };
    if sentinels
        .iter()
        .any(|info| tls_mode(info) != tls_mode(first))
    {
        return Err(invalid(
            "the sentinel URLs mix schemes (redis://, rediss://, #insecure): use one for all"
                .to_owned(),
        ));
    }
    if matches!(first.addr(), ConnectionAddr::Unix(_)) {
        return Err(invalid(
            "sentinels are reached over TCP, not a Unix socket".to_owned(),
        ));
    }
    let addresses = sentinels.iter().map(|info| info.addr().clone());
    let mut builder = SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)
        .map_err(|error| invalid(kind_name(&error)))?;
    let settings = first.redis_settings();
    if let Some(username) = settings.username() {
        builder = builder
            .set_client_to_redis_username(username)
            .set_client_to_sentinel_username(username);
    }
    if let Some(password) = settings.password() {
        builder = builder
            .set_client_to_redis_password(password)
            .set_client_to_sentinel_password(password);
    }
    builder = builder.set_client_to_redis_db(settings.db());
    if let Some(insecure) = tls_mode(first) {
        let mode = if insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        builder = builder
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_sentinel_tls_mode(mode);
    }
    if let Some(pem) = tls_root_ca {
        let certificates = root_certificates(pem)?;
        if tls_mode(first).is_none() {
            return Err(Error::config(
                "redis_tls_root_ca",
                "a CA to trust needs TLS connections: use rediss:// sentinel URLs",
            ));
        }
        builder = trust(builder, certificates);
    }
    builder.build().map_err(|error| invalid(kind_name(&error)))
}

/// The cluster client for calls and a client per seed for the
/// subscription. The seeds must agree on credentials and scheme (redis-rs
/// uses them for every node it finds).
fn cluster(
    seeds: &[ConnectionInfo],
    tls_root_ca: Option<&[u8]>,
    connect_timeout: Duration,
) -> Result<Servers, Error> {
    let invalid = |reason: String| Error::config("redis_cluster", reason);
    let Some(first) = seeds.first() else {
        return Err(invalid("no seed node URL given".to_owned()));
    };
    let tls_mode = |info: &ConnectionInfo| match info.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => Some(*insecure),
        _ => None,
    };
    if seeds.iter().any(|info| tls_mode(info) != tls_mode(first)) {
        return Err(invalid(
            "the seed URLs mix schemes (redis://, rediss://, #insecure): use one for all"
                .to_owned(),
        ));
    }
    if seeds
        .iter()
        .any(|info| matches!(info.addr(), ConnectionAddr::Unix(_)))
    {
        return Err(invalid(
            "cluster nodes are reached over TCP, not a Unix socket".to_owned(),
        ));
    }
    let certificates = tls_root_ca.map(root_certificates).transpose()?;
    if certificates.is_some() && tls_mode(first).is_none() {
        return Err(Error::config(
            "redis_tls_root_ca",
            "a CA to trust needs TLS connections: use rediss:// seed URLs",
        ));
    }
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(connect_timeout)
        // No response timeout of redis-rs' own: every call runs under
        // L2's deadline (see `l2.rs`). A few quick retries follow a
        // redirection (`MOVED`, `ASK`, `TRYAGAIN` while a slot moves) or
        // a node that failed over within that deadline.
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
    if let Some(certificates) = &certificates {
        builder = cluster_trust(builder, certificates);
    }
    let client = builder
        .build()
        .map_err(|error| invalid(kind_name(&error)))?;
    let seeds = seeds
        .iter()
        .map(|info| match &certificates {
            None => Client::open(info.clone()).map_err(|error| invalid(kind_name(&error))),
            Some(certificates) => build_with_tls(info.clone(), certificates),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Servers::Cluster {
        client,
        seeds,
        next_seed: AtomicUsize::new(0),
    })
}

/// How often redis-rs' cluster connection retries a command itself (see
/// [`cluster`]), and the bounds of its randomised pauses between tries.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 5;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 50;

/// CA certificates to trust: redis-rs's, or nothing without the `tls`
/// feature (then [`root_certificates`] always fails, and code that would use
/// them is statically unreachable).
#[cfg(feature = "tls")]
type RootCertificates = redis::TlsCertificates;
#[cfg(not(feature = "tls"))]
type RootCertificates = std::convert::Infallible;

/// The CA certificates in `pem` (one or more `CERTIFICATE` blocks), checked
/// here: redis-rs would take a text without any for an empty trust store,
/// which no server certificate passes.
#[cfg(feature = "tls")]
fn root_certificates(pem: &[u8]) -> Result<RootCertificates, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let invalid = |reason: String| Error::config("redis_tls_root_ca", reason);
    let mut anchors = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate =
            certificate.map_err(|error| invalid(format!("not PEM certificates: {error}")))?;
        anchors
            .add(certificate)
            .map_err(|error| invalid(format!("a certificate does not parse: {error}")))?;
    }
    if anchors.is_empty() {
        return Err(invalid(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----...)".to_owned(),
        ));
    }
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

#[cfg(not(feature = "tls"))]
fn root_certificates(_pem: &[u8]) -> Result<RootCertificates, Error> {
    Err(Error::config(
        "redis_tls_root_ca",
        "TLS needs cache-runtime's `tls` feature (on by default)",
    ))
}

#[cfg(feature = "tls")]
fn build_with_tls(info: ConnectionInfo, certificates: &RootCertificates) -> Result<Client, Error> {
    Client::build_with_tls(info, certificates.clone())
        .map_err(|error| Error::config("redis_tls_root_ca", kind_name(&error)))
}

#[cfg(not(feature = "tls"))]
fn build_with_tls(_info: ConnectionInfo, certificates: &RootCertificates) -> Result<Client, Error> {
    match *certificates {}
}

#[cfg(feature = "tls")]
fn trust(builder: SentinelClientBuilder, certificates: RootCertificates) -> SentinelClientBuilder {
    builder
        .set_client_to_redis_certificates(certificates.clone())
        .set_client_to_sentinel_certificates(certificates)
}

#[cfg(not(feature = "tls"))]
fn trust(_builder: SentinelClientBuilder, certificates: RootCertificates) -> SentinelClientBuilder {
    match certificates {}
}

#[cfg(feature = "tls")]
fn cluster_trust(
    builder: ClusterClientBuilder,
    certificates: &RootCertificates,
) -> ClusterClientBuilder {
    builder.certs(certificates.clone())
}

#[cfg(not(feature = "tls"))]
fn cluster_trust(
    _builder: ClusterClientBuilder,
    certificates: &RootCertificates,
) -> ClusterClientBuilder {
    match *certificates {}
}

/// The process-wide rustls crypto provider, when the application installed
/// none: `ring`'s (see the module docs).
fn install_crypto_provider() {
    #[cfg(feature = "tls")]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An error's kind and detail, which for a URL parse error never holds the
/// URL itself (the full `Display` might, password included).
fn kind_name(error: &redis::RedisError) -> String {
    match error.detail() {
        Some(detail) if !detail.contains('@') => format!("{:?}: {detail}", error.kind()),
        _ => format!("{:?}", error.kind()),
    }
}

/// The URLs with their passwords replaced, separated by commas.
fn redact_all(urls: &[String]) -> String {
    urls.iter()
        .map(|url| redact_url(url))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The URL with its password replaced by `***`, for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not URL-shaped: it could be anything, a password included.
        return "<unparsable URL>".to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| authority_start + at);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        None => url.to_owned(),
        Some(at) => {
            let user_info = &authority[..at];
            let user = user_info.split_once(':').map_or("", |(user, _)| user);
            format!(
                "{}{}:***@{}{}",
                &url[..authority_start],
                user,
                &authority[at + 1..],
                &url[authority_end..]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://app:hunter2@host"),
            "redis://app:***@host"
        );
        assert_eq!(
            redact_url("rediss://app:p@ss@host/1"),
            "rediss://app:***@host/1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("hunter2"), "<unparsable URL>");
    }
}
