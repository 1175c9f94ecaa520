use cache_runtime::cached;

// The ids' values come back in a `HashMap<K, V>` (or a `Result` of one),
// which the runtime's `Batched` describes: reported on the return type.
#[cached(key = "user:<id>", ttl = 60, batch(id in ids))]
async fn users(ids: Vec<u64>) -> Vec<String> {
    ids.into_iter().map(|id| format!("user {id}")).collect()
}

fn main() {}
