//! `CacheBuilder::strict_global`: a function that reaches for the global
//! cache before `set_global` panics, naming itself. (A test binary of its
//! own: the setting applies to the whole process.)

use cache_runtime::{Cache, cached};

#[cached(key = "report:<id>", ttl = 60)]
async fn load_report(id: u64) -> Option<String> {
    Some(format!("report {id}"))
}

#[tokio::test]
async fn a_forgotten_set_global_panics_naming_the_function() {
    let cache = Cache::builder().strict_global(true).build().await.unwrap();
    let forgotten = tokio::spawn(load_report(1)).await;
    let panic = forgotten.expect_err("panics").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("`load_report` uses the global cache, but none was set"),
        "{message}"
    );
    // With the global set, the same call works.
    Cache::set_global(cache);
    assert_eq!(load_report(1).await, Some("report 1".into()));
}
