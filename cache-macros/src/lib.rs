//! Attribute macros of [`cache-runtime`]: `#[cached]`, `#[invalidates]`,
//! `#[write_through]` and `#[write_behind]`.
//!
//! Depend on `cache-runtime`, not on this crate: it re-exports the macros
//! (`use cache_runtime::{cached, invalidates, write_through, Cache};`), and
//! the generated code calls it through absolute paths
//! (`::cache_runtime::__private::...`, or the `crate = "..."` override), so
//! users never import anything for the expansion to compile.
//!
//! Every mistake in an attribute is reported in one build, on the token that
//! caused it. When there is an error the function is emitted unchanged beside
//! it (but for a `let _ = &param;` per parameter, so that one only the key
//! read is not reported unused), so its callers do not report follow-on
//! errors.
//!
//! Set `CACHE_MACROS_DEBUG=1` while building to print every expansion to
//! stderr. The variable is read when the macro runs, so touch the source
//! file (or `cargo clean -p` the crate) to expand it again.
//!
//! [`cache-runtime`]: https://docs.rs/cache-runtime

mod args;
mod errors;
mod expand;
mod key;
mod manifest;
mod plan;
mod shape;
mod validate;

use proc_macro::TokenStream;

/// Caches an `async fn`'s result under a key built from its parameters.
///
/// ```ignore
/// use cache_runtime::cached;
///
/// #[cached(key = "user:<id>", ttl = 300, jitter = 0.2, negative = 60, lock)]
/// async fn get_user(id: u64) -> Result<Option<User>, DbError> {
///     db::find_user(id).await
/// }
///
/// #[derive(Clone)] // `stale` runs the body in the background, on a clone
/// struct UserRepo { cache: Cache, db: Arc<Db> }
///
/// impl UserRepo {
///     #[cached(key = "org:<org>:user:<id>", ttl = 300, stale = 600, cache = self.cache, skip(filter))]
///     async fn find(&self, org: u32, id: u64, filter: &Filter) -> Option<User> {
///         self.db.find(org, id, filter).await
///     }
/// }
/// ```
///
/// The function keeps its signature; callers see no difference but speed.
/// It must be an `async fn` with a return value, free or taking `&self`
/// (or `self: &Arc<Self>`, or any `self: &T`). It is the only attribute of
/// this crate on the function: with a second `#[cached]`,
/// `#[invalidates]`, `#[write_through]` or `#[write_behind]` on it, the
/// attribute written first reports the second (put writes on the function
/// that changes the data).
///
/// # Options
///
/// | option | meaning |
/// | --- | --- |
/// | `key = "..."` | **required.** Literal text plus placeholders `<param>` or `<param.field.field>`, rendered with `Display` and escaped (every byte outside `[A-Za-z0-9]` becomes `%XX`). The text is printable ASCII without whitespace, `%` or any of `{ } * ? [ ]`. A placeholder touches only a literal character that is not a letter or digit, or the start or end: `"pair:<a>:<b>"`, not `"pair:<a><b>"` or `"user:<id>x"`. Placeholders may also name generic parameters (`<N>`, `<T>`: see [Every parameter is in the key](#every-parameter-is-in-the-key)). See [Keys are injective](#keys-are-injective). |
/// | `ttl = N` | **required.** Seconds a value stays fresh, `0 < N <= 315360000` (10 years, the longest lifetime; the same bound holds for `negative` and `stale`). An integer literal: `ttl = 300`, not `ttl = 5 * 60` or a constant. |
/// | `jitter = F` | Each stored TTL is drawn from `ttl * (1 ± F)`, `0 <= F < 1`, so keys written together do not expire together. |
/// | `negative = N` | Also cache `None` / `Ok(None)`, for `N` seconds. Only on return types with a `None` (`Option<T>`, `Result<Option<T>, E>`, `Option<Result<T, E>>`, or an alias of one); on any other, the compiler reports it on `negative`. |
/// | `lock` | A flag. Stampede protection across processes: for a missing key one caller in the whole fleet runs the body, and the others wait for its value (a bounded wait, after which they run it themselves). Use it when the body is expensive, or when what it queries must not see a burst of identical requests each time a hot key expires. Within one process, calls for one key already share one run without it. |
/// | `early` / `early = B` | Probabilistic early refresh (XFetch), `B > 0` and finite, `1.0` when written alone: a hit shortly before expiry may recompute the value in the background, so hot keys rarely expire and callers rarely wait for the body. A larger `B` refreshes earlier. Use it for keys read often whose body is slow. [Runs the body in the background.](#background-runs-early-and-stale) |
/// | `stale = N` | Keep each value `N` more seconds after `ttl` (`N > 0`, whole seconds). In that window it is returned at once while a refresh runs in the background, and it is returned when the body fails with `Err` (fail-safe). Use it when a slightly old value is better than waiting, or than an error. [Runs the body in the background.](#background-runs-early-and-stale) |
/// | `tags = ["...", ...]` | Tag templates, with the same rules as `key` (placeholders name parameters, are escaped and are separated from each other and from letters and digits). Each stored entry carries its rendered tags; `Cache::invalidate_tag` or [`#[invalidates(tag = "...")]`](macro@invalidates) drops every entry carrying a tag. A parameter used only in a tag still needs `skip`: tags do not tell calls apart. |
/// | `cache = EXPR` | The `Cache` to use: anything that borrows as `&Cache` (`self.cache`, `&CACHE`, an `Arc<Cache>`). Default: `Cache::global()`. |
/// | `skip(a, b)` | Parameters, or generic parameters, that do not affect the result (a pool, a handle, `D: Db`). |
/// | `l1 = false` | Bypass the in-process tier for this function. |
/// | `batch(id in ids)` | Load many keys in one call: `ids` is a parameter of type `Vec<K>` or `&[K]`, each of its elements has an entry of its own under the key rendered with `<id>` bound to it (the key must use `<id>`). See [Batch loads](#batch-loads). |
/// | `crate = "path"` | Where the runtime is, when it is re-exported under another path or the dependency is renamed in `Cargo.toml` (which the macro detects and reports, naming the path to write). Default: `::cache_runtime`. |
///
/// # Keys are injective
///
/// Two calls share an entry only when they render the same key, and one
/// template renders the same key only for the same values: every byte of a
/// value outside `[A-Za-z0-9]` is percent-encoded with uppercase hex
/// (`"bob.thumb"` renders `bob%2Ethumb`, `"é"` renders `%C3%A9`), so a value
/// never holds a literal separator, and placeholders are separated from each
/// other and from letters and digits of the text, so a value never runs into
/// its neighbours:
///
/// ```ignore
/// #[cached(key = "pair:<a><b>", ttl = 60)]
/// //              ^^^^^^^^^^^^^ placeholders `<a>` and `<b>` touch, so values such as (1, 23) and (12, 3) would render the same key; put a separator such as `:` between `<a>` and `<b>`: `"pair:<a>:<b>"`
/// async fn pair(a: u32, b: u32) -> u32 { a + b }
/// ```
///
/// Two *different* templates can still render one key where one has a
/// placeholder and the other literal text (`"user:<id>"` with `id = "me"`,
/// and `"user:me"`): the runtime logs an error naming both the first time
/// the second one runs. Keys longer than 1 KiB are shortened to their first
/// 1 KiB and a SHA-1 of the whole key (see `cache_runtime`'s key docs).
///
/// # Every parameter is in the key
///
/// Each parameter (the `&self` receiver aside) must appear in the key or in
/// `skip`; otherwise calls that differ only in that parameter would share one
/// entry and serve one user's data to another. This does not compile:
///
/// ```ignore
/// #[cached(key = "user:<id>", ttl = 300)]
/// async fn find(org: u32, id: u64) -> Option<User> { /* ... */ }
/// //            ^^^ parameter `org` is not in the key; add `<org>` to the key or `skip(org)`
/// ```
///
/// Generic parameters are parameters too: `<N>` renders a const generic's
/// value, `<T>` the name of the type a type parameter stands for
/// (`core::any::type_name`, a stable identity within one build; builds whose
/// types differ in shape already read each other's entries as misses, by
/// the value's fingerprint). Each const and type parameter must be in the
/// key or in `skip`, or `scaled::<2>(5)` and `scaled::<3>(5)` would share
/// one entry. Lifetimes need nothing, and neither does a type parameter
/// that is the type of a parameter the key renders whole (`id: K`, `id: &K`
/// with `<id>`): that value is keyed by its `Display`, as an `impl Display`
/// parameter is, so `5u8` and `"5"` share an entry.
///
/// ```ignore
/// #[cached(key = "scaled:<id>", ttl = 60)]
/// async fn scaled<const N: u64>(id: u64) -> u64 { id * N }
/// //                    ^ const generic parameter `N` is not in the key, ...; add `<N>` to the key (the value of `N`), such as `key = "scaled:<N>:<id>"`, or `skip(N)` ...
/// ```
///
/// A parameter under `#[cfg(..)]` (or a `#[cfg_attr(.., cfg(..))]`) is
/// required in the key, rendered into it, and copied for background runs
/// only in builds where it exists; elsewhere its placeholder renders
/// nothing.
///
/// # Background runs: `early` and `stale`
///
/// With either option the body can also run in a spawned task, after the
/// call that started it has returned, so it runs from its own copies of the
/// receiver and of the parameters. The copies are made only when the body
/// runs (a miss or a refresh), never on a hit. This needs:
///
/// - `&self` methods: `Self: Clone + Send + Sync + 'static`. The body's `self`
///   is the copy; keep cloning cheap (`Arc`s inside). With `self: &Arc<Self>`
///   the `Arc` is cloned instead (`Self: Send + Sync + 'static`), and the
///   body's `self` is a `&Arc<Self>` as written. `self` captured by a format
///   string (`format!("{self:?}")`) is the copy too.
/// - each parameter `p: T`: `T: Clone + Send + 'static` (skipped ones too,
///   since the body uses them; `impl Trait` parameters are fine).
/// - each parameter `p: &T`: `T: ToOwned`, with `T::Owned: Send + Sync +
///   'static` (`&str` becomes a `String`, `&User` a `User` clone); the body
///   still sees a `&T`.
/// - parameters are plain names (`point: Point`, not `Point { x, y }: Point`),
///   and none is a `&mut T`: a background run can't borrow the caller's data.
/// - the body's future is `Send`, and the return type `Send + 'static`.
///
/// A missing requirement is reported on the receiver or parameter concerned.
/// While it waits, the caller's own future borrows the parameters, so it is
/// `Send` (as in an axum handler) only if they are also `Sync`.
///
/// ```ignore
/// #[cached(key = "user:<id>", ttl = 60, stale = 300)]
/// async fn find(id: u64, conn: &mut Conn) -> Option<User> { /* ... */ }
/// //                           ^^^^^^^^^ `stale` runs the body in the background, ... can't take a `&mut` parameter
/// ```
///
/// # Return types
///
/// `T`, `Option<T>`, `Result<T, E>`, `Result<Option<T>, E>` and
/// `Option<Result<T, E>>`. The compiler tells them apart, not the macro, so
/// aliases work as the types they stand for (`io::Result<T>`,
/// `anyhow::Result<T>`, `type ApiResult<T> = Result<T, ApiError>`,
/// `type MaybeUser = Option<User>`), and a crate's own type named `Result`
/// is a plain value. An error (`Err`, `Some(Err)`, and `Ok(Err)` in
/// `Result<Result<T, E1>, E2>`) is never cached; `None` is cached only with
/// `negative`. The shape is the declared type's: in a generic function
/// returning `T`, `T` is a plain value whatever it is instantiated with.
/// The stored value `T` must be `Serialize + DeserializeOwned + Clone +
/// Send + Sync + 'static`; a missing bound is reported on the return type.
///
/// The returned value is never held across an `.await` by the expansion or
/// the runtime, so a function whose future is `Send` stays `Send`, whatever
/// its error type (`Box<dyn Error>` is not `Send`).
///
/// # Batch loads
///
/// ```ignore
/// #[cached(key = "user:<id>", ttl = 300, negative = 60, batch(id in ids), skip(db))]
/// async fn get_users(db: &Db, ids: Vec<u64>) -> Result<HashMap<u64, User>, DbError> {
///     db.users(&ids).await // runs with only the ids no tier held
/// }
/// ```
///
/// Each id is stored under its own key, as the single-key function of the
/// same template (`async fn get_user(db: &Db, id: u64) -> Result<Option<User>,
/// DbError>`) stores it: the two share entries. The return type is
/// `HashMap<K, V>` or `Result<HashMap<K, V>, E>` (the runtime's `Batched`;
/// another type is reported on it). The body runs at most once per call,
/// with its parameter rebound to the missing ids only (a `Vec<K>`, or a
/// `&[K]` over them), and not at all when every id was cached; the ids it
/// leaves out are cached as "not found" with `negative`; an `Err` stores
/// nothing. The parameter's type is read as written (`Vec<K>` or `&[K]`, not
/// an alias of one), and it is a plain name declared in every build. `lock`,
/// `early`, `stale` and `tags` act on one key's load or entry and are
/// refused with `batch`.
///
/// The expansion renders each id's key (moving the ids of a `Vec` in,
/// cloning those of a slice), then calls the runtime's `get_many_or_load`
/// with them and `move |missing| async move { let ids = missing; body }`.
///
/// # Keys that cannot be rendered, loads that call themselves
///
/// A placeholder whose `Display` returns an error leaves only a prefix of
/// the key, which other values share: such a call runs its body without the
/// cache (nothing read, stored or shared with concurrent calls) and logs an
/// error. A body that calls its own function on its own key (in the same
/// task) would wait for its own load: that inner call runs without the
/// cache too, with a warning.
///
/// # Expansion
///
/// A `static` describes the function (its templates, TTL and options) and a
/// second one runs the runtime's template check on the first call (one
/// atomic load after that). With L1 and without `early`, the rendered key
/// first goes to the runtime's `l1_hit`, and a fresh in-process entry is
/// returned at once. Otherwise the body becomes `async move { body }`,
/// passed with the rendered key (and the tags, rendered only now: a hit
/// does not need them) to the runtime's `get_or_load`, which runs it only
/// on a miss. With `early` or
/// `stale`, the runtime's `get_or_refresh` gets instead a closure that copies
/// the receiver and the parameters and returns `async move { body }`, with
/// `self` in the body naming the copy; it calls the closure for each run.
///
/// The return type's shape comes from the runtime's `shape_of!(ReturnType)`,
/// which the compiler resolves (see the runtime's `shape` module).
///
/// The statics sit in a block of their own, which the body can't name; the
/// expansion's locals (`__cache_key`, `__cache_cache`, ...) are hygienic
/// (`Span::mixed_site()`), so a parameter of the same name stays the user's.
/// The expansion carries no `#[allow(..)]`, so a crate may `forbid` any lint.
/// The items a body starts with (`use`, `const`, ...) stay first in it.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}

