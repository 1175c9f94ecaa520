//! The engine without the attribute: [`Cache::get`], [`Cache::get_many`],
//! [`Cache::set`], [`Cache::get_or_load`], [`Cache::get_or_refresh`],
//! [`Cache::remove`], with [`Options`] for what an attribute's arguments
//! would say.
//!
//! `early` and `stale` run loads in the background, after the call
//! returned, which a loader borrowing from its caller cannot do. The
//! attribute copies the function's arguments into each load; here the
//! options' type says it: `.early()` and `.stale()` turn an
//! `Options<Plain>` into an `Options<Refreshing>`, which
//! `get_or_load_with` (borrowing loader) does not take and
//! `get_or_refresh` (loader making `Send + 'static` futures) does, so the
//! mistake is a compile error rather than options silently ignored.
//!
//! The engine is keyed by a [`Site`], the static description the attribute
//! writes for each function. A programmatic call describes itself with
//! [`Options`] instead, and each distinct set of options becomes one `Site`,
//! made on first use and kept for the process' life (a handful in
//! practice: options are per call site, not per key). Looking one up takes
//! no lock.
//!
//! Keys are rendered keys, as `#[cached]` renders its templates: build them
//! with [`escape_key_part`](crate::escape_key_part) around every value, so
//! that a programmatic call and an annotated function meet on one entry
//! (`format!("user:{}", escape_key_part(id))` is what `key = "user:<id>"`
//! renders).

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::Duration;

use crate::batch::{self, Batched};
use crate::engine::Cache;
use crate::keys::KeyBuf;
use crate::load::{self, Uncached};
use crate::shape::{self, CacheValue, Shape};
use crate::site::{Site, SiteSpec};
use crate::write::{begin_write, store_after_success};

/// What a programmatic read-through or write says beyond its key: the TTL
/// and the options an attribute would take (`negative`, `jitter`, `lock`,
/// `l1`, tags, `early`, `stale`), and a name for logs and spans.
///
/// Build options once per call site (a `static` with `LazyLock`, or a field)
/// rather than per call: each distinct set is described once and kept.
///
/// The type parameter says where the loader may run. `Options` (that is,
/// `Options<Plain>`) loads only inside the call, so its loader may borrow:
/// [`Cache::get_or_load_with`]. [`early`](Options::early) and
/// [`stale`](Options::stale) make an `Options<Refreshing>`, whose loads
/// also run in the background after the call returned: only
/// [`Cache::get_or_refresh`] takes it, with a loader whose futures own what
/// they use. Both kinds work with [`Cache::set_with`] and
/// [`Cache::get_or_refresh`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::{Cache, Options};
///
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User { name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().build().await.unwrap();
/// let options = Options::ttl(Duration::from_secs(300))
///     .name("load_user")
///     .negative(Duration::from_secs(60)) // cache "not found" for a minute
///     .jitter(0.1)
///     .lock() // one load per key across instances
///     .tags(["org:7"]);
/// let user: Option<User> = cache
///     .get_or_load_with("user:42", &options, || async { Some(User { name: "Ada".into() }) })
///     .await;
/// assert_eq!(user.map(|user| user.name).as_deref(), Some("Ada"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Options<Kind = Plain> {
    spec: SiteSpec,
    tags: Vec<String>,
    /// The site of `spec`, once looked up.
    site: OnceLock<&'static Site>,
    kind: PhantomData<Kind>,
}

/// The kind of [`Options`] without `early` or `stale` (the default): every
/// load runs inside the call that needs it, so the loader may borrow.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::{Options, Plain};
///
/// let options: Options<Plain> = Options::ttl(Duration::from_secs(60)).lock();
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Plain {}

/// The kind of [`Options`] with [`early`](Options::early) or
/// [`stale`](Options::stale): a load may also run in the background, after
/// the call returned, so they go only to [`Cache::get_or_refresh`].
///
/// # Example
///
/// ```
/// use std::sync::LazyLock;
/// use std::time::Duration;
/// use cache_runtime::{Options, Refreshing};
///
/// static PROFILES: LazyLock<Options<Refreshing>> = LazyLock::new(|| {
///     Options::ttl(Duration::from_secs(60)).stale(Duration::from_secs(600))
/// });
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Refreshing {}

