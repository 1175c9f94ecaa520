use cache_runtime::cached;

#[cached(key = "range:<start>", ttl = 60)]
async fn sum((start, end): (u64, u64)) -> u64 {
    (start..end).sum()
}

fn main() {}
