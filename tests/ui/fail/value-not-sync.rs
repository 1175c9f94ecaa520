use std::cell::Cell;
use std::marker::PhantomData;

use cache_runtime::cached;

// Cached values are shared between tasks (one copy in L1, an `Arc` to
// each caller): a value that is not `Sync` cannot be cached.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    counter: PhantomData<Cell<u64>>,
}

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(id: u64) -> Result<User, std::io::Error> {
    Ok(User { id, counter: PhantomData })
}

fn main() {}
