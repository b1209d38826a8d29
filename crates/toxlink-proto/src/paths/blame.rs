//! Relay blame and framing protection (docs/DESIGN.md §3, "Tampering", "Framing").
//!
//! A net_crypto packet that arrives through relay R on peer P's route and
//! fails authentication is evidence against R — or against P, who can send
//! garbage through a good relay on purpose. So:
//!
//! * failures are counted per (relay, peer) in a sliding window; past a small
//!   threshold R is dropped **for P only** ([`Verdict::DropForPeer`]) and the
//!   owner is asked to self-probe R ([`Verdict::SelfProbe`]); the drop lasts
//!   [`BlameConfig::drop_for`], then P's failures through R count afresh;
//! * R is disconnected **for everyone** ([`Verdict::Disconnect`]) only on our
//!   own evidence: failed self-probes (we route to ourselves through R with a
//!   second key and check the authenticated echoes: only R touched them). A
//!   friend's word never does it, however many friends say it — drops from
//!   any number of peers (k colluding friends, or one person with k keys)
//!   only ask for self-probes, one at a time. (The owner's own link to R
//!   failing is the other kind of own evidence; the relay pool handles it.)
//! * a passed self-probe clears R's probe record: a friend framing R can hurt
//!   only its own connection to us.
//!
//! Memory is bounded: at most `max_records` (relay, peer) records are kept,
//! the stalest evicted first (expired drops before live ones), and at most
//! `max_relays` relay records (ones not disconnected nor being probed
//! first).

use crate::crypto::PublicKey;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Blame parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlameConfig {
    /// Failures within `window` that drop a relay for one peer.
    pub peer_threshold: usize,
    /// Sliding window for counting failures.
    pub window: Duration,
    /// How long a relay stays dropped for one peer (then that peer's
    /// failures through it count afresh; the relay pool excludes it for as
    /// long, `PoolConfig::tamper_exclusion`).
    pub drop_for: Duration,
    /// Failed self-probes (within `window`) that disconnect a relay.
    pub self_probe_failures: usize,
    /// Most (relay, peer) records kept.
    pub max_records: usize,
    /// Most relay records kept.
    pub max_relays: usize,
}

impl Default for BlameConfig {
    fn default() -> Self {
        BlameConfig {
            peer_threshold: 3,
            window: Duration::from_secs(10),
            drop_for: Duration::from_secs(1800),
            self_probe_failures: 2,
            max_records: 4096,
            max_relays: 256,
        }
    }
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Nothing yet.
    Keep,
    /// Stop using `relay` for `peer` and replace it (as if it went offline).
    DropForPeer {
        /// The relay.
        relay: PublicKey,
        /// The peer whose traffic it failed.
        peer: PublicKey,
    },
    /// Check `relay` with a self-probe.
    SelfProbe {
        /// The relay.
        relay: PublicKey,
    },
    /// Disconnect `relay` for every peer and replace it.
    Disconnect {
        /// The relay.
        relay: PublicKey,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Why a relay is disconnected for everyone: only ever our own evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Our own probes through it came back forged or not at all.
    SelfProbeFailed,
}

#[derive(Debug, Clone, Default)]
struct Record {
    failures: VecDeque<Instant>,
    /// Dropped for the peer since.
    dropped: Option<Instant>,
    last: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct RelayRecord {
    probe_failures: VecDeque<Instant>,
    probing: bool,
    disconnected: bool,
    /// Peers that dropped it (diagnostics only: never a verdict).
    drops: u64,
    last: Option<Instant>,
}

/// The blame ledger of one node.
#[derive(Debug, Clone, Default)]
pub struct BlameLedger {
    cfg: BlameConfig,
    pairs: HashMap<(PublicKey, PublicKey), Record>,
    relays: HashMap<PublicKey, RelayRecord>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > window)
    {
        q.pop_front();
    }
}

impl BlameLedger {
    /// A ledger with these parameters.
    pub fn new(cfg: BlameConfig) -> Self {
        BlameLedger {
            cfg,
            ..Default::default()
        }
    }

