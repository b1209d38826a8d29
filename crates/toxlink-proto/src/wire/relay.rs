//! The TCP relay wire format (docs/PROTOCOL.md §2.2–2.4).
//!
//! * [`HandshakeRequest`] (128 bytes, client → server) and
//!   [`HandshakeResponse`] (96 bytes, server → client), each carrying a sealed
//!   [`HandshakePayload`] (temp public key ‖ base nonce).
//! * After the handshake the stream is a sequence of frames
//!   `BE16(L) ‖ Box(session key, nonce_i, P)`, `L = |P| + 16 ≤ 2048`.
//!   [`split_frame`] finds frames in a receive buffer, [`SecureChannel`]
//!   seals and opens them with each side's nonce counter.
//! * [`RelayPacket`] is the plaintext `P`: ids 0–11 and DATA 16–255.
//!
//! Parsing is permissive about *values* that the state machines judge (slot
//! numbers, ping ids) and strict about *lengths*: every fixed-size packet must
//! have its exact size, as c-toxcore closes the link otherwise (§2.5, §2.6).

use super::packed::{PackedIpPort, Transport};
use super::{array, out_slice, WireError};
use crate::crypto::{Nonce, PublicKey, SharedKey, MAC_SIZE, NONCE_SIZE, PUBLIC_KEY_SIZE};

/// Client hello size (`TCP_CLIENT_HANDSHAKE_SIZE`).
pub const HANDSHAKE_REQUEST_SIZE: usize = 128;
/// Server reply size (`TCP_SERVER_HANDSHAKE_SIZE`).
pub const HANDSHAKE_RESPONSE_SIZE: usize = 96;
/// Plaintext of either handshake: temp public key ‖ base nonce.
pub const HANDSHAKE_PAYLOAD_SIZE: usize = PUBLIC_KEY_SIZE + NONCE_SIZE;
const SEALED_PAYLOAD_SIZE: usize = HANDSHAKE_PAYLOAD_SIZE + MAC_SIZE;
/// Largest `L` (box size) of a frame (`MAX_PACKET_SIZE`).
pub const MAX_FRAME_BOX: usize = 2048;
/// Largest frame plaintext.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME_BOX - MAC_SIZE;
/// Largest frame on the wire, length prefix included.
pub const MAX_FRAME_SIZE: usize = 2 + MAX_FRAME_BOX;
/// Bytes a frame adds to its plaintext (length prefix and tag).
pub const FRAME_OVERHEAD: usize = 2 + MAC_SIZE;
/// Connection ids below this are packet types, not slots.
pub const NUM_RESERVED_PORTS: u8 = 16;
/// Slots per relay link (`NUM_CLIENT_CONNECTIONS`).
pub const NUM_CLIENT_CONNECTIONS: usize = 240;
/// Largest OOB payload.
pub const MAX_OOB_DATA: usize = 1024;
/// Largest FORWARD_REQUEST payload (`MAX_FORWARD_DATA_SIZE`).
pub const MAX_FORWARD_DATA: usize = 1792;

/// Packet ids (first plaintext byte of a frame).
pub mod id {
    /// Client asks for a slot to a peer key.
    pub const ROUTING_REQUEST: u8 = 0;
    /// Server's answer with the slot (0 = refused).
    pub const ROUTING_RESPONSE: u8 = 1;
    /// Both sides of a slot have routed to each other.
    pub const CONNECT_NOTIFICATION: u8 = 2;
    /// A slot's pairing ended.
    pub const DISCONNECT_NOTIFICATION: u8 = 3;
    /// Keep-alive request.
    pub const PING: u8 = 4;
    /// Keep-alive answer.
    pub const PONG: u8 = 5;
    /// Client sends data to a key without a route.
    pub const OOB_SEND: u8 = 6;
    /// Server delivers OOB data.
    pub const OOB_RECV: u8 = 7;
    /// Onion request (client → server).
    pub const ONION_REQUEST: u8 = 8;
    /// Onion response (server → client).
    pub const ONION_RESPONSE: u8 = 9;
    /// Forward request (client → server).
    pub const FORWARD_REQUEST: u8 = 10;
    /// Forwarded reply (server → client).
    pub const FORWARDING: u8 = 11;
}

