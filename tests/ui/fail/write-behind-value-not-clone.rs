use cache_runtime::write_behind;

pub struct Db;

/// Queueable, but not `Clone`: the cache can't store a copy of it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub at: i64,
}

#[write_behind(key = "user:<id>:seen", ttl = 300, value = seen)]
async fn record_seen(db: &Db, id: u64, seen: Seen) {
    let _ = (db, id, seen.at);
}

fn main() {}
