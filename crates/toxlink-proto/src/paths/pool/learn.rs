//! Learning relays from our own word or a friend's, within the bounds on
//! known relays, friends' entries and names per relay; forgetting them.

use super::known::{dialable, Known, Named};
use super::{LearnError, LossReason, PoolEvent, RelayInfo, RelayPool, Source};
use crate::crypto::PublicKey;
use std::cmp::Reverse;
use std::time::Instant;

impl RelayPool {
    /// Learns a relay from `source`. Our own word sets the relay's own
    /// address (a link to it connects there from its next attempt on:
    /// [`PoolEvent::Relink`]); a friend's word is kept as that friend's
    /// entry and changes no address in use. The events are to be carried
    /// out; the sets are not topped up here ([`refill`](Self::refill)).
    pub fn learn(
        &mut self,
        now: Instant,
        info: RelayInfo,
        source: Source,
    ) -> Result<Vec<PoolEvent>, LearnError> {
        self.saw(now);
        if !dialable(&info.addr) {
            return Err(LearnError::BadAddress(info.addr));
        }
        self.seq += 1;
        let seq = self.seq;
        let found = self.index(&info.public_key);
        match source {
            Source::Own => {
                let mut out = Vec::new();
                let i = match found {
                    Some(i) => i,
                    None => {
                        out.extend(self.make_room(now)?);
                        // The owner connects to its own relays at once.
                        self.known.push(Known::new(
                            info.public_key,
                            Some(info.addr),
                            Vec::new(),
                            info.addr,
                            true,
                        ));
                        return Ok(out);
                    }
                };
                let k = &mut self.known[i];
                k.own = Some(info.addr);
                k.linked = true;
                k.unused_since = None;
                if k.link != info.addr {
                    k.link = info.addr;
                    out.push(PoolEvent::Relink { relay: k.info() });
                }
                Ok(out)
            }
            Source::Friend(friend) => self.learn_from_friend(now, info, friend, seq, found),
        }
    }

    pub(super) fn learn_from_friend(
        &mut self,
        now: Instant,
        info: RelayInfo,
        friend: PublicKey,
        seq: u64,
        found: Option<usize>,
    ) -> Result<Vec<PoolEvent>, LearnError> {
        let cfg = self.cfg;
        if let Some(i) = found {
            if let Some(n) = self.known[i].named.iter_mut().find(|n| n.friend == friend) {
                // The friend's own entry: a new address starts unverified
                // (failures stay, so renaming does not wash them away).
                if n.addr != info.addr {
                    n.addr = info.addr;
                    n.verified = false;
                }
                n.seq = seq;
                let k = &mut self.known[i];
                k.follow_best_link();
                return Ok(Vec::new());
            }
        } else if self.known.len() >= cfg.max_known {
            // Friends never push out what we know.
            return Err(LearnError::Full);
        }
        let mut out = Vec::new();
        let mine = self.known.iter().filter(|k| k.named_by(&friend)).count();
        if mine >= cfg.max_per_friend {
            let in_use = self.active(&friend).to_vec();
            let oldest = self
                .known
                .iter()
                .filter(|k| !in_use.contains(&k.key))
                .filter_map(|k| {
                    let n = k.named.iter().find(|n| n.friend == friend)?;
                    Some((n.seq, k.key))
                })
                .min();
            let Some((_, relay)) = oldest else {
                return Err(LearnError::FriendFull(mine));
            };
            out.extend(self.unname(now, &relay, &friend));
        }
        let entry = Named {
            friend,
            addr: info.addr,
            failures: 0,
            verified: false,
            seq,
        };
        match self.index(&info.public_key) {
            Some(i) => {
                let k = &mut self.known[i];
                if k.named.len() >= cfg.max_namers.max(1) {
                    // The entry with most failures, then the oldest, gives
                    // way; never the address of a link that is up.
                    let up_at = k.up_since.map(|_| k.link);
                    let Some(pos) = k
                        .named
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| Some(n.addr) != up_at)
                        .max_by_key(|(_, n)| (n.failures, Reverse(n.seq)))
                        .map(|(p, _)| p)
                    else {
                        return Err(LearnError::Full);
                    };
                    k.named.remove(pos);
                }
                k.named.push(entry);
                k.follow_best_link();
            }
            None => {
                if self.known.len() >= cfg.max_known {
                    return Err(LearnError::Full);
                }
                self.known.push(Known::new(
                    info.public_key,
                    None,
                    vec![entry],
                    info.addr,
                    false,
                ));
            }
        }
        Ok(out)
    }

    /// Makes room for one of our own relays: the oldest relay known only
    /// from friends and in no set is forgotten.
    pub(super) fn make_room(&mut self, now: Instant) -> Result<Vec<PoolEvent>, LearnError> {
        if self.known.len() < self.cfg.max_known {
            return Ok(Vec::new());
        }
        let victim = self
            .known
            .iter()
            .filter(|k| k.own.is_none() && !self.in_use(&k.key))
            .min_by_key(|k| k.named.iter().map(|n| n.seq).max())
            .map(|k| k.key);
        match victim {
            Some(relay) => Ok(self.forget(now, &relay)),
            None => Err(LearnError::Full),
        }
    }

    /// Removes `friend`'s word about `relay`; a relay left without any
    /// address is forgotten.
    pub(super) fn unname(
        &mut self,
        now: Instant,
        relay: &PublicKey,
        friend: &PublicKey,
    ) -> Vec<PoolEvent> {
        let Some(i) = self.index(relay) else {
            return Vec::new();
        };
        let k = &mut self.known[i];
        k.named.retain(|n| n.friend != *friend);
        if k.own.is_none() && k.named.is_empty() {
            return self.forget(now, relay);
        }
        k.follow_best_link();
        Vec::new()
    }

    /// Forgets a relay: it leaves every set (through `relay_lost`) and our
    /// link to it, if any, is closed.
    pub(super) fn forget(&mut self, now: Instant, relay: &PublicKey) -> Vec<PoolEvent> {
        let Some(i) = self.index(relay) else {
            return Vec::new();
        };
        let k = self.known.remove(i);
        tracing::debug!(relay = ?k.key, "relay forgotten");
        let mut out = self.leave_sets(now, None, k.key, LossReason::Offline);
        if k.linked {
            out.push(PoolEvent::Close { relay: k.key });
        }
        out
    }

    pub(super) fn in_use(&self, relay: &PublicKey) -> bool {
        self.peers.values().any(|s| s.active.contains(relay))
    }
}
