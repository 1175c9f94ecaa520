use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60)]
pub struct User {
    pub id: u64,
}

fn main() {}
