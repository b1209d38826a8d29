//! Losses: the one code path by which a relay leaves a set, failed friend
//! addresses, links coming up, slow relays.

use super::known::back_off;
use super::{LossReason, PoolEvent, RelayPool};
use crate::crypto::PublicKey;
use std::time::{Duration, Instant};

impl RelayPool {
    /// The one way a relay leaves a peer's set (or every peer's, with
    /// `peer = None`), for any reason; it is replaced at once where possible.
    pub fn relay_lost(
        &mut self,
        now: Instant,
        peer: Option<PublicKey>,
        relay: PublicKey,
        reason: LossReason,
    ) -> Vec<PoolEvent> {
        self.saw(now);
        let cfg = self.cfg;
        // A link to a relay known only from friends that died before it
        // ever came up: that address failed.
        let mut address_failed = false;
        if let Some(k) = self.known.iter_mut().find(|k| k.key == relay) {
            match reason {
                // Only a relay lost for everyone (its link) is backed off: a
                // route refused for one peer says nothing about the relay.
                LossReason::Offline if peer.is_none() => {
                    back_off(&cfg, k, now);
                    address_failed = k.own.is_none() && k.linked && k.up_since.is_none();
                    k.up_since = None;
                }
                LossReason::Disconnected => {
                    // The owner removes our link.
                    k.banned_until = Some(now + cfg.disconnect_ban);
                    k.unlink();
                }
                LossReason::Offline | LossReason::Slow | LossReason::Tampering => {}
            }
        }
        let mut out = self.leave_sets(now, peer, relay, reason);
        if address_failed {
            out.extend(self.address_failed(now, &relay));
        }
        out
    }

    /// Removes `relay` from `peer`'s set (or every set) and tops the sets up.
    pub(super) fn leave_sets(
        &mut self,
        now: Instant,
        peer: Option<PublicKey>,
        relay: PublicKey,
        reason: LossReason,
    ) -> Vec<PoolEvent> {
        let cfg = self.cfg;
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
                LossReason::Tampering => {
                    set.exclude(relay, now + cfg.tamper_exclusion, cfg.max_excluded)
                }
                LossReason::Slow => set.exclude(relay, now + cfg.slow_exclusion, cfg.max_excluded),
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
        self.note_unused(now, &relay);
        out
    }

    /// Our link to a relay known only from friends did not come up at its
    /// address: every friend entry naming that address counts a failure
    /// (forgotten after `max_addr_failures`), the relay leaves every set and
    /// its link is closed at once (the next use dials the next address); a
    /// relay without any address left is forgotten.
    pub(super) fn address_failed(&mut self, now: Instant, relay: &PublicKey) -> Vec<PoolEvent> {
        let max = self.cfg.max_addr_failures.max(1);
        let Some(i) = self.index(relay) else {
            return Vec::new();
        };
        let k = &mut self.known[i];
        if k.own.is_some() {
            return Vec::new();
        }
        let at = k.link;
        for n in k.named.iter_mut().filter(|n| n.addr == at) {
            n.failures += 1;
            n.verified = false;
        }
        k.named.retain(|n| n.failures < max);
        tracing::debug!(?relay, addr = %at, left = k.named.len(), "a friend's relay address failed");
        if k.named.is_empty() {
            return self.forget(now, relay);
        }
        let mut out = self.leave_sets(now, None, *relay, LossReason::Offline);
        if let Some(i) = self.index(relay) {
            let k = &mut self.known[i];
            if let Some(a) = k.best_link() {
                k.link = a;
            }
            if k.linked {
                k.unlink();
                out.push(PoolEvent::Close { relay: *relay });
            }
        }
        out
    }

    /// Our link to `relay` finished its handshake (the relay's key answered
    /// at the link's address): it may be used again at once, and that
    /// address is verified for the friends that named it (only for a link
    /// the pool holds: the address of a link it asked to close proves
    /// nothing).
    pub fn link_up(&mut self, now: Instant, relay: &PublicKey) {
        self.saw(now);
        let Some(i) = self.index(relay) else {
            return;
        };
        let k = &mut self.known[i];
        k.end_back_off();
        if !k.linked {
            // A link we asked to close (kept meanwhile by a self-probe): its
            // address may no longer be the one on record, so it proves
            // nothing.
            return;
        }
        k.up_since.get_or_insert(now);
        k.down_since = None;
        let at = k.link;
        for n in k.named.iter_mut().filter(|n| n.addr == at) {
            n.verified = true;
            n.failures = 0;
        }
    }

    /// A relay proved itself (a passed self-probe): it may be used again.
    pub fn relay_back(&mut self, relay: &PublicKey) {
        if let Some(k) = self.known.iter_mut().find(|k| k.key == *relay) {
            k.end_back_off();
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
