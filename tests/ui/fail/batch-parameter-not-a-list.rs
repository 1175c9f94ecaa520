use std::collections::{HashMap, HashSet};

use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, batch(id in ids))]
async fn users(ids: HashSet<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

#[cached(key = "user:<id>", ttl = 60, batch(id in ids))]
async fn borrowed_vec(ids: &Vec<u64>) -> HashMap<u64, String> {
    ids.iter().map(|&id| (id, format!("user {id}"))).collect()
}

fn main() {}
