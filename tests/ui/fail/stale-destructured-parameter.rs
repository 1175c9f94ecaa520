use cache_runtime::cached;

#[cached(key = "range:<start>:<end>", ttl = 60, stale = 30)]
async fn sum((start, end): (u64, u64)) -> u64 {
    (start..end).sum()
}

fn main() {}
