//! `toxlink send --json` / `toxlink recv --json`: what a transfer reports as
//! one JSON line on stdout when it ends, successful or not.
//!
//! # Fields
//!
//! | field              | meaning |
//! |--------------------|---------|
//! | `ok`               | the transfer succeeded (exit status 0) |
//! | `role`             | `"send"` or `"recv"` |
//! | `name`, `size`, `sha256` | the offer (`null` before one was made or received) |
//! | `bytes`            | file bytes delivered: on recv, written to the part file; on send, acknowledged by the peer's net_crypto session (the whole size once the receiver reported SAVED) |
//! | `bytes_queued`     | send only: file bytes handed to the send buffer |
//! | `seconds`          | from the start of the command to the report |
//! | `start_unix_ms`    | the start of the command, in ms since the Unix epoch (wall clock): lines up the `*_ms` fields of two processes, or of a process and a test's faults |
//! | `connected_ms`     | ms from the start of the command to when the connection to the peer was up (handshake done, before the friend layer's ONLINE); `null` if it never was. Time to direct UDP = the first `switches` entry whose `to.kind` is `"udp"`, its `at_ms` minus this |
//! | `transfer_seconds` | from the offer (sent or received) to the report |
//! | `max_gap_ms`       | the longest time between two consecutive deliveries (below) |
//! | `deliveries`       | how many delivery moments were seen |
//! | `path_switches`    | changes of the primary path (path events `Primary` with a previous path) |
//! | `paths`            | every path that was primary, in order of first use: `{"kind":"udp","addr":"IP:PORT"}` or `{"kind":"relay","relay":KEY_HEX,"addr":"IP:PORT"}` (the relay's address as given to the node, `null` if unknown) |
//! | `switches`         | the first 64 primary changes: `{"at_ms", "from", "to"}`, `at_ms` since the start of the command |
//! | `relay_links_up`, `relay_links_down` | the node's relay link events (handshake done, link died) |
//! | `error`            | the one-line reason when not `ok`, else `null` |
//!
//! A delivery is, on recv, the arrival of a CHUNK or END packet (the first
//! CHUNK starts the count); on send, a moment at which the number of file
//! bytes acknowledged by the peer grew, sampled every [`SAMPLE_EVERY`]
//! (the gap is therefore exact to about that much). A transfer that fails
//! after its first delivery also counts the time from the last delivery to
//! the failure as a gap. `max_gap_ms` is 0 with fewer than two deliveries.
//!
//! Paths come from the node's path events (`Node::poll_path_event`), which
//! carry the real route (`Route<SocketAddr>`), drained every
//! [`SAMPLE_EVERY`] and once at the end.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use toxlink::toxlink_proto::crypto::PublicKey;
use toxlink::toxlink_proto::node::{PathEventKind, RelayEvent, Route};
use toxlink::Node;

/// How often the send side samples acknowledgements and both sides drain
/// path events.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Primary changes listed in `switches` at most.
const MAX_SWITCH_LOG: usize = 64;

/// Which command reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `toxlink send`.
    Send,
    /// `toxlink recv`.
    Recv,
}

/// The transfer's figures, filled in while it runs and printed once at the
/// end (also when the command fails or is interrupted: the report lives
/// outside the command's future).
#[derive(Debug)]
pub struct Report {
    json: bool,
    role: Role,
    start: Instant,
    /// `start` on the wall clock (ms since the Unix epoch).
    start_unix_ms: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    name: Option<String>,
    size: Option<u64>,
    sha256: Option<[u8; 32]>,
    transfer_start: Option<Instant>,
    bytes: u64,
    bytes_queued: u64,
    deliveries: u64,
    last: Option<Instant>,
    max_gap: Duration,
    relays: Vec<(PublicKey, SocketAddr)>,
    switches: u64,
    used: Vec<Route<SocketAddr>>,
    switch_log: Vec<(Duration, Option<Route<SocketAddr>>, Route<SocketAddr>)>,
    relay_up: u64,
    relay_down: u64,
    connected: Option<Instant>,
}

