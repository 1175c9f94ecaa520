use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60, negative = 30)]
async fn user_name(id: u64) -> Result<String, std::io::Error> {
    Ok(format!("user {id}"))
}

fn main() {}
