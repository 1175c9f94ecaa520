use cache_runtime::{cached, invalidates, write_through};

#[cached(key = "a:<id>", ttl = 60)]
#[cached(key = "b:<id>", ttl = 60)]
async fn twice(id: u64) -> u64 {
    id
}

#[cached(key = "user:<id>", ttl = 60)]
#[invalidates(key = "user:<id>")]
async fn fills_and_drops(id: u64) -> u64 {
    id
}

#[invalidates(key = "user:<id>")]
#[cache_runtime::cached(key = "user:<id>", ttl = 60)]
async fn drops_and_fills(id: u64) -> u64 {
    id
}

#[cached(key = "user:<id>", ttl = 60)]
#[write_through(key = "user:<id>", ttl = 60)]
async fn reads_and_writes(id: u64) -> u64 {
    id
}

fn main() {}
