//! A node's relay links and which relays route to which peer (docs/PROTOCOL.md §3).
//!
//! [`RelaySet`] holds several relays by public key, each with its address,
//! its current [`Client`] (if any) and a reconnect schedule: a link that was
//! confirmed and dies is reconnected at once, repeated failures back off
//! exponentially up to [`RelaySetConfig::backoff_max`]. Per (peer, relay) it
//! keeps the state NONE / REGISTERED / ONLINE, reset to NONE when a link is
//! re-created, and re-requests routes when a link comes up.
//!
//! It exposes per-relay state, RTT, counters and events, and takes the relay
//! explicitly in every send: choosing which relay carries what is the
//! multipath layer's job, not this one's.
//!
//! Runtime protocol: connect the sockets [`RelaySet::poll_connect`] asks for
//! and report [`RelaySet::handle_connected`] / [`RelaySet::handle_connect_failed`];
//! close the sockets [`RelaySet::poll_close`] names; otherwise as for
//! [`Client`], with a [`SocketId`] in each call. Every connection attempt
//! has its own `SocketId` (relay key and attempt number), so a close asked
//! for an old socket can never close its replacement, and whatever the
//! runtime reports about a socket that is no longer current (bytes, a close,
//! a late connect) is ignored.

use super::{Client, ClientConfig, ClientCounters, ClientEvent, LinkDownReason, LinkSendError};
use super::{LinkState, RouteError, RouteState};
use crate::crypto::{KeyPair, PublicKey};
use rand_core::CryptoRngCore;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Settings of a relay set.
#[derive(Debug, Clone)]
pub struct RelaySetConfig {
    /// Settings of each link.
    pub client: ClientConfig,
    /// First retry delay after a failed attempt.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for RelaySetConfig {
    fn default() -> Self {
        RelaySetConfig {
            client: ClientConfig::default(),
            backoff_min: Duration::from_millis(250),
            // Short enough that a connection whose every path is gone
            // resumes within seconds of its relay returning, long before
            // the friend timeout (32 s); one SYN per relay every 5 s costs
            // nothing.
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// One connection attempt to a relay: what the runtime names a socket by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// The relay.
    pub relay: PublicKey,
    /// Attempt number (per relay, increasing).
    pub attempt: u64,
}

/// State of one relay in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayLinkState {
    /// Waiting to (re)connect at the given time.
    Backoff {
        /// Next attempt.
        until: Instant,
    },
    /// The runtime is opening the TCP connection.
    Connecting,
    /// TCP up, relay handshake running.
    Handshaking,
    /// Handshake done.
    Connected,
}

/// State of a peer on one relay (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerRelayState {
    /// Tied, nothing known yet.
    None,
    /// Routing response received, peer not on the relay (or not routed to us).
    Registered,
    /// Both routed: DATA can flow.
    Online,
}

/// What the set reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelaySetEvent {
    /// A relay link finished its handshake.
    RelayUp {
        /// Relay key.
        relay: PublicKey,
    },
    /// A relay link died (a reconnect is scheduled).
    RelayDown {
        /// Relay key.
        relay: PublicKey,
        /// Why.
        reason: LinkDownReason,
    },
    /// A (peer, relay) state changed.
    PeerState {
        /// The peer.
        peer: PublicKey,
        /// The relay.
        relay: PublicKey,
        /// New state.
        state: PeerRelayState,
    },
    /// The relay refused a route to `peer` (no slot).
    RouteRefused {
        /// The peer.
        peer: PublicKey,
        /// The relay.
        relay: PublicKey,
    },
    /// DATA from `peer` through `relay`.
    Data {
        /// The relay.
        relay: PublicKey,
        /// The peer.
        peer: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// OOB from `from` through `relay`.
    Oob {
        /// The relay.
        relay: PublicKey,
        /// Sender key.
        from: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// An RTT sample of a relay link.
    Rtt {
        /// The relay.
        relay: PublicKey,
        /// The sample.
        rtt: Duration,
    },
}

#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    state: RelayLinkState,
    client: Option<Client>,
    failures: u32,
    /// Peers tied to this relay.
    peers: HashMap<PublicKey, PeerRelayState>,
    /// Totals of links that are gone.
    past: ClientCounters,
    connects: u64,
    /// The current (or last) connection attempt.
    attempt: u64,
    last_down: Option<LinkDownReason>,
}

