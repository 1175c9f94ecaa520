use cache_runtime::cached;

#[cached(jitter = 0.1)]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
