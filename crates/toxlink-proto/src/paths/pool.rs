//! The relays kept per peer, where each known relay came from, and their
//! replacement (DESIGN.md §3, "Relays that go offline", "Slow relays",
//! "Framing"; PROTOCOL.md §3).
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

use crate::crypto::PublicKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
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

/// A friend's word about a relay's address.
#[derive(Debug, Clone)]
struct Named {
    friend: PublicKey,
    addr: SocketAddr,
    failures: u32,
    /// Our link came up at this address.
    verified: bool,
    /// When the friend last named it (the per-friend cap's order).
    seq: u64,
}

#[derive(Debug, Clone)]
struct Known {
    key: PublicKey,
    /// Our own address: configuration, or the address our link proved.
    own: Option<SocketAddr>,
    /// Friends' addresses, one per friend.
    named: Vec<Named>,
    /// The address our link uses (or will use).
    link: SocketAddr,
    /// The owner holds a link (a `Use` went out, no `Close` since).
    linked: bool,
    /// Our link is up since.
    up_since: Option<Instant>,
    /// A set wants it but the link is not up, since.
    down_since: Option<Instant>,
    /// Linked but in no set, since (relays known only from friends).
    unused_since: Option<Instant>,
    offline_count: u32,
    banned_until: Option<Instant>,
}

impl Known {
    fn info(&self) -> RelayInfo {
        RelayInfo {
            addr: self.link,
            public_key: self.key,
        }
    }

    fn named_by(&self, peer: &PublicKey) -> bool {
        self.named.iter().any(|n| n.friend == *peer)
    }

    /// Our own address (configuration or evidence), or the friend's word of
    /// this very peer.
    fn may_serve(&self, peer: &PublicKey) -> bool {
        self.own.is_some() || self.named_by(peer)
    }

    /// The address for the next link: our own, else the first named one
    /// (verified before, fewest failures, oldest).
    fn best_link(&self) -> Option<SocketAddr> {
        self.own.or_else(|| {
            self.named
                .iter()
                .min_by_key(|n| (!n.verified, n.failures, n.seq))
                .map(|n| n.addr)
        })
    }
}

/// Backs a relay off after its link went offline (doubling each time).
fn back_off(cfg: &PoolConfig, k: &mut Known, now: Instant) {
    let backoff = cfg
        .offline_backoff
        .saturating_mul(1 << k.offline_count.min(16))
        .min(cfg.max_backoff);
    k.offline_count = k.offline_count.saturating_add(1);
    k.banned_until = Some(now + backoff);
}

/// Whether a friend's (or our own) relay address can be dialled at all.
fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

#[derive(Debug, Clone, Default)]
struct PeerSet {
    active: Vec<PublicKey>,
    /// Active relays the peer is not on at the moment (it left them); they
    /// do not count towards the target. Always a subset of `active`.
    absent: BTreeSet<PublicKey>,
    /// Relays dropped for this peer as slow or tampering: not before then.
    excluded: BTreeMap<PublicKey, Instant>,
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

    fn exclude(&mut self, relay: PublicKey, until: Instant, max: usize) {
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

    fn saw(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    fn index(&self, relay: &PublicKey) -> Option<usize> {
        self.known.iter().position(|k| k.key == *relay)
    }

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
                        self.known.push(Known {
                            key: info.public_key,
                            own: Some(info.addr),
                            named: Vec::new(),
                            link: info.addr,
                            // The owner connects to its own relays at once.
                            linked: true,
                            up_since: None,
                            down_since: None,
                            unused_since: None,
                            offline_count: 0,
                            banned_until: None,
                        });
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

    fn learn_from_friend(
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
                if !k.linked && k.own.is_none() {
                    if let Some(a) = k.best_link() {
                        k.link = a;
                    }
                }
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
                if !k.linked && k.own.is_none() {
                    if let Some(a) = k.best_link() {
                        k.link = a;
                    }
                }
            }
            None => {
                if self.known.len() >= cfg.max_known {
                    return Err(LearnError::Full);
                }
                self.known.push(Known {
                    key: info.public_key,
                    own: None,
                    named: vec![entry],
                    link: info.addr,
                    linked: false,
                    up_since: None,
                    down_since: None,
                    unused_since: None,
                    offline_count: 0,
                    banned_until: None,
                });
            }
        }
        Ok(out)
    }

