//! toxlink's path control packets (docs/PROTOCOL.md §12): endpoint exchange
//! and path validation between toxlink peers, carried as *lossy* net_crypto
//! data inside the established session (so encrypted and authenticated like
//! all data).
//!
//! The id is 199, the last of c-toxcore's lossy A/V range 192..=199.
//! c-toxcore's Messenger hands a packet of that range only to an RTP handler
//! registered for its id (toxav registers 192, 193 and 196) and drops it
//! silently otherwise: no callback, no event, no disconnect (proven by
//! `c_toxcore_ignores_toxlink_endpoint_packets_silently_and_stays_online`).
//! So a toxlink node may send these to any peer.
//!
//! ```text
//! 199 ‖ 0 (endpoints) ‖ generation BE16 ‖ acked BE16 ‖ count (1) ‖ count × (kind (1) ‖ packed UDP ip_port)
//! 199 ‖ 1 (challenge) ‖ token (8)
//! 199 ‖ 2 (response)  ‖ token (8)
//! ```
//!
//! `generation` numbers our endpoint list (it changes when the list does);
//! `acked` is the newest generation of the peer's list we hold. Kinds:
//! 0 = a local interface address, 1 = a reflexive address (STUN, or the
//! address a peer saw us send from), 2 = the address we see the *receiver*
//! send from. Addresses are packed as in §7.3 with the UDP families only.

use super::packed::{PackedIpPort, Transport};
use super::WireError;
use std::net::SocketAddr;

/// The lossy packet id of every path control packet.
pub const PATH_CONTROL: u8 = 199;
/// Most endpoints one list carries (parsers refuse more).
pub const MAX_ENDPOINTS: usize = 8;
/// Largest encoded path control packet.
pub const MAX_LEN: usize = 7 + MAX_ENDPOINTS * 20;

const KIND: &str = "path control";

/// Where an advertised endpoint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EndpointKind {
    /// An address of one of the sender's interfaces (same-LAN peers reach
    /// it directly).
    Local,
    /// The sender's public address as a STUN server or a peer saw it.
    Reflexive,
    /// The address the sender sees the receiver send from.
    Observed,
}

impl EndpointKind {
    fn byte(self) -> u8 {
        match self {
            EndpointKind::Local => 0,
            EndpointKind::Reflexive => 1,
            EndpointKind::Observed => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => EndpointKind::Local,
            1 => EndpointKind::Reflexive,
            2 => EndpointKind::Observed,
            _ => return None,
        })
    }
}

/// One advertised endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Where it comes from.
    pub kind: EndpointKind,
    /// The UDP address.
    pub addr: SocketAddr,
}

/// A parsed path control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathControl {
    /// The sender's endpoint list.
    Endpoints {
        /// Its generation.
        generation: u16,
        /// The newest generation of the receiver's list the sender holds.
        acked: u16,
        /// At most [`MAX_ENDPOINTS`].
        endpoints: Vec<Endpoint>,
    },
    /// "Answer me on the path this came on."
    Challenge([u8; 8]),
    /// The answer to a challenge, on the path the challenge came on.
    Response([u8; 8]),
}

