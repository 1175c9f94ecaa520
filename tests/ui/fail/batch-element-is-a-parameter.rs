use std::collections::HashMap;

use cache_runtime::cached;

#[cached(key = "org:<org>:user:<org>", ttl = 60, batch(org in ids))]
async fn users(org: u32, ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("{org}/{id}")))
        .collect()
}

fn main() {}