/// The sealed part of a handshake: the sender's temporary public key and the
/// base nonce it will encrypt its own frames from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePayload {
    /// Session (temporary) public key.
    pub temp_pk: PublicKey,
    /// First nonce of the sender's outgoing frames.
    pub base_nonce: Nonce,
}

impl HandshakePayload {
    /// `temp_pk ‖ base_nonce`.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_PAYLOAD_SIZE] {
        let mut b = [0u8; HANDSHAKE_PAYLOAD_SIZE];
        b[..32].copy_from_slice(&self.temp_pk.0);
        b[32..].copy_from_slice(&self.base_nonce.0);
        b
    }

    /// The inverse of [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(b: &[u8; HANDSHAKE_PAYLOAD_SIZE]) -> Self {
        HandshakePayload {
            temp_pk: PublicKey(array(b, 0)),
            base_nonce: Nonce(array(b, 32)),
        }
    }

    fn seal(&self, key: &SharedKey, nonce: &Nonce) -> [u8; SEALED_PAYLOAD_SIZE] {
        let mut out = [0u8; SEALED_PAYLOAD_SIZE];
        out[MAC_SIZE..].copy_from_slice(&self.to_bytes());
        // The plaintext is 56 bytes, never empty, so sealing cannot fail.
        let _ = key.seal_in_place(nonce, &mut out);
        out
    }

    fn open(
        key: &SharedKey,
        nonce: &Nonce,
        sealed: &[u8; SEALED_PAYLOAD_SIZE],
    ) -> Result<Self, WireError> {
        let mut buf = *sealed;
        let plain = key.open_in_place(nonce, &mut buf)?;
        Ok(Self::from_bytes(&array(plain, 0)))
    }
}

/// Client hello: `client pk (32) ‖ nonce (24) ‖ Box(K(c, S), nonce, payload)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The client's static public key.
    pub client_pk: PublicKey,
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`HandshakePayload`].
    pub sealed: [u8; SEALED_PAYLOAD_SIZE],
}

impl HandshakeRequest {
    /// Seals `payload` with `key = K(client sk, server pk)`.
    pub fn seal(
        client_pk: PublicKey,
        key: &SharedKey,
        nonce: Nonce,
        payload: &HandshakePayload,
    ) -> Self {
        HandshakeRequest {
            client_pk,
            nonce,
            sealed: payload.seal(key, &nonce),
        }
    }

    /// Opens the payload with `key = K(server sk, client pk)`.
    pub fn open(&self, key: &SharedKey) -> Result<HandshakePayload, WireError> {
        HandshakePayload::open(key, &self.nonce, &self.sealed)
    }

    /// Parses exactly 128 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != HANDSHAKE_REQUEST_SIZE {
            return Err(WireError::BadLength {
                kind: "relay handshake request",
                len: b.len(),
            });
        }
        Ok(HandshakeRequest {
            client_pk: PublicKey(array(b, 0)),
            nonce: Nonce(array(b, 32)),
            sealed: array(b, 56),
        })
    }

    /// The 128 wire bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_REQUEST_SIZE] {
        let mut b = [0u8; HANDSHAKE_REQUEST_SIZE];
        b[..32].copy_from_slice(&self.client_pk.0);
        b[32..56].copy_from_slice(&self.nonce.0);
        b[56..].copy_from_slice(&self.sealed);
        b
    }
}

/// Server reply: `nonce (24) ‖ Box(K(s, C), nonce, payload)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`HandshakePayload`].
    pub sealed: [u8; SEALED_PAYLOAD_SIZE],
}

impl HandshakeResponse {
    /// Seals `payload` with `key = K(server sk, client pk)`.
    pub fn seal(key: &SharedKey, nonce: Nonce, payload: &HandshakePayload) -> Self {
        HandshakeResponse {
            nonce,
            sealed: payload.seal(key, &nonce),
        }
    }

    /// Opens the payload with `key = K(client sk, server pk)`.
    pub fn open(&self, key: &SharedKey) -> Result<HandshakePayload, WireError> {
        HandshakePayload::open(key, &self.nonce, &self.sealed)
    }

