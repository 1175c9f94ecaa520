//! L2: Redis, through one redis-rs multiplexed connection (or its cluster
//! connection, see `topology.rs`), behind a deadline and a circuit breaker.
//!
//! # Behaviour when Redis misbehaves
//!
//! - Connecting happens in a background task, never on the request path:
//!   until the first connection succeeds, L2 counts as unavailable and calls
//!   skip it. Attempts are spaced by randomised exponential pauses
//!   ("full jitter"), drawn per process, so a fleet does not reconnect in step.
//! - Once connected, a command that finds the connection broken (an I/O
//!   error, the connection dropped) makes a fresh one in the background, one
//!   attempt at a time (no hidden retry loop whose fixed schedule would be
//!   shared by every process); while Redis stays away, the breaker's probe
//!   makes the next attempts. A cluster connection reconnects to its nodes
//!   by itself.
//! - A caller waits on Redis for at most the L2 timeout in all: one budget
//!   per call ([`Budget`]) that every command it waits on draws from, however
//!   many there are (tag tokens, the read, the lock). What it does not wait
//!   for (writes after a load, fill messages, lock releases) runs in the
//!   background with a timeout per command.
//! - A failure or timeout counts against the breaker, and so does slowness
//!   (see `breaker.rs`); on a cluster, against the breaker of the master
//!   serving the call's key (see `nodes.rs`). After a run of failures, or a
//!   window of mostly slow calls, calls skip Redis entirely (on a cluster,
//!   for that master's slots) and a background probe pings it after
//!   randomised cool-downs; the first quick answer closes the breaker.
//!   Requests never wait on a reconnection.
//! - Scripts are sent whole (`EVAL`), never by hash: a Redis that restarted,
//!   failed over or flushed its script cache answers them at once, instead
//!   of costing a `NOSCRIPT` round trip and a `SCRIPT LOAD` on some call.
//! - Errors are counted and logged (at most once per 10 s per kind), and
//!   returned to the caller, which for `#[cached]` means "treat as a miss".
//! - Two error replies say something about the server rather than the call
//!   ([`Refusal`]): `OOM` (full under `noeviction`: it answers, so the
//!   breaker does not count it, and callers fall back to commands that free
//!   memory, such as `DEL`) and `READONLY` (the connection reaches a
//!   replica, typically the old master after a failover: a fresh connection
//!   is made in the background, so that the master the URL names now is
//!   found again).
//! - Through Sentinel (see `topology.rs`), a call that fails on the
//!   connection or times out, and a failed probe of the open breaker, also
//!   make a fresh connection in the background, to the master the sentinels
//!   name then. One at a time, then a randomised pause.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue};

use crate::breaker::{Breaker, Call, Slowness};
use crate::clock::backoff_delay;
use crate::error::Error;
use crate::logging::Throttle;
use crate::nodes::{Layout, Node, NodeBreakers};
use crate::stats::{BreakerState, Counters, bump};
use crate::topology::{Connection, Topology};

/// How L2 connects and when it gives up on Redis (from the builder).
#[derive(Debug, Clone)]
pub(crate) struct L2Settings {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_max_delay: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub slowness: Slowness,
}

tokio::task_local! {
    /// The Redis time the current call may still wait (see [`Budget`]).
    static BUDGET: Cell<Option<Duration>>;
}

/// One call's time for Redis: every command the call waits on runs under
/// what is left of it, and uses up what it took. A call that would wait
/// longer skips Redis (a miss) instead.
///
/// Held in a task-local for the length of the call ([`Budget::scope`]), so
/// the read path, tags and lock need not pass it along; work spawned from
/// the call (background writes, refreshes) is outside it and has a timeout
/// per command.
pub(crate) struct Budget;

impl Budget {
    /// Runs `call` with a budget of `time`: a new one, whatever an outer
    /// call had left (a body that calls another cached function starts a
    /// call of its own).
    pub(crate) fn scope<F: Future>(time: Duration, call: F) -> impl Future<Output = F::Output> {
        BUDGET.scope(Cell::new(Some(time)), call)
    }

    /// Runs `work` outside any call's budget, each command under its own
    /// timeout: for work no caller waits for, even the part of it that runs
    /// while a caller is polled (see `background.rs`).
    pub(crate) fn outside<F: Future>(work: F) -> impl Future<Output = F::Output> {
        BUDGET.scope(Cell::new(None), work)
    }

    /// What the current call has left (`None` outside a call).
    pub(crate) fn left() -> Option<Duration> {
        BUDGET.try_with(Cell::get).ok().flatten()
    }

    /// Uses up `took` of the current call's budget (nothing outside a call).
    fn spend(took: Duration) {
        let _ = BUDGET.try_with(|left| left.set(left.get().map(|left| left.saturating_sub(took))));
    }
}

