use std::sync::Arc;

use cache_runtime::{Cache, cached, invalidates};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub org: u32,
}

#[derive(Debug)]
pub struct DbError;

pub struct UserRepo {
    cache: Arc<Cache>,
    loads: std::sync::atomic::AtomicU64,
}

impl UserRepo {
    #[cached(key = "user:<id>", ttl = 300, tags = ["org:<org>"], cache = self.cache, skip(org))]
    pub async fn find(&self, org: u32, id: u64) -> Option<User> {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(User { id, org })
    }

    // `&self` methods, with the cache taken from `self` (an `Arc<Cache>`).
    #[invalidates(key = "user:<id>", cache = self.cache)]
    pub async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        let _ = (id, name, &self.loads);
        Ok(())
    }

    #[invalidates(tag = "org:<org>", cache = self.cache)]
    pub async fn delete_org(&self, org: u32) {
        let _ = org;
    }

    fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder()
        .namespace("invalidates-method")
        .build()
        .await
        .expect("valid configuration");
    let repo = UserRepo {
        cache: Arc::new(cache),
        loads: Default::default(),
    };
    repo.find(7, 1).await;
    repo.find(7, 1).await;
    assert_eq!(repo.loads(), 1);
    repo.rename(1, "ada").await.unwrap();
    repo.find(7, 1).await;
    assert_eq!(repo.loads(), 2);
    // Dropping the tag drops every entry that carries it.
    repo.delete_org(7).await;
    repo.find(7, 1).await;
    assert_eq!(repo.loads(), 3);
}
