use std::sync::Arc;

use cache_runtime::{Cache, WriteBehindHandler, WriteId, write_behind};

pub struct Db;

impl Db {
    async fn save_seen(&self, id: u64, at: i64, write: Option<WriteId>) -> Result<(), DbError> {
        let _ = (id, at, write);
        Ok(())
    }
}

#[derive(Debug)]
pub struct DbError;

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("db error")
    }
}

/// Doc comments and other attributes stay on the function.
#[write_behind(key = "user:<id>:seen", ttl = 300, value = at)]
#[allow(clippy::unused_async)]
pub async fn record_seen(db: &Db, id: u64, mut at: i64) -> Result<(), DbError> {
    #![allow(unused_mut)]
    db.save_seen(id, at, WriteId::current()).await
}

// Every option; an alias of `Result<(), E>`; no handle.
#[write_behind(
    key = "page:<page>:views",
    ttl = 60,
    value = views,
    jitter = 0.1,
    stale = 30,
    tags = ["site:<site>"],
    cache = Cache::global(),
    queue = "views",
    coalesce,
    crate = "::cache_runtime"
)]
async fn set_views(site: String, page: String, views: u64) -> std::io::Result<()> {
    let _ = (site, page, views);
    Ok(())
}

/// `&self` is the handle: the companion takes `self`.
#[derive(Clone)]
pub struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    #[write_behind(key = "user:<id>:seen", ttl = 300, value = at, cache = self.cache)]
    pub async fn record_seen(&self, id: u64, at: i64) {
        let _ = self.db.save_seen(id, at, None).await;
    }
}

/// The calls are `Send`, as axum handlers need.
fn assert_send<T: Send>(_: T) {}

fn main() {
    let handlers: [WriteBehindHandler; 3] = [
        record_seen_handler(Db),
        set_views_handler(),
        Repo {
            cache: Cache::global(),
            db: Arc::new(Db),
        }
        .record_seen_handler(),
    ];
    let _ = handlers;
    let db = Db;
    assert_send(record_seen(&db, 1, 2));
    assert_send(set_views("a".to_owned(), "b".to_owned(), 3));
    let repo = Repo {
        cache: Cache::global(),
        db: Arc::new(Db),
    };
    assert_send(repo.record_seen(1, 2));
}
