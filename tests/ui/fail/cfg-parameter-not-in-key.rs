use cache_runtime::cached;

// `tenant` exists in this build (`cfg(all())`), so it must be in the key;
// `legacy` does not (`cfg(any())`), so it need not.
#[cached(key = "user:<id>", ttl = 60)]
async fn user(#[cfg(all())] tenant: u32, #[cfg(any())] legacy: bool, id: u64) -> String {
    format!("{tenant}/{id}")
}

fn main() {}
