//! What the node tells its owner besides data: path events of one peer and
//! node-wide relay events, in bounded queues.

use super::*;

/// Path and relay events queued for the owner (the oldest are dropped
/// beyond).
pub(super) const MAX_PATH_EVENTS: usize = 1024;

/// Why a path changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathReason {
    /// A packet sent on this path alone was acknowledged.
    Proven,
    /// Packets sent on it were not acknowledged within its timeout.
    NoProof,
    /// The transport closed it (UDP path reported closed, relay link down,
    /// the peer left the relay, the relay was dropped).
    Closed,
}

/// What happened to a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEventKind<A> {
    /// The path's health changed. On `Dead`, `resent` packets that were
    /// stranded on it were handed back to the session for resending at once.
    Health {
        /// Previous state.
        old: Health,
        /// New state.
        new: Health,
        /// Why.
        reason: PathReason,
        /// Lossless packets resent at once because of this change.
        resent: usize,
    },
    /// The primary path changed (from `from`, if there was one).
    Primary {
        /// Previous primary route.
        from: Option<Route<A>>,
    },
    /// The relay pool started using this relay for the peer.
    RelayAdded,
    /// The relay left the peer's set (and was replaced where possible).
    RelayDropped {
        /// Why.
        reason: LossReason,
    },
    /// A packet from the peer through this relay failed authentication.
    AuthFailure {
        /// Failures counted for (relay, peer) in the blame window.
        failures: usize,
    },
}

/// A path event of one peer (see [`Node::poll_path_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEvent<A> {
    /// The peer.
    pub peer: PublicKey,
    /// The path.
    pub addr: Route<A>,
    /// When.
    pub at: Instant,
    /// What.
    pub kind: PathEventKind<A>,
}

/// Node-wide relay events (see [`Node::poll_relay_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A relay link finished its handshake.
    Up {
        /// The relay.
        relay: PublicKey,
    },
    /// A relay link died (it is reconnected with back-off).
    Down {
        /// The relay.
        relay: PublicKey,
    },
    /// A self-probe through the relay started.
    ProbeStarted {
        /// The relay.
        relay: PublicKey,
    },
    /// A self-probe ended.
    Probed(ProbeOutcome),
    /// The relay was disconnected for everyone.
    Disconnected {
        /// The relay.
        relay: PublicKey,
        /// Why.
        reason: DisconnectReason,
    },
}

/// What the node tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The peer (real public key).
    pub peer: PublicKey,
    /// What happened.
    pub event: Event,
}

impl<A: Addr> Node<A> {
    pub(super) fn push_path_event(&mut self, e: PathEvent<A>) {
        if self.path_events.len() >= MAX_PATH_EVENTS {
            self.path_events.pop_front();
        }
        tracing::debug!(peer = ?e.peer, addr = ?e.addr, kind = ?e.kind, "path event");
        self.path_events.push_back(e);
    }

    pub(super) fn push_relay_event(&mut self, e: RelayEvent) {
        if self.relay_events.len() >= MAX_PATH_EVENTS {
            self.relay_events.pop_front();
        }
        tracing::debug!(event = ?e, "relay event");
        self.relay_events.push_back(e);
    }
}
