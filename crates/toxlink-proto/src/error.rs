//! Why an incoming packet was dropped, and why a send was refused: one
//! taxonomy for the whole crate.
//!
//! Dropping is always silent on the wire (docs/PROTOCOL.md §6); a [`DropReason`]
//! is for counters, logs, tests and, above all, for the owner's decisions.
//! Its top-level kind says *whose fault* a drop is, which is what a caller
//! keys on:
//!
//! * [`DropReason::Malformed`]: the bytes do not parse (no cryptography was
//!   involved; anybody on the path can produce them).
//! * [`DropReason::Misbehaved`]: the packet failed authentication or broke the
//!   protocol inside an authenticated box: evidence against the path that
//!   carried it (relay blame keys on [`Misbehavior::DataAuth`]).
//! * [`DropReason::UnknownRoute`]: nobody here expects packets from that
//!   source.
//! * [`DropReason::Refused`]: well-formed, but not acceptable now: not
//!   allowed, the wrong state, a duplicate or stale packet.
//! * [`DropReason::Overloaded`]: refused to protect our own resources (a
//!   full queue, a rate limit); the sender did nothing wrong.
//!
//! The handshake validators keep their detailed [`HandshakeError`] (like
//! the parsers' [`WireError`]); `From<HandshakeError>` files each of its
//! cases under the right kind.

use crate::session::handshake::HandshakeError;
use crate::session::State;
use crate::wire::net_crypto::COOKIE_RESPONSE_SIZE;
use crate::wire::WireError;

/// Why an incoming datagram was dropped. See the module documentation.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// The bytes do not parse: empty, an unknown first byte, a bad length.
    #[error("malformed: {0}")]
    Malformed(WireError),
    /// Authentication failed, or authenticated content breaks the protocol.
    #[error("misbehaved: {0}")]
    Misbehaved(Misbehavior),
    /// No connection or peer is known for the source it came from.
    #[error("unknown route")]
    UnknownRoute,
    /// Well-formed but not acceptable now.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// Dropped to protect our resources.
    #[error("overloaded: {0}")]
    Overloaded(Overload),
}

/// Evidence of a misbehaving sender or path (see [`DropReason::Misbehaved`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misbehavior {
    /// A data packet did not authenticate under the session key (forged or
    /// corrupted on the path that carried it).
    #[error("data packet failed authentication")]
    DataAuth,
    /// A handshake-phase box (cookie, cookie request or response, handshake)
    /// did not authenticate.
    #[error("{0}: authentication failed")]
    HandshakeAuth(&'static str),
    /// A handshake's inner cookie hash does not match its outer cookie.
    #[error("cookie hash mismatch")]
    CookieHash,
    /// A key in the packet is a low-order X25519 point (refused like
    /// libsodium and c-toxcore do).
    #[error("{0}: low-order public key")]
    LowOrderKey(&'static str),
    /// Authenticated content the protocol forbids: only padding, an
    /// acknowledgement of numbers never sent, a reserved packet id.
    #[error("invalid content in an authenticated packet")]
    InvalidContent,
}

/// Why a well-formed packet is not acceptable now (see
/// [`DropReason::Refused`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not expected in this connection state.
    #[error("unexpected in state {0:?}")]
    WrongState(State),
    /// The peer named in the packet is not allowed to connect.
    #[error("peer not allowed")]
    NotAllowed,
    /// A datagram already processed (same nonce), or one from a previous
    /// nonce window: old, not forged.
    #[error("duplicate or stale datagram")]
    Duplicate,
    /// A cookie older than 15 s or from the future.
    #[error("stale cookie")]
    StaleCookie,
    /// A cookie that names another peer than the one expected.
    #[error("cookie for an unexpected peer")]
    UnexpectedPeer,
    /// A cookie response whose echo id is not the one we sent.
    #[error("echo id mismatch")]
    EchoMismatch,
    /// A handshake relayed under another sender key than the DHT key it
    /// names (a replay by someone else).
    #[error("handshake from another sender")]
    WrongSender,
    /// From a UDP address the owner blocked (`Node::set_udp_blocked`).
    #[error("from a blocked address")]
    Blocked,
}

/// Which of our resources refused the packet (see
/// [`DropReason::Overloaded`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    /// A bounded queue is full.
    #[error("queue full")]
    QueueFull,
    /// A rate limit (token bucket) is exhausted.
    #[error("rate limited")]
    RateLimited,
}

impl From<HandshakeError> for DropReason {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Malformed { kind, len } => {
                DropReason::Malformed(WireError::BadLength { kind, len })
            }
            HandshakeError::Auth(what) => DropReason::Misbehaved(Misbehavior::HandshakeAuth(what)),
            HandshakeError::BadHash => DropReason::Misbehaved(Misbehavior::CookieHash),
            HandshakeError::LowOrderKey(what) => {
                DropReason::Misbehaved(Misbehavior::LowOrderKey(what))
            }
            HandshakeError::StaleCookie => DropReason::Refused(Refusal::StaleCookie),
            HandshakeError::UnexpectedPeer => DropReason::Refused(Refusal::UnexpectedPeer),
            HandshakeError::NotAllowed => DropReason::Refused(Refusal::NotAllowed),
            HandshakeError::EchoMismatch => DropReason::Refused(Refusal::EchoMismatch),
            HandshakeError::RateLimited => DropReason::Overloaded(Overload::RateLimited),
            // Only a caller's output buffer shorter than a cookie response
            // (the one answer a handshake-phase packet gets).
            HandshakeError::BufferTooSmall => DropReason::Malformed(WireError::BufferTooSmall {
                need: COOKIE_RESPONSE_SIZE,
                have: 0,
            }),
        }
    }
}

/// Why a session refused data to send.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The send buffer (or lossy queue) is full: retry after events or acks.
    #[error("send buffer full")]
    BufferFull,
    /// The connection is not established yet.
    #[error("connection not established")]
    NotEstablished,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// Data must be 1..=1373 bytes.
    #[error("bad data length {0}")]
    BadLength(usize),
    /// The id byte is not in the range of this kind of packet.
    #[error("packet id {0} not allowed here")]
    BadId(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_are_filed_by_fault() {
        let m = DropReason::from(HandshakeError::Malformed {
            kind: "handshake",
            len: 3,
        });
        assert!(matches!(m, DropReason::Malformed(_)));
        assert_eq!(m.to_string(), "malformed: handshake: bad length 3");
        assert_eq!(
            DropReason::from(HandshakeError::Auth("cookie")),
            DropReason::Misbehaved(Misbehavior::HandshakeAuth("cookie"))
        );
        assert_eq!(
            DropReason::from(HandshakeError::StaleCookie),
            DropReason::Refused(Refusal::StaleCookie)
        );
        assert_eq!(
            DropReason::from(HandshakeError::RateLimited),
            DropReason::Overloaded(Overload::RateLimited)
        );
        assert_eq!(
            DropReason::Misbehaved(Misbehavior::DataAuth).to_string(),
            "misbehaved: data packet failed authentication"
        );
        assert_eq!(
            DropReason::Refused(Refusal::WrongState(State::Closed)).to_string(),
            "refused: unexpected in state Closed"
        );
    }
}
