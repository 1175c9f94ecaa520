use cache_runtime::invalidates;

#[invalidates(key = "user:<id>")]
fn update_user(id: u64) -> Result<(), std::io::Error> {
    let _ = id;
    Ok(())
}

fn main() {}
