use cache_runtime::{cached, write_through};

#[cached(key = "usér:<id>", ttl = 60)]
async fn user(id: u64) -> String {
    format!("user {id}")
}

#[write_through(key = "user\x07:<id>", ttl = 60)]
async fn rename(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
