use cache_runtime::cached;

type Name = Result<String, std::io::Error>;

#[cached(key = "user:<id>", ttl = 60, negative = 30)]
async fn user_name(id: u64) -> Name {
    Ok(format!("user {id}"))
}

fn main() {}
