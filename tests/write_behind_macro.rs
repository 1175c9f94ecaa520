//! What `#[write_behind]` expands to, run with an in-process cache only: no
//! Redis can take the write, so each call runs its body at once (as a
//! `#[write_through]` would) and returns what the body returns. Checks the
//! body runs once, the value stored is what a `#[cached]` reader of the
//! same template reads without running its own body, `cache = EXPR` and
//! `tags`, a method lending `&self`, and the generated handlers.
//!
//! The queue and the worker (with Redis) are tested elsewhere. The strict
//! lint levels are part of the test, as in `tests/macro_semantics.rs`: `cargo
//! clippy --all-targets -- -D warnings` checks the expansion trips none of
//! them, and `dead_code` that each generated item is used by what it is for.

#![forbid(unreachable_code, unknown_lints, dead_code, unused_variables)]
#![warn(clippy::pedantic)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use cache_runtime::{Cache, WriteBehindHandler, WriteId, cached, write_behind};

async fn in_process_cache() -> Cache {
    Cache::builder()
        .build()
        .await
        .expect("an in-process cache needs no configuration")
}

/// The database side: last-seen times by user, and how often each function
/// body ran.
struct Db {
    cache: Cache,
    seen: Mutex<HashMap<u64, i64>>,
    /// Whether each write ran with a write id (`WriteId::current()`).
    with_write_id: Mutex<Vec<bool>>,
    writes: AtomicU32,
    reads: AtomicU32,
}

impl Db {
    async fn new() -> Db {
        Db {
            cache: in_process_cache().await,
            seen: Mutex::default(),
            with_write_id: Mutex::default(),
            writes: AtomicU32::new(0),
            reads: AtomicU32::new(0),
        }
    }

    fn save_seen(&self, id: u64, at: i64) -> Result<(), String> {
        self.writes.fetch_add(1, Relaxed);
        self.with_write_id
            .lock()
            .unwrap()
            .push(WriteId::current().is_some());
        if at < 0 {
            return Err(format!("refused a negative time for user {id}"));
        }
        self.seen.lock().unwrap().insert(id, at);
        Ok(())
    }

    fn stored(&self, id: u64) -> Option<i64> {
        self.seen.lock().unwrap().get(&id).copied()
    }
}

#[write_behind(key = "user:<id>:seen", ttl = 300, value = at, cache = db.cache)]
async fn record_seen(db: &Db, id: u64, at: i64) -> Result<(), String> {
    db.save_seen(id, at)
}

#[cached(key = "user:<id>:seen", ttl = 300, cache = db.cache, skip(db))]
async fn last_seen(db: &Db, id: u64) -> i64 {
    db.reads.fetch_add(1, Relaxed);
    db.stored(id).unwrap_or_default()
}

#[tokio::test]
async fn without_redis_the_body_runs_once_and_a_reader_reads_the_value() {
    let db = Db::new().await;
    assert_eq!(record_seen(&db, 7, 1_700).await, Ok(()));
    assert_eq!(db.writes.load(Relaxed), 1, "the body ran once");
    assert_eq!(db.stored(7), Some(1_700));
    assert_eq!(
        *db.with_write_id.lock().unwrap(),
        [true],
        "a body run at once has a write id too"
    );
    assert_eq!(last_seen(&db, 7).await, 1_700);
    assert_eq!(
        db.reads.load(Relaxed),
        0,
        "the reader found the stored value"
    );
    let stats = db.cache.stats();
    assert_eq!((stats.write_behind_synchronous, stats.loads), (1, 0));
    assert_eq!(stats.write_behind_queued, 0, "no Redis: nothing queued");

    // A second write replaces the value.
    assert_eq!(record_seen(&db, 7, 1_800).await, Ok(()));
    assert_eq!(last_seen(&db, 7).await, 1_800);
    assert_eq!((db.writes.load(Relaxed), db.reads.load(Relaxed)), (2, 0));
}

