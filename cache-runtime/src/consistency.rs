//! Consistency tokens: read-your-writes across instances.
//!
//! After a write on instance A returns, A has dropped its own copies, Redis
//! holds the new state, and every other instance drops its L1 copies when
//! A's invalidation message reaches it, one pub/sub delivery later. A client
//! whose next request lands on instance B inside that window could get B's
//! old L1 copy. A [`ConsistencyToken`] closes the window for that client:
//! the write's response hands it out, the client presents it, and a read
//! run inside [`ConsistencyToken::scope`] serves from L1 only when this
//! instance can prove it has applied every message the token names;
//! otherwise it reads Redis (or loads), which already hold the write.
//!
//! # What a token names
//!
//! Each cache numbers the messages it publishes on its channel (one
//! PUBLISH at a time, so Redis delivers them in number order, and a
//! message that Redis did not take goes out again inside the next one: see
//! `invalidation.rs`). A token is a short list of marks `(channel, sender,
//! number)`: "the message `number` of `sender` on `channel`, and every
//! change that sender published before it". An instance has caught up with
//! a mark when it has received a message of that sender numbered at least
//! that high, or when the mark is its own. Heartbeats are numbered
//! messages too, so an instance catches up within about one heartbeat
//! interval even when the writer publishes nothing else.
//!
//! Marks of another channel (another namespace or database) are ignored
//! by a cache: they concern another cache's entries. A mark of an instance
//! that has stopped since (or of an in-process-only cache elsewhere) is
//! never caught up with: reads under it go to Redis or the body, which is
//! never wrong, only slower, for as long as the client presents it.
//!
//! No crate imports: the task-local scope and the token's text form live
//! here; the channel (`invalidation.rs`) hands out marks and checks them.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most marks a token carries: one per instance the client wrote
/// through recently. Past it the mark updated longest ago is dropped.
pub const MAX_MARKS: usize = 8;

/// The longest token text [`ConsistencyToken::from_str`] reads.
const MAX_TEXT_LEN: usize = MAX_MARKS * 48;

/// One cache's message number: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Mark {
    /// The channel (a digest of its name: namespace and database).
    pub channel: u32,
    /// The publishing cache's identity on the channel.
    pub sender: u64,
    /// The number of a message of `sender`.
    pub seq: u64,
}

/// What a later read must be at least as new as: the writes a client made
/// (or saw made), on any instance.
///
/// Get one from [`Cache::consistency_token`](crate::Cache::consistency_token)
/// after a write returns, hand it to the client (a cookie or a header: its
/// text form is short, URL- and cookie-safe), and run the client's later
/// reads inside [`scope`](ConsistencyToken::scope) with the token it
/// presents. `cache_runtime::http::read_your_writes` (feature `axum`) does
/// all of this for an axum app in one layer.
///
/// A token from an untrusted client can only cost this instance some L1
/// hits (reads that go to Redis instead), never serve wrong data: parsing
/// is strict and bounded, and malformed text reads as no token.
///
/// # Example
///
/// ```
/// use cache_runtime::{Cache, ConsistencyToken, cached, invalidates};
///
/// #[cached(key = "user:<id>", ttl = 300, cache = cache, skip(cache))]
/// async fn user(cache: &Cache, id: u64) -> String {
///     format!("user {id}") // the database query
/// }
///
/// #[invalidates(key = "user:<id>", cache = cache)]
/// async fn rename(cache: &Cache, id: u64) {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().build().await.unwrap();
/// rename(&cache, 7).await;
/// // The write's response carries this text (header or cookie)...
/// let text = cache.consistency_token().to_string();
///
/// // ...and a later request presents it: its reads are at least as new
/// // as the write, on whichever instance serves it.
/// let token: ConsistencyToken = text.parse().unwrap_or_default();
/// let name = token.scope(user(&cache, 7)).await;
/// assert_eq!(name, "user 7");
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    /// At most one mark per (channel, sender), the one updated last at the
    /// end.
    marks: Vec<Mark>,
}

tokio::task_local! {
    /// The token the reads of this task must honour.
    static READ_AFTER: ConsistencyToken;
}

