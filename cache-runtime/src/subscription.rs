//! The subscription: one pub/sub connection per cache that keeps it
//! subscribed to its invalidation and "filled" channels, and dispatches
//! what arrives: invalidations to this instance's L1 and tag versions,
//! "filled" messages to `lock` waiters.
//!
//! It probes the channel after each (re)subscription and then every
//! `heartbeat_interval` (the heartbeat), and forgets everything local after
//! a reconnection (messages may have been missed).
//!
//! # Silence
//!
//! A pub/sub connection can stop delivering without closing (a proxy or
//! NAT that dropped the flow, a half-open TCP connection): nothing fails,
//! and invalidations are lost until entries expire. The heartbeat is a
//! probe through the invalidation channel itself, so it takes the path
//! invalidations take. When one that Redis took has not come back after
//! [`SILENCE_INTERVALS`] intervals, while Redis still takes the later ones
//! ([`Watchdog`]), the subscription is treated as dropped: L1 is cleared at
//! once, the connection is replaced, and it is counted
//! (`channel_silences`). While Redis takes no heartbeat at all (down,
//! frozen, breaker open) nothing is concluded: other instances cannot
//! publish invalidations either, and L1 serving through an outage is the
//! point of the in-process tier. Silence is noticed at most about
//! `SILENCE_INTERVALS + 1` intervals after it began. The heartbeat runs in
//! this task, never on a caller's path.

use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::clock::{backoff_delay, now_ms};
use crate::engine::Engine;
use crate::invalidation::{Change, Message, channel, decode_message};
use crate::lock::fill_channel;
use crate::logging::Throttle;
use crate::prefix::tombstone_loads_in_flight;
use crate::stats::bump;

/// Longest pause between two attempts to subscribe again.
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);

/// Heartbeat intervals a heartbeat Redis took may take to come back before
/// the subscription counts as silent. Three leave room for a loaded
/// machine or a slow network (a heartbeat normally comes back within a
/// millisecond) while noticing a silence within about four intervals.
const SILENCE_INTERVALS: u32 = 3;

/// How long a heartbeat may take to come back, with heartbeats every
/// `interval`: the [`Watchdog`]'s window, and how recently one must have
/// come back for `Stats::channel_verified`.
pub(crate) fn silence_window(interval: Duration) -> Duration {
    interval.saturating_mul(SILENCE_INTERVALS)
}

/// Whether this cache's own heartbeats still come back through its
/// subscription, from when they were published and when they arrived.
#[derive(Debug)]
struct Watchdog {
    /// How long a heartbeat may take to come back.
    window: Duration,
    /// When the earliest heartbeat Redis took that has not come back was
    /// sent.
    oldest_unseen: Option<Instant>,
    /// When one of this cache's heartbeats last came back.
    last_seen: Option<Instant>,
}

impl Watchdog {
    fn new(interval: Duration) -> Watchdog {
        Watchdog {
            window: silence_window(interval),
            oldest_unseen: None,
            last_seen: None,
        }
    }

    /// One of this cache's heartbeats came back at `now`.
    fn seen(&mut self, now: Instant) {
        self.oldest_unseen = None;
        self.last_seen = Some(now);
    }

    /// Redis took the heartbeat sent at `sent` (its PUBLISH answered at
    /// `now`). True when the subscription is silent: a heartbeat Redis
    /// took at least a window ago never came back, and Redis answers.
    fn published(&mut self, sent: Instant, now: Instant) -> bool {
        if self.last_seen.is_some_and(|seen| seen >= sent) {
            return false; // Back before Redis' answer was.
        }
        match self.oldest_unseen {
            None => {
                self.oldest_unseen = Some(sent);
                false
            }
            Some(oldest) => now.saturating_duration_since(oldest) >= self.window,
        }
    }
}

/// Why a subscription ended.
enum Ended {
    /// The connection closed.
    Closed,
    /// It stopped delivering without closing (see [`Watchdog`]).
    Silent,
}

/// A heartbeat on its way: when it was sent, and whether Redis took it.
type Beat = Pin<Box<dyn Future<Output = (Instant, bool)> + Send>>;

