//! `--warm N`: load the N most-read users into the cache before serving.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::repo::Repo;

/// Loads at most this many users at once, so warming never takes more than
/// a few of the database's connections from live traffic.
const WARM_CONCURRENCY: usize = 8;

/// What warming did.
#[derive(Debug, PartialEq, Eq)]
pub struct Warmed {
    pub loaded: u64,
    pub failed: u64,
}

/// Loads the `count` most-read users (see `Db::most_read_users`) through
/// the cached repository function with `Cache::warm`, `WARM_CONCURRENCY`
/// at a time, showing a progress bar on a terminal.
pub async fn warm(repo: &Repo, count: usize) -> Result<Warmed, sqlx::Error> {
    let ids = repo.db.most_read_users(count as i64).await?;
    let bar = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("warming {bar:40} {pos}/{len} users, {per_sec}, eta {eta}")
            .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let warmed = repo
        .cache
        .warm(ids, |id| repo.warm_user(id))
        .concurrency(WARM_CONCURRENCY)
        .on_progress(|_| bar.inc(1))
        .await;
    bar.finish();
    Ok(Warmed {
        loaded: warmed.loaded,
        failed: warmed.failed,
    })
}
