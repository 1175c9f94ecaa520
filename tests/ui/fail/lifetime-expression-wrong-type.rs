use cache_runtime::cached;

const TTL: i32 = 300;
const STALE: f64 = 1.5;

#[cached(key = "user:<id>", ttl = TTL, stale = STALE)]
async fn get_user(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "org:<id>", ttl = "300")]
async fn get_org(id: u64) -> String {
    format!("org {id}")
}

fn main() {}
