use cache_runtime::{cached, invalidates, write_through};

pub trait Tenant {
    const NAME: &'static str;
}
pub struct Acme;
impl Tenant for Acme {
    const NAME: &'static str = "acme";
}

pub trait Db: Sync {}
pub struct Postgres;
impl Db for Postgres {}

// A const generic renders its value; a type parameter the name of its type.
#[cached(key = "scaled:<N>:<id>", ttl = 60)]
async fn scaled<const N: u64>(id: u64) -> u64 {
    id * N
}

#[cached(key = "tenant:<T>:user:<id>", ttl = 60)]
async fn tenant_user<'a, T: Tenant>(id: &'a u64) -> String {
    format!("{}:{id}", T::NAME)
}

// A database handle does not change the result: skipped.
#[cached(key = "user:<id>", ttl = 60, skip(db, D))]
async fn user<D: Db>(db: &D, id: u64) -> String {
    let _ = db;
    format!("user {id}")
}

#[write_through(key = "scaled:<N>:<id>", ttl = 60, skip(D))]
async fn save_scaled<const N: u64, D: Db>(db: &D, id: u64) -> u64 {
    let _ = db;
    id * N
}

// Deleting needs no generic parameter in its keys.
#[invalidates(key = "user:<id>")]
async fn rename<D: Db>(db: &D, id: u64) {
    let _ = (db, id);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(scaled::<2>(5).await, 10);
    assert_eq!(scaled::<3>(5).await, 15);
    assert_eq!(tenant_user::<Acme>(&7).await, "acme:7");
    assert_eq!(user(&Postgres, 1).await, "user 1");
    assert_eq!(save_scaled::<4, _>(&Postgres, 2).await, 8);
    rename(&Postgres, 1).await;
}
