use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, jitter = 1.5)]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user2:<id>", ttl = 60, jitter = -0.1)]
async fn user_name2(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
