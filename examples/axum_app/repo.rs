//! The repository: what the handlers call. The cache lives here, as
//! attributes on the functions, the way a team would add it to existing
//! repository code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, cached, invalidates};

use crate::db::{Db, OrgMembers, User};

/// Seconds a user stays cached. The attribute below takes a literal, so
/// keep the two equal; `Cache-Control: max-age` is derived from this.
pub const USER_TTL_SECS: u64 = 300;
/// Seconds an organisation's member list stays cached.
pub const ORG_TTL_SECS: u64 = 60;

/// Cheap to clone: shared state sits behind `Arc`s (`stale` refreshes in
/// the background on a clone of the repository).
#[derive(Clone)]
pub struct Repo {
    pub db: Arc<Db>,
    pub cache: Cache,
    /// `CACHE=off`: every read goes to the database, to measure what the
    /// cache saves (`examples/load.rs`).
    cache_enabled: bool,
    reads: Arc<ReadCounts>,
}

impl Repo {
    pub fn new(db: Db, cache: Cache, cache_enabled: bool) -> Repo {
        Repo {
            db: Arc::new(db),
            cache,
            cache_enabled,
            reads: Arc::default(),
        }
    }

    pub fn cache_enabled(&self) -> bool {
        self.cache_enabled
    }

    /// A user, or `None` for an unknown id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.reads.record(id);
        if self.cache_enabled {
            self.cached_user(id).await
        } else {
            self.db.user(id).await
        }
    }

    /// Loads the cache without counting a read (`--warm`).
    pub async fn warm_user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.cached_user(id).await
    }

    /// Five minutes, ±10% so entries written together do not expire
    /// together; unknown ids are cached for 30 s, so probing ids that do
    /// not exist does not reach the database each time; `lock`: one load
    /// per key across all instances sharing the Redis.
    #[cached(key = "user:<id>", ttl = 300, jitter = 0.1, negative = 30, lock, cache = self.cache)]
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
    /// `rename_user`). `stale = 300`: for five minutes past its TTL the old
    /// list is served while one background load refreshes it, and served
    /// instead of an error if the database fails.
    #[cached(key = "org_members:<org_id>", ttl = 60, stale = 300, tags = ["org:<org_id>"], cache = self.cache)]
    async fn cached_org_members(&self, org_id: i64) -> Result<Option<OrgMembers>, sqlx::Error> {
        self.db.org_members(org_id).await
    }

    /// Renames a user. On success the user's entry and every list tagged
    /// with their organisation are dropped in every instance before this
    /// returns. `org_id` is the user's organisation, which this app never
    /// changes, so a cached copy of the user is a safe place to read it.
    #[invalidates(key = "user:<id>", tag = "org:<org_id>", cache = self.cache)]
    pub async fn rename_user(&self, org_id: i64, id: i64, name: &str) -> Result<bool, sqlx::Error> {
        self.db.rename_user(id, name).await
    }

    /// Writes the read counts gathered since the last call to the database.
    pub async fn flush_reads(&self) -> Result<(), sqlx::Error> {
        let counts = self.reads.take();
        if counts.is_empty() {
            return Ok(());
        }
        self.db.add_reads(&counts).await
    }
}

/// Reads per user since the last flush, kept in memory so that counting
/// costs no query.
#[derive(Default)]
struct ReadCounts(Mutex<HashMap<i64, i64>>);

impl ReadCounts {
    fn record(&self, id: i64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }

    fn take(&self) -> Vec<(i64, i64)> {
        let counts = std::mem::take(&mut *self.0.lock().unwrap());
        counts.into_iter().collect()
    }
}
