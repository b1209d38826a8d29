//! STUN (RFC 8489) Binding: how a node learns its reflexive (public) UDP
//! addresses, and how a relay answers others asking for theirs.
//!
//! * [`is_stun`]: the demultiplexing test for a datagram on a socket that
//!   also carries Tox packets (RFC 8489 §6.3 / RFC 7983): the top two bits
//!   of the first byte are zero, the magic cookie is at bytes 4..8 and the
//!   length field matches the datagram and is a multiple of 4. Tox packets
//!   never pass: their first byte is a packet kind (0x18..0x1b for
//!   net_crypto, 0x00/0x01 for DHT pings, whose bytes 4..8 are key bytes,
//!   not the cookie with a consistent length).
//! * [`StunClient`]: the sans-IO client of one local socket: Binding
//!   requests to up to [`MAX_SERVERS`] servers, retransmitted on a bounded
//!   schedule, re-checked periodically and on demand, and the reflexive
//!   addresses they report.
//! * [`answer`]: the stateless server side, a Binding success response with
//!   XOR-MAPPED-ADDRESS for a valid Binding request.
//!
//! Messages are parsed and built by the `stun_codec` crate (RFC 5389
//! attributes; RFC 8489 kept the wire format); this module only decides.
//!
//! Invariants:
//! * no input panics; anything that is not what we expect is an error
//!   ([`StunError`]) and, in the client, counted;
//! * a datagram longer than [`MAX_MESSAGE_LEN`] is refused before it is
//!   decoded, so decoding costs a bounded amount of work;
//! * the client accepts only a success response to a transaction it has
//!   outstanding, from the address that transaction was sent to: a stray or
//!   spoofed response cannot plant an address (an attacker would have to
//!   see the 96-bit random transaction id);
//! * memory is bounded: at most [`MAX_SERVERS`] servers and one transaction
//!   per server at a time;
//! * time and randomness come from the caller (`now`, a
//!   [`CryptoRngCore`](rand_core::CryptoRngCore)).

mod client;
mod server;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::Fingerprint;
use stun_codec::rfc5389::Attribute;
use stun_codec::{Message, MessageDecoder, MessageEncoder};

pub use client::{StunClient, StunConfig, StunCounters, MAX_SERVERS};
pub use server::answer;

/// The magic cookie of RFC 5389/8489, at bytes 4..8 of every message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of a STUN message header.
pub const HEADER_LEN: usize = 20;
/// Longest message decoded. Binding requests and responses are well under
/// 200 bytes (coturn's response with every optional attribute is about
/// 100); anything longer is refused unread.
pub const MAX_MESSAGE_LEN: usize = 1280;
/// Size of a Binding request as [`StunClient`] sends it (header and
/// FINGERPRINT): a transmit buffer must hold at least this much.
pub const REQUEST_LEN: usize = HEADER_LEN + 8;
/// Largest Binding response [`answer`] writes (header, XOR-MAPPED-ADDRESS
/// of an IPv6 address, FINGERPRINT): an output buffer of this size always
/// suffices.
pub const MAX_RESPONSE_LEN: usize = HEADER_LEN + 24 + 8;

/// Why a STUN datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// It fails [`is_stun`]: not a STUN message at all.
    #[error("not a STUN message")]
    NotStun,
    /// Longer than [`MAX_MESSAGE_LEN`].
    #[error("STUN message of {0} bytes is too long")]
    TooLong(usize),
    /// The header looked right but the message does not decode (bad
    /// attribute, bad FINGERPRINT, trailing bytes...).
    #[error("malformed STUN message")]
    Malformed,
    /// A comprehension-required attribute we do not know (RFC 8489 §7.3.1:
    /// a request is then refused, a response discarded).
    #[error("unknown comprehension-required attribute {0:#06x}")]
    UnknownAttribute(u16),
    /// Not a Binding request (server side): another method or class.
    #[error("not a Binding request")]
    NotBindingRequest,
    /// A request or indication sent to the client, or a response of another
    /// method.
    #[error("not a Binding response")]
    NotBindingResponse,
    /// A response whose transaction id is not outstanding (late, duplicate,
    /// or forged).
    #[error("response to no outstanding transaction")]
    UnknownTransaction,
    /// A response to an outstanding transaction, but not from the server it
    /// was sent to.
    #[error("response from {from}, but the request went to {expected}")]
    WrongSource {
        /// Where the request went.
        expected: SocketAddr,
        /// Where the response came from.
        from: SocketAddr,
    },
    /// The server answered with an error response (the transaction failed).
    #[error("error response {0}")]
    ErrorResponse(u16),
    /// A success response with neither XOR-MAPPED-ADDRESS nor
    /// MAPPED-ADDRESS, or with an unusable one (unspecified address or port
    /// 0).
    #[error("success response without a usable mapped address")]
    NoMappedAddress,
    /// The output buffer cannot hold the message.
    #[error("output buffer too small: {need} bytes needed")]
    BufferTooSmall {
        /// Bytes the message needs.
        need: usize,
    },
    /// The codec refused to encode a message (never seen; not a panic).
    #[error("cannot encode a STUN message")]
    Encode,
}

/// Whether `datagram` is a STUN message (RFC 8489 §6, §6.3): the cheap
/// demultiplexing test for a socket shared with Tox packets. It looks at
/// the header only; [`StunClient::handle_datagram`] and [`answer`] decode
/// the rest.
pub fn is_stun(datagram: &[u8]) -> bool {
    let Some(h) = datagram.get(..HEADER_LEN) else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    h[0] & 0xC0 == 0
        && h[4..8] == MAGIC_COOKIE.to_be_bytes()
        && len % 4 == 0
        && datagram.len() == HEADER_LEN + len
}

/// A STUN message with the RFC 5389 attributes known to the codec.
type Msg = Message<Attribute>;

/// Decodes `data` after the cheap checks (demux test, length cap).
fn decode(data: &[u8]) -> Result<Msg, StunError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(StunError::TooLong(data.len()));
    }
    if !is_stun(data) {
        return Err(StunError::NotStun);
    }
    match MessageDecoder::<Attribute>::new().decode_from_bytes(data) {
        Ok(Ok(m)) => {
            // RFC 8489 §7.3.1: an unknown comprehension-required attribute
            // (type 0x0000..0x7FFF) makes the message unusable to us.
            let unknown = m
                .unknown_attributes()
                .map(stun_codec::Attribute::get_type)
                .find(|t| t.is_comprehension_required());
            match unknown {
                Some(t) => Err(StunError::UnknownAttribute(t.as_u16())),
                None => Ok(m),
            }
        }
        Ok(Err(broken)) => {
            tracing::trace!(error = %broken.error(), "stun: broken message");
            Err(StunError::Malformed)
        }
        Err(e) => {
            tracing::trace!(error = %e, "stun: undecodable message");
            Err(StunError::Malformed)
        }
    }
}

/// Adds FINGERPRINT (RFC 8489 §14.7: it tells STUN from other protocols on
/// a shared socket) and encodes `msg` into `out`.
fn encode(mut msg: Msg, out: &mut [u8]) -> Result<usize, StunError> {
    let fp = Fingerprint::new(&msg).map_err(|_| StunError::Encode)?;
    msg.add_attribute(fp);
    let bytes = MessageEncoder::new()
        .encode_into_bytes(msg)
        .map_err(|_| StunError::Encode)?;
    let need = bytes.len();
    let dst = out
        .get_mut(..need)
        .ok_or(StunError::BufferTooSmall { need })?;
    dst.copy_from_slice(&bytes);
    Ok(need)
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports) turned into the IPv4 address it carries.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
