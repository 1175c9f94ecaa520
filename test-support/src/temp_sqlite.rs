//! A SQLite database file for one test, removed with it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A SQLite file in the temporary directory (not created until SQLite
/// opens it), removed on drop with its `-wal` and `-shm` companions.
///
/// ```
/// let db = cache_test_support::TempSqlite::new("example");
/// assert!(db.url().starts_with("sqlite:") && db.url().ends_with("?mode=rwc"));
/// ```
pub struct TempSqlite {
    path: PathBuf,
}

impl TempSqlite {
    /// A new file name, unique in this process and across processes,
    /// starting with `label`.
    pub fn new(label: &str) -> TempSqlite {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cache-{label}-{}-{}.sqlite",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TempSqlite {
            path: std::env::temp_dir().join(name),
        }
    }

    /// The sqlx URL that opens (and creates) it.
    pub fn url(&self) -> String {
        format!("sqlite:{}?mode=rwc", self.path.display())
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