impl Options {
    /// Options with a TTL: how long a value is fresh. The rest as an
    /// attribute without arguments: no negative caching, the cache's
    /// jitter, L1 on, no lock, no tags, no early refresh, no stale window.
    /// A zero TTL caches nothing: every load runs, and a `set` removes
    /// the key.
    pub fn ttl(ttl: Duration) -> Options {
        Options {
            spec: SiteSpec::new(Cow::Borrowed("(programmatic)"), ttl),
            tags: Vec::new(),
            site: OnceLock::new(),
            kind: PhantomData,
        }
    }
}

impl<Kind> Options<Kind> {
    /// The name logs and the `cache.load` span give the call (where an
    /// attribute gives the function's name).
    pub fn name(mut self, name: &'static str) -> Self {
        self.spec.name = Cow::Borrowed(name);
        self.changed()
    }

    /// TTL jitter, a fraction of the TTL in `0.0..=1.0` (out-of-range
    /// values are clamped, `NaN` leaves the cache's default).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.spec.jitter = (!jitter.is_nan()).then(|| jitter.clamp(0.0, 1.0).to_bits());
        self.changed()
    }

    /// Cache a `None` (or `Ok(None)`) for `ttl` (negative caching).
    pub fn negative(mut self, ttl: Duration) -> Self {
        self.spec.negative = Some(ttl);
        self.changed()
    }

    /// One load per key across all instances (the Redis lock).
    pub fn lock(mut self) -> Self {
        self.spec.lock = true;
        self.changed()
    }

    /// Whether to keep values in the in-process tier (default `true`).
    pub fn l1(mut self, l1: bool) -> Self {
        self.spec.l1 = l1;
        self.changed()
    }

    /// Tags (rendered, like keys) the entry carries: `invalidate_tag` on
    /// one drops it.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Probabilistic early refresh (XFetch), the attribute's `early = beta`:
    /// a hit shortly before the value expires may start a background
    /// refresh, so a hot key is reloaded before its callers would miss.
    /// The closer to expiry, the slower the last load and the larger
    /// `beta`, the likelier; `1.0` is the usual choice (the attribute's
    /// default), larger refreshes earlier.
    ///
    /// `beta` must be above zero: a beta that is not (zero, negative,
    /// `NaN`) is ignored, which is what the formula does with zero (no
    /// refresh before expiry), rather than a panic at run time.
    ///
    /// Makes the options [`Refreshing`]: use them with
    /// [`Cache::get_or_refresh`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, Options};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let hot = Options::ttl(Duration::from_secs(60)).early(1.0);
    /// let rates = cache
    ///     .get_or_refresh("rates:eur", &hot, || async { Ok::<_, String>(Some(1.08f64)) })
    ///     .await;
    /// assert_eq!(rates, Ok(Some(1.08)));
    /// # }
    /// ```
    pub fn early(mut self, beta: f64) -> Options<Refreshing> {
        self.spec.early = (beta > 0.0).then(|| beta.to_bits());
        self.refreshing()
    }

    /// Keep values `window` past their TTL, the attribute's `stale = N`: a
    /// call that finds a value past its TTL but inside the window gets it
    /// at once while one background refresh per key runs
    /// (stale-while-revalidate), and keeps getting it while refreshes fail
    /// (fail-safe: a loader's `Err` never replaces a value; after a failure
    /// the key is left alone for the cache's `refresh_retry_after`). Redis
    /// keeps the entry for TTL + window. A zero window keeps nothing past
    /// the TTL (no stale serving).
    ///
    /// Makes the options [`Refreshing`]: use them with
    /// [`Cache::get_or_refresh`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, Options};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let profile = Options::ttl(Duration::from_secs(60)).stale(Duration::from_secs(600));
    /// let name = cache
    ///     .get_or_refresh("profile:7", &profile, || async { Ok::<_, String>(Some("Ada".to_owned())) })
    ///     .await;
    /// assert_eq!(name.unwrap().as_deref(), Some("Ada"));
    /// # }
    /// ```
    pub fn stale(mut self, window: Duration) -> Options<Refreshing> {
        self.spec.stale = (!window.is_zero()).then_some(window);
        self.refreshing()
    }

    fn changed(mut self) -> Self {
        self.site = OnceLock::new();
        self
    }

    fn refreshing(self) -> Options<Refreshing> {
        Options {
            spec: self.spec,
            tags: self.tags,
            site: OnceLock::new(),
            kind: PhantomData,
        }
    }

    /// The site these options describe.
    pub(crate) fn site(&self) -> &'static Site {
        self.site.get_or_init(|| self.spec.site())
    }

    pub(crate) fn has_tags(&self) -> bool {
        !self.tags.is_empty()
    }

    fn rendered_tags(&self) -> Vec<KeyBuf> {
        self.tags.iter().map(|tag| KeyBuf::rendered(tag)).collect()
    }
}

