//! What the pool knows of one relay (its own address, friends' words, its
//! link's state) and of one peer's set.

use super::{PoolConfig, RelayInfo};
use crate::crypto::PublicKey;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A friend's word about a relay's address.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub(super) friend: PublicKey,
    pub(super) addr: SocketAddr,
    pub(super) failures: u32,
    /// Our link came up at this address.
    pub(super) verified: bool,
    /// When the friend last named it (the per-friend cap's order).
    pub(super) seq: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) key: PublicKey,
    /// Our own address: configuration, or the address our link proved.
    pub(super) own: Option<SocketAddr>,
    /// Friends' addresses, one per friend.
    pub(super) named: Vec<Named>,
    /// The address our link uses (or will use).
    pub(super) link: SocketAddr,
    /// The owner holds a link (a `Use` went out, no `Close` since).
    pub(super) linked: bool,
    /// Our link is up since.
    pub(super) up_since: Option<Instant>,
    /// A set wants it but the link is not up, since.
    pub(super) down_since: Option<Instant>,
    /// Linked but in no set, since (relays known only from friends).
    pub(super) unused_since: Option<Instant>,
    pub(super) offline_count: u32,
    pub(super) banned_until: Option<Instant>,
}

impl Known {
    /// A relay learnt now: no link state, no back-off.
    pub(super) fn new(
        key: PublicKey,
        own: Option<SocketAddr>,
        named: Vec<Named>,
        link: SocketAddr,
        linked: bool,
    ) -> Self {
        Known {
            key,
            own,
            named,
            link,
            linked,
            up_since: None,
            down_since: None,
            unused_since: None,
            offline_count: 0,
            banned_until: None,
        }
    }

    /// A relay known only from friends and without a link takes the best
    /// named address for its next link (an open link keeps its address).
    pub(super) fn follow_best_link(&mut self) {
        if !self.linked && self.own.is_none() {
            if let Some(a) = self.best_link() {
                self.link = a;
            }
        }
    }

    /// The owner is to drop our link: no link state is left.
    pub(super) fn unlink(&mut self) {
        self.linked = false;
        self.up_since = None;
        self.down_since = None;
        self.unused_since = None;
    }

    /// Lifts the ban of a relay that has been backed off for going offline
    /// (`offline_count > 0`): it proved itself.
    pub(super) fn end_back_off(&mut self) {
        if self.banned_until.is_some() && self.offline_count > 0 {
            self.banned_until = None;
        }
    }

    pub(super) fn info(&self) -> RelayInfo {
        RelayInfo {
            addr: self.link,
            public_key: self.key,
        }
    }

    pub(super) fn named_by(&self, peer: &PublicKey) -> bool {
        self.named.iter().any(|n| n.friend == *peer)
    }

    /// Our own address (configuration or evidence), or the friend's word of
    /// this very peer.
    pub(super) fn may_serve(&self, peer: &PublicKey) -> bool {
        self.own.is_some() || self.named_by(peer)
    }

    /// The address for the next link: our own, else the first named one
    /// (verified before, fewest failures, oldest).
    pub(super) fn best_link(&self) -> Option<SocketAddr> {
        self.own.or_else(|| {
            self.named
                .iter()
                .min_by_key(|n| (!n.verified, n.failures, n.seq))
                .map(|n| n.addr)
        })
    }
}

/// Backs a relay off after its link went offline (doubling each time).
pub(super) fn back_off(cfg: &PoolConfig, k: &mut Known, now: Instant) {
    let backoff = cfg
        .offline_backoff
        .saturating_mul(1 << k.offline_count.min(16))
        .min(cfg.max_backoff);
    k.offline_count = k.offline_count.saturating_add(1);
    k.banned_until = Some(now + backoff);
}

/// Whether a friend's (or our own) relay address can be dialled at all.
pub(super) fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

#[derive(Debug, Clone, Default)]
pub(super) struct PeerSet {
    pub(super) active: Vec<PublicKey>,
    /// Active relays the peer is not on at the moment (it left them); they
    /// do not count towards the target. Always a subset of `active`.
    pub(super) absent: BTreeSet<PublicKey>,
    /// Relays dropped for this peer as slow or tampering: not before then.
    pub(super) excluded: BTreeMap<PublicKey, Instant>,
    /// Relays lost for this peer only (route refused): not before then.
    pub(super) retry_after: BTreeMap<PublicKey, Instant>,
    pub(super) slow_since: BTreeMap<PublicKey, Instant>,
}

impl PeerSet {
    /// Relays still wanted to reach the target (present ones count), within
    /// the hard cap.
    pub(super) fn want(&self, cfg: &PoolConfig) -> usize {
        let present = self.active.len() - self.absent.len();
        let to_target = cfg.target.min(cfg.max).saturating_sub(present);
        to_target.min(cfg.max.saturating_sub(self.active.len()))
    }

    pub(super) fn exclude(&mut self, relay: PublicKey, until: Instant, max: usize) {
        let until = self.excluded.get(&relay).map_or(until, |t| until.max(*t));
        self.excluded.remove(&relay);
        while self.excluded.len() >= max.max(1) {
            let Some(first) = self
                .excluded
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.excluded.remove(&first);
        }
        self.excluded.insert(relay, until);
    }
}