impl Relay {
    /// The socket of the current attempt.
    fn socket(&self, relay: PublicKey) -> SocketId {
        SocketId {
            relay,
            attempt: self.attempt,
        }
    }

    /// Starts a new attempt; returns its socket.
    fn next_socket(&mut self, relay: PublicKey) -> SocketId {
        self.attempt += 1;
        self.socket(relay)
    }
}

/// Several relay links of one node. See the module documentation.
#[derive(Debug)]
pub struct RelaySet {
    keypair: KeyPair,
    cfg: RelaySetConfig,
    relays: HashMap<PublicKey, Relay>,
    events: VecDeque<RelaySetEvent>,
    connects: VecDeque<(SocketId, SocketAddr)>,
    closes: VecDeque<SocketId>,
    /// Bumped whenever a relay is added or removed.
    generation: u64,
}

impl RelaySet {
    /// An empty set; links announce `keypair` (the node's DHT key pair).
    pub fn new(keypair: KeyPair, cfg: RelaySetConfig) -> Self {
        RelaySet {
            keypair,
            cfg,
            relays: HashMap::new(),
            events: VecDeque::new(),
            connects: VecDeque::new(),
            closes: VecDeque::new(),
            generation: 0,
        }
    }

    /// A number that changes whenever a relay is added or removed or its
    /// link comes up (cheap to compare, for owners that mirror the set).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Our public key as relays see it.
    pub fn public_key(&self) -> &PublicKey {
        &self.keypair.public
    }

    /// Adds a relay and asks the runtime to connect to it. Re-adding a known
    /// relay only updates its address.
    pub fn add_relay(&mut self, _now: Instant, relay: PublicKey, addr: SocketAddr) {
        if let Some(r) = self.relays.get_mut(&relay) {
            r.addr = addr;
            return;
        }
        let mut r = Relay {
            addr,
            state: RelayLinkState::Connecting,
            client: None,
            failures: 0,
            peers: HashMap::new(),
            past: ClientCounters::default(),
            connects: 0,
            attempt: 0,
            last_down: None,
        };
        self.connects.push_back((r.next_socket(relay), addr));
        self.relays.insert(relay, r);
        self.generation = self.generation.wrapping_add(1);
    }

