//! The node's I/O contract, the one way in and out for whoever owns the
//! sockets and the clock (the tokio runtime, the simulator adapter):
//!
//! * **In**: [`Node::handle`] takes every [`Input`] — a UDP datagram, a
//!   relay link's progress (up, failed, bytes read, closed), or the timer
//!   the node asked for. Application commands (`connect`, `send_lossless`,
//!   `close`, `add_relay`, [`Node::set_udp_blocked`], …) are the only other
//!   calls that change the node.
//! * **Out**, after every input or command, until each says there is
//!   nothing more:
//!   1. [`Node::poll_transmit`]: UDP datagrams. Polling also moves every
//!      packet bound for a relay into its link's queue, and removes
//!      sessions that are closed and sent everything (their KILL);
//!   2. [`Node::poll_link`]: relay sockets to open or close
//!      ([`LinkOutput`]), then [`Node::link_has_output`] /
//!      [`Node::drain_link`]: the bytes each open socket must write;
//!   3. [`Node::poll_event`], [`Node::poll_path_event`],
//!      [`Node::poll_relay_event`]: what the application learns;
//!   4. [`Node::poll_timeout`]: when to call `handle(now, Input::Timeout)`.
//!
//! A relay socket is named by a [`LinkId`] for one connection attempt: the
//! owner opens one socket per `Open` and reports on it with that id only, so
//! a report about a socket the node has given up on is ignored.

use super::*;

/// Everything the owner feeds the node (see the module documentation).
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a, A> {
    /// A UDP datagram from `from`; decrypted in place.
    Datagram {
        /// The sender's address.
        from: A,
        /// The datagram.
        data: &'a mut [u8],
    },
    /// The TCP connection of a link is up (the relay handshake starts).
    LinkUp(LinkId),
    /// The TCP connection of a link could not be opened.
    LinkFailed(LinkId),
    /// Bytes read from a link's socket, as they arrived (any framing).
    LinkBytes(LinkId, &'a mut [u8]),
    /// A link's socket closed (EOF, reset, or an error).
    LinkClosed(LinkId),
    /// The time [`Node::poll_timeout`] gave has come.
    Timeout,
    /// Our candidate UDP endpoints changed (interface addresses, STUN's
    /// reflexive ones): every peer is told (see `node::discovery`).
    Endpoints(&'a [(EndpointKind, A)]),
}

/// What the node asks of the owner's relay sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkOutput {
    /// Open a TCP connection to `addr` for `link`, then report
    /// [`Input::LinkUp`] or [`Input::LinkFailed`].
    Open {
        /// The link.
        link: LinkId,
        /// The relay's address.
        addr: SocketAddr,
    },
    /// Close `link`'s socket (the node already forgot it: no report).
    Close(LinkId),
}

impl<A: Addr> Node<A> {
    /// Handles one input (see the module documentation). A datagram the
    /// node drops says why; every other input is always taken.
    pub fn handle(&mut self, now: Instant, input: Input<'_, A>) -> Result<(), DropReason> {
        self.last_now = Some(now);
        match input {
            Input::Datagram { from, data } => {
                if self.blocked.contains(&from) {
                    self.stats.blocked += 1;
                    return Err(DropReason::Refused(crate::error::Refusal::Blocked));
                }
                return self.on_packet(now, Route::Udp(from), data);
            }
            Input::LinkUp(link) => self.relay_connected(now, link),
            Input::LinkFailed(link) => self.relay_connect_failed(now, link),
            Input::LinkBytes(link, bytes) => self.relay_bytes(now, link, bytes),
            Input::LinkClosed(link) => self.relay_closed(now, link),
            Input::Timeout => self.on_timeout(now),
            Input::Endpoints(list) => self.set_endpoints(now, list),
        }
        Ok(())
    }

    /// The next relay socket to close or open. Closes come first, so a new
    /// attempt of a link never races its predecessor's close.
    pub fn poll_link(&mut self) -> Option<LinkOutput> {
        if let Some(link) = self.poll_relay_close() {
            return Some(LinkOutput::Close(link));
        }
        self.poll_relay_connect()
            .map(|(link, addr)| LinkOutput::Open { link, addr })
    }

    /// Stops (`true`) or resumes (`false`) sending to and accepting from the
    /// UDP address `addr` (an interface the owner knows is gone, a path the
    /// user turned off): its path is reported closed at once (the
    /// connection moves to its other paths) or re-opened and probed.
    /// Datagrams to a blocked address are dropped and counted in
    /// [`NodeStats::blocked`].
    pub fn set_udp_blocked(&mut self, now: Instant, addr: A, blocked: bool) {
        self.last_now = Some(now);
        if blocked {
            self.blocked.insert(addr);
            self.path_closed(now, addr);
        } else if self.blocked.remove(&addr) {
            self.path_reopened(now, addr);
        }
    }

    fn set_of(&mut self, link: &LinkId) -> &mut RelaySet {
        if link.probe {
            &mut self.prober.set
        } else {
            &mut self.relays
        }
    }

    /// A relay TCP connection to open.
    fn poll_relay_connect(&mut self) -> Option<(LinkId, SocketAddr)> {
        if let Some((socket, addr)) = self.relays.poll_connect() {
            return Some((LinkId::new(socket, false), addr));
        }
        // The probe identity connects alongside the main one (probe.rs).
        if let Some(now) = self.last_now {
            self.prober.sync(now, &mut self.relays);
        }
        self.prober
            .set
            .poll_connect()
            .map(|(socket, addr)| (LinkId::new(socket, true), addr))
    }

    /// A relay socket to close.
    fn poll_relay_close(&mut self) -> Option<LinkId> {
        if let Some(socket) = self.relays.poll_close() {
            return Some(LinkId::new(socket, false));
        }
        self.prober
            .set
            .poll_close()
            .map(|socket| LinkId::new(socket, true))
    }

    /// The TCP connection of `link` is up (the relay handshake starts).
    fn relay_connected(&mut self, now: Instant, link: LinkId) {
        let mut rng = ChaCha20Rng::from_seed({
            let mut s = [0u8; 32];
            self.rng.fill_bytes(&mut s);
            s
        });
        self.set_of(&link)
            .handle_connected(now, &link.socket(), &mut rng);
    }

    /// The TCP connection of `link` could not be opened.
    fn relay_connect_failed(&mut self, now: Instant, link: LinkId) {
        self.set_of(&link)
            .handle_connect_failed(now, &link.socket());
        self.pump_relays(now);
    }

    /// Bytes read from `link`'s socket.
    fn relay_bytes(&mut self, now: Instant, link: LinkId, bytes: &mut [u8]) {
        self.set_of(&link).handle_bytes(now, &link.socket(), bytes);
        self.pump_relays(now);
    }

    /// `link`'s socket closed.
    fn relay_closed(&mut self, now: Instant, link: LinkId) {
        self.set_of(&link).handle_closed(now, &link.socket());
        self.pump_relays(now);
    }

    /// Whether `link` has bytes to write (take them with
    /// [`Node::drain_link`]).
    pub fn link_has_output(&self, link: &LinkId) -> bool {
        if link.probe {
            self.prober.set.has_output(&link.socket())
        } else {
            self.relays.has_output(&link.socket())
        }
    }

    /// Appends at most about `limit` bytes of `link`'s output to `out`.
    pub fn drain_link(&mut self, link: &LinkId, out: &mut Vec<u8>, limit: usize) -> usize {
        self.set_of(link).drain_into(&link.socket(), out, limit)
    }
}
