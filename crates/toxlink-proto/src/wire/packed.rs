//! Packed IP_Port and packed node (docs/PROTOCOL.md §7.3): used by SHARE_RELAYS
//! and the relay's FORWARD_REQUEST.
//!
//! `family (1) ‖ IPv4 (4) | IPv6 (16) ‖ port BE16` (7 or 19 bytes), and a
//! packed node appends a 32-byte public key (39 or 51 bytes). Families:
//! 2 = UDP/IPv4, 10 = UDP/IPv6, 130 = TCP/IPv4, 138 = TCP/IPv6.

use super::{array, out_slice, WireError};
use crate::crypto::PublicKey;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Transport named by a packed address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Families 2 and 10.
    Udp,
    /// Families 130 and 138 (TCP relays).
    Tcp,
}

/// An address with its transport, as Tox packs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackedIpPort {
    /// UDP or TCP.
    pub transport: Transport,
    /// IP and port.
    pub addr: SocketAddr,
}

/// Family byte: UDP over IPv4.
pub const FAMILY_UDP_V4: u8 = 2;
/// Family byte: UDP over IPv6.
pub const FAMILY_UDP_V6: u8 = 10;
/// Family byte: TCP over IPv4.
pub const FAMILY_TCP_V4: u8 = 130;
/// Family byte: TCP over IPv6.
pub const FAMILY_TCP_V6: u8 = 138;

const KIND: &str = "packed ip_port";

impl PackedIpPort {
    /// Bytes this address takes packed (7 or 19).
    pub fn packed_len(&self) -> usize {
        match self.addr {
            SocketAddr::V4(_) => 7,
            SocketAddr::V6(_) => 19,
        }
    }

    /// Parses one packed address from the start of `b`; returns it and the
    /// bytes it used.
    pub fn parse(b: &[u8]) -> Result<(Self, usize), WireError> {
        let family = *b.first().ok_or(WireError::Empty)?;
        let (transport, v6) = match family {
            FAMILY_UDP_V4 => (Transport::Udp, false),
            FAMILY_UDP_V6 => (Transport::Udp, true),
            FAMILY_TCP_V4 => (Transport::Tcp, false),
            FAMILY_TCP_V6 => (Transport::Tcp, true),
            _ => {
                return Err(WireError::BadField {
                    kind: KIND,
                    field: "family",
                })
            }
        };
        let len = if v6 { 19 } else { 7 };
        if b.len() < len {
            return Err(WireError::BadLength {
                kind: KIND,
                len: b.len(),
            });
        }
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(array::<16>(b, 1)))
        } else {
            IpAddr::V4(Ipv4Addr::from(array::<4>(b, 1)))
        };
        let port = u16::from_be_bytes(array::<2>(b, len - 2));
        Ok((
            PackedIpPort {
                transport,
                addr: SocketAddr::new(ip, port),
            },
            len,
        ))
    }

    /// Writes the packed form into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.packed_len();
        let o = out_slice(out, len)?;
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                o[0] = match self.transport {
                    Transport::Udp => FAMILY_UDP_V4,
                    Transport::Tcp => FAMILY_TCP_V4,
                };
                o[1..5].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                o[0] = match self.transport {
                    Transport::Udp => FAMILY_UDP_V6,
                    Transport::Tcp => FAMILY_TCP_V6,
                };
                o[1..17].copy_from_slice(&ip.octets());
            }
        }
        o[len - 2..].copy_from_slice(&self.addr.port().to_be_bytes());
        Ok(len)
    }
}

/// A packed node: an address and the public key of whoever is there (a
/// relay's key for TCP families, a DHT node's key for UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackedNode {
    /// Where.
    pub ip_port: PackedIpPort,
    /// Whose key.
    pub public_key: PublicKey,
}

impl PackedNode {
    /// Bytes this node takes packed (39 or 51).
    pub fn packed_len(&self) -> usize {
        self.ip_port.packed_len() + 32
    }

    /// Parses one node from the start of `b`; returns it and the bytes used.
    pub fn parse(b: &[u8]) -> Result<(Self, usize), WireError> {
        let (ip_port, n) = PackedIpPort::parse(b)?;
        if b.len() < n + 32 {
            return Err(WireError::BadLength {
                kind: "packed node",
                len: b.len(),
            });
        }
        Ok((
            PackedNode {
                ip_port,
                public_key: PublicKey(array(b, n)),
            },
            n + 32,
        ))
    }

    /// Writes the packed node into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let n = self.ip_port.encode(out)?;
        out_slice(&mut out[n..], 32)?.copy_from_slice(&self.public_key.0);
        Ok(n + 32)
    }
}

#[cfg(test)]
pub(crate) use tests::arb_node;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_and_layout() {
        let n = PackedNode {
            ip_port: PackedIpPort {
                transport: Transport::Tcp,
                addr: "127.0.0.1:33445".parse().unwrap(),
            },
            public_key: PublicKey([7; 32]),
        };
        let mut out = [0u8; 64];
        assert_eq!(n.encode(&mut out).unwrap(), 39);
        assert_eq!(&out[..7], &[130, 127, 0, 0, 1, 0x82, 0xa5]);
        assert_eq!(&out[7..39], &[7u8; 32]);
        assert_eq!(PackedNode::parse(&out[..39]).unwrap(), (n, 39));
        assert!(PackedNode::parse(&out[..38]).is_err());

        let v6 = PackedIpPort {
            transport: Transport::Udp,
            addr: "[::1]:2".parse().unwrap(),
        };
        assert_eq!(v6.encode(&mut out).unwrap(), 19);
        assert_eq!(out[0], 10);
        assert_eq!(out[16], 1);
        assert_eq!(&out[17..19], &[0, 2]);
        for bad in [0u8, 1, 3, 129, 131, 255] {
            assert!(PackedIpPort::parse(&[bad, 0, 0, 0, 0, 0, 0]).is_err());
        }
    }

    fn arb_ip_port() -> impl Strategy<Value = PackedIpPort> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        )
            .prop_map(|(tcp, v6, ip, port)| PackedIpPort {
                transport: if tcp { Transport::Tcp } else { Transport::Udp },
                addr: if v6 {
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)
                } else {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), port)
                },
            })
    }

    pub(crate) fn arb_node() -> impl Strategy<Value = PackedNode> {
        (arb_ip_port(), any::<[u8; 32]>()).prop_map(|(ip_port, pk)| PackedNode {
            ip_port,
            public_key: PublicKey(pk),
        })
    }

    proptest! {
        #[test]
        fn node_round_trip(n in arb_node()) {
            let mut out = [0u8; 64];
            let len = n.encode(&mut out).unwrap();
            prop_assert_eq!(len, n.packed_len());
            prop_assert_eq!(PackedNode::parse(&out[..len]).unwrap(), (n, len));
        }
    }
}
