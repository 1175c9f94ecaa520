use cache_runtime::{Cache, cached};

// Not `Clone`: a background refresh needs its own copy of the receiver.
pub struct UserRepo {
    cache: Cache,
}

impl UserRepo {
    #[cached(key = "user:<id>", ttl = 60, stale = 30, cache = self.cache)]
    pub async fn user_name(&self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {}
