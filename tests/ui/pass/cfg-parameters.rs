use cache_runtime::{cached, invalidates, write_through};

// A parameter configured away needs no placeholder; one that exists is
// rendered (and copied for background runs) under its `#[cfg]`.
#[cached(key = "user:<tenant>:<region>:<id>", ttl = 60, stale = 30)]
async fn user(
    #[cfg(any())] tenant: u32,
    #[cfg(any())] unkeyed: u8,
    #[cfg(all())] region: &str,
    id: u64,
) -> String {
    format!("user {id}")
}

#[cached(key = "user:<region>:<id>", ttl = 60, early)]
async fn regional(#[cfg(all())] region: &str, #[cfg_attr(all(), cfg(any()))] tenant: u32, id: u64) -> String {
    format!("{region}/{id}")
}

#[write_through(key = "user:<tenant>:<id>", ttl = 60)]
async fn save(#[cfg(any())] tenant: u32, id: u64) -> String {
    format!("user {id}")
}

#[invalidates(key = "user:<tenant>:<id>")]
async fn forget(#[cfg(any())] tenant: u32, id: u64) {
    let _ = id;
}

fn main() {
    let _ = user;
    let _ = regional;
    let _ = save;
    let _ = forget;
}
