use cache_runtime::cached;

#[cached(key = "discount:<id>:100%", ttl = 60)]
async fn discount(id: u64) -> u64 {
    id
}

fn main() {}
