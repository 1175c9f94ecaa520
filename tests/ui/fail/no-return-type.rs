use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60)]
async fn touch_user(id: u64) {
    let _ = id;
}

#[cached(key = "user2:<id>", ttl = 60)]
async fn touch_user2(id: u64) -> () {
    let _ = id;
}

fn main() {}
