//! What the attributes mean at run time where the function's own meaning is
//! easy to lose (issue 18): generic parameters are part of the key, the
//! expansion's locals never shadow the user's, a key from a `macro_rules!`
//! caller reads the function's parameters, `self` in format strings and
//! `self: &Arc<Self>` keep their meaning in background runs, and
//! parameters under `#[cfg]` are keyed where they exist.
//!
//! In-process caches only: no Redis is needed. The strict lint levels below
//! are part of the test: `cargo clippy --all-targets -- -D warnings` checks
//! that the expansion trips none of them (no `#[allow]` a crate could
//! forbid, no `items_after_statements` on a body's leading `use`).

// (`#[tokio::test]` itself allows `unused_mut`, so that one can't be
// forbidden here; tests/ui/pass/strict-lints.rs forbids it too.)
#![forbid(unreachable_code, unknown_lints, dead_code, unused_variables)]
#![warn(clippy::pedantic)]

use std::fmt;
use std::sync::Arc;

use cache_runtime::{Cache, cached, write_through};

async fn in_process_cache() -> Cache {
    Cache::builder()
        .build()
        .await
        .expect("an in-process cache needs no configuration")
}

// Generic parameters.

// Each test has its own cache, whose `loads` count the runs of the body.

#[cached(key = "scaled:<N>:<id>", ttl = 60, cache = cache, skip(cache))]
async fn scaled<const N: u64>(cache: &Cache, id: u64) -> u64 {
    use std::ops::Mul;
    id.mul(N)
}

#[tokio::test]
async fn const_generic_parameters_are_part_of_the_key() {
    let cache = in_process_cache().await;
    assert_eq!(scaled::<2>(&cache, 5).await, 10);
    assert_eq!(
        scaled::<3>(&cache, 5).await,
        15,
        "not `scaled::<2>`'s entry"
    );
    assert_eq!(scaled::<2>(&cache, 5).await, 10);
    assert_eq!(scaled::<3>(&cache, 5).await, 15);
    assert_eq!(cache.stats().loads, 2, "one run per `N`");
}

trait Tenant {
    const NAME: &'static str;
}

struct TenantA;
struct TenantB;

impl Tenant for TenantA {
    const NAME: &'static str = "a";
}

impl Tenant for TenantB {
    const NAME: &'static str = "b";
}

#[cached(key = "tenant:<T>:user:<id>", ttl = 60, cache = cache, skip(cache))]
async fn tenant_user<T: Tenant>(cache: &Cache, id: u64) -> String {
    format!("{}:{id}", T::NAME)
}

#[tokio::test]
async fn type_parameters_are_part_of_the_key() {
    let cache = in_process_cache().await;
    assert_eq!(tenant_user::<TenantA>(&cache, 7).await, "a:7");
    assert_eq!(
        tenant_user::<TenantB>(&cache, 7).await,
        "b:7",
        "not tenant A's entry"
    );
    assert_eq!(tenant_user::<TenantA>(&cache, 7).await, "a:7");
    assert_eq!(cache.stats().loads, 2, "one run per tenant");
}

#[write_through(key = "scaled:<N>:<id>", ttl = 60, cache = cache)]
async fn store_scaled<const N: u64>(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[tokio::test]
async fn a_generic_write_through_feeds_the_entry_of_its_own_parameters() {
    let cache = in_process_cache().await;
    store_scaled::<7>(&cache, 1, 700).await;
    assert_eq!(scaled::<7>(&cache, 1).await, 700, "the stored value");
    assert_eq!(
        scaled::<8>(&cache, 1).await,
        8,
        "another `N`, another entry"
    );
    assert_eq!(cache.stats().loads, 1, "only `scaled::<8>` ran");
}

// Hygiene.

#[cached(key = "sum:<__cache_key>:<__cache_cache>", ttl = 60, cache = cache, skip(cache))]
async fn named_like_the_expansion(cache: &Cache, __cache_key: u64, __cache_cache: u64) -> u64 {
    __cache_key * 10 + __cache_cache
}

#[tokio::test]
async fn parameters_named_like_the_expansions_locals_stay_the_users() {
    let cache = in_process_cache().await;
    assert_eq!(named_like_the_expansion(&cache, 1, 2).await, 12);
    assert_eq!(named_like_the_expansion(&cache, 2, 1).await, 21);
    assert_eq!(named_like_the_expansion(&cache, 1, 2).await, 12);
    // The values were keyed: two entries.
    assert_eq!(cache.stats().loads, 2);
}

// A key from a `macro_rules!` caller.

macro_rules! cached_lookup {
    ($name:ident, $key:literal) => {
        #[cached(key = $key, ttl = 60, cache = cache, skip(cache))]
        async fn $name(cache: &Cache, id: u64) -> u64 {
            id + 1
        }
    };
}

cached_lookup!(lookup, "lookup:<id>");

#[tokio::test]
async fn a_key_passed_through_macro_rules_reads_the_parameters() {
    let cache = in_process_cache().await;
    assert_eq!(lookup(&cache, 1).await, 2);
    assert_eq!(lookup(&cache, 2).await, 3);
    assert_eq!(lookup(&cache, 1).await, 2);
    assert_eq!(cache.stats().loads, 2);
}

// The receiver in background runs.

#[derive(Clone, Debug)]
struct Repo {
    cache: Cache,
    name: String,
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.name)
    }
}

