//! `--warm N`: load the N most-read users into the cache before serving.

use std::time::Duration;

use futures_util::StreamExt;
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
/// the cached repository function, `WARM_CONCURRENCY` at a time, showing a
/// progress bar on a terminal.
pub async fn warm(repo: &Repo, count: usize) -> Result<Warmed, sqlx::Error> {
    let ids = repo.db.most_read_users(count as i64).await?;
    let bar = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("warming {bar:40} {pos}/{len} users, {per_sec}, eta {eta}")
            .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut warmed = Warmed {
        loaded: 0,
        failed: 0,
    };
    let mut loads = futures_util::stream::iter(ids)
        .map(|id| repo.warm_user(id))
        .buffer_unordered(WARM_CONCURRENCY);
    while let Some(result) = loads.next().await {
        match result {
            Ok(_) => warmed.loaded += 1,
            Err(error) => {
                warmed.failed += 1;
                tracing::warn!(%error, "warming: a load failed");
            }
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(warmed)
}
