use cache_runtime::invalidates;

pub struct UserUpdate {
    pub name: String,
}

pub struct Address {
    pub city: String,
}

#[derive(Debug)]
pub struct DbError;

// `key` and `tag` repeat; placeholders may reach into fields.
#[invalidates(
    key = "user:<id>",
    key = "org:<org>:user:<id>",
    tag = "org:<org>",
    tag = "city:<address.city>"
)]
pub async fn update_user(
    id: u64,
    org: u32,
    address: &Address,
    data: UserUpdate,
) -> Result<(), DbError> {
    let _ = (id, org, &address.city, data.name);
    Ok(())
}

// Tags alone.
#[invalidates(tag = "org:<org>")]
pub async fn delete_org(org: u32) -> Result<u64, DbError> {
    Ok(u64::from(org))
}

// Keys alone.
#[invalidates(key = "user:<id>", key = "v2:user:<id>")]
pub async fn delete_user(id: u64) -> Result<(), DbError> {
    let _ = id;
    Ok(())
}

fn main() {
    let _ = (update_user, delete_org, delete_user);
}
