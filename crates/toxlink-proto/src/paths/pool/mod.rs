//! The relays kept per peer, where each known relay came from, and their
//! replacement (docs/DESIGN.md §3, "Relays that go offline", "Slow relays",
//! "Framing"; docs/PROTOCOL.md §3).
//!
//! Each peer keeps a target number of relays (default 3, at most 6, as
//! c-toxcore). A relay leaves a peer's set through **one** code path,
//! [`RelayPool::relay_lost`], whatever the reason — offline, slow, caught
//! tampering for that peer, disconnected for everyone, or forgotten — and is
//! replaced at once from the known relays, so the connection keeps its
//! redundancy.
//!
//! **Where a relay came from.** Every known relay has at most one *own*
//! address — from our configuration or the application ([`Source::Own`]), or
//! the address at which our own link to it stayed up for
//! [`PoolConfig::prove_after`] (our own evidence) — and up to
//! [`PoolConfig::max_namers`] addresses named by friends (SHARE_RELAYS,
//! [`Source::Friend`]), one per friend. Invariants:
//!
//! * what a friend names never changes an own address, nor the address of a
//!   link that is open, nor where a self-probe goes
//!   ([`RelayPool::probe_addr`]: the own address, else the address of the
//!   link that is up, else nowhere);
//! * a relay with an own address may serve every peer; one known only from
//!   friends serves only the friends that named it, until our own evidence
//!   (its link up for [`PoolConfig::prove_after`]) makes its address ours;
//! * each friend names at most [`PoolConfig::max_per_friend`] relays (its
//!   oldest entry not in use for it gives way); addresses that are not
//!   unicast IP with a port are refused ([`LearnError::BadAddress`]);
//! * a link to a relay known only from friends is opened only while some
//!   peer's set holds it and closed ([`PoolEvent::Close`]) after
//!   [`PoolConfig::close_after`] unused. Its address is the first one named
//!   (one our link came up at before goes first, failed ones last) and never
//!   changes while the link is open. If the link does not come up within
//!   [`PoolConfig::link_grace`], or dies before it came up, that address
//!   failed: the relay is dropped and its link closed at once, and an address
//!   that failed [`PoolConfig::max_addr_failures`] times is forgotten (the
//!   next use tries the next address); a relay without any address left is
//!   forgotten. Nothing a friend names is retried forever.
//!
//! **Losses.** A relay whose link went offline is backed off globally
//! (exponentially) until it is back; a relay lost for one peer only (its
//! route refused) is backed off for that peer only; one dropped for that
//! peer as slow or for tampering is excluded for that peer for
//! [`PoolConfig::slow_exclusion`] or [`PoolConfig::tamper_exclusion`]; one
//! disconnected for everyone (a failed self-probe: our own evidence) is
//! banned for [`PoolConfig::disconnect_ban`]. When a ban, back-off or
//! exclusion ends, [`RelayPool::tick`] (due at [`RelayPool::poll_timeout`])
//! tops the sets up again.
//!
//! A peer that *leaves* a relay we still hold (its own link broke, e.g. a NAT
//! rebinding, or it dropped the relay) does not lose the relay for us: it
//! stays in the peer's set, tied, so the path comes back the moment the peer
//! returns to it ([`RelayPool::peer_returned`]); meanwhile a spare takes its
//! place in the count ([`RelayPool::peer_left`]), up to the hard cap.
//!
//! Memory is bounded: at most [`PoolConfig::max_known`] relays with at most
//! [`PoolConfig::max_namers`] friend entries each; per peer at most
//! [`PoolConfig::max`] relays in use, [`PoolConfig::max_excluded`]
//! exclusions and one back-off entry per known relay.
//!
//! Layout: this file holds the public types and [`RelayPool`]'s state and
//! queries; `known` what is kept per relay and per peer's set, `learn`
//! learning and forgetting relays, `sets` peers and the topping up of
//! their sets, `loss` the one loss path, failed addresses and links coming
//! up, `timers` [`RelayPool::poll_timeout`] and [`RelayPool::tick`].

mod known;
mod learn;
mod loss;
mod sets;
#[cfg(test)]
mod tests;
mod timers;

use known::{Known, PeerSet};

