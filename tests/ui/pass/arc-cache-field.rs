use std::sync::Arc;

use cache_runtime::{Cache, cached};

pub struct AppState {
    cache: Arc<Cache>,
}

impl AppState {
    #[cached(key = "greeting:<name>", ttl = 60, cache = self.cache)]
    pub async fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
}

fn main() {
    let _ = AppState {
        cache: Arc::new(Cache::global()),
    };
}
