use cache_runtime::invalidates;

#[invalidates(key = "user:*", tag = "org <org>")]
async fn update_user(id: u64, org: u32) -> Result<(), std::io::Error> {
    let _ = (id, org);
    Ok(())
}

fn main() {}
