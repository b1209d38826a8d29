//! The relays kept per peer, and their replacement (DESIGN.md §3, "Relays
//! that go offline", "Slow relays"; PROTOCOL.md §3).
//!
//! Each peer keeps a target number of relays (default 3, at most 6, as
//! c-toxcore). A relay leaves a peer's set through **one** code path,
//! [`RelayPool::relay_lost`], whatever the reason — offline, slow, caught
//! tampering for that peer, or disconnected for everyone — and is replaced at
//! once from the known relays, so the connection keeps its redundancy.
//!
//! Known relays come from configuration, from the peer (SHARE_RELAYS) and
//! from relays we are already connected to; the list is bounded. A relay
//! whose link went offline is backed off globally (exponentially) until it
//! is back; a relay lost for one peer only (its route refused) is not; one
//! dropped for tampering is never used again for that peer; one disconnected
//! for everyone is banned for a long time.
//!
//! A peer that *leaves* a relay we still hold (its own link broke, e.g. a NAT
//! rebinding, or it dropped the relay) does not lose the relay for us: it
//! stays in the peer's set, tied, so the path comes back the moment the peer
//! returns to it ([`RelayPool::peer_returned`]); meanwhile a spare takes its
//! place in the count ([`RelayPool::peer_left`]), up to the hard cap.

use crate::crypto::PublicKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pool parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolConfig {
    /// Relays to keep per peer.
    pub target: usize,
    /// Hard cap per peer (`MAX_FRIEND_TCP_CONNECTIONS`).
    pub max: usize,
    /// Most known relays remembered.
    pub max_known: usize,
    /// A relay whose RTT exceeds `slow_factor` × the best other's...
    pub slow_factor: f64,
    /// ...and the best other's plus this...
    pub slow_margin: Duration,
    /// ...for this long is demoted as slow.
    pub slow_for: Duration,
    /// First back-off after a relay went offline (doubles each time).
    pub offline_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Ban after a relay was disconnected for everyone.
    pub disconnect_ban: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            target: 3,
            max: 6,
            max_known: 64,
            slow_factor: 4.0,
            slow_margin: Duration::from_millis(200),
            slow_for: Duration::from_secs(2),
            offline_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            disconnect_ban: Duration::from_secs(3600),
        }
    }
}

/// Where a relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayInfo {
    /// TCP address.
    pub addr: SocketAddr,
    /// Relay public key.
    pub public_key: PublicKey,
}

/// Why a relay left a peer's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The relay link or the peer's route on it went away.
    Offline,
    /// Far slower than the peer's other relays.
    Slow,
    /// Packets for this peer through it failed authentication.
    Tampering,
    /// Disconnected for everyone (self-probe failed or several peers).
    Disconnected,
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEvent {
    /// Start using `relay` for `peer` (connect if needed, route to the peer).
    Use {
        /// The peer.
        peer: PublicKey,
        /// The relay.
        relay: RelayInfo,
    },
    /// Stop using `relay` for `peer`.
    Drop {
        /// The peer.
        peer: PublicKey,
        /// The relay.
        relay: PublicKey,
        /// Why.
        reason: LossReason,
    },
}

#[derive(Debug, Clone)]
struct Known {
    info: RelayInfo,
    offline_count: u32,
    banned_until: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct PeerSet {
    active: Vec<PublicKey>,
    /// Active relays the peer is not on at the moment (it left them); they
    /// do not count towards the target. Always a subset of `active`.
    absent: BTreeSet<PublicKey>,
    excluded: BTreeSet<PublicKey>,
    /// Relays lost for this peer only (route refused): not before then.
    retry_after: BTreeMap<PublicKey, Instant>,
    slow_since: BTreeMap<PublicKey, Instant>,
}

impl PeerSet {
    /// Relays still wanted to reach the target (present ones count), within
    /// the hard cap.
    fn want(&self, cfg: &PoolConfig) -> usize {
        let present = self.active.len() - self.absent.len();
        let to_target = cfg.target.min(cfg.max).saturating_sub(present);
        to_target.min(cfg.max.saturating_sub(self.active.len()))
    }
}

/// The relay pool of one node.
#[derive(Debug, Clone, Default)]
pub struct RelayPool {
    cfg: PoolConfig,
    known: Vec<Known>,
    peers: HashMap<PublicKey, PeerSet>,
}

impl RelayPool {
    /// A pool with these parameters.
    pub fn new(cfg: PoolConfig) -> Self {
        RelayPool {
            cfg,
            ..Default::default()
        }
    }

