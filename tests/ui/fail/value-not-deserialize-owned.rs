use cache_runtime::cached;

// A value read back from Redis is built from bytes that are dropped right
// after: a value that borrows from them (`&'de str`) cannot be cached.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User<'a> {
    pub id: u64,
    pub name: &'a str,
}

#[cached(key = "user:<id>", ttl = 60)]
async fn find_user(id: u64) -> Option<User<'static>> {
    Some(User { id, name: "Ada" })
}

fn main() {}
