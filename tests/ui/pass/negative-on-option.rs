use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[cached(key = "user:<id>", ttl = 300, jitter = 0.2, negative = 60)]
async fn find_user(id: u64) -> Option<User> {
    (id != 0).then_some(User { id })
}

#[cached(key = "user2:<id>", ttl = 300, jitter = 0, negative = 60)]
async fn try_find_user(id: u64) -> Result<Option<User>, String> {
    Ok((id != 0).then_some(User { id }))
}

fn main() {}
