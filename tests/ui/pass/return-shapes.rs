use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

#[derive(Debug)]
pub struct DbError;

impl From<std::num::ParseIntError> for DbError {
    fn from(_: std::num::ParseIntError) -> Self {
        DbError
    }
}

#[cached(key = "plain:<id>", ttl = 60)]
async fn plain(id: u64) -> User {
    User { id }
}

#[cached(key = "option:<id>", ttl = 60)]
async fn option(id: u64) -> Option<User> {
    if id == 0 {
        return None;
    }
    Some(User { id })
}

#[cached(key = "result:<id>", ttl = 60)]
async fn result(id: &str) -> Result<User, DbError> {
    // `?` converts through `From`, as in an unannotated function.
    Ok(User { id: id.parse()? })
}

#[cached(key = "result-option:<id>", ttl = 60)]
async fn result_option(id: u64) -> Result<Option<User>, DbError> {
    Ok(Some(User { id }))
}

#[cached(key = "io:<path>", ttl = 60)]
async fn io_result(path: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

#[cached(key = "io-option:<path>", ttl = 60, negative = 5)]
async fn io_result_option(path: &str) -> std::io::Result<Option<String>> {
    Ok(std::fs::read_to_string(path).ok())
}

fn main() {}
