//! net_crypto wire format (docs/PROTOCOL.md §4.1–4.9).
//!
//! Outer packets (first byte of a UDP datagram or of a relay DATA/OOB payload):
//! [`CookieRequest`] (24, 145 bytes), [`CookieResponse`] (25, 161 bytes),
//! [`Handshake`] (26, 385 bytes) and [`DataPacket`] (27, 28..=1400 bytes).
//! Inside them: the [`Cookie`] (112 bytes, only its maker can open it), the
//! sealed payloads, and the data packet plaintext [`DataPlaintext`]
//! (`buffer_start`, packet number, zero padding, data). The request packet
//! (id 1) body is built by [`encode_request`] and read by [`RequestDecoder`].
//!
//! Parsers check exact sizes before touching a field and borrow from the
//! input; sealing and opening go through [`crate::crypto`].

use super::{array, out_slice, WireError};
use crate::crypto::{sha512, Nonce, PublicKey, SharedKey, MAC_SIZE, SHA512_SIZE};

/// Outer packet ids (docs/PROTOCOL.md §4.1).
pub mod kind {
    /// Cookie request.
    pub const COOKIE_REQUEST: u8 = 0x18;
    /// Cookie response.
    pub const COOKIE_RESPONSE: u8 = 0x19;
    /// Handshake.
    pub const HANDSHAKE: u8 = 0x1a;
    /// Data packet.
    pub const DATA: u8 = 0x1b;
}

/// Ids of the first data byte inside a data packet (docs/PROTOCOL.md §4.8).
pub mod packet_id {
    /// Padding (never an id).
    pub const PADDING: u8 = 0;
    /// Request packet: the missing-packet list (lossy, internal).
    pub const REQUEST: u8 = 1;
    /// Kill: the connection ends (lossy, internal).
    pub const KILL: u8 = 2;
    /// First lossless id.
    pub const LOSSLESS_FIRST: u8 = 16;
    /// Last lossless id (custom lossless ends here).
    pub const LOSSLESS_LAST: u8 = 191;
    /// First lossy id (A/V, then custom lossy).
    pub const LOSSY_FIRST: u8 = 192;
    /// Last lossy id; 255 is dropped by c-toxcore 0.2.18.
    pub const LOSSY_LAST: u8 = 254;
}

/// What a data byte id means (docs/PROTOCOL.md §4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdClass {
    /// 0: only padding, never a packet.
    Padding,
    /// 1: request packet.
    Request,
    /// 2: kill.
    Kill,
    /// 16..=191: lossless.
    Lossless,
    /// 192..=254: lossy.
    Lossy,
    /// 3..=15 and 255: dropped.
    Reserved,
}

impl IdClass {
    /// Classifies a data id.
    pub fn of(id: u8) -> Self {
        match id {
            packet_id::PADDING => IdClass::Padding,
            packet_id::REQUEST => IdClass::Request,
            packet_id::KILL => IdClass::Kill,
            packet_id::LOSSLESS_FIRST..=packet_id::LOSSLESS_LAST => IdClass::Lossless,
            packet_id::LOSSY_FIRST..=packet_id::LOSSY_LAST => IdClass::Lossy,
            _ => IdClass::Reserved,
        }
    }
}

/// Cookie request size.
pub const COOKIE_REQUEST_SIZE: usize = 145;
/// Cookie size.
pub const COOKIE_SIZE: usize = 112;
/// Cookie response size.
pub const COOKIE_RESPONSE_SIZE: usize = 161;
/// Handshake size.
pub const HANDSHAKE_SIZE: usize = 385;
/// Largest data packet (`MAX_CRYPTO_PACKET_SIZE`).
pub const MAX_CRYPTO_PACKET_SIZE: usize = 1400;
/// Smallest data packet: id, nonce bytes, tag, 8-byte header, 1 data byte.
pub const MIN_DATA_PACKET_SIZE: usize = 1 + 2 + MAC_SIZE + 8 + 1;
/// Largest data (id byte included) in one data packet (`MAX_CRYPTO_DATA_SIZE`).
pub const MAX_CRYPTO_DATA_SIZE: usize = MAX_CRYPTO_PACKET_SIZE - (1 + 2 + 8 + MAC_SIZE);
/// Padding granularity (`CRYPTO_MAX_PADDING`).
pub const CRYPTO_MAX_PADDING: usize = 8;
/// Echo id length (opaque, only read back by its maker).
pub const ECHO_ID_SIZE: usize = 8;

