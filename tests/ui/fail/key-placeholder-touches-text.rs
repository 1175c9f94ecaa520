use cache_runtime::cached;

#[cached(key = "user:<id>x", ttl = 60)]
async fn user_x(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user<id>", ttl = 60)]
async fn user(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