    /// Test support: `relay`'s link counts as up (no relay server needed).
    #[cfg(test)]
    pub(crate) fn mark_up_for_test(&mut self, relay: &PublicKey) {
        if let Some(r) = self.relays.get_mut(relay) {
            r.state = RelayLinkState::Connected;
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// Removes a relay; its socket (if any) is named by
    /// [`poll_close`](Self::poll_close).
    pub fn remove_relay(&mut self, relay: &PublicKey) {
        if let Some(r) = self.relays.remove(relay) {
            self.generation = self.generation.wrapping_add(1);
            if r.client.is_some() {
                self.closes.push_back(r.socket(*relay));
            }
        }
    }

    /// Relays in the set.
    pub fn relays(&self) -> impl Iterator<Item = &PublicKey> {
        self.relays.keys()
    }

    /// A relay's address.
    pub fn relay_addr(&self, relay: &PublicKey) -> Option<SocketAddr> {
        self.relays.get(relay).map(|r| r.addr)
    }

    /// A relay's link state.
    pub fn relay_state(&self, relay: &PublicKey) -> Option<RelayLinkState> {
        self.relays.get(relay).map(|r| r.state)
    }

    /// A relay's smoothed RTT.
    pub fn relay_rtt(&self, relay: &PublicKey) -> Option<Duration> {
        self.relays.get(relay)?.client.as_ref()?.rtt()
    }

    /// A relay's counters (all its links so far) and how many times it
    /// connected.
    pub fn relay_counters(&self, relay: &PublicKey) -> Option<(ClientCounters, u64)> {
        let r = self.relays.get(relay)?;
        let mut c = r.past.clone();
        if let Some(cl) = &r.client {
            add(&mut c, cl.counters());
        }
        Some((c, r.connects))
    }

    /// Why the relay's link last went down, if it ever did.
    pub fn relay_last_down(&self, relay: &PublicKey) -> Option<LinkDownReason> {
        self.relays.get(relay)?.last_down
    }

    /// Bytes queued on a relay link.
    pub fn relay_queued_bytes(&self, relay: &PublicKey) -> usize {
        self.relays
            .get(relay)
            .and_then(|r| r.client.as_ref())
            .map_or(0, Client::queued_bytes)
    }

    /// The relays tied to `peer` and the peer's state on each.
    pub fn peer_relays(&self, peer: &PublicKey) -> Vec<(PublicKey, PeerRelayState)> {
        self.relays
            .iter()
            .filter_map(|(k, r)| r.peers.get(peer).map(|s| (*k, *s)))
            .collect()
    }

    /// The state of `peer` on `relay` (None if not tied).
    pub fn peer_state(&self, peer: &PublicKey, relay: &PublicKey) -> Option<PeerRelayState> {
        self.relays.get(relay)?.peers.get(peer).copied()
    }

    /// Ties `peer` to `relay`: a routing request is sent now if the link is
    /// up, or when it comes up.
    pub fn tie(&mut self, peer: PublicKey, relay: &PublicKey) -> Result<(), RouteError> {
        let r = self.relays.get_mut(relay).ok_or(RouteError::Disconnected)?;
        if r.peers.len() >= crate::wire::relay::NUM_CLIENT_CONNECTIONS
            && !r.peers.contains_key(&peer)
        {
            return Err(RouteError::NoSlot);
        }
        r.peers.entry(peer).or_insert(PeerRelayState::None);
        if let Some(c) = r.client.as_mut() {
            if !matches!(c.state(), LinkState::Disconnected(_)) {
                c.route(peer)?;
            }
        }
        Ok(())
    }

    /// Unties `peer` from `relay` (DISCONNECT_NOTIFICATION if it had a slot).
    pub fn untie(&mut self, peer: &PublicKey, relay: &PublicKey) {
        if let Some(r) = self.relays.get_mut(relay) {
            r.peers.remove(peer);
            if let Some(c) = r.client.as_mut() {
                c.unroute(peer);
            }
        }
    }

    /// DATA to `peer` through `relay` (it must be ONLINE there).
    pub fn send_data(
        &mut self,
        relay: &PublicKey,
        peer: &PublicKey,
        data: &[u8],
    ) -> Result<(), LinkSendError> {
        self.client_mut(relay)?.send_data(peer, data)
    }

    /// OOB to any key through `relay`.
    pub fn send_oob(
        &mut self,
        relay: &PublicKey,
        to: &PublicKey,
        data: &[u8],
    ) -> Result<(), LinkSendError> {
        self.client_mut(relay)?.send_oob(to, data)
    }

    fn client_mut(&mut self, relay: &PublicKey) -> Result<&mut Client, LinkSendError> {
        self.relays
            .get_mut(relay)
            .and_then(|r| r.client.as_mut())
            .ok_or(LinkSendError::NotConnected)
    }

    /// A relay to connect to.
    pub fn poll_connect(&mut self) -> Option<(SocketId, SocketAddr)> {
        self.connects.pop_front()
    }

    /// A socket that must be closed (its link died or was removed).
    pub fn poll_close(&mut self) -> Option<SocketId> {
        self.closes.pop_front()
    }

    /// The relay of `socket` if `socket` is its current attempt.
    fn current_mut(&mut self, socket: &SocketId) -> Option<&mut Relay> {
        self.relays
            .get_mut(&socket.relay)
            .filter(|r| r.attempt == socket.attempt)
    }

    fn current(&self, socket: &SocketId) -> Option<&Relay> {
        self.relays
            .get(&socket.relay)
            .filter(|r| r.attempt == socket.attempt)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<RelaySetEvent> {
        self.events.pop_front()
    }

    /// The TCP connection `socket` is up: the handshake starts. A socket
    /// that is no longer current is closed again.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        socket: &SocketId,
        rng: &mut impl CryptoRngCore,
    ) {
        let keypair = self.keypair.clone();
        let cfg = self.cfg.client.clone();
        let Some(r) = self.current_mut(socket) else {
            self.closes.push_back(*socket);
            return;
        };
        if r.client.is_some() || r.state != RelayLinkState::Connecting {
            // A second report for the same attempt: ignored.
            return;
        }
        let mut c = Client::new(now, keypair, socket.relay, rng, cfg);
        for peer in r.peers.keys() {
            // At most 240 peers are tied (checked in `tie`).
            let _ = c.route(*peer);
        }
        r.client = Some(c);
        r.state = RelayLinkState::Handshaking;
    }

    /// The TCP connection `socket` could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, socket: &SocketId) {
        let cfg = self.cfg.clone();
        if let Some(r) = self
            .current_mut(socket)
            .filter(|r| r.state == RelayLinkState::Connecting && r.client.is_none())
        {
            r.failures += 1;
            let until = now + backoff(&cfg, r.failures);
            r.state = RelayLinkState::Backoff { until };
        }
    }

    /// Bytes read from `socket` (ignored if it is no longer current).
    pub fn handle_bytes(&mut self, now: Instant, socket: &SocketId, bytes: &mut [u8]) {
        let Some(c) = self.current_mut(socket).and_then(|r| r.client.as_mut()) else {
            return;
        };
        c.handle_bytes(now, bytes);
        self.pump(now, &socket.relay);
    }

    /// `socket` closed (ignored if it is no longer current).
    pub fn handle_closed(&mut self, now: Instant, socket: &SocketId) {
        // The runtime already knows the socket is gone.
        self.closes.retain(|k| k != socket);
        let Some(c) = self.current_mut(socket).and_then(|r| r.client.as_mut()) else {
            return;
        };
        c.handle_closed(now);
        self.pump(now, &socket.relay);
        self.closes.retain(|k| k != socket);
    }

    /// Asks `relay`'s link for proof of life ([`Client::verify`]): a link
    /// that a NAT or firewall silently cut is then replaced within about a
    /// second. No-op unless the link is connected.
    pub fn verify(&mut self, now: Instant, relay: &PublicKey) {
        if let Some(c) = self.relays.get_mut(relay).and_then(|r| r.client.as_mut()) {
            c.verify(now);
        }
    }

    /// Whether `relay`'s link is proving it is alive ([`Client::verify`]).
    pub fn verifying(&self, relay: &PublicKey) -> bool {
        self.relays
            .get(relay)
            .and_then(|r| r.client.as_ref())
            .is_some_and(Client::verifying)
    }

    /// Closes a relay link locally (it is reconnected like a dead one).
    pub fn disconnect(&mut self, now: Instant, relay: &PublicKey) {
        if let Some(c) = self.relays.get_mut(relay).and_then(|r| r.client.as_mut()) {
            c.close();
        }
        self.pump(now, relay);
    }

    /// Whether `socket` has output.
    pub fn has_output(&self, socket: &SocketId) -> bool {
        self.current(socket)
            .and_then(|r| r.client.as_ref())
            .is_some_and(Client::has_output)
    }

    /// Output for `socket` (see [`Client::drain_into`]).
    pub fn drain_into(&mut self, socket: &SocketId, out: &mut Vec<u8>, limit: usize) -> usize {
        self.current_mut(socket)
            .and_then(|r| r.client.as_mut())
            .map_or(0, |c| c.drain_into(out, limit))
    }

    /// Timers of every link and the reconnect schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<PublicKey> = self.relays.keys().copied().collect();
        for k in keys {
            let Some(r) = self.relays.get_mut(&k) else {
                continue;
            };
            if let Some(c) = r.client.as_mut() {
                c.handle_timeout(now);
            }
            if let RelayLinkState::Backoff { until } = r.state {
                if now >= until {
                    r.state = RelayLinkState::Connecting;
                    let socket = r.next_socket(k);
                    self.connects.push_back((socket, r.addr));
                }
            }
            self.pump(now, &k);
        }
    }

