//! Consistency tokens (issue 19): after a write on one instance returns,
//! a read that presents the write's token never gets an older value on
//! another instance, even before that instance has heard of the write.
//! Against a real redis-server; the fault-injection proxy delays what an
//! instance hears (muted subscription) or what it says (refused PUBLISH).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, ConsistencyToken, cached, invalidates};
use cache_test_support::{Proxy, RedisServer, eventually, subscribed};

/// The "database": one row whose version moves on with each write.
#[derive(Default)]
struct Db {
    version: AtomicU64,
    reads: AtomicU64,
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[cached(key = "row:<id>", ttl = 300, cache = self.cache)]
    async fn read(&self, id: u64) -> u64 {
        let _ = id;
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        self.db.version.load(Ordering::SeqCst)
    }

    #[cached(key = "listed:<id>", ttl = 300, tags = ["list"], cache = self.cache)]
    async fn read_listed(&self, id: u64) -> u64 {
        let _ = id;
        self.db.version.load(Ordering::SeqCst)
    }

    #[invalidates(key = "row:<id>", tag = "list", cache = self.cache)]
    async fn write(&self, id: u64) {
        let _ = id;
        self.db.version.fetch_add(1, Ordering::SeqCst);
    }
}

async fn cache(url: String, heartbeat: Duration) -> Cache {
    Cache::builder()
        .namespace("tokens")
        .redis_url(url)
        .heartbeat_interval(heartbeat)
        .build()
        .await
        .unwrap()
}

/// Which instance reaches Redis through the fault-injection proxy.
enum Proxied {
    Reader,
    Writer,
}

/// A writer and a reader instance on one Redis and one "database", both
/// subscribed, the reader holding row 1 and the tagged entry in L1.
struct Pair {
    _server: RedisServer,
    proxy: Proxy,
    db: Arc<Db>,
    reader: Repo,
    writer: Repo,
}

impl Pair {
    async fn start(proxied: Proxied) -> Pair {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port()).await;
        let (reader_url, writer_url) = match proxied {
            Proxied::Reader => (proxy.url(), server.url()),
            Proxied::Writer => (server.url(), proxy.url()),
        };
        let db = Arc::new(Db::default());
        let reader = Repo {
            // Its own heartbeats would find a muted subscription silent and
            // replace it (clearing L1): far apart, so the window stays open.
            cache: cache(reader_url, Duration::from_secs(600)).await,
            db: db.clone(),
        };
        let writer = Repo {
            // The writer's heartbeats are what the reader catches up by.
            cache: cache(writer_url, Duration::from_millis(50)).await,
            db: db.clone(),
        };
        subscribed(&reader.cache).await;
        subscribed(&writer.cache).await;
        assert_eq!(reader.read(1).await, 0);
        assert_eq!(reader.read_listed(1).await, 0);
        Pair {
            _server: server,
            proxy,
            db,
            reader,
            writer,
        }
    }

    /// Waits until a token read on the reader no longer skips L1.
    async fn reader_catches_up(&self, token: &ConsistencyToken) -> bool {
        eventually(Duration::from_secs(5), async || {
            let skipped = self.reader.cache.stats().l1_skipped_for_token;
            token.clone().scope(self.reader.read(1)).await;
            self.reader.cache.stats().l1_skipped_for_token == skipped
        })
        .await
    }
}

/// The race of the issue, made deterministic: the reader's subscription
/// delivers nothing, so its L1 keeps the old row after the write returned.
/// Without the token the reader serves it (the window the token closes);
/// with the token it reads Redis and gets the new row; once the writer's
/// messages reach it again, token reads use L1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_never_gets_a_value_older_than_the_write() {
    let pair = Pair::start(Proxied::Reader).await;
    let Pair {
        proxy,
        db,
        reader,
        writer,
        ..
    } = &pair;
    assert_eq!(writer.read(1).await, 0);

    proxy.mute_subscribers();
    writer.write(1).await;
    let token = writer.cache.consistency_token();
    // What a client gets and sends back: the token's text.
    let token: ConsistencyToken = token.to_string().parse().unwrap();

    assert_eq!(reader.read(1).await, 0, "no token: the old row, from L1");
    assert_eq!(reader.read_listed(1).await, 0);
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(
        token.clone().scope(reader.read(1)).await,
        1,
        "a read presenting the write's token got the row from before the write"
    );
    assert_eq!(token.clone().scope(reader.read_listed(1)).await, 1);
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads + 1,
        "loaded once: Redis held a tombstone"
    );
    assert!(reader.cache.stats().l1_skipped_for_token >= 2);
    // The writer itself has applied its own write: L1 serves.
    let skipped = writer.cache.stats().l1_skipped_for_token;
    assert_eq!(token.clone().scope(writer.read(1)).await, 1);
    assert_eq!(writer.cache.stats().l1_skipped_for_token, skipped);

    // The writer's heartbeats reach the reader again: it catches up, and
    // token reads are L1 hits again.
    proxy.unmute_subscribers();
    assert!(
        pair.reader_catches_up(&token).await,
        "{:?}",
        reader.cache.stats()
    );
    let hits = reader.cache.stats().l1_hits;
    assert_eq!(token.clone().scope(reader.read(1)).await, 1);
    assert_eq!(reader.cache.stats().l1_hits, hits + 1);
}

/// A write whose message Redis refused: its token names the next message,
/// which carries the write's changes, so no instance counts as caught up
/// (and serves its old L1 copy) before it has dropped that copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_not_proven_by_messages_that_skipped_its_write() {
    let pair = Pair::start(Proxied::Writer).await;
    let Pair {
        proxy,
        reader,
        writer,
        ..
    } = &pair;

    proxy.fail_commands(&["PUBLISH"], "ERR refused by the test");
    writer.write(1).await;
    let token = writer.cache.consistency_token();
    assert_eq!(reader.read_listed(1).await, 0, "the reader heard nothing");
    // Redis holds the tombstone: a token read loads the new row.
    assert_eq!(token.clone().scope(reader.read(1)).await, 1);
    assert!(reader.cache.stats().l1_skipped_for_token >= 1);

    // Messages flow again after a while (the writer's replays of the
    // invalidation back off meanwhile, so its next heartbeat may well go
    // out before the replay). Once the reader counts as caught up with the
    // token, it must have applied the write's changes: the tagged copy,
    // which no token read touched, is gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.clear_failures();
    assert!(
        pair.reader_catches_up(&token).await,
        "{:?}",
        reader.cache.stats()
    );
    assert_eq!(
        reader.read_listed(1).await,
        1,
        "caught up with the token, yet the write's tag invalidation never arrived"
    );
}

/// Without Redis, a cache's own tokens are always caught up with: L1 serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_cache_honours_its_own_tokens_from_l1() {
    let repo = Repo {
        cache: Cache::builder().build().await.unwrap(),
        db: Arc::default(),
    };
    assert_eq!(repo.read(1).await, 0);
    repo.write(1).await;
    let token = repo.cache.consistency_token();
    assert_eq!(token.clone().scope(repo.read(1)).await, 1);
    let hits = repo.cache.stats().l1_hits;
    assert_eq!(token.scope(repo.read(1)).await, 1);
    assert_eq!(repo.cache.stats().l1_hits, hits + 1);
    assert_eq!(repo.cache.stats().l1_skipped_for_token, 0);
}