impl Report {
    /// A report; printed by [`print`](Self::print) only if `json`.
    pub fn new(json: bool, role: Role) -> Report {
        Report {
            json,
            role,
            start: Instant::now(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to the peer is up (the first call counts).
    pub fn connected(&self) {
        self.lock().connected.get_or_insert_with(Instant::now);
    }

    /// The offer was sent or received: the transfer starts now.
    pub fn offer(&self, name: &str, size: u64, sha256: [u8; 32]) {
        let mut g = self.lock();
        g.name = Some(name.to_string());
        g.size = Some(size);
        g.sha256 = Some(sha256);
        g.transfer_start = Some(Instant::now());
    }

    /// The relays the node knows (paths name relays by key only).
    pub fn relays(&self, relays: &[(PublicKey, SocketAddr)]) {
        self.lock().relays = relays.to_vec();
    }

    /// A delivery at `at`: `total` file bytes delivered so far.
    pub fn delivered(&self, at: Instant, total: u64) {
        let mut g = self.lock();
        if let Some(last) = g.last {
            g.max_gap = g.max_gap.max(at.saturating_duration_since(last));
        }
        g.last = Some(at);
        g.deliveries += 1;
        g.bytes = total;
    }

    /// Sets the delivered byte count without a delivery moment (the
    /// receiver confirmed the whole file).
    pub fn set_bytes(&self, total: u64) {
        self.lock().bytes = total;
    }

    /// File bytes handed to the send buffer so far.
    pub fn queued(&self, total: u64) {
        self.lock().bytes_queued = total;
    }

    /// Drains the node's path and relay events (logged at debug level).
    pub fn observe(&self, node: &Node) {
        let mut g = self.lock();
        while let Some(e) = node.poll_path_event() {
            tracing::debug!(peer = %e.peer.to_hex(), route = ?e.addr, kind = ?e.kind, "path event");
            if let PathEventKind::Primary { from } = e.kind {
                if from.is_some() {
                    g.switches += 1;
                }
                for r in from.iter().chain(std::iter::once(&e.addr)) {
                    if !g.used.contains(r) {
                        g.used.push(*r);
                    }
                }
                if g.switch_log.len() < MAX_SWITCH_LOG {
                    let at = e.at.saturating_duration_since(self.start);
                    g.switch_log.push((at, from, e.addr));
                }
            }
        }
        while let Some(e) = node.poll_relay_event() {
            tracing::debug!(event = ?e, "relay event");
            match e {
                RelayEvent::Up { .. } => g.relay_up += 1,
                RelayEvent::Down { .. } => g.relay_down += 1,
                _ => {}
            }
        }
    }

    /// The report as JSON, given how the command ended.
    pub fn to_json(&self, result: &Result<(), String>) -> Value {
        let now = Instant::now();
        let g = self.lock();
        let mut max_gap = g.max_gap;
        if result.is_err() {
            if let Some(last) = g.last {
                max_gap = max_gap.max(now.saturating_duration_since(last));
            }
        }
        let route = |r: &Route<SocketAddr>| -> Value {
            match r {
                Route::Udp(a) => json!({"kind": "udp", "addr": a.to_string()}),
                Route::Relay { relay, .. } => {
                    let addr = g
                        .relays
                        .iter()
                        .find(|(k, _)| k == relay)
                        .map(|(_, a)| a.to_string());
                    json!({"kind": "relay", "relay": relay.to_hex(), "addr": addr})
                }
                other => json!({"kind": format!("{other:?}")}),
            }
        };
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        json!({
            "ok": result.is_ok(),
            "role": match self.role { Role::Send => "send", Role::Recv => "recv" },
            "name": g.name,
            "size": g.size,
            "sha256": g.sha256.map(|h| toxlink_cli::text::hex(&h)),
            "bytes": g.bytes,
            "bytes_queued": match self.role { Role::Send => Some(g.bytes_queued), Role::Recv => None },
            "seconds": ms(now.saturating_duration_since(self.start)) / 1e3,
            "start_unix_ms": self.start_unix_ms,
            "connected_ms": g.connected.map(|t| ms(t.saturating_duration_since(self.start))),
            "transfer_seconds": g.transfer_start.map(|t| ms(now.saturating_duration_since(t)) / 1e3),
            "max_gap_ms": ms(max_gap),
            "deliveries": g.deliveries,
            "path_switches": g.switches,
            "paths": g.used.iter().map(route).collect::<Vec<_>>(),
            "switches": g.switch_log.iter().map(|(at, from, to)| json!({
                "at_ms": ms(*at),
                "from": from.as_ref().map(route),
                "to": route(to),
            })).collect::<Vec<_>>(),
            "relay_links_up": g.relay_up,
            "relay_links_down": g.relay_down,
            "error": result.as_ref().err(),
        })
    }

    /// Prints the JSON line on stdout if `--json` was given.
    pub fn print(&self, result: &Result<(), String>) {
        if self.json {
            println!("{}", self.to_json(result));
        }
    }
}

/// Follows how many of the file bytes handed to the send buffer the peer
/// acknowledged. The session counts unacknowledged packets from the oldest
/// one; our last chunk's number minus that count tells which chunks are
/// acknowledged. A friend-protocol packet queued after our last chunk makes
/// the estimate lag by a packet (never run ahead).
#[derive(Debug, Default)]
pub struct AckTracker {
    /// (packet number, file bytes up to and including it), oldest first.
    pending: std::collections::VecDeque<(u32, u64)>,
    last_number: Option<u32>,
    acked: u64,
}

impl AckTracker {
    /// A chunk went into the send buffer as packet `number`; `total` file
    /// bytes are queued with it.
    pub fn queued(&mut self, number: u32, total: u64) {
        self.pending.push_back((number, total));
        self.last_number = Some(number);
    }

    /// File bytes acknowledged, given the session's count of unacknowledged
    /// packets; `Some` if that grew.
    pub fn sample(&mut self, unacknowledged: u32) -> Option<u64> {
        let last = self.last_number?;
        // Every packet numbered before `first_unacked` is acknowledged.
        let first_unacked = last.wrapping_add(1).wrapping_sub(unacknowledged);
        let before = self.acked;
        while let Some(&(n, total)) = self.pending.front() {
            // Wrapping comparison: n < first_unacked.
            if (first_unacked.wrapping_sub(n) as i32) > 0 {
                self.acked = total;
                self.pending.pop_front();
            } else {
                break;
            }
        }
        (self.acked > before).then_some(self.acked)
    }
}

/// Unacknowledged lossless packets of the session with `peer` (`None` once
/// the session is gone).
pub fn unacknowledged(node: &Node, peer: &PublicKey) -> Option<u32> {
    node.inspect(|n| n.session(peer).map(|s| s.unacknowledged()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_tracker_follows_the_oldest_unacknowledged_packet() {
        let mut t = AckTracker::default();
        assert_eq!(t.sample(0), None, "nothing queued");
        // Packets 10, 11, 12 of 100 bytes each (11 is a friend packet).
        t.queued(10, 100);
        t.queued(12, 200);
        t.queued(13, 300);
        assert_eq!(t.sample(4), None, "10..=13 unacknowledged");
        assert_eq!(t.sample(3), Some(100), "10 acknowledged");
        assert_eq!(t.sample(2), None, "11 is not ours");
        assert_eq!(t.sample(0), Some(300));
        assert_eq!(t.sample(0), None, "no more progress");
        // Across the u32 wrap.
        let mut t = AckTracker::default();
        t.queued(u32::MAX, 1);
        t.queued(0, 2);
        t.queued(1, 3);
        assert_eq!(t.sample(2), Some(1));
        assert_eq!(t.sample(0), Some(3));
    }

    #[test]
    fn gaps_count_between_deliveries_and_to_a_failure() {
        let r = Report::new(true, Role::Recv);
        let t0 = Instant::now();
        r.delivered(t0, 10);
        r.delivered(t0 + Duration::from_millis(30), 20);
        r.delivered(t0 + Duration::from_millis(40), 30);
        let v = r.to_json(&Ok(()));
        assert_eq!(v["max_gap_ms"], 30.0);
        assert_eq!(v["bytes"], 30);
        assert_eq!(v["deliveries"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["bytes_queued"], Value::Null, "recv has no send buffer");
        // A failure long after the last delivery: the trailing gap counts.
        let r = Report::new(true, Role::Send);
        r.delivered(Instant::now() - Duration::from_millis(500), 5);
        let v = r.to_json(&Err("connection closed".into()));
        assert!(v["max_gap_ms"].as_f64().unwrap() >= 500.0, "{v}");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "connection closed");
        assert_eq!(v["role"], "send");
        assert_eq!(v["bytes_queued"], 0);
    }

    #[test]
    fn connected_ms_and_start_unix_ms_line_up_switches_with_the_connection() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let r = Report::new(true, Role::Recv);
        let v = r.to_json(&Ok(()));
        assert_eq!(v["connected_ms"], Value::Null, "not connected yet");
        let start = v["start_unix_ms"].as_u64().expect("start_unix_ms");
        assert!(
            (before..before + 5_000).contains(&start),
            "{start} vs {before}"
        );
        std::thread::sleep(Duration::from_millis(20));
        r.connected();
        let first = r.to_json(&Ok(()))["connected_ms"]
            .as_f64()
            .expect("connected_ms");
        assert!((20.0..5_000.0).contains(&first), "{first}");
        std::thread::sleep(Duration::from_millis(5));
        r.connected();
        let v = r.to_json(&Ok(()));
        assert_eq!(v["connected_ms"], first, "the first connection counts");
        assert_eq!(v["start_unix_ms"], start, "fixed at the start");
    }
}
