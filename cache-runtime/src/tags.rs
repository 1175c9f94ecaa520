//! Tag versions: which version of each tag this instance takes as current.
//!
//! A tag's version is a random token in Redis (`<ns>:<tag> #tag`), replaced
//! by a new random token on every `invalidate_tag`. An entry stores the
//! tokens its tags had when it was loaded, and is served only while they
//! are still current.
//!
//! # Why random tokens, and why Redis decides
//!
//! Everything that can happen to the bookkeeping may only cause misses,
//! never bring an old value back or switch invalidation off:
//! - A token key that is lost (`FLUSHDB`, eviction, expiry, a Redis that
//!   restarted empty) is recreated with a fresh random token on the next
//!   read, which no stored entry carries: their tags no longer match. A
//!   counter would restart at a number old entries carry.
//! - This instance never guesses what Redis holds: when a token cannot be
//!   read (Redis down or slow), it makes a new local token that no entry in
//!   Redis carries (see [`Tags::read`]), and a token is remembered only if
//!   no invalidation of tags arrived while it was read.
//! - Messages never carry versions this instance adopts: an invalidation
//!   message only makes it forget the tag (the next use reads Redis), so a
//!   malformed, foreign or replayed message costs a read at most.
//! - An entry read from Redis is checked against the tokens read in the same
//!   round trip ([`Probe`]): Redis' current state decides, not this
//!   instance's memory, so an entry is not served from Redis after another
//!   instance's `invalidate_tag` returned, even before its message arrives.
//! - Token keys expire ([`TAG_VERSION_TTL`] after an instance last fetched
//!   or replaced them), so abandoned tags do not fill Redis; an expired
//!   token only costs misses.
//!
//! Without Redis, this instance's own map is the source of the tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::l1::EntryTags;
use crate::store::{Context, Store};
use crate::value::TagVersion;

/// Bound on the memory of remembered tags, in bytes (each counted as its
/// length plus [`TAG_OVERHEAD`]); past it the map starts over (tokens are
/// then re-read from Redis as needed: misses only). About 90 000 tags of
/// 30 bytes, 7 800 of the longest (1 KiB).
const MAX_KNOWN_TAG_BYTES: usize = 8 << 20;

/// What a remembered tag costs beyond its text: its slot in the map (key,
/// token, control byte, at the table's load factor) and the allocation of
/// the text (measured in `tests/soak.rs`: 52 bytes of heap and 68
/// resident for a 16-byte tag, counted 80).
const TAG_OVERHEAD: usize = 64;

/// What a remembered tag counts for against [`MAX_KNOWN_TAG_BYTES`].
fn tag_bytes(tag: &str) -> usize {
    tag.len() + TAG_OVERHEAD
}

/// The remembered tokens, and what they count for in bytes.
#[derive(Default)]
struct Known {
    tokens: HashMap<Box<str>, u64>,
    bytes: usize,
}

impl Known {
    /// Remembers `token` for `tag`; whether anything changed.
    fn insert(&mut self, tag: &str, token: u64) -> bool {
        if let Some(known) = self.tokens.get_mut(tag) {
            let changed = *known != token;
            *known = token;
            return changed;
        }
        if self.bytes + tag_bytes(tag) > MAX_KNOWN_TAG_BYTES {
            self.clear();
        }
        self.bytes += tag_bytes(tag);
        self.tokens.insert(tag.into(), token);
        true
    }

    fn remove(&mut self, tag: &str) {
        if self.tokens.remove(tag).is_some() {
            self.bytes -= tag_bytes(tag);
        }
    }

    fn clear(&mut self) {
        self.tokens.clear();
        self.bytes = 0;
    }
}

/// How long a tag's token lives in Redis after it was last read or
/// replaced. Entries that outlive it become misses (a new token is made).
pub(crate) const TAG_VERSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The current tokens of tags, as far as this instance knows.
#[derive(Default)]
pub(crate) struct Tags {
    known: Mutex<Known>,
    /// Moves on whenever a token is forgotten: a token read from Redis
    /// before that may be the one the invalidation replaced, so it is used
    /// for that load but not remembered.
    generation: AtomicU64,
    /// Moves on after every change to the remembered tokens, made under
    /// the lock once the change is done: an L1 entry whose tags were found
    /// current at this count is current as long as it has not moved, which
    /// a hit learns with one load instead of the lock and a lookup per tag.
    changes: AtomicU64,
}

