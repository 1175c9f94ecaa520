//! `CacheBuilder::strict_global`: a function that reaches for the global
//! cache before `set_global` panics, naming itself; and a replaced global
//! is the one calls use. (A test binary of its own: both settings apply to
//! the whole process.)

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
    // With the global set, the same call works, through that cache.
    Cache::set_global(cache.clone());
    assert_eq!(load_report(1).await, Some("report 1".into()));
    assert_eq!(load_report(1).await, Some("report 1".into()));
    assert_eq!((cache.stats().misses, cache.stats().l1_hits), (1, 1));

    // A replaced global (the first one is kept, borrowed by calls): calls
    // from then on use the new one.
    let second = Cache::builder().namespace("second").build().await.unwrap();
    Cache::set_global(second.clone());
    assert_eq!(Cache::global().namespace(), "second");
    assert_eq!(load_report(1).await, Some("report 1".into()));
    assert_eq!(second.stats().misses, 1, "the new global loads");
    assert_eq!(
        (cache.stats().misses, cache.stats().l1_hits),
        (1, 1),
        "the old one is not used"
    );
    // Setting the first one again replaces the second.
    Cache::set_global(cache.clone());
    assert_eq!(load_report(1).await, Some("report 1".into()));
    assert_eq!(cache.stats().l1_hits, 2);
    assert_eq!(second.stats().l1_hits, 0);
}