/// How many [`ConsistencyToken::scope`]s run now: while none does, the L1
/// hit path does not even look at the task-local.
static SCOPES: AtomicUsize = AtomicUsize::new(0);

impl ConsistencyToken {
    pub(crate) fn from_mark(mark: Mark) -> ConsistencyToken {
        ConsistencyToken { marks: vec![mark] }
    }

    /// Whether the token names no write.
    ///
    /// # Example
    ///
    /// ```
    /// use cache_runtime::ConsistencyToken;
    ///
    /// assert!(ConsistencyToken::default().is_empty());
    /// assert!("not a token".parse::<ConsistencyToken>().is_err());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Adds what `other` names: afterwards the token asks for at least what
    /// either asked for (up to 8 instances; the mark updated
    /// longest ago is dropped first).
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cache_runtime::{Cache, ConsistencyToken};
    ///
    /// let cache = Cache::builder().build().await.unwrap();
    /// let mut token = ConsistencyToken::default();
    /// token.merge(&cache.consistency_token());
    /// assert_eq!(token, cache.consistency_token());
    /// # }
    /// ```
    pub fn merge(&mut self, other: &ConsistencyToken) {
        for mark in &other.marks {
            let same = |kept: &Mark| kept.channel == mark.channel && kept.sender == mark.sender;
            let seq = match self.marks.iter().position(same) {
                Some(at) => self.marks.remove(at).seq.max(mark.seq),
                None => mark.seq,
            };
            self.marks.push(Mark { seq, ..*mark });
        }
        if self.marks.len() > MAX_MARKS {
            let excess = self.marks.len() - MAX_MARKS;
            self.marks.drain(..excess);
        }
    }

    /// Runs `future` with this token: each `#[cached]` read in it serves
    /// from L1 only when its cache has applied every write the token names,
    /// and otherwise reads Redis or runs its body. Applies to the reads
    /// that run in this task (not in tasks it spawns). An empty token
    /// changes nothing. Nested scopes: the innermost applies.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cache_runtime::ConsistencyToken;
    ///
    /// let answer = ConsistencyToken::default().scope(async { 42 }).await;
    /// assert_eq!(answer, 42);
    /// # }
    /// ```
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        if self.is_empty() {
            return future.await;
        }
        struct Running;
        impl Drop for Running {
            fn drop(&mut self) {
                SCOPES.fetch_sub(1, Ordering::Relaxed);
            }
        }
        SCOPES.fetch_add(1, Ordering::Relaxed);
        let _running = Running;
        READ_AFTER.scope(self, future).await
    }

    /// The marks, for the channel to check.
    pub(crate) fn marks(&self) -> &[Mark] {
        &self.marks
    }
}

/// Whether the reads of this task may serve from L1, as `caught_up`
/// judges the token in scope (true without one).
#[inline]
pub(crate) fn l1_allowed(caught_up: impl FnOnce(&ConsistencyToken) -> bool) -> bool {
    if SCOPES.load(Ordering::Relaxed) == 0 {
        return true;
    }
    READ_AFTER.try_with(caught_up).unwrap_or(true)
}

impl fmt::Display for ConsistencyToken {
    /// Marks joined by `.`, each `<channel: 8 hex>-<sender: 16 hex>-<number>`:
    /// URL-, header- and cookie-safe.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, mark) in self.marks.iter().enumerate() {
            if at > 0 {
                f.write_str(".")?;
            }
            write!(f, "{:08x}-{:016x}-{}", mark.channel, mark.sender, mark.seq)?;
        }
        Ok(())
    }
}

/// Why text is not a [`ConsistencyToken`].
///
/// # Example
///
/// ```
/// use cache_runtime::ConsistencyToken;
///
/// let error = "0-0".parse::<ConsistencyToken>().unwrap_err();
/// assert!(error.to_string().contains("consistency token"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError;

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed consistency token")
    }
}

impl std::error::Error for TokenError {}

impl FromStr for ConsistencyToken {
    type Err = TokenError;

