use cache_runtime::{Cache, write_through};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct DbError;

pub struct UserRepo {
    cache: Cache,
}

impl UserRepo {
    /// Doc comments and other attributes are kept.
    #[write_through(key = "user:<id>", ttl = 300, cache = self.cache, crate = "::cache_runtime")]
    #[allow(clippy::unused_async)]
    pub async fn rename(&self, id: u64, name: &str) -> Result<User, DbError> {
        Ok(User {
            id,
            name: name.to_owned(),
        })
    }
}

fn main() {
    let _ = UserRepo {
        cache: Cache::global(),
    };
}
