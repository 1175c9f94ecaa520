use cache_runtime::cached;

// What a crate that re-exports the runtime would write with its own path.
#[cached(key = "n:<n>", ttl = 60, crate = "cache_runtime")]
async fn double(n: u32) -> u32 {
    n * 2
}

mod reexport {
    pub use cache_runtime as runtime;
}

#[cached(key = "m:<n>", ttl = 60, crate = "crate::reexport::runtime")]
async fn triple(n: u32) -> u32 {
    n * 3
}

fn main() {}