    /// Makes room for one of our own relays: the oldest relay known only
    /// from friends and in no set is forgotten.
    fn make_room(&mut self, now: Instant) -> Result<Vec<PoolEvent>, LearnError> {
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
    fn unname(&mut self, now: Instant, relay: &PublicKey, friend: &PublicKey) -> Vec<PoolEvent> {
        let Some(i) = self.index(relay) else {
            return Vec::new();
        };
        let k = &mut self.known[i];
        k.named.retain(|n| n.friend != *friend);
        if k.own.is_none() && k.named.is_empty() {
            return self.forget(now, relay);
        }
        if !k.linked && k.own.is_none() {
            if let Some(a) = k.best_link() {
                k.link = a;
            }
        }
        Vec::new()
    }

    /// Forgets a relay: it leaves every set (through `relay_lost`) and our
    /// link to it, if any, is closed.
    fn forget(&mut self, now: Instant, relay: &PublicKey) -> Vec<PoolEvent> {
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

    fn in_use(&self, relay: &PublicKey) -> bool {
        self.peers.values().any(|s| s.active.contains(relay))
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

    fn usable(&self, now: Instant, k: &Known, peer: &PublicKey, set: &PeerSet) -> bool {
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
    fn note_unused(&mut self, now: Instant, relay: &PublicKey) {
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
                    k.linked = false;
                    k.up_since = None;
                    k.down_since = None;
                    k.unused_since = None;
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
    fn leave_sets(
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
    fn address_failed(&mut self, now: Instant, relay: &PublicKey) -> Vec<PoolEvent> {
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
                k.linked = false;
                k.up_since = None;
                k.down_since = None;
                k.unused_since = None;
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
        if k.banned_until.is_some() && k.offline_count > 0 {
            k.banned_until = None;
        }
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

    /// A relay proved itself (a passed self-probe): it may be used again.
    pub fn relay_back(&mut self, relay: &PublicKey) {
        if let Some(k) = self.known.iter_mut().find(|k| k.key == *relay) {
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
                k.unused_since = None;
                k.linked = false;
                k.up_since = None;
                k.down_since = None;
                out.push(PoolEvent::Close { relay: k.key });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::test_util::{ms, pk};

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + n))
    }
    fn info(b: u8) -> RelayInfo {
        RelayInfo {
            addr: addr(u16::from(b)),
            public_key: pk(b),
        }
    }
    /// Relay `b` as a friend names it, at a port of its choosing.
    fn named(b: u8, port: u16) -> RelayInfo {
        RelayInfo {
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
            public_key: pk(b),
        }
    }
    fn pool(n: u8) -> RelayPool {
        let mut p = RelayPool::default();
        let t = Instant::now();
        for b in 1..=n {
            assert_eq!(p.learn(t, info(b), Source::Own), Ok(vec![]));
        }
        p
    }
    fn uses(ev: &[PoolEvent]) -> Vec<(PublicKey, RelayInfo)> {
        ev.iter()
            .filter_map(|e| match e {
                PoolEvent::Use { peer, relay } => Some((*peer, *relay)),
                _ => None,
            })
            .collect()
    }
    fn closes(ev: &[PoolEvent]) -> Vec<PublicKey> {
        ev.iter()
            .filter_map(|e| match e {
                PoolEvent::Close { relay } => Some(*relay),
                _ => None,
            })
            .collect()
    }
    /// Runs the pool's timers up to `until`, collecting the events.
    fn run(p: &mut RelayPool, until: Instant) -> Vec<PoolEvent> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            match p.poll_timeout() {
                Some(t) if t <= until => out.extend(p.tick(t)),
                _ => break,
            }
        }
        out
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
        // Does not come back for that peer when others fail meanwhile.
        p.relay_lost(t, Some(pk(100)), pk(2), LossReason::Offline);
        assert!(!p.active(&pk(100)).contains(&pk(1)));
    }

    #[test]
    fn exclusions_expire_slow_after_5_min_tampering_after_30_min() {
        let t = Instant::now();
        let min = Duration::from_secs(60);
        let mut p = pool(3);
        p.add_peer(t, pk(100));
        p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Tampering);
        p.relay_lost(t, Some(pk(100)), pk(2), LossReason::Slow);
        assert_eq!(p.active(&pk(100)), &[pk(3)]);
        assert!(run(&mut p, t + 5 * min - ms(1)).is_empty());
        assert_eq!(p.active(&pk(100)), &[pk(3)]);
        // The slow one returns after 5 minutes, through the timer.
        let ev = run(&mut p, t + 5 * min);
        assert_eq!(uses(&ev), vec![(pk(100), info(2))]);
        assert!(p.is_excluded(t + 5 * min, &pk(100), &pk(1)));
        assert!(run(&mut p, t + 30 * min - ms(1)).is_empty());
        let ev = run(&mut p, t + 30 * min);
        assert_eq!(uses(&ev), vec![(pk(100), info(1))]);
        assert_eq!(p.active(&pk(100)), &[pk(3), pk(2), pk(1)]);
        assert_eq!(p.poll_timeout(), None, "no timer left behind");
    }

    #[test]
    fn exclusions_are_bounded_per_peer() {
        let t = Instant::now();
        let mut p = RelayPool::new(PoolConfig {
            max_excluded: 4,
            ..Default::default()
        });
        for b in 1..=20 {
            p.learn(t, info(b), Source::Own).expect("learn");
        }
        p.add_peer(t, pk(100));
        for b in 1..=20 {
            p.relay_lost(
                t + ms(u64::from(b)),
                Some(pk(100)),
                pk(b),
                LossReason::Tampering,
            );
        }
        let set = &p.peers[&pk(100)];
        assert_eq!(set.excluded.len(), 4);
        // The ones ending first gave way.
        assert!(set.excluded.contains_key(&pk(20)));
        assert!(!set.excluded.contains_key(&pk(1)));
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
        p.link_up(t + ms(6000), &pk(1));
        assert_eq!(p.refill(t + ms(6000), pk(100)).len(), 1);
    }

    #[test]
    fn a_back_off_ending_tops_the_set_up_through_the_timer() {
        let t = Instant::now();
        let mut p = pool(3);
        p.add_peer(t, pk(100));
        p.relay_lost(t, None, pk(1), LossReason::Offline);
        assert_eq!(p.poll_timeout(), Some(t + ms(2000)));
        let ev = run(&mut p, t + ms(2000));
        assert_eq!(uses(&ev), vec![(pk(100), info(1))]);
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
        let t = Instant::now();
        let mut p = RelayPool::new(PoolConfig {
            max_known: 2,
            ..Default::default()
        });
        assert!(p.learn(t, info(1), Source::Own).is_ok());
        assert!(p.learn(t, info(2), Source::Own).is_ok());
        assert_eq!(p.learn(t, info(3), Source::Own), Err(LearnError::Full));
        assert_eq!(
            p.learn(t, named(4, 9), Source::Friend(pk(100))),
            Err(LearnError::Full)
        );
        assert!(p.learn(t, info(1), Source::Own).is_ok(), "a known key");
        assert_eq!(p.known().count(), 2);
    }

    #[test]
    fn friends_cannot_push_out_our_own_relays_but_we_push_out_theirs() {
        let t = Instant::now();
        let mut p = RelayPool::new(PoolConfig {
            max_known: 3,
            ..Default::default()
        });
        p.learn(t, info(1), Source::Own).expect("own");
        p.learn(t, named(2, 2), Source::Friend(pk(100)))
            .expect("friend");
        p.learn(t, named(3, 3), Source::Friend(pk(101)))
            .expect("friend");
        assert_eq!(
            p.learn(t, named(4, 4), Source::Friend(pk(102))),
            Err(LearnError::Full)
        );
        // Our own relay takes the place of the oldest unused friend's one.
        p.learn(t, info(5), Source::Own).expect("own");
        let keys: Vec<PublicKey> = p.known().map(|k| k.public_key).collect();
        assert_eq!(keys, vec![pk(1), pk(3), pk(5)]);
    }

    #[test]
    fn unroutable_relay_addresses_are_refused() {
        let t = Instant::now();
        let mut p = RelayPool::default();
        for a in [
            "0.0.0.0:33445",
            "[::]:33445",
            "10.0.0.1:0",
            "224.0.0.1:33445",
            "255.255.255.255:1",
        ] {
            let a: SocketAddr = a.parse().expect("literal");
            let r = RelayInfo {
                addr: a,
                public_key: pk(1),
            };
            assert_eq!(
                p.learn(t, r, Source::Friend(pk(100))),
                Err(LearnError::BadAddress(a))
            );
            assert_eq!(p.learn(t, r, Source::Own), Err(LearnError::BadAddress(a)));
        }
        assert_eq!(p.known().count(), 0);
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

    // --- Framing (DESIGN.md §3): what friends say about relays. ---

    #[test]
    fn a_friend_poisoning_a_relay_address_cannot_change_how_we_reach_it_or_where_we_probe() {
        let t = Instant::now();
        let mut p = pool(3);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(66));
        p.link_up(t, &pk(1));
        for port in 1..=5 {
            // Five friends (or one, five times) name relay 1 elsewhere.
            let ev = p
                .learn(t, named(1, port), Source::Friend(pk(60 + port as u8)))
                .expect("kept as the friend's word");
            assert!(ev.is_empty(), "{ev:?}");
        }
        assert_eq!(p.known().find(|k| k.public_key == pk(1)), Some(info(1)));
        assert_eq!(p.probe_addr(&pk(1)), Some(addr(1)));
        // Its link going down and the relay coming back change nothing.
        p.relay_lost(t, None, pk(1), LossReason::Offline);
        let ev = run(&mut p, t + ms(2000));
        assert_eq!(uses(&ev), vec![(pk(66), info(1)), (pk(100), info(1))]);
        assert!(closes(&ev).is_empty(), "our own relay keeps its link");
        assert_eq!(p.probe_addr(&pk(1)), Some(addr(1)));
        assert_eq!(p.own_relays().count(), 3, "nothing of theirs is shared on");
        // Only our own word moves it.
        let moved = RelayInfo {
            addr: addr(99),
            public_key: pk(1),
        };
        assert_eq!(
            p.learn(t, moved, Source::Own),
            Ok(vec![PoolEvent::Relink { relay: moved }])
        );
        assert_eq!(p.probe_addr(&pk(1)), Some(addr(99)));
    }

    #[test]
    fn a_friends_relay_serves_only_that_friend_until_our_own_link_proves_it() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(101));
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("learnt");
        assert!(p.refill(t, pk(101)).is_empty(), "not for another friend");
        assert_eq!(
            p.probe_addr(&pk(7)),
            None,
            "a friend's word is no probe address"
        );
        let ev = p.refill(t, pk(100));
        assert_eq!(uses(&ev), vec![(pk(100), named(7, 7))]);
        // Our link comes up there: the probe may go where the link is.
        p.link_up(t + ms(100), &pk(7));
        assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
        assert!(run(&mut p, t + ms(100) + Duration::from_secs(59)).is_empty());
        assert_eq!(p.own_relays().count(), 0);
        // Up for a minute: our own evidence. It serves everyone now.
        let ev = run(&mut p, t + ms(100) + Duration::from_secs(60));
        assert_eq!(uses(&ev), vec![(pk(101), named(7, 7))]);
        assert_eq!(p.own_relays().count(), 1);
        // A friend renaming it afterwards moves nothing.
        p.learn(t, named(7, 666), Source::Friend(pk(100)))
            .expect("kept");
        assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
    }

    #[test]
    fn a_friend_renaming_a_relay_whose_link_is_open_does_not_move_the_link() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(66));
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("good");
        p.refill(t, pk(100));
        p.link_up(t, &pk(7));
        // The framer names the same relay elsewhere, then renames it.
        p.learn(t, named(7, 666), Source::Friend(pk(66)))
            .expect("kept");
        p.learn(t, named(7, 667), Source::Friend(pk(66)))
            .expect("kept");
        let ev = p.refill(t, pk(66));
        assert_eq!(uses(&ev), vec![(pk(66), named(7, 7))], "the link's address");
        assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
        // Its link dropping and coming back keeps the verified address.
        p.relay_lost(t, None, pk(7), LossReason::Offline);
        let ev = run(&mut p, t + ms(2000));
        assert!(uses(&ev).iter().all(|(_, r)| *r == named(7, 7)), "{ev:?}");
    }

    #[test]
    fn a_friends_relay_whose_link_never_comes_up_is_forgotten_not_retried_forever() {
        let t = Instant::now();
        let mut p = pool(3);
        p.add_peer(t, pk(100));
        p.relay_lost(t, Some(pk(100)), pk(3), LossReason::Tampering);
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("learnt");
        assert_eq!(uses(&p.refill(t, pk(100))), vec![(pk(100), named(7, 7))]);
        // Nothing answers there: 12 s later the address failed, the link is
        // closed at once, the relay backed off.
        let ev = run(&mut p, t + Duration::from_secs(12));
        assert!(ev.contains(&PoolEvent::Close { relay: pk(7) }), "{ev:?}");
        assert!(!p.active(&pk(100)).contains(&pk(7)));
        // Tried once more after the back-off, fails again: forgotten.
        let ev = run(&mut p, t + Duration::from_secs(60));
        assert_eq!(uses(&ev), vec![(pk(100), named(7, 7))]);
        assert_eq!(closes(&ev), vec![pk(7)]);
        assert!(p.known().all(|k| k.public_key != pk(7)));
        let later = run(&mut p, t + Duration::from_secs(3600));
        assert!(uses(&later).iter().all(|(_, r)| r.public_key != pk(7)));
        assert!(closes(&later).is_empty());
    }

    #[test]
    fn a_link_that_dies_before_coming_up_moves_to_the_next_named_address() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        p.add_peer(t, pk(101));
        p.learn(t, named(7, 666), Source::Friend(pk(66)))
            .expect("first, bad");
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("second");
        p.learn(t, named(7, 7), Source::Friend(pk(101)))
            .expect("third");
        assert_eq!(uses(&p.refill(t, pk(100))), vec![(pk(100), named(7, 666))]);
        // The relay handshake at the framer's address fails (wrong key).
        let ev = p.relay_lost(t + ms(100), None, pk(7), LossReason::Offline);
        assert!(ev.contains(&PoolEvent::Close { relay: pk(7) }), "{ev:?}");
        let ev = run(&mut p, t + ms(2100));
        assert_eq!(
            uses(&ev),
            vec![(pk(100), named(7, 7)), (pk(101), named(7, 7))]
        );
        p.link_up(t + ms(2200), &pk(7));
        assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
    }

    #[test]
    fn a_friend_keeps_at_most_four_relays_the_oldest_unused_gives_way() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        for b in 1..=4 {
            p.learn(t, named(b, u16::from(b)), Source::Friend(pk(100)))
                .expect("within the cap");
        }
        // Three are in use (the target); the fourth is a spare.
        p.refill(t, pk(100));
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
        p.learn(t, named(5, 5), Source::Friend(pk(100)))
            .expect("replaces 4");
        let keys: Vec<PublicKey> = p.known().map(|k| k.public_key).collect();
        assert_eq!(keys, vec![pk(1), pk(2), pk(3), pk(5)]);
        // Renaming one it has is no new entry.
        p.learn(t, named(1, 11), Source::Friend(pk(100)))
            .expect("update");
        assert_eq!(p.known().count(), 4);
        // All four in use: a fifth is refused.
        p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Offline);
        assert_eq!(p.active(&pk(100)), &[pk(2), pk(3), pk(5)]);
        p.peer_left(t + ms(2000), pk(100), pk(2));
        assert_eq!(p.active(&pk(100)).len(), 4);
        assert_eq!(
            p.learn(t, named(6, 6), Source::Friend(pk(100))),
            Err(LearnError::FriendFull(4))
        );
    }

    #[test]
    fn an_unused_link_to_a_friends_relay_is_closed_after_2_s() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("learnt");
        p.refill(t, pk(100));
        p.link_up(t, &pk(7));
        p.remove_peer(&pk(100));
        assert!(run(&mut p, t + ms(1999)).is_empty());
        assert_eq!(closes(&run(&mut p, t + ms(2000))), vec![pk(7)]);
        assert!(!p.is_linked(&pk(7)));
        assert_eq!(p.probe_addr(&pk(7)), None);
    }

    #[test]
    fn a_link_the_pool_asked_to_close_proves_nothing_when_it_comes_up() {
        let t = Instant::now();
        let mut p = pool(0);
        p.add_peer(t, pk(100));
        p.learn(t, named(7, 7), Source::Friend(pk(100)))
            .expect("learnt");
        p.refill(t, pk(100));
        p.remove_peer(&pk(100));
        assert_eq!(closes(&run(&mut p, t + ms(2000))), vec![pk(7)]);
        // Kept open by a self-probe, renamed meanwhile, and up again.
        p.learn(t, named(7, 666), Source::Friend(pk(100)))
            .expect("renamed");
        p.link_up(t + ms(2100), &pk(7));
        assert_eq!(p.probe_addr(&pk(7)), None);
        assert_eq!(p.poll_timeout(), None, "and nothing to prove");
    }

    #[test]
    fn friends_addresses_per_relay_are_bounded() {
        let t = Instant::now();
        let mut p = pool(1);
        for f in 0..50u8 {
            p.learn(t, named(1, 100 + u16::from(f)), Source::Friend(pk(100 + f)))
                .expect("kept");
        }
        assert_eq!(p.known[0].named.len(), PoolConfig::default().max_namers);
        assert_eq!(p.known().count(), 1);
    }
}
