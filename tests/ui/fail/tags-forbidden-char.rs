use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, tags = ["org:*", "all users", "{org}"])]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user:<id>", ttl = 60, tags = "users")]
async fn user_name2(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
