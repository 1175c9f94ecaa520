//! A fault-injection TCP proxy between the code under test and a
//! redis-server (issue 13: Redis misbehaving without failing outright).
//!
//! The test points a client at [`Proxy::url`] instead of the server and,
//! while it runs, makes the link misbehave: hold back what clients send
//! ([`Proxy::hold`]), add latency per direction ([`Proxy::set_latency`]),
//! stop both directions with the connections still open ([`Proxy::stall`]),
//! close them cleanly or with a reset ([`Proxy::drop_connections`],
//! [`Proxy::reset_connections`]), accept new connections and never answer
//! ([`Proxy::black_hole`]), answer chosen commands with an error instead of
//! forwarding them ([`Proxy::fail_commands`]), or starve pub/sub
//! subscribers ([`Proxy::mute_subscribers`]). It also records which
//! commands clients sent ([`Proxy::commands`]).
//!
//! # Keeping replies in order
//!
//! A client matches replies to commands by position, so an error the proxy
//! answers itself must take the place of the reply the server would have
//! sent. Each connection cuts what the client sends into commands and what
//! the server sends into complete RESP frames (the `resp` submodule), and
//! keeps a queue of the replies the client expects, oldest first: a slot
//! per forwarded command, waiting for the server, or an error already
//! written by the proxy. A frame from the server fills the oldest waiting
//! slot; the queue's ready front goes to the client. Pipelines work the
//! same way, a slot per command.
//!
//! A connection that subscribes (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`)
//! becomes a plain pass-through from then on: the server's messages are no
//! replies, so nothing is answered by the proxy there (its commands are
//! still recorded). Bytes that are not RESP are forwarded unchanged and
//! turn the connection into a pass-through too. `CLIENT REPLY OFF` and
//! `MONITOR` are not modelled: do not inject errors on such connections.
//!
//! # Timing
//!
//! Each direction is a queue of chunks stamped with the time they were
//! read; a chunk leaves at that time plus the direction's latency, in
//! order, so latency delays without throttling throughput. Hold and stall
//! are gates at the head of those queues: nothing is lost, everything
//! follows in order once they open.
//!
//! Runs on the test's Tokio runtime; every task (the acceptor and each
//! connection) is aborted when the [`Proxy`] is dropped, which closes its
//! port and every connection through it.

mod resp;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use resp::Scan;