    /// Parses exactly 96 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != HANDSHAKE_RESPONSE_SIZE {
            return Err(WireError::BadLength {
                kind: "relay handshake response",
                len: b.len(),
            });
        }
        Ok(HandshakeResponse {
            nonce: Nonce(array(b, 0)),
            sealed: array(b, 24),
        })
    }

    /// The 96 wire bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_RESPONSE_SIZE] {
        let mut b = [0u8; HANDSHAKE_RESPONSE_SIZE];
        b[..24].copy_from_slice(&self.nonce.0);
        b[24..].copy_from_slice(&self.sealed);
        b
    }
}

/// Where the next frame lies in a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameSplit {
    /// Not enough bytes yet.
    Incomplete,
    /// A frame with `L = 0`: c-toxcore's reader skips these (2 bytes); we
    /// do the same but never send one.
    Empty,
    /// A complete frame: its box is `buf[2..2 + box_len]`.
    Frame {
        /// `L`, the box length.
        box_len: usize,
    },
}

impl FrameSplit {
    /// Bytes of the buffer this split consumes (0 when incomplete).
    pub fn consumed(&self) -> usize {
        match self {
            FrameSplit::Incomplete => 0,
            FrameSplit::Empty => 2,
            FrameSplit::Frame { box_len } => 2 + box_len,
        }
    }
}

/// Collects a fixed-size handshake message (`size` bytes: a request or a
/// response) from a stream that may deliver it in pieces: takes what is
/// missing from the front of `input` into `acc` and returns the whole
/// message once complete (`acc` is emptied), with the rest of `input`.
pub fn take_handshake<'a>(
    acc: &mut Vec<u8>,
    input: &'a mut [u8],
    size: usize,
) -> (Option<Vec<u8>>, &'a mut [u8]) {
    let take = size.saturating_sub(acc.len()).min(input.len());
    acc.extend_from_slice(&input[..take]);
    let rest = &mut input[take..];
    if acc.len() < size {
        return (None, rest);
    }
    (Some(std::mem::take(acc)), rest)
}

/// Looks at the start of a receive buffer for the next frame. An `L` above
/// [`MAX_FRAME_BOX`] is an error (the link must be closed); it is reported as
/// soon as the two length bytes are there.
pub fn split_frame(buf: &[u8]) -> Result<FrameSplit, WireError> {
    let Some(len) = buf.get(..2) else {
        return Ok(FrameSplit::Incomplete);
    };
    let box_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if box_len > MAX_FRAME_BOX {
        return Err(WireError::BadLength {
            kind: "relay frame",
            len: box_len,
        });
    }
    if box_len == 0 {
        return Ok(FrameSplit::Empty);
    }
    if buf.len() < 2 + box_len {
        return Ok(FrameSplit::Incomplete);
    }
    Ok(FrameSplit::Frame { box_len })
}

/// The encrypted frame stream of one relay link after its handshake: the
/// session key and both nonce counters. Each side seals from the base nonce it
/// announced itself and opens from the one the peer announced (§2.2).
#[derive(Debug, Clone)]
pub struct SecureChannel {
    key: SharedKey,
    tx_nonce: Nonce,
    rx_nonce: Nonce,
}

impl SecureChannel {
    /// `key = K(own temp sk, peer temp pk)`; `tx_nonce` = our announced base
    /// nonce; `rx_nonce` = the peer's.
    pub fn new(key: SharedKey, tx_nonce: Nonce, rx_nonce: Nonce) -> Self {
        SecureChannel {
            key,
            tx_nonce,
            rx_nonce,
        }
    }

    /// Encodes `packet` as one frame into `out` (`BE16(L) ‖ box`) and
    /// advances the send nonce; returns the frame length.
    pub fn seal_packet(
        &mut self,
        packet: &RelayPacket<'_>,
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        let plain_len = packet.encoded_len();
        if plain_len > MAX_FRAME_PLAINTEXT {
            return Err(WireError::BadLength {
                kind: "relay frame plaintext",
                len: plain_len,
            });
        }
        let total = FRAME_OVERHEAD + plain_len;
        let o = out_slice(out, total)?;
        packet.encode(&mut o[FRAME_OVERHEAD..])?;
        self.seal_in_place(o)?;
        Ok(total)
    }

