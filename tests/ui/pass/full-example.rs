use cache_runtime::{Cache, cached, invalidates, write_through};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[derive(Debug)]
pub struct DbError;

pub struct Filter;

pub struct UserRepo {
    cache: Cache,
}

impl UserRepo {
    /// Doc comments and other attributes are kept.
    #[cached(key = "org:<org>:user:<id>", ttl = 300, jitter = 0.2, negative = 60, cache = self.cache, skip(filter))]
    #[allow(clippy::unused_async)]
    pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
        let _ = (org, filter);
        Ok(Some(User { id }))
    }
}

// The macros are importable together even while some are not implemented.
#[allow(unused_imports)]
use {invalidates as _, write_through as _};

fn main() {
    let _ = UserRepo {
        cache: Cache::global(),
    };
}
