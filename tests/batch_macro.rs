//! `#[cached(batch(id in ids))]` against a real redis-server: a batch
//! function and the single-key function of the same template share entries
//! both ways; the ids the body leaves out are cached as "not found" with
//! `negative`; a `&[K]` parameter; a method taking `&self`; an `Err` stores
//! nothing. (How the runtime reads and writes a batch, in how many round
//! trips, is tests/batch.rs's.)
//!
//! The strict lint levels are part of the test, as in
//! `tests/macro_semantics.rs`: `cargo clippy --all-targets -- -D warnings`
//! checks the expansion trips none of them (the batch parameter's `mut`
//! moves to the body's rebinding, so it is not unused in the signature).

#![forbid(unreachable_code, unknown_lints, dead_code, unused_variables)]
// Denied, not forbidden: `#[tokio::test]` allows it in its own expansion.
#![deny(unused_mut)]
#![warn(clippy::pedantic)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use cache_runtime::{Cache, cached};
use cache_test_support::RedisServer;
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

async fn cache_on(server: &RedisServer, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .build()
        .await
        .expect("valid configuration")
}

/// The database: users exist for every id but those in `absent`, a query
/// fails when it asks for an id in `failing`, and each query is recorded
/// (the ids it was asked for, sorted).
struct Db {
    cache: Cache,
    absent: Vec<u64>,
    failing: Vec<u64>,
    batches: Mutex<Vec<Vec<u64>>>,
    singles: AtomicU32,
}

impl Db {
    fn new(cache: Cache) -> Db {
        Db {
            cache,
            absent: vec![0],
            failing: vec![13],
            batches: Mutex::default(),
            singles: AtomicU32::new(0),
        }
    }

    fn users(&self, ids: &[u64]) -> Result<HashMap<u64, User>, String> {
        let mut asked = ids.to_vec();
        asked.sort_unstable();
        self.batches.lock().unwrap().push(asked);
        if let Some(id) = ids.iter().find(|id| self.failing.contains(id)) {
            return Err(format!("the query for user {id} failed"));
        }
        Ok(ids
            .iter()
            .filter(|id| !self.absent.contains(id))
            .map(|&id| (id, user(id)))
            .collect())
    }

    fn user(&self, id: u64) -> Option<User> {
        self.singles.fetch_add(1, Relaxed);
        (!self.absent.contains(&id)).then(|| user(id))
    }

    /// The ids of each batch query so far, emptied.
    fn batches(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.batches.lock().unwrap())
    }
}

#[cached(key = "user:<id>", ttl = 60, negative = 60, batch(id in ids), cache = db.cache, skip(db))]
async fn get_users(db: &Db, ids: Vec<u64>) -> Result<HashMap<u64, User>, String> {
    db.users(&ids)
}

#[cached(key = "user:<id>", ttl = 60, negative = 60, cache = db.cache, skip(db))]
async fn get_user(db: &Db, id: u64) -> Option<User> {
    db.user(id)
}