    /// Seals a frame laid out in `frame` as `[2 free bytes][16 free
    /// bytes][plaintext]`: writes the length and tag and encrypts in place.
    pub fn seal_in_place(&mut self, frame: &mut [u8]) -> Result<(), WireError> {
        let box_len = frame.len().saturating_sub(2);
        if box_len > MAX_FRAME_BOX || frame.len() <= FRAME_OVERHEAD {
            return Err(WireError::BadLength {
                kind: "relay frame",
                len: box_len,
            });
        }
        frame[..2].copy_from_slice(&(box_len as u16).to_be_bytes());
        self.key.seal_in_place(&self.tx_nonce, &mut frame[2..])?;
        self.tx_nonce.increment();
        Ok(())
    }

    /// Opens one frame box (the `L` bytes after the length prefix) in place
    /// and advances the receive nonce; returns the plaintext. On failure the
    /// nonce is not advanced and the link must be closed (§2.3).
    pub fn open_in_place<'a>(&mut self, frame_box: &'a mut [u8]) -> Result<&'a [u8], WireError> {
        let plain = self.key.open_in_place(&self.rx_nonce, frame_box)?;
        self.rx_nonce.increment();
        Ok(plain)
    }

    /// The nonce the next outgoing frame will use.
    pub fn tx_nonce(&self) -> &Nonce {
        &self.tx_nonce
    }

    /// The nonce the next incoming frame must use.
    pub fn rx_nonce(&self) -> &Nonce {
        &self.rx_nonce
    }
}

/// The plaintext of one relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayPacket<'a> {
    /// 0: ask for a slot to `peer`.
    RoutingRequest {
        /// The peer's public key.
        peer: PublicKey,
    },
    /// 1: slot granted (16..=255) or refused (0) for `peer`.
    RoutingResponse {
        /// Wire id of the slot; 0 = refused.
        connection_id: u8,
        /// The peer's public key.
        peer: PublicKey,
    },
    /// 2: the slot's peer has routed to us too.
    ConnectNotification {
        /// Wire id of the slot.
        connection_id: u8,
    },
    /// 3: the slot's pairing ended (or, client → server, free the slot).
    DisconnectNotification {
        /// Wire id of the slot.
        connection_id: u8,
    },
    /// 4: keep-alive request; the id is opaque and echoed verbatim.
    Ping {
        /// Opaque ping id.
        ping_id: [u8; 8],
    },
    /// 5: keep-alive answer.
    Pong {
        /// The echoed ping id.
        ping_id: [u8; 8],
    },
    /// 6: data for a key that has no slot with us (1..=1024 bytes).
    OobSend {
        /// Destination key.
        destination: PublicKey,
        /// Payload.
        data: &'a [u8],
    },
    /// 7: OOB data from `sender`.
    OobRecv {
        /// Sender key.
        sender: PublicKey,
        /// Payload (≥ 1 byte).
        data: &'a [u8],
    },
    /// 8: onion request, carried opaquely.
    OnionRequest {
        /// Everything after the id byte.
        data: &'a [u8],
    },
    /// 9: onion response, carried opaquely.
    OnionResponse {
        /// Everything after the id byte.
        data: &'a [u8],
    },
    /// 10: ask the relay to send `data` to a UDP address.
    ForwardRequest {
        /// Destination (UDP families only).
        address: PackedIpPort,
        /// Payload (≤ 1792 bytes).
        data: &'a [u8],
    },
    /// 11: a forwarded reply.
    Forwarding {
        /// Everything after the id byte.
        data: &'a [u8],
    },
    /// 16..=255: data on a slot.
    Data {
        /// Wire id of the slot (16..=255).
        connection_id: u8,
        /// Payload (≥ 1 byte).
        data: &'a [u8],
    },
}

const KIND: &str = "relay packet";

