//! On a Redis Cluster, a circuit breaker per master.
//!
//! One breaker for the whole cluster would let one sick master stop every
//! call: a master that hangs makes each call for its slots wait the whole
//! L2 timeout, those timeouts end in runs, and the breaker opens for the
//! masters that answer too (measured in `tests/cluster.rs`: with one of
//! three masters frozen, over nine calls in ten skipped Redis). So L2 keeps
//! the cluster's slot map as `CLUSTER SLOTS` reports it, and a breaker per
//! master address: a call for a key counts against, and is skipped by, the
//! breaker of the master serving the key's slot. Calls without a key, and
//! keys whose slot the map does not have yet, use the cluster-wide breaker.
//!
//! The map is read when a connection is made, after a call fails or times
//! out (at most once per second), and before each probe of an open
//! master's breaker: after a failover the slots point at the promoted
//! replica (a breaker of its own, closed), and the old master's breaker is
//! dropped once it serves no slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::breaker::{Breaker, Slowness};
use crate::stats::{BreakerState, Gauge};

/// The slots of a cluster.
const SLOTS: u16 = 16384;

/// The fewest seconds between two readings of the slot map after failures.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, when not empty) or of the whole
/// key, modulo 16384, as Redis computes it.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// A master of the cluster and its breaker (shared: one reference count
/// to bump per call).
pub(crate) struct Node {
    /// `host:port`, as `CLUSTER SLOTS` names it.
    pub address: Arc<str>,
    pub breaker: Breaker,
}

impl Node {
    /// The host and port, for routing a command to this node.
    pub(crate) fn host_and_port(&self) -> Option<(String, u16)> {
        let (host, port) = self.address.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    }
}

/// Which master serves which slots, as one reading of the map said:
/// `(first slot, last slot, master's address)` per range, by first slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout(Vec<(u16, u16, Arc<str>)>);

/// A range of slots and the master serving it.
struct SlotRange {
    start: u16,
    end: u16,
    node: Arc<Node>,
}

/// The slot map and a breaker per master (see the module docs).
pub(crate) struct NodeBreakers {
    /// Sorted by `start`; empty until the map was read.
    ranges: ArcSwap<Vec<SlotRange>>,
    threshold: u32,
    cooldown: Duration,
    slowness: Slowness,
    /// When the map was last asked for after a failure.
    last_refresh: Mutex<Option<Instant>>,
}

impl NodeBreakers {
    pub(crate) fn new(threshold: u32, cooldown: Duration, slowness: Slowness) -> NodeBreakers {
        NodeBreakers {
            ranges: ArcSwap::from_pointee(Vec::new()),
            threshold,
            cooldown,
            slowness,
            last_refresh: Mutex::new(None),
        }
    }

    /// The master serving `key`'s slot, as the map last read says; `None`
    /// before the map was read, or for a slot it does not have.
    pub(crate) fn node_of(&self, key: &str) -> Option<Arc<Node>> {
        let slot = slot_of(key);
        let ranges = self.ranges.load();
        let at = ranges.partition_point(|range| range.start <= slot);
        let range = ranges.get(at.checked_sub(1)?)?;
        (slot <= range.end).then(|| range.node.clone())
    }

    /// Replaces the map by a `CLUSTER SLOTS` reply, keeping the breakers
    /// of the masters still in it. False (and the map unchanged) when the
    /// reply does not parse.
    pub(crate) fn update(&self, reply: &redis::Value) -> bool {
        let Some(parsed) = parse_cluster_slots(reply) else {
            return false;
        };
        let mut nodes: HashMap<Arc<str>, Arc<Node>> = self
            .ranges
            .load()
            .iter()
            .map(|range| (range.node.address.clone(), range.node.clone()))
            .collect();
        let mut ranges: Vec<SlotRange> = parsed
            .into_iter()
            .map(|(start, end, address)| {
                let node = nodes
                    .entry(Arc::from(address.as_str()))
                    .or_insert_with_key(|address| {
                        Arc::new(Node {
                            address: address.clone(),
                            breaker: Breaker::new(
                                self.threshold,
                                self.cooldown,
                                self.slowness,
                                // Exported as the worst state of all (see
                                // `worst`), by the periodic gauge refresh.
                                Gauge::default(),
                            ),
                        })
                    })
                    .clone();
                SlotRange { start, end, node }
            })
            .collect();
        ranges.sort_by_key(|range| range.start);
        self.ranges.store(Arc::new(ranges));
        true
    }

    /// The masters in the map, each once (ordered by address), and which
    /// slots each serves: two layouts differ when a slot moved between
    /// them (see `prefix.rs`, which scans every master).
    pub(crate) fn masters(&self) -> (Vec<Arc<Node>>, Layout) {
        let ranges = self.ranges.load();
        let mut masters: Vec<Arc<Node>> = Vec::new();
        for range in ranges.iter() {
            if !masters.iter().any(|known| Arc::ptr_eq(known, &range.node)) {
                masters.push(range.node.clone());
            }
        }
        masters.sort_by(|a, b| a.address.cmp(&b.address));
        let layout = ranges
            .iter()
            .map(|range| (range.start, range.end, range.node.address.clone()))
            .collect();
        (masters, Layout(layout))
    }

    /// Whether `address` serves any slot in the map.
    pub(crate) fn serves(&self, address: &str) -> bool {
        self.ranges
            .load()
            .iter()
            .any(|range| &*range.node.address == address)
    }

