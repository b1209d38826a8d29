//! Sans-IO Tox TCP relay client: one relay link (docs/PROTOCOL.md §2.2, §2.6),
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
//!
//! Layout: this file holds [`Client`] and its calls; `types` its
//! configuration, states, errors, events and counters; `input` the
//! handshake reply and the frames it receives; `set` [`RelaySet`].

mod input;
mod set;
#[cfg(test)]
mod tests;
mod types;

pub use set::{PeerRelayState, RelayLinkState, RelaySet, RelaySetConfig, RelaySetEvent, SocketId};
pub use types::{
    ClientConfig, ClientCounters, ClientEvent, LinkDownReason, LinkSendError, LinkState,
    RouteError, RouteState,
};

use crate::crypto::{KeyPair, Nonce, PublicKey};
use crate::relay_queue::FrameQueue;
use crate::wire::relay::{
    HandshakePayload, HandshakeRequest, RelayPacket, SecureChannel, FRAME_OVERHEAD, MAX_OOB_DATA,
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

    // ---- internals ----

    fn slot_mut(&mut self, wire_id: u8) -> Option<&mut Option<PublicKey>> {
        let i = usize::from(wire_id.checked_sub(NUM_RESERVED_PORTS)?);
        self.slots.get_mut(i)
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
}
