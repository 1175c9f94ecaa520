use std::sync::LazyLock;

use cache_runtime::{Cache, cached};

static CACHE: LazyLock<Cache> = LazyLock::new(Cache::global);

#[cached(key = "square:<n>", ttl = 60, cache = &CACHE)]
async fn square(n: u32) -> u64 {
    u64::from(n) * u64::from(n)
}

fn main() {
    let _ = square;
}
