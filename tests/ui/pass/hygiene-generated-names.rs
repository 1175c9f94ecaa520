use cache_runtime::{Cache, cached, invalidates, write_through};

// Parameters named like the expansion's locals are the user's own: the
// key renders them and the body reads them.
#[cached(key = "sum:<__cache_key>:<__cache_cache>:<__cache_site>", ttl = 60)]
async fn sum(__cache_key: u64, __cache_cache: u64, __cache_site: u64) -> u64 {
    __cache_key + __cache_cache + __cache_site
}

#[cached(key = "tags:<__cache_tags>", ttl = 60, stale = 30, cache = __cache_self, skip(__cache_self))]
async fn copied(__cache_tags: u64, __cache_self: &Cache) -> u64 {
    let _ = __cache_self;
    __cache_tags * 2
}

#[write_through(key = "sum:<__cache_key>:<__cache_pending>", ttl = 60)]
async fn store(__cache_key: u64, __cache_pending: u64) -> u64 {
    __cache_key + __cache_pending
}

#[invalidates(key = "sum:<__cache_keys>")]
async fn forget(__cache_keys: u64, __cache_returned: u64) -> u64 {
    __cache_keys + __cache_returned
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(sum(1, 2, 3).await, 6);
    assert_eq!(copied(21, &Cache::global()).await, 42);
    assert_eq!(store(1, 2).await, 3);
    assert_eq!(forget(1, 2).await, 3);
}
