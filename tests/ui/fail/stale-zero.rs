use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, stale = 0)]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
