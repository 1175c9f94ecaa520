use cache_runtime::cached;

#[cached(key = "pair:<a><b>", ttl = 60)]
async fn pair(a: u32, b: u32) -> u32 {
    a + b
}

fn main() {}
