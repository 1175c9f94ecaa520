use cache_runtime::cached;

const MINUTE: u64 = 60;

#[cached(key = "a:<id>", ttl = 5 * 60)]
async fn five_minutes(id: u64) -> u64 {
    id
}

#[cached(key = "b:<id>", ttl = 60, stale = MINUTE)]
async fn a_minute_stale(id: u64) -> u64 {
    id
}

fn main() {}
