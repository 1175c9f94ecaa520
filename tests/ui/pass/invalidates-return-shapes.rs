use cache_runtime::invalidates;

#[derive(Debug)]
pub struct DbError;

mod anyhow {
    pub type Result<T, E = std::io::Error> = std::result::Result<T, E>;
}

// No return type.
#[invalidates(key = "user:<id>")]
async fn no_return_type(id: u64) {
    let _ = id;
}

// `()` written out, with an early `return`.
#[invalidates(key = "user:<id>")]
async fn unit(id: u64) -> () {
    if id == 0 {
        return;
    }
}

#[invalidates(key = "user:<id>")]
async fn result_unit(id: u64) -> Result<(), DbError> {
    if id == 0 {
        return Err(DbError);
    }
    Ok(())
}

// `Result` recognised by its last path segment, and `?` as usual.
#[invalidates(key = "file:<path>")]
async fn io_result(path: &str) -> std::io::Result<()> {
    std::fs::metadata(path)?;
    Ok(())
}

#[invalidates(key = "file:<path>")]
async fn anyhow_like(path: &str) -> anyhow::Result<()> {
    std::fs::metadata(path)?;
    Ok(())
}

// Values are returned unchanged.
#[invalidates(key = "user:<id>")]
async fn value(id: u64) -> u64 {
    id + 1
}

#[invalidates(key = "user:<id>")]
async fn option(id: u64) -> Option<String> {
    (id > 0).then(|| id.to_string())
}

#[invalidates(key = "user:<id>")]
async fn result_option(id: u64) -> Result<Option<u64>, DbError> {
    Ok(Some(id))
}

// No bounds on what is returned: it is not stored.
#[invalidates(key = "user:<id>")]
async fn not_serializable(id: u64) -> Result<std::rc::Rc<u64>, DbError> {
    Ok(std::rc::Rc::new(id))
}

#[invalidates(key = "user:<id>")]
async fn opaque(id: u64) -> impl std::fmt::Display {
    id
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    no_return_type(1).await;
    unit(0).await;
    assert!(result_unit(0).await.is_err());
    assert!(result_unit(1).await.is_ok());
    assert!(io_result("/definitely/not/here").await.is_err());
    assert!(anyhow_like(".").await.is_ok());
    assert_eq!(value(1).await, 2);
    assert_eq!(option(3).await.as_deref(), Some("3"));
    assert_eq!(result_option(4).await.unwrap(), Some(4));
    assert_eq!(*not_serializable(5).await.unwrap(), 5);
    assert_eq!(opaque(6).await.to_string(), "6");
}
