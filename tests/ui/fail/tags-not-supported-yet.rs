use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, tags = ["user:<id>"])]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