/// A Lua script, sent whole with `EVAL` (see the module docs).
pub(crate) struct Script(&'static str);

impl Script {
    pub(crate) const fn new(source: &'static str) -> Script {
        Script(source)
    }
}

/// A Redis client: one multiplexed connection, a deadline per call and a
/// circuit breaker. It knows nothing of what the cache stores in Redis.
pub(crate) struct L2 {
    /// Where Redis is: each connection is made through it.
    topology: Arc<Topology>,
    connection: ArcSwapOption<Connection>,
    /// The server `connection` was made to (not on a cluster): through
    /// Sentinel, told apart from the master the sentinels name now (see
    /// [`L2::pubsub`]).
    connected_to: ArcSwapOption<ConnectionAddr>,
    /// On one server, the breaker; on a cluster, the breaker of calls
    /// without a key or whose key's master is not known yet.
    breaker: Breaker,
    /// On a cluster, the slot map and a breaker per master (`nodes.rs`).
    nodes: Option<NodeBreakers>,
    timeout: Duration,
    counters: Arc<Counters>,
    error_log: Throttle,
    timeout_log: Throttle,
    out_of_memory_log: Throttle,
    read_only_log: Throttle,
    /// How a connection is made: for the connection made again after it
    /// broke, a `READONLY` reply or, through Sentinel, a failure.
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    reconnect_max_delay: Duration,
    /// True while a connection is made again (one at a time, then a pause).
    reconnecting: AtomicBool,
    /// For logs only: the URLs with their passwords replaced.
    redacted_url: String,
}

/// Why a fresh connection is made in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconnect {
    /// A `READONLY` reply: the connection reaches a replica.
    ReadOnly,
    /// A command found the connection broken (not on a cluster).
    Broken,
    /// Through Sentinel, a call failed on the connection or timed out: the
    /// master may have changed.
    Failure,
}

/// What an error reply says about the server (the class of
/// [`Error::OutOfMemory`] and [`Error::ReadOnly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `OOM`: full (`maxmemory` under `noeviction`); alive and answering.
    OutOfMemory,
    /// `READONLY`: the connection reaches a replica.
    ReadOnly,
}

impl Refusal {
    /// The class of an error reply, also when a script relays it (`-OOM
    /// ... script: ...`); `None` for any other error.
    pub(crate) fn of(error: &redis::RedisError) -> Option<Refusal> {
        match error.code()? {
            "OOM" => Some(Refusal::OutOfMemory),
            "READONLY" => Some(Refusal::ReadOnly),
            _ => None,
        }
    }
}

impl L2 {
    /// Starts connecting in the background and waits for the first attempt
    /// at most `connect_timeout`. Never fails: an unreachable Redis (or one
    /// whose TLS certificate does not verify) is retried in the background.
    pub(crate) async fn start(
        settings: &L2Settings,
        topology: Topology,
        counters: Arc<Counters>,
    ) -> Arc<L2> {
        let topology = Arc::new(topology);
        if topology.is_insecure() {
            tracing::warn!(
                redis = %topology.redacted(),
                "TLS certificates of Redis are not checked (#insecure in the URL): for local testing only"
            );
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            // No response timeout of redis-rs' own: every call already runs
            // under `run_with`'s deadline, and a second timer per call costs
            // CPU on the hot path for nothing.
            .set_response_timeout(None);
        let l2 = Arc::new(L2 {
            topology: topology.clone(),
            connection: ArcSwapOption::empty(),
            connected_to: ArcSwapOption::empty(),
            breaker: Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cooldown,
                settings.slowness,
                counters.exported.breaker_state.clone(),
            ),
            nodes: topology.is_cluster().then(|| {
                NodeBreakers::new(
                    settings.breaker_threshold,
                    settings.breaker_cooldown,
                    settings.slowness,
                )
            }),
            timeout: settings.timeout,
            counters,
            error_log: Throttle::default(),
            timeout_log: Throttle::default(),
            out_of_memory_log: Throttle::default(),
            read_only_log: Throttle::default(),
            config: config.clone(),
            connect_timeout: settings.connect_timeout,
            reconnect_max_delay: settings.reconnect_max_delay,
            reconnecting: AtomicBool::new(false),
            redacted_url: topology.redacted().to_owned(),
        });
        let (first_attempt_done, first_attempt) = tokio::sync::oneshot::channel();
        tokio::spawn(connect_in_background(
            Arc::downgrade(&l2),
            topology,
            config,
            settings.connect_timeout,
            settings.reconnect_max_delay,
            first_attempt_done,
        ));
        // Bounded: the attempt itself is bounded by connect_timeout too.
        let _ = tokio::time::timeout(settings.connect_timeout, first_attempt).await;
        l2
    }

    /// The L2 timeout: the budget of one call ([`Budget`]).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The breaker's state; on a cluster, the worst of the cluster-wide
    /// breaker's and the masters' (`Open` when any master's is).
    pub(crate) fn breaker_state(&self) -> BreakerState {
        let state = self.breaker.state();
        match (&self.nodes, state) {
            (Some(nodes), BreakerState::Closed) => nodes.worst(),
            (Some(nodes), BreakerState::HalfOpen) if nodes.worst() == BreakerState::Open => {
                BreakerState::Open
            }
            _ => state,
        }
    }

