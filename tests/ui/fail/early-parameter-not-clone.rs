use cache_runtime::cached;

// Not `Clone`: each run of the body gets its own copy of the parameters.
pub struct Query {
    pub id: u64,
}

#[cached(key = "user:<query.id>", ttl = 60, early)]
async fn user_name(query: Query) -> String {
    format!("user {}", query.id)
}

fn main() {}