    /// Learns a relay (from config, the peer's SHARE_RELAYS, ...). A known
    /// key keeps its record but takes the new address. Returns false if the
    /// list is full.
    pub fn learn(&mut self, info: RelayInfo) -> bool {
        if let Some(k) = self
            .known
            .iter_mut()
            .find(|k| k.info.public_key == info.public_key)
        {
            k.info.addr = info.addr;
            return true;
        }
        if self.known.len() >= self.cfg.max_known {
            return false;
        }
        self.known.push(Known {
            info,
            offline_count: 0,
            banned_until: None,
        });
        true
    }

    /// Known relays.
    pub fn known(&self) -> impl Iterator<Item = &RelayInfo> {
        self.known.iter().map(|k| &k.info)
    }

    /// The relays in use for `peer`.
    pub fn active(&self, peer: &PublicKey) -> &[PublicKey] {
        self.peers.get(peer).map_or(&[], |p| &p.active)
    }

    /// Starts keeping relays for `peer`; returns the relays to use.
    pub fn add_peer(&mut self, now: Instant, peer: PublicKey) -> Vec<PoolEvent> {
        self.peers.entry(peer).or_default();
        self.refill(now, peer)
    }

    /// Stops keeping relays for `peer`.
    pub fn remove_peer(&mut self, peer: &PublicKey) -> Vec<PoolEvent> {
        self.peers.remove(peer).map_or(vec![], |p| {
            p.active
                .into_iter()
                .map(|relay| PoolEvent::Drop {
                    peer: *peer,
                    relay,
                    reason: LossReason::Offline,
                })
                .collect()
        })
    }

    fn usable(&self, now: Instant, k: &Known, set: &PeerSet) -> bool {
        !set.active.contains(&k.info.public_key)
            && !set.excluded.contains(&k.info.public_key)
            && set
                .retry_after
                .get(&k.info.public_key)
                .is_none_or(|t| now >= *t)
            && k.banned_until.is_none_or(|t| now >= t)
    }