fn exact(b: &[u8], len: usize) -> Result<(), WireError> {
    if b.len() == len {
        Ok(())
    } else {
        Err(WireError::BadLength {
            kind: KIND,
            len: b.len(),
        })
    }
}

impl<'a> RelayPacket<'a> {
    /// Parses a frame plaintext.
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        let &first = b.first().ok_or(WireError::Empty)?;
        Ok(match first {
            id::ROUTING_REQUEST => {
                exact(b, 33)?;
                RelayPacket::RoutingRequest {
                    peer: PublicKey(array(b, 1)),
                }
            }
            id::ROUTING_RESPONSE => {
                exact(b, 34)?;
                RelayPacket::RoutingResponse {
                    connection_id: b[1],
                    peer: PublicKey(array(b, 2)),
                }
            }
            id::CONNECT_NOTIFICATION => {
                exact(b, 2)?;
                RelayPacket::ConnectNotification {
                    connection_id: b[1],
                }
            }
            id::DISCONNECT_NOTIFICATION => {
                exact(b, 2)?;
                RelayPacket::DisconnectNotification {
                    connection_id: b[1],
                }
            }
            id::PING => {
                exact(b, 9)?;
                RelayPacket::Ping {
                    ping_id: array(b, 1),
                }
            }
            id::PONG => {
                exact(b, 9)?;
                RelayPacket::Pong {
                    ping_id: array(b, 1),
                }
            }
            id::OOB_SEND => {
                if b.len() <= 33 || b.len() > 33 + MAX_OOB_DATA {
                    return Err(WireError::BadLength {
                        kind: KIND,
                        len: b.len(),
                    });
                }
                RelayPacket::OobSend {
                    destination: PublicKey(array(b, 1)),
                    data: &b[33..],
                }
            }
            id::OOB_RECV => {
                if b.len() <= 33 {
                    return Err(WireError::BadLength {
                        kind: KIND,
                        len: b.len(),
                    });
                }
                RelayPacket::OobRecv {
                    sender: PublicKey(array(b, 1)),
                    data: &b[33..],
                }
            }
            id::ONION_REQUEST => RelayPacket::OnionRequest { data: &b[1..] },
            id::ONION_RESPONSE => RelayPacket::OnionResponse { data: &b[1..] },
            id::FORWARD_REQUEST => {
                let (address, n) = PackedIpPort::parse(&b[1..])?;
                if address.transport != Transport::Udp {
                    return Err(WireError::BadField {
                        kind: KIND,
                        field: "forward address family",
                    });
                }
                let data = &b[1 + n..];
                if data.len() > MAX_FORWARD_DATA {
                    return Err(WireError::BadLength {
                        kind: KIND,
                        len: b.len(),
                    });
                }
                RelayPacket::ForwardRequest { address, data }
            }
            id::FORWARDING => RelayPacket::Forwarding { data: &b[1..] },
            12..=15 => {
                return Err(WireError::BadId {
                    kind: KIND,
                    id: first,
                })
            }
            connection_id => {
                if b.len() < 2 {
                    return Err(WireError::BadLength {
                        kind: KIND,
                        len: b.len(),
                    });
                }
                RelayPacket::Data {
                    connection_id,
                    data: &b[1..],
                }
            }
        })
    }

    /// The packet id byte.
    pub fn id(&self) -> u8 {
        match self {
            RelayPacket::RoutingRequest { .. } => id::ROUTING_REQUEST,
            RelayPacket::RoutingResponse { .. } => id::ROUTING_RESPONSE,
            RelayPacket::ConnectNotification { .. } => id::CONNECT_NOTIFICATION,
            RelayPacket::DisconnectNotification { .. } => id::DISCONNECT_NOTIFICATION,
            RelayPacket::Ping { .. } => id::PING,
            RelayPacket::Pong { .. } => id::PONG,
            RelayPacket::OobSend { .. } => id::OOB_SEND,
            RelayPacket::OobRecv { .. } => id::OOB_RECV,
            RelayPacket::OnionRequest { .. } => id::ONION_REQUEST,
            RelayPacket::OnionResponse { .. } => id::ONION_RESPONSE,
            RelayPacket::ForwardRequest { .. } => id::FORWARD_REQUEST,
            RelayPacket::Forwarding { .. } => id::FORWARDING,
            RelayPacket::Data { connection_id, .. } => *connection_id,
        }
    }

    /// Whether c-toxcore sends this with priority (queued without limit
    /// instead of refused when the socket is busy, §2.3): routing and
    /// notifications, ping and pong.
    pub fn is_priority(&self) -> bool {
        matches!(
            self,
            RelayPacket::RoutingRequest { .. }
                | RelayPacket::RoutingResponse { .. }
                | RelayPacket::ConnectNotification { .. }
                | RelayPacket::DisconnectNotification { .. }
                | RelayPacket::Ping { .. }
                | RelayPacket::Pong { .. }
        )
    }

    /// Length of the encoded plaintext.
    pub fn encoded_len(&self) -> usize {
        match self {
            RelayPacket::RoutingRequest { .. } => 33,
            RelayPacket::RoutingResponse { .. } => 34,
            RelayPacket::ConnectNotification { .. }
            | RelayPacket::DisconnectNotification { .. } => 2,
            RelayPacket::Ping { .. } | RelayPacket::Pong { .. } => 9,
            RelayPacket::OobSend { data, .. } | RelayPacket::OobRecv { data, .. } => {
                33 + data.len()
            }
            RelayPacket::OnionRequest { data }
            | RelayPacket::OnionResponse { data }
            | RelayPacket::Forwarding { data }
            | RelayPacket::Data { data, .. } => 1 + data.len(),
            RelayPacket::ForwardRequest { address, data } => 1 + address.packed_len() + data.len(),
        }
    }

    /// Writes the plaintext into `out`; returns its length. Refuses what a
    /// receiver would reject (empty DATA/OOB, oversized OOB or forward data,
    /// a slot id below 16 for DATA, a TCP forward address).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len();
        let bad_len = Err(WireError::BadLength { kind: KIND, len });
        match self {
            RelayPacket::OobSend { data, .. } if data.is_empty() || data.len() > MAX_OOB_DATA => {
                return bad_len
            }
            RelayPacket::OobRecv { data: &[], .. } => return bad_len,
            RelayPacket::Data { data: &[], .. } => return bad_len,
            RelayPacket::Data { connection_id, .. } if *connection_id < NUM_RESERVED_PORTS => {
                return Err(WireError::BadField {
                    kind: KIND,
                    field: "connection id",
                })
            }
            RelayPacket::ForwardRequest { address, data } => {
                if data.len() > MAX_FORWARD_DATA {
                    return bad_len;
                }
                if address.transport != Transport::Udp {
                    return Err(WireError::BadField {
                        kind: KIND,
                        field: "forward address family",
                    });
                }
            }
            _ => {}
        }
        let o = out_slice(out, len)?;
        o[0] = self.id();
        match self {
            RelayPacket::RoutingRequest { peer } => o[1..].copy_from_slice(&peer.0),
            RelayPacket::RoutingResponse {
                connection_id,
                peer,
            } => {
                o[1] = *connection_id;
                o[2..].copy_from_slice(&peer.0);
            }
            RelayPacket::ConnectNotification { connection_id }
            | RelayPacket::DisconnectNotification { connection_id } => o[1] = *connection_id,
            RelayPacket::Ping { ping_id } | RelayPacket::Pong { ping_id } => {
                o[1..].copy_from_slice(ping_id)
            }
            RelayPacket::OobSend {
                destination: key,
                data,
            }
            | RelayPacket::OobRecv { sender: key, data } => {
                o[1..33].copy_from_slice(&key.0);
                o[33..].copy_from_slice(data);
            }
            RelayPacket::OnionRequest { data }
            | RelayPacket::OnionResponse { data }
            | RelayPacket::Forwarding { data }
            | RelayPacket::Data { data, .. } => o[1..].copy_from_slice(data),
            RelayPacket::ForwardRequest { address, data } => {
                let n = address.encode(&mut o[1..])?;
                o[1 + n..].copy_from_slice(data);
            }
        }
        Ok(len)
    }

    /// The encoded plaintext as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.encoded_len()];
        self.encode(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
