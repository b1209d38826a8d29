//! Sans-IO Tox TCP relay client: one relay link (PROTOCOL.md §2.2, §2.6),
//! and [`RelaySet`], a node's set of relay links with per-peer routing state
//! (§3).
//!
//! [`Client::new`] queues the 128-byte hello. The runtime writes what
//! [`Client::drain_into`] gives it, feeds received bytes to
//! [`Client::handle_bytes`], calls [`Client::handle_timeout`] at
//! [`Client::poll_timeout`], reports a closed socket with
//! [`Client::handle_closed`] and reads [`ClientEvent`]s from
//! [`Client::poll_event`]. Once [`Client::state`] is
//! [`LinkState::Disconnected`] the link is dead for good (a reconnect is a
//! new `Client`) and the runtime closes the socket.
//!
//! Keep-alive is much faster than c-toxcore's (30 s ping, 10 s timeout): by
//! default a PING every second and the link is declared dead after 3 s
//! without any frame, so a black-holed relay is noticed within a few seconds.
//! Every PONG gives an RTT sample. When the layer above has reason to doubt
//! a link (a path through it stopped delivering), [`Client::verify`] asks
//! for proof at once: a PING now, and the link is dead if nothing at all
//! arrives from the relay within [`verify_deadline`] (½ s to 1 s) — a link
//! that a NAT rebinding or a firewall silently cut is replaced within about
//! a second instead of after `dead_after`.
//!
//! Invariants: the slot table and the per-peer table always agree; DATA is
//! only queued to an ONLINE peer; queued data is bounded by
//! [`ClientConfig::queue_bytes`] (further sends get
//! [`LinkSendError::QueueFull`]); priority frames (routing, notifications,
//! ping/pong) overtake queued data.
//!
//! Every output queue is bounded, whatever the relay does. Priority frames
//! (the hello, PINGs, routing requests, and the replies the relay asks for:
//! PONGs, giving back unasked slots) are bounded by
//! [`ClientConfig::priority_queue_bytes`]; DISCONNECT_NOTIFICATIONs queued
//! behind data may pass `queue_bytes` by at most that much again. A frame
//! that would pass its bound is not queued and the link dies with
//! [`LinkDownReason::NotReading`]: the relay kept asking for replies (a
//! PING flood, say) while not reading what we send, and such a relay is
//! dropped (a [`RelaySet`] replaces or reconnects it) instead of growing our
//! memory. The bound is 32 KiB by default, 2.6 times the largest legitimate
//! burst (240 routing requests and a PING at connect).

mod set;
#[cfg(test)]
mod tests;

pub use set::{PeerRelayState, RelayLinkState, RelaySet, RelaySetConfig, RelaySetEvent, SocketId};

use crate::crypto::{KeyPair, Nonce, PublicKey};
use crate::relay_queue::FrameQueue;
use crate::wire::relay::{
    split_frame, FrameSplit, HandshakePayload, HandshakeRequest, HandshakeResponse, RelayPacket,
    SecureChannel, FRAME_OVERHEAD, HANDSHAKE_RESPONSE_SIZE, MAX_FRAME_BOX, MAX_OOB_DATA,
    NUM_CLIENT_CONNECTIONS, NUM_RESERVED_PORTS,
};
use rand_core::CryptoRngCore;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a liveness check ([`Client::verify`]) waits for the relay: three
/// smoothed RTTs plus 100 ms, at least ½ s (a PING may wait behind a full
/// socket buffer) and at most 1 s (a cut link is replaced within about a
/// second).
pub fn verify_deadline(srtt: Option<Duration>) -> Duration {
    let base = srtt.map_or(Duration::ZERO, |s| s.saturating_mul(3)) + Duration::from_millis(100);
    base.clamp(Duration::from_millis(500), Duration::from_secs(1))
}

/// The least priority-queue bound used, whatever the configuration: 240
/// routing requests (51 bytes a frame) and a PING must always fit.
pub const MIN_PRIORITY_QUEUE_BYTES: usize = 16 * 1024;

/// Largest DATA payload on a relay link (frame plaintext minus the id byte).
pub const MAX_DATA: usize = crate::wire::relay::MAX_FRAME_PLAINTEXT - 1;

