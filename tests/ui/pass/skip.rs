use cache_runtime::cached;

pub struct Pool;

pub struct Trace {
    pub id: u128,
}

#[cached(key = "user:<id>", ttl = 60, skip(pool, trace))]
async fn user_name(pool: &Pool, id: u64, trace: Trace) -> String {
    let _ = (pool, trace.id);
    format!("user {id}")
}

// A parameter matched by `_` binds nothing the body could read: it needs no skip.
#[cached(key = "count:<id>", ttl = 60)]
async fn count(id: u64, _: &Pool) -> u64 {
    id
}

fn main() {}
