use cache_runtime::invalidates;

#[invalidates(key = "user:<user_id>", tag = "org:<org_id>")]
async fn update_user(id: u64, org: u32) -> Result<(), std::io::Error> {
    let _ = (id, org);
    Ok(())
}

fn main() {}