const COOKIE_REQUEST_PLAIN: usize = 32 + 32 + ECHO_ID_SIZE;
const COOKIE_PLAIN: usize = 8 + 32 + 32;
const COOKIE_RESPONSE_PLAIN: usize = COOKIE_SIZE + ECHO_ID_SIZE;
const HANDSHAKE_PLAIN: usize = 24 + 32 + SHA512_SIZE + COOKIE_SIZE;

fn bad_len(kind: &'static str, len: usize) -> WireError {
    WireError::BadLength { kind, len }
}

fn check_kind(b: &[u8], id: u8, size: usize, name: &'static str) -> Result<(), WireError> {
    let &first = b.first().ok_or(WireError::Empty)?;
    if first != id {
        return Err(WireError::BadId {
            kind: name,
            id: first,
        });
    }
    if b.len() != size {
        return Err(bad_len(name, b.len()));
    }
    Ok(())
}

/// Seals a fixed-size plaintext into a fixed-size box.
fn seal_fixed<const P: usize, const B: usize>(
    key: &SharedKey,
    nonce: &Nonce,
    plain: &[u8; P],
) -> [u8; B] {
    debug_assert_eq!(P + MAC_SIZE, B);
    let mut out = [0u8; B];
    out[MAC_SIZE..].copy_from_slice(plain);
    // Every plaintext here is non-empty and `out` has exactly the right size,
    // so sealing cannot fail.
    let _ = key.seal_in_place(nonce, &mut out);
    out
}

/// Opens a fixed-size box into a fixed-size plaintext.
fn open_fixed<const P: usize, const B: usize>(
    key: &SharedKey,
    nonce: &Nonce,
    sealed: &[u8; B],
) -> Result<[u8; P], WireError> {
    let mut buf = *sealed;
    let plain = key.open_in_place(nonce, &mut buf)?;
    Ok(array(plain, 0))
}

/// Plaintext of a cookie request: the sender's real (long-term) key and an
/// echo id; 32 zero bytes sit between them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieRequestPayload {
    /// The requester's long-term public key.
    pub sender_real_pk: PublicKey,
    /// Random value the response must echo.
    pub echo_id: [u8; ECHO_ID_SIZE],
}

/// Cookie request (0x18, 145 bytes): `0x18 ‖ sender DHT pk ‖ nonce ‖
/// Box(K(sender DHT sk, receiver DHT pk), nonce, real pk ‖ 0³² ‖ echo id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieRequest {
    /// The requester's DHT public key.
    pub sender_dht_pk: PublicKey,
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`CookieRequestPayload`].
    pub sealed: [u8; COOKIE_REQUEST_PLAIN + MAC_SIZE],
}

impl CookieRequest {
    /// Seals a request; `key = K(own DHT sk, receiver DHT pk)`.
    pub fn seal(
        sender_dht_pk: PublicKey,
        key: &SharedKey,
        nonce: Nonce,
        payload: &CookieRequestPayload,
    ) -> Self {
        let mut plain = [0u8; COOKIE_REQUEST_PLAIN];
        plain[..32].copy_from_slice(&payload.sender_real_pk.0);
        plain[64..].copy_from_slice(&payload.echo_id);
        CookieRequest {
            sender_dht_pk,
            nonce,
            sealed: seal_fixed(key, &nonce, &plain),
        }
    }

    /// Opens the payload; `key = K(own DHT sk, sender DHT pk)`. The 32 middle
    /// bytes are not checked (c-toxcore ignores them).
    pub fn open(&self, key: &SharedKey) -> Result<CookieRequestPayload, WireError> {
        let plain: [u8; COOKIE_REQUEST_PLAIN] = open_fixed(key, &self.nonce, &self.sealed)?;
        Ok(CookieRequestPayload {
            sender_real_pk: PublicKey(array(&plain, 0)),
            echo_id: array(&plain, 64),
        })
    }

    /// Parses exactly 145 bytes starting with 0x18.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_kind(
            b,
            kind::COOKIE_REQUEST,
            COOKIE_REQUEST_SIZE,
            "cookie request",
        )?;
        Ok(CookieRequest {
            sender_dht_pk: PublicKey(array(b, 1)),
            nonce: Nonce(array(b, 33)),
            sealed: array(b, 57),
        })
    }

    /// The 145 wire bytes.
    pub fn to_bytes(&self) -> [u8; COOKIE_REQUEST_SIZE] {
        let mut b = [0u8; COOKIE_REQUEST_SIZE];
        b[0] = kind::COOKIE_REQUEST;
        b[1..33].copy_from_slice(&self.sender_dht_pk.0);
        b[33..57].copy_from_slice(&self.nonce.0);
        b[57..].copy_from_slice(&self.sealed);
        b
    }
}

