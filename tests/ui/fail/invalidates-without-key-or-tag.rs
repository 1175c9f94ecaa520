use cache_runtime::invalidates;

#[invalidates()]
async fn update_user(id: u64) -> Result<(), std::io::Error> {
    let _ = id;
    Ok(())
}

#[invalidates(cache = &CACHE)]
async fn delete_user(id: u64) {
    let _ = id;
}

static CACHE: std::sync::LazyLock<cache_runtime::Cache> =
    std::sync::LazyLock::new(cache_runtime::Cache::global);

fn main() {}
