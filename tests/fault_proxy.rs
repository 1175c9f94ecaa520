//! The fault-injection proxy of `cache_test_support` (issue 13) against a
//! real redis-server: it forwards faithfully, and each fault does what the
//! other tests rely on. Clients are redis-rs connections, or raw sockets
//! where the exact bytes, or their absence, matter.

use std::time::{Duration, Instant};

use cache_test_support::{Proxy, RedisServer, eventually};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Long enough for anything that should arrive on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// A redis-rs connection that waits for slow replies (by default it gives
/// up on a reply after 500 ms).
async fn client(url: String) -> MultiplexedConnection {
    let patient = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PATIENCE))
        .set_response_timeout(Some(PATIENCE));
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap()
}

async fn raw(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap()
}

/// A command as redis-rs encodes it.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.get_packed_command()
}

/// Reads until `expected.len()` bytes arrived (or `PATIENCE` passed) and
/// compares them.
async fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while received.len() < expected.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(read)) => received.extend_from_slice(&chunk[..read]),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(expected)
    );
}

/// Whether nothing at all arrives for `QUIET`.
async fn stays_silent(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 64];
    tokio::time::timeout(QUIET, stream.read(&mut chunk))
        .await
        .is_err()
}

fn key_on_server(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.client())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_pipelines_go_through_unchanged() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut redis = client(proxy.url()).await;

    let _: () = redis.set("k", "v").await.unwrap();
    assert_eq!(redis.get::<_, String>("k").await.unwrap(), "v");
    assert_eq!(key_on_server(&server, "k").as_deref(), Some("v"));

    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("p{i}"), i).ignore().get(format!("p{i}"));
    }
    let values: Vec<u32> = pipe.query_async(&mut redis).await.unwrap();
    assert_eq!(values, (0..200).collect::<Vec<u32>>());

    // Larger than any read: the reply is cut into frames across reads.
    let big = "x".repeat(300_000);
    let _: () = redis.set("big", &big).await.unwrap();
    assert_eq!(redis.get::<_, String>("big").await.unwrap(), big);

    let (a, b): (u32, u32) = redis::pipe()
        .atomic()
        .incr("n", 1)
        .incr("n", 1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2), "MULTI/EXEC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_split_across_writes_and_inline_commands_are_answered() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;

    let ping = encode(&["PING"]);
    stream.write_all(&ping[..5]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&ping[5..]).await.unwrap();
    expect_bytes(&mut stream, b"+PONG\r\n").await;

    stream.write_all(b"ping\r\necho hi\r\n").await.unwrap();
    expect_bytes(&mut stream, b"+PONG\r\n$2\r\nhi\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_resp_passes_through() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    stream.write_all(b"*x\r\n").await.unwrap();
    expect_bytes(
        &mut stream,
        b"-ERR Protocol error: invalid multibulk length\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_direction_without_serialising() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut redis = client(proxy.url()).await;
    let delay = Duration::from_millis(300);

    for (to_server, to_client) in [(delay, Duration::ZERO), (Duration::ZERO, delay)] {
        proxy.set_latency(to_server, to_client);
        let started = Instant::now();
        let _: () = redis::cmd("PING").query_async(&mut redis).await.unwrap();
        let took = started.elapsed();
        assert!(took >= delay, "{took:?} with {to_server:?}/{to_client:?}");
        assert!(took < delay + PATIENCE, "{took:?}");
    }

    // Ten commands in flight at once take about one round trip, not ten.
    proxy.set_latency(delay, delay);
    let started = Instant::now();
    let pings = (0..10).map(|_| {
        let mut redis = redis.clone();
        async move { redis::cmd("PING").query_async::<String>(&mut redis).await }
    });
    for pong in futures_util::future::join_all(pings).await {
        assert_eq!(pong.unwrap(), "PONG");
    }
    let took = started.elapsed();
    assert!(took >= 2 * delay, "{took:?}");
    assert!(
        took < 10 * delay,
        "latency serialised the commands: {took:?}"
    );

    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    let _: () = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    assert!(started.elapsed() < delay, "latency removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_keeps_everything_and_resume_delivers_it_in_order() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;

    proxy.stall();
    let mut commands = encode(&["INCR", "n"]);
    commands.extend(encode(&["INCR", "n"]));
    stream.write_all(&commands).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&encode(&["INCR", "n"])).await.unwrap();
    assert!(stays_silent(&mut stream).await, "a stalled proxy answered");
    assert_eq!(
        key_on_server(&server, "n"),
        None,
        "the server saw a command"
    );
    assert_eq!(proxy.connections(), 1, "the connection stays open");

    proxy.resume();
    expect_bytes(&mut stream, b":1\r\n:2\r\n:3\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_holds_replies_already_on_their_way() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    // The reply is read from the server, and still on its way back when
    // the stall starts.
    proxy.set_latency(Duration::ZERO, Duration::from_secs(1));
    stream.write_all(&encode(&["SET", "k", "v"])).await.unwrap();
    assert!(
        eventually(PATIENCE, async || key_on_server(&server, "k").is_some()).await,
        "SET reached the server"
    );
    proxy.stall();
    assert!(stays_silent(&mut stream).await, "a stalled proxy answered");
    proxy.resume();
    expect_bytes(&mut stream, b"+OK\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_what_clients_send_until_release() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    proxy.hold();
    stream.write_all(&encode(&["SET", "k", "v"])).await.unwrap();
    assert!(stays_silent(&mut stream).await);
    assert_eq!(key_on_server(&server, "k"), None);
    proxy.release();
    expect_bytes(&mut stream, b"+OK\r\n").await;
    assert_eq!(key_on_server(&server, "k").as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_connections_closes_them_cleanly() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    let mut redis = client(proxy.url()).await;
    assert!(eventually(PATIENCE, async || proxy.connections() == 2).await);

    proxy.drop_connections();
    let mut chunk = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "end of stream expected: {read:?}"
    );
    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut redis).await;
    assert!(ping.is_err(), "the redis-rs connection was closed");
    assert!(eventually(PATIENCE, async || proxy.connections() == 0).await);

    // New connections are served.
    let mut again = client(proxy.url()).await;
    let pong: String = redis::cmd("PING").query_async(&mut again).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_resets_them() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    assert!(eventually(PATIENCE, async || proxy.connections() == 1).await);

    proxy.reset_connections();
    let mut chunk = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
        .await
        .expect("the reset arrives");
    assert_eq!(
        read.map_err(|error| error.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert!(eventually(PATIENCE, async || proxy.connections() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_accepts_and_never_answers() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut before = client(proxy.url()).await;

    proxy.black_hole(true);
    let mut stream = raw(&proxy).await;
    stream.write_all(&encode(&["PING"])).await.unwrap();
    assert!(stays_silent(&mut stream).await, "a black hole answered");
    assert_eq!(proxy.connections(), 2, "accepted and kept open");
    let pong: String = redis::cmd("PING").query_async(&mut before).await.unwrap();
    assert_eq!(pong, "PONG", "a connection opened before is unaffected");

    proxy.black_hole(false);
    let mut chunk = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the black-holed connection is closed: {read:?}"
    );
    let mut after = client(proxy.url()).await;
    let pong: String = redis::cmd("PING").query_async(&mut after).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commands_get_the_error_and_others_still_work() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut redis = client(proxy.url()).await;
    let _: () = redis.set("k", "old").await.unwrap();

    proxy.fail_commands(&["set", "EVAL"], OOM);
    let refused: redis::RedisResult<()> = redis.set("k", "new").await;
    let error = refused.unwrap_err();
    assert_eq!(error.code(), Some("OOM"), "{error}");
    assert_eq!(key_on_server(&server, "k").as_deref(), Some("old"));
    assert_eq!(redis.get::<_, String>("k").await.unwrap(), "old");

    let results: Vec<redis::RedisResult<redis::Value>> = redis::pipe()
        .get("k")
        .set("k", "new")
        .get("k")
        .del("k")
        .set("x", "y")
        .cmd("PING")
        .ignore_errors()
        .query_async(&mut redis)
        .await
        .unwrap();
    let shown: Vec<String> = results
        .iter()
        .map(|result| match result {
            Ok(value) => format!("{value:?}"),
            Err(error) => format!("error {:?}", error.code()),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "bulk-string('\"old\"')",
            "error Some(\"OOM\")",
            "bulk-string('\"old\"')",
            "int(1)",
            "error Some(\"OOM\")",
            "simple-string(\"PONG\")",
        ]
    );
    assert_eq!(key_on_server(&server, "x"), None);

    proxy.clear_failures();
    let _: () = redis.set("k", "new").await.unwrap();
    assert_eq!(key_on_server(&server, "k").as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_keep_their_place_in_a_raw_pipeline() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    proxy.fail_commands(&["SET"], OOM);
    let mut pipeline = Vec::new();
    for command in [
        &["SET", "a", "1"][..],
        &["INCR", "n"],
        &["SET", "b", "2"],
        &["SET", "c", "3"],
        &["INCR", "n"],
    ] {
        pipeline.extend(encode(command));
    }
    stream.write_all(&pipeline).await.unwrap();
    let oom = format!("-{OOM}\r\n");
    expect_bytes(
        &mut stream,
        format!("{oom}:1\r\n{oom}{oom}:2\r\n").as_bytes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commands_work_over_resp3() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut redis = client(format!("{}?protocol=resp3", proxy.url())).await;
    proxy.fail_commands(&["SET"], OOM);
    let (missing, refused, map): (Option<String>, redis::RedisResult<()>, redis::Value) = {
        let missing = redis.get("nothing").await.unwrap();
        let refused = redis.set("k", "v").await;
        let map = redis::cmd("HELLO")
            .arg(3)
            .query_async(&mut redis)
            .await
            .unwrap();
        (missing, refused, map)
    };
    assert_eq!(missing, None);
    assert_eq!(refused.unwrap_err().code(), Some("OOM"));
    assert!(matches!(map, redis::Value::Map(_)), "{map:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_subscribers_receive_nothing_and_stay_open() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let redis_client = redis::Client::open(proxy.url()).unwrap();
    let mut subscriber = redis_client.get_async_pubsub().await.unwrap();
    subscriber.subscribe("news").await.unwrap();
    let mut messages = subscriber.into_on_message();
    let mut publisher = client(proxy.url()).await;

    let next = async |messages: &mut redis::aio::PubSubStream, wait: Duration| {
        tokio::time::timeout(wait, messages.next())
            .await
            .ok()
            .flatten()
            .map(|message| message.get_payload::<String>().unwrap())
    };
    let receivers: u32 = publisher.publish("news", "first").await.unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(
        next(&mut messages, PATIENCE).await.as_deref(),
        Some("first")
    );

    proxy.mute_subscribers();
    let receivers: u32 = publisher.publish("news", "muted").await.unwrap();
    assert_eq!(receivers, 1, "the server still counts the subscriber");
    assert_eq!(
        next(&mut messages, QUIET).await,
        None,
        "a muted subscriber received"
    );
    assert_eq!(proxy.connections(), 2);

    proxy.unmute_subscribers();
    let _: u32 = publisher.publish("news", "last").await.unwrap();
    assert_eq!(next(&mut messages, PATIENCE).await.as_deref(), Some("last"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_connection_is_a_plain_pass_through() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    stream
        .write_all(&encode(&["SUBSCRIBE", "news"]))
        .await
        .unwrap();
    expect_bytes(
        &mut stream,
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    )
    .await;
    // No error is answered in place of a subscriber's command.
    proxy.fail_commands(&["PING"], OOM);
    stream.write_all(&encode(&["PING"])).await.unwrap();
    expect_bytes(&mut stream, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").await;
    assert_eq!(proxy.commands(), ["SUBSCRIBE", "PING"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_recorded_by_name() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut stream = raw(&proxy).await;
    proxy.fail_commands(&["DEL"], OOM);
    let mut pipeline = encode(&["set", "k", "v"]);
    pipeline.extend(encode(&["Del", "k"]));
    pipeline.extend(b"ping\r\n");
    stream.write_all(&pipeline).await.unwrap();
    expect_bytes(
        &mut stream,
        format!("+OK\r\n-{OOM}\r\n+PONG\r\n").as_bytes(),
    )
    .await;
    assert_eq!(proxy.commands(), ["SET", "DEL", "PING"]);

    proxy.clear_commands();
    assert!(proxy.commands().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_port_and_connections() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let port = proxy.port();
    let mut stream = raw(&proxy).await;
    assert!(eventually(PATIENCE, async || proxy.connections() == 1).await);

    drop(proxy);
    let mut chunk = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection closes: {read:?}"
    );
    assert!(
        eventually(PATIENCE, async || TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err())
        .await,
        "the port still accepts connections"
    );
}