/// The keys to read along with an entry, and the tag names they belong to.
pub(crate) struct Probe {
    names: Vec<Box<str>>,
    keys: Vec<String>,
    /// Read before the entry: tokens seen in the read are remembered only
    /// if no token was forgotten since.
    generation: u64,
}

impl Probe {
    /// The version keys to read along with the entry.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }
}

/// A token as stored in Redis (what the `TAG_TOKEN` script in `l2.rs` accepts), or `None`.
fn parse_token(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let token: u64 = text.parse().ok()?;
    (token != 0 && text.len() <= 18 && !text.starts_with('0')).then_some(token)
}

/// The Redis key of a tag's token. It holds a space, which no rendered
/// template can, so it never equals a cached value's key.
pub(crate) fn version_key(namespace: &str, tag: &str) -> String {
    format!("{namespace}:{tag} #tag")
}

/// A new random token: never 0, and at most 18 digits (what the Redis
/// side accepts as a token).
pub(crate) fn new_token() -> u64 {
    fastrand::u64(1..1_000_000_000_000_000_000)
}

impl Tags {
    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, tag: &str) -> Option<u64> {
        self.known().tokens.get(tag).copied()
    }

    /// How many tags are remembered, and the bytes they count for.
    pub(crate) fn footprint(&self) -> (usize, usize) {
        let known = self.known();
        (known.tokens.len(), known.bytes)
    }

    /// Remembers `token` for `tag`, unless a token was forgotten since
    /// `generation` was read (it may be the replaced one).
    fn remember(&self, tag: &str, token: u64, generation: u64) {
        let mut known = self.known();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if known.insert(tag, token) {
            self.changes.fetch_add(1, Ordering::Release);
        }
    }

    /// Forgets a tag's token: the next use reads it again.
    pub(crate) fn forget(&self, tag: &str) {
        let mut known = self.known();
        self.generation.fetch_add(1, Ordering::AcqRel);
        known.remove(tag);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Forgets every token (after the subscription may have missed
    /// messages).
    pub(crate) fn clear(&self) {
        let mut known = self.known();
        self.generation.fetch_add(1, Ordering::AcqRel);
        known.clear();
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Moves a tag on without Redis: a new local token.
    pub(crate) fn replace_locally(&self, tag: &str) {
        self.forget(tag);
        let generation = self.generation.load(Ordering::Acquire);
        self.remember(tag, new_token(), generation);
    }

    /// The current token of `tag`: remembered, or read from Redis (made
    /// there if missing).
    async fn token(&self, store: &Store, tag: &str) -> u64 {
        if let Some(token) = self.get(tag) {
            return token;
        }
        self.read(store, &[tag]).await[0]
    }

    /// Reads tags' tokens from Redis (one round trip for all), and
    /// remembers them unless an invalidation of tags arrived meanwhile.
    ///
    /// Without Redis, or when it does not answer, new local tokens are made
    /// instead of guessing what Redis holds: they match no entry in Redis
    /// (they are misses, and a later read of Redis' tokens replaces them),
    /// so only what this instance loads from now on is served under them,
    /// while invalidation messages keep reaching it (and a lost
    /// subscription forgets every token).
    async fn read(&self, store: &Store, tags: &[&str]) -> Vec<u64> {
        let generation = self.generation.load(Ordering::Acquire);
        let local: Vec<u64> = tags.iter().map(|_| new_token()).collect();
        let tokens = match store.l2() {
            Some(l2) => {
                let keys: Vec<String> = tags
                    .iter()
                    .map(|tag| version_key(store.namespace(), tag))
                    .collect();
                match l2.tag_tokens(&keys, &local, TAG_VERSION_TTL).await {
                    Ok(tokens) if tokens.len() == tags.len() => tokens,
                    _ => local,
                }
            }
            None => local,
        };
        for (tag, token) in tags.iter().zip(&tokens) {
            self.remember(tag, *token, generation);
        }
        tokens
    }

    /// The current tokens of `tags`: remembered ones, and the others read
    /// from Redis in one round trip.
    pub(crate) async fn versions_of(&self, store: &Store, tags: &[&str]) -> Vec<TagVersion> {
        let known: Vec<Option<u64>> = tags.iter().map(|tag| self.get(tag)).collect();
        let unknown: Vec<&str> = tags
            .iter()
            .zip(&known)
            .filter(|(_, token)| token.is_none())
            .map(|(tag, _)| *tag)
            .collect();
        let mut read = if unknown.is_empty() {
            Vec::new()
        } else {
            self.read(store, &unknown).await
        }
        .into_iter();
        tags.iter()
            .zip(known)
            .map(|(tag, token)| {
                let token = token.or_else(|| read.next()).unwrap_or_else(new_token);
                ((*tag).into(), token)
            })
            .collect()
    }

    /// Whether every tag of an L1 entry is still at its stored token, as
    /// far as this instance knows (without asking Redis: a forgotten tag
    /// is not current, and the caller goes on to Redis).
    ///
    /// Found current once, an entry stays current until the remembered
    /// tokens change: the count of changes is read before the check, so a
    /// change during it moves the count past what is noted, and the change
    /// is made before the count moves (under the lock the check takes), so
    /// a check that read the moved count sees the change.
    pub(crate) fn current(&self, stored: &EntryTags) -> bool {
        let changes = self.changes.load(Ordering::Acquire);
        if stored.checked_at.load(Ordering::Relaxed) == changes {
            return true;
        }
        let current = self.all_current(&stored.versions);
        if current {
            stored.checked_at.store(changes, Ordering::Relaxed);
        }
        current
    }

    /// [`current`](Tags::current) without the memo: every tag looked up.
    fn all_current(&self, stored: &[TagVersion]) -> bool {
        if stored.is_empty() {
            return true;
        }
        let known = self.known();
        stored
            .iter()
            .all(|(tag, token)| known.tokens.get(tag) == Some(token))
    }

    /// What to read along with an entry of a load in `context`: its tags'
    /// version keys, so that whether the entry is still current is decided
    /// by what Redis holds at that moment, not by what this instance
    /// remembers (an invalidation message may still be on its way).
    pub(crate) fn probe(&self, store: &Store, context: &Context) -> Probe {
        let names: Vec<Box<str>> = context
            .tags
            .iter()
            .flat_map(|tags| tags.iter().map(|(tag, _)| tag.clone()))
            .collect();
        let keys = match store.l2() {
            Some(_) => names
                .iter()
                .map(|tag| version_key(store.namespace(), tag))
                .collect(),
            None => Vec::new(),
        };
        Probe {
            names,
            keys,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// Whether every tag of an entry read from Redis is still at its stored
    /// token, by the tokens read along with it (`read`, for `probe`'s
    /// keys). A tag the probe did not cover (the entry was stored by a
    /// function with other tags) is read from Redis now.
    pub(crate) async fn still_current(
        &self,
        store: &Store,
        stored: &[TagVersion],
        probe: &Probe,
        read: &[Option<Vec<u8>>],
    ) -> bool {
        for (tag, stored_token) in stored {
            let current = match probe.names.iter().position(|name| name == tag) {
                Some(at) if store.l2().is_some() => {
                    match read
                        .get(at)
                        .and_then(|token| parse_token(token.as_deref()?))
                    {
                        Some(token) => {
                            self.remember(tag, token, probe.generation);
                            token
                        }
                        // Gone (flushed, evicted, expired): forgotten, so the
                        // next load makes a new one; no entry matches.
                        None => {
                            self.forget(tag);
                            return false;
                        }
                    }
                }
                Some(_) => self.token(store, tag).await,
                None => self.read(store, &[tag]).await[0],
            };
            if current != *stored_token {
                return false;
            }
        }
        true
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
    fn a_token_read_across_an_invalidation_is_not_remembered() {
        let tags = Tags::default();
        let before = tags.generation.load(Ordering::Acquire);
        tags.forget("t");
        tags.remember("t", 7, before);
        assert_eq!(tags.get("t"), None);
        let now = tags.generation.load(Ordering::Acquire);
        tags.remember("t", 7, now);
        assert_eq!(tags.get("t"), Some(7));
        tags.clear();
        assert_eq!(tags.get("t"), None);
    }

    #[test]
    fn local_replacement_moves_the_token_and_entries_stop_matching() {
        let tags = Tags::default();
        tags.replace_locally("t");
        let first = tags.get("t").unwrap();
        let entry = entry_tags(&[("t", first)]);
        assert!(tags.current(&entry));
        assert!(tags.current(&entry), "again, from the memo");
        tags.replace_locally("t");
        assert!(!tags.current(&entry));
        assert!(!tags.current(&entry_tags(&[("unknown", first)])));
        assert!(tags.current(&entry_tags(&[])));
    }

    fn entry_tags(versions: &[(&str, u64)]) -> EntryTags {
        EntryTags {
            versions: versions
                .iter()
                .map(|&(tag, token)| (tag.into(), token))
                .collect(),
            checked_at: AtomicU64::new(EntryTags::UNCHECKED),
        }
    }

    /// Every way the remembered tokens change ends an entry's memo, and a
    /// token remembered again unchanged does not.
    #[test]
    fn an_entry_found_current_is_checked_again_after_any_change() {
        let tags = Tags::default();
        let generation = tags.generation.load(Ordering::Acquire);
        tags.remember("a", 1, generation);
        tags.remember("b", 2, generation);
        let entry = entry_tags(&[("a", 1), ("b", 2)]);
        assert!(tags.current(&entry));
        let changes = tags.changes.load(Ordering::Acquire);
        assert_eq!(entry.checked_at.load(Ordering::Relaxed), changes, "noted");
        tags.remember("a", 1, generation);
        assert!(tags.current(&entry), "the same token: no change");
        tags.remember("b", 3, generation);
        assert!(!tags.current(&entry), "a new token");
        tags.remember("b", 2, generation);
        assert!(tags.current(&entry));
        tags.forget("a");
        assert!(!tags.current(&entry), "forgotten");
        let generation = tags.generation.load(Ordering::Acquire);
        tags.remember("a", 1, generation);
        assert!(tags.current(&entry));
        tags.clear();
        assert!(!tags.current(&entry), "cleared");
        // A change to another tag only costs a full check.
        let generation = tags.generation.load(Ordering::Acquire);
        tags.remember("a", 1, generation);
        tags.remember("b", 2, generation);
        assert!(tags.current(&entry));
        tags.remember("other", 9, generation);
        assert!(tags.current(&entry));
    }

    /// Tags of up to 1 KiB used to be bounded by count only (100 000 of
    /// them: 100 MiB).
    #[test]
    fn remembered_tags_are_bounded_by_bytes() {
        let tags = Tags::default();
        let generation = tags.generation.load(Ordering::Acquire);
        let long = "t".repeat(1000);
        for i in 0..20_000 {
            tags.remember(&format!("{long}{i}"), 7, generation);
            let (_, bytes) = tags.footprint();
            assert!(bytes <= MAX_KNOWN_TAG_BYTES, "{bytes} bytes after {i}");
        }
        let (count, bytes) = tags.footprint();
        assert!(count <= MAX_KNOWN_TAG_BYTES / 1000, "{count} tags");
        let text: usize = tags.known().tokens.keys().map(|tag| tag.len()).sum();
        assert_eq!(bytes, text + count * TAG_OVERHEAD);
        // The latest one is remembered (the map started over before it).
        assert_eq!(tags.get(&format!("{long}19999")), Some(7));
        // Forgetting and replacing keep the count right.
        tags.forget(&format!("{long}19999"));
        tags.remember("short", 1, tags.generation.load(Ordering::Acquire));
        tags.remember("short", 2, tags.generation.load(Ordering::Acquire));
        let (count, bytes) = tags.footprint();
        let text: usize = tags.known().tokens.keys().map(|tag| tag.len()).sum();
        assert_eq!(bytes, text + count * TAG_OVERHEAD);
        tags.clear();
        assert_eq!(tags.footprint(), (0, 0));
    }

    #[test]
    fn version_keys_hold_a_space() {
        assert!(version_key("app", "org:7").contains(' '));
    }
}