impl Repo {
    #[cached(key = "describe:<id>", ttl = 60, stale = 30, cache = self.cache)]
    async fn describe(&self, id: u64) -> String {
        format!("{self}:{id}:{self:>6}")
    }
}

#[tokio::test]
async fn self_captured_by_format_strings_reads_the_receiver() {
    let repo = Repo {
        cache: in_process_cache().await,
        name: "repo".to_owned(),
    };
    assert_eq!(repo.describe(1).await, "repo:1:  repo");
    assert_eq!(repo.describe(1).await, "repo:1:  repo");
    assert_eq!(repo.cache.stats().loads, 1);
}

struct Service {
    cache: Cache,
    name: String,
}

impl Service {
    fn handles(self: &Arc<Self>) -> usize {
        Arc::strong_count(self)
    }

    #[cached(key = "service:<id>", ttl = 60, early, cache = self.cache)]
    async fn greet(self: &Arc<Self>, id: u64) -> String {
        let handle: Arc<Self> = Arc::clone(self);
        format!("{}:{id}:{}", handle.name, self.handles() > 1)
    }
}

#[tokio::test]
async fn an_arc_receiver_is_an_arc_in_the_body() {
    let service = Arc::new(Service {
        cache: in_process_cache().await,
        name: "svc".to_owned(),
    });
    assert_eq!(service.greet(1).await, "svc:1:true");
    assert_eq!(service.greet(1).await, "svc:1:true");
    assert_eq!(service.cache.stats().loads, 1);
}

// Parameters under `#[cfg]`.

#[cached(key = "regional:<region>:<legacy>:<id>", ttl = 60, stale = 30, cache = cache, skip(cache))]
async fn regional(
    cache: &Cache,
    #[cfg(unix)] region: &str,
    #[cfg(not(unix))] legacy: u8,
    id: u64,
) -> String {
    #[cfg(unix)]
    let answer = format!("{region}/{id}");
    #[cfg(not(unix))]
    let answer = format!("{legacy}/{id}");
    answer
}

#[cfg(unix)]
#[tokio::test]
async fn a_parameter_under_cfg_is_keyed_where_it_exists() {
    let cache = in_process_cache().await;
    assert_eq!(regional(&cache, "eu", 1).await, "eu/1");
    assert_eq!(
        regional(&cache, "us", 1).await,
        "us/1",
        "not the `eu` entry"
    );
    assert_eq!(regional(&cache, "eu", 1).await, "eu/1");
    assert_eq!(cache.stats().loads, 2);
}

// Return shapes resolved through the type system: aliases keep "`Err` is
// never cached", and `None` is cached only with `negative`.

/// Counts the runs of a body (each test has its own counter).
#[derive(Default)]
struct Runs(std::sync::atomic::AtomicU32);

