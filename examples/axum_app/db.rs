//! The database: connection, schema, seed data, and the queries the
//! repository runs. Nothing here knows about the cache.
//!
//! One code path serves SQLite and Postgres through sqlx's `Any` driver:
//! the SQL below is the subset both accept (`$n` placeholders, `BIGINT`,
//! `ON CONFLICT`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

/// Organisations created on first start.
pub const SEEDED_ORGS: i64 = 100;
/// Users created on first start, spread over the organisations.
pub const SEEDED_USERS: i64 = 5_000;
/// Orders created on start unless `REPORT_ROWS` asks for more: enough for
/// the sales report to add something up, few enough that the many tests
/// starting the app do not wait for a seed. The load test's report
/// scenario seeds 200,000, which makes the report a query of 100 ms or more.
pub const DEFAULT_REPORT_ROWS: u32 = 10_000;

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    pub email: String,
    /// When the row last changed, in milliseconds since the Unix epoch
    /// (`Last-Modified`, `If-Unmodified-Since`).
    pub updated_at: i64,
}

impl User {
    /// When the row last changed.
    pub fn modified(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.updated_at).unwrap_or(0))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A member as listed under `GET /orgs/{id}/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Member {
    pub id: i64,
    pub name: String,
}

/// An organisation with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgMembers {
    pub org_id: i64,
    pub name: String,
    pub members: Vec<Member>,
}

/// An order, as `PUT /orders/{id}` answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub amount_cents: i64,
}

/// One organisation's line of the sales report: what its members ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrgSales {
    pub org_id: i64,
    pub name: String,
    pub orders: i64,
    pub revenue_cents: i64,
    /// Members with at least one order.
    pub customers: i64,
}

/// `GET /reports/sales`: every organisation's sales, by organisation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesReport {
    pub orgs: Vec<OrgSales>,
}

impl SalesReport {
    /// Puts `line` in place of its organisation's line (or in order, for an
    /// organisation the report did not have).
    pub fn replace(&mut self, line: OrgSales) {
        match self
            .orgs
            .binary_search_by_key(&line.org_id, |existing| existing.org_id)
        {
            Ok(at) => self.orgs[at] = line,
            Err(at) => self.orgs.insert(at, line),
        }
    }
}

/// The sales report's query, without its `WHERE` and `GROUP BY`: the whole
/// report ([`Db::sales_report`]) and one organisation's line
/// ([`Db::org_sales_of_user`]) add up the same way. The cast: Postgres sums
/// `BIGINT`s as `NUMERIC`.
const ORG_SALES: &str = "SELECT g.id AS org_id, g.name,
         COUNT(o.id) AS orders,
         CAST(COALESCE(SUM(o.amount_cents), 0) AS BIGINT) AS revenue_cents,
         COUNT(DISTINCT o.user_id) AS customers
     FROM orgs g
     LEFT JOIN users u ON u.org_id = g.id
     LEFT JOIN orders o ON o.user_id = u.id";

/// How the connection pool is sized: few connections and a short wait for
/// one, so that a flood of requests the database cannot keep up with is
/// answered at once with `503` and `Retry-After` (see [`is_overloaded`])
/// instead of queueing for sqlx's default 30 s.
///
/// ```
/// use std::time::Duration;
/// use axum_app::db::PoolSettings;
///
/// let small = PoolSettings {
///     max_connections: Some(1),
///     ..PoolSettings::default()
/// };
/// assert_eq!(small.acquire_timeout, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// `DB_MAX_CONNECTIONS`. `None`: 4 for SQLite (it runs one write at a
    /// time; more connections would only queue on its lock), 16 for
    /// Postgres.
    pub max_connections: Option<u32>,
    /// `DB_ACQUIRE_TIMEOUT_SECS`, default 2 s: how long a query waits for
    /// a free connection before the request is answered `503`.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            max_connections: None,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

/// Whether `error` means the database is too busy right now rather than
/// broken: no pooled connection came free in time, the pool is closing
/// (the app is shutting down), SQLite's lock stayed taken past its busy
/// timeout, or Postgres refuses connections for now. Worth a retry:
/// `503` with `Retry-After`, not `500`.
///
/// ```
/// assert!(axum_app::db::is_overloaded(&sqlx::Error::PoolTimedOut));
/// assert!(!axum_app::db::is_overloaded(&sqlx::Error::RowNotFound));
/// ```
pub fn is_overloaded(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(error) => {
            let code = error.code();
            let code = code.as_deref();
            if error.try_downcast_ref::<SqliteError>().is_some() {
                // An extended result code, whose low byte is the primary
                // one: SQLITE_BUSY (5) or SQLITE_LOCKED (6).
                let primary = code.and_then(|code| code.parse::<i32>().ok());
                matches!(primary.map(|code| code & 0xff), Some(5 | 6))
            } else if error.try_downcast_ref::<PgDatabaseError>().is_some() {
                // too_many_connections, configuration_limit_exceeded,
                // cannot_connect_now.
                matches!(code, Some("53300" | "53400" | "57P03"))
            } else {
                false
            }
        }
        _ => false,
    }
}