/// Keeps the cache subscribed until it is dropped. Needs Redis configured
/// (does nothing otherwise).
pub(crate) async fn listen(engine: Weak<Engine>, connect_timeout: Duration) {
    let Some((invalidations, fills, l2, interval)) = engine.upgrade().and_then(|engine| {
        let namespace = engine.store.namespace();
        let l2 = engine.store.l2()?.clone();
        let database = l2.database();
        Some((
            channel(namespace, database),
            fill_channel(namespace, database),
            l2,
            engine.channel.heartbeat_interval(),
        ))
    }) else {
        return;
    };
    let mut subscribed_before = false;
    // Started without Redis: whatever this instance cached meanwhile was
    // never checked against other instances' invalidations.
    let mut started_disconnected = !l2.is_connected();
    let mut attempt: u32 = 0;
    let silence_log = Throttle::default();
    loop {
        let subscription = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = l2.pubsub().await?;
            pubsub.subscribe(&[&invalidations, &fills]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscription {
            attempt = 0;
            {
                let Some(cache) = engine.upgrade() else {
                    return;
                };
                if subscribed_before || started_disconnected {
                    lost_messages(&cache, subscribed_before);
                }
            }
            subscribed_before = true;
            started_disconnected = false;
            let mut messages = pubsub.into_on_message();
            let mut watchdog = Watchdog::new(interval);
            // The first tick is at once: the start-up probe.
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beat: Option<Beat> = None;
            let ended = loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else {
                            break Ended::Closed;
                        };
                        let Some(cache) = engine.upgrade() else {
                            return;
                        };
                        let payload = message.get_payload::<String>().ok();
                        if message.get_channel_name() == fills {
                            if let Some(payload) = payload {
                                cache.locks.fills().notify(&payload);
                            }
                        } else if let Some(message) =
                            payload.as_deref().and_then(decode_message)
                        {
                            if apply(&cache, &message) {
                                watchdog.seen(Instant::now());
                            }
                        } else {
                            // Not ours to act on: what it meant cannot be
                            // known, and acting on a guess could only do harm.
                            bump(&cache.store.counters().channel_messages_ignored);
                        }
                    }
                    _ = ticks.tick(), if beat.is_none() => {
                        let Some(cache) = engine.upgrade() else {
                            return;
                        };
                        beat = Some(Box::pin(async move {
                            let sent = Instant::now();
                            let taken = cache.channel.send_probe(&cache.store).await.is_ok();
                            (sent, taken)
                        }));
                    }
                    (sent, taken) = async { beat.as_mut().expect("guarded").await }, if beat.is_some() => {
                        beat = None;
                        if taken && watchdog.published(sent, Instant::now()) {
                            break Ended::Silent;
                        }
                    }
                }
            };
            drop(beat);
            drop(messages); // Closes the connection.
            match ended {
                Ended::Closed => tracing::warn!(
                    "invalidation subscription lost; reconnecting (L1 will be cleared)"
                ),
                Ended::Silent => {
                    let Some(cache) = engine.upgrade() else {
                        return;
                    };
                    bump(&cache.store.counters().channel_silences);
                    // Messages were missed for a while already: forget
                    // now, not only once subscribed again.
                    lost_messages(&cache, false);
                    if let Some(suppressed) = silence_log.admit() {
                        tracing::warn!(
                            window = ?interval.saturating_mul(SILENCE_INTERVALS),
                            suppressed,
                            "invalidation subscription silent (heartbeats taken by Redis did not come back); L1 cleared, subscribing again"
                        );
                    }
                }
            }
        }
        if engine.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff_delay(attempt, RESUBSCRIBE_MAX_DELAY)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Applies a message from the channel. True when it was this cache's own