/// Sorted, to compare with what was asked.
fn ids_of(users: &HashMap<u64, User>) -> Vec<u64> {
    let mut ids: Vec<u64> = users.keys().copied().collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_batch_and_the_single_key_function_share_entries_both_ways() {
    let server = RedisServer::start();
    let db = Db::new(cache_on(&server, "shared").await);

    // One id loaded alone, then a batch: the body gets only the others.
    assert_eq!(get_user(&db, 1).await, Some(user(1)));
    let users = get_users(&db, vec![3, 1, 2]).await.unwrap();
    assert_eq!(ids_of(&users), [1, 2, 3]);
    assert_eq!(users[&1], user(1));
    assert_eq!(db.batches(), [vec![2, 3]]);

    // Every id cached: the body does not run at all.
    let users = get_users(&db, vec![2, 3, 1]).await.unwrap();
    assert_eq!(ids_of(&users), [1, 2, 3]);
    assert!(db.batches().is_empty());

    // What the batch loaded, the single-key function reads.
    assert_eq!(get_user(&db, 3).await, Some(user(3)));
    assert_eq!(db.singles.load(Relaxed), 1, "only `get_user(1)` loaded");

    // Each id has its own Redis entry, the single-key function's key.
    db.cache.settled().await;
    let mut keys: Vec<String> = server.client().keys("shared:*").unwrap();
    keys.sort();
    assert_eq!(keys, ["shared:user:1", "shared:user:2", "shared:user:3"]);

    // Another instance reads them all from Redis.
    let other = Db::new(cache_on(&server, "shared").await);
    let users = get_users(&other, vec![1, 2, 3]).await.unwrap();
    assert_eq!(ids_of(&users), [1, 2, 3]);
    assert!(other.batches().is_empty());
    assert_eq!(get_user(&other, 2).await, Some(user(2)));
    assert_eq!(other.singles.load(Relaxed), 0);
}

#[tokio::test]
async fn ids_the_body_left_out_are_cached_as_not_found_with_negative() {
    let server = RedisServer::start();
    let db = Db::new(cache_on(&server, "negative").await);

    let users = get_users(&db, vec![0, 5]).await.unwrap();
    assert_eq!(ids_of(&users), [5], "`0` is absent from the result");
    assert_eq!(db.batches(), [vec![0, 5]]);

    // `0` is cached as "not found": neither function loads it again.
    let users = get_users(&db, vec![5, 0]).await.unwrap();
    assert_eq!(ids_of(&users), [5]);
    assert!(db.batches().is_empty());
    assert_eq!(get_user(&db, 0).await, None);
    assert_eq!(db.singles.load(Relaxed), 0);

    // Without `negative`, an id left out is loaded again on the next call.
    let users = get_users_without_negative(&db, vec![0, 6]).await.unwrap();
    assert_eq!(ids_of(&users), [6]);
    let users = get_users_without_negative(&db, vec![0, 6]).await.unwrap();
    assert_eq!(ids_of(&users), [6]);
    assert_eq!(db.batches(), [vec![0, 6], vec![0]]);
}

#[cached(key = "plain:user:<id>", ttl = 60, batch(id in ids), cache = db.cache, skip(db))]
async fn get_users_without_negative(db: &Db, ids: Vec<u64>) -> Result<HashMap<u64, User>, String> {
    db.users(&ids)
}

#[cached(key = "slice:user:<id>", ttl = 60, batch(id in ids), cache = db.cache, skip(db))]
async fn get_users_by_slice(db: &Db, ids: &[u64]) -> HashMap<u64, User> {
    db.users(ids).unwrap_or_default()
}

#[tokio::test]
async fn a_slice_parameter_holds_the_missing_ids() {
    let server = RedisServer::start();
    let db = Db::new(cache_on(&server, "slice").await);
    let requested = [7, 8];
    assert_eq!(ids_of(&get_users_by_slice(&db, &requested).await), [7, 8]);
    let users = get_users_by_slice(&db, &[9, 8, 7]).await;
    assert_eq!(ids_of(&users), [7, 8, 9]);
    assert_eq!(db.batches(), [vec![7, 8], vec![9]]);
}

/// Users of one organisation: the key also renders a parameter, and the
/// receiver holds the cache.
struct Directory {
    db: Db,
}

impl Directory {
    #[cached(key = "org:<org>:user:<id>", ttl = 60, batch(id in ids), cache = self.db.cache)]
    async fn members(&self, org: u32, mut ids: Vec<u64>) -> Result<HashMap<u64, User>, String> {
        ids.retain(|&id| id != 0);
        let mut users = self.db.users(&ids)?;
        for member in users.values_mut() {
            member.name = format!("{} of {org}", member.name);
        }
        Ok(users)
    }
}

#[tokio::test]
async fn a_method_reads_self_and_keys_its_other_parameters() {
    let server = RedisServer::start();
    let directory = Directory {
        db: Db::new(cache_on(&server, "method").await),
    };
    let users = directory.members(1, vec![1, 2]).await.unwrap();
    assert_eq!(users[&2].name, "user 2 of 1");
    // Another organisation is another key.
    let users = directory.members(2, vec![2, 3]).await.unwrap();
    assert_eq!(users[&2].name, "user 2 of 2");
    let users = directory.members(1, vec![2, 3]).await.unwrap();
    assert_eq!(users[&3].name, "user 3 of 1");
    assert_eq!(directory.db.batches(), [vec![1, 2], vec![2, 3], vec![3]]);
    directory.db.cache.settled().await;
    let mut keys: Vec<String> = server.client().keys("method:*").unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "method:org:1:user:1",
            "method:org:1:user:2",
            "method:org:1:user:3",
            "method:org:2:user:2",
            "method:org:2:user:3",
        ]
    );
}

#[tokio::test]
async fn an_err_is_returned_and_nothing_is_stored() {
    let server = RedisServer::start();
    let db = Db::new(cache_on(&server, "errors").await);

    let error = get_users(&db, vec![12, 13]).await.unwrap_err();
    assert_eq!(error, "the query for user 13 failed");
    // Neither id was stored: both are asked for again.
    assert!(get_users(&db, vec![12, 13]).await.is_err());
    assert_eq!(db.batches(), [vec![12, 13], vec![12, 13]]);
    assert_eq!(get_user(&db, 12).await, Some(user(12)));
    assert_eq!(
        db.singles.load(Relaxed),
        1,
        "12 was not cached by the batch"
    );

    db.cache.settled().await;
    let keys: Vec<String> = server.client().keys("errors:*").unwrap();
    assert_eq!(keys, ["errors:user:12"], "only what `get_user` stored");
}