/// What [`Cache::warm`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warmed {
    /// Items whose load returned `Ok`.
    pub loaded: u64,
    /// Items whose load returned `Err` (logged at warn level, at most once
    /// per interval).
    pub failed: u64,
}

/// A warm-up, from [`Cache::warm`]: set its concurrency and a progress
/// callback, then `.await` it.
#[must_use = "a warm-up does nothing until it is awaited"]
pub struct Warm<'a, I, F> {
    items: I,
    load: F,
    concurrency: usize,
    progress: Option<Box<dyn FnMut(Warmed) + Send + 'a>>,
}

impl<'a, I, F> Warm<'a, I, F> {
    /// How many loads run at once (default 8): a warm-up should leave most
    /// of the database's connections to live traffic.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Called after each item with the counts so far (for a progress bar).
    pub fn on_progress(mut self, progress: impl FnMut(Warmed) + Send + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }
}

impl<'a, I, F, Fut, T, E> std::future::IntoFuture for Warm<'a, I, F>
where
    I: Iterator + Send + 'a,
    F: FnMut(I::Item) -> Fut + Send + 'a,
    Fut: Future<Output = Result<T, E>> + Send + 'a,
    E: std::fmt::Display,
{
    type Output = Warmed;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Warmed> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        use futures_util::StreamExt;
        let Warm {
            items,
            load,
            concurrency,
            mut progress,
        } = self;
        Box::pin(async move {
            let mut warmed = Warmed::default();
            let mut loads = futures_util::stream::iter(items)
                .map(load)
                .buffer_unordered(concurrency);
            let failures = crate::logging::Throttle::default();
            while let Some(loaded) = loads.next().await {
                match loaded {
                    Ok(_) => warmed.loaded += 1,
                    Err(error) => {
                        warmed.failed += 1;
                        if let Some(suppressed) = failures.admit() {
                            tracing::warn!(%error, suppressed, "warming: a load failed");
                        }
                    }
                }
                if let Some(progress) = &mut progress {
                    progress(warmed);
                }
            }
            warmed
        })
    }
}

/// What a programmatic loader may return: a value that may be absent, as
/// `Option<T>` or `Result<Option<T>, E>`, with the attribute's rules (`None`
/// is cached only with [`Options::negative`], `Err` never).
///
/// A loader whose value is always there returns `Some(value)` (or
/// `Ok(Some(value))`): it is stored as a `#[cached]` function returning `T`
/// (or `Result<T, E>`) stores it, so both meet on one entry. (Rust cannot
/// tell `Option<T>` from a plain `T` that happens to be an `Option` without
/// specialisation, which the attribute gets from the written return type.)
///
/// # Example
///
/// ```
/// use cache_runtime::Loadable;
///
/// fn loads<R: Loadable>(_: &R) {}
/// loads(&Some(1u32));
/// loads(&Ok::<Option<u32>, String>(None));
/// ```
#[diagnostic::on_unimplemented(
    message = "a programmatic loader returns `Option<T>` or `Result<Option<T>, E>`, not `{Self}`",
    label = "wrap a value that is always there: `Some(value)` or `.map(Some)`",
    note = "`None` is cached only with `Options::negative`; `Err` is never cached"
)]
pub trait Loadable: Sized {
    /// The return shape (see the `shape` module).
    #[doc(hidden)]
    type Shape: Shape<Self>;
    /// The marker of [`Self::Shape`].
    #[doc(hidden)]
    fn shape() -> Self::Shape;
}

