use cache_runtime::{cached, write_through};

pub trait Tenant {
    const NAME: &'static str;
}

#[cached(key = "scaled:<id>", ttl = 60)]
async fn scaled<const N: u64>(id: u64) -> u64 {
    id * N
}

#[cached(key = "user:<id>", ttl = 60)]
async fn tenant_user<T: Tenant>(id: u64) -> String {
    format!("{}:{id}", T::NAME)
}

#[write_through(key = "scaled:<id>", ttl = 60)]
async fn save_scaled<const N: u64>(id: u64) -> u64 {
    id * N
}

fn main() {}
