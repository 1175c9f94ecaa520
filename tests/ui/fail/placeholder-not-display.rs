use cache_runtime::cached;

pub struct UserId(pub u64);

#[cached(key = "user:<id>", ttl = 60)]
async fn user_name(id: UserId) -> String {
    format!("user {}", id.0)
}

fn main() {}
