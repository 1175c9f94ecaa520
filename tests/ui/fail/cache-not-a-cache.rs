use cache_runtime::cached;

pub struct Repo {
    cache: String,
}

impl Repo {
    #[cached(key = "user:<id>", ttl = 60, cache = self.cache)]
    async fn user_name(&self, id: u64) -> String {
        format!("user {id} {}", self.cache)
    }
}

fn main() {}
