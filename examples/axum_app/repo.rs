//! The repository: what the handlers call. The cache lives here, as
//! attributes on the functions, the way a team would add it to existing
//! repository code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{
    BreakerState, Cache, WriteId, cached, invalidates, write_behind, write_through,
};

use crate::db::{Db, Order, OrgMembers, SalesReport, User};

/// How long a user (and a last-seen time) is fresh: the functions that
/// read and write those entries share it.
const USER_TTL: Duration = Duration::from_secs(300);

/// Seconds an organisation's member list may be served past its TTL (its
/// `stale`). Its HTTP responses let clients do the same
/// (`stale-while-revalidate`, `stale-if-error`).
pub const ORG_STALE_SECS: u64 = 300;

/// How long the sales report is fresh. Writes of orders through the app
/// keep it right without adding it up again (see `Repo::set_order_amount`):
/// the TTL only bounds how long changes made behind the app's back (another
/// program writing the database) take to show.
const REPORT_TTL: Duration = Duration::from_secs(300);

/// The write-behind queue of last-seen times (`POST /users/{id}/seen`):
/// what the worker's handler runs and `/health` reports on. The attribute
/// of `record_seen` takes a literal: keep the two equal.
pub const SEEN_QUEUE: &str = "record_seen";

/// Cheap to clone: shared state sits behind `Arc`s (`stale` refreshes in
/// the background on a clone of the repository).
#[derive(Clone)]
pub struct Repo {
    pub db: Arc<Db>,
    pub cache: Cache,
    /// `CACHE=off`: every read goes to the database, to measure what the
    /// cache saves (`examples/load.rs`).
    cache_enabled: bool,
    /// Whether the cache has a Redis tier, which instances share (see
    /// `store_report_line`).
    shared_cache: bool,
    reads: Arc<ReadCounts>,
}

impl Repo {
    pub fn new(db: Db, cache: Cache, cache_enabled: bool) -> Repo {
        let shared_cache = cache.stats().breaker != BreakerState::Disabled;
        Repo {
            db: Arc::new(db),
            cache,
            cache_enabled,
            shared_cache,
            reads: Arc::default(),
        }
    }

    pub fn cache_enabled(&self) -> bool {
        self.cache_enabled
    }

