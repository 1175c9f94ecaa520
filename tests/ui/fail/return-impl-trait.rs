use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60)]
async fn user_name(id: u64) -> impl std::fmt::Display {
    id
}

fn main() {}
