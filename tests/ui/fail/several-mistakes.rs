use cache_runtime::cached;

#[cached(
    key = "user:<uid>",
    ttl = 0,
    jitter = 2.0,
    negative = 30,
    lock = true,
    ttl = 5
)]
fn find_user(org: u32, id: u64) -> String {
    format!("{org}/{id}")
}

fn main() {}
