//! Peers' sets: adding and removing peers, topping sets up, peers that
//! leave a relay and come back.

use super::known::{Known, PeerSet};
use super::{LossReason, PoolEvent, RelayPool};
use crate::crypto::PublicKey;
use std::time::Instant;

impl RelayPool {
    /// Starts keeping relays for `peer`; returns the relays to use.
    pub fn add_peer(&mut self, now: Instant, peer: PublicKey) -> Vec<PoolEvent> {
        self.peers.entry(peer).or_default();
        self.refill(now, peer)
    }

    /// Stops keeping relays for `peer` (the owner unties it itself; links
    /// no set needs any more are closed later, by [`tick`](Self::tick)).
    pub fn remove_peer(&mut self, peer: &PublicKey) -> Vec<PoolEvent> {
        let Some(p) = self.peers.remove(peer) else {
            return Vec::new();
        };
        if let Some(now) = self.clock {
            for relay in &p.active {
                self.note_unused(now, relay);
            }
        }
        p.active
            .into_iter()
            .map(|relay| PoolEvent::Drop {
                peer: *peer,
                relay,
                reason: LossReason::Offline,
            })
            .collect()
    }

    pub(super) fn usable(&self, now: Instant, k: &Known, peer: &PublicKey, set: &PeerSet) -> bool {
        k.may_serve(peer)
            && !set.active.contains(&k.key)
            && set.excluded.get(&k.key).is_none_or(|t| now >= *t)
            && set.retry_after.get(&k.key).is_none_or(|t| now >= *t)
            && k.banned_until.is_none_or(|t| now >= t)
    }

    /// Whether a known relay could join `peer`'s set now (not in it, not
    /// excluded for the peer, not backed off, and one the peer may use).
    pub fn has_spare(&self, now: Instant, peer: &PublicKey) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|set| self.known.iter().any(|k| self.usable(now, k, peer, set)))
    }

    /// Tops `peer` up to the target from the known relays it may use (fewest
    /// past failures first, then those the peer named itself, then the order
    /// they were learnt).
    pub fn refill(&mut self, now: Instant, peer: PublicKey) -> Vec<PoolEvent> {
        self.saw(now);
        let mut out = Vec::new();
        let Some(set) = self.peers.get(&peer) else {
            return out;
        };
        let want = set.want(&self.cfg);
        if want == 0 {
            return out;
        }
        let mut chosen: Vec<usize> = (0..self.known.len())
            .filter(|&i| self.usable(now, &self.known[i], &peer, set))
            .collect();
        chosen.sort_by_key(|&i| (self.known[i].offline_count, !self.known[i].named_by(&peer)));
        chosen.truncate(want);
        for i in chosen {
            let k = &mut self.known[i];
            k.linked = true;
            k.unused_since = None;
            if k.up_since.is_none() && k.down_since.is_none() {
                k.down_since = Some(now);
            }
            let info = k.info();
            if let Some(set) = self.peers.get_mut(&peer) {
                set.active.push(info.public_key);
            }
            out.push(PoolEvent::Use { peer, relay: info });
        }
        out
    }

    /// A linked relay known only from friends that no set holds starts its
    /// way to being closed.
    pub(super) fn note_unused(&mut self, now: Instant, relay: &PublicKey) {
        if self.in_use(relay) {
            return;
        }
        if let Some(i) = self.index(relay) {
            let k = &mut self.known[i];
            k.down_since = None;
            if k.own.is_none() && k.linked {
                k.unused_since.get_or_insert(now);
            }
        }
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
}
