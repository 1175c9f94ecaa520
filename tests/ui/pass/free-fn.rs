use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[cached(key = "user:<id>", ttl = 300)]
pub async fn get_user(id: u64) -> User {
    User { id }
}

fn main() {}
