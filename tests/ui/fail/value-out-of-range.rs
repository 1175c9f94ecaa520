use cache_runtime::cached;

#[cached(key = "a:<id>", ttl = 18446744073709551615, stale = 315360001)]
async fn forever(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(key = "b:<id>", ttl = 60, negative = 99999999999999999999999, early = 1e309)]
async fn too_eager(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