    /// Reads the text form ([`Display`](fmt::Display)); the empty string is
    /// the empty token. Anything else (too long, more than 8
    /// marks, a malformed mark) is an error.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_TEXT_LEN || text.split('.').count() > MAX_MARKS {
            return Err(TokenError);
        }
        let mut token = ConsistencyToken::default();
        if text.is_empty() {
            return Ok(token);
        }
        for part in text.split('.') {
            let mut fields = part.split('-');
            let (Some(channel), Some(sender), Some(seq), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(TokenError);
            };
            let hex = |field: &str, len: usize| {
                (field.len() == len && field.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u64::from_str_radix(field, 16).ok())
                    .flatten()
            };
            let (Some(channel), Some(sender)) = (hex(channel, 8), hex(sender, 16)) else {
                return Err(TokenError);
            };
            if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TokenError);
            }
            let seq: u64 = seq.parse().map_err(|_| TokenError)?;
            token.merge(&ConsistencyToken::from_mark(Mark {
                channel: u32::try_from(channel).map_err(|_| TokenError)?,
                sender,
                seq,
            }));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(channel: u32, sender: u64, seq: u64) -> Mark {
        Mark {
            channel,
            sender,
            seq,
        }
    }

    #[test]
    fn text_round_trips_and_garbage_is_refused() {
        let mut token = ConsistencyToken::from_mark(mark(0xdead_beef, 0x0123_4567_89ab_cdef, 42));
        token.merge(&ConsistencyToken::from_mark(mark(1, 2, u64::MAX)));
        let text = token.to_string();
        assert_eq!(
            text,
            "deadbeef-0123456789abcdef-42.00000001-0000000000000002-18446744073709551615"
        );
        assert_eq!(text.parse::<ConsistencyToken>(), Ok(token));
        assert_eq!(
            "".parse::<ConsistencyToken>(),
            Ok(ConsistencyToken::default())
        );
        for garbage in [
            "x",
            "deadbeef-0123456789abcdef",
            "deadbeef-0123456789abcdef-",
            "deadbeef-0123456789abcdef-1-2",
            "deadbee-0123456789abcdef-1",
            "deadbeef-0123456789abcdeg-1",
            "deadbeef-0123456789abcdef-+1",
            "deadbeef-0123456789abcdef-18446744073709551616",
            "deadbeef-0123456789abcdef-1.",
            ".deadbeef-0123456789abcdef-1",
            "deadbeef-0123456789abcdef-1 ",
        ] {
            assert_eq!(
                garbage.parse::<ConsistencyToken>(),
                Err(TokenError),
                "{garbage:?}"
            );
        }
        let nine: Vec<String> = (0..9)
            .map(|sender| ConsistencyToken::from_mark(mark(1, sender, 1)).to_string())
            .collect();
        assert!(nine.join(".").parse::<ConsistencyToken>().is_err());
        assert!("1".repeat(10_000).parse::<ConsistencyToken>().is_err());
    }

    #[test]
    fn merging_keeps_the_highest_number_per_sender_and_at_most_eight_senders() {
        let mut token = ConsistencyToken::from_mark(mark(1, 1, 5));
        token.merge(&ConsistencyToken::from_mark(mark(1, 1, 3)));
        token.merge(&ConsistencyToken::from_mark(mark(2, 1, 1)));
        assert_eq!(token.marks(), [mark(1, 1, 5), mark(2, 1, 1)]);
        for sender in 10..20 {
            token.merge(&ConsistencyToken::from_mark(mark(1, sender, sender)));
        }
        assert_eq!(token.marks().len(), MAX_MARKS);
        assert_eq!(token.marks()[0], mark(1, 12, 12), "the oldest went first");
        assert_eq!(token.marks()[MAX_MARKS - 1], mark(1, 19, 19));
    }

    #[tokio::test]
    async fn the_scope_is_seen_by_its_task_only_while_it_runs() {
        assert!(l1_allowed(|_| false), "no scope: L1 allowed");
        let token = ConsistencyToken::from_mark(mark(1, 1, 1));
        token
            .clone()
            .scope(async {
                assert!(!l1_allowed(|seen| {
                    assert_eq!(seen.marks(), [mark(1, 1, 1)]);
                    false
                }));
                assert!(l1_allowed(|_| true));
                let other_task = tokio::spawn(async { l1_allowed(|_| false) });
                assert!(other_task.await.unwrap(), "spawned tasks are outside");
            })
            .await;
        assert!(l1_allowed(|_| false));
    }
}
