use cache_runtime::cached;

pub struct Repo;

impl Repo {
    #[cached(key = "user:<id>", ttl = 60)]
    async fn user_name(self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {}