#[tokio::test]
async fn an_err_from_the_body_is_returned_and_stores_nothing() {
    let db = Db::new().await;
    assert_eq!(
        record_seen(&db, 8, -1).await,
        Err("refused a negative time for user 8".to_owned())
    );
    assert_eq!(db.writes.load(Relaxed), 1, "the body ran once");
    assert_eq!(last_seen(&db, 8).await, 0, "the reader loaded the database");
    assert_eq!(db.reads.load(Relaxed), 1);

    // An `Err` after a stored value leaves that value alone.
    assert_eq!(record_seen(&db, 9, 5).await, Ok(()));
    assert!(record_seen(&db, 9, -5).await.is_err());
    assert_eq!(last_seen(&db, 9).await, 5);
    assert_eq!(db.reads.load(Relaxed), 1);
}

#[write_behind(
    key = "member:<id>:seen",
    ttl = 300,
    value = at,
    tags = ["org:<org>"],
    cache = db.cache,
    queue = "member_seen",
    coalesce
)]
async fn record_member_seen(db: &Db, org: u32, id: u64, at: i64) {
    db.save_seen(id, at).expect("times are positive here");
    let _ = org;
}

#[cached(key = "member:<id>:seen", ttl = 300, cache = db.cache, skip(db))]
async fn member_last_seen(db: &Db, id: u64) -> i64 {
    db.reads.fetch_add(1, Relaxed);
    db.stored(id).unwrap_or_default()
}

#[tokio::test]
async fn the_stored_entry_carries_its_tags() {
    let db = Db::new().await;
    record_member_seen(&db, 3, 11, 40).await;
    record_member_seen(&db, 4, 12, 50).await;
    assert_eq!(member_last_seen(&db, 11).await, 40);
    assert_eq!(member_last_seen(&db, 12).await, 50);
    assert_eq!(db.reads.load(Relaxed), 0);

    db.cache.invalidate_tag("org:3").await.unwrap();
    assert_eq!(member_last_seen(&db, 11).await, 40, "from the database");
    assert_eq!(db.reads.load(Relaxed), 1, "org 3's entry was dropped");
    assert_eq!(member_last_seen(&db, 12).await, 50);
    assert_eq!(db.reads.load(Relaxed), 1, "org 4's entry was kept");
}

/// A repository lends itself to the worker: `&self` is the handle.
#[derive(Clone)]
struct Views {
    cache: Cache,
    counted: std::sync::Arc<Mutex<Vec<(String, u64)>>>,
}

impl Views {
    #[write_behind(key = "page:<page>:views", ttl = 60, value = views, cache = self.cache)]
    async fn set_views(&self, page: String, views: u64) {
        self.counted.lock().unwrap().push((page, views));
    }

    #[cached(key = "page:<page>:views", ttl = 60, cache = self.cache)]
    async fn views(&self, page: String) -> u64 {
        let _ = page;
        0
    }
}

#[tokio::test]
async fn a_method_lends_self() {
    let views = Views {
        cache: in_process_cache().await,
        counted: std::sync::Arc::default(),
    };
    views.set_views("home".to_owned(), 3).await;
    assert_eq!(*views.counted.lock().unwrap(), [("home".to_owned(), 3)]);
    assert_eq!(views.views("home".to_owned()).await, 3);
    assert_eq!(views.cache.stats().loads, 0);
}

/// No handle: the parameters are all the body needs. The global cache.
#[write_behind(key = "ping:<id>", ttl = 5, value = id)]
async fn ping(id: u64) -> std::io::Result<()> {
    if id == 0 {
        return Err(std::io::Error::other("no id 0"));
    }
    Ok(())
}

#[tokio::test]
async fn without_a_handle() {
    assert!(ping(1).await.is_ok());
    assert_eq!(ping(0).await.unwrap_err().to_string(), "no id 0");
}

#[tokio::test]
async fn each_function_has_a_handler_for_its_queue() {
    let db = Db::new().await;
    let handlers: [WriteBehindHandler; 4] = [
        record_seen_handler(Db::new().await),
        record_member_seen_handler(db),
        Views {
            cache: in_process_cache().await,
            counted: std::sync::Arc::default(),
        }
        .set_views_handler(),
        ping_handler(),
    ];
    let queues: Vec<&str> = handlers.iter().map(WriteBehindHandler::queue).collect();
    assert_eq!(queues, ["record_seen", "member_seen", "set_views", "ping"]);
    let coalescing: Vec<bool> = handlers
        .iter()
        .map(|handler| format!("{handler:?}").contains("coalesce: true"))
        .collect();
    assert_eq!(coalescing, [false, true, false, false]);
}
