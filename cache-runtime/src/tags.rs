//! Tag versions: which version of each tag this instance takes as current.
//!
//! A tag's version is a counter in Redis (`<ns>:<tag> #tag`, moved on by
//! `invalidate_tag`). An entry stores the versions its tags had when it was
//! loaded, and is served only while they are still current. Versions are
//! read from Redis on first use, updated by invalidation messages, and
//! forgotten when the subscription reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Context, Store};
use crate::value::TagVersion;

/// Bound on remembered tags; past it the map starts over (versions are
/// re-read from Redis as needed).
const MAX_KNOWN_TAGS: usize = 100_000;

/// The current versions of tags, as far as this instance knows.
#[derive(Default)]
pub(crate) struct Tags {
    known: Mutex<HashMap<Box<str>, u64>>,
}

/// The Redis key of a tag's version counter. It holds a space, which no
/// rendered template can, so it never equals a cached value's key.
pub(crate) fn version_key(namespace: &str, tag: &str) -> String {
    format!("{namespace}:{tag} #tag")
}

impl Tags {
    pub(crate) fn get(&self, tag: &str) -> Option<u64> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .copied()
    }

    /// Records a version; versions only move forward.
    pub(crate) fn observe(&self, tag: &str, version: u64) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN_TAGS && !known.contains_key(tag) {
            known.clear();
        }
        let current = known.entry(tag.into()).or_insert(version);
        *current = (*current).max(version);
    }

    pub(crate) fn clear(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The current versions of `tags`: known locally, or read from Redis (a
    /// tag never invalidated is at version 0). With Redis unreachable, an
    /// unknown tag is taken to be at 0 provisionally: entries stored under
    /// that guess only stay in this instance, whose tag versions are
    /// forgotten when its subscription comes back (it then re-reads them).
    pub(crate) async fn versions_of(&self, store: &Store, tags: &[&str]) -> Vec<TagVersion> {
        let mut versions = Vec::with_capacity(tags.len());
        for tag in tags {
            let version = match self.get(tag) {
                Some(version) => version,
                None => {
                    let version = match store.l2() {
                        Some(l2) => l2
                            .get_counter(&version_key(store.namespace(), tag))
                            .await
                            .unwrap_or(0),
                        None => 0,
                    };
                    self.observe(tag, version);
                    version
                }
            };
            versions.push(((*tag).into(), version));
        }
        versions
    }

    /// Whether every tag of a stored entry is still at its stored version,
    /// as far as this instance knows (without asking Redis).
    pub(crate) fn current(&self, stored: &[TagVersion]) -> bool {
        stored
            .iter()
            .all(|(tag, version)| self.get(tag) == Some(*version))
    }

    /// Whether every tag of an entry read from Redis is still at its stored
    /// version (reading unknown tags' versions from Redis).
    pub(crate) async fn still_current(&self, store: &Store, stored: &[TagVersion]) -> bool {
        if stored.is_empty() {
            return true;
        }
        let names: Vec<&str> = stored.iter().map(|(tag, _)| &**tag).collect();
        self.versions_of(store, &names).await == stored
    }

    /// Reads what a load of `key` carrying `tags` must know before it starts.
    pub(crate) async fn context(&self, store: &Store, key: &str, tags: &[&str]) -> Context {
        let snapshot = store.epochs().snapshot(key);
        let tags = if tags.is_empty() {
            None
        } else {
            Some(Arc::from(self.versions_of(store, tags).await))
        };
        Context { snapshot, tags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_move_forward() {
        let versions = Tags::default();
        assert_eq!(versions.get("t"), None);
        versions.observe("t", 3);
        versions.observe("t", 2);
        assert_eq!(versions.get("t"), Some(3));
        versions.clear();
        assert_eq!(versions.get("t"), None);
    }

    #[test]
    fn version_keys_hold_a_space() {
        assert!(version_key("app", "org:7").contains(' '));
    }
}
