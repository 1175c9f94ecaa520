#![deny(unused)]

use cache_runtime::cached;

// The attribute is wrong, so it expands to nothing; `org` and `id`, which
// only the key reads, are not reported as unused on top of its error.
#[cached(key = "org:<org>:user:<id>", ttl = 0)]
async fn user_name(org: u32, id: u64) -> String {
    String::new()
}

fn main() {
    let _ = user_name;
}