    /// True at most once per [`REFRESH_INTERVAL`]: whether to read the map
    /// again after a failure.
    pub(crate) fn refresh_due(&self) -> bool {
        let mut last = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The worst state of the masters' breakers: `Open` when any is open,
    /// `HalfOpen` when any is being probed, `Closed` otherwise.
    pub(crate) fn worst(&self) -> BreakerState {
        let mut worst = BreakerState::Closed;
        for range in self.ranges.load().iter() {
            match range.node.breaker.state() {
                BreakerState::Open => return BreakerState::Open,
                BreakerState::HalfOpen => worst = BreakerState::HalfOpen,
                _ => {}
            }
        }
        worst
    }
}

/// `(start, end, "host:port" of the master)` per range of a `CLUSTER
/// SLOTS` reply; `None` when it is not shaped like one.
fn parse_cluster_slots(reply: &redis::Value) -> Option<Vec<(u16, u16, String)>> {
    use redis::Value;
    let int = |value: &Value| match value {
        Value::Int(int) => u16::try_from(*int).ok(),
        _ => None,
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let (host, port) = (text(master.first()?)?, int(master.get(1)?)?);
            (start <= end && end < SLOTS).then(|| (start, end, format!("{host}:{port}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn breakers() -> NodeBreakers {
        NodeBreakers::new(
            5,
            Duration::from_secs(1),
            Slowness {
                duration: Duration::from_millis(100),
                rate: 0.5,
            },
        )
    }

    fn master(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"0123abcd".to_vec()),
        ])
    }

    fn slots(ranges: &[(i64, i64, i64)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port)| {
                    Value::Array(vec![
                        Value::Int(start),
                        Value::Int(end),
                        master("127.0.0.1", port),
                        master("127.0.0.1", port + 3),
                    ])
                })
                .collect(),
        )
    }

    #[test]
    fn slots_match_the_cluster_specification() {
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(
            slot_of("foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % SLOTS
        );
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
        assert_eq!(slot_of("foo{bar}{zap}"), slot_of("bar"));
        assert_eq!(slot_of("{app:user:1} #lock"), slot_of("app:user:1"));
    }

    #[test]
    fn keys_find_the_master_of_their_slot_and_keep_its_breaker() {
        let nodes = breakers();
        assert!(nodes.node_of("app:user:1").is_none(), "no map yet");
        assert!(nodes.update(&slots(&[
            (0, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7003)
        ])));
        let slot = slot_of("app:user:1");
        let expected = match slot {
            0..=5460 => "127.0.0.1:7001",
            5461..=10922 => "127.0.0.1:7002",
            _ => "127.0.0.1:7003",
        };
        let node = nodes.node_of("app:user:1").unwrap();
        assert_eq!(&*node.address, expected);
        assert_eq!(
            node.host_and_port(),
            Some(("127.0.0.1".to_owned(), expected[10..].parse().unwrap()))
        );

        // A new reading keeps a surviving master's breaker (and its state).
        for _ in 0..5 {
            node.breaker.record(crate::breaker::Call::Failed);
        }
        assert_eq!(nodes.worst(), BreakerState::Open);
        assert!(nodes.update(&slots(&[
            (0, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7003)
        ])));
        assert!(Arc::ptr_eq(&nodes.node_of("app:user:1").unwrap(), &node));

        // After a failover its slots point at another master, closed.
        let moved: Vec<(i64, i64, i64)> =
            [(0, 5460, 7001), (5461, 10922, 7002), (10923, 16383, 7003)]
                .into_iter()
                .map(|(start, end, port)| {
                    let port = if expected.ends_with(&port.to_string()) {
                        7006
                    } else {
                        port
                    };
                    (start, end, port)
                })
                .collect();
        assert!(nodes.update(&slots(&moved)));
        assert_eq!(
            &*nodes.node_of("app:user:1").unwrap().address,
            "127.0.0.1:7006"
        );
        assert!(!nodes.serves(expected));
        assert_eq!(nodes.worst(), BreakerState::Closed);
    }

    #[test]
    fn masters_are_listed_once_with_the_slots_they_serve() {
        let nodes = breakers();
        assert!(nodes.masters().0.is_empty(), "no map yet");
        assert!(nodes.update(&slots(&[
            (0, 100, 7002),
            (101, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7003)
        ])));
        let (masters, before) = nodes.masters();
        let addresses: Vec<&str> = masters.iter().map(|node| &*node.address).collect();
        assert_eq!(
            addresses,
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert_eq!(nodes.masters().1, before, "the same map, the same layout");
        assert!(nodes.update(&slots(&[
            (0, 101, 7002),
            (102, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7003)
        ])));
        assert_ne!(nodes.masters().1, before, "slot 101 moved");
    }

    #[test]
    fn replies_not_shaped_like_cluster_slots_change_nothing() {
        let nodes = breakers();
        assert!(nodes.update(&slots(&[(0, 16383, 7001)])));
        for reply in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            slots(&[(0, 16384, 7001)]),
            slots(&[(10, 5, 7001)]),
        ] {
            assert!(!nodes.update(&reply), "{reply:?}");
        }
        assert_eq!(&*nodes.node_of("x").unwrap().address, "127.0.0.1:7001");
    }

    #[test]
    fn refreshes_after_failures_are_spaced() {
        let nodes = breakers();
        assert!(nodes.refresh_due());
        assert!(!nodes.refresh_due());
    }
}