    /// A packet from `peer` through `relay` failed authentication. Returns
    /// what to do: [`Verdict::Keep`], or a drop for this peer followed by a
    /// self-probe request (unless one is under way). Never a disconnection:
    /// a peer's word is not our evidence.
    pub fn on_auth_failure(
        &mut self,
        now: Instant,
        relay: PublicKey,
        peer: PublicKey,
    ) -> Vec<Verdict> {
        self.evict_if_full(now);
        let cfg = self.cfg;
        let rec = self.pairs.entry((relay, peer)).or_default();
        rec.last = Some(now);
        if let Some(at) = rec.dropped {
            if now.saturating_duration_since(at) < cfg.drop_for {
                return vec![];
            }
            // The drop is over: count afresh.
            rec.dropped = None;
            rec.failures.clear();
        }
        rec.failures.push_back(now);
        prune(&mut rec.failures, now, cfg.window);
        if rec.failures.len() < cfg.peer_threshold {
            return vec![Verdict::Keep];
        }
        rec.dropped = Some(now);
        self.evict_relay_if_full(&relay);
        let r = self.relays.entry(relay).or_default();
        r.drops = r.drops.saturating_add(1);
        r.last = Some(now);
        let mut out = vec![Verdict::DropForPeer { relay, peer }];
        if !r.disconnected && !r.probing {
            r.probing = true;
            out.push(Verdict::SelfProbe { relay });
        }
        out
    }

    /// A packet from `peer` through `relay` authenticated: nothing is
    /// forgiven (a corrupting relay passes most packets), but the record is
    /// kept fresh.
    pub fn on_auth_success(&mut self, now: Instant, relay: PublicKey, peer: PublicKey) {
        if let Some(r) = self.pairs.get_mut(&(relay, peer)) {
            r.last = Some(now);
        }
    }

    /// Result of one self-probe through `relay`: `ok` = our echo came back
    /// authenticated; `false` = forged or missing.
    pub fn on_self_probe(&mut self, now: Instant, relay: PublicKey, ok: bool) -> Verdict {
        let cfg = self.cfg;
        self.evict_relay_if_full(&relay);
        let r = self.relays.entry(relay).or_default();
        r.last = Some(now);
        if r.disconnected {
            return Verdict::Keep;
        }
        if ok {
            // Proven good: the failures came from the peers themselves. They
            // keep their own drops; the relay stays for everyone else.
            r.probe_failures.clear();
            r.probing = false;
            return Verdict::Keep;
        }
        r.probe_failures.push_back(now);
        prune(&mut r.probe_failures, now, cfg.window);
        if r.probe_failures.len() >= cfg.self_probe_failures {
            r.disconnected = true;
            r.probing = false;
            return Verdict::Disconnect {
                relay,
                reason: DisconnectReason::SelfProbeFailed,
            };
        }
        Verdict::SelfProbe { relay }
    }

    /// The self-probe asked for could not start (no address of our own, or
    /// too many runs): the next drop may ask again.
    pub fn probe_not_started(&mut self, relay: &PublicKey) {
        if let Some(r) = self.relays.get_mut(relay) {
            r.probing = false;
        }
    }

    /// Whether `relay` is dropped for `peer` (or for everyone). A drop whose
    /// `drop_for` is over still reads as one until the peer's next failure
    /// through the relay starts the count afresh.
    pub fn is_dropped_for(&self, relay: &PublicKey, peer: &PublicKey) -> bool {
        self.pairs
            .get(&(*relay, *peer))
            .is_some_and(|r| r.dropped.is_some())
            || self.is_disconnected(relay)
    }

    /// How many peer drops `relay` has had (never a verdict by itself).
    pub fn drops(&self, relay: &PublicKey) -> u64 {
        self.relays.get(relay).map_or(0, |r| r.drops)
    }

    /// Whether `relay` was disconnected for everyone.
    pub fn is_disconnected(&self, relay: &PublicKey) -> bool {
        self.relays.get(relay).is_some_and(|r| r.disconnected)
    }

