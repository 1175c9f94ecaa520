use std::collections::HashMap;

use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, batch(id in user_ids))]
async fn users(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

fn main() {}