    /// The database number of the URL: channels are scoped to it, as pub/sub
    /// ignores databases.
    pub(crate) fn database(&self) -> i64 {
        self.topology.database()
    }

    /// Whether a connection has been made (it may be broken now).
    pub(crate) fn is_connected(&self) -> bool {
        self.connection.load().is_some()
    }

    /// A new pub/sub connection (each subscription has its own), made
    /// directly: subscribing happens off the request path. Through
    /// Sentinel, to the master the sentinels name now, so a subscription
    /// lost in a failover is made again on the new master; and when that is
    /// not the server the connection for calls reaches (an instance without
    /// calls to notice the failover), that one is replaced now too, rather
    /// than after a later call failed on it.
    pub(crate) async fn pubsub(self: &Arc<Self>) -> redis::RedisResult<redis::aio::PubSub> {
        let client = self.topology.client().await?;
        if self.topology.follows_failover() {
            self.follow_master(&client).await;
        }
        client.get_async_pubsub().await
    }

    /// Replaces the connection for calls by one to `master` (what the
    /// sentinels name now), unless it reaches that server already, or none
    /// was made yet (the first connection is `connect_in_background`'s).
    async fn follow_master(self: &Arc<Self>, master: &Client) {
        let address = master.get_connection_info().addr();
        match self.connected_to.load().as_deref() {
            Some(connected) if connected != address => {}
            _ => return,
        }
        let made = tokio::time::timeout(
            self.connect_timeout,
            master.get_multiplexed_async_connection_with_config(&self.config),
        )
        .await;
        if let Ok(Ok(connection)) = made {
            self.use_connection(Connection::Server(connection), Some(address.clone()));
            tracing::info!(redis = %self.redacted_url, "reconnected to the master the sentinels name");
        }
    }

    /// From now on, calls use `connection`, a connection to `address`. On
    /// a cluster, its slot map is read (in the background).
    fn use_connection(self: &Arc<Self>, connection: Connection, address: Option<ConnectionAddr>) {
        let cluster = matches!(connection, Connection::Cluster(_));
        self.connection.store(Some(Arc::new(connection)));
        self.connected_to.store(address.map(Arc::new));
        if cluster {
            self.read_slot_map_in_background();
        }
    }

