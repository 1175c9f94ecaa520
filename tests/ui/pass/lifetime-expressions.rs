use std::sync::LazyLock;
use std::time::Duration;

use cache_runtime::{cached, write_through};

const USER_TTL_SECS: u64 = 300;
const NEGATIVE: Duration = Duration::from_secs(30);

mod config {
    pub const STALE_SECS: u64 = 600;
}

struct Settings {
    report_ttl: Duration,
}

static SETTINGS: LazyLock<Settings> = LazyLock::new(|| Settings {
    report_ttl: Duration::from_secs(std::env::var("REPORT_TTL").map_or(60, |v| v.parse().unwrap_or(60))),
});

#[cached(key = "user:<id>", ttl = USER_TTL_SECS, negative = NEGATIVE, stale = config::STALE_SECS)]
pub async fn get_user(id: u64) -> Result<Option<String>, std::io::Error> {
    Ok(Some(format!("user {id}")))
}

#[write_through(key = "user:<id>", ttl = USER_TTL_SECS, stale = Duration::from_secs(config::STALE_SECS))]
pub async fn rename_user(id: u64, name: String) -> Result<String, std::io::Error> {
    let _ = id;
    Ok(name)
}

#[cached(key = "report:<id>", ttl = SETTINGS.report_ttl, negative = 5 * 60)]
pub async fn report(id: u64) -> Option<String> {
    Some(format!("report {id}"))
}

struct Repo;

impl Repo {
    const TTL: u64 = 120;

    #[cached(key = "org:<id>", ttl = Repo::TTL, cache = cache_runtime::Cache::global())]
    pub async fn org(&self, id: u64) -> String {
        format!("org {id}")
    }
}

fn main() {
    let _ = (get_user(1), rename_user(1, String::new()), report(1), Repo.org(1));
}