    /// Earliest timer over all links and reconnects.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.relays
            .values()
            .filter_map(|r| match r.state {
                RelayLinkState::Backoff { until } => Some(until),
                _ => r.client.as_ref().and_then(Client::poll_timeout),
            })
            .min()
    }

    /// Moves a link's events into the set's, updating states.
    fn pump(&mut self, now: Instant, relay: &PublicKey) {
        let Some(r) = self.relays.get_mut(relay) else {
            return;
        };
        let Some(c) = r.client.as_mut() else {
            return;
        };
        let relay = *relay;
        let mut dead = None;
        while let Some(ev) = c.poll_event() {
            let out = match ev {
                ClientEvent::Connected => {
                    r.state = RelayLinkState::Connected;
                    r.failures = 0;
                    r.connects += 1;
                    self.generation = self.generation.wrapping_add(1);
                    RelaySetEvent::RelayUp { relay }
                }
                ClientEvent::RouteResponse { peer, .. } => {
                    let Some(st) = r.peers.get_mut(&peer) else {
                        continue;
                    };
                    *st = PeerRelayState::Registered;
                    RelaySetEvent::PeerState {
                        peer,
                        relay,
                        state: PeerRelayState::Registered,
                    }
                }
                ClientEvent::RouteRefused { peer } => RelaySetEvent::RouteRefused { peer, relay },
                ClientEvent::PeerOnline { peer } | ClientEvent::PeerOffline { peer } => {
                    let online = matches!(c.route_state(&peer), Some(RouteState::Online { .. }));
                    let state = if online {
                        PeerRelayState::Online
                    } else if matches!(c.state(), LinkState::Disconnected(_)) {
                        PeerRelayState::None
                    } else {
                        PeerRelayState::Registered
                    };
                    let Some(st) = r.peers.get_mut(&peer) else {
                        continue;
                    };
                    *st = state;
                    RelaySetEvent::PeerState { peer, relay, state }
                }
                ClientEvent::Data { peer, data } => RelaySetEvent::Data { relay, peer, data },
                ClientEvent::Oob { from, data } => RelaySetEvent::Oob { relay, from, data },
                ClientEvent::Rtt { rtt } => RelaySetEvent::Rtt { relay, rtt },
                ClientEvent::Disconnected { reason } => {
                    dead = Some(reason);
                    continue;
                }
            };
            self.events.push_back(out);
        }
        let Some(reason) = dead else {
            return;
        };
        // The link is gone: states back to NONE, socket closed, reconnect
        // at once if it had been confirmed, else back off.
        if let Some(c) = r.client.take() {
            add(&mut r.past, c.counters());
        }
        for (peer, st) in r.peers.iter_mut() {
            if *st != PeerRelayState::None {
                *st = PeerRelayState::None;
                self.events.push_back(RelaySetEvent::PeerState {
                    peer: *peer,
                    relay,
                    state: PeerRelayState::None,
                });
            }
        }
        r.last_down = Some(reason);
        // The dead socket is closed before any new one is opened.
        self.closes.push_back(r.socket(relay));
        let was_connected = r.state == RelayLinkState::Connected;
        if was_connected {
            r.state = RelayLinkState::Connecting;
            let socket = r.next_socket(relay);
            self.connects.push_back((socket, r.addr));
        } else {
            r.failures += 1;
            r.state = RelayLinkState::Backoff {
                until: now + backoff(&self.cfg, r.failures),
            };
        }
        self.events
            .push_back(RelaySetEvent::RelayDown { relay, reason });
    }
}

fn backoff(cfg: &RelaySetConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (cfg.backoff_min * (1u32 << exp)).min(cfg.backoff_max)
}

fn add(a: &mut ClientCounters, b: &ClientCounters) {
    a.data_sent += b.data_sent;
    a.data_bytes_sent += b.data_bytes_sent;
    a.data_received += b.data_received;
    a.data_bytes_received += b.data_bytes_received;
    a.oob_sent += b.oob_sent;
    a.oob_received += b.oob_received;
    a.queue_full += b.queue_full;
    a.pongs += b.pongs;
    a.ignored += b.ignored;
}
