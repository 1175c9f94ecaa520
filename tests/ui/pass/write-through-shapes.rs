use cache_runtime::{cached, write_through};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct DbError;

static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cached(key = "user:<id>", ttl = 300)]
async fn find_user(id: u64) -> Option<User> {
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(User {
        id,
        name: "from the database".to_owned(),
    })
}

// The stored value is the innermost `User`, whichever shape returns it; the
// parameters need not all be in the key.
#[write_through(key = "user:<id>", ttl = 300)]
async fn rename_user(id: u64, name: String) -> Result<User, DbError> {
    if name.is_empty() {
        return Err(DbError);
    }
    Ok(User { id, name })
}

#[write_through(key = "user:<id>", ttl = 300, jitter = 0.1, stale = 60)]
async fn maybe_rename(id: u64, name: Option<String>) -> Option<User> {
    Some(User { id, name: name? })
}

#[write_through(key = "user:<user.id>", ttl = 300, tags = ["org:<org>"])]
async fn save(org: u32, user: User) -> User {
    let _ = org;
    user
}

#[write_through(key = "user:<id>", ttl = 300)]
async fn upsert(id: u64) -> std::io::Result<Option<User>> {
    Ok(Some(User {
        id,
        name: "upserted".to_owned(),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let name = |user: Option<User>| user.map(|user| user.name);
    // `Err` stores nothing: the next read loads.
    assert!(rename_user(1, String::new()).await.is_err());
    assert_eq!(
        name(find_user(1).await).as_deref(),
        Some("from the database")
    );
    assert_eq!(LOADS.load(std::sync::atomic::Ordering::Relaxed), 1);
    // `Ok(user)` replaces the entry the `#[cached]` function reads.
    rename_user(1, "ada".to_owned()).await.unwrap();
    assert_eq!(name(find_user(1).await).as_deref(), Some("ada"));
    assert_eq!(maybe_rename(1, None).await, None);
    assert_eq!(name(find_user(1).await).as_deref(), Some("ada"));
    maybe_rename(1, Some("grace".to_owned())).await;
    assert_eq!(name(find_user(1).await).as_deref(), Some("grace"));
    let user = save(
        7,
        User {
            id: 1,
            name: "saved".to_owned(),
        },
    )
    .await;
    assert_eq!(user.name, "saved");
    assert_eq!(name(find_user(1).await).as_deref(), Some("saved"));
    upsert(1).await.unwrap();
    assert_eq!(name(find_user(1).await).as_deref(), Some("upserted"));
    assert_eq!(LOADS.load(std::sync::atomic::Ordering::Relaxed), 1);
}
