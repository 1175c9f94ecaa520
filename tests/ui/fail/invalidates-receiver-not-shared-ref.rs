use cache_runtime::{Cache, invalidates};

pub struct Repo {
    cache: Cache,
    updates: u64,
}

impl Repo {
    #[invalidates(key = "user:<id>", cache = self.cache)]
    async fn update_user(&mut self, id: u64) {
        let _ = id;
        self.updates += 1;
    }

    #[invalidates(key = "user:<id>")]
    async fn into_deleted(self, id: u64) -> u64 {
        let _ = (id, self.cache);
        self.updates
    }
}

fn main() {}
