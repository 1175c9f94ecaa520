use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, negative = 0)]
async fn user_name(id: u64) -> Option<String> {
    Some(format!("user {id}"))
}

fn main() {}