/// A proxy to `127.0.0.1:<target port>` on its own free loopback port,
/// with faults the test switches on and off. Every control takes `&self`
/// and applies at once to every connection (share the proxy in an `Arc`
/// to switch faults from inside the code under test).
///
/// ```no_run
/// # async fn example() {
/// use std::time::Duration;
/// use cache_test_support::{Proxy, RedisServer};
///
/// let server = RedisServer::start();
/// let proxy = Proxy::start(server.port()).await;
/// let client = redis::Client::open(proxy.url()).unwrap();
/// let mut redis = client.get_multiplexed_async_connection().await.unwrap();
///
/// // Slow Redis: 50 ms on the way there, 10 ms back.
/// proxy.set_latency(Duration::from_millis(50), Duration::from_millis(10));
/// let _: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
/// proxy.set_latency(Duration::ZERO, Duration::ZERO);
///
/// // Redis out of memory: writes refused, reads served.
/// proxy.fail_commands(&["SET"], "OOM command not allowed when used memory > 'maxmemory'.");
/// let refused: redis::RedisResult<()> =
///     redis::cmd("SET").arg("k").arg("v").query_async(&mut redis).await;
/// assert_eq!(refused.unwrap_err().code(), Some("OOM"));
/// let _: Option<String> = redis::cmd("GET").arg("k").query_async(&mut redis).await.unwrap();
/// assert_eq!(proxy.commands().iter().filter(|name| *name == "SET").count(), 1);
/// proxy.clear_failures();
///
/// // Redis hanging with the connection open, then back.
/// proxy.stall();
/// proxy.resume();
///
/// // The connection cut: the client sees it reset, and must reconnect.
/// assert_eq!(proxy.connections(), 1);
/// proxy.reset_connections();
///
/// // A network that swallows new connections.
/// proxy.black_hole(true);
/// proxy.black_hole(false);
/// # }
/// ```
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to the server on `target_port`, on the current
    /// Tokio runtime.
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::new());
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let acceptor = tokio::spawn(accept(listener, target, shared.clone()));
        Proxy {
            port,
            shared,
            acceptor,
        }
    }

    /// The URL clients use to reach the server through the proxy:
    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, bytes clients send are kept here, not forwarded (the
    /// server sees nothing; what it already sent still reaches clients, and
    /// errors from [`Proxy::fail_commands`] are still answered in turn).
    pub fn hold(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.held = true);
    }

    /// Forwards what was held, in order, and everything after it.
    pub fn release(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.held = false);
    }

    /// Delays every chunk by `to_server` on its way to the server and by
    /// `to_client` on its way back (order kept, throughput not limited).
    /// Applies to bytes not yet forwarded, on every connection.
    pub fn set_latency(&self, to_server: Duration, to_client: Duration) {
        self.shared.settings.send_modify(|settings| {
            settings.to_server = to_server;
            settings.to_client = to_client;
        });
    }

    /// Stops both directions on every connection; the connections stay
    /// open and what arrives meanwhile is kept.
    pub fn stall(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.stalled = true);
    }

    /// Forwards what the stall kept, in order, and everything after it.
    pub fn resume(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.stalled = false);
    }

    /// Closes every open connection, client and server side, with a FIN
    /// (the client reads end of stream). Connections accepted later are
    /// served as usual; one the acceptor has not picked up yet (wait for
    /// [`Proxy::connections`]) may survive.
    pub fn drop_connections(&self) {
        let _ = self.shared.closing.send(Close::Fin);
    }

    /// Closes every open client connection with a TCP reset (the client
    /// sees "connection reset"), and the server side with it.
    pub fn reset_connections(&self) {
        let _ = self.shared.closing.send(Close::Reset);
    }

    /// While on, new connections are accepted and kept open but nothing is
    /// read from them, nothing is answered, and no connection to the server
    /// is made: the client waits for ever. Existing connections go on as
    /// before. Turning it off closes the black-holed connections (FIN).
    pub fn black_hole(&self, on: bool) {
        self.shared
            .settings
            .send_modify(|settings| settings.black_hole = on);
    }

    /// From now on, the commands named (case-insensitive) are answered by
    /// the proxy with the error reply `-<error>` instead of being forwarded;
    /// other commands, and other replies of a pipeline, are unaffected and
    /// stay in order. Adds to the commands failed before (the latest error
    /// wins for a name). Not on connections in pub/sub mode.
    ///
    /// Names are matched exactly: redis-rs runs a `redis::Script` with
    /// `EVALSHA` (then `SCRIPT LOAD` on `NOSCRIPT`), so fail `EVALSHA` to
    /// refuse scripts. Inside `MULTI` the error replaces `+QUEUED` and the
    /// command is not queued (Redis would abort the `EXEC`; the proxy does
    /// not model that).
    pub fn fail_commands(&self, names: &[&str], error: &str) {
        let reply = format!("-{}\r\n", error.replace(['\r', '\n'], " ")).into_bytes();
        let mut failures = lock(&self.shared.failures);
        for name in names {
            failures.insert(name.to_uppercase(), reply.clone());
        }
    }

    /// Forwards every command again.
    pub fn clear_failures(&self) {
        lock(&self.shared.failures).clear();
    }

    /// Drops whatever the server sends to connections in pub/sub mode
    /// (messages, subscription confirmations, pings); the connections stay
    /// open. Other connections, and publishing, are unaffected.
    pub fn mute_subscribers(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.muted = true);
    }

    /// Subscribers receive again what the server sends from now on (what
    /// was dropped while muted is gone).
    pub fn unmute_subscribers(&self) {
        self.shared
            .settings
            .send_modify(|settings| settings.muted = false);
    }

    /// The names (upper case) of the commands clients sent, in the order
    /// the proxy read them, whether forwarded or answered by the proxy
    /// (`CLIENT SETINFO` is recorded as `CLIENT`).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// Forgets the commands recorded so far.
    pub fn clear_commands(&self) {
        lock(&self.shared.commands).clear();
    }

    /// How many client connections are open at the proxy (black-holed ones
    /// included); one closed by the client is counted until the proxy
    /// notices.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The acceptor owns the connections' JoinSet: aborting it aborts them.
        self.acceptor.abort();
    }
}