    /// Failures counted for (relay, peer) in the current window.
    pub fn failures(&self, relay: &PublicKey, peer: &PublicKey) -> usize {
        self.pairs
            .get(&(*relay, *peer))
            .map_or(0, |r| r.failures.len())
    }

    /// Forget a relay entirely (e.g. a fresh relay with the same key after a
    /// long time); the peer drops are forgotten too.
    pub fn forgive(&mut self, relay: &PublicKey) {
        self.relays.remove(relay);
        self.pairs.retain(|(r, _), _| r != relay);
    }

    fn evict_if_full(&mut self, now: Instant) {
        if self.pairs.len() < self.cfg.max_records {
            return;
        }
        // Evict the stalest record that is not a live drop (drops must stick
        // for as long as they last).
        let drop_for = self.cfg.drop_for;
        if let Some(k) = self
            .pairs
            .iter()
            .filter(|(_, r)| {
                r.dropped
                    .is_none_or(|t| now.saturating_duration_since(t) >= drop_for)
            })
            .min_by_key(|(_, r)| r.last)
            .map(|(k, _)| *k)
        {
            self.pairs.remove(&k);
        } else if let Some(k) = self
            .pairs
            .iter()
            .min_by_key(|(_, r)| r.last)
            .map(|(k, _)| *k)
        {
            self.pairs.remove(&k);
        }
    }

    fn evict_relay_if_full(&mut self, relay: &PublicKey) {
        if self.relays.len() < self.cfg.max_relays.max(1) || self.relays.contains_key(relay) {
            return;
        }
        // The stalest record that is neither disconnected nor being probed,
        // else the stalest.
        let stalest = |quiet: bool| {
            self.relays
                .iter()
                .filter(|(_, r)| !quiet || (!r.disconnected && !r.probing))
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| *k)
        };
        if let Some(k) = stalest(true).or_else(|| stalest(false)) {
            self.relays.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::test_util::{ms, pk};

    #[test]
    fn a_corrupting_relay_is_dropped_for_the_peer_and_probed() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        assert_eq!(l.on_auth_failure(t, pk(1), pk(10)), vec![Verdict::Keep]);
        assert_eq!(
            l.on_auth_failure(t + ms(1), pk(1), pk(10)),
            vec![Verdict::Keep]
        );
        let v = l.on_auth_failure(t + ms(2), pk(1), pk(10));
        assert_eq!(
            v,
            vec![
                Verdict::DropForPeer {
                    relay: pk(1),
                    peer: pk(10)
                },
                Verdict::SelfProbe { relay: pk(1) }
            ]
        );
        assert!(l.is_dropped_for(&pk(1), &pk(10)));
        assert!(!l.is_dropped_for(&pk(1), &pk(11)), "other peers keep it");
        assert!(!l.is_disconnected(&pk(1)));
        // The self-probe fails twice: disconnected for everyone.
        assert_eq!(
            l.on_self_probe(t + ms(10), pk(1), false),
            Verdict::SelfProbe { relay: pk(1) }
        );
        assert_eq!(
            l.on_self_probe(t + ms(20), pk(1), false),
            Verdict::Disconnect {
                relay: pk(1),
                reason: DisconnectReason::SelfProbeFailed
            }
        );
        assert!(l.is_dropped_for(&pk(1), &pk(11)));
    }

    #[test]
    fn a_friend_framing_a_good_relay_only_hurts_itself() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        for i in 0..50 {
            l.on_auth_failure(t + ms(i), pk(1), pk(66));
        }
        assert!(l.is_dropped_for(&pk(1), &pk(66)));
        // Our own probe through the relay comes back fine.
        assert_eq!(l.on_self_probe(t + ms(100), pk(1), true), Verdict::Keep);
        assert!(!l.is_disconnected(&pk(1)));
        assert!(!l.is_dropped_for(&pk(1), &pk(10)));
        assert!(
            l.is_dropped_for(&pk(1), &pk(66)),
            "the framer keeps its own drop"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        for i in 0..10 {
            assert_eq!(
                l.on_auth_failure(t + Duration::from_secs(6 * i), pk(1), pk(2)),
                vec![Verdict::Keep]
            );
        }
        assert_eq!(l.failures(&pk(1), &pk(2)), 2);
    }

