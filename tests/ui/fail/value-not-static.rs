use std::marker::PhantomData;

use cache_runtime::cached;

// A cached value outlives the call that loaded it: a value that borrows
// from the caller cannot be cached.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User<'a> {
    pub id: u64,
    from: PhantomData<&'a str>,
}

#[cached(key = "user:<id>", ttl = 60, skip(name))]
async fn find_user<'a>(id: u64, name: &'a str) -> Option<User<'a>> {
    let _ = name;
    Some(User { id, from: PhantomData })
}

fn main() {}
