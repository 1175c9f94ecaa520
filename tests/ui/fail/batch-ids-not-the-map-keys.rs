use std::collections::HashMap;

use cache_runtime::cached;

// The map is keyed by the ids the function was given.
#[cached(key = "user:<id>", ttl = 60, batch(id in ids))]
async fn users(ids: Vec<u64>) -> HashMap<String, String> {
    ids.into_iter()
        .map(|id| (id.to_string(), format!("user {id}")))
        .collect()
}

fn main() {}
