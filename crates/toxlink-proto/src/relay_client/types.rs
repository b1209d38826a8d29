//! Configuration, states, errors, events and counters of one relay link.

use crate::crypto::PublicKey;
use std::time::Duration;

/// Timers and limits of one relay link.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// PING interval once connected.
    pub ping_interval: Duration,
    /// The link is dead after this long without any frame from the relay.
    pub dead_after: Duration,
    /// Handshake must complete within this time of [`Client::new`](super::Client::new).
    pub handshake_timeout: Duration,
    /// Bound on queued DATA/OOB bytes.
    pub queue_bytes: usize,
    /// Bound on queued priority bytes (hello, PING, PONG, routing requests
    /// and notifications, 19–51 bytes a frame). Past it the link dies with
    /// [`LinkDownReason::NotReading`]; at least 16 KiB is used, so that
    /// 240 routing requests and a PING (12.3 KB) always fit.
    pub priority_queue_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            queue_bytes: 512 * 1024,
            priority_queue_bytes: 32 * 1024,
        }
    }
}

/// State of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Hello sent, waiting for the 96-byte reply.
    Handshaking,
    /// Handshake done.
    Connected,
    /// Dead; see the reason.
    Disconnected(LinkDownReason),
}

/// Why a link died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkDownReason {
    /// The reply did not decrypt (wrong relay key?).
    HandshakeFailed,
    /// No reply within the handshake timeout.
    HandshakeTimeout,
    /// Nothing received within `dead_after`.
    Timeout,
    /// A frame failed authentication.
    BadTag,
    /// A frame with `L > 2048`.
    Oversized,
    /// A frame that breaks §2.6 (bad length, id the server may not send,
    /// PONG 0, slot below 16).
    ProtocolViolation,
    /// The runtime reported the TCP connection closed.
    Closed,
    /// Closed locally with [`Client::close`](super::Client::close).
    Local,
    /// The relay does not read what we send while it keeps asking for
    /// replies (PINGs, routing responses to give back): the priority queue
    /// reached [`ClientConfig::priority_queue_bytes`]. A misbehaving (or
    /// hopelessly congested) relay, dropped instead of growing our memory.
    NotReading,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkSendError {
    /// The link is not connected.
    #[error("relay link not connected")]
    NotConnected,
    /// The peer is not ONLINE on this relay (DATA needs both routes).
    #[error("peer not online on this relay")]
    NotOnline,
    /// The send queue is full; try later (data is never queued past the bound).
    #[error("relay send queue full")]
    QueueFull,
    /// Empty or larger than the packet allows.
    #[error("bad payload size {0}")]
    BadSize(usize),
}

/// Why a route could not be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Already 240 peers on this link.
    #[error("no free slot on this relay link")]
    NoSlot,
    /// The link is dead.
    #[error("relay link is disconnected")]
    Disconnected,
}

/// What a link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Handshake done.
    Connected,
    /// The relay gave `peer` slot `slot` (wire id): REGISTERED.
    RouteResponse {
        /// The peer.
        peer: PublicKey,
        /// Wire id (16..=255).
        slot: u8,
    },
    /// The relay refused a route (slot 0).
    RouteRefused {
        /// The peer.
        peer: PublicKey,
    },
    /// Both routed: ONLINE, DATA can flow.
    PeerOnline {
        /// The peer.
        peer: PublicKey,
    },
    /// The peer's route ended (back to REGISTERED, or the link died).
    PeerOffline {
        /// The peer.
        peer: PublicKey,
    },
    /// DATA from a routed peer.
    Data {
        /// The peer.
        peer: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// OOB data from any key.
    Oob {
        /// Sender key.
        from: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// A PONG answered our PING after `rtt`.
    Rtt {
        /// The sample.
        rtt: Duration,
    },
    /// The link died.
    Disconnected {
        /// Why.
        reason: LinkDownReason,
    },
}

/// Routing state of one peer on this link (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteState {
    /// Routing request sent (or to be sent once connected).
    Requested,
    /// Slot granted, peer not (yet) routed to us.
    Registered {
        /// Wire id.
        slot: u8,
    },
    /// Both routed.
    Online {
        /// Wire id.
        slot: u8,
    },
}

/// Statistics of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// DATA packets sent (queued).
    pub data_sent: u64,
    /// DATA bytes sent.
    pub data_bytes_sent: u64,
    /// DATA packets received.
    pub data_received: u64,
    /// DATA bytes received.
    pub data_bytes_received: u64,
    /// OOB packets sent.
    pub oob_sent: u64,
    /// OOB packets received.
    pub oob_received: u64,
    /// Sends refused with [`LinkSendError::QueueFull`].
    pub queue_full: u64,
    /// PONGs received that matched.
    pub pongs: u64,
    /// DATA on a slot we do not know, onion/forwarding replies: ignored.
    pub ignored: u64,
}