/// Deletes cache entries after the function succeeds.
///
/// ```ignore
/// use cache_runtime::invalidates;
///
/// #[invalidates(key = "user:<id>", tag = "org:<org>")]
/// async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
///     db::update_user(id, data).await
/// }
///
/// impl UserRepo {
///     #[invalidates(key = "user:<id>", key = "org:<org>:user:<id>", cache = self.cache)]
///     async fn delete(&self, org: u32, id: u64) -> Result<(), DbError> {
///         self.db.delete(org, id).await
///     }
///
///     #[invalidates(tag = "org:<org>", cache = self.cache)]
///     async fn delete_org(&self, org: u32) {
///         self.db.delete_org(org).await;
///     }
/// }
/// ```
///
/// The function keeps its signature and its result: the body runs first,
/// then, if it succeeded and before the call returns, each key is deleted
/// and each tag dropped (every entry carrying it), in Redis and in the
/// in-process tier of every instance. It succeeded unless it returned an
/// error: a `Result` (or an alias of one, such as `io::Result<()>`,
/// `anyhow::Result<()>`: the compiler tells, not the macro) decides by `Ok`
/// / `Err`, an `Option<Result<T, E>>` fails on `Some(Err)`; any other return
/// type, `()` included, always succeeds. On `Err` nothing is touched. A key
/// or tag whose placeholder's `Display` returns an error is not invalidated
/// (which entry it names is unknown): that is logged at error level.
///
/// It must be an `async fn`, free or taking `&self`; it may return anything.
///
/// `#[invalidates]` never fails the call: if Redis is unreachable the local
/// L1 copy is dropped, the failure is logged at error level, and other
/// instances' copies expire within `l1_max_ttl`.
///
/// # Options
///
/// | option | meaning |
/// | --- | --- |
/// | `key = "..."` | A key to delete, rendered as `#[cached]` renders it: same placeholders, escaping and rules for literal text. May repeat. |
/// | `tag = "..."` | A tag to drop, with the same rules. May repeat. |
/// | `cache = EXPR` | The `Cache` to use, as for `#[cached]`. Default: `Cache::global()`. |
/// | `crate = "path"` | Where the runtime is. Default: `::cache_runtime`. |
///
/// At least one `key` or `tag` is required. Placeholders must name
/// parameters or generic parameters, but neither need all appear (only
/// `#[cached]` requires every parameter in its key): deleting is safe
/// whatever it deletes. There is no `ttl`: how long entries live is
/// set where they are stored.
///
/// # Expansion
///
/// The keys and tags are rendered from the parameters before the body runs
/// (the body may move them); the body becomes `async move { body }`, awaited;
/// then the runtime's `invalidate_after` gets the rendered keys and tags and
/// the returned value: after an error it hands the value back at once, after
/// a success it returns a future that invalidates and then returns the
/// value unchanged. The value is never held across an `.await` (only the
/// `Ok` part is), so a `Box<dyn Error>` error type keeps the future `Send`.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::invalidates(args.into(), item.into()).into()
}