impl Runs {
    fn bump(&self) -> u32 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    fn count(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type Outcome<T> = Result<T, String>;
type MaybeNumber = Option<u64>;

static ALIAS_RESULT_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

/// `Err` on the first run, `Ok` after.
#[cached(key = "alias-result:<id>", ttl = 60, cache = cache, skip(cache))]
async fn alias_result(cache: &Cache, id: u64) -> Outcome<u64> {
    if ALIAS_RESULT_RUNS.bump() == 1 {
        return Err("the database is down".to_owned());
    }
    Ok(id)
}

#[tokio::test]
async fn an_alias_of_result_never_caches_err() {
    let cache = in_process_cache().await;
    assert_eq!(
        alias_result(&cache, 1).await,
        Err("the database is down".to_owned())
    );
    assert_eq!(
        alias_result(&cache, 1).await,
        Ok(1),
        "the `Err` was not cached"
    );
    assert_eq!(alias_result(&cache, 1).await, Ok(1));
    assert_eq!(ALIAS_RESULT_RUNS.count(), 2, "the `Ok` was");
}

static ALIAS_OPTION_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "alias-option:<id>", ttl = 60, cache = cache, skip(cache))]
async fn alias_option(cache: &Cache, id: u64) -> MaybeNumber {
    ALIAS_OPTION_RUNS.bump();
    (id > 0).then_some(id)
}

static ALIAS_NEGATIVE_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "alias-negative:<id>", ttl = 60, negative = 60, cache = cache, skip(cache))]
async fn alias_negative(cache: &Cache, id: u64) -> MaybeNumber {
    ALIAS_NEGATIVE_RUNS.bump();
    (id > 0).then_some(id)
}

#[tokio::test]
async fn an_alias_of_option_caches_none_only_with_negative() {
    let cache = in_process_cache().await;
    assert_eq!(alias_option(&cache, 0).await, None);
    assert_eq!(alias_option(&cache, 0).await, None);
    assert_eq!(
        ALIAS_OPTION_RUNS.count(),
        2,
        "`None` is not cached without `negative`"
    );
    assert_eq!(alias_option(&cache, 5).await, Some(5));
    assert_eq!(alias_option(&cache, 5).await, Some(5));
    assert_eq!(ALIAS_OPTION_RUNS.count(), 3);
    assert_eq!(alias_negative(&cache, 0).await, None);
    assert_eq!(alias_negative(&cache, 0).await, None);
    assert_eq!(
        ALIAS_NEGATIVE_RUNS.count(),
        1,
        "`negative` on an alias caches `None`"
    );
    assert_eq!(cache.stats().negative_hits, 1);
}

static ALIAS_RESULT_OPTION_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "alias-result-option:<id>", ttl = 60, cache = cache, skip(cache))]
async fn alias_result_option(cache: &Cache, id: u64) -> Outcome<MaybeNumber> {
    ALIAS_RESULT_OPTION_RUNS.bump();
    match id {
        0 => Ok(None),
        1 => Err("failed".to_owned()),
        id => Ok(Some(id)),
    }
}

#[tokio::test]
async fn aliases_nest_as_result_of_option() {
    let cache = in_process_cache().await;
    for _ in 0..2 {
        assert_eq!(alias_result_option(&cache, 0).await, Ok(None));
        assert_eq!(
            alias_result_option(&cache, 1).await,
            Err("failed".to_owned())
        );
        assert_eq!(alias_result_option(&cache, 2).await, Ok(Some(2)));
    }
    assert_eq!(
        ALIAS_RESULT_OPTION_RUNS.count(),
        5,
        "`Ok(None)` and `Err` ran twice, `Ok(Some)` once"
    );
}

static OPTION_RESULT_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "option-result:<id>", ttl = 60, negative = 60, cache = cache, skip(cache))]
async fn option_result(cache: &Cache, id: u64) -> Option<Result<u64, String>> {
    OPTION_RESULT_RUNS.bump();
    match id {
        0 => None,
        1 => Some(Err("failed".to_owned())),
        id => Some(Ok(id)),
    }
}

#[tokio::test]
async fn option_of_result_never_caches_some_err() {
    let cache = in_process_cache().await;
    for _ in 0..2 {
        assert_eq!(
            option_result(&cache, 1).await,
            Some(Err("failed".to_owned()))
        );
        assert_eq!(option_result(&cache, 2).await, Some(Ok(2)));
        assert_eq!(option_result(&cache, 0).await, None);
    }
    assert_eq!(
        OPTION_RESULT_RUNS.count(),
        4,
        "`Some(Err)` ran twice; `Some(Ok)` and `None` (with `negative`) once"
    );
}

/// A crate's own `Result`: a plain value like any other, cached whole.
mod own {
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub enum Result<T, E> {
        Ok(T),
        Err(E),
    }
}