use crate::crypto::PublicKey;
use std::collections::BTreeMap;
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
    /// Relays one friend may name (its SHARE_RELAYS entries kept).
    pub max_per_friend: usize,
    /// Friends' addresses kept per relay.
    pub max_namers: usize,
    /// A link to a relay known only from friends that stays up this long
    /// makes its address our own (the relay may then serve every peer).
    pub prove_after: Duration,
    /// A link to a relay known only from friends that is wanted but not up
    /// for this long: its address failed.
    pub link_grace: Duration,
    /// Failures after which a friend's address for a relay is forgotten.
    pub max_addr_failures: u32,
    /// A link to a relay known only from friends is closed after being in
    /// no peer's set for this long.
    pub close_after: Duration,
    /// How long a relay demoted as slow stays excluded for that peer.
    pub slow_exclusion: Duration,
    /// How long a relay dropped for tampering stays excluded for that peer.
    pub tamper_exclusion: Duration,
    /// Exclusions kept per peer (the one ending first gives way).
    pub max_excluded: usize,
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
            max_per_friend: 4,
            max_namers: 8,
            prove_after: Duration::from_secs(60),
            // A relay handshake times out after 5 s and a reconnect waits at
            // most 5 s: a good address is up well within this.
            link_grace: Duration::from_secs(12),
            max_addr_failures: 2,
            close_after: Duration::from_secs(2),
            slow_exclusion: Duration::from_secs(300),
            tamper_exclusion: Duration::from_secs(1800),
            max_excluded: 64,
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

/// Who told us about a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Our configuration or the application: trusted, for every peer.
    Own,
    /// A friend's SHARE_RELAYS (the friend's real key): for that friend's
    /// connection only, until our own evidence says more.
    Friend(PublicKey),
}

/// Why a relay was not learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    /// Not a unicast IP address with a port.
    #[error("relay address {0} is not a unicast address with a port")]
    BadAddress(SocketAddr),
    /// The list of known relays (or of this relay's friend addresses) is
    /// full.
    #[error("no room for another relay")]
    Full,
    /// The friend already names as many relays as it may, all in use for it.
    #[error("the friend already names {0} relays in use")]
    FriendFull(usize),
}

/// Why a relay left a peer's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The relay link or the peer's route on it went away (or the relay was
    /// forgotten).
    Offline,
    /// Far slower than the peer's other relays.
    Slow,
    /// Packets for this peer through it failed authentication.
    Tampering,
    /// Disconnected for everyone (our own self-probes through it failed).
    Disconnected,
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// Start using `relay` for `peer` (connect to `relay.addr` if there is no
    /// link yet, route to the peer).
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
    /// Our own address for a relay changed: a link to it (if any) connects
    /// to `relay.addr` from its next attempt on.
    Relink {
        /// The relay and its new address.
        relay: RelayInfo,
    },
    /// A relay known only from friends is in no peer's set (or its address
    /// failed): close our link to it.
    Close {
        /// The relay.
        relay: PublicKey,
    },
}

/// The relay pool of one node.
#[derive(Debug, Clone, Default)]
pub struct RelayPool {
    cfg: PoolConfig,
    known: Vec<Known>,
    peers: BTreeMap<PublicKey, PeerSet>,
    seq: u64,
    /// The latest `now` seen (for `remove_peer`, which has none).
    clock: Option<Instant>,
}

impl RelayPool {
    /// A pool with these parameters.
    pub fn new(cfg: PoolConfig) -> Self {
        RelayPool {
            cfg,
            ..Default::default()
        }
    }

    pub(super) fn saw(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    pub(super) fn index(&self, relay: &PublicKey) -> Option<usize> {
        self.known.iter().position(|k| k.key == *relay)
    }

    /// Known relays, with the address our link to each uses.
    pub fn known(&self) -> impl Iterator<Item = RelayInfo> + '_ {
        self.known.iter().map(Known::info)
    }

    /// Relays with an address of our own (configuration or our own
    /// evidence), at that address: what we may tell friends.
    pub fn own_relays(&self) -> impl Iterator<Item = RelayInfo> + '_ {
        self.known.iter().filter_map(|k| {
            Some(RelayInfo {
                addr: k.own?,
                public_key: k.key,
            })
        })
    }

    /// Where a self-probe of `relay` goes: our own address for it, else the
    /// address of our link to it that is up; `None` if neither (a friend's
    /// word alone never chooses where a probe goes).
    pub fn probe_addr(&self, relay: &PublicKey) -> Option<SocketAddr> {
        let k = &self.known[self.index(relay)?];
        k.own.or(k.up_since.map(|_| k.link))
    }

    /// Whether the owner is to hold a link to `relay`.
    pub fn is_linked(&self, relay: &PublicKey) -> bool {
        self.index(relay).is_some_and(|i| self.known[i].linked)
    }

    /// The relays in use for `peer`.
    pub fn active(&self, peer: &PublicKey) -> &[PublicKey] {
        self.peers.get(peer).map_or(&[], |p| &p.active)
    }

    /// Whether `relay` is excluded for `peer` (dropped as slow or for
    /// tampering) at `now`.
    pub fn is_excluded(&self, now: Instant, peer: &PublicKey, relay: &PublicKey) -> bool {
        self.peers
            .get(peer)
            .and_then(|s| s.excluded.get(relay))
            .is_some_and(|t| now < *t)
    }
}
