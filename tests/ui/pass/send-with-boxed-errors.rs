//! A function whose future is `Send` without the attribute stays `Send`
//! with it, though its error type is not: `Box<dyn Error>` is never held
//! across an `.await` by the expansion or the runtime.

use std::error::Error;

use cache_runtime::{cached, invalidates, write_through};

#[cached(key = "user:<id>", ttl = 60)]
async fn user(id: u64) -> Result<String, Box<dyn Error>> {
    Ok(format!("user {id}"))
}

#[cached(key = "maybe:<id>", ttl = 60, negative = 30, lock)]
async fn maybe_user(id: u64) -> Result<Option<String>, Box<dyn Error>> {
    Ok((id > 0).then(|| format!("user {id}")))
}

#[cached(key = "remote:<id>", ttl = 60, l1 = false)]
async fn remote_user(id: u64) -> Result<String, Box<dyn Error>> {
    Ok(format!("user {id}"))
}

#[cached(key = "fresh:<id>", ttl = 60, early, stale = 30)]
async fn fresh_user(id: u64) -> Result<String, Box<dyn Error>> {
    Ok(format!("user {id}"))
}

#[invalidates(key = "user:<id>")]
async fn update_user(id: u64) -> Result<(), Box<dyn Error>> {
    let _ = id;
    Ok(())
}

#[write_through(key = "user:<id>", ttl = 60)]
async fn rename_user(id: u64, name: String) -> Result<String, Box<dyn Error>> {
    Ok(format!("{name} {id}"))
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    assert_send(user(1));
    assert_send(maybe_user(1));
    assert_send(remote_user(1));
    assert_send(fresh_user(1));
    assert_send(update_user(1));
    assert_send(rename_user(1, "ada".to_owned()));
}
