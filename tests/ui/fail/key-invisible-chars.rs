use cache_runtime::{cached, invalidates};

#[cached(key = "user\0:<id>", ttl = 60)]
async fn nul(id: u64) -> u64 {
    id
}

#[cached(key = "user\u{200b}:<id>", ttl = 60)]
async fn zero_width_space(id: u64) -> u64 {
    id
}

#[invalidates(key = "user:<id>", tag = "org\x7f:<id>")]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
