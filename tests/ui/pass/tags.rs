use cache_runtime::{Cache, cached, invalidates};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

pub struct Team {
    pub id: u32,
}

static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// A parameter in a tag alone is still skipped: only the key decides which
// calls share an entry.
#[cached(key = "user:<id>", ttl = 300, tags = ["org:<org>", "team:<team.id>", "users"], skip(org, team))]
async fn find_user(org: u32, team: &Team, id: u64) -> User {
    let _ = (org, team.id);
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    User { id }
}

// Empty lists, trailing commas, and tags with `early` / `stale` (whose
// bodies run in the background).
#[cached(key = "n:<n>", ttl = 60, tags = [])]
async fn no_tags(n: u8) -> u8 {
    n
}

#[cached(key = "n:<n>", ttl = 60, early, stale = 30, tags = ["numbers", "n:<n>",])]
async fn refreshed(n: u8) -> u8 {
    n
}

pub struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(key = "repo:<id>", ttl = 60, tags = ["org:<org>"], cache = self.cache, skip(org))]
    pub async fn find(&self, org: u32, id: u64) -> Option<User> {
        let _ = org;
        Some(User { id })
    }
}

#[invalidates(tag = "org:<org>")]
async fn delete_org(org: u32) {
    let _ = org;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let loads = || LOADS.load(std::sync::atomic::Ordering::Relaxed);
    let team = Team { id: 3 };
    find_user(7, &team, 1).await;
    find_user(7, &team, 1).await;
    assert_eq!(loads(), 1);
    delete_org(8).await;
    find_user(7, &team, 1).await;
    assert_eq!(loads(), 1);
    delete_org(7).await;
    find_user(7, &team, 1).await;
    assert_eq!(loads(), 2);
    assert_eq!(no_tags(1).await, 1);
    assert_eq!(refreshed(2).await, 2);
    let repo = Repo {
        cache: Cache::global(),
    };
    assert_eq!(repo.find(7, 5).await, Some(User { id: 5 }));
}
