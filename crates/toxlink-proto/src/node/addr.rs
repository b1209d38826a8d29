//! The address type of a node's direct paths, as endpoint lists carry it
//! (`wire::path_control`): real socket addresses in the runtime, small
//! integers in the simulator and the unit tests.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// An address type the node can advertise and learn in endpoint lists.
pub trait Addr: Copy + Eq + Hash + Debug {
    /// As a socket address on the wire.
    fn to_socket(&self) -> SocketAddr;
    /// From a socket address on the wire; `None` for one that cannot be a
    /// peer's endpoint.
    fn from_socket(s: SocketAddr) -> Option<Self>;
}

impl Addr for SocketAddr {
    fn to_socket(&self) -> SocketAddr {
        *self
    }

    fn from_socket(s: SocketAddr) -> Option<Self> {
        let ip_ok = match s.ip() {
            IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
            IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
        };
        (ip_ok && s.port() != 0).then_some(s)
    }
}

/// The simulator's addresses travel as IPv4 addresses with port 0.
impl Addr for u32 {
    fn to_socket(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(*self)), 0)
    }

    fn from_socket(s: SocketAddr) -> Option<Self> {
        match s {
            SocketAddr::V4(v4) if v4.port() == 0 => Some(u32::from(*v4.ip())),
            _ => None,
        }
    }
}

/// Unit tests' addresses: `0.0.0.n` with port 0.
impl Addr for u8 {
    fn to_socket(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(0, 0, 0, *self)), 0)
    }

    fn from_socket(s: SocketAddr) -> Option<Self> {
        match s {
            SocketAddr::V4(v4) if v4.port() == 0 => {
                let [a, b, c, d] = v4.ip().octets();
                (a == 0 && b == 0 && c == 0).then_some(d)
            }
            _ => None,
        }
    }
}
