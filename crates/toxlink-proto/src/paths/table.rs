//! The path table of one connection: its paths, which lossless packet went on
//! which path(s), and what acknowledgements and losses say about each path.
//!
//! Invariants:
//! * every in-flight record names the path copies it was sent on; a record
//!   leaves the table when its packet is acknowledged (or the caller forgets
//!   it), never before, so a packet is never forgotten while unacknowledged;
//! * per path, in-flight copies are kept in send order, so "the oldest copy
//!   sent after the newest proof" — the input of the health reducer — is the
//!   front of the path's queue after loss detection;
//! * loss is attributed to a path only from that path's own evidence: a later
//!   copy on the same path was acknowledged while an earlier one was not.
//!
//! Memory is bounded by the caller's send window: one record per
//! unacknowledged lossless packet and one queue entry per path copy.

use super::health::{Health, HealthConfig, PathHealth};
use super::PathKey;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Most copies of one packet the table records (a packet goes on at most two
/// paths at once; a resend may add more).
const MAX_COPIES: usize = 4;

/// A packet sent before a later-acknowledged one on the same path by more
/// than this is declared lost on that path (reordering tolerance).
const REORDER_WINDOW: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
struct Copy_ {
    path: usize,
    sent_at: Instant,
    /// Sent more than once on this path.
    resent: bool,
}

#[derive(Debug, Clone)]
struct InFlight {
    copies: [Option<Copy_>; MAX_COPIES],
    bytes: usize,
}

impl InFlight {
    fn copies(&self) -> impl Iterator<Item = &Copy_> {
        self.copies.iter().flatten()
    }
}

/// One path of the table.
#[derive(Debug, Clone)]
pub struct PathEntry {
    key: PathKey,
    health: PathHealth,
    /// (packet number, send time) of copies on this path, in send order.
    queue: VecDeque<(u32, Instant)>,
    bytes_in_flight: usize,
    bytes_sent: u64,
    packets_sent: u64,
    last_state: Health,
    removed: bool,
}

impl PathEntry {
    /// The path's key.
    pub fn key(&self) -> PathKey {
        self.key
    }

    /// Its health facts.
    pub fn health(&self) -> &PathHealth {
        &self.health
    }

    /// Bytes of unacknowledged packets on it.
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Totals: bytes and packets sent on it.
    pub fn sent(&self) -> (u64, u64) {
        (self.bytes_sent, self.packets_sent)
    }

    /// The state last reported by [`PathTable::poll_changes`].
    pub fn state(&self) -> Health {
        self.last_state
    }
}

/// A health change of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// Which path.
    pub key: PathKey,
    /// From.
    pub old: Health,
    /// To.
    pub new: Health,
    /// When it died: the unacknowledged packets that were in flight on it and
    /// on no live path, to resend at once elsewhere. Empty otherwise.
    pub resend: Vec<u32>,
}

/// The path table of one connection.
#[derive(Debug, Clone, Default)]
pub struct PathTable {
    paths: Vec<PathEntry>,
    in_flight: BTreeMap<u32, InFlight>,
    cfg: HealthConfig,
}

impl PathTable {
    /// An empty table.
    pub fn new(cfg: HealthConfig) -> Self {
        PathTable {
            paths: Vec::new(),
            in_flight: BTreeMap::new(),
            cfg,
        }
    }

