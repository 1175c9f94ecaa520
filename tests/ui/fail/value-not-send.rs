use std::marker::PhantomData;
use std::sync::MutexGuard;

use cache_runtime::cached;

// Cached values cross threads (L1 is shared by every task): a value that
// is not `Send` cannot be cached.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    held: PhantomData<MutexGuard<'static, ()>>,
}

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(id: u64) -> Option<User> {
    Some(User { id, held: PhantomData })
}

fn main() {}
