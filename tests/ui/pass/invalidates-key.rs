use cache_runtime::{cached, invalidates};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cached(key = "user:<id>", ttl = 300)]
async fn find_user(id: u64) -> User {
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    User {
        id,
        name: format!("user {id}"),
    }
}

// Parameters need not all be in the key; `mut` parameters and early
// `return`s work as without the macro.
#[invalidates(key = "user:<id>")]
async fn update_user(id: u64, mut name: String) -> Result<(), std::io::Error> {
    if name.is_empty() {
        return Err(std::io::Error::other("empty name"));
    }
    name.push('!');
    let _ = (id, name);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let loads = || LOADS.load(std::sync::atomic::Ordering::Relaxed);
    find_user(1).await;
    find_user(1).await;
    assert_eq!(loads(), 1);
    // `Err`: nothing is touched.
    assert!(update_user(1, String::new()).await.is_err());
    find_user(1).await;
    assert_eq!(loads(), 1);
    // `Ok`: the key is deleted, so the next call loads again.
    update_user(1, "ada".to_owned()).await.unwrap();
    find_user(1).await;
    assert_eq!(loads(), 2);
}
