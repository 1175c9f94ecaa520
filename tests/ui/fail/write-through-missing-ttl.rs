use cache_runtime::write_through;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[write_through(key = "user:<id>")]
async fn rename_user(id: u64, name: String) -> Result<User, std::io::Error> {
    let _ = name;
    Ok(User { id })
}

fn main() {}
