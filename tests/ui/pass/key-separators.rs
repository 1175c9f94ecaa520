//! Placeholders separated by any literal character that is not a letter or
//! digit, or at either end.
use cache_runtime::{cached, invalidates, write_through};

#[cached(key = "avatar:<user>", ttl = 60)]
async fn avatar(user: String) -> String {
    user
}

#[cached(key = "avatar:<user>.thumb", ttl = 60)]
async fn thumb(user: String) -> String {
    user
}

#[cached(key = "<a>-<b>_<c>~<d>/<e>", ttl = 60, tags = ["<a>", "x=<b>,y=<c>;"])]
async fn five(a: u8, b: u8, c: u8, d: u8, e: u8) -> u32 {
    u32::from(a + b + c + d + e)
}

#[write_through(key = "avatar:<user>.thumb", ttl = 60, tags = ["(<user>)"])]
async fn set_thumb(user: String) -> String {
    user
}

#[invalidates(key = "avatar:<user>", tag = "(<user>)")]
async fn drop_avatar(user: String) {
    let _ = user;
}

fn main() {}
