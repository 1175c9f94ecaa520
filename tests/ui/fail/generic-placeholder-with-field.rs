use cache_runtime::cached;

#[cached(key = "scaled:<N.value>:<id>", ttl = 60)]
async fn scaled<const N: u64>(id: u64) -> u64 {
    id * N
}

fn main() {}
