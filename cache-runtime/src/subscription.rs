//! The subscription: one pub/sub connection per cache that keeps it
//! subscribed to its invalidation and "filled" channels, and dispatches
//! what arrives: invalidations to this instance's L1 and tag versions,
//! "filled" messages to `lock` waiters.
//!
//! It probes the channel after each (re)subscription, and forgets
//! everything local after a reconnection (messages may have been missed).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use crate::clock::{backoff_delay, now_ms};
use crate::engine::Engine;
use crate::invalidation::{Change, channel, decode_message};
use crate::lock::fill_channel;
use crate::stats::bump;

/// Longest pause between two attempts to subscribe again.
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);

/// Keeps the cache subscribed until it is dropped. Needs Redis configured
/// (does nothing otherwise).
pub(crate) async fn listen(engine: Weak<Engine>, connect_timeout: Duration) {
    let Some((invalidations, fills, l2)) = engine.upgrade().and_then(|engine| {
        let namespace = engine.store.namespace();
        let l2 = engine.store.l2()?.clone();
        let database = l2.database();
        Some((
            channel(namespace, database),
            fill_channel(namespace, database),
            l2,
        ))
    }) else {
        return;
    };
    let mut subscribed_before = false;
    // Started without Redis: whatever this instance cached meanwhile was
    // never checked against other instances' invalidations.
    let mut started_disconnected = !l2.is_connected();
    let mut attempt: u32 = 0;
    loop {
        let subscription = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = l2.pubsub().await?;
            pubsub.subscribe(&[&invalidations, &fills]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscription {
            attempt = 0;
            let Some(cache) = engine.upgrade() else {
                return;
            };
            if subscribed_before || started_disconnected {
                lost_messages(&cache, subscribed_before);
            }
            subscribed_before = true;
            started_disconnected = false;
            cache.channel.send_probe(&cache.store).await;
            drop(cache);
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(cache) = engine.upgrade() else {
                    return;
                };
                let payload = message.get_payload::<String>().ok();
                if message.get_channel_name() == fills {
                    if let Some(payload) = payload {
                        cache.locks.fills().notify(&payload);
                    }
                } else if let Some((sender, changes)) = payload.as_deref().and_then(decode_message)
                {
                    apply(&cache, sender, &changes);
                } else {
                    // Not ours to act on: what it meant cannot be known,
                    // and acting on a guess could only do harm.
                    bump(&cache.store.counters().channel_messages_ignored);
                }
            }
            tracing::warn!("invalidation subscription lost; reconnecting (L1 will be cleared)");
        }
        if engine.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff_delay(attempt, RESUBSCRIBE_MAX_DELAY)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Applies a message from the channel.
fn apply(engine: &Engine, sender: u64, changes: &[Change]) {
    let counters = engine.store.counters();
    counters
        .last_channel_message_ms
        .store(now_ms().max(1), Ordering::Relaxed);
    if engine.channel.is_own(sender) {
        // Our own message: its changes were applied when it was sent.
        if engine.channel.holds_own_probe(changes) {
            counters.channel_verified.store(1, Ordering::Relaxed);
        }
        return;
    }
    // Another instance's start-up probe changes nothing here and is not
    // an invalidation received.
    if changes
        .iter()
        .all(|change| matches!(change, Change::Probe(_)))
    {
        return;
    }
    bump(&counters.invalidations_received);
    for change in changes {
        match change {
            Change::Key(key) => engine.store.drop_local(key),
            Change::Tag(tag) => {
                engine.store.epochs().bump_tags();
                engine.tags.forget(tag);
            }
            Change::Probe(_) => {}
        }
    }
}

/// After a reconnection (or a first connection after starting without
/// Redis): messages may have been missed, so nothing local can be trusted.
fn lost_messages(engine: &Engine, reconnected: bool) {
    if reconnected {
        bump(&engine.store.counters().pubsub_reconnects);
    }
    engine.store.epochs().bump_all();
    engine.tags.clear();
    engine.store.clear_l1();
}