/// Stores the function's returned value in the cache after it succeeds, so
/// `#[cached]` functions reading that key see the new value at once.
///
/// ```ignore
/// use cache_runtime::write_through;
///
/// #[write_through(key = "user:<id>", ttl = 300)]
/// async fn rename_user(id: u64, name: String) -> Result<User, DbError> {
///     db::rename_user(id, name).await
/// }
///
/// impl UserRepo {
///     #[write_through(key = "user:<user.id>", ttl = 300, tags = ["org:<org>"], cache = self.cache)]
///     async fn save(&self, org: u32, user: User) -> Option<User> {
///         self.db.save(org, user).await
///     }
/// }
/// ```
///
/// The function keeps its signature and its result: the body runs first,
/// then, if it succeeded and before the call returns, the value is stored
/// under the key (with its tags) and other instances' in-process copies are
/// dropped. What is stored is the innermost value `T`, as `#[cached]` stores
/// it, so a `#[cached]` function returning `User`, `Option<User>`,
/// `Result<User, E>` or `Result<Option<User>, E>` under the same key reads
/// it. `Err` stores nothing; `None` / `Ok(None)` store nothing either.
///
/// It must be an `async fn`, free or taking `&self`, returning a value: `T`,
/// `Option<T>`, `Result<T, E>`, `Result<Option<T>, E>` or
/// `Option<Result<T, E>>`, aliases included (the compiler tells them
/// apart). A function whose written return type is `()` or `Result<(), E>`
/// has no value to store and is refused: use
/// [`#[invalidates]`](macro@invalidates). A key or tag whose placeholder's
/// `Display` returns an error stores nothing (logged at error level).
/// The value needs the bounds of a cached value (`Serialize +
/// DeserializeOwned + Clone + Send + Sync + 'static`); a missing one is
/// reported on the return type.
///
/// # Options
///
/// | option | meaning |
/// | --- | --- |
/// | `key = "..."` | **required.** The key template, as for `#[cached]`. Parameters need not all appear in it. |
/// | `ttl = N` | **required.** Seconds the stored value stays fresh, `N > 0`. |
/// | `jitter = F` | As for `#[cached]`, `0 <= F < 1`. |
/// | `stale = N` | Keep the value `N` more seconds after `ttl`, for `#[cached(stale = ..)]` readers. |
/// | `tags = ["...", ...]` | Tags the stored entry carries, as for `#[cached]`. |
/// | `cache = EXPR` | The `Cache` to use, as for `#[cached]`. Default: `Cache::global()`. |
/// | `skip(T)` | Generic parameters that do not change the stored value (`D: Db`). Every other const and type parameter must be in the key, as for `#[cached]`: the entry `scaled::<2>` stores is not `scaled::<3>`'s. |
/// | `crate = "path"` | Where the runtime is. Default: `::cache_runtime`. |
///
/// ```ignore
/// #[write_through(key = "user:<id>", ttl = 300)]
/// async fn update_user(id: u64, data: UserUpdate) -> Result<(), DbError> { /* ... */ }
/// //                                                  ^^^^^^^^^^^^^^^^^^^^ `#[write_through]` stores the returned value; this function returns none: use `#[invalidates]`
/// ```
///
/// # Expansion
///
/// The key and tags are rendered before the body runs, and the runtime's
/// `begin_write` notes what the key holds; the body becomes `async move {
/// body }`, awaited; then the runtime's `write_through` gets the returned
/// value: after an error or a `None` it hands the value back at once,
/// after a value it returns a future that stores it and then returns it
/// unchanged. Only the stored value is held across an `.await`, so a
/// `Box<dyn Error>` error type keeps the future `Send`.
#[proc_macro_attribute]
pub fn write_through(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::write_through(args.into(), item.into()).into()
}