    #[test]
    fn five_colluding_friends_cannot_disconnect_a_good_relay_for_everyone() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        let mut probes = 0;
        for f in 0..5u8 {
            for i in 0..50 {
                let v = l.on_auth_failure(t + ms(u64::from(f) * 100 + i), pk(1), pk(60 + f));
                assert!(
                    !v.iter().any(|v| matches!(v, Verdict::Disconnect { .. })),
                    "friend {f}: {v:?}"
                );
                probes += v
                    .iter()
                    .filter(|v| matches!(v, Verdict::SelfProbe { .. }))
                    .count();
            }
            assert!(l.is_dropped_for(&pk(1), &pk(60 + f)));
        }
        assert_eq!(probes, 1, "one self-probe at a time");
        assert_eq!(l.drops(&pk(1)), 5);
        assert!(!l.is_disconnected(&pk(1)));
        assert!(
            !l.is_dropped_for(&pk(1), &pk(10)),
            "the good friend keeps it"
        );
        // The probe passes: a sixth framer asks for another one, still no
        // disconnection.
        assert_eq!(l.on_self_probe(t + ms(900), pk(1), true), Verdict::Keep);
        let mut v = Vec::new();
        for i in 0..3 {
            v = l.on_auth_failure(t + ms(1000 + i), pk(1), pk(70));
        }
        assert_eq!(
            v,
            vec![
                Verdict::DropForPeer {
                    relay: pk(1),
                    peer: pk(70)
                },
                Verdict::SelfProbe { relay: pk(1) }
            ]
        );
        assert!(!l.is_disconnected(&pk(1)));
        l.forgive(&pk(1));
        assert!(!l.is_dropped_for(&pk(1), &pk(60)));
    }

    #[test]
    fn a_drop_for_one_peer_lasts_30_min_then_its_failures_count_afresh() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        for i in 0..3 {
            l.on_auth_failure(t + ms(i), pk(1), pk(10));
        }
        assert!(l.is_dropped_for(&pk(1), &pk(10)));
        // Dropped at the third failure, t + 2 ms.
        let later = t + ms(2) + Duration::from_secs(1799);
        assert!(l.on_auth_failure(later, pk(1), pk(10)).is_empty());
        let after = t + ms(2) + Duration::from_secs(1800);
        assert_eq!(l.on_auth_failure(after, pk(1), pk(10)), vec![Verdict::Keep]);
        assert!(!l.is_dropped_for(&pk(1), &pk(10)));
        l.on_auth_failure(after + ms(1), pk(1), pk(10));
        let v = l.on_auth_failure(after + ms(2), pk(1), pk(10));
        assert_eq!(
            v[0],
            Verdict::DropForPeer {
                relay: pk(1),
                peer: pk(10)
            }
        );
    }

    #[test]
    fn a_probe_that_could_not_start_lets_the_next_drop_ask_again() {
        let t = Instant::now();
        let mut l = BlameLedger::default();
        for i in 0..3 {
            l.on_auth_failure(t + ms(i), pk(1), pk(10));
        }
        l.probe_not_started(&pk(1));
        let mut v = Vec::new();
        for i in 0..3 {
            v = l.on_auth_failure(t + ms(10 + i), pk(1), pk(11));
        }
        assert!(v.contains(&Verdict::SelfProbe { relay: pk(1) }), "{v:?}");
    }

    #[test]
    fn memory_is_bounded() {
        let t = Instant::now();
        let mut l = BlameLedger::new(BlameConfig {
            max_records: 16,
            ..Default::default()
        });
        for i in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            l.on_auth_failure(t + ms(u64::from(i)), pk(1), PublicKey(k));
        }
        assert!(l.pairs.len() <= 16);
        let mut l = BlameLedger::new(BlameConfig {
            max_relays: 8,
            ..Default::default()
        });
        for i in 0..100u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            l.on_self_probe(t + ms(u64::from(i)), PublicKey(k), true);
        }
        assert!(l.relays.len() <= 8);
    }
}