/// What a cookie vouches for: when it was made and for which keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePayload {
    /// Creation time in the maker's own clock (opaque to everyone else).
    pub timestamp: u64,
    /// The requester's long-term key.
    pub real_pk: PublicKey,
    /// The requester's DHT key.
    pub dht_pk: PublicKey,
}

/// A cookie (112 bytes): `nonce ‖ Box(cookie key, nonce, timestamp ‖ real pk
/// ‖ DHT pk)`. Only the node holding the cookie key can open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`CookiePayload`].
    pub sealed: [u8; COOKIE_PLAIN + MAC_SIZE],
}

impl Cookie {
    /// Makes a cookie with our symmetric cookie key. The timestamp is written
    /// big-endian; only we read it back.
    pub fn seal(cookie_key: &SharedKey, nonce: Nonce, payload: &CookiePayload) -> Self {
        let mut plain = [0u8; COOKIE_PLAIN];
        plain[..8].copy_from_slice(&payload.timestamp.to_be_bytes());
        plain[8..40].copy_from_slice(&payload.real_pk.0);
        plain[40..].copy_from_slice(&payload.dht_pk.0);
        Cookie {
            nonce,
            sealed: seal_fixed(cookie_key, &nonce, &plain),
        }
    }

    /// Opens a cookie we made.
    pub fn open(&self, cookie_key: &SharedKey) -> Result<CookiePayload, WireError> {
        let plain: [u8; COOKIE_PLAIN] = open_fixed(cookie_key, &self.nonce, &self.sealed)?;
        Ok(CookiePayload {
            timestamp: u64::from_be_bytes(array(&plain, 0)),
            real_pk: PublicKey(array(&plain, 8)),
            dht_pk: PublicKey(array(&plain, 40)),
        })
    }

    /// Reads the 112 cookie bytes.
    pub fn from_bytes(b: &[u8; COOKIE_SIZE]) -> Self {
        Cookie {
            nonce: Nonce(array(b, 0)),
            sealed: array(b, 24),
        }
    }

    /// The 112 cookie bytes.
    pub fn to_bytes(&self) -> [u8; COOKIE_SIZE] {
        let mut b = [0u8; COOKIE_SIZE];
        b[..24].copy_from_slice(&self.nonce.0);
        b[24..].copy_from_slice(&self.sealed);
        b
    }
}

/// Plaintext of a cookie response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieResponsePayload {
    /// The cookie (opaque to its receiver).
    pub cookie: [u8; COOKIE_SIZE],
    /// The echo id of the request.
    pub echo_id: [u8; ECHO_ID_SIZE],
}

/// Cookie response (0x19, 161 bytes): `0x19 ‖ nonce ‖ Box(request's DHT
/// shared key, nonce, cookie ‖ echo id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieResponse {
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`CookieResponsePayload`].
    pub sealed: [u8; COOKIE_RESPONSE_PLAIN + MAC_SIZE],
}

impl CookieResponse {
    /// Seals a response with the same shared key the request used.
    pub fn seal(key: &SharedKey, nonce: Nonce, payload: &CookieResponsePayload) -> Self {
        let mut plain = [0u8; COOKIE_RESPONSE_PLAIN];
        plain[..COOKIE_SIZE].copy_from_slice(&payload.cookie);
        plain[COOKIE_SIZE..].copy_from_slice(&payload.echo_id);
        CookieResponse {
            nonce,
            sealed: seal_fixed(key, &nonce, &plain),
        }
    }

    /// Opens the payload.
    pub fn open(&self, key: &SharedKey) -> Result<CookieResponsePayload, WireError> {
        let plain: [u8; COOKIE_RESPONSE_PLAIN] = open_fixed(key, &self.nonce, &self.sealed)?;
        Ok(CookieResponsePayload {
            cookie: array(&plain, 0),
            echo_id: array(&plain, COOKIE_SIZE),
        })
    }

    /// Parses exactly 161 bytes starting with 0x19.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_kind(
            b,
            kind::COOKIE_RESPONSE,
            COOKIE_RESPONSE_SIZE,
            "cookie response",
        )?;
        Ok(CookieResponse {
            nonce: Nonce(array(b, 1)),
            sealed: array(b, 25),
        })
    }

    /// The 161 wire bytes.
    pub fn to_bytes(&self) -> [u8; COOKIE_RESPONSE_SIZE] {
        let mut b = [0u8; COOKIE_RESPONSE_SIZE];
        b[0] = kind::COOKIE_RESPONSE;
        b[1..25].copy_from_slice(&self.nonce.0);
        b[25..].copy_from_slice(&self.sealed);
        b
    }
}

