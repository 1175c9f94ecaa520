use cache_runtime::invalidates;

// `#[invalidates]` deletes entries: TTLs are set where entries are stored.
#[invalidates(key = "user:<id>", ttl = 60, jitter = 0.1)]
async fn update_user(id: u64) -> Result<(), std::io::Error> {
    let _ = id;
    Ok(())
}

#[invalidates(key = "user:<id>", tags = ["org:<org>"], expire)]
async fn delete_user(id: u64, org: u32) {
    let _ = (id, org);
}

fn main() {}
