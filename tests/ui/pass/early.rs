use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[cached(key = "user:<id>", ttl = 300, early)]
pub async fn get_user(id: u64) -> Option<User> {
    Some(User {
        id,
        name: String::new(),
    })
}

#[cached(key = "user:<id>:name", ttl = 300, early = 0.5, lock)]
pub async fn user_name(id: u64) -> Result<String, std::io::Error> {
    Ok(format!("user {id}"))
}

// A free function with an owned `String` parameter, which each run clones.
#[cached(key = "user-by-name:<name>", ttl = 60, early)]
pub async fn find_by_name(name: String) -> Result<Option<User>, std::io::Error> {
    Ok(Some(User { id: 7, name }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(get_user(1).await.map(|user| user.id), Some(1));
    assert_eq!(user_name(2).await.unwrap(), "user 2");
    let name = String::from("ada");
    let found = find_by_name(name.clone()).await.unwrap().unwrap();
    assert_eq!(found.name, "ada");
    // A hit: the body does not run again, and the caller still has `name`.
    let found = find_by_name(name).await.unwrap().unwrap();
    assert_eq!((found.id, found.name.as_str()), (7, "ada"));
}
