use cache_runtime::write_behind;

pub struct Db;

#[write_behind(key = "user:<id>:seen", ttl = 300, value = at)]
async fn record_seen(db: &Db, id: u64, at: i64) -> u64 {
    let _ = (db, at);
    id
}

#[write_behind(key = "user:<id>:visit", ttl = 300, value = at)]
async fn record_visit(db: &Db, id: u64, at: i64) -> Option<()> {
    let _ = (db, id, at);
    Some(())
}

fn main() {}
