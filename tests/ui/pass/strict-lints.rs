// Lints a crate may forbid: the expansion needs no `#[allow]` of its own.
#![forbid(unreachable_code, unknown_lints, dead_code, unused_variables, unused_mut, unused_imports)]
#![deny(warnings, clippy::all, clippy::pedantic, clippy::nursery)]

use std::sync::Arc;

use cache_runtime::{Cache, cached, invalidates, write_through};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[derive(Clone)]
pub struct Repo {
    cache: Arc<Cache>,
}

impl Repo {
    // `org` is only in the key and `name` only borrowed into it: the
    // background copies of them are unused by the body.
    #[cached(key = "org:<org>:user:<id>:<name>", ttl = 60, stale = 30, early, cache = self.cache)]
    pub async fn find(&self, org: u32, id: u64, name: &str) -> Option<User> {
        use std::convert::identity;
        identity(Some(User { id }))
    }

    #[write_through(key = "org:<org>:user:<id>:<name>", ttl = 60, cache = self.cache)]
    pub async fn save(&self, org: u32, id: u64, name: &str) -> Result<User, std::io::Error> {
        Ok(User { id })
    }

    #[invalidates(key = "org:<org>:user:<id>:<name>", cache = self.cache)]
    pub async fn forget(&self, org: u32, id: u64, name: &str) {}
}

#[cached(key = "plain:<id>", ttl = 60)]
pub async fn plain(id: u64) -> u64 {
    const OFFSET: u64 = 1;
    id + OFFSET
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let repo = Repo {
        cache: Arc::new(Cache::global()),
    };
    assert_eq!(repo.find(1, 2, "ada").await.map(|user| user.id), Some(2));
    assert_eq!(repo.save(1, 2, "ada").await.map(|user| user.id).ok(), Some(2));
    repo.forget(1, 2, "ada").await;
    assert_eq!(plain(1).await, 2);
}
