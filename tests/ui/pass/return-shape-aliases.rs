//! Return shapes are resolved through the type system: aliases, a crate's
//! own type named `Result`, and `Option<Result<T, E>>` all compile, and
//! `negative` accepts an alias of `Option`.

use cache_runtime::{cached, invalidates, write_through};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

type ApiResult<T> = Result<T, String>;
type MaybeUser = Option<User>;

mod own {
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    pub enum Result {
        Found(u64),
        Missing,
    }
}

#[cached(key = "api:<id>", ttl = 60)]
async fn api(id: u64) -> ApiResult<User> {
    Ok(User { id })
}

#[cached(key = "maybe:<id>", ttl = 60, negative = 10)]
async fn maybe(id: u64) -> MaybeUser {
    (id > 0).then_some(User { id })
}

#[cached(key = "api-maybe:<id>", ttl = 60, negative = 10)]
async fn api_maybe(id: u64) -> ApiResult<MaybeUser> {
    Ok((id > 0).then_some(User { id }))
}

#[cached(key = "option-result:<id>", ttl = 60, negative = 10)]
async fn option_result(id: u64) -> Option<Result<User, String>> {
    (id > 0).then_some(Ok(User { id }))
}

#[cached(key = "own:<id>", ttl = 60)]
async fn own_result(id: u64) -> own::Result {
    if id > 0 { own::Result::Found(id) } else { own::Result::Missing }
}

#[write_through(key = "api:<id>", ttl = 60)]
async fn save(id: u64) -> ApiResult<User> {
    Ok(User { id })
}

#[invalidates(key = "api:<id>")]
async fn drop_user(id: u64) -> ApiResult<()> {
    let _ = id;
    Ok(())
}

fn main() {
    let _ = (api(1), maybe(1), api_maybe(1), option_result(1), own_result(1), save(1), drop_user(1));
}
