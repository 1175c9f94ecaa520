use cache_runtime::write_through;

#[write_through(key = "user:<id>", ttl = 60)]
async fn rename_user(id: u64, name: String) -> Result<String, std::io::Error> {
    Ok(format!("{id}: {name}"))
}

fn main() {}