/// What the test controls, shared with every connection.
struct Shared {
    settings: watch::Sender<Settings>,
    /// Error replies (encoded) by upper-case command name.
    failures: Mutex<HashMap<String, Vec<u8>>>,
    commands: Mutex<Vec<String>>,
    open: AtomicUsize,
    /// How to close the connections open when it is sent.
    closing: broadcast::Sender<Close>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            settings: watch::Sender::new(Settings::default()),
            failures: Mutex::default(),
            commands: Mutex::default(),
            open: AtomicUsize::new(0),
            closing: broadcast::Sender::new(16),
        }
    }

    fn record(&self, command: &str) {
        lock(&self.commands).push(command.to_owned());
    }

    fn failure(&self, command: &str) -> Option<Vec<u8>> {
        lock(&self.failures).get(command).cloned()
    }
}

/// The faults switched on, read by every connection as it goes.
#[derive(Clone, Default)]
struct Settings {
    held: bool,
    stalled: bool,
    muted: bool,
    black_hole: bool,
    to_server: Duration,
    to_client: Duration,
}

/// How the test asked to close the open connections.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// Shut down cleanly: the client reads the end of the stream.
    Fin,
    /// Abort: the client sees "connection reset".
    Reset,
}

/// Counts a client connection as open for as long as it lives.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: &Arc<Shared>) -> OpenConnection {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(shared.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // A client gone before it was accepted, or no file descriptor
            // left: the next accept may work.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let open = OpenConnection::new(&shared);
        let closing = shared.closing.subscribe();
        let black_hole = shared.settings.borrow().black_hole;
        if black_hole {
            connections.spawn(swallow(client, open, shared.settings.subscribe(), closing));
        } else {
            connections.spawn(serve(client, target, shared.clone(), open, closing));
        }
    }
}

/// A black-holed connection: kept open, never read, until the black hole
/// ends or the test closes the connections.
async fn swallow(
    client: TcpStream,
    _open: OpenConnection,
    mut settings: watch::Receiver<Settings>,
    mut closing: broadcast::Receiver<Close>,
) {
    let how = tokio::select! {
        how = next_close(&mut closing) => how,
        _ = until(&mut settings, |settings| !settings.black_hole) => Close::Fin,
    };
    close(client, how).await;
}

/// A served connection: relayed until either side closes or the test
/// closes it.
async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    shared: Arc<Shared>,
    _open: OpenConnection,
    mut closing: broadcast::Receiver<Close>,
) {
    let how = tokio::select! {
        how = next_close(&mut closing) => how,
        () = relay(&mut client, target, &shared) => Close::Fin,
    };
    close(client, how).await;
}