impl<T: CacheValue> Loadable for Option<T> {
    type Shape = shape::Option;
    fn shape() -> shape::Option {
        shape::Option
    }
}

impl<T: CacheValue, E> Loadable for Result<Option<T>, E> {
    type Shape = shape::ResultOption;
    fn shape() -> shape::ResultOption {
        shape::ResultOption
    }
}

/// The site of reads that never load (`get`, `get_many`): its TTL is never
/// used. Looked up once.
fn read_site() -> &'static Site {
    static READ: OnceLock<&'static Site> = OnceLock::new();
    READ.get_or_init(|| Options::ttl(Duration::ZERO).spec.site())
}

impl Cache {
    /// The value under `key` (a rendered key) if either tier holds a fresh
    /// one of type `T`, else `None`: never loads, never an error (Redis
    /// problems are misses). A Redis hit fills L1.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().build().await.unwrap();
    /// assert_eq!(cache.get::<String>("greeting").await, None);
    /// cache.set("greeting", &"hello".to_owned(), Duration::from_secs(60)).await;
    /// assert_eq!(cache.get::<String>("greeting").await.as_deref(), Some("hello"));
    /// # }
    /// ```
    pub async fn get<T: CacheValue>(&self, key: &str) -> Option<T> {
        load::read(self, read_site(), key).await
    }

    /// Stores `value` under `key` (a rendered key) for `ttl`, in L1 and
    /// Redis, and drops other instances' L1 copies, as `#[write_through]`
    /// does after its body: a write that overlaps another mutation of the
    /// key leaves a tombstone instead, so the next read loads. Never an
    /// error: Redis problems are logged, and the key is invalidated once
    /// Redis answers again.
    ///
    /// # Example
    ///
    /// See [`get`](Cache::get).
    pub async fn set<T: CacheValue>(&self, key: &str, value: &T, ttl: Duration) {
        self.set_with(key, value, &Options::ttl(ttl)).await;
    }

    /// [`set`](Cache::set) with [`Options`] (the TTL, jitter, tags; with
    /// [`stale`](Options::stale), Redis keeps the value for the stale window
    /// too, for [`get_or_refresh`](Cache::get_or_refresh) calls with the
    /// same options).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::Options;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().build().await.unwrap();
    /// let options = Options::ttl(Duration::from_secs(60)).tags(["org:7"]);
    /// cache.set_with("user:42", &"Ada".to_owned(), &options).await;
    /// cache.invalidate_tag("org:7").await.unwrap();
    /// assert_eq!(cache.get::<String>("user:42").await, None);
    /// # }
    /// ```
    pub async fn set_with<T: CacheValue, Kind>(
        &self,
        key: &str,
        value: &T,
        options: &Options<Kind>,
    ) {
        let pending = begin_write(self, KeyBuf::rendered(key), &options.rendered_tags()).await;
        store_after_success(self.engine(), options.site(), pending, value.clone()).await;
    }