    /// The health configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    fn index(&self, key: &PathKey) -> Option<usize> {
        self.paths.iter().position(|p| !p.removed && p.key == *key)
    }

    /// Adds a path (or re-opens one that was closed); returns false if it
    /// was already there and open.
    pub fn add_path(&mut self, key: PathKey) -> bool {
        if let Some(i) = self.index(&key) {
            let p = &mut self.paths[i];
            if p.health.is_closed() {
                p.health.on_reopened();
                p.last_state = Health::Unproven;
                return true;
            }
            return false;
        }
        // Reuse a removed slot so indices in in-flight records stay valid for
        // live paths; removed slots have empty queues.
        let entry = PathEntry {
            key,
            health: PathHealth::default(),
            queue: VecDeque::new(),
            bytes_in_flight: 0,
            bytes_sent: 0,
            packets_sent: 0,
            last_state: Health::Unproven,
            removed: false,
        };
        if let Some(i) = self.paths.iter().position(|p| p.removed) {
            self.paths[i] = entry;
        } else {
            self.paths.push(entry);
        }
        true
    }

    /// Live paths.
    pub fn paths(&self) -> impl Iterator<Item = &PathEntry> {
        self.paths.iter().filter(|p| !p.removed)
    }

    /// One path.
    pub fn path(&self, key: &PathKey) -> Option<&PathEntry> {
        self.index(key).map(|i| &self.paths[i])
    }

    /// Records that lossless packet `number` (`bytes` long) was sent on
    /// `path` at `now`. Unknown paths are ignored.
    pub fn on_sent(&mut self, now: Instant, path: &PathKey, number: u32, bytes: usize) {
        let Some(i) = self.index(path) else {
            return;
        };
        let rec = self.in_flight.entry(number).or_insert(InFlight {
            copies: [None; MAX_COPIES],
            bytes,
        });
        // Replace this path's older copy, else take a free slot, else the
        // oldest slot.
        if let Some(c) = rec.copies.iter_mut().flatten().find(|c| c.path == i) {
            // Sent again on the same path: the first copy's send time stays
            // (a path must not look fresh because we keep re-sending on it
            // into a black hole), and the acknowledgement will not be an RTT
            // sample (we cannot tell which transmission it answers).
            c.resent = true;
            let p = &mut self.paths[i];
            p.bytes_sent += bytes as u64;
            p.packets_sent += 1;
            return;
        }
        let slot = rec.copies.iter().position(Option::is_none).unwrap_or(0);
        if let Some(old) = rec.copies[slot] {
            let p = &mut self.paths[old.path];
            p.bytes_in_flight = p.bytes_in_flight.saturating_sub(rec.bytes);
            p.queue.retain(|(n, _)| *n != number);
        }
        rec.copies[slot] = Some(Copy_ {
            path: i,
            sent_at: now,
            resent: false,
        });
        let p = &mut self.paths[i];
        p.queue.push_back((number, now));
        p.bytes_in_flight += bytes;
        p.bytes_sent += bytes as u64;
        p.packets_sent += 1;
    }

    /// An authenticated packet arrived on `path`.
    pub fn on_received(&mut self, now: Instant, path: &PathKey) {
        if let Some(i) = self.index(path) {
            self.paths[i].health.on_received(now);
        }
    }

    /// A probe sent on `path` at `sent_at` was echoed: a delivery proof with
    /// an RTT sample that uses no packet number.
    pub fn on_probe_echo(&mut self, now: Instant, path: &PathKey, sent_at: Instant) {
        if let Some(i) = self.index(path) {
            self.paths[i].health.on_delivered(now, sent_at, true);
        }
    }

    /// An authenticated packet arrived on `path` that acknowledged a lossless
    /// packet we sent at `sent_at` (so the peer created it after that): the
    /// path delivered something fresh. This reverse-direction evidence
    /// proves a path only while it is unproven or dead (a probe on a slower
    /// path is overtaken, retransmitted elsewhere and so acknowledged
    /// ambiguously: without this, a slower path could never be proven); it
    /// never refreshes a path already proven, so a path that fails in our
    /// direction only still times out once it carries traffic. No RTT
    /// sample.
    pub fn on_reverse_proof(&mut self, now: Instant, path: &PathKey, sent_at: Instant) {
        let Some(i) = self.index(path) else {
            return;
        };
        let h = self.paths[i]
            .health
            .health(now, self.oldest_unproven(i), &self.cfg);
        if matches!(h, Health::Unproven | Health::Dead) && !self.paths[i].health.is_closed() {
            self.paths[i].health.on_delivered(now, sent_at, false);
        }
    }

    /// When lossless packet `number` was first sent (on any path), if it is
    /// still tracked.
    pub fn first_sent(&self, number: u32) -> Option<Instant> {
        self.in_flight
            .get(&number)
            .and_then(|r| r.copies().map(|c| c.sent_at).min())
    }

    /// Lossless packet `number` was acknowledged by the peer. If it went on
    /// one path only, that path gets a delivery proof with an RTT sample and
    /// earlier packets still unacknowledged on it are counted lost there. If
    /// copies went on several paths the acknowledgement is ambiguous: the
    /// copies are cleared without proof or loss verdict (only sole packets,
    /// e.g. the node's probes, prove a path).
    pub fn on_acked(&mut self, now: Instant, number: u32) {
        let Some(rec) = self.in_flight.remove(&number) else {
            return;
        };
        let sole = rec.copies().count() == 1;
        if !sole {
            // Ambiguous: some copy arrived, we cannot tell which, so no path
            // earns a proof or a loss verdict (a black-holed path must not
            // be kept alive by copies that went through another one). A path
            // already under suspicion (suspect or dead) keeps the copy in its
            // queue as unproven: clearing it would make the path look
            // healthy again although nothing proved it (a black-holed
            // primary whose packets are also copied on a relay flapped back
            // and forth, and its stranded packets were never resent). The
            // entry leaves the queue with the path's next proof (it is then
            // not counted lost: it was acknowledged) or when the path dies.
            let suspected: Vec<bool> = rec
                .copies()
                .map(|c| {
                    let h = self.paths[c.path].health.health(
                        now,
                        self.oldest_unproven(c.path),
                        &self.cfg,
                    );
                    matches!(h, Health::Suspect | Health::Dead)
                })
                .collect();
            for (c, suspect) in rec.copies().zip(suspected) {
                let p = &mut self.paths[c.path];
                if !suspect {
                    if let Some(pos) = p.queue.iter().position(|(n, _)| *n == number) {
                        p.queue.remove(pos);
                    }
                }
                p.bytes_in_flight = p.bytes_in_flight.saturating_sub(rec.bytes);
            }
            return;
        }
        let in_flight = &self.in_flight;
        for c in rec.copies() {
            let p = &mut self.paths[c.path];
            p.health.on_delivered(now, c.sent_at, sole && !c.resent);
            // Copies are queued in send order: older copies at the front that
            // were sent clearly before this one are lost on this path. They
            // stay in flight globally (another copy may still arrive), but
            // this path no longer waits for them.
            let mut freed = rec.bytes;
            while let Some(&(n, t)) = p.queue.front() {
                if n == number || t + REORDER_WINDOW >= c.sent_at {
                    break;
                }
                p.queue.pop_front();
                // An entry already acknowledged (ambiguously, kept as
                // unproven) is not a loss and holds no bytes any more.
                if let Some(r) = in_flight.get(&n) {
                    p.health.on_lost();
                    freed += r.bytes;
                }
            }
            if let Some(pos) = p.queue.iter().position(|(n, _)| *n == number) {
                p.queue.remove(pos);
            }
            p.bytes_in_flight = p.bytes_in_flight.saturating_sub(freed);
        }
    }

    /// The caller no longer tracks packet `number` (e.g. the connection's
    /// send buffer dropped it): forget it without any verdict.
    pub fn forget(&mut self, number: u32) {
        if let Some(rec) = self.in_flight.remove(&number) {
            for c in rec.copies() {
                let p = &mut self.paths[c.path];
                p.queue.retain(|(n, _)| *n != number);
                p.bytes_in_flight = p.bytes_in_flight.saturating_sub(rec.bytes);
            }
        }
    }

    /// The transport closed `path` (TCP reset, relay gone, route offline).
    pub fn on_closed(&mut self, now: Instant, path: &PathKey) {
        if let Some(i) = self.index(path) {
            self.paths[i].health.on_closed(now);
        }
    }

    /// Removes a path for good (after it was reported dead).
    pub fn remove_path(&mut self, path: &PathKey) {
        if let Some(i) = self.index(path) {
            for (n, _) in std::mem::take(&mut self.paths[i].queue) {
                if let Some(rec) = self.in_flight.get_mut(&n) {
                    for c in rec.copies.iter_mut() {
                        if c.is_some_and(|c| c.path == i) {
                            *c = None;
                        }
                    }
                }
            }
            self.paths[i].removed = true;
            self.paths[i].bytes_in_flight = 0;
        }
    }

    fn oldest_unproven(&self, i: usize) -> Option<Instant> {
        let p = &self.paths[i];
        let proof = p.health.newest_proof_sent();
        // The queue is in send order (`on_sent` appends at `now`, which never
        // goes back), so a binary search finds the first entry sent after the
        // proof: O(log n) on the per-transmit path.
        let k = p
            .queue
            .partition_point(|&(_, t)| proof.is_some_and(|pr| t <= pr));
        p.queue.get(k).map(|&(_, t)| t)
    }

    /// Health of `path` at `now`.
    pub fn health(&self, now: Instant, path: &PathKey) -> Option<Health> {
        let i = self.index(path)?;
        Some(
            self.paths[i]
                .health
                .health(now, self.oldest_unproven(i), &self.cfg),
        )
    }

    /// The earliest time a path's health changes by itself.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        (0..self.paths.len())
            .filter(|&i| !self.paths[i].removed)
            .filter_map(|i| {
                self.paths[i]
                    .health
                    .next_change(now, self.oldest_unproven(i), &self.cfg)
            })
            .min()
    }

    /// Re-evaluates every path and returns the changes since the last call.
    /// A path that just died hands back the packets that were in flight on it
    /// and on no other live path, oldest first, for immediate resending.
    pub fn poll_changes(&mut self, now: Instant) -> Vec<PathChange> {
        let mut changes = Vec::new();
        for i in 0..self.paths.len() {
            if self.paths[i].removed {
                continue;
            }
            let new = self.paths[i]
                .health
                .health(now, self.oldest_unproven(i), &self.cfg);
            let old = self.paths[i].last_state;
            if new == old {
                continue;
            }
            self.paths[i].last_state = new;
            if new == Health::Dead {
                if let Some(t0) = self.oldest_unproven(i) {
                    self.paths[i].health.on_declared_dead(t0);
                }
            }
            let resend = if new == Health::Dead {
                self.take_stranded(now, i)
            } else {
                Vec::new()
            };
            changes.push(PathChange {
                key: self.paths[i].key,
                old,
                new,
                resend,
            });
        }
        changes
    }

    /// Packets in flight on path `i` with no copy on a live, non-dead path.
    /// They leave path `i`'s queue (it is not waiting for them any more) but
    /// stay in flight until acknowledged.
    fn take_stranded(&mut self, now: Instant, i: usize) -> Vec<u32> {
        let queue = std::mem::take(&mut self.paths[i].queue);
        self.paths[i].bytes_in_flight = 0;
        let mut out = Vec::new();
        for (n, _) in queue {
            let Some(rec) = self.in_flight.get(&n) else {
                continue;
            };
            let elsewhere = rec.copies().any(|c| {
                c.path != i
                    && !self.paths[c.path].removed
                    && self.paths[c.path].health.health(
                        now,
                        self.oldest_unproven(c.path),
                        &self.cfg,
                    ) != Health::Dead
            });
            if !elsewhere {
                out.push(n);
            }
        }
        out
    }

    /// Unacknowledged packets whose every copy is on a dead or removed path:
    /// what must be resent now if the caller missed a change.
    pub fn stranded(&self, now: Instant) -> Vec<u32> {
        self.in_flight
            .iter()
            .filter(|(_, rec)| {
                rec.copies().all(|c| {
                    self.paths[c.path].removed
                        || self.paths[c.path].health.health(
                            now,
                            self.oldest_unproven(c.path),
                            &self.cfg,
                        ) == Health::Dead
                })
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Number of unacknowledged packets tracked.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::test_util::{ms, relay, table_with, udp};

    #[test]
    fn acks_prove_paths_and_measure_rtt() {
        let t = Instant::now();
        let mut tab = PathTable::new(HealthConfig::default());
        assert!(tab.add_path(relay(1)));
        assert!(!tab.add_path(relay(1)));
        tab.on_sent(t, &relay(1), 0, 100);
        assert_eq!(tab.path(&relay(1)).unwrap().bytes_in_flight(), 100);
        assert_eq!(tab.health(t, &relay(1)), Some(Health::Unproven));
        tab.on_acked(t + ms(30), 0);
        assert_eq!(tab.health(t + ms(30), &relay(1)), Some(Health::Healthy));
        let p = tab.path(&relay(1)).unwrap();
        assert_eq!(p.health().rtt().srtt(), Some(ms(30)));
        assert_eq!(p.bytes_in_flight(), 0);
        assert_eq!(tab.in_flight_len(), 0);
    }

    #[test]
    fn duplicated_packets_prove_no_path() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1), udp()]);
        tab.on_sent(t, &relay(1), 5, 100);
        tab.on_sent(t, &udp(), 5, 100);
        tab.on_acked(t + ms(10), 5);
        for k in [relay(1), udp()] {
            let p = tab.path(&k).unwrap();
            assert!(p.health().newest_proof_sent().is_none(), "ambiguous");
            assert_eq!(p.health().rtt().srtt(), None);
            assert_eq!(p.bytes_in_flight(), 0);
        }
        assert_eq!(tab.in_flight_len(), 0);
        // A black-holed path is not kept alive by copies delivered elsewhere.
        tab.on_sent(t + ms(20), &udp(), 6, 100);
        tab.on_acked(t + ms(30), 6);
        for n in 7..40u32 {
            let at = t + ms(30 + u64::from(n) * 10);
            tab.on_sent(at, &relay(1), n, 100);
            tab.on_sent(at, &udp(), n, 100);
            tab.on_acked(at + ms(10), n);
        }
        assert_eq!(tab.health(t + ms(3000), &relay(1)), Some(Health::Unproven));
        assert_eq!(tab.health(t + ms(3000), &udp()), Some(Health::Healthy));
    }

    #[test]
    fn a_suspect_path_is_not_cleared_by_copies_acked_elsewhere() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1), udp()]);
        for (n, k) in [(0u32, udp()), (1, relay(1))] {
            tab.on_sent(t, &k, n, 100);
            tab.on_acked(t + ms(10), n);
        }
        // UDP black-holes: packet 2 goes on UDP alone and is not acked; it
        // becomes suspect.
        tab.on_sent(t + ms(20), &udp(), 2, 100);
        let suspect_at = t + ms(20 + 150);
        assert_eq!(tab.health(suspect_at, &udp()), Some(Health::Suspect));
        // Packet 2 is resent on the relay and acknowledged (ambiguously);
        // from then on every packet is copied on both paths and acked (the
        // relay copies arrive): UDP must not look healthy again, and dies.
        tab.on_sent(suspect_at, &relay(1), 2, 100);
        tab.on_acked(suspect_at + ms(10), 2);
        assert_eq!(
            tab.health(suspect_at + ms(10), &udp()),
            Some(Health::Suspect)
        );
        for n in 3..100u32 {
            let at = suspect_at + ms(u64::from(n) * 10);
            tab.on_sent(at, &relay(1), n, 100);
            tab.on_sent(at, &udp(), n, 100);
            tab.on_acked(at + ms(10), n);
            assert_ne!(
                tab.health(at + ms(10), &udp()),
                Some(Health::Healthy),
                "#{n}"
            );
        }
        assert_eq!(
            tab.health(suspect_at + ms(1000), &udp()),
            Some(Health::Dead)
        );
        // A later proof of its own clears the kept entries without counting
        // them lost (they were acknowledged).
        let lost = tab.path(&udp()).unwrap().health().loss().totals();
        tab.on_sent(t + ms(2000), &udp(), 200, 100);
        tab.on_acked(t + ms(2010), 200);
        assert_eq!(tab.health(t + ms(2010), &udp()), Some(Health::Healthy));
        let after = tab.path(&udp()).unwrap().health().loss().totals();
        assert_eq!(after.1, lost.1);
    }

    #[test]
    fn resending_into_a_black_hole_does_not_refresh_the_path() {
        let t = Instant::now();
        let mut tab = table_with(&[udp()]);
        tab.on_sent(t, &udp(), 0, 10);
        tab.on_acked(t + ms(10), 0);
        tab.on_sent(t + ms(20), &udp(), 1, 10);
        // Retransmitted on the same path every 100 ms: still dead in time.
        for k in 1..10u64 {
            tab.on_sent(t + ms(20 + 100 * k), &udp(), 1, 10);
        }
        assert_eq!(tab.health(t + ms(20 + 1000), &udp()), Some(Health::Dead));
        // An acknowledgement of a re-sent packet proves but gives no RTT.
        let mut tab2 = table_with(&[udp()]);
        tab2.on_sent(t, &udp(), 7, 10);
        tab2.on_sent(t + ms(300), &udp(), 7, 10);
        tab2.on_acked(t + ms(310), 7);
        assert_eq!(tab2.health(t + ms(310), &udp()), Some(Health::Healthy));
        assert_eq!(tab2.path(&udp()).unwrap().health().rtt().srtt(), None);
    }

    #[test]
    fn reverse_proof_only_proves_unproven_or_dead_paths() {
        let t = Instant::now();
        let mut tab = table_with(&[udp(), relay(1)]);
        tab.on_reverse_proof(t + ms(50), &udp(), t);
        assert_eq!(tab.health(t + ms(50), &udp()), Some(Health::Healthy));
        // A healthy path in a black hole is not refreshed by it.
        tab.on_sent(t + ms(60), &udp(), 1, 10);
        tab.on_reverse_proof(t + ms(900), &udp(), t + ms(800));
        assert_eq!(tab.health(t + ms(1100), &udp()), Some(Health::Dead));
        let c = tab.poll_changes(t + ms(1100));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].new, Health::Dead);
        assert_eq!(c[0].resend, vec![1]);
        // Dead: a fresh reverse proof revives it; an old one does not.
        tab.on_reverse_proof(t + ms(1200), &udp(), t + ms(30));
        assert_eq!(tab.health(t + ms(1200), &udp()), Some(Health::Dead));
        tab.on_reverse_proof(t + ms(1300), &udp(), t + ms(1250));
        assert_eq!(tab.health(t + ms(1300), &udp()), Some(Health::Healthy));
        // A closed path stays dead.
        tab.on_closed(t + ms(1400), &relay(1));
        tab.on_reverse_proof(t + ms(1500), &relay(1), t + ms(1450));
        assert_eq!(tab.health(t + ms(1500), &relay(1)), Some(Health::Dead));
    }

    #[test]
    fn a_timed_out_path_stays_dead_until_a_later_packet_is_proven() {
        let t = Instant::now();
        let mut tab = table_with(&[udp()]);
        tab.on_sent(t, &udp(), 0, 10);
        tab.on_acked(t + ms(10), 0);
        tab.on_sent(t + ms(20), &udp(), 1, 10);
        let c = tab.poll_changes(t + ms(2000));
        assert_eq!(c.last().map(|c| c.new), Some(Health::Dead));
        assert_eq!(c.last().map(|c| c.resend.clone()), Some(vec![1]));
        // Nothing in flight any more, yet still dead.
        assert_eq!(tab.health(t + ms(2100), &udp()), Some(Health::Dead));
        assert!(tab.poll_changes(t + ms(2100)).is_empty());
        // A probe sent later and acknowledged revives it.
        tab.on_sent(t + ms(2200), &udp(), 2, 10);
        tab.on_acked(t + ms(2210), 2);
        assert_eq!(tab.health(t + ms(2210), &udp()), Some(Health::Healthy));
        // Packet 1 (resent elsewhere) acknowledged late proves nothing now.
        tab.on_acked(t + ms(2300), 1);
        assert_eq!(tab.health(t + ms(2300), &udp()), Some(Health::Healthy));
    }

    #[test]
    fn loss_is_attributed_to_the_path_that_lost() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1), relay(2)]);
        tab.on_sent(t, &relay(1), 1, 10);
        tab.on_sent(t + ms(1), &relay(2), 2, 10);
        tab.on_sent(t + ms(10), &relay(1), 3, 10);
        tab.on_acked(t + ms(20), 3);
        tab.on_acked(t + ms(21), 2);
        assert_eq!(
            tab.path(&relay(1)).unwrap().health().loss().totals(),
            (1, 1)
        );
        assert_eq!(
            tab.path(&relay(2)).unwrap().health().loss().totals(),
            (1, 0)
        );
        // Packet 1 is still unacknowledged globally, but relay 1 no longer
        // waits for it.
        assert_eq!(tab.in_flight_len(), 1);
        assert_eq!(tab.path(&relay(1)).unwrap().bytes_in_flight(), 0);
    }

    #[test]
    fn black_hole_kills_the_path_and_hands_back_its_packets() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1), relay(2)]);
        tab.on_sent(t, &relay(1), 0, 10);
        tab.on_acked(t + ms(10), 0);
        assert_eq!(tab.poll_changes(t + ms(10)).len(), 1, "unproven -> healthy");
        // Black hole from here on: packets 1..=20 never acknowledged.
        for n in 1..=20u32 {
            tab.on_sent(t + ms(10 + u64::from(n)), &relay(1), n, 10);
        }
        // Relay 2 carries packet 21 too, alive.
        tab.on_sent(t + ms(40), &relay(2), 21, 10);
        tab.on_sent(t + ms(40), &relay(1), 21, 10);
        let to = tab.poll_timeout(t + ms(31)).unwrap();
        assert_eq!(to, t + ms(11) + ms(100), "suspect after one RTO");
        let c = tab.poll_changes(to);
        assert_eq!(c[0].new, Health::Suspect);
        let dead_at = tab.poll_timeout(to).unwrap();
        assert_eq!(dead_at, t + ms(11) + ms(400));
        let c: Vec<_> = tab
            .poll_changes(dead_at)
            .into_iter()
            .filter(|c| c.key == relay(1))
            .collect();
        assert_eq!(c[0].new, Health::Dead);
        // 21 has a copy on relay 2, which is not dead yet: not stranded.
        assert_eq!(c[0].resend, (1..=20).collect::<Vec<u32>>());
        assert_eq!(tab.path(&relay(1)).unwrap().bytes_in_flight(), 0);
        assert_eq!(tab.in_flight_len(), 21, "still unacknowledged");
    }

    #[test]
    fn reset_is_dead_at_once_and_everything_on_it_is_resent() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1)]);
        for n in 0..5 {
            tab.on_sent(t, &relay(1), n, 10);
        }
        tab.on_closed(t + ms(1), &relay(1));
        let c = tab.poll_changes(t + ms(1));
        assert_eq!(c[0].new, Health::Dead);
        assert_eq!(c[0].resend, vec![0, 1, 2, 3, 4]);
        assert_eq!(tab.stranded(t + ms(1)), vec![0, 1, 2, 3, 4]);
        tab.remove_path(&relay(1));
        assert!(tab.path(&relay(1)).is_none());
        assert_eq!(tab.stranded(t + ms(1)), vec![0, 1, 2, 3, 4]);
        // Resent on a new path and acknowledged: gone.
        tab.add_path(relay(2));
        for n in 0..5 {
            tab.on_sent(t + ms(2), &relay(2), n, 10);
            tab.on_acked(t + ms(5), n);
        }
        assert_eq!(tab.in_flight_len(), 0);
        assert!(tab.stranded(t + ms(5)).is_empty());
    }

    #[test]
    fn reopen_after_close() {
        let t = Instant::now();
        let mut tab = table_with(&[udp()]);
        tab.on_closed(t, &udp());
        assert_eq!(tab.health(t, &udp()), Some(Health::Dead));
        assert!(tab.add_path(udp()));
        assert_eq!(tab.health(t, &udp()), Some(Health::Unproven));
    }

    #[test]
    fn forget_drops_without_verdict() {
        let t = Instant::now();
        let mut tab = table_with(&[udp()]);
        tab.on_sent(t, &udp(), 9, 10);
        tab.forget(9);
        assert_eq!(tab.in_flight_len(), 0);
        assert_eq!(tab.path(&udp()).unwrap().health().loss().totals(), (0, 0));
        assert_eq!(tab.health(t + ms(5000), &udp()), Some(Health::Unproven));
    }
}
