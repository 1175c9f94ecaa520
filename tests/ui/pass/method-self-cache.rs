use cache_runtime::{Cache, cached};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

pub struct UserRepo {
    cache: Cache,
}

impl UserRepo {
    #[cached(key = "user:<id>", ttl = 300, cache = self.cache)]
    pub async fn find(&self, id: u64) -> Option<User> {
        Some(User { id })
    }
}

fn main() {
    let _ = UserRepo {
        cache: Cache::global(),
    };
}