async fn next_close(closing: &mut broadcast::Receiver<Close>) -> Close {
    match closing.recv().await {
        Ok(how) => how,
        // More closes were sent than the channel keeps: close all the same.
        Err(broadcast::error::RecvError::Lagged(_)) => Close::Fin,
        // The proxy is gone and this task about to be aborted.
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Closes the client's socket; the server's was closed with the relay.
async fn close(mut client: TcpStream, how: Close) {
    match how {
        Close::Fin => {
            let _ = client.shutdown().await;
        }
        // Dropping a socket that lingers zero seconds sends a reset.
        Close::Reset => {
            let _ = client.set_zero_linger();
        }
    }
}

/// Whether `open` holds, waiting until it does; false once the proxy is gone.
async fn until(settings: &mut watch::Receiver<Settings>, open: impl Fn(&Settings) -> bool) -> bool {
    settings.wait_for(open).await.is_ok()
}

/// Relays between the client and a new connection to the server, until
/// one direction ends (its reader saw the end of its stream and everything
/// read was delivered, or a write failed).
async fn relay(client: &mut TcpStream, target: SocketAddr, shared: &Shared) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    // Small writes must not wait for Nagle: latency is the test's to set.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let (to_server, to_server_queue) = mpsc::unbounded_channel();
    let (to_client, to_client_queue) = mpsc::unbounded_channel();
    let connection = Connection {
        shared,
        flow: Mutex::default(),
        to_server,
        to_client,
    };
    let upstream = direction(
        connection.read_client(client_read),
        &connection.to_server,
        deliver(to_server_queue, server_write, shared, Way::ToServer),
    );
    let downstream = direction(
        connection.read_server(server_read),
        &connection.to_client,
        deliver(to_client_queue, client_write, shared, Way::ToClient),
    );
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// One direction: `read` fills the queue `deliver` empties; ends when
/// `deliver` does (after the end of the stream, or on a failed write).
async fn direction(
    read: impl Future<Output = ()>,
    queue: &mpsc::UnboundedSender<Item>,
    deliver: impl Future<Output = ()>,
) {
    let reading = async {
        read.await;
        let _ = queue.send(Item::End);
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = deliver => {}
        () = reading => {}
    }
}

/// What travels in a direction's queue.
enum Item {
    /// Bytes read at `read_at`, to forward at `read_at` + latency.
    Chunk { read_at: Instant, bytes: Vec<u8> },
    /// The reader saw the end of its stream.
    End,
}

#[derive(Clone, Copy)]
enum Way {
    ToServer,
    ToClient,
}

impl Way {
    fn latency(self, settings: &Settings) -> Duration {
        match self {
            Way::ToServer => settings.to_server,
            Way::ToClient => settings.to_client,
        }
    }

    fn is_open(self, settings: &Settings) -> bool {
        match self {
            Way::ToServer => !settings.stalled && !settings.held,
            Way::ToClient => !settings.stalled,
        }
    }
}

/// Writes the queue's chunks in order, each once its latency has passed
/// and the way is open.
async fn deliver(
    mut queue: mpsc::UnboundedReceiver<Item>,
    mut out: WriteHalf<'_>,
    shared: &Shared,
    way: Way,
) {
    let mut settings = shared.settings.subscribe();
    while let Some(Item::Chunk { read_at, bytes }) = queue.recv().await {
        let latency = way.latency(&settings.borrow());
        tokio::time::sleep_until(read_at + latency).await;
        if !until(&mut settings, |settings| way.is_open(settings)).await {
            return;
        }
        if out.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// One client connection's relay state.
struct Connection<'a> {
    shared: &'a Shared,
    flow: Mutex<Flow>,
    to_server: mpsc::UnboundedSender<Item>,
    to_client: mpsc::UnboundedSender<Item>,
}

/// Where the connection's two streams are; both readers take it in turn,
/// and queue their output while they hold it, so the order is the same.
#[derive(Default)]
struct Flow {
    /// The replies the client expects, oldest first.
    replies: VecDeque<Reply>,
    /// No more reply slots nor injected errors: pub/sub mode, or a server
    /// stream that could not be cut.
    pass_through: bool,
    /// The client subscribed: what the server sends are messages.
    subscribed: bool,
    /// What the client sends could not be cut into commands: raw from now on.
    client_unparsed: bool,
    /// What the server sends could not be cut into frames: raw from now on.
    server_unparsed: bool,
}

/// A reply the client expects.
enum Reply {
    /// The command went to the server, whose reply is awaited.
    Awaited,
    /// The reply is here (from the server, or the proxy's error).
    Ready(Vec<u8>),
}

impl Connection<'_> {
    async fn read_client(&self, mut client: ReadHalf<'_>) {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = client.read(&mut chunk).await {
            pending.extend_from_slice(&chunk[..read]);
            self.relay_commands(&mut pending, Instant::now());
        }
    }

    async fn read_server(&self, mut server: ReadHalf<'_>) {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = server.read(&mut chunk).await {
            pending.extend_from_slice(&chunk[..read]);
            self.relay_frames(&mut pending, Instant::now());
        }
    }

    /// Cuts the complete commands off `pending`: forwarded, or answered
    /// with an error in their place.
    fn relay_commands(&self, pending: &mut Vec<u8>, read_at: Instant) {
        let mut flow = lock(&self.flow);
        let mut forward = Vec::new();
        let mut cut = 0;
        while !flow.client_unparsed {
            match resp::command(&pending[cut..]) {
                Scan::Complete { item, len } => {
                    let bytes = &pending[cut..cut + len];
                    cut += len;
                    self.route_command(&mut flow, item.name, bytes, &mut forward);
                }
                Scan::Incomplete => break,
                Scan::Invalid => flow.client_unparsed = true,
            }
        }
        if flow.client_unparsed {
            forward.extend_from_slice(&pending[cut..]);
            cut = pending.len();
        }
        pending.drain(..cut);
        if !forward.is_empty() {
            let _ = self.to_server.send(Item::Chunk {
                read_at,
                bytes: forward,
            });
        }
        let mut answer = Vec::new();
        take_ready(&mut flow, &mut answer);
        self.send_to_client(answer, read_at);
    }

    fn route_command(
        &self,
        flow: &mut Flow,
        name: Option<String>,
        bytes: &[u8],
        forward: &mut Vec<u8>,
    ) {
        // Redis skips empty commands without replying.
        let Some(name) = name else {
            forward.extend_from_slice(bytes);
            return;
        };
        self.shared.record(&name);
        if flow.pass_through {
            forward.extend_from_slice(bytes);
            return;
        }
        if let Some(error) = self.shared.failure(&name) {
            flow.replies.push_back(Reply::Ready(error));
            return;
        }
        forward.extend_from_slice(bytes);
        flow.replies.push_back(Reply::Awaited);
        if matches!(name.as_str(), "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE") {
            flow.subscribed = true;
            flow.pass_through = true;
        }
    }

    /// Cuts the complete frames off `pending`: each fills the oldest
    /// awaited reply, or goes straight on (a push, a pub/sub message).
    fn relay_frames(&self, pending: &mut Vec<u8>, read_at: Instant) {
        let muted = self.shared.settings.borrow().muted;
        let mut flow = lock(&self.flow);
        let mut answer = Vec::new();
        let mut cut = 0;
        while !flow.server_unparsed {
            match resp::frame(&pending[cut..]) {
                Scan::Complete { len, .. } => {
                    let frame = &pending[cut..cut + len];
                    cut += len;
                    route_frame(&mut flow, frame, muted, &mut answer);
                }
                Scan::Incomplete => break,
                Scan::Invalid => flow.server_unparsed = true,
            }
        }
        if flow.server_unparsed {
            if !(flow.subscribed && muted) {
                answer.extend_from_slice(&pending[cut..]);
            }
            cut = pending.len();
            // Replies can no longer be told apart: the proxy's own errors
            // follow what the server sent, and are the last.
            for reply in flow.replies.drain(..) {
                if let Reply::Ready(error) = reply {
                    answer.extend_from_slice(&error);
                }
            }
            flow.pass_through = true;
        }
        pending.drain(..cut);
        self.send_to_client(answer, read_at);
    }

    fn send_to_client(&self, bytes: Vec<u8>, read_at: Instant) {
        if !bytes.is_empty() {
            let _ = self.to_client.send(Item::Chunk { read_at, bytes });
        }
    }
}

fn route_frame(flow: &mut Flow, frame: &[u8], muted: bool, answer: &mut Vec<u8>) {
    let push = frame.first() == Some(&b'>');
    let awaited = flow
        .replies
        .iter_mut()
        .find(|reply| matches!(reply, Reply::Awaited));
    match awaited {
        Some(slot) if !push => {
            *slot = Reply::Ready(frame.to_vec());
            take_ready(flow, answer);
        }
        // Not a reply the client waits for: a push or a pub/sub message.
        _ if flow.subscribed && muted => {}
        _ => answer.extend_from_slice(frame),
    }
}

/// Moves the replies at the front of the queue that are ready to `answer`.
fn take_ready(flow: &mut Flow, answer: &mut Vec<u8>) {
    while let Some(Reply::Ready(_)) = flow.replies.front() {
        if let Some(Reply::Ready(reply)) = flow.replies.pop_front() {
            answer.extend_from_slice(&reply);
        }
    }
}
