use cache_runtime::cached;

pub struct Repo {
    calls: u64,
}

impl Repo {
    #[cached(key = "user:<id>", ttl = 60)]
    async fn user_name(&mut self, id: u64) -> String {
        self.calls += 1;
        format!("user {id}")
    }
}

fn main() {}