/// Timers and limits of one relay link.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// PING interval once connected.
    pub ping_interval: Duration,
    /// The link is dead after this long without any frame from the relay.
    pub dead_after: Duration,
    /// Handshake must complete within this time of [`Client::new`].
    pub handshake_timeout: Duration,
    /// Bound on queued DATA/OOB bytes.
    pub queue_bytes: usize,
    /// Bound on queued priority bytes (hello, PING, PONG, routing requests
    /// and notifications, 19–51 bytes a frame). Past it the link dies with
    /// [`LinkDownReason::NotReading`]; at least 16 KiB is used, so that
    /// 240 routing requests and a PING (12.3 KB) always fit.
    pub priority_queue_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            queue_bytes: 512 * 1024,
            priority_queue_bytes: 32 * 1024,
        }
    }
}

/// State of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Hello sent, waiting for the 96-byte reply.
    Handshaking,
    /// Handshake done.
    Connected,
    /// Dead; see the reason.
    Disconnected(LinkDownReason),
}

/// Why a link died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkDownReason {
    /// The reply did not decrypt (wrong relay key?).
    HandshakeFailed,
    /// No reply within the handshake timeout.
    HandshakeTimeout,
    /// Nothing received within `dead_after`.
    Timeout,
    /// A frame failed authentication.
    BadTag,
    /// A frame with `L > 2048`.
    Oversized,
    /// A frame that breaks §2.6 (bad length, id the server may not send,
    /// PONG 0, slot below 16).
    ProtocolViolation,
    /// The runtime reported the TCP connection closed.
    Closed,
    /// Closed locally with [`Client::close`].
    Local,
    /// The relay does not read what we send while it keeps asking for
    /// replies (PINGs, routing responses to give back): the priority queue
    /// reached [`ClientConfig::priority_queue_bytes`]. A misbehaving (or
    /// hopelessly congested) relay, dropped instead of growing our memory.
    NotReading,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkSendError {
    /// The link is not connected.
    #[error("relay link not connected")]
    NotConnected,
    /// The peer is not ONLINE on this relay (DATA needs both routes).
    #[error("peer not online on this relay")]
    NotOnline,
    /// The send queue is full; try later (data is never queued past the bound).
    #[error("relay send queue full")]
    QueueFull,
    /// Empty or larger than the packet allows.
    #[error("bad payload size {0}")]
    BadSize(usize),
}

/// Why a route could not be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Already 240 peers on this link.
    #[error("no free slot on this relay link")]
    NoSlot,
    /// The link is dead.
    #[error("relay link is disconnected")]
    Disconnected,
}

/// What a link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Handshake done.
    Connected,
    /// The relay gave `peer` slot `slot` (wire id): REGISTERED.
    RouteResponse {
        /// The peer.
        peer: PublicKey,
        /// Wire id (16..=255).
        slot: u8,
    },
    /// The relay refused a route (slot 0).
    RouteRefused {
        /// The peer.
        peer: PublicKey,
    },
    /// Both routed: ONLINE, DATA can flow.
    PeerOnline {
        /// The peer.
        peer: PublicKey,
    },
    /// The peer's route ended (back to REGISTERED, or the link died).
    PeerOffline {
        /// The peer.
        peer: PublicKey,
    },
    /// DATA from a routed peer.
    Data {
        /// The peer.
        peer: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// OOB data from any key.
    Oob {
        /// Sender key.
        from: PublicKey,
        /// Payload.
        data: Vec<u8>,
    },
    /// A PONG answered our PING after `rtt`.
    Rtt {
        /// The sample.
        rtt: Duration,
    },
    /// The link died.
    Disconnected {
        /// Why.
        reason: LinkDownReason,
    },
}

/// Routing state of one peer on this link (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteState {
    /// Routing request sent (or to be sent once connected).
    Requested,
    /// Slot granted, peer not (yet) routed to us.
    Registered {
        /// Wire id.
        slot: u8,
    },
    /// Both routed.
    Online {
        /// Wire id.
        slot: u8,
    },
}

