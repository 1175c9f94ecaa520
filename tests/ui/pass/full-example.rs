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

pub struct UserUpdate {
    pub name: String,
}

// The examples of SPEC.md.
#[invalidates(key = "user:<id>", tag = "org:<org>")]
async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
    let _ = (id, org, data.name);
    Ok(())
}

#[write_through(key = "user:<id>", ttl = 300)]
async fn rename_user(id: u64, name: String) -> Result<User, DbError> {
    let _ = name;
    Ok(User { id })
}

fn main() {
    let _ = (update_user, rename_user);
    let _ = UserRepo {
        cache: Cache::global(),
    };
}
