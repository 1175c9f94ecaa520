use cache_runtime::cached;

#[cached(key = "user:<>", ttl = 60, skip(id))]
async fn empty(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user:<id", ttl = 60)]
async fn unclosed(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user:id>", ttl = 60, skip(id))]
async fn stray(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user:<1x>", ttl = 60, skip(id))]
async fn not_a_name(id: u64) -> String {
    format!("user {id}")
}

#[cached(key = "user:<id..name>", ttl = 60)]
async fn empty_field(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
