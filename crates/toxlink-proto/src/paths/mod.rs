//! Multipath: one net_crypto connection over direct UDP and several relays at
//! once (docs/DESIGN.md §3).
//!
//! The receiver side of net_crypto is already path-agnostic (a data packet is
//! accepted from any path, deduplicated by packet number and delivered in
//! order), so everything here is about *sending* and about *weighing
//! evidence*:
//!
//! * [`health`]: per-path RTT and loss estimators and a timer-free health
//!   reducer (unproven → healthy → suspect → dead) in which only proof of
//!   delivery of a packet *we sent recently* counts, so a stale packet
//!   released late by a stalled relay cannot keep a black-holed path alive.
//! * [`table`]: the path table of one connection: which lossless packet went
//!   on which path(s), acknowledgements and losses attributed per path, and
//!   the list of packets to resend at once when a path dies.
//! * [`scheduler`]: picks the primary path (confirmed UDP beats relays; among
//!   relays the lowest RTT with low loss), a secondary one while the primary is
//!   unconfirmed or has just changed, with hysteresis against flapping.
//! * [`blame`]: authentication failures counted per (relay, peer); a relay is
//!   dropped for one peer on that peer's evidence, and disconnected for
//!   everyone only on our own (failed self-probes) — never on friends' word,
//!   however many friends.
//! * [`pool`]: the relays kept per peer (default 3, at most 6) and their
//!   replacement, with one code path for "offline", "slow" and "tampering";
//!   where each relay came from (ours, or a friend's word, which serves only
//!   that friend and never moves how we reach a relay or where we probe it).
//!
//! All of it is sans-IO: inputs carry `now`, nothing reads a clock.

pub mod blame;
pub mod health;
pub mod pool;
pub mod scheduler;
pub mod table;

/// Small constructors shared by the unit tests of this module.
#[cfg(test)]
pub(crate) mod test_util {
    use super::PathKey;
    use crate::crypto::PublicKey;
    use std::time::Duration;

    pub(crate) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    pub(crate) fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }
    pub(crate) fn relay(b: u8) -> PathKey {
        PathKey::Relay(pk(b))
    }
    pub(crate) fn udp() -> PathKey {
        PathKey::Direct(super::PathId(1))
    }
    /// A path table (default health settings) holding `paths`.
    pub(crate) fn table_with(paths: &[PathKey]) -> super::table::PathTable {
        let mut tab = super::table::PathTable::new(super::health::HealthConfig::default());
        for &p in paths {
            tab.add_path(p);
        }
        tab
    }
}

use crate::crypto::PublicKey;
use std::fmt;

/// The identity of one path of a session, given by its owner (the node's
/// route book): opaque to the session and to this module, which never see
/// an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u32);

/// A path as the path table knows it: a direct path by its [`PathId`], a
/// relay path by the relay's key (blame, the pool and relay scoring are
/// per relay). The node's route book maps either to the real address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PathKey {
    /// Direct UDP (the address is the route book's).
    Direct(PathId),
    /// Through the TCP relay with this public key.
    Relay(PublicKey),
}

impl PathKey {
    /// Whether this is a direct UDP path.
    pub fn is_direct(&self) -> bool {
        matches!(self, PathKey::Direct(_))
    }

    /// Whether this is a relay path.
    pub fn is_relay(&self) -> bool {
        matches!(self, PathKey::Relay(_))
    }

    /// The relay key, for relay paths.
    pub fn relay(&self) -> Option<&PublicKey> {
        match self {
            PathKey::Relay(pk) => Some(pk),
            PathKey::Direct(_) => None,
        }
    }
}

impl fmt::Debug for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathKey::Direct(id) => write!(f, "direct#{}", id.0),
            PathKey::Relay(pk) => write!(f, "relay:{}", &pk.to_hex()[..8]),
        }
    }
}

impl fmt::Display for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