    /// Whether a known relay could join `peer`'s set now (not in it, not
    /// excluded for the peer, not backed off).
    pub fn has_spare(&self, now: Instant, peer: &PublicKey) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|set| self.known.iter().any(|k| self.usable(now, k, set)))
    }

    /// Tops `peer` up to the target from the known relays (fewest past
    /// failures first, then the order they were learnt).
    pub fn refill(&mut self, now: Instant, peer: PublicKey) -> Vec<PoolEvent> {
        let mut out = Vec::new();
        let Some(set) = self.peers.get(&peer) else {
            return out;
        };
        let want = set.want(&self.cfg);
        let mut candidates: Vec<&Known> = self
            .known
            .iter()
            .filter(|k| self.usable(now, k, set))
            .collect();
        candidates.sort_by_key(|k| k.offline_count);
        let chosen: Vec<RelayInfo> = candidates.into_iter().take(want).map(|k| k.info).collect();
        if let Some(set) = self.peers.get_mut(&peer) {
            for info in chosen {
                set.active.push(info.public_key);
                out.push(PoolEvent::Use { peer, relay: info });
            }
        }
        out
    }

    /// The one way a relay leaves a peer's set (or every peer's, with
    /// `peer = None`), for any reason; it is replaced at once where possible.
    pub fn relay_lost(
        &mut self,
        now: Instant,
        peer: Option<PublicKey>,
        relay: PublicKey,
        reason: LossReason,
    ) -> Vec<PoolEvent> {
        let cfg = self.cfg;
        if let Some(k) = self.known.iter_mut().find(|k| k.info.public_key == relay) {
            match reason {
                // Only a relay lost for everyone (its link) is backed off: a
                // route refused for one peer says nothing about the relay.
                LossReason::Offline if peer.is_none() => {
                    let backoff = cfg
                        .offline_backoff
                        .saturating_mul(1 << k.offline_count.min(16))
                        .min(cfg.max_backoff);
                    k.offline_count = k.offline_count.saturating_add(1);
                    k.banned_until = Some(now + backoff);
                }
                LossReason::Disconnected => k.banned_until = Some(now + cfg.disconnect_ban),
                LossReason::Offline | LossReason::Slow | LossReason::Tampering => {}
            }
        }
        let peers: Vec<PublicKey> = match peer {
            Some(p) => vec![p],
            None => self
                .peers
                .iter()
                .filter(|(_, s)| s.active.contains(&relay))
                .map(|(p, _)| *p)
                .collect(),
        };
        let mut out = Vec::new();
        for p in peers {
            let Some(set) = self.peers.get_mut(&p) else {
                continue;
            };
            match reason {
                LossReason::Tampering | LossReason::Slow => {
                    set.excluded.insert(relay);
                }
                LossReason::Offline if peer.is_some() => {
                    // Bounded: one entry per known relay at most.
                    set.retry_after.retain(|r, t| now < *t && *r != relay);
                    set.retry_after.insert(relay, now + cfg.offline_backoff);
                }
                LossReason::Offline | LossReason::Disconnected => {}
            }
            set.slow_since.remove(&relay);
            set.absent.remove(&relay);
            if let Some(pos) = set.active.iter().position(|r| *r == relay) {
                set.active.remove(pos);
                out.push(PoolEvent::Drop {
                    peer: p,
                    relay,
                    reason,
                });
                out.extend(self.refill(now, p));
            }
        }
        out
    }

    /// `peer` left `relay` (its route there went offline while our link is
    /// up): the relay stays in the peer's set, tied, but a spare is taken to
    /// keep the target number of relays the peer is on.
    pub fn peer_left(&mut self, now: Instant, peer: PublicKey, relay: PublicKey) -> Vec<PoolEvent> {
        let Some(set) = self.peers.get_mut(&peer) else {
            return vec![];
        };
        if !set.active.contains(&relay) || !set.absent.insert(relay) {
            return vec![];
        }
        self.refill(now, peer)
    }

    /// `peer` is back on `relay` (ONLINE there again).
    pub fn peer_returned(&mut self, peer: &PublicKey, relay: &PublicKey) {
        if let Some(set) = self.peers.get_mut(peer) {
            set.absent.remove(relay);
        }
    }

    /// Whether `peer` left `relay` and has not returned.
    pub fn is_absent(&self, peer: &PublicKey, relay: &PublicKey) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| s.absent.contains(relay))
    }

    /// A relay came back (its link reconnected): it may be used again.
    pub fn relay_back(&mut self, relay: &PublicKey) {
        if let Some(k) = self.known.iter_mut().find(|k| k.info.public_key == *relay) {
            if k.banned_until.is_some() && k.offline_count > 0 {
                k.banned_until = None;
            }
        }
    }

    /// Feeds the current RTTs of `peer`'s relays; demotes (through
    /// [`relay_lost`](Self::relay_lost) with [`LossReason::Slow`]) one that
    /// has been far slower than the best other for `slow_for`.
    pub fn observe_rtts(
        &mut self,
        now: Instant,
        peer: PublicKey,
        rtts: &[(PublicKey, Duration)],
    ) -> Vec<PoolEvent> {
        let cfg = self.cfg;
        let Some(set) = self.peers.get_mut(&peer) else {
            return vec![];
        };
        let mut slow = None;
        for (relay, rtt) in rtts {
            let best_other = rtts
                .iter()
                .filter(|(r, _)| r != relay && set.active.contains(r))
                .map(|(_, d)| *d)
                .min();
            let is_slow = best_other.is_some_and(|b| {
                rtt.as_secs_f64() > b.as_secs_f64() * cfg.slow_factor && *rtt > b + cfg.slow_margin
            });
            if is_slow && set.active.contains(relay) {
                let since = *set.slow_since.entry(*relay).or_insert(now);
                if now.saturating_duration_since(since) >= cfg.slow_for && slow.is_none() {
                    slow = Some(*relay);
                }
            } else {
                set.slow_since.remove(relay);
            }
        }
        match slow {
            Some(relay) => self.relay_lost(now, Some(peer), relay, LossReason::Slow),
            None => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::test_util::{ms, pk};

    fn info(b: u8) -> RelayInfo {
        RelayInfo {
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(b))),
            public_key: pk(b),
        }
    }
    fn pool(n: u8) -> RelayPool {
        let mut p = RelayPool::default();
        for b in 1..=n {
            assert!(p.learn(info(b)));
        }
        p
    }

    #[test]
    fn a_peer_gets_the_target_number_of_relays() {
        let t = Instant::now();
        let mut p = pool(5);
        let ev = p.add_peer(t, pk(100));
        assert_eq!(ev.len(), 3);
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
        assert!(matches!(ev[0], PoolEvent::Use { relay, .. } if relay == info(1)));
    }

    #[test]
    fn every_loss_reason_replaces_through_the_same_path() {
        let t = Instant::now();
        for reason in [
            LossReason::Offline,
            LossReason::Slow,
            LossReason::Tampering,
            LossReason::Disconnected,
        ] {
            let mut p = pool(5);
            p.add_peer(t, pk(100));
            let ev = p.relay_lost(t, Some(pk(100)), pk(2), reason);
            assert_eq!(
                ev,
                vec![
                    PoolEvent::Drop {
                        peer: pk(100),
                        relay: pk(2),
                        reason
                    },
                    PoolEvent::Use {
                        peer: pk(100),
                        relay: info(4)
                    },
                ],
                "{reason:?}"
            );
            assert_eq!(p.active(&pk(100)), &[pk(1), pk(3), pk(4)]);
        }
    }

    #[test]
    fn tampering_for_one_peer_leaves_the_others_alone() {
        let t = Instant::now();
        let mut p = pool(4);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(101));
        p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Tampering);
        assert!(!p.active(&pk(100)).contains(&pk(1)));
        assert!(p.active(&pk(101)).contains(&pk(1)));
        // Never comes back for that peer, even when others fail.
        p.relay_lost(t, Some(pk(100)), pk(2), LossReason::Offline);
        assert!(!p.active(&pk(100)).contains(&pk(1)));
    }

    #[test]
    fn offline_relays_back_off_then_return() {
        let t = Instant::now();
        let mut p = pool(3);
        p.add_peer(t, pk(100));
        let ev = p.relay_lost(t, None, pk(1), LossReason::Offline);
        assert_eq!(ev.len(), 1, "no replacement available: only the drop");
        assert_eq!(p.refill(t + ms(1000), pk(100)), vec![]);
        let ev = p.refill(t + ms(2000), pk(100));
        assert_eq!(
            ev,
            vec![PoolEvent::Use {
                peer: pk(100),
                relay: info(1)
            }]
        );
        // Second time offline: 4 s back-off, unless it reconnects earlier.
        p.relay_lost(t + ms(3000), None, pk(1), LossReason::Offline);
        assert_eq!(p.refill(t + ms(6000), pk(100)), vec![]);
        p.relay_back(&pk(1));
        assert_eq!(p.refill(t + ms(6000), pk(100)).len(), 1);
    }

    #[test]
    fn a_global_disconnect_drops_it_for_every_peer() {
        let t = Instant::now();
        let mut p = pool(4);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(101));
        let ev = p.relay_lost(t, None, pk(1), LossReason::Disconnected);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, PoolEvent::Drop { .. }))
                .count(),
            2
        );
        assert!(!p.active(&pk(100)).contains(&pk(1)));
        assert!(!p.active(&pk(101)).contains(&pk(1)));
        assert_eq!(p.active(&pk(100)).len(), 3);
    }

    #[test]
    fn a_slow_relay_is_demoted_after_a_while() {
        let t = Instant::now();
        let mut p = pool(4);
        p.add_peer(t, pk(100));
        let rtts = [(pk(1), ms(20)), (pk(2), ms(25)), (pk(3), ms(2000))];
        assert!(p.observe_rtts(t, pk(100), &rtts).is_empty());
        assert!(p.observe_rtts(t + ms(1999), pk(100), &rtts).is_empty());
        let ev = p.observe_rtts(t + ms(2000), pk(100), &rtts);
        assert_eq!(
            ev[0],
            PoolEvent::Drop {
                peer: pk(100),
                relay: pk(3),
                reason: LossReason::Slow
            }
        );
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(4)]);
        // A merely somewhat slower relay is kept.
        let rtts = [(pk(1), ms(20)), (pk(2), ms(60)), (pk(4), ms(70))];
        assert!(p.observe_rtts(t + ms(9000), pk(100), &rtts).is_empty());
        assert!(p.observe_rtts(t + ms(19000), pk(100), &rtts).is_empty());
    }

    #[test]
    fn known_list_is_bounded() {
        let mut p = RelayPool::new(PoolConfig {
            max_known: 2,
            ..Default::default()
        });
        assert!(p.learn(info(1)));
        assert!(p.learn(info(2)));
        assert!(!p.learn(info(3)));
        assert!(p.learn(info(1)), "a known key is updated");
        assert_eq!(p.known().count(), 2);
    }

    #[test]
    fn a_peer_leaving_a_relay_keeps_it_tied_and_takes_a_spare_until_it_returns() {
        let t = Instant::now();
        let mut p = pool(5);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(101));
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
        // The peer's own link to relay 2 broke: relay 2 stays, a spare joins.
        let ev = p.peer_left(t, pk(100), pk(2));
        assert_eq!(
            ev,
            vec![PoolEvent::Use {
                peer: pk(100),
                relay: info(4)
            }]
        );
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3), pk(4)]);
        assert!(p.is_absent(&pk(100), &pk(2)));
        // Leaving twice takes no second spare.
        assert!(p.peer_left(t, pk(100), pk(2)).is_empty());
        // Nothing changed for the relay itself: other peers may still take it.
        let ev = p.relay_lost(t, Some(pk(101)), pk(1), LossReason::Slow);
        assert!(ev.contains(&PoolEvent::Use {
            peer: pk(101),
            relay: info(4)
        }));
        p.peer_returned(&pk(100), &pk(2));
        assert!(!p.is_absent(&pk(100), &pk(2)));
        // The set never grows past the hard cap, however often peers leave.
        for r in 1..=5 {
            p.peer_left(t, pk(100), pk(r));
        }
        assert!(p.active(&pk(100)).len() <= PoolConfig::default().max);
    }

    #[test]
    fn a_route_refused_for_one_peer_does_not_back_the_relay_off_for_others() {
        let t = Instant::now();
        let mut p = pool(4);
        p.add_peer(t, pk(100));
        p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Offline);
        // A new peer still gets relay 1 at once.
        p.add_peer(t, pk(101));
        assert!(p.active(&pk(101)).contains(&pk(1)));
    }
}
