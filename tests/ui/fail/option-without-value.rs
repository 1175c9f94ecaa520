use cache_runtime::cached;

#[cached(key = "a:<id>", ttl = 60, l1)]
async fn no_l1_value(id: u64) -> u64 {
    id
}

#[cached(key = "b:<id>", ttl = 60, cache =)]
async fn no_cache_value(id: u64) -> u64 {
    id
}

fn main() {}