/// probe (a heartbeat come back).
fn apply(engine: &Engine, message: &Message) -> bool {
    let counters = engine.store.counters();
    counters
        .last_channel_message_ms
        .store(now_ms().max(1), Ordering::Relaxed);
    let changes = &message.changes;
    if engine.channel.is_own(message.sender) {
        // Our own message: its changes were applied when it was sent.
        if engine.channel.holds_own_probe(changes) {
            counters.heartbeat_seen.record_now();
            return true;
        }
        return false;
    }
    // Another instance's probe changes nothing here and is not an
    // invalidation received; its number still counts (below).
    if !changes
        .iter()
        .all(|change| matches!(change, Change::Probe(_)))
    {
        bump(&counters.invalidations_received);
    }
    for change in changes {
        match change {
            Change::Key(key) => engine.store.drop_local(key),
            Change::Prefix(prefix) => {
                engine.store.drop_local_prefix(prefix);
                tombstone_loads_in_flight(engine, prefix);
            }
            Change::Tag(tag) => {
                engine.store.epochs().bump_tags();
                engine.tags.forget(tag);
            }
            Change::Everything => forget_local(engine),
            Change::Probe(_) => {}
        }
    }
    // Applied: readers holding a token up to this number may use L1.
    engine.channel.received(message.sender, message.seq);
    false
}

/// After a reconnection (or a first connection after starting without
/// Redis): messages may have been missed, so nothing local can be trusted.
fn lost_messages(engine: &Engine, reconnected: bool) {
    if reconnected {
        bump(&engine.store.counters().pubsub_reconnects);
    }
    forget_local(engine);
}

/// Forgets everything local: L1, tag versions, and in-flight loads' right
/// to fill L1.
fn forget_local(engine: &Engine) {
    engine.store.epochs().bump_all();
    engine.tags.clear();
    engine.store.clear_l1();
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    fn at(start: Instant, intervals: f64) -> Instant {
        start + INTERVAL.mul_f64(intervals)
    }

    #[test]
    fn heartbeats_that_come_back_are_never_silence() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(INTERVAL);
        for beat in 0..100 {
            let sent = at(start, f64::from(beat));
            // Back before or after Redis' answer: both count.
            if beat % 2 == 0 {
                watchdog.seen(sent + Duration::from_millis(1));
                assert!(!watchdog.published(sent, sent + Duration::from_millis(2)));
            } else {
                assert!(!watchdog.published(sent, sent + Duration::from_millis(1)));
                watchdog.seen(sent + Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn silence_is_noticed_once_a_taken_heartbeat_is_a_window_late() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(INTERVAL);
        watchdog.seen(at(start, 0.0));
        // Muted from 0.5 on: the heartbeats of 1, 2 and 3 never come back.
        for beat in 1..4 {
            let sent = at(start, f64::from(beat));
            assert!(!watchdog.published(sent, sent), "beat {beat}");
        }
        // The one of 4 is answered three intervals after the one of 1.
        assert!(watchdog.published(at(start, 4.0), at(start, 4.0)));
    }

    #[test]
    fn a_late_heartbeat_within_the_window_is_not_silence() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(INTERVAL);
        assert!(!watchdog.published(at(start, 0.0), at(start, 0.0)));
        assert!(!watchdog.published(at(start, 1.0), at(start, 1.0)));
        assert!(!watchdog.published(at(start, 2.0), at(start, 2.9)));
        watchdog.seen(at(start, 2.95)); // the first one, very late
        assert!(!watchdog.published(at(start, 3.0), at(start, 3.0)));
        assert!(!watchdog.published(at(start, 4.0), at(start, 4.0)));
    }

    /// Heartbeats Redis did not take (down, frozen, breaker open) are not
    /// reported to the watchdog: however long Redis answers nothing, the
    /// verdict waits for the next heartbeat it takes.
    #[test]
    fn silence_is_concluded_only_when_redis_answers_again() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(INTERVAL);
        assert!(!watchdog.published(at(start, 0.0), at(start, 0.0)));
        // A minute without an answer, then one: the heartbeat of 0 never
        // came back although Redis took it, so that is silence.
        assert!(watchdog.published(at(start, 60.0), at(start, 60.0)));
        // Whereas one that came back before the outage leaves nothing owed.
        let mut watchdog = Watchdog::new(INTERVAL);
        assert!(!watchdog.published(at(start, 0.0), at(start, 0.0)));
        watchdog.seen(at(start, 0.1));
        assert!(!watchdog.published(at(start, 60.0), at(start, 60.0)));
    }
}