    /// A user, or `None` for an unknown id. Counts a read of the user
    /// (for `--warm`) when there is one: made-up ids are not counted, so
    /// they cannot grow `user_reads` or push real users out of the warm set.
    pub async fn user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        let user = if self.cache_enabled {
            self.cached_user(id).await?
        } else {
            self.db.user(id).await?
        };
        if user.is_some() {
            self.reads.record(id);
        }
        Ok(user)
    }

    /// Loads the cache without counting a read (`--warm`).
    pub async fn warm_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.cached_user(id).await
    }

    /// Five minutes, ±10% so entries written together do not expire
    /// together; unknown ids are cached for 30 s, so probing ids that do
    /// not exist does not reach the database each time; `lock`: one load
    /// per key across all instances sharing the Redis.
    #[cached(key = "user:<id>", ttl = USER_TTL, jitter = 0.1, negative = 30, lock, cache = self.cache)]
    async fn cached_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.db.user(id).await
    }

    /// An organisation and its members, or `None` for an unknown id.
    pub async fn org_members(&self, org_id: i64) -> Result<Option<OrgMembers>, sqlx::Error> {
        if self.cache_enabled {
            self.cached_org_members(org_id).await
        } else {
            self.db.org_members(org_id).await
        }
    }

    /// Tagged `org:<org_id>`: renaming any member drops it (see
    /// `rename_user`). `stale`: for five minutes past its TTL the old
    /// list is served while one background load refreshes it, and served
    /// instead of an error if the database fails.
    #[cached(key = "org_members:<org_id>", ttl = 60, stale = ORG_STALE_SECS, tags = ["org:<org_id>"], cache = self.cache)]
    async fn cached_org_members(&self, org_id: i64) -> Result<Option<OrgMembers>, sqlx::Error> {
        self.db.org_members(org_id).await
    }

    /// The user as the database holds it now, never from the cache: what
    /// a write's preconditions are checked against.
    pub async fn current_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.db.user(id).await
    }

    /// Renames a user (only if the row is still `expected`, when given)
    /// and returns the row this write stored: the cached copy is replaced
    /// by it (`#[write_through]`), in Redis and here; other instances drop
    /// theirs when the message reaches them (one pub/sub delivery; a
    /// consistency token makes reads wait for it, see `routes.rs`). The
    /// organisation's member list, which shows the name, is dropped too.
    pub async fn rename_user(
        &self,
        id: i64,
        name: &str,
        expected: Option<&User>,
    ) -> Result<Option<User>, sqlx::Error> {
        let renamed = self.store_renamed(id, name, expected).await?;
        if let Some(user) = &renamed {
            self.members_changed(user.org_id).await;
        }
        Ok(renamed)
    }

    /// Same TTL as `cached_user`, whose entries this replaces.
    #[write_through(key = "user:<id>", ttl = USER_TTL, cache = self.cache)]
    async fn store_renamed(
        &self,
        id: i64,
        name: &str,
        expected: Option<&User>,
    ) -> Result<Option<User>, sqlx::Error> {
        self.db.rename_user(id, name, expected).await
    }

    /// Drops every cached list of the organisation's members.
    #[invalidates(tag = "org:<org_id>", cache = self.cache)]
    async fn members_changed(&self, org_id: i64) {
        let _ = org_id;
    }

    /// Every organisation's sales (`GET /reports/sales`).
    pub async fn sales_report(&self) -> Result<SalesReport, sqlx::Error> {
        if self.cache_enabled {
            self.cached_sales_report().await
        } else {
            self.db.sales_report().await
        }
    }

    /// One expensive query whose answer everyone reads: `lock`, so that a
    /// fleet sharing Redis runs it once when the entry is missing; `early`,
    /// so that a read shortly before it expires reloads it in the
    /// background rather than readers waiting for the query at expiry.
    #[cached(key = "reports:sales", ttl = REPORT_TTL, early, lock, cache = self.cache)]
    async fn cached_sales_report(&self) -> Result<SalesReport, sqlx::Error> {
        self.db.sales_report().await
    }

    /// The entry `cached_sales_report` reads, from Redis only: what every
    /// instance sees, never this instance's L1 copy.
    #[cached(key = "reports:sales", ttl = REPORT_TTL, l1 = false, lock, cache = self.cache)]
    async fn shared_sales_report(&self) -> Result<SalesReport, sqlx::Error> {
        self.db.sales_report().await
    }

    /// Sets an order's amount (`PUT /orders/{id}`) and returns the order as
    /// stored, `None` if there is no such order. The cached sales report is
    /// patched rather than added up again (`store_report_line`); if that
    /// fails, it is dropped, so no read after this returns gets the old
    /// total.
    pub async fn set_order_amount(
        &self,
        id: i64,
        amount_cents: i64,
    ) -> Result<Option<Order>, sqlx::Error> {
        let Some(order) = self.db.set_order_amount(id, amount_cents).await? else {
            return Ok(None);
        };
        if self.cache_enabled
            && let Err(error) = self.store_report_line(order.user_id).await
        {
            tracing::warn!(%error, "the cached sales report could not be patched: dropped instead");
            self.sales_report_changed().await;
        }
        Ok(Some(order))
    }

    /// Stores the sales report with the line of user `user_id`'s
    /// organisation added up again (one organisation's orders, through the
    /// indexes: milliseconds, where the whole report takes a pass over every
    /// order), in place of the cached line (`#[write_through]`: here and in
    /// Redis, other instances' copies dropped).
    ///
    /// The other lines are the cached report's, which is right because
    /// every write of an order patches it this way. Two writes patching at
    /// once cannot lose one another's line: `#[write_through]` stores only
    /// if no other mutation of the key landed since it began, and leaves a
    /// tombstone otherwise (the next read adds everything up). With Redis,
    /// the report patched is Redis' copy: this instance's L1 copy may still
    /// lack another instance's write (its message one pub/sub delivery
    /// away) that Redis holds.
    #[write_through(key = "reports:sales", ttl = REPORT_TTL, cache = self.cache)]
    async fn store_report_line(&self, user_id: i64) -> Result<SalesReport, sqlx::Error> {
        let mut report = if self.shared_cache {
            self.shared_sales_report().await?
        } else {
            self.cached_sales_report().await?
        };
        let line = self
            .db
            .org_sales_of_user(user_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        report.replace(line);
        Ok(report)
    }

    /// Drops the cached sales report everywhere: the next read adds it up.
    #[invalidates(key = "reports:sales", cache = self.cache)]
    async fn sales_report_changed(&self) {}

    /// Whether user `id` exists, from the cache when it is on; not counted
    /// as a read (for `--warm`).
    pub async fn user_exists(&self, id: i64) -> Result<bool, sqlx::Error> {
        let user = if self.cache_enabled {
            self.cached_user(id).await?
        } else {
            self.db.user(id).await?
        };
        Ok(user.is_some())
    }

    /// Records that user `id` was seen at `at` (milliseconds since the Unix
    /// epoch), written behind the cache: the time is stored under
    /// `user:<id>:seen` at once (so `last_seen` reads it, on every
    /// instance), the database write (this body) is queued in Redis, and a
    /// worker runs it shortly after: the generated `record_seen_handler`,
    /// which owns a clone of this repository (see `app.rs`). When Redis
    /// cannot take the write (down, breaker open, full, or not configured)
    /// the body runs now instead and its error is returned.
    ///
    /// The body runs at least once, as a write with a [`WriteId`], which
    /// the upsert keeps so that a duplicate or late delivery never
    /// overwrites a newer time. `coalesce`: of several queued times of one
    /// user that the worker reads together, only the last is written, since
    /// it replaces the others. The queue is [`SEEN_QUEUE`].
    ///
    /// A last-seen time is a value where a second of lag costs nothing and
    /// where the last write wins; never write a payment this way.
    #[write_behind(
        key = "user:<id>:seen",
        ttl = USER_TTL,
        value = at,
        queue = "record_seen",
        coalesce,
        cache = self.cache
    )]
    pub async fn record_seen(&self, id: i64, at: i64) -> Result<(), sqlx::Error> {
        let Some(write) = WriteId::current() else {
            return Err(sqlx::Error::Protocol(
                "a last-seen time is saved only as a write-behind write, which carries a write id"
                    .into(),
            ));
        };
        self.db.save_seen(id, at, write.as_i64()).await
    }

    /// When user `id` was last seen, or `None` if never. Read from the cache,
    /// which holds a recorded time before the database does.
    pub async fn last_seen(&self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        if self.cache_enabled {
            self.cached_last_seen(id).await
        } else {
            self.db.last_seen(id).await
        }
    }

    /// Reads the entry `record_seen` stores (same template and TTL). Never
    /// seen users are cached for 30 s as such; a `record_seen` replaces
    /// that entry at once.
    #[cached(key = "user:<id>:seen", ttl = USER_TTL, negative = 30, cache = self.cache)]
    async fn cached_last_seen(&self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        self.db.last_seen(id).await
    }

    /// Writes the read counts gathered since the last call to the database.
    pub async fn flush_reads(&self) -> Result<(), sqlx::Error> {
        let Reads { counts, dropped } = self.reads.take();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                limit = READ_COUNTS_LIMIT,
                "more users were read since the last save of read counts than are counted: \
                 reads of the others were not counted"
            );
        }
        if counts.is_empty() {
            return Ok(());
        }
        self.db.add_reads(&counts).await
    }
}