static OWN_RESULT_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "own-result:<id>", ttl = 60, cache = cache, skip(cache))]
async fn own_result(cache: &Cache, id: u64) -> own::Result<u64, String> {
    OWN_RESULT_RUNS.bump();
    if id == 0 {
        own::Result::Err("zero".to_owned())
    } else {
        own::Result::Ok(id)
    }
}

#[tokio::test]
async fn a_type_named_result_is_a_plain_value() {
    let cache = in_process_cache().await;
    for _ in 0..2 {
        assert_eq!(
            own_result(&cache, 0).await,
            own::Result::Err("zero".to_owned())
        );
        assert_eq!(own_result(&cache, 3).await, own::Result::Ok(3));
    }
    assert_eq!(OWN_RESULT_RUNS.count(), 2, "both variants are values");
}

static ALIAS_READER_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "alias-write:<id>", ttl = 60, cache = cache, skip(cache))]
async fn alias_reader(cache: &Cache, id: u64) -> Outcome<u64> {
    ALIAS_READER_RUNS.bump();
    Ok(id)
}

#[write_through(key = "alias-write:<id>", ttl = 60, cache = cache)]
async fn alias_write(cache: &Cache, id: u64, value: Outcome<u64>) -> Outcome<u64> {
    value
}

#[cache_runtime::invalidates(key = "alias-write:<id>", cache = cache)]
async fn alias_invalidate(cache: &Cache, id: u64, fail: bool) -> Outcome<()> {
    if fail {
        return Err("not updated".to_owned());
    }
    Ok(())
}

#[tokio::test]
async fn mutations_returning_an_alias_of_result_touch_nothing_on_err() {
    let cache = in_process_cache().await;
    assert_eq!(
        alias_write(&cache, 1, Err("refused".to_owned())).await,
        Err("refused".to_owned())
    );
    assert_eq!(
        alias_reader(&cache, 1).await,
        Ok(1),
        "the `Err` was not stored"
    );
    assert_eq!(ALIAS_READER_RUNS.count(), 1);
    assert_eq!(alias_write(&cache, 1, Ok(10)).await, Ok(10));
    assert_eq!(alias_reader(&cache, 1).await, Ok(10), "the `Ok` was stored");
    assert_eq!(
        alias_invalidate(&cache, 1, true).await,
        Err("not updated".to_owned())
    );
    assert_eq!(
        alias_reader(&cache, 1).await,
        Ok(10),
        "an `Err` invalidates nothing"
    );
    assert_eq!(alias_invalidate(&cache, 1, false).await, Ok(()));
    assert_eq!(alias_reader(&cache, 1).await, Ok(1), "an `Ok` invalidates");
    assert_eq!(ALIAS_READER_RUNS.count(), 2);
}

// A placeholder whose `Display` fails: the key cannot be rendered, so the
// call runs uncached (it must never share another value's entry).

/// Writes its number, then fails: the key would hold only what came before.
struct Unrenderable(u64);

impl fmt::Display for Unrenderable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 / 100)?;
        Err(fmt::Error)
    }
}

static UNRENDERABLE_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "unrenderable:<id>", ttl = 60, cache = cache, skip(cache))]
async fn unrenderable(cache: &Cache, id: Unrenderable) -> u64 {
    UNRENDERABLE_RUNS.bump();
    id.0
}

#[tokio::test]
async fn a_key_whose_display_fails_runs_the_call_uncached() {
    let logs = cache_test_support::CapturedLogs::start(tracing::Level::ERROR);
    let cache = in_process_cache().await;
    assert_eq!(unrenderable(&cache, Unrenderable(1)).await, 1);
    assert_eq!(
        unrenderable(&cache, Unrenderable(2)).await,
        2,
        "not `Unrenderable(1)`'s value"
    );
    assert_eq!(unrenderable(&cache, Unrenderable(1)).await, 1);
    assert_eq!(UNRENDERABLE_RUNS.count(), 3, "nothing was stored");
    assert_eq!(cache.stats().l1_entries, 0);
    assert!(logs.text().contains("unrenderable:<id>"), "{}", logs.text());
}

static UNRENDERABLE_TAG_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "unrenderable-tag:<id>", ttl = 60, tags = ["group:<group>"], cache = cache, skip(cache, group))]
async fn unrenderable_tag(cache: &Cache, id: u64, group: Unrenderable) -> u64 {
    let _ = group;
    UNRENDERABLE_TAG_RUNS.bump();
    id
}

