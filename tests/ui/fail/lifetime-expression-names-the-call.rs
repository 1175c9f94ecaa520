use std::time::Duration;

use cache_runtime::cached;

struct Repo {
    ttl: Duration,
}

impl Repo {
    const NEGATIVE: u64 = 30;

    // Evaluated once for every call: a call's values, or `Self`, can't be used.
    #[cached(key = "user:<id>", ttl = self.ttl, negative = Self::NEGATIVE, stale = Duration::from_secs(id))]
    async fn get_user(&self, id: u64) -> Option<String> {
        Some(format!("user {id}"))
    }
}

fn main() {}
