use cache_runtime::write_through;

#[write_through(key = "user:<id>", ttl = 60)]
async fn touch_user(id: u64) -> () {
    let _ = id;
}

#[write_through(key = "user:<id>", ttl = 60)]
async fn poke_user(id: u64) {
    let _ = id;
}

fn main() {}
