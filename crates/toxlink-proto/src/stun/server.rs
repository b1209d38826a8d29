//! The STUN server side: a stateless answer to a Binding request
//! (RFC 8489 §6.3.1, no authentication, as public STUN servers run).
//!
//! The answer carries XOR-MAPPED-ADDRESS (the request's source, an
//! IPv4-mapped IPv6 source as the IPv4 address it is) and FINGERPRINT,
//! nothing else: at most [`MAX_RESPONSE_LEN`](super::MAX_RESPONSE_LEN)
//! bytes for a request of at least 20, so a spoofed request gets a victim
//! at most 2.6 times its size, and the caller rate-limits.

use std::net::SocketAddr;

use stun_codec::rfc5389::attributes::XorMappedAddress;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::MessageClass;

use super::{canonical, decode, encode, Msg, StunError};

/// Writes into `out` the Binding success response to `request`, a Binding
/// request received from `from`, and returns its length. Anything else
/// (not STUN, malformed, another method or class, an unknown
/// comprehension-required attribute, `out` shorter than the response) is
/// an error: the caller drops the datagram and counts it.
pub fn answer(request: &[u8], from: SocketAddr, out: &mut [u8]) -> Result<usize, StunError> {
    let m = decode(request)?;
    if m.class() != MessageClass::Request || m.method() != BINDING {
        return Err(StunError::NotBindingRequest);
    }
    let mut r = Msg::new(MessageClass::SuccessResponse, BINDING, m.transaction_id());
    r.add_attribute(XorMappedAddress::new(canonical(from)));
    encode(r, out)
}
