use cache_runtime::cached;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(id: u64) -> Result<User, std::io::Error> {
    Ok(User { id })
}

fn main() {}