#[tokio::test]
async fn a_tag_whose_display_fails_runs_the_call_uncached() {
    // A hit renders no tag (the entry holds its own tags' versions), so the
    // failure shows on the miss: nothing is stored, every call runs its body.
    let logs = cache_test_support::CapturedLogs::start(tracing::Level::ERROR);
    let cache = in_process_cache().await;
    for _ in 0..3 {
        assert_eq!(unrenderable_tag(&cache, 7, Unrenderable(1)).await, 7);
    }
    assert_eq!(UNRENDERABLE_TAG_RUNS.count(), 3, "nothing was stored");
    assert_eq!(cache.stats().l1_entries, 0);
    assert!(
        logs.text().contains("unrenderable-tag:<id>"),
        "{}",
        logs.text()
    );
}

#[cached(key = "unrenderable-flight:<id>", ttl = 60, cache = cache, skip(cache, barrier))]
async fn unrenderable_meeting(
    cache: &Cache,
    id: Unrenderable,
    barrier: &tokio::sync::Barrier,
) -> u64 {
    // Both calls must run their body: one waiting on the other's flight
    // would never meet it here.
    barrier.wait().await;
    id.0
}

#[tokio::test]
async fn calls_whose_key_cannot_be_rendered_share_no_flight() {
    let cache = in_process_cache().await;
    let barrier = tokio::sync::Barrier::new(2);
    let both = futures_util::future::join(
        unrenderable_meeting(&cache, Unrenderable(1), &barrier),
        unrenderable_meeting(&cache, Unrenderable(2), &barrier),
    );
    let answers = tokio::time::timeout(std::time::Duration::from_secs(5), both)
        .await
        .expect("each call runs its own body");
    assert_eq!(answers, (1, 2));
}

static PREFIX_READER_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

/// Reads the key an unrenderable placeholder would collapse to
/// (`"unrenderable-write:"` + what its `Display` wrote before failing).
#[cached(key = "unrenderable-write:<prefix>", ttl = 60, cache = cache, skip(cache))]
async fn prefix_reader(cache: &Cache, prefix: u64) -> u64 {
    PREFIX_READER_RUNS.bump();
    prefix
}

#[write_through(key = "unrenderable-write:<id>", ttl = 60, cache = cache)]
async fn unrenderable_write(cache: &Cache, id: Unrenderable, value: u64) -> u64 {
    value
}

#[cache_runtime::invalidates(key = "unrenderable-write:<id>", key = "unrenderable-write:<other>", cache = cache)]
async fn unrenderable_invalidate(cache: &Cache, id: Unrenderable, other: u64) {}

#[tokio::test]
async fn mutations_whose_key_cannot_be_rendered_touch_no_other_entry() {
    let logs = cache_test_support::CapturedLogs::start(tracing::Level::ERROR);
    let cache = in_process_cache().await;
    // `Unrenderable(5)` renders "0" before failing.
    assert_eq!(unrenderable_write(&cache, Unrenderable(5), 99).await, 99);
    assert_eq!(
        prefix_reader(&cache, 0).await,
        0,
        "99 was not stored under `unrenderable-write:0`"
    );
    assert_eq!(PREFIX_READER_RUNS.count(), 1);
    assert!(
        logs.text().contains("unrenderable-write:<id>"),
        "{}",
        logs.text()
    );
    // The invalidation drops the keys it can render, and only those.
    assert_eq!(prefix_reader(&cache, 7).await, 7);
    unrenderable_invalidate(&cache, Unrenderable(5), 7).await;
    assert_eq!(
        prefix_reader(&cache, 0).await,
        0,
        "`unrenderable-write:0` was not dropped"
    );
    assert_eq!(prefix_reader(&cache, 7).await, 7);
    assert_eq!(
        PREFIX_READER_RUNS.count(),
        3,
        "`unrenderable-write:7` was dropped"
    );
}

static TAGGED_READER_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "tagged-write:<id>", ttl = 60, cache = cache, skip(cache))]
async fn tagged_reader(cache: &Cache, id: u64) -> u64 {
    TAGGED_READER_RUNS.bump();
    id
}

#[write_through(key = "tagged-write:<id>", ttl = 60, tags = ["org:<org>"], cache = cache)]
async fn write_with_unrenderable_tag(cache: &Cache, id: u64, org: Unrenderable, value: u64) -> u64 {
    value
}

