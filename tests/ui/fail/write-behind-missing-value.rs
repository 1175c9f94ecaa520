use cache_runtime::write_behind;

pub struct Db;

#[write_behind(key = "user:<id>:seen", ttl = 300)]
async fn record_seen(db: &Db, id: u64, at: i64) {
    let _ = (db, id, at);
}

fn main() {}
