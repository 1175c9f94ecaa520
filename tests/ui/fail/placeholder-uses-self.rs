use cache_runtime::cached;

pub struct Tenant {
    pub id: u64,
}

impl Tenant {
    #[cached(key = "tenant:<self.id>:user:<id>", ttl = 60)]
    async fn user_name(&self, id: u64) -> String {
        format!("user {id}")
    }
}

fn main() {}
