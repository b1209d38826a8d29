//! The node's candidate endpoints, as the runtime finds them (issue #15;
//! the core's `node::discovery` advertises them to peers): the addresses of
//! this host's interfaces with our UDP port, and the public (reflexive)
//! addresses STUN servers report for our socket.
//!
//! The STUN client is the sans-IO `toxlink_proto::stun::StunClient`; its
//! requests leave on the node's own UDP socket (the mapping a NAT gives
//! that socket is the one peers must reach) and answers are picked out of
//! the socket's datagrams by `stun::is_stun` before the node sees them.
//! Interfaces are read again every [`RESCAN`]; any change hands the node
//! the new list (`Input::Endpoints`).
//!
//! Which interface addresses: with the socket bound to one address, that
//! address only; bound to the unspecified address, every interface address
//! of the socket's family, neither loopback nor link-local (a
//! remote peer must never be sent to its own loopback).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use toxlink_proto::node::EndpointKind;
use toxlink_proto::stun::{self, StunClient, StunConfig, StunCounters};

/// How often the interfaces are read again.
pub(crate) const RESCAN: Duration = Duration::from_secs(10);
/// Shortest time between two re-checks asked for by failing paths.
const MIN_RECHECK_GAP: Duration = Duration::from_millis(500);
/// Interface addresses advertised at most.
const MAX_LOCAL: usize = 4;

/// The runtime's view of our endpoints.
pub(crate) struct Endpoints {
    bound: SocketAddr,
    local: Vec<SocketAddr>,
    next_scan: Instant,
    stun: StunClient,
    last_recheck: Option<Instant>,
    /// The list last handed to the node.
    handed: Option<Vec<(EndpointKind, SocketAddr)>>,
    /// Something the list is made of may have changed since it was last
    /// built (the driver asks on every turn: building it is skipped
    /// otherwise).
    dirty: bool,
}

impl Endpoints {
    pub(crate) fn new(bound: SocketAddr, now: Instant) -> Self {
        Endpoints {
            bound,
            local: Vec::new(),
            next_scan: now,
            stun: StunClient::new(Vec::new(), StunConfig::default()),
            last_recheck: None,
            handed: None,
            dirty: true,
        }
    }

    /// Asks these STUN servers from now on (none: no reflexive address).
    pub(crate) fn set_stun_servers(&mut self, now: Instant, servers: Vec<SocketAddr>) {
        // Only servers of the socket's family can answer on it.
        let servers = servers
            .into_iter()
            .filter(|s| s.is_ipv4() == self.bound.is_ipv4())
            .collect();
        self.stun.set_servers(now, servers);
        self.dirty = true;
    }

    /// The STUN client's counters.
    pub(crate) fn stun_counters(&self) -> StunCounters {
        self.stun.counters()
    }

    /// Our public addresses as the STUN servers report them.
    pub(crate) fn reflexive(&self) -> Vec<SocketAddr> {
        self.stun.reflexive()
    }

    /// A datagram for the STUN client (a response to our request): true if
    /// it was one (taken, whatever came of it), false if it is for the node.
    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if !stun::is_stun(data) {
            return false;
        }
        match self.stun.handle_datagram(now, from, data) {
            Ok(changed) => self.dirty |= changed,
            Err(e) => tracing::debug!(%from, error = %e, "STUN datagram refused"),
        }
        true
    }

    /// The next STUN request to send on the node's socket.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        self.stun.poll_transmit(now, buf)
    }

    /// A path failed: ask the STUN servers again at once (our mapping may
    /// have changed).
    pub(crate) fn recheck(&mut self, now: Instant) {
        if self.last_recheck.is_some_and(|t| now < t + MIN_RECHECK_GAP) {
            return;
        }
        self.last_recheck = Some(now);
        self.stun.recheck(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.stun.poll_timeout() {
            Some(t) => t.min(self.next_scan),
            None => self.next_scan,
        })
    }

    /// Timers: the interface scan, STUN's transactions.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_scan {
            self.local = interface_endpoints(self.bound);
            self.next_scan = now + RESCAN;
            self.dirty = true;
        }
        if self.stun.poll_timeout().is_some_and(|t| t <= now) {
            self.dirty |= self.stun.handle_timeout(now, &mut rand_core::OsRng);
        }
    }

    /// The list to hand the node, if it changed since the last call:
    /// interface addresses, then reflexive ones (unless the NAT maps each
    /// destination to its own port: then no peer could use them).
    pub(crate) fn take_change(&mut self) -> Option<Vec<(EndpointKind, SocketAddr)>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut list: Vec<(EndpointKind, SocketAddr)> = self
            .local
            .iter()
            .map(|a| (EndpointKind::Local, *a))
            .collect();
        if !self.stun.mapping_varies() {
            for r in self.stun.reflexive() {
                if !list.iter().any(|(_, a)| *a == r) {
                    list.push((EndpointKind::Reflexive, r));
                }
            }
        }
        if self.handed.as_ref() == Some(&list) {
            return None;
        }
        self.handed = Some(list.clone());
        Some(list)
    }
}

/// Our interface addresses with the socket's port (see the module
/// documentation for which).
pub(crate) fn interface_endpoints(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let ifaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "reading interface addresses failed");
            return Vec::new();
        }
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for i in ifaces {
        let ip = i.ip();
        let family_ok = matches!(
            (ip, bound.ip()),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        if !family_ok || i.is_loopback() || i.is_link_local() {
            continue;
        }
        let a = SocketAddr::new(ip, bound.port());
        if !out.contains(&a) && out.len() < MAX_LOCAL {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_bound_to_one_address_advertises_that_address_only() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(interface_endpoints(a), vec![a]);
    }

    #[test]
    fn the_unspecified_address_advertises_no_loopback_and_the_sockets_port() {
        let a: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        for e in interface_endpoints(a) {
            assert!(
                !e.ip().is_loopback() && e.is_ipv4() && e.port() == 4000,
                "{e}"
            );
        }
        let mut ep = Endpoints::new(a, Instant::now());
        ep.handle_timeout(Instant::now());
        assert!(ep.take_change().is_some());
        assert!(ep.take_change().is_none(), "no change, nothing handed");
    }
}
