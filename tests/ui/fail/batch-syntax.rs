// Each mistake in how `batch(..)` is written, on its own tokens.
use std::collections::HashMap;

use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, batch(id ids))]
async fn missing_in(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

#[cached(key = "user:<id>", ttl = 60, batch(ids))]
async fn element_only(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

#[cached(key = "user:<id>", ttl = 60, batch = ids)]
async fn not_parenthesized(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

#[cached(key = "user:<id>", ttl = 60, batch(user.id in users))]
async fn element_is_a_path(users: Vec<u64>) -> HashMap<u64, String> {
    users
        .into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

#[cached(key = "user:<id>", ttl = 60, batch(id in ids), batch(id in ids))]
async fn given_twice(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter()
        .map(|id| (id, format!("user {id}")))
        .collect()
}

fn main() {}
