use cache_runtime::cached;

#[cached(key = "user:<user_id>", ttl = 60)]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
