use cache_runtime::cached;

#[cached(key = user_key, ttl = "60", l1 = no, skip = pool)]
async fn user_name(id: u64, pool: u8) -> String {
    format!("user {id} {pool}")
}

fn main() {}
