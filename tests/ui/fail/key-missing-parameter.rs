use cache_runtime::cached;

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(org: u32, id: u64) -> String {
    format!("{org}/{id}")
}

fn main() {}