/// Statistics of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// DATA packets sent (queued).
    pub data_sent: u64,
    /// DATA bytes sent.
    pub data_bytes_sent: u64,
    /// DATA packets received.
    pub data_received: u64,
    /// DATA bytes received.
    pub data_bytes_received: u64,
    /// OOB packets sent.
    pub oob_sent: u64,
    /// OOB packets received.
    pub oob_received: u64,
    /// Sends refused with [`LinkSendError::QueueFull`].
    pub queue_full: u64,
    /// PONGs received that matched.
    pub pongs: u64,
    /// DATA on a slot we do not know, onion/forwarding replies: ignored.
    pub ignored: u64,
}

/// One relay link. See the module documentation.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    state: LinkState,
    keypair: KeyPair,
    relay_pk: PublicKey,
    temp: Option<KeyPair>,
    base_nonce: Nonce,
    chan: Option<SecureChannel>,
    rx: Vec<u8>,
    out: FrameQueue,
    /// Slot index → peer.
    slots: Vec<Option<PublicKey>>,
    peers: HashMap<PublicKey, RouteState>,
    events: VecDeque<ClientEvent>,
    started: Instant,
    last_rx: Instant,
    /// A liveness check in progress: (started, deadline).
    verify: Option<(Instant, Instant)>,
    next_ping: Instant,
    ping: Option<([u8; 8], Instant)>,
    ping_counter: u64,
    srtt: Option<Duration>,
    last_rtt: Option<Duration>,
    counters: ClientCounters,
    /// A frame was refused by its queue bound: the link dies with
    /// [`LinkDownReason::NotReading`] at the next input or timer call.
    overflow: bool,
}

impl Client {
    /// Starts a link from `keypair` (c-toxcore uses the DHT key pair, §2.1)
    /// to the relay with public key `relay_pk`; queues the hello.
    pub fn new(
        now: Instant,
        keypair: KeyPair,
        relay_pk: PublicKey,
        rng: &mut impl CryptoRngCore,
        cfg: ClientConfig,
    ) -> Self {
        let temp = KeyPair::generate(rng);
        let base_nonce = Nonce::random(rng);
        let hello = HandshakeRequest::seal(
            keypair.public,
            &keypair.precompute(&relay_pk),
            Nonce::random(rng),
            &HandshakePayload {
                temp_pk: temp.public,
                base_nonce,
            },
        );
        let mut out = FrameQueue::default();
        out.push_raw(&hello.to_bytes());
        Client {
            cfg,
            state: LinkState::Handshaking,
            keypair,
            relay_pk,
            temp: Some(temp),
            base_nonce,
            chan: None,
            rx: Vec::new(),
            out,
            slots: vec![None; NUM_CLIENT_CONNECTIONS],
            peers: HashMap::new(),
            events: VecDeque::new(),
            started: now,
            last_rx: now,
            verify: None,
            next_ping: now,
            ping: None,
            ping_counter: rng.next_u64() | 1,
            srtt: None,
            last_rtt: None,
            counters: ClientCounters::default(),
            overflow: false,
        }
    }

    /// The relay's public key.
    pub fn relay_pk(&self) -> &PublicKey {
        &self.relay_pk
    }

    /// Link state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Smoothed RTT from PING/PONG (none before the first PONG).
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The latest RTT sample.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// Statistics.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// The routing state of `peer`, if it was routed.
    pub fn route_state(&self, peer: &PublicKey) -> Option<RouteState> {
        self.peers.get(peer).copied()
    }

    /// Peers routed on this link and their states.
    pub fn routes(&self) -> impl Iterator<Item = (&PublicKey, &RouteState)> {
        self.peers.iter()
    }

    /// Bytes of DATA/OOB waiting to be drained.
    pub fn queued_bytes(&self) -> usize {
        self.out.data_len()
    }

    /// Bytes of priority output (hello, control frames) waiting to be
    /// drained; at most [`ClientConfig::priority_queue_bytes`].
    pub fn priority_queued_bytes(&self) -> usize {
        self.out.prio_len()
    }

