//! What a session hands out: datagrams to send ([`Transmit`]) and events for
//! the owner and the application ([`Event`]).

use crate::crypto::PublicKey;

/// What a transmitted datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransmitKind {
    /// A cookie request (145 bytes).
    CookieRequest,
    /// A cookie response (161 bytes; from the node's responder).
    CookieResponse,
    /// A handshake (385 bytes).
    Handshake,
    /// A data packet.
    Data(DataKind),
}

/// What a data packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataKind {
    /// A lossless packet.
    Lossless {
        /// Its packet number.
        number: u32,
        /// Not its first transmission.
        retransmission: bool,
    },
    /// A lossy packet.
    Lossy,
    /// A request packet (acknowledgements and missing-packet list).
    Request,
    /// A kill packet.
    Kill,
}

/// A datagram written into the caller's buffer by
/// [`Session::poll_transmit`](super::Session::poll_transmit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// What it is.
    pub kind: TransmitKind,
}

/// Something the owner or the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection is established (a data packet from the peer decrypted).
    Established,
    /// The next lossless packet, in order (id byte first).
    Lossless(Vec<u8>),
    /// A lossy packet (id byte first); may be reordered or missing.
    Lossy(Vec<u8>),
    /// The peer sent an authenticated KILL. Terminal.
    Killed,
    /// The handshake did not complete in time. Terminal.
    HandshakeTimeout,
    /// A handshake named a different DHT key for the peer (§4.4): the owner
    /// should kill this session and connect again.
    PeerDhtKeyChanged {
        /// The new DHT key.
        dht: PublicKey,
    },
}