impl PathControl {
    /// Parses a lossy packet (its id byte first).
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        let (&id, rest) = b.split_first().ok_or(WireError::Empty)?;
        if id != PATH_CONTROL {
            return Err(WireError::BadId { kind: KIND, id });
        }
        let bad_len = WireError::BadLength {
            kind: KIND,
            len: b.len(),
        };
        let (&sub, body) = rest.split_first().ok_or(bad_len)?;
        match sub {
            0 => {
                if body.len() < 5 {
                    return Err(bad_len);
                }
                let generation = u16::from_be_bytes([body[0], body[1]]);
                let acked = u16::from_be_bytes([body[2], body[3]]);
                let count = usize::from(body[4]);
                if count > MAX_ENDPOINTS {
                    return Err(WireError::BadField {
                        kind: KIND,
                        field: "count",
                    });
                }
                let mut at = 5;
                let mut endpoints = Vec::with_capacity(count);
                for _ in 0..count {
                    let kind = body
                        .get(at)
                        .copied()
                        .and_then(EndpointKind::from_byte)
                        .ok_or(WireError::BadField {
                            kind: KIND,
                            field: "endpoint kind",
                        })?;
                    let (p, used) = PackedIpPort::parse(body.get(at + 1..).unwrap_or(&[]))?;
                    if p.transport != Transport::Udp {
                        return Err(WireError::BadField {
                            kind: KIND,
                            field: "endpoint family",
                        });
                    }
                    endpoints.push(Endpoint { kind, addr: p.addr });
                    at += 1 + used;
                }
                if at != body.len() {
                    return Err(bad_len);
                }
                Ok(PathControl::Endpoints {
                    generation,
                    acked,
                    endpoints,
                })
            }
            1 | 2 => {
                let token: [u8; 8] = body.try_into().map_err(|_| bad_len)?;
                Ok(if sub == 1 {
                    PathControl::Challenge(token)
                } else {
                    PathControl::Response(token)
                })
            }
            _ => Err(WireError::BadField {
                kind: KIND,
                field: "subtype",
            }),
        }
    }

    /// Encodes into `out`; returns the length. At most [`MAX_ENDPOINTS`]
    /// endpoints are written (the rest are left out).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let need = match self {
            PathControl::Endpoints { endpoints, .. } => {
                7 + endpoints
                    .iter()
                    .take(MAX_ENDPOINTS)
                    .map(|e| 1 + packed(e.addr).packed_len())
                    .sum::<usize>()
            }
            PathControl::Challenge(_) | PathControl::Response(_) => 10,
        };
        let o = super::out_slice(out, need)?;
        o[0] = PATH_CONTROL;
        match self {
            PathControl::Endpoints {
                generation,
                acked,
                endpoints,
            } => {
                o[1] = 0;
                o[2..4].copy_from_slice(&generation.to_be_bytes());
                o[4..6].copy_from_slice(&acked.to_be_bytes());
                let n = endpoints.len().min(MAX_ENDPOINTS);
                // n ≤ MAX_ENDPOINTS = 8: fits a byte.
                o[6] = n as u8;
                let mut at = 7;
                for e in endpoints.iter().take(n) {
                    o[at] = e.kind.byte();
                    at += 1 + packed(e.addr).encode(&mut o[at + 1..])?;
                }
            }
            PathControl::Challenge(t) => {
                o[1] = 1;
                o[2..10].copy_from_slice(t);
            }
            PathControl::Response(t) => {
                o[1] = 2;
                o[2..10].copy_from_slice(t);
            }
        }
        Ok(need)
    }
}

fn packed(addr: SocketAddr) -> PackedIpPort {
    PackedIpPort {
        transport: Transport::Udp,
        addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: PathControl) {
        let mut buf = [0u8; MAX_LEN];
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(PathControl::parse(&buf[..n]).unwrap(), p);
        // Every strict prefix is refused.
        for k in 0..n {
            assert!(PathControl::parse(&buf[..k]).is_err(), "prefix {k}");
        }
    }

    #[test]
    fn every_packet_round_trips_and_every_prefix_is_refused() {
        round_trip(PathControl::Challenge([1, 2, 3, 4, 5, 6, 7, 8]));
        round_trip(PathControl::Response([9; 8]));
        round_trip(PathControl::Endpoints {
            generation: 7,
            acked: 65535,
            endpoints: vec![
                Endpoint {
                    kind: EndpointKind::Local,
                    addr: "10.0.0.2:33445".parse().unwrap(),
                },
                Endpoint {
                    kind: EndpointKind::Reflexive,
                    addr: "[2001:db8::1]:9".parse().unwrap(),
                },
                Endpoint {
                    kind: EndpointKind::Observed,
                    addr: "203.0.113.5:40000".parse().unwrap(),
                },
            ],
        });
        round_trip(PathControl::Endpoints {
            generation: 0,
            acked: 0,
            endpoints: vec![],
        });
    }

    #[test]
    fn more_than_eight_endpoints_or_tcp_families_or_trailing_bytes_are_refused() {
        let mut b = vec![PATH_CONTROL, 0, 0, 1, 0, 0, 9];
        for _ in 0..9 {
            b.extend_from_slice(&[0, 2, 10, 0, 0, 1, 0, 80]);
        }
        assert!(PathControl::parse(&b).is_err());
        let tcp = [PATH_CONTROL, 0, 0, 1, 0, 0, 1, 0, 130, 10, 0, 0, 1, 0, 80];
        assert!(PathControl::parse(&tcp).is_err());
        let trailing = [PATH_CONTROL, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert!(PathControl::parse(&trailing).is_err());
        assert!(PathControl::parse(&[PATH_CONTROL, 3]).is_err());
        assert!(PathControl::parse(&[200, 1]).is_err());
    }
}
