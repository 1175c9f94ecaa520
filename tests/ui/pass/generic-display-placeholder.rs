use std::fmt::Display;

use cache_runtime::cached;

#[cached(key = "label:<id>", ttl = 60)]
async fn label<T: Display + Send>(id: T) -> String {
    format!("#{id}")
}

#[cached(key = "label2:<id>", ttl = 60)]
async fn label_where<T>(id: T) -> String
where
    T: Display + Send,
{
    format!("#{id}")
}

fn main() {
    let _ = label::<u32>;
    let _ = label_where::<&str>;
}
