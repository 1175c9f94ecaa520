use std::sync::Arc;

use cache_runtime::cached;

pub struct Service {
    name: String,
}

impl Service {
    fn handle(self: &Arc<Self>) -> Arc<Self> {
        Arc::clone(self)
    }

    // The body's `self` is the `&Arc<Self>` it was written for (a copy of
    // the `Arc` with `stale` / `early`): `Self` need not be `Clone`.
    #[cached(key = "greet:<id>", ttl = 60, stale = 30)]
    pub async fn greet(self: &Arc<Self>, id: u64) -> String {
        let handle: Arc<Self> = self.handle();
        format!("{}:{id}:{}", handle.name, Arc::strong_count(self) > 1)
    }

    #[cached(key = "plain:<id>", ttl = 60)]
    pub async fn plain(self: &Arc<Self>, id: u64) -> String {
        format!("{}:{id}", self.handle().name)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let service = Arc::new(Service {
        name: "svc".to_owned(),
    });
    assert_eq!(service.greet(1).await, "svc:1:true");
    assert_eq!(service.plain(1).await, "svc:1");
}
