use cache_runtime::write_behind;

pub trait Store: Send + Sync + 'static {}

#[write_behind(key = "user:<id>:seen", ttl = 300, value = at)]
async fn record_seen<S: Store>(db: &S, id: u64, at: i64) {
    let _ = (db, id, at);
}

fn main() {}
