use cache_runtime::write_behind;

pub struct Db;

/// Not `Serialize` nor `Deserialize`: it can't travel in the queue.
pub struct Visit {
    pub page: String,
}

#[write_behind(key = "user:<id>:visit", ttl = 300, value = id)]
async fn record_visit(db: &Db, id: u64, visit: Visit) {
    let _ = (db, id, visit.page);
}

fn main() {}
