use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_runtime::{Cache, cached};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

pub struct Filter {
    pub active: bool,
}

// `stale` runs the body in the background, so the repository is cloned into
// it: `Clone`, and `Arc`s inside keep the clone cheap.
#[derive(Clone)]
pub struct UserRepo {
    cache: Cache,
    users: Arc<HashMap<u64, String>>,
    loads: Arc<AtomicU64>,
    prefix: String,
}

mod format {
    pub fn display(prefix: &str, name: &str) -> String {
        format!("{prefix}{name}")
    }
}

impl UserRepo {
    #[cached(key = "org:<org>:user:<id>", ttl = 300, stale = 60, cache = self.cache)]
    pub async fn find(&self, org: &str, id: u64) -> Option<User> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let name = self.users.get(&id)?;
        // `self::` paths are left alone; `self` inside macros is replaced.
        let name = self::format::display(&self.prefix, name);
        assert!(!org.is_empty(), "{}", self.prefix);
        Some(User {
            id,
            name: format!("{name}@{org}"),
        })
    }

    // `&impl Trait`, `impl Trait`, `mut`, a skipped `&T` and `_`.
    #[cached(key = "greeting:<who>", ttl = 60, early, cache = self.cache, skip(filter, times))]
    pub async fn greet(
        &self,
        who: &(impl std::fmt::Display + Clone + Send + Sync + 'static),
        mut times: impl Iterator<Item = u8> + Clone + Send + 'static,
        filter: &Filter,
        _: &mut u8,
    ) -> String {
        let times = times.next().unwrap_or(1);
        let active = filter.active;
        format!("{}hello {who} x{times} {active}", self.prefix)
    }
}

impl Clone for Filter {
    fn clone(&self) -> Self {
        Filter {
            active: self.active,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let repo = UserRepo {
        cache: Cache::global(),
        users: Arc::new(HashMap::from([(1, "ada".to_owned())])),
        loads: Arc::default(),
        prefix: "~".to_owned(),
    };
    let expected = Some(User {
        id: 1,
        name: "~ada@acme".to_owned(),
    });
    assert_eq!(repo.find("acme", 1).await, expected);
    assert_eq!(repo.find("acme", 1).await, expected);
    assert_eq!(repo.loads.load(Ordering::Relaxed), 1);
    assert_eq!(repo.find("acme", 2).await, None);

    let filter = Filter { active: true };
    let greeting = repo.greet(&"bob", [3u8].into_iter(), &filter, &mut 0).await;
    assert_eq!(greeting, "~hello bob x3 true");
}
