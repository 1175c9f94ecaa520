use cache_runtime::cached;

#[cached(key = "balance:<account>", ttl = 5, l1 = false)]
async fn balance(account: u64) -> i64 {
    account as i64
}

fn main() {}