    /// Reads the cluster's slot map (`CLUSTER SLOTS`) into the masters'
    /// breakers (nothing on one server). Outside any call's budget and
    /// breaker: it runs in the background.
    async fn read_slot_map(&self) {
        let (Some(nodes), Some(mut connection)) =
            (&self.nodes, self.connection.load().as_deref().cloned())
        else {
            return;
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let read = tokio::time::timeout(
            self.timeout,
            cmd.query_async::<redis::Value>(&mut connection),
        )
        .await;
        if let Ok(Ok(reply)) = read
            && !nodes.update(&reply)
        {
            tracing::warn!(redis = %self.redacted_url, "unexpected CLUSTER SLOTS reply: one breaker for the whole cluster until it parses");
        }
    }

    /// After a call to a cluster failed or timed out: the slot map is read
    /// again in the background (at most once per second), so that after a
    /// failover or a slot migration calls count against the right master.
    fn refresh_slot_map(self: &Arc<Self>) {
        if self.nodes.as_ref().is_some_and(NodeBreakers::refresh_due) {
            self.read_slot_map_in_background();
        }
    }

    fn read_slot_map_in_background(self: &Arc<Self>) {
        let l2 = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(l2) = l2.upgrade() {
                l2.read_slot_map().await;
            }
        });
    }

    /// `GET key`: `Ok(None)` when the key is absent.
    pub(crate) async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.run(Some(key), &cmd).await
    }

    /// `MGET key along...`: the key's value and, in the same round trip,
    /// the values of `along` (`None` for each one absent). A plain `GET`
    /// when `along` is empty.
    pub(crate) async fn get_along(
        self: &Arc<Self>,
        key: &str,
        along: &[String],
    ) -> Result<(Option<Vec<u8>>, Vec<Option<Vec<u8>>>), Error> {
        if along.is_empty() {
            return Ok((self.get(key).await?, Vec::new()));
        }
        let mut cmd = redis::cmd("MGET");
        cmd.arg(key).arg(along);
        let mut values: Vec<Option<Vec<u8>>> = self.run(Some(key), &cmd).await?;
        let first = if values.is_empty() {
            None
        } else {
            values.remove(0)
        };
        Ok((first, values))
    }

    /// The values of `keys`, in order (`None` for each one absent), in one
    /// round trip: one `MGET` on one server; on a cluster, one `MGET` per
    /// slot, all sent at once (a command only spans keys of one slot).
    pub(crate) async fn get_many(
        self: &Arc<Self>,
        keys: &[&str],
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if self.nodes.is_none() {
            let mut cmd = redis::cmd("MGET");
            cmd.arg(keys);
            return self.run(keys.first().copied(), &cmd).await;
        }
        let mut by_slot: Vec<(u16, Vec<usize>)> = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            let slot = crate::nodes::slot_of(key);
            match by_slot.iter_mut().find(|(known, _)| *known == slot) {
                Some((_, positions)) => positions.push(at),
                None => by_slot.push((slot, vec![at])),
            }
        }
        let commands = by_slot
            .iter()
            .map(|(_, positions)| {
                let mut cmd = redis::cmd("MGET");
                for &at in positions {
                    cmd.arg(keys[at]);
                }
                cmd
            })
            .collect();
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.each(commands).await?;
        let mut values = vec![None; keys.len()];
        for ((_, positions), reply) in by_slot.iter().zip(replies) {
            for (&at, value) in positions.iter().zip(reply) {
                values[at] = value;
            }
        }
        Ok(values)
    }

    /// `SET key value PX ttl`.
    pub(crate) async fn set(
        self: &Arc<Self>,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis(ttl));
        self.run::<()>(Some(key), &cmd).await
    }

    /// `DEL key`: what a full Redis still accepts (it frees memory).
    pub(crate) async fn del(self: &Arc<Self>, key: &str) -> Result<(), Error> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.run::<()>(Some(key), &cmd).await
    }

    /// `SET key value NX PX ttl`: true when the key was set.
    pub(crate) async fn set_if_absent(
        self: &Arc<Self>,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        let reply: Option<String> = self.run(Some(key), &cmd).await?;
        Ok(reply.is_some())
    }

    /// Writes `value` only if the key still holds what was read before
    /// (`expected`: the SHA-1 of those bytes, or `None` for absent), so a
    /// write that overlapped another one cannot put an older value over it.
    /// Otherwise writes `otherwise` (a tombstone), if given. True when
    /// `value` was written.
    pub(crate) async fn set_if_unchanged(
        self: &Arc<Self>,
        key: &str,
        expected: Option<&str>,
        value: &[u8],
        ttl: Duration,
        otherwise: Option<(&[u8], Duration)>,
    ) -> Result<bool, Error> {
        static SET_IF_UNCHANGED: Script = Script::new(
            "local current = redis.call('GET', KEYS[1]) \
             local unchanged \
             if ARGV[1] == '' then unchanged = not current \
             else unchanged = current and redis.sha1hex(current) == ARGV[1] end \
             if unchanged then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end \
             if ARGV[4] ~= '' then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5]) end \
             return 0",
        );
        let (fallback, fallback_ttl) = otherwise.unwrap_or((b"", Duration::ZERO));
        let written: i64 = self
            .script(
                &SET_IF_UNCHANGED,
                &[key],
                &[
                    expected.unwrap_or("").as_bytes(),
                    value,
                    millis(ttl).as_bytes(),
                    fallback,
                    millis(fallback_ttl).as_bytes(),
                ],
            )
            .await?;
        Ok(written == 1)
    }

    /// The SHA-1 (hex) of what the key holds, `None` when absent: what a
    /// later [`set_if_unchanged`](Self::set_if_unchanged) compares against,
    /// without sending the value over the network.
    pub(crate) async fn digest(self: &Arc<Self>, key: &str) -> Result<Option<String>, Error> {
        static DIGEST: Script = Script::new(
            "local current = redis.call('GET', KEYS[1]) \
             if current then return redis.sha1hex(current) end return false",
        );
        self.script(&DIGEST, &[key], &[]).await
    }

    /// The tokens under `keys`, each set to its `candidates` entry (at most
    /// 18 digits) when missing or not a token; either way each key lives
    /// `ttl` from now. One round trip for all of them (a pipeline of one
    /// single-key script per key, so on a cluster no script spans slots;
    /// see [`Connection::each`]).
    pub(crate) async fn tag_tokens(
        self: &Arc<Self>,
        keys: &[String],
        candidates: &[u64],
        ttl: Duration,
    ) -> Result<Vec<u64>, Error> {
        static TAG_TOKEN: Script = Script::new(
            "local token = redis.call('GET', KEYS[1]) \
             if token and #token <= 18 and string.match(token, '^[1-9]%d*$') then \
             redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
             else token = ARGV[1] redis.call('SET', KEYS[1], token, 'PX', ARGV[2]) end \
             return token",
        );
        let ttl = millis(ttl);
        let commands: Vec<redis::Cmd> = keys
            .iter()
            .zip(candidates)
            .map(|(key, candidate)| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(TAG_TOKEN.0)
                    .arg(1)
                    .arg(key)
                    .arg(candidate.to_string())
                    .arg(&ttl);
                cmd
            })
            .collect();
        self.each(commands).await
    }

    /// Runs `commands` in one round trip on one server (a pipeline), or all
    /// at once on a cluster (see [`Connection::each`]): their replies, in
    /// order.
    pub(crate) async fn each<T: FromRedisValue>(
        self: &Arc<Self>,
        commands: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, Error> {
        self.run_with(None, async |mut connection| connection.each(commands).await)
            .await
    }

    /// `PUBLISH channel message`.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        channel: &str,
        message: &str,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.run::<()>(None, &cmd).await
    }

    /// On a cluster, its masters and the slots each serves, as `CLUSTER
    /// SLOTS` says now (the map the breakers use is updated with it);
    /// `None` on one server.
    pub(crate) async fn cluster_masters(
        self: &Arc<Self>,
    ) -> Result<Option<(Vec<Arc<Node>>, Layout)>, Error> {
        let Some(nodes) = &self.nodes else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let reply: redis::Value = self.run(None, &cmd).await?;
        if !nodes.update(&reply) {
            return Err(Error::Redis(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected CLUSTER SLOTS reply",
            ))));
        }
        Ok(Some(nodes.masters()))
    }

    /// One step of `SCAN cursor MATCH pattern COUNT count`: the next cursor
    /// (0 once the keyspace was walked) and the keys of this step. On one
    /// server, or on the cluster master `node` (its own keyspace only),
    /// counted against that master's breaker.
    pub(crate) async fn scan(
        self: &Arc<Self>,
        node: Option<&Arc<Node>>,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), Error> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let route = node.and_then(|node| node.host_and_port());
        self.run_on(node, async move |connection| match (connection, route) {
            (Connection::Cluster(mut cluster), Some((host, port))) => {
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                let reply = cluster.route_command(cmd, route).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            (mut connection, _) => cmd.query_async(&mut connection).await,
        })
        .await
    }

    /// Runs `commands` as one pipeline (one round trip) on one server, or
    /// on the cluster master `node` by its address, whatever the client's
    /// slot map says: for commands on keys that master was just seen to
    /// hold (a `SCAN` step's). An error reply takes its command's place as
    /// `Value::ServerError` (`MOVED` for a key whose slot moved since, `OOM`
    /// from a full Redis), for the caller to act on.
    pub(crate) async fn pipeline_on(
        self: &Arc<Self>,
        node: Option<&Arc<Node>>,
        commands: Vec<redis::Cmd>,
    ) -> Result<Vec<redis::Value>, Error> {
        let count = commands.len();
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for command in commands {
            pipeline.add_command(command);
        }
        let route = node.and_then(|node| node.host_and_port());
        self.run_on(node, async move |connection| match (connection, route) {
            (Connection::Cluster(mut cluster), Some((host, port))) => {
                let route = SingleNodeRoutingInfo::ByAddress { host, port };
                cluster.route_pipeline(pipeline, 0, count, route).await
            }
            (mut connection, _) => pipeline.query_async(&mut connection).await,
        })
        .await
    }

    /// Runs a Lua script, sent whole (`EVAL`, see the module docs).
    pub(crate) async fn script<T: FromRedisValue>(
        self: &Arc<Self>,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, Error> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script.0).arg(keys.len()).arg(keys).arg(args);
        self.run(keys.first().copied(), &cmd).await
    }

    /// Runs one command on `key` (or none) under the deadline and the
    /// breaker.
    pub(crate) async fn run<T: FromRedisValue>(
        self: &Arc<Self>,
        key: Option<&str>,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        self.run_with(key, async |mut connection| {
            cmd.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// Runs one Redis operation under what the call has left of its budget
    /// (the L2 timeout outside a call) and the breaker, recording the
    /// outcome in the stats, the breaker and (rate-limited) the log. On a
    /// cluster, the breaker is that of `key`'s master, when known.
    async fn run_with<T>(
        self: &Arc<Self>,
        key: Option<&str>,
        operation: impl AsyncFnOnce(Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let node = match (&self.nodes, key) {
            (Some(nodes), Some(key)) => nodes.node_of(key),
            _ => None,
        };
        self.run_on(node.as_ref(), operation).await
    }

    /// Runs one Redis operation as [`run_with`](Self::run_with) does, under
    /// the breaker of `node` (a cluster master), or the cluster-wide one
    /// (the only one on one server) when `None`.
    async fn run_on<T>(
        self: &Arc<Self>,
        node: Option<&Arc<Node>>,
        operation: impl AsyncFnOnce(Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let Some(connection) = self.usable_connection(node.map(|node| &**node)) else {
            bump(&self.counters.l2_skipped);
            return Err(Error::Unavailable);
        };
        let limit = Budget::left().map_or(self.timeout, |left| left.min(self.timeout));
        if limit.is_zero() {
            // The call already waited its whole budget on Redis.
            bump(&self.counters.l2_skipped);
            return Err(Error::Timeout);
        }
        let started = Instant::now();
        // The deadline from the clock read above: `tokio::time::timeout`
        // would read it once more (each read is about 0.7% of the CPU of an
        // L2 hit under load).
        let result = match started.checked_add(limit) {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                tokio::time::timeout_at(deadline, operation(connection)).await
            }
            None => tokio::time::timeout(limit, operation(connection)).await,
        };
        let took = started.elapsed();
        Budget::spend(took);
        // Every call sent is sampled, whatever came of it: a timed-out one
        // at the time it was cut off.
        self.counters.exported.redis_seconds.record(took);
        match result {
            Ok(Ok(value)) => {
                self.record(Call::Answered(took), node);
                Ok(value)
            }
            Ok(Err(error)) if error.is_timeout() => {
                self.record_timeout(node);
                self.after_connection_failure();
                Err(Error::Timeout)
            }
            Ok(Err(error)) => {
                if let Some(refusal) = Refusal::of(&error) {
                    return Err(self.record_refusal(refusal, &error, took, node));
                }
                bump(&self.counters.l2_errors);
                self.record(Call::Failed, node);
                if let Some(suppressed) = self.error_log.admit() {
                    tracing::warn!(
                        redis = %self.redacted_url,
                        %error,
                        suppressed,
                        "Redis call failed; the cache falls back to the function body"
                    );
                }
                if breaks_the_connection(&error) {
                    self.after_broken_connection();
                }
                Err(Error::Redis(error))
            }
            Err(_elapsed) => {
                self.record_timeout(node);
                self.after_connection_failure();
                Err(Error::Timeout)
            }
        }
    }

    /// The connection, when there is one and the breaker is closed (that of
    /// `node` when given).
    #[inline]
    fn usable_connection(&self, node: Option<&Node>) -> Option<Connection> {
        let breaker = node.map_or(&self.breaker, |node| &node.breaker);
        if !breaker.is_closed() {
            return None;
        }
        self.connection.load().as_deref().cloned()
    }

    fn record_timeout(self: &Arc<Self>, node: Option<&Arc<Node>>) {
        bump(&self.counters.l2_timeouts);
        self.record(Call::TimedOut, node);
        if let Some(suppressed) = self.timeout_log.admit() {
            tracing::warn!(
                redis = %self.redacted_url,
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                suppressed,
                "Redis call timed out; the cache falls back to the function body"
            );
        }
    }

    /// Counts and logs a refused call, and acts on what the refusal says
    /// about the server.
    fn record_refusal(
        self: &Arc<Self>,
        refusal: Refusal,
        error: &redis::RedisError,
        took: Duration,
        node: Option<&Arc<Node>>,
    ) -> Error {
        match refusal {
            Refusal::OutOfMemory => {
                // The server answered: the connection is fine, and reads
                // keep working. Not a failure for the breaker.
                bump(&self.counters.l2_out_of_memory);
                self.record(Call::Answered(took), node);
                if let Some(suppressed) = self.out_of_memory_log.admit() {
                    tracing::warn!(
                        redis = %self.redacted_url,
                        %error,
                        suppressed,
                        "Redis is out of memory (maxmemory reached with noeviction) and refuses writes: \
                         invalidations delete keys instead; raise maxmemory or use an evicting policy"
                    );
                }
                Error::OutOfMemory
            }
            Refusal::ReadOnly => {
                bump(&self.counters.l2_read_only);
                self.record(Call::Failed, node);
                if let Some(suppressed) = self.read_only_log.admit() {
                    tracing::warn!(
                        redis = %self.redacted_url,
                        %error,
                        suppressed,
                        "Redis refused a write: the connection reaches a read-only replica; \
                         reconnecting to find the master"
                    );
                }
                self.connect_again(Reconnect::ReadOnly);
                Error::ReadOnly
            }
        }
    }

    /// After a call failed on the connection or timed out, or a probe of
    /// the open breaker failed: through Sentinel, the master may have
    /// changed, so a fresh connection is made through the sentinels.
    fn after_connection_failure(self: &Arc<Self>) {
        if self.topology.follows_failover() {
            self.connect_again(Reconnect::Failure);
        }
    }

    /// After a command found the connection broken: a fresh one, in the
    /// background (through Sentinel, to the master the sentinels name now).
    /// A cluster connection reconnects to its nodes by itself.
    fn after_broken_connection(self: &Arc<Self>) {
        if !self.topology.is_cluster() {
            self.connect_again(Reconnect::Broken);
        }
    }

    /// Replaces the connection by a fresh one, in the background: after a
    /// failover the old master answers `READONLY` on the connection it
    /// kept (or is gone), while the URL (a DNS name, a virtual IP, a proxy)
    /// or the sentinels lead to the new master. One attempt at a time, then
    /// a randomised pause before the next, so a URL that names a replica, or
    /// sentinels that have not promoted one yet, do not cost a connection on
    /// every call. After a broken connection to one server, no pause: the
    /// breaker paces the calls that find it broken.
    fn connect_again(self: &Arc<Self>, why: Reconnect) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let l2 = Arc::downgrade(self);
        let paced = why != Reconnect::Broken || self.topology.follows_failover();
        let (topology, config, connect_timeout, pause) = (
            self.topology.clone(),
            self.config.clone(),
            self.connect_timeout,
            if paced {
                backoff_delay(u32::MAX, self.reconnect_max_delay)
            } else {
                Duration::ZERO
            },
        );
        tokio::spawn(async move {
            let made = tokio::time::timeout(connect_timeout, topology.connect(&config)).await;
            if let Some(l2) = l2.upgrade() {
                match made {
                    Ok(Ok((connection, address))) => {
                        l2.use_connection(connection, address);
                        match why {
                            Reconnect::ReadOnly => tracing::info!(
                                redis = %l2.redacted_url,
                                "reconnected to Redis after a READONLY reply"
                            ),
                            Reconnect::Failure => tracing::info!(
                                redis = %l2.redacted_url,
                                "reconnected to the master the sentinels name"
                            ),
                            Reconnect::Broken => tracing::info!(
                                redis = %l2.redacted_url,
                                "reconnected to Redis after the connection broke"
                            ),
                        }
                    }
                    Ok(Err(error))
                        if why != Reconnect::ReadOnly && l2.topology.follows_failover() =>
                    {
                        if let Some(suppressed) = l2.error_log.admit() {
                            tracing::warn!(
                                redis = %l2.redacted_url,
                                %error,
                                suppressed,
                                "cannot reach a master through the sentinels yet (failover in progress?); retrying"
                            );
                        }
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(pause).await;
            if let Some(l2) = l2.upgrade() {
                l2.reconnecting.store(false, Ordering::Release);
            }
        });
    }

    fn record(self: &Arc<Self>, call: Call, node: Option<&Arc<Node>>) {
        if let Call::Answered(_) = call {
            self.counters.l2_answered.record_now();
        } else {
            self.refresh_slot_map();
        }
        if let Some(node) = node {
            if node.breaker.record(call) {
                bump(&self.counters.breaker_opens);
                tracing::warn!(
                    redis = %self.redacted_url,
                    node = %node.address,
                    "circuit breaker of one cluster master opened after repeated failures or slow answers: \
                     skipping Redis for its slots until it answers quickly again"
                );
                tokio::spawn(probe_until_node_answers(Arc::downgrade(self), node.clone()));
            }
            return;
        }
        if self.breaker.record(call) {
            bump(&self.counters.breaker_opens);
            tracing::warn!(
                redis = %self.redacted_url,
                "circuit breaker opened after repeated Redis failures or slow answers: skipping Redis until it answers quickly again"
            );
            tokio::spawn(probe_until_redis_answers(Arc::downgrade(self)));
        }
    }
}

/// Runs while a cluster master's breaker is open: after each randomised
/// cool-down, the slot map is read again, and while the master still
/// serves slots, one `PING` to it; the first quick answer closes its
/// breaker. A master that serves no slot any more (its replica took over)
/// is left: calls for its old slots go to the new master.
async fn probe_until_node_answers(l2: Weak<L2>, node: Arc<Node>) {
    let Some((host, port)) = node.host_and_port() else {
        return;
    };
    loop {
        tokio::time::sleep(node.breaker.next_cooldown()).await;
        let Some(l2) = l2.upgrade() else {
            return;
        };
        l2.read_slot_map().await;
        if !l2
            .nodes
            .as_ref()
            .is_some_and(|nodes| nodes.serves(&node.address))
        {
            tracing::info!(
                redis = %l2.redacted_url,
                node = %node.address,
                "the cluster master whose breaker was open serves no slot any more"
            );
            return;
        }
        let Some(Connection::Cluster(mut connection)) = l2.connection.load().as_deref().cloned()
        else {
            return;
        };
        node.breaker.probing();
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port,
        });
        let started = Instant::now();
        let answer = tokio::time::timeout(
            l2.timeout,
            connection.route_command(redis::cmd("PING"), route),
        )
        .await;
        match answer {
            Ok(Ok(_)) if node.breaker.answer_closes(started.elapsed()) => {
                l2.counters.l2_answered.record_now();
                node.breaker.close();
                tracing::info!(
                    redis = %l2.redacted_url,
                    node = %node.address,
                    "the cluster master answers again: its circuit breaker closed"
                );
                return;
            }
            _ => node.breaker.reopen(),
        }
    }
}

/// Runs while the breaker is open: after each randomised cool-down, one
/// `PING`; the first quick answer closes the breaker.
async fn probe_until_redis_answers(l2: Weak<L2>) {
    loop {
        let Some(cooldown) = l2.upgrade().map(|l2| l2.breaker.next_cooldown()) else {
            return;
        };
        tokio::time::sleep(cooldown).await;
        let Some(l2) = l2.upgrade() else {
            return;
        };
        let Some(mut connection) = l2.connection.load().as_deref().cloned() else {
            return; // Only started after a connection existed.
        };
        l2.breaker.probing();
        let answered = probe(&l2, &mut connection).await;
        if answered.is_some() {
            l2.counters.l2_answered.record_now();
        }
        match answered {
            Some(took) if l2.breaker.answer_closes(took) => {
                l2.breaker.close();
                tracing::info!(redis = %l2.redacted_url, "Redis answers again: circuit breaker closed");
                return;
            }
            Some(_) => l2.breaker.reopen(),
            None => {
                l2.breaker.reopen();
                l2.after_connection_failure();
            }
        }
    }
}

/// One probe: a `PING`, and when it found the connection broken, a fresh
/// connection (which calls use from then on; a cluster connection
/// reconnects to its nodes by itself, on the next command) and a second
/// `PING` over it, so a Redis that is back closes the breaker now rather
/// than a cool-down later (this also starts the replay of invalidations
/// kept meanwhile). How long the answer took, if one came.
async fn probe(l2: &Arc<L2>, connection: &mut Connection) -> Option<Duration> {
    let ping = redis::cmd("PING");
    let started = Instant::now();
    match tokio::time::timeout(l2.timeout, ping.query_async::<()>(connection)).await {
        Ok(Ok(())) => return Some(started.elapsed()),
        Ok(Err(error)) if breaks_the_connection(&error) => {}
        _ => return None,
    }
    let reconnected = match connection {
        Connection::Server(_) => {
            let made =
                tokio::time::timeout(l2.connect_timeout, l2.topology.connect(&l2.config)).await;
            let Ok(Ok((fresh, address))) = made else {
                return None;
            };
            *connection = fresh.clone();
            l2.use_connection(fresh, address);
            true
        }
        Connection::Cluster(_) => matches!(
            tokio::time::timeout(
                l2.connect_timeout + l2.timeout,
                ping.query_async::<()>(connection),
            )
            .await,
            Ok(Ok(()))
        ),
    };
    // Timed from here: the reconnection is not the server being slow.
    let started = Instant::now();
    let again = tokio::time::timeout(l2.timeout, ping.query_async::<()>(connection)).await;
    (reconnected && matches!(again, Ok(Ok(())))).then(|| started.elapsed())
}

/// Whether `error` says the connection is gone (not that one command
/// failed): calls need a fresh one.
fn breaks_the_connection(error: &redis::RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

async fn connect_in_background(
    l2: Weak<L2>,
    topology: Arc<Topology>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    max_delay: Duration,
    first_attempt_done: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_attempt_done = Some(first_attempt_done);
    let mut attempt: u32 = 0;
    loop {
        let result = tokio::time::timeout(connect_timeout, topology.connect(&config)).await;
        let Some(l2) = l2.upgrade() else {
            return; // The cache was dropped.
        };
        match result {
            Ok(Ok((connection, address))) => {
                l2.use_connection(connection, address);
                tracing::info!(redis = %l2.redacted_url, "connected to Redis");
                if let Some(done) = first_attempt_done.take() {
                    let _ = done.send(());
                }
                return;
            }
            Ok(Err(error)) => {
                if let Some(suppressed) = l2.error_log.admit() {
                    tracing::warn!(redis = %l2.redacted_url, %error, suppressed, "cannot connect to Redis yet; the cache runs in-process and keeps trying");
                }
            }
            Err(_elapsed) => {
                if let Some(suppressed) = l2.timeout_log.admit() {
                    tracing::warn!(redis = %l2.redacted_url, suppressed, "connecting to Redis timed out; the cache runs in-process and keeps trying");
                }
            }
        }
        if let Some(done) = first_attempt_done.take() {
            let _ = done.send(());
        }
        drop(l2);
        tokio::time::sleep(backoff_delay(attempt, max_delay)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// A TTL as Redis' `PX` takes it: whole milliseconds, at least 1, and far
/// below the bound past which Redis refuses an expiry.
pub(crate) fn millis(ttl: Duration) -> String {
    ttl.as_millis().clamp(1, 1 << 60).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_by_their_code() {
        let reply = |code: &str, detail: &str| {
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        };
        assert_eq!(
            Refusal::of(&reply(
                "OOM",
                "command not allowed when used memory > 'maxmemory'. script: 1f0c, on @user_script:1."
            )),
            Some(Refusal::OutOfMemory)
        );
        let read_only: redis::RedisError = (
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        )
            .into();
        assert_eq!(Refusal::of(&read_only), Some(Refusal::ReadOnly));
        assert_eq!(Refusal::of(&reply("NOPERM", "no permissions")), None);
        assert_eq!(Refusal::of(&reply("ERR", "oom")), None);
        let dropped: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert_eq!(Refusal::of(&dropped), None);
    }
}
