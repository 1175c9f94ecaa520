use cache_runtime::write_through;

#[write_through(key = "user:<id>", ttl = 60)]
async fn update_user(id: u64, name: String) -> Result<(), std::io::Error> {
    let _ = (id, name);
    Ok(())
}

#[write_through(key = "user:<id>", ttl = 60)]
async fn update_file(id: u64) -> std::io::Result<()> {
    let _ = id;
    Ok(())
}

fn main() {}