/// Plaintext of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePayload {
    /// The sender's own TX base nonce for data packets.
    pub base_nonce: Nonce,
    /// The sender's per-connection session public key.
    pub session_pk: PublicKey,
    /// SHA-512 of the outer cookie field.
    pub cookie_hash: [u8; SHA512_SIZE],
    /// A cookie the sender made for the receiver, so it can answer without a
    /// cookie round trip.
    pub other_cookie: [u8; COOKIE_SIZE],
}

/// Handshake (0x1a, 385 bytes): `0x1a ‖ cookie (made by the receiver) ‖ nonce
/// ‖ Box(K(sender real sk, receiver real pk), nonce, payload)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The receiver's cookie, carried back.
    pub cookie: [u8; COOKIE_SIZE],
    /// Nonce of the sealed payload.
    pub nonce: Nonce,
    /// Sealed [`HandshakePayload`].
    pub sealed: [u8; HANDSHAKE_PLAIN + MAC_SIZE],
}

impl Handshake {
    /// Seals a handshake; `key = K(own real sk, peer real pk)`. The payload's
    /// `cookie_hash` must be [`Handshake::cookie_hash`] of `cookie`
    /// (use [`Handshake::build`] to get it right).
    pub fn seal(
        cookie: [u8; COOKIE_SIZE],
        key: &SharedKey,
        nonce: Nonce,
        payload: &HandshakePayload,
    ) -> Self {
        let mut plain = [0u8; HANDSHAKE_PLAIN];
        plain[..24].copy_from_slice(&payload.base_nonce.0);
        plain[24..56].copy_from_slice(&payload.session_pk.0);
        plain[56..120].copy_from_slice(&payload.cookie_hash);
        plain[120..].copy_from_slice(&payload.other_cookie);
        Handshake {
            cookie,
            nonce,
            sealed: seal_fixed(key, &nonce, &plain),
        }
    }

    /// Builds a handshake with the right cookie hash.
    pub fn build(
        cookie: [u8; COOKIE_SIZE],
        key: &SharedKey,
        nonce: Nonce,
        base_nonce: Nonce,
        session_pk: PublicKey,
        other_cookie: [u8; COOKIE_SIZE],
    ) -> Self {
        let payload = HandshakePayload {
            base_nonce,
            session_pk,
            cookie_hash: Self::cookie_hash(&cookie),
            other_cookie,
        };
        Self::seal(cookie, key, nonce, &payload)
    }

    /// SHA-512 of the 112 cookie bytes.
    pub fn cookie_hash(cookie: &[u8; COOKIE_SIZE]) -> [u8; SHA512_SIZE] {
        sha512(cookie)
    }

    /// Opens the payload and checks the cookie hash (constant time).
    pub fn open(&self, key: &SharedKey) -> Result<HandshakePayload, WireError> {
        let plain: [u8; HANDSHAKE_PLAIN] = open_fixed(key, &self.nonce, &self.sealed)?;
        let payload = HandshakePayload {
            base_nonce: Nonce(array(&plain, 0)),
            session_pk: PublicKey(array(&plain, 24)),
            cookie_hash: array(&plain, 56),
            other_cookie: array(&plain, 120),
        };
        if !crate::crypto::ct_eq(&payload.cookie_hash, &Self::cookie_hash(&self.cookie)) {
            return Err(WireError::BadField {
                kind: "handshake",
                field: "cookie hash",
            });
        }
        Ok(payload)
    }

    /// Parses exactly 385 bytes starting with 0x1a.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_kind(b, kind::HANDSHAKE, HANDSHAKE_SIZE, "handshake")?;
        Ok(Handshake {
            cookie: array(b, 1),
            nonce: Nonce(array(b, 1 + COOKIE_SIZE)),
            sealed: array(b, 1 + COOKIE_SIZE + 24),
        })
    }

    /// The 385 wire bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_SIZE] {
        let mut b = [0u8; HANDSHAKE_SIZE];
        b[0] = kind::HANDSHAKE;
        b[1..113].copy_from_slice(&self.cookie);
        b[113..137].copy_from_slice(&self.nonce.0);
        b[137..].copy_from_slice(&self.sealed);
        b
    }
}

mod data;
pub use data::*;

#[cfg(test)]
mod tests;
