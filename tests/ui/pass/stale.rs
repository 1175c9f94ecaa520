use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 300, stale = 30)]
pub async fn user_name(id: u64) -> Result<String, std::io::Error> {
    Ok(format!("user {id}"))
}

#[cached(key = "count:<n>", ttl = 60, negative = 5, jitter = 0.2, early = 2, stale = 600, lock)]
pub async fn count(n: u32) -> Option<u32> {
    n.checked_sub(1)
}

fn main() {
    let _ = (user_name(1), count(1));
}