/// Stores a new value in the cache now and queues the write for a worker,
/// which runs the body later: the call returns without waiting for the
/// database.
///
/// ```ignore
/// use cache_runtime::{write_behind, WriteBehindWorker, WriteId};
///
/// #[write_behind(key = "user:<id>:seen", ttl = 300, value = at)]
/// pub async fn record_seen(db: &Db, id: u64, at: i64) -> Result<(), DbError> {
///     // Runs later, in the worker, at least once: make it idempotent.
///     db.save_seen(id, at, WriteId::current()).await
/// }
///
/// // In the application: the generated companion builds the worker's handler.
/// let worker = WriteBehindWorker::builder(&cache)
///     .handler(record_seen_handler(db.clone()))
///     .start()
///     .await?;
/// record_seen(&db, 7, now).await?; // `Ok(())` once the write is queued
/// worker.shutdown().await;          // drains what it holds
/// ```
///
/// A call stores a clone of the `value` parameter under the key, as
/// [`#[write_through]`](macro@write_through) stores a returned value (the
/// in-process tier, Redis, other instances' in-process copies dropped), so
/// `#[cached]` functions reading that key see it at once. It then appends
/// the other parameters to a Redis Stream (the queue) and returns `()` or
/// `Ok(())`. A worker started by the application runs the body with them
/// later, at least once, in order for each key (`WriteId::current()` in the
/// body tells the writes of one key apart). When Redis can't take the write
/// (no Redis configured, Redis down, its breaker open, out of memory), the
/// call runs the body itself, at once, and returns what it returns: nothing
/// is lost, and the value is stored as `#[write_through]` would after a
/// success.
///
/// Use it where the database may lag the cache by the worker's delay (last
/// seen times, view counts); never for writes that must be in the database
/// before the reply (payments, anything another system reads from the
/// database directly).
///
/// # The function
///
/// An `async fn` returning `()` or `Result<(), E>` with `E: Display`
/// (aliases such as `io::Result<()>` included; the compiler checks it,
/// through the runtime's `Deferred`, and reports another type on the
/// return type). Its parameters:
///
/// - the first may be a shared reference `&H` (or `&self`): the *handle*,
///   such as a database pool. The worker owns an `H` and lends it to each
///   deferred call; the call's own handle is used only when the body runs
///   at once.
/// - every other parameter travels in the queue: a plain name (`mut`
///   allowed) of an owned type that is `Serialize + DeserializeOwned + Send
///   + 'static` (`String`, not `&str`; no `impl Trait`; not under
///   `#[cfg]`). A type that is not is reported on the type.
/// - no generic parameters, lifetimes included: the queue records no type
///   arguments, and a deferred call outlives its caller.
///
/// # Options
///
/// | option | meaning |
/// | --- | --- |
/// | `key = "..."` | **required.** The key template, as for `#[cached]`. Placeholders may name any parameter, the handle's fields included. The worker applies the writes of one rendered key in order. |
/// | `ttl = N` | **required.** Seconds the stored value stays fresh, `N > 0`. |
/// | `value = param` | **required.** The queued parameter whose clone the cache stores (it must be a cacheable value: `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`, reported on `param` here). `#[cached]` readers of the same template read it. |
/// | `jitter = F` | As for `#[cached]`, `0 <= F < 1`. |
/// | `stale = N` | Keep the value `N` more seconds after `ttl`, for `#[cached(stale = ..)]` readers. |
/// | `tags = ["...", ...]` | Tags the stored entry carries, as for `#[cached]`. |
/// | `cache = EXPR` | The `Cache` to use, as for `#[cached]`. Default: `Cache::global()`. |
/// | `queue = "name"` | The queue's name. Default: the function's name. The companion's handler runs the writes of that queue; `Cache::write_behind_backlog(queue)` reports on it. |
/// | `coalesce` | A flag. The worker may apply only the last of several queued writes of one key (for values where the last one wins). |
/// | `crate = "path"` | Where the runtime is. Default: `::cache_runtime`. |
///
/// ```ignore
/// #[write_behind(key = "user:<id>:name", ttl = 300, value = name)]
/// async fn rename(db: &Db, id: u64, name: &str) -> Result<(), DbError> { /* ... */ }
/// //                                      ^^^^ `name` travels in the queue, which holds owned values: take `String`; ...
/// ```
///
/// # Expansion
///
/// Three items. The function keeps its signature (but for `mut` on its
/// parameters, which only the body uses); it renders the key and tags,
/// clones the value, notes what the key holds (`begin_write`, as
/// `#[write_through]` does), and returns what the runtime's `write_behind`
/// returns, handing it the queued parameters as a tuple and a closure
/// calling the body, for when the write can't be queued. The body, with the
/// signature as written, becomes a private sibling `__cache_<name>_body`
/// (with the function's `#[cfg]`s and lint levels), so its errors and lints
/// point at the code as written. The companion `<name>_handler`, with the
/// function's visibility, takes the handle by value (nothing without one;
/// `self` for a method) and returns the `WriteBehindHandler` that runs the
/// queue's writes through that sibling:
///
/// ```ignore
/// pub fn record_seen_handler(db: Db) -> cache_runtime::WriteBehindHandler {
///     WriteBehindHandler::new("record_seen", db, |db: Arc<Db>, (id, at): (u64, i64)| async move {
///         __cache_record_seen_body(&db, id, at).await
///     })
/// }
/// ```
///
/// On a method taking `&self`, the sibling and the companion are associated
/// functions of the same `impl` (`repo.record_seen_handler()` consumes the
/// receiver, which the worker then owns: `Self: Send + Sync + 'static`, so
/// typically a `Clone` holding `Arc`s). A trait's `impl` can't hold them:
/// put the method in an inherent `impl`.
#[proc_macro_attribute]
pub fn write_behind(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::write_behind(args.into(), item.into()).into()
}
