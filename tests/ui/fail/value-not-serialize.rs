use cache_runtime::cached;

#[derive(Clone)]
pub struct User {
    pub id: u64,
}

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(id: u64) -> Option<User> {
    Some(User { id })
}

fn main() {}