/// A connection pool plus a count of the queries requests caused, which is
/// what the cache is there to cut (`app_db_queries_total` at `/metrics`).
pub struct Db {
    pool: AnyPool,
    queries: AtomicU64,
}

/// Every SQLite connection's settings: WAL (readers and the one writer
/// overlap), a busy timeout (a second writer waits instead of failing).
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;";

/// Waits for, and takes, the lock that serialises the schema and the seed
/// across instances on one Postgres database (an advisory lock, keyed by a
/// hash of its purpose).
const POSTGRES_SETUP_LOCK: &str = "SELECT pg_advisory_lock(hashtext('axum_app schema and seed'))";

impl Db {
    /// Connects with the default [`PoolSettings`], creates the schema and
    /// seeds it when it is empty.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        Db::connect_with(url, PoolSettings::default(), DEFAULT_REPORT_ROWS).await
    }

    /// Connects with a pool sized by `pool`, creates the schema and seeds
    /// it when it is empty, with `report_rows` orders (`REPORT_ROWS`; a
    /// database holding fewer gets the missing ones, one holding more
    /// keeps them).
    ///
    /// Safe to run from several instances at once on one SQLite file (WAL
    /// mode lets readers and the one writer overlap, the busy timeout makes
    /// a second writer wait instead of failing, and seeding skips rows that
    /// exist) or one Postgres database (an advisory lock makes them take
    /// turns).
    ///
    /// The schema and the seed go over a connection of their own, not the
    /// pool: the pool's acquire timeout is for requests (a fraction of a
    /// second, so that an overloaded database answers `503` at once), and a
    /// start-up on a busy machine may take longer than that.
    pub async fn connect_with(
        url: &str,
        pool: PoolSettings,
        report_rows: u32,
    ) -> Result<Db, sqlx::Error> {
        install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let mut setup = AnyConnection::connect(url).await?;
        if sqlite {
            setup.execute(SQLITE_PRAGMAS).await?;
        } else if setup.backend_name() == "PostgreSQL" {
            // Postgres runs two `CREATE TABLE IF NOT EXISTS` of one table
            // at once as two creations, and the second fails (a duplicate
            // key in `pg_type`): instances starting together on a fresh
            // database take turns. The lock is the session's: closing (or
            // dropping) the connection below releases it.
            setup.execute(POSTGRES_SETUP_LOCK).await?;
        }
        Db::migrate(&mut setup).await?;
        Db::seed(&mut setup).await?;
        Db::seed_orders(&mut setup, i64::from(report_rows)).await?;
        setup.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(pool.max_connections.unwrap_or(if sqlite { 4 } else { 16 }))
            .acquire_timeout(pool.acquire_timeout)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        connection.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(url)?;
        Ok(Db {
            pool,
            queries: AtomicU64::new(0),
        })
    }

    /// Creates the schema, and brings an older one up to date.
    async fn migrate(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for statement in [
            "CREATE TABLE IF NOT EXISTS orgs (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS users (
                 id BIGINT PRIMARY KEY,
                 org_id BIGINT NOT NULL REFERENCES orgs (id),
                 name TEXT NOT NULL,
                 email TEXT NOT NULL,
                 updated_at BIGINT NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS users_by_org ON users (org_id)",
            // How often each user was read, for `--warm` (see `warm.rs`).
            "CREATE TABLE IF NOT EXISTS user_reads (user_id BIGINT PRIMARY KEY, reads BIGINT NOT NULL)",
            // Only reads of users that exist are counted; earlier versions
            // also counted made-up ids, whose rows are dropped here.
            "DELETE FROM user_reads WHERE user_id NOT IN (SELECT id FROM users)",
            // When each user was last seen (`POST /users/{id}/seen`, written
            // behind the cache), with the id of the write that set it: a
            // write applies only over an older one (see `save_seen`).
            "CREATE TABLE IF NOT EXISTS user_seen (
                 user_id BIGINT PRIMARY KEY REFERENCES users (id),
                 seen_at BIGINT NOT NULL,
                 write_id BIGINT NOT NULL)",
            // What the sales report adds up (`GET /reports/sales`); the
            // index serves one organisation's line, which a write of an
            // order recomputes (see `Repo::set_order_amount`).
            "CREATE TABLE IF NOT EXISTS orders (
                 id BIGINT PRIMARY KEY,
                 user_id BIGINT NOT NULL REFERENCES users (id),
                 amount_cents BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id)",
        ] {
            connection.execute(statement).await?;
        }
        // Databases created before `updated_at` existed get the column.
        if sqlx::query("SELECT updated_at FROM users LIMIT 1")
            .fetch_optional(&mut *connection)
            .await
            .is_err()
        {
            connection
                .execute("ALTER TABLE users ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0")
                .await?;
        }
        Ok(())
    }

    /// Inserts the seed rows that are missing, in batches in one transaction.
    async fn seed(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *connection)
            .await?;
        if users >= SEEDED_USERS {
            return Ok(());
        }
        // The values are generated here, never user input, so they are
        // written into the statement (hundreds of rows per statement beat
        // one bound statement per row by far on SQLite).
        let orgs: Vec<String> = (1..=SEEDED_ORGS)
            .map(|id| format!("({id}, 'Organisation {id}')"))
            .collect();
        let seeded_at = now_ms();
        let users: Vec<String> = (1..=SEEDED_USERS)
            .map(|id| {
                let name = seed_name(id);
                let email = format!("{}.{id}@example.com", name.to_lowercase().replace(' ', "."));
                format!("({id}, {}, '{name}', '{email}', {seeded_at})", seed_org(id))
            })
            .collect();
        let mut transaction = connection.begin().await?;
        for chunk in orgs.chunks(500) {
            let statement = format!(
                "INSERT INTO orgs (id, name) VALUES {} ON CONFLICT (id) DO NOTHING",
                chunk.join(", ")
            );
            transaction.execute(statement.as_str()).await?;
        }
        for chunk in users.chunks(500) {
            let statement = format!(
                "INSERT INTO users (id, org_id, name, email, updated_at) VALUES {} ON CONFLICT (id) DO NOTHING",
                chunk.join(", ")
            );
            transaction.execute(statement.as_str()).await?;
        }
        transaction.commit().await
    }

    /// Adds orders up to id `rows`, in one statement (generated by the
    /// database, so a million rows take seconds, not minutes) in one
    /// transaction. Amounts are spread over $1-$200 by a fixed formula;
    /// each user's orders are consecutive ids, so the index on `user_id`
    /// grows at its end instead of at random places (several times faster
    /// to seed). `ON CONFLICT`: another SQLite instance starting at the
    /// same time may seed them too (on Postgres the instances take turns).
    /// `WHERE true` tells SQLite's parser that `ON CONFLICT` belongs to the
    /// `INSERT`, not to a join.
    async fn seed_orders(connection: &mut AnyConnection, rows: i64) -> Result<(), sqlx::Error> {
        let (seeded,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM orders")
            .fetch_one(&mut *connection)
            .await?;
        if seeded >= rows {
            return Ok(());
        }
        let mut transaction = connection.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, amount_cents)
             WITH RECURSIVE n(i) AS (
                 SELECT CAST($1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < $2
             )
             SELECT i, (i - 1) * $3 / $2 + 1, (i * 104729) % 20000 + 100 FROM n WHERE true
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(seeded + 1)
        .bind(rows)
        .bind(SEEDED_USERS)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await
    }

    /// Queries sent on behalf of requests so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn user(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        self.count_query();
        sqlx::query_as("SELECT id, org_id, name, email, updated_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The organisation and its members, or `None` if there is no such
    /// organisation.
    pub async fn org_members(&self, org_id: i64) -> Result<Option<OrgMembers>, sqlx::Error> {
        self.count_query();
        let org: Option<(String,)> = sqlx::query_as("SELECT name FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some((name,)) = org else {
            return Ok(None);
        };
        self.count_query();
        let members = sqlx::query_as("SELECT id, name FROM users WHERE org_id = $1 ORDER BY id")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(OrgMembers {
            org_id,
            name,
            members,
        }))
    }

    /// Every organisation's sales: one pass over all orders (joined to
    /// their users), so it takes as long as the table is large.
    pub async fn sales_report(&self) -> Result<SalesReport, sqlx::Error> {
        self.count_query();
        let orgs = sqlx::query_as(&format!("{ORG_SALES} GROUP BY g.id, g.name ORDER BY g.id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(SalesReport { orgs })
    }

    /// The sales of user `user_id`'s organisation, as [`Db::sales_report`]
    /// adds them up (through the indexes: one organisation's share of the
    /// orders); `None` for an unknown user.
    pub async fn org_sales_of_user(&self, user_id: i64) -> Result<Option<OrgSales>, sqlx::Error> {
        self.count_query();
        sqlx::query_as(&format!(
            "{ORG_SALES} WHERE g.id = (SELECT org_id FROM users WHERE id = $1) GROUP BY g.id, g.name"
        ))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Sets an order's amount; the row as this statement left it, or
    /// `None` if there is no such order.
    pub async fn set_order_amount(
        &self,
        id: i64,
        amount_cents: i64,
    ) -> Result<Option<Order>, sqlx::Error> {
        self.count_query();
        sqlx::query_as(
            "UPDATE orders SET amount_cents = $1 WHERE id = $2
             RETURNING id, user_id, amount_cents",
        )
        .bind(amount_cents)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Renames a user and returns the row as this statement left it;
    /// `None` if there is no such user, or when `expected` is given and the
    /// row no longer is what it was (another write landed since it was
    /// read): a compare-and-set, so a precondition checked against
    /// `expected` still holds when the row changes.
    pub async fn rename_user(
        &self,
        id: i64,
        name: &str,
        expected: Option<&User>,
    ) -> Result<Option<User>, sqlx::Error> {
        self.count_query();
        // Never the same `updated_at` twice for one row: a rename within
        // the millisecond of the last one still moves it on.
        let query = match expected {
            None => sqlx::query_as(
                "UPDATE users SET name = $1,
                     updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END
                 WHERE id = $3
                 RETURNING id, org_id, name, email, updated_at",
            )
            .bind(name)
            .bind(now_ms())
            .bind(id),
            Some(expected) => sqlx::query_as(
                "UPDATE users SET name = $1,
                     updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END
                 WHERE id = $3 AND name = $4 AND updated_at = $5
                 RETURNING id, org_id, name, email, updated_at",
            )
            .bind(name)
            .bind(now_ms())
            .bind(id)
            .bind(&expected.name)
            .bind(expected.updated_at),
        };
        query.fetch_optional(&self.pool).await
    }

    /// When user `id` was last seen (milliseconds since the Unix epoch), or
    /// `None` if never.
    pub async fn last_seen(&self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        self.count_query();
        sqlx::query_scalar("SELECT seen_at FROM user_seen WHERE user_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Records that user `id` was seen at `seen_at`, as the write
    /// `write_id` (a write-behind [`WriteId`](cache_runtime::WriteId) as
    /// `i64`): an idempotent upsert that only replaces a row written by an
    /// older write. A worker delivers each write at least once, so the same
    /// write may come twice, and a late duplicate may come after a newer
    /// write of the user: both change nothing.
    pub async fn save_seen(&self, id: i64, seen_at: i64, write_id: i64) -> Result<(), sqlx::Error> {
        self.count_query();
        sqlx::query(
            "INSERT INTO user_seen (user_id, seen_at, write_id) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET seen_at = excluded.seen_at, write_id = excluded.write_id
             WHERE excluded.write_id > user_seen.write_id",
        )
        .bind(id)
        .bind(seen_at)
        .bind(write_id)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Adds read counts to `user_reads`. Book-keeping, not counted as a
    /// request's query.
    pub async fn add_reads(&self, counts: &[(i64, i64)]) -> Result<(), sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        for &(user_id, reads) in counts {
            sqlx::query(
                "INSERT INTO user_reads (user_id, reads) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET reads = user_reads.reads + excluded.reads",
            )
            .bind(user_id)
            .bind(reads)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await
    }

    /// The `limit` most-read user ids, most-read first (users that exist
    /// only). Before any reads are recorded, the lowest ids (a fresh
    /// database has nothing better).
    pub async fn most_read_users(&self, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM user_reads WHERE user_id IN (SELECT id FROM users)
             ORDER BY reads DESC, user_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let missing = limit - ids.len() as i64;
        if missing > 0 {
            let more: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM users WHERE id NOT IN (SELECT user_id FROM user_reads)
                 ORDER BY id LIMIT $1",
            )
            .bind(missing)
            .fetch_all(&self.pool)
            .await?;
            ids.extend(more);
        }
        Ok(ids)
    }

    /// A trivial query, for `/health`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.pool.execute("SELECT 1").await.map(drop)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn seed_name(id: i64) -> String {
    const FIRST: [&str; 8] = [
        "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    ];
    const LAST: [&str; 8] = [
        "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
    ];
    let first = FIRST[(id % 8) as usize];
    let last = LAST[((id / 8) % 8) as usize];
    format!("{first} {last}")
}

/// Users are dealt to organisations round-robin: 50 members each.
fn seed_org(user_id: i64) -> i64 {
    (user_id - 1) % SEEDED_ORGS + 1
}
