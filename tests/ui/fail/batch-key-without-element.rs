use std::collections::HashMap;

use cache_runtime::cached;

// Every id would share the one entry `org:<org>` renders.
#[cached(key = "org:<org>", ttl = 60, batch(id in ids))]
async fn users(org: u32, ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("{org}/{id}")))
        .collect()
}

fn main() {}