#[tokio::test]
async fn a_write_whose_tag_cannot_be_rendered_invalidates_its_key() {
    let cache = in_process_cache().await;
    assert_eq!(tagged_reader(&cache, 1).await, 1);
    assert_eq!(
        write_with_unrenderable_tag(&cache, 1, Unrenderable(5), 99).await,
        99
    );
    assert_eq!(
        tagged_reader(&cache, 1).await,
        1,
        "the value was not stored without its tag, and the old one was dropped"
    );
    assert_eq!(TAGGED_READER_RUNS.count(), 2);
}

// A load that calls itself on its own key runs the inner call uncached
// instead of waiting for its own flight.

static SELF_CALL_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "self-call:<id>", ttl = 60, cache = cache, skip(cache))]
async fn calls_itself(cache: &Cache, id: u64) -> u64 {
    if SELF_CALL_RUNS.bump() == 1 {
        // The same key, from inside its own load.
        Box::pin(calls_itself(cache, id)).await + 1
    } else {
        id
    }
}

#[tokio::test]
async fn a_load_calling_itself_on_its_key_does_not_hang() {
    let cache = in_process_cache().await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), calls_itself(&cache, 10))
        .await
        .expect("the inner call does not wait for its own flight");
    assert_eq!(first, 11);
    assert_eq!(
        calls_itself(&cache, 10).await,
        11,
        "the outer value was cached"
    );
    assert_eq!(SELF_CALL_RUNS.count(), 2);
}

static STALE_SELF_CALL_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

#[cached(key = "stale-self-call:<id>", ttl = 60, stale = 60, cache = cache, skip(cache))]
async fn stale_calls_itself(cache: &Cache, id: u64) -> u64 {
    if STALE_SELF_CALL_RUNS.bump() == 1 {
        stale_calls_itself_boxed(cache, id).await + 1
    } else {
        id
    }
}

/// A recursive `async fn` whose future must be `Send` (as `stale` requires
/// of its body) recurses through a boxed, `Send` future.
fn stale_calls_itself_boxed(
    cache: &Cache,
    id: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send + '_>> {
    Box::pin(stale_calls_itself(cache, id))
}

#[tokio::test]
async fn a_refreshing_load_calling_itself_does_not_hang() {
    let cache = in_process_cache().await;
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stale_calls_itself(&cache, 3),
    )
    .await
    .expect("the inner call does not wait for its own flight");
    assert_eq!(first, 4);
}

static FACTORIAL_RUNS: Runs = Runs(std::sync::atomic::AtomicU32::new(0));

/// Calls itself on other keys: each stays cached.
#[cached(key = "factorial:<n>", ttl = 60, cache = cache, skip(cache))]
async fn factorial(cache: &Cache, n: u64) -> u64 {
    FACTORIAL_RUNS.bump();
    if n <= 1 {
        1
    } else {
        n * Box::pin(factorial(cache, n - 1)).await
    }
}

#[tokio::test]
async fn a_load_calling_the_function_on_other_keys_caches_each() {
    let cache = in_process_cache().await;
    assert_eq!(factorial(&cache, 5).await, 120);
    assert_eq!(factorial(&cache, 6).await, 720);
    assert_eq!(FACTORIAL_RUNS.count(), 6, "5..=1 once each, then 6");
    assert_eq!(cache.stats().l1_entries, 6);
}

// Lifetimes at the largest values the attribute accepts (10 years), with
// jitter and a cache whose own durations are at their largest.

#[cached(key = "forever:<id>", ttl = 315360000, jitter = 0.1, stale = 315360000, cache = cache, skip(cache))]
async fn forever(cache: &Cache, id: u64) -> u64 {
    id
}

#[tokio::test]
async fn the_longest_lifetimes_never_panic() {
    let cache = Cache::builder()
        .l1_max_ttl(std::time::Duration::MAX)
        .refresh_timeout(std::time::Duration::MAX)
        .refresh_retry_after(std::time::Duration::MAX)
        .lock_ttl(std::time::Duration::MAX)
        .lock_wait(std::time::Duration::MAX)
        .tombstone_ttl(std::time::Duration::MAX)
        .build()
        .await
        .expect("no Redis to configure");
    for id in 0..40 {
        assert_eq!(forever(&cache, id).await, id);
        assert_eq!(forever(&cache, id).await, id);
    }
    assert_eq!(cache.stats().loads, 40, "each value stays fresh");
}