/// The most users whose reads are counted between two saves (every 10 s):
/// a bound on the memory counting takes (a few dozen bytes a user, under
/// 1 MB in all). Reads of further users are dropped until the next save,
/// which only makes `--warm`'s ranking coarser when reads spread over
/// unusually many users.
pub const READ_COUNTS_LIMIT: usize = 20_000;

/// Reads per user since the last save, kept in memory so that counting
/// costs no query; at most `limit` users (see [`READ_COUNTS_LIMIT`]).
///
/// # Example
///
/// ```
/// use axum_app::repo::ReadCounts;
///
/// let counts = ReadCounts::with_limit(1);
/// counts.record(7);
/// counts.record(7);
/// counts.record(8); // past the limit: dropped
/// let reads = counts.take();
/// assert_eq!((reads.counts, reads.dropped), (vec![(7, 2)], 1));
/// ```
pub struct ReadCounts {
    limit: usize,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<i64, i64>,
    dropped: u64,
}

/// What [`ReadCounts::take`] returns.
#[derive(Debug, Default)]
pub struct Reads {
    /// `(user id, reads)`, in no particular order.
    pub counts: Vec<(i64, i64)>,
    /// Reads not counted because `limit` users were counted already.
    pub dropped: u64,
}

impl Default for ReadCounts {
    fn default() -> Self {
        ReadCounts::with_limit(READ_COUNTS_LIMIT)
    }
}

impl ReadCounts {
    /// Counts for at most `limit` users at a time.
    pub fn with_limit(limit: usize) -> ReadCounts {
        ReadCounts {
            limit,
            pending: Mutex::default(),
        }
    }

    /// Counts one read of user `id`, unless `limit` other users are counted.
    pub fn record(&self, id: i64) {
        let mut pending = self.pending.lock().unwrap();
        if let Some(reads) = pending.counts.get_mut(&id) {
            *reads += 1;
        } else if pending.counts.len() < self.limit {
            pending.counts.insert(id, 1);
        } else {
            pending.dropped += 1;
        }
    }

    /// The counts so far; counting starts afresh.
    pub fn take(&self) -> Reads {
        let Pending { counts, dropped } = std::mem::take(&mut *self.pending.lock().unwrap());
        Reads {
            counts: counts.into_iter().collect(),
            dropped,
        }
    }
}
