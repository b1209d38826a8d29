//! The pool's timers: bans, back-offs and exclusions ending, friends'
//! relays proven, late or unused.

use super::known::back_off;
use super::{PoolEvent, RelayPool};
use crate::crypto::PublicKey;
use std::collections::BTreeSet;
use std::time::Instant;

impl RelayPool {
    /// When [`tick`](Self::tick) is due: a ban, back-off or exclusion ends, a
    /// link to a relay known only from friends is proven, late or unused.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cfg = &self.cfg;
        let relays = self.known.iter().flat_map(|k| {
            let friends_only = k.own.is_none();
            [
                k.banned_until,
                k.up_since
                    .filter(|_| friends_only)
                    .map(|t| t + cfg.prove_after),
                k.down_since
                    .filter(|_| friends_only)
                    .map(|t| t + cfg.link_grace),
                k.unused_since
                    .filter(|_| friends_only)
                    .map(|t| t + cfg.close_after),
            ]
        });
        let sets = self
            .peers
            .values()
            .flat_map(|s| s.excluded.values().chain(s.retry_after.values()).copied());
        relays.flatten().chain(sets).min()
    }

    /// Timers: ends bans, back-offs and exclusions that are over; makes the
    /// address of a link that stayed up long enough our own; counts a failure
    /// for a friend's address our link did not come up at in time; closes
    /// links no set needs; then tops every set up.
    pub fn tick(&mut self, now: Instant) -> Vec<PoolEvent> {
        self.saw(now);
        let cfg = self.cfg;
        let mut out = Vec::new();
        let mut late = Vec::new();
        for k in &mut self.known {
            if k.banned_until.is_some_and(|t| now >= t) {
                k.banned_until = None;
            }
            if k.own.is_some() {
                continue;
            }
            if k.up_since.is_some_and(|t| now >= t + cfg.prove_after) {
                tracing::info!(relay = ?k.key, addr = %k.link, "relay proven by our own link: it may serve every peer");
                k.own = Some(k.link);
                k.unused_since = None;
            } else if k.down_since.is_some_and(|t| now >= t + cfg.link_grace) {
                back_off(&cfg, k, now);
                late.push(k.key);
            }
        }
        for relay in late {
            out.extend(self.address_failed(now, &relay));
        }
        for set in self.peers.values_mut() {
            set.excluded.retain(|_, t| now < *t);
            set.retry_after.retain(|_, t| now < *t);
        }
        let peers: Vec<PublicKey> = self.peers.keys().copied().collect();
        for p in peers {
            out.extend(self.refill(now, p));
        }
        // Links no set took back meanwhile are closed.
        let in_use: BTreeSet<PublicKey> = self
            .peers
            .values()
            .flat_map(|s| s.active.iter().copied())
            .collect();
        for k in &mut self.known {
            if k.own.is_some() || !k.linked || in_use.contains(&k.key) {
                continue;
            }
            let since = *k.unused_since.get_or_insert(now);
            if now >= since + cfg.close_after {
                k.unlink();
                out.push(PoolEvent::Close { relay: k.key });
            }
        }
        out
    }
}
