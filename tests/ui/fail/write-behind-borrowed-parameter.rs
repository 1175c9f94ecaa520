use cache_runtime::write_behind;

pub struct Db;

#[write_behind(key = "user:<id>:name", ttl = 300, value = id)]
async fn rename(db: &Db, name: &str, id: u64) {
    let _ = (db, name, id);
}

fn main() {}