    /// The bound in force on priority output.
    fn prio_bound(&self) -> usize {
        self.cfg.priority_queue_bytes.max(MIN_PRIORITY_QUEUE_BYTES)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether there is output to drain.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() && !matches!(self.state, LinkState::Disconnected(_))
    }

    /// Appends pending output (hello, then priority frames, then whole data
    /// frames within `limit`) to `out`; returns bytes appended.
    pub fn drain_into(&mut self, out: &mut Vec<u8>, limit: usize) -> usize {
        if matches!(self.state, LinkState::Disconnected(_)) {
            return 0;
        }
        self.out.drain_into(self.chan.as_mut(), out, limit)
    }

    /// Asks the relay for proof that the link is alive: a PING now, and the
    /// link dies ([`LinkDownReason::Timeout`]) unless something arrives
    /// from the relay within [`verify_deadline`]. For a link the layer above
    /// doubts (a path through it stopped delivering); a check already
    /// running is left alone.
    pub fn verify(&mut self, now: Instant) {
        if self.state != LinkState::Connected || self.verify.is_some() {
            return;
        }
        self.verify = Some((now, now + verify_deadline(self.srtt)));
        self.send_ping(now);
    }

    /// Whether a liveness check ([`verify`](Self::verify)) is running.
    pub fn verifying(&self) -> bool {
        self.verify.is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Handshaking => Some(self.started + self.cfg.handshake_timeout),
            LinkState::Connected if self.overflow => Some(self.last_rx),
            LinkState::Connected => {
                let mut dead = self.last_rx + self.cfg.dead_after;
                if let Some((_, deadline)) = self.verify {
                    dead = dead.min(deadline);
                }
                Some(match self.ping {
                    Some(_) => dead,
                    None => dead.min(self.next_ping),
                })
            }
            LinkState::Disconnected(_) => None,
        }
    }

    /// Timers: handshake timeout, keep-alive, dead link.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            LinkState::Handshaking => {
                if now >= self.started + self.cfg.handshake_timeout {
                    self.die(LinkDownReason::HandshakeTimeout);
                }
            }
            LinkState::Connected => {
                if self.overflow {
                    self.die(LinkDownReason::NotReading);
                    return;
                }
                if now >= self.last_rx + self.cfg.dead_after {
                    self.die(LinkDownReason::Timeout);
                    return;
                }
                if let Some((_, deadline)) = self.verify {
                    if now >= deadline {
                        tracing::debug!(relay = ?self.relay_pk, "relay link failed its liveness check");
                        self.die(LinkDownReason::Timeout);
                        return;
                    }
                }
                if self.ping.is_none() && now >= self.next_ping {
                    self.send_ping(now);
                }
                if self.out.is_empty() {
                    self.out.shrink_idle();
                }
            }
            LinkState::Disconnected(_) => {}
        }
    }

    /// The TCP connection ended.
    pub fn handle_closed(&mut self, _now: Instant) {
        self.die(LinkDownReason::Closed);
    }

    /// Closes the link locally.
    pub fn close(&mut self) {
        self.die(LinkDownReason::Local);
    }

    /// Asks the relay for a route to `peer` (§2.4 ROUTING_REQUEST); sent
    /// once connected if called earlier. Idempotent.
    pub fn route(&mut self, peer: PublicKey) -> Result<(), RouteError> {
        if matches!(self.state, LinkState::Disconnected(_)) {
            return Err(RouteError::Disconnected);
        }
        if self.peers.contains_key(&peer) {
            return Ok(());
        }
        if self.peers.len() >= NUM_CLIENT_CONNECTIONS {
            return Err(RouteError::NoSlot);
        }
        self.peers.insert(peer, RouteState::Requested);
        if self.state == LinkState::Connected {
            self.send_prio(&RelayPacket::RoutingRequest { peer });
        }
        // Refused by the queue bound: the link dies at the next timer.
        if self.overflow {
            return Err(RouteError::Disconnected);
        }
        Ok(())
    }

    /// Drops the route to `peer`: frees the slot and tells the relay
    /// (`[3, slot]`, even if the peer never came online, §2.6).
    pub fn unroute(&mut self, peer: &PublicKey) {
        let Some(st) = self.peers.remove(peer) else {
            return;
        };
        if let RouteState::Registered { slot } | RouteState::Online { slot } = st {
            if let Some(s) = self.slot_mut(slot) {
                *s = None;
            }
            if self.state == LinkState::Connected {
                // Behind the data already queued, not ahead of it: the last
                // packets for the peer (a KILL, say) must reach it before
                // the route is torn down.
                let p = RelayPacket::DisconnectNotification {
                    connection_id: slot,
                };
                let frame = p.encoded_len() + FRAME_OVERHEAD;
                if self.out.data_len() + frame > self.cfg.queue_bytes + self.prio_bound() {
                    // Only a relay that does not read gets here (240 slots).
                    self.overflow = true;
                } else if self.out.push_data(&p).is_err() {
                    tracing::error!("relay client could not queue a disconnect notification");
                }
            }
        }
    }

    /// Queues DATA to an ONLINE peer.
    pub fn send_data(&mut self, peer: &PublicKey, data: &[u8]) -> Result<(), LinkSendError> {
        if self.state != LinkState::Connected {
            return Err(LinkSendError::NotConnected);
        }
        let Some(RouteState::Online { slot }) = self.peers.get(peer).copied() else {
            return Err(LinkSendError::NotOnline);
        };
        if data.is_empty() || data.len() > MAX_DATA {
            return Err(LinkSendError::BadSize(data.len()));
        }
        if self.out.data_len() + data.len() > self.cfg.queue_bytes {
            self.counters.queue_full += 1;
            return Err(LinkSendError::QueueFull);
        }
        self.out.push_data_bytes(slot, data);
        self.counters.data_sent += 1;
        self.counters.data_bytes_sent += data.len() as u64;
        Ok(())
    }

    /// Queues OOB data to any key on the relay (§2.4 OOB_SEND, 1..=1024
    /// bytes). Delivery is not confirmed.
    pub fn send_oob(&mut self, to: &PublicKey, data: &[u8]) -> Result<(), LinkSendError> {
        if self.state != LinkState::Connected {
            return Err(LinkSendError::NotConnected);
        }
        if data.is_empty() || data.len() > MAX_OOB_DATA {
            return Err(LinkSendError::BadSize(data.len()));
        }
        if self.out.data_len() + data.len() > self.cfg.queue_bytes {
            self.counters.queue_full += 1;
            return Err(LinkSendError::QueueFull);
        }
        self.out
            .push_data(&RelayPacket::OobSend {
                destination: *to,
                data,
            })
            .map_err(|_| LinkSendError::BadSize(data.len()))?;
        self.counters.oob_sent += 1;
        Ok(())
    }

    /// Bytes received from the relay (decrypted in place).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &mut [u8]) {
        let mut input = bytes;
        if !input.is_empty() {
            self.last_rx = now;
            // Anything from the relay proves the link carries bytes to us.
            self.verify = None;
        }
        if self.state == LinkState::Handshaking {
            let take = (HANDSHAKE_RESPONSE_SIZE - self.rx.len()).min(input.len());
            self.rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if self.rx.len() < HANDSHAKE_RESPONSE_SIZE {
                return;
            }
            let reply = std::mem::take(&mut self.rx);
            if !self.finish_handshake(now, &reply) {
                return;
            }
        }
        if self.state != LinkState::Connected {
            return;
        }
        let mut rx = std::mem::take(&mut self.rx);
        if !rx.is_empty() {
            if rx.len() < 2 {
                let take = (2 - rx.len()).min(input.len());
                rx.extend_from_slice(&input[..take]);
                input = &mut input[take..];
                if rx.len() < 2 {
                    self.rx = rx;
                    return;
                }
            }
            let box_len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
            if box_len > MAX_FRAME_BOX {
                self.die(LinkDownReason::Oversized);
                return;
            }
            let want = 2 + box_len;
            let take = (want - rx.len()).min(input.len());
            rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if rx.len() < want {
                self.rx = rx;
                return;
            }
            if box_len > 0 && !self.frame(now, &mut rx[2..]) {
                return;
            }
            rx.clear();
        }
        loop {
            match split_frame(input) {
                Ok(FrameSplit::Incomplete) => {
                    rx.extend_from_slice(input);
                    self.rx = rx;
                    return;
                }
                Ok(FrameSplit::Empty) => input = &mut input[2..],
                Ok(FrameSplit::Frame { box_len }) => {
                    let (frame, rest) = input.split_at_mut(2 + box_len);
                    if !self.frame(now, &mut frame[2..]) {
                        return;
                    }
                    input = rest;
                }
                Err(_) => {
                    self.die(LinkDownReason::Oversized);
                    return;
                }
            }
        }
    }

    // ---- internals ----

    fn slot_mut(&mut self, wire_id: u8) -> Option<&mut Option<PublicKey>> {
        let i = usize::from(wire_id.checked_sub(NUM_RESERVED_PORTS)?);
        self.slots.get_mut(i)
    }

    fn finish_handshake(&mut self, now: Instant, reply: &[u8]) -> bool {
        let opened = HandshakeResponse::parse(reply)
            .and_then(|r| r.open(&self.keypair.precompute(&self.relay_pk)));
        let (Ok(theirs), Some(temp)) = (opened, self.temp.take()) else {
            self.die(LinkDownReason::HandshakeFailed);
            return false;
        };
        // A low-order temporary key from the relay is refused (the session
        // key would be the all-zero X25519 output, known to anyone).
        let Ok(session) = temp.try_precompute(&theirs.temp_pk) else {
            self.die(LinkDownReason::HandshakeFailed);
            return false;
        };
        self.chan = Some(SecureChannel::new(
            session,
            self.base_nonce,
            theirs.base_nonce,
        ));
        self.state = LinkState::Connected;
        self.events.push_back(ClientEvent::Connected);
        // §2.2: the first PING confirms us on the server.
        self.send_ping(now);
        let peers: Vec<PublicKey> = self.peers.keys().copied().collect();
        for peer in peers {
            self.send_prio(&RelayPacket::RoutingRequest { peer });
        }
        true
    }

    fn send_ping(&mut self, now: Instant) {
        self.ping_counter = self.ping_counter.wrapping_add(1).max(1);
        let ping_id = self.ping_counter.to_be_bytes();
        self.ping = Some((ping_id, now));
        self.next_ping = now + self.cfg.ping_interval;
        self.send_prio(&RelayPacket::Ping { ping_id });
    }

    /// Queues a control frame, unless that would pass the priority bound:
    /// then the link is marked to die as [`LinkDownReason::NotReading`]
    /// (at once when called from input handling, else at the next timer).
    fn send_prio(&mut self, p: &RelayPacket<'_>) {
        if self.out.prio_len() + p.encoded_len() + FRAME_OVERHEAD > self.prio_bound() {
            if !self.overflow {
                tracing::debug!(
                    relay = ?self.relay_pk,
                    queued = self.out.prio_len(),
                    "relay does not read our control frames"
                );
            }
            self.overflow = true;
            return;
        }
        // Encoding only fails for packets we never build here.
        if self.out.push_prio(p).is_err() {
            tracing::error!("relay client could not queue a control frame");
        }
    }

    fn die(&mut self, reason: LinkDownReason) {
        if matches!(self.state, LinkState::Disconnected(_)) {
            return;
        }
        tracing::debug!(relay = ?self.relay_pk, ?reason, "relay link down");
        self.state = LinkState::Disconnected(reason);
        for (peer, st) in self.peers.iter_mut() {
            if matches!(st, RouteState::Online { .. }) {
                self.events
                    .push_back(ClientEvent::PeerOffline { peer: *peer });
            }
            *st = RouteState::Requested;
        }
        self.slots.iter_mut().for_each(|s| *s = None);
        self.out.clear_data();
        self.out.shrink_idle();
        self.rx = Vec::new();
        self.events.push_back(ClientEvent::Disconnected { reason });
    }

    /// One frame box. False if the link died.
    fn frame(&mut self, now: Instant, frame_box: &mut [u8]) -> bool {
        let Some(chan) = self.chan.as_mut() else {
            return false;
        };
        let Ok(plain) = chan.open_in_place(frame_box) else {
            self.die(LinkDownReason::BadTag);
            return false;
        };
        let Ok(packet) = RelayPacket::parse(plain) else {
            self.die(LinkDownReason::ProtocolViolation);
            return false;
        };
        match packet {
            RelayPacket::Data {
                connection_id,
                data,
            } => {
                let peer = self.slot_mut(connection_id).and_then(|s| *s);
                match peer {
                    Some(peer) => {
                        self.counters.data_received += 1;
                        self.counters.data_bytes_received += data.len() as u64;
                        self.events.push_back(ClientEvent::Data {
                            peer,
                            data: data.to_vec(),
                        });
                    }
                    None => self.counters.ignored += 1,
                }
            }
            RelayPacket::RoutingResponse {
                connection_id,
                peer,
            } => self.routing_response(connection_id, peer),
            RelayPacket::ConnectNotification { connection_id } => {
                if connection_id < NUM_RESERVED_PORTS {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some(peer) = self.slot_mut(connection_id).and_then(|s| *s) {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        if matches!(st, RouteState::Registered { .. }) {
                            *st = RouteState::Online {
                                slot: connection_id,
                            };
                            self.events.push_back(ClientEvent::PeerOnline { peer });
                        }
                    }
                }
            }
            RelayPacket::DisconnectNotification { connection_id } => {
                if connection_id < NUM_RESERVED_PORTS {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some(peer) = self.slot_mut(connection_id).and_then(|s| *s) {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        if matches!(st, RouteState::Online { .. }) {
                            *st = RouteState::Registered {
                                slot: connection_id,
                            };
                            self.events.push_back(ClientEvent::PeerOffline { peer });
                        }
                    }
                }
            }
            RelayPacket::Ping { ping_id } => self.send_prio(&RelayPacket::Pong { ping_id }),
            RelayPacket::Pong { ping_id } => {
                if ping_id == [0; 8] {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some((id, sent)) = self.ping {
                    if id == ping_id {
                        self.ping = None;
                        self.counters.pongs += 1;
                        let rtt = now.saturating_duration_since(sent);
                        self.last_rtt = Some(rtt);
                        self.srtt = Some(match self.srtt {
                            None => rtt,
                            Some(s) => (s * 7 + rtt) / 8,
                        });
                        self.events.push_back(ClientEvent::Rtt { rtt });
                    }
                }
            }
            RelayPacket::OobRecv { sender, data } => {
                self.counters.oob_received += 1;
                self.events.push_back(ClientEvent::Oob {
                    from: sender,
                    data: data.to_vec(),
                });
            }
            RelayPacket::OnionResponse { .. } | RelayPacket::Forwarding { .. } => {
                self.counters.ignored += 1;
            }
            RelayPacket::RoutingRequest { .. }
            | RelayPacket::OobSend { .. }
            | RelayPacket::OnionRequest { .. }
            | RelayPacket::ForwardRequest { .. } => {
                self.die(LinkDownReason::ProtocolViolation);
                return false;
            }
        }
        // A reply (PONG, a slot given back) that did not fit: the relay asks
        // without reading.
        if self.overflow {
            self.die(LinkDownReason::NotReading);
            return false;
        }
        true
    }

    /// §2.6 ROUTING_RESPONSE: 0 refused; a slot in use is ignored; else
    /// REGISTERED.
    fn routing_response(&mut self, connection_id: u8, peer: PublicKey) {
        if connection_id == 0 {
            if self.peers.contains_key(&peer) {
                self.events.push_back(ClientEvent::RouteRefused { peer });
            }
            return;
        }
        let Some(slot) = self.slot_mut(connection_id) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        match self.peers.get(&peer) {
            Some(RouteState::Requested) => {}
            Some(_) => return,
            None => {
                // Not asked for (or unrouted meanwhile): give it back.
                self.send_prio(&RelayPacket::DisconnectNotification { connection_id });
                return;
            }
        }
        if let Some(s) = self.slot_mut(connection_id) {
            *s = Some(peer);
        }
        self.peers.insert(
            peer,
            RouteState::Registered {
                slot: connection_id,
            },
        );
        self.events.push_back(ClientEvent::RouteResponse {
            peer,
            slot: connection_id,
        });
    }
}