    /// The value under `key` (a rendered key), or what `loader` returns,
    /// stored for `ttl`: the read path of `#[cached]` (L1, single-flight,
    /// Redis, no stale set, Redis problems are misses). The loader returns
    /// `Option<T>` or `Result<Option<T>, E>` (see [`Loadable`]).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().build().await.unwrap();
    /// let ttl = Duration::from_secs(300);
    /// let load = || async { Ok::<_, String>(Some(42u64)) }; // a database query
    /// assert_eq!(cache.get_or_load("answer", ttl, load).await, Ok(Some(42)));
    /// assert_eq!(cache.get_or_load("answer", ttl, load).await, Ok(Some(42))); // an L1 hit
    /// assert_eq!(cache.stats().loads, 1);
    /// # }
    /// ```
    pub async fn get_or_load<R, F, Fut>(&self, key: &str, ttl: Duration, loader: F) -> R
    where
        R: Loadable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let site = Options::ttl(ttl).spec.site();
        load::get_or_load(self, site, R::shape(), KeyBuf::rendered(key), &[], loader()).await
    }

    /// [`get_or_load`](Cache::get_or_load) with [`Options`].
    ///
    /// The loader may borrow from the caller: it runs, if at all, inside
    /// this call. So it takes only options without `early` and `stale`,
    /// whose loads also run after the call returned; those go to
    /// [`get_or_refresh`](Cache::get_or_refresh):
    ///
    /// ```compile_fail,E0308
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, Options};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let stale = Options::ttl(Duration::from_secs(60)).stale(Duration::from_secs(600));
    /// let user: Option<String> = cache
    ///     .get_or_load_with("user:42", &stale, || async { Some("Ada".to_owned()) }) // expected `&Options`, found `&Options<Refreshing>`
    ///     .await;
    /// # }
    /// ```
    ///
    /// # Example
    ///
    /// See [`Options`].
    pub async fn get_or_load_with<R, F, Fut>(&self, key: &str, options: &Options, loader: F) -> R
    where
        R: Loadable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let tags = options.rendered_tags();
        let key = KeyBuf::rendered(key);
        load::get_or_load(self, options.site(), R::shape(), key, &tags, loader()).await
    }

    /// The value under `key` (a rendered key), or what `loader` returns,
    /// with [`Options`] of either kind, including
    /// [`early`](Options::early) and [`stale`](Options::stale): the read
    /// path of a `#[cached]` function with those options. A value past its
    /// TTL but inside the stale window is returned at once and refreshed in
    /// the background (and kept when the refresh returns `Err`); with
    /// `early`, a hit close to expiry may refresh it in the background
    /// first.
    ///
    /// `loader` is called on a miss and for each background refresh, on
    /// the caller's path; the futures it makes may run after the call
    /// returned, so they own what they use (`Send + 'static`): clone what
    /// the load needs (an `Arc` of the database pool, the id) into each.
    /// Without `early` or `stale` this is
    /// [`get_or_load_with`](Cache::get_or_load_with) with a stricter
    /// loader.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, Options};
    ///
    /// struct Db;
    /// impl Db {
    ///     async fn price(&self, sku: u64) -> Result<Option<u64>, String> {
    ///         Ok(Some(sku * 100)) // a database query
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let db = Arc::new(Db);
    /// let prices = Options::ttl(Duration::from_secs(60))
    ///     .stale(Duration::from_secs(600)) // serve the last price while a refresh runs, or fails
    ///     .early(1.0); // and refresh hot keys shortly before they expire
    /// let sku = 7;
    /// let price = cache
    ///     .get_or_refresh("price:7", &prices, || {
    ///         let db = Arc::clone(&db);
    ///         async move { db.price(sku).await }
    ///     })
    ///     .await;
    /// assert_eq!(price, Ok(Some(700)));
    /// # }
    /// ```
    pub async fn get_or_refresh<R, Kind, F, Fut>(
        &self,
        key: &str,
        options: &Options<Kind>,
        loader: F,
    ) -> R
    where
        R: Loadable + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = R> + Send + 'static,
    {
        let tags = options.rendered_tags();
        let key = KeyBuf::rendered(key);
        load::get_or_refresh(self, options.site(), R::shape(), key, &tags, loader).await
    }

    /// The values under `keys` (rendered keys), as [`get`](Cache::get)
    /// reads each, in order: L1 first, then the keys L1 did not hold in one
    /// round trip to Redis (one `MGET`; on a cluster, one per slot, sent
    /// at once).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::builder().build().await.unwrap();
    /// cache.set("user:1", &"Ada".to_owned(), Duration::from_secs(60)).await;
    /// let users: Vec<Option<String>> = cache.get_many(&["user:1", "user:2"]).await;
    /// assert_eq!(users, [Some("Ada".to_owned()), None]);
    /// # }
    /// ```
    pub async fn get_many<T: CacheValue>(&self, keys: &[impl AsRef<str>]) -> Vec<Option<T>> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        crate::batch::read_many(self, read_site(), &keys).await
    }

    /// Warms the cache before it serves: runs `load(item)` for each item,
    /// [`concurrency`](Warm::concurrency) at a time, counting what
    /// returned `Ok` and `Err` and reporting after each item
    /// ([`on_progress`](Warm::on_progress)). `load` is what fills the cache
    /// for an item: an annotated function, or
    /// [`get_or_load_with`](Cache::get_or_load_with) on the item's key.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{cached, Cache};
    ///
    /// #[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache))]
    /// async fn get_user(cache: &Cache, id: u64) -> Result<Option<String>, String> {
    ///     Ok(Some(format!("user {id}"))) // a database query
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let most_read = vec![1, 2, 3];
    /// let warmed = cache
    ///     .warm(most_read, |id| get_user(&cache, id))
    ///     .concurrency(8)
    ///     .on_progress(|so_far| println!("{} loaded, {} failed", so_far.loaded, so_far.failed))
    ///     .await;
    /// assert_eq!((warmed.loaded, warmed.failed), (3, 0));
    /// assert_eq!(cache.stats().loads, 3);
    /// get_user(&cache, 2).await.unwrap(); // an L1 hit
    /// assert_eq!(cache.stats().l1_hits, 1);
    /// # }
    /// ```
    pub fn warm<'a, I: IntoIterator, F>(&self, items: I, load: F) -> Warm<'a, I::IntoIter, F> {
        Warm {
            items: items.into_iter(),
            load,
            concurrency: 8,
            progress: None,
        }
    }

    /// Removes the entry under `key` (a rendered key) everywhere: the same
    /// as [`invalidate`](Cache::invalidate).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder().build().await?;
    /// cache.set("user:42", &7u32, Duration::from_secs(60)).await;
    /// cache.remove("user:42").await?;
    /// assert_eq!(cache.get::<u32>("user:42").await, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, key: &str) -> Result<(), crate::Error> {
        self.invalidate(key).await
    }

    /// The entries under the keys of `ids` (`key_of` renders an id's key),
    /// and one call of `load` with the ids neither tier held, each entry
    /// stored under its own key for `options` (as
    /// [`get_or_load_with`](Cache::get_or_load_with) stores one): the
    /// programmatic form of a `#[cached(..., batch(id in ids))]` function.
    /// `load` returns `HashMap<K, V>` or `Result<HashMap<K, V>, E>` (see
    /// [`Batched`]); an id it leaves out is "not found" (cached with
    /// [`Options::negative`]). Redis is read once for the whole batch.
    ///
    /// Batch loads carry no tags: with [`Options::tags`], the call runs
    /// `load` for every id without the cache (logged).
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, Options, escape_key_part};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::builder().build().await.unwrap();
    /// let options = Options::ttl(Duration::from_secs(300)).negative(Duration::from_secs(60));
    /// let user_key = |id: &u64| format!("user:{}", escape_key_part(&id.to_string()));
    /// let users = |ids: Vec<u64>| async move {
    ///     // One query for every id: `SELECT ... WHERE id = ANY($1)`.
    ///     let found = ids.into_iter().filter(|id| *id != 3).map(|id| (id, format!("user {id}")));
    ///     Ok::<_, String>(found.collect::<HashMap<_, _>>())
    /// };
    /// let found = cache.get_many_or_load([1, 2, 3], user_key, &options, users).await.unwrap();
    /// assert_eq!(found.len(), 2); // 3 was not found
    /// let again = cache.get_many_or_load([1, 2, 3, 4], user_key, &options, users).await.unwrap();
    /// assert_eq!(again.len(), 3);
    /// assert_eq!(cache.stats().loads, 2); // the second call loaded 4 alone
    /// # }
    /// ```
    pub async fn get_many_or_load<R, F, Fut>(
        &self,
        ids: impl IntoIterator<Item = R::Key>,
        key_of: impl Fn(&R::Key) -> String,
        options: &Options,
        load: F,
    ) -> R
    where
        R: Batched,
        F: FnOnce(Vec<R::Key>) -> Fut,
        Fut: Future<Output = R>,
    {
        let site = options.site();
        if options.has_tags() {
            let ids = ids.into_iter().collect();
            return load::uncached(self, site, Uncached::TaggedBatch, load(ids)).await;
        }
        let requested = ids
            .into_iter()
            .map(|id| {
                let key = KeyBuf::rendered(&key_of(&id));
                (id, key)
            })
            .collect();
        batch::get_many_or_load(self, site, requested, load).await
    }
}
