//! One net_crypto connection as a sans-IO state machine (docs/PROTOCOL.md §4–§6).
//!
//! A [`Session`] is fed datagrams with [`Session::handle_packet`] and timer
//! ticks with [`Session::handle_timeout`], and is polled for datagrams to send
//! ([`Session::poll_transmit`]), for application events
//! ([`Session::poll_event`]) and for its next deadline
//! ([`Session::poll_timeout`]). It never reads a clock, opens a socket or
//! picks a path.
//!
//! # Paths
//! The session is path-agnostic (docs/DESIGN.md §3). Every input carries an opaque
//! [`PathId`] chosen by the owner; the session records when each path last
//! carried an authenticated packet ([`Session::last_authenticated`]), reports
//! an authentication failure as the [`DropReason`] of
//! [`Session::handle_packet`] (the owner blames the path) and accepts a data
//! packet from any path, deduplicating by nonce and packet number. Outgoing
//! packets are written into the caller's buffer with a [`TransmitKind`]; the
//! owner decides where they go and may report [`Session::on_sent`] so that
//! [`Session::resend_in_flight`] can force immediate retransmission of what
//! was in flight on a path that died.
//!
//! # States (§4.5) and phases
//! `CookieRequesting → HandshakeSent → NotConfirmed → Established`, plus
//! `Closed` ([`State`] is the public view). Internally the state is a
//! `Phase` that owns what exists in it:
//!
//! | State | phase | holds |
//! |---|---|---|
//! | CookieRequesting, HandshakeSent | `Handshaking` | handshake material (`handshaking.rs`) |
//! | NotConfirmed | `NotConfirmed` | handshake material and the data link |
//! | Established | `Established` | the data link (`established.rs`) |
//! | Closed | `Closed` | the data link if there was one (undelivered data, a pending KILL) |
//!
//! The handshake material (session key pair, shared keys, echo id, our
//! cookie request or handshake, its send count) is dropped with its phase;
//! the data link (data key, nonces, reliable buffers, lossy queues, per-path
//! loss evidence) exists from the peer's accepted handshake on. Congestion
//! control, the timers ([`TimerTable`] of `SessionTimer`), events and
//! counters are shared by every phase (`common.rs`).
//!
//! The current cookie request / handshake is re-sent every
//! `handshake_interval` (1 s); after `handshake_tries` (8) sends without
//! progress the attempt ends with [`Event::HandshakeTimeout`]. There is no
//! timeout once established; only an authenticated KILL (or a local
//! [`Session::kill`]) ends the connection. Bad input never does (§6).
//!
//! # Invariants
//! * Only the handshake phases arm the handshake timer; only a phase with a
//!   data link arms the request, baseline, RTO and pacing timers; a close
//!   stops them all.
//! * Data packets are built and opened by [`crate::wire::net_crypto`]
//!   ([`DataPacket`], [`wire::DataPlaintext`], the nonce reconstruction
//!   helpers): the code the fuzzers run.
//! * Nothing on the hot path allocates except storing received lossless data
//!   (handed to the application as the `Vec` of [`Event::Lossless`]) and
//!   copying submitted data into the send buffer (buffers are recycled).
//! * Memory is bounded: send buffer ≤ `send_buffer` packets (then
//!   [`SendError::BufferFull`]), receive buffer ≤ 32768 packets, lossy queues
//!   and informational events bounded (excess dropped and counted).
//! * The receive buffer is the delivery queue: `recv_start` only advances when
//!   the application takes a packet, so a slow reader slows the sender
//!   (backpressure end to end).

mod common;
mod config;
pub mod congestion;
mod control;
mod established;
mod events;
pub mod handshake;
mod handshaking;
mod multipath;
pub mod reliable;

pub use crate::error::{DropReason, SendError};
pub use config::{Identity, SessionConfig, SessionStats};
pub use events::{DataKind, Event, Transmit, TransmitKind};

use common::{Common, SessionTimer};

use crate::error::{Misbehavior, Refusal};
use crate::wire::WireError;

use crate::crypto::{KeyPair, Nonce, PublicKey};
use crate::timer::TimerTable;
use crate::wire::net_crypto::{self as wire, packet_id, DataPacket};
use congestion::Congestion;
use established::Link;
use handshake::{ValidHandshake, PACKET_COOKIE_RESPONSE, PACKET_DATA, PACKET_HANDSHAKE};
use handshaking::Handshaking;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use reliable::{MAX_DATA_SIZE, PACKET_BUFFER_SIZE};
use std::collections::VecDeque;
use std::time::Instant;

/// `MAX_CRYPTO_PACKET_SIZE` (§4.7): the largest datagram a session writes; the
/// buffer given to [`Session::poll_transmit`] must hold this many bytes.
pub const MAX_PACKET_SIZE: usize = wire::MAX_CRYPTO_PACKET_SIZE;
/// Smallest valid data packet (§4.7).
pub const MIN_DATA_PACKET_SIZE: usize = wire::MIN_DATA_PACKET_SIZE;
/// Overhead of a data packet around its data: id, nonce, tag, two numbers.
pub const DATA_OVERHEAD: usize = wire::MAX_CRYPTO_PACKET_SIZE - wire::MAX_CRYPTO_DATA_SIZE;

/// Packet id of a request packet (§4.8).
pub const PACKET_ID_REQUEST: u8 = wire::packet_id::REQUEST;
/// Packet id of a kill packet (§4.8).
pub const PACKET_ID_KILL: u8 = wire::packet_id::KILL;

pub use crate::paths::PathId;

/// Connection state (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// We initiated and are asking for a cookie.
    CookieRequesting,
    /// Our handshake is out.
    HandshakeSent,
    /// The peer's handshake is processed; waiting for its first data packet.
    NotConfirmed,
    /// Data flows.
    Established,
    /// Killed, timed out or closed.
    Closed,
}

/// The phase of a session; [`State`] is its public view. Handshake material
/// lives only in the handshake phases, the data link only once the peer's
/// handshake was accepted.
enum Phase {
    /// COOKIE_REQUESTING (our cookie request out) or HANDSHAKE_SENT (our
    /// handshake out): no session key yet.
    Handshaking(Box<Handshaking>),
    /// NOT_CONFIRMED: the peer's handshake is in (the link exists), ours is
    /// still re-sent until the peer's first data packet.
    NotConfirmed(Box<Handshaking>, Box<Link>),
    /// ESTABLISHED.
    Established(Box<Link>),
    /// CLOSED. The link, if there was one, stays so that undelivered data
    /// can still be read and a local KILL written.
    Closed {
        link: Option<Box<Link>>,
        /// A local [`Session::kill`] left one KILL to send.
        kill_pending: bool,
    },
}

impl Phase {
    const CLOSED: Phase = Phase::Closed {
        link: None,
        kill_pending: false,
    };

    fn link(&self) -> Option<&Link> {
        match self {
            Phase::NotConfirmed(_, l) | Phase::Established(l) => Some(l),
            Phase::Closed { link, .. } => link.as_deref(),
            Phase::Handshaking(_) => None,
        }
    }

    fn link_mut(&mut self) -> Option<&mut Link> {
        match self {
            Phase::NotConfirmed(_, l) | Phase::Established(l) => Some(l),
            Phase::Closed { link, .. } => link.as_deref_mut(),
            Phase::Handshaking(_) => None,
        }
    }

    /// The link while data may flow (not after a close).
    fn live_link_mut(&mut self) -> Option<&mut Link> {
        match self {
            Phase::NotConfirmed(_, l) | Phase::Established(l) => Some(l),
            Phase::Handshaking(_) | Phase::Closed { .. } => None,
        }
    }
}

/// One net_crypto connection. See the module documentation.
pub struct Session {
    c: Common,
    phase: Phase,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Session");
        d.field("state", &self.state())
            .field("peer_real", &self.c.peer_real);
        if let Some(l) = self.phase.link() {
            d.field("send_start", &l.send.start())
                .field("send_end", &l.send.end())
                .field("recv_start", &l.recv.start())
                .field("recv_end", &l.recv.end());
        }
        d.finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a connection to a peer whose real and DHT keys we know
    /// (COOKIE_REQUESTING, §4.3). The first cookie request is due at once.
    pub fn connect(
        now: Instant,
        rng: &mut impl CryptoRngCore,
        cfg: SessionConfig,
        id: &Identity,
        peer_real: PublicKey,
        peer_dht: PublicKey,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        // Drawn in this order (wire vectors and seeded runs depend on it).
        let session_kp = KeyPair::generate(&mut rng);
        let tx_base = Nonce::random(&mut rng);
        let mut echo_id = [0u8; 8];
        rng.fill_bytes(&mut echo_id);
        let cc = Congestion::new(cfg.initial_rtt);
        let mut timers = TimerTable::new();
        timers.set(SessionTimer::Handshake, now);
        let mut c = Common {
            cfg,
            rng,
            peer_real,
            peer_dht,
            our_real_pk: id.real.public,
            tx_base,
            cc,
            timers,
            events: VecDeque::new(),
            terminal: None,
            last_now: now,
            paths: Vec::new(),
            last_authenticated_any: None,
            acked_log: None,
            stats: SessionStats::default(),
        };
        let hs = Handshaking::new(&mut c, id, session_kp, echo_id);
        Session {
            c,
            phase: Phase::Handshaking(Box::new(hs)),
        }
    }

    /// Accepts a connection from a validated handshake that arrived on an
    /// unknown path (§4.4): starts in NOT_CONFIRMED with our handshake (built
    /// on the peer's other cookie) and a request packet due at once.
    pub fn accept(
        now: Instant,
        rng: &mut impl CryptoRngCore,
        cfg: SessionConfig,
        id: &Identity,
        hs: &ValidHandshake,
    ) -> Self {
        let mut s = Self::connect(now, rng, cfg, id, hs.peer_real, hs.peer_dht);
        if let Phase::Handshaking(h) = &mut s.phase {
            h.build_our_handshake(&mut s.c, now, &hs.other_cookie);
        }
        s.adopt_peer_handshake(now, hs);
        s
    }

    /// Current state.
    pub fn state(&self) -> State {
        match &self.phase {
            Phase::Handshaking(h) => match h.ours {
                handshaking::Ours::CookieRequest(_) => State::CookieRequesting,
                handshaking::Ours::Handshake(_) => State::HandshakeSent,
            },
            Phase::NotConfirmed(..) => State::NotConfirmed,
            Phase::Established(_) => State::Established,
            Phase::Closed { .. } => State::Closed,
        }
    }

    /// Whether data can be sent.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// Whether the session is over (and has nothing left to send).
    pub fn is_closed(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closed {
                kill_pending: false,
                ..
            }
        )
    }

    /// The peer's real public key.
    pub fn peer_real(&self) -> &PublicKey {
        &self.c.peer_real
    }

    /// The peer's DHT public key.
    pub fn peer_dht(&self) -> &PublicKey {
        &self.c.peer_dht
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.c.stats
    }

    /// The congestion controller (read-only, for metrics).
    pub fn congestion(&self) -> &Congestion {
        &self.c.cc
    }

    /// Free slots in the send buffer.
    pub fn send_buffer_free(&self) -> u32 {
        match self.phase.link() {
            Some(l) => l.send.free_slots(),
            // The buffer a link starts with (see `SendBuffer::new`).
            None => self.c.cfg.send_buffer.clamp(1, PACKET_BUFFER_SIZE),
        }
    }

    /// Lossless packets submitted and not yet acknowledged.
    pub fn unacknowledged(&self) -> u32 {
        self.phase.link().map_or(0, |l| l.send.len())
    }

    /// When an authenticated packet last arrived on `path`.
    pub fn last_authenticated(&self, path: PathId) -> Option<Instant> {
        self.c
            .paths
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.last_auth)
    }

    /// When an authenticated packet last arrived on any path.
    pub fn last_authenticated_any(&self) -> Option<Instant> {
        self.c.last_authenticated_any
    }

    /// The peer's session public key, once its handshake was processed.
    pub fn peer_session_pk(&self) -> Option<&PublicKey> {
        self.phase.link().map(|l| &l.peer_session_pk)
    }

    // ---------------------------------------------------------------- input

    /// Handles one datagram (a cookie response, handshake or data packet) that
    /// arrived on `path`. `buf` is decrypted in place (its contents are
    /// unspecified afterwards). Cookie requests are not for sessions: the
    /// node answers them with its stateless responder.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        path: PathId,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        self.c.last_now = now;
        self.c.stats.packets_received += 1;
        let r = match buf.first() {
            Some(&PACKET_COOKIE_RESPONSE) => self.on_cookie_response(now, buf),
            Some(&PACKET_HANDSHAKE) => self.on_handshake(now, path, buf),
            Some(&PACKET_DATA) => self.on_data(now, path, buf),
            None => Err(DropReason::Malformed(WireError::Empty)),
            Some(&id) => Err(DropReason::Malformed(WireError::BadId {
                kind: "net_crypto packet",
                id,
            })),
        };
        if let Err(e) = &r {
            match e {
                DropReason::Misbehaved(Misbehavior::DataAuth) => self.c.stats.auth_failures += 1,
                DropReason::Refused(Refusal::Duplicate) => self.c.stats.duplicate_datagrams += 1,
                _ => self.c.stats.dropped += 1,
            }
            tracing::trace!(peer = ?self.c.peer_real, ?path, reason = %e, "dropped packet");
        }
        r
    }

    fn on_cookie_response(&mut self, now: Instant, buf: &[u8]) -> Result<(), DropReason> {
        let state = self.state();
        let Phase::Handshaking(hs) = &mut self.phase else {
            return Err(DropReason::Refused(Refusal::WrongState(state)));
        };
        if state != State::CookieRequesting {
            return Err(DropReason::Refused(Refusal::WrongState(state)));
        }
        hs.on_cookie_response(&mut self.c, now, buf)?;
        tracing::debug!(peer = ?self.c.peer_real, "cookie received, handshake sent");
        Ok(())
    }

    fn on_handshake(&mut self, now: Instant, path: PathId, buf: &[u8]) -> Result<(), DropReason> {
        let prev = self.state();
        let (Phase::Handshaking(hs) | Phase::NotConfirmed(hs, _)) = &mut self.phase else {
            return Err(DropReason::Refused(Refusal::WrongState(prev)));
        };
        let vh = hs.open_peer_handshake(&self.c, now, buf)?;
        if !vh.peer_dht.ct_eq(&self.c.peer_dht) {
            self.c
                .push_info(Event::PeerDhtKeyChanged { dht: vh.peer_dht });
            return Ok(());
        }
        self.c.note_path(now, path);
        self.c.last_authenticated_any = Some(now);
        match prev {
            State::CookieRequesting => {
                hs.build_our_handshake(&mut self.c, now, &vh.other_cookie);
                hs.restart_sends(&mut self.c, now);
            }
            State::HandshakeSent => {
                if let Some(t) = hs.last_sent {
                    self.c.cc.seed_rtt(now, now.saturating_duration_since(t));
                }
            }
            _ => {}
        }
        self.adopt_peer_handshake(now, &vh);
        tracing::debug!(peer = ?self.c.peer_real, ?prev, "peer handshake accepted");
        Ok(())
    }

    /// The peer's handshake is accepted: NOT_CONFIRMED, with a link for its
    /// session key (a new one if it changed), and a request packet due at
    /// once (§4.5: the first data packet in NOT_CONFIRMED is a request).
    fn adopt_peer_handshake(&mut self, now: Instant, vh: &ValidHandshake) {
        let c = &mut self.c;
        self.phase = match std::mem::replace(&mut self.phase, Phase::CLOSED) {
            Phase::Handshaking(hs) => {
                let key = hs.session_kp.precompute(&vh.peer_session_pk);
                let link = Link::new(
                    &c.cfg,
                    c.tx_base,
                    key,
                    vh.peer_session_pk,
                    vh.peer_base_nonce,
                );
                Phase::NotConfirmed(hs, Box::new(link))
            }
            Phase::NotConfirmed(hs, mut link) => {
                if link.peer_session_pk != vh.peer_session_pk {
                    let key = hs.session_kp.precompute(&vh.peer_session_pk);
                    link.rekey(key, vh.peer_session_pk, vh.peer_base_nonce);
                }
                Phase::NotConfirmed(hs, link)
            }
            // Not reached: the callers hold a handshake phase.
            other => other,
        };
        c.timers.set(SessionTimer::Request, now);
        c.timers
            .set(SessionTimer::Baseline, now + c.cfg.request_interval);
    }

    fn on_data(&mut self, now: Instant, path: PathId, buf: &mut [u8]) -> Result<(), DropReason> {
        // The wire's parser checks the id and the length bounds.
        let low = DataPacket::parse(buf)
            .map_err(DropReason::Malformed)?
            .nonce_low;
        let state = self.state();
        let Some(link) = self.phase.live_link_mut() else {
            return Err(DropReason::Refused(Refusal::WrongState(state)));
        };
        let fresh = link.open(low, buf)?;
        self.c.note_path(now, path);
        if !fresh {
            // A replayed datagram proves nothing about the peer being alive
            // (a relay can replay old ones to block a restart takeover).
            return Err(DropReason::Refused(Refusal::Duplicate));
        }
        self.c.last_authenticated_any = Some(now);
        // Opened in place: the plaintext follows the tag. §4.7 (2): any
        // amount of zero padding is skipped; only zeros → drop.
        let Ok(pt) = DataPacket::plaintext(buf) else {
            return Err(DropReason::Misbehaved(Misbehavior::InvalidContent));
        };
        let (buffer_start, num) = (pt.buffer_start, pt.packet_number);
        // Copy the data out of `buf` (a stack copy, no allocation).
        let mut tmp = [0u8; MAX_DATA_SIZE];
        let dlen = pt.data.len().min(MAX_DATA_SIZE);
        tmp[..dlen].copy_from_slice(&pt.data[..dlen]);
        let data = &tmp[..dlen];
        // §4.7 (1): buffer_start must not acknowledge numbers never sent.
        if !link.send.ack_in_range(buffer_start) {
            return Err(DropReason::Misbehaved(Misbehavior::InvalidContent));
        }
        // §4.7 (3): KILL.
        if data.first() == Some(&PACKET_ID_KILL) {
            tracing::debug!(peer = ?self.c.peer_real, "killed by peer");
            self.close_with(Event::Killed);
            return Ok(());
        }
        // §4.7 (4): NOT_CONFIRMED → ESTABLISHED.
        if state == State::NotConfirmed {
            self.confirm(now);
        }
        let Some(link) = self.phase.live_link_mut() else {
            return Err(DropReason::Refused(Refusal::WrongState(state)));
        };
        link.on_content(&mut self.c, now, path, buffer_start, num, data)
    }

    /// The peer's first data packet: ESTABLISHED; the handshake material is
    /// dropped.
    fn confirm(&mut self, now: Instant) {
        let c = &mut self.c;
        self.phase = match std::mem::replace(&mut self.phase, Phase::CLOSED) {
            Phase::NotConfirmed(hs, link) => {
                if let Some(t) = hs.last_sent {
                    c.cc.seed_rtt(now, now.saturating_duration_since(t));
                }
                Phase::Established(link)
            }
            other => other,
        };
        c.timers.stop(SessionTimer::Handshake);
        // Essential events are never dropped (at most a handful per session).
        c.events.push_back(Event::Established);
        // Confirm the peer quickly too.
        c.timers.set(SessionTimer::Request, now);
        tracing::debug!(peer = ?c.peer_real, "established");
    }

    /// Ends the connection with a terminal event (no KILL is sent).
    fn close_with(&mut self, e: Event) {
        self.c.terminal = Some(e);
        self.enter_closed(false);
    }

    // ---------------------------------------------------------------- timers

    /// Processes timers due at `now` (handshake re-sends and give-up, request
    /// packets, retransmission timeout). Call when
    /// [`poll_timeout`](Self::poll_timeout) passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.c.last_now = now;
        if let Phase::Handshaking(hs) | Phase::NotConfirmed(hs, _) = &self.phase {
            if hs.timed_out(&self.c, now) {
                tracing::debug!(peer = ?self.c.peer_real, state = ?self.state(), "handshake timed out");
                self.close_with(Event::HandshakeTimeout);
                return;
            }
        }
        let established = self.is_established();
        let c = &mut self.c;
        if let Some(link) = self.phase.live_link_mut() {
            if c.timers.is_expired(SessionTimer::Baseline, now) {
                c.timers.set(SessionTimer::Request, now);
            }
            if link.pops_since_ack > 0 && !c.timers.is_set(SessionTimer::Request) {
                c.timers.set(SessionTimer::Request, now);
            }
            if established && c.timers.is_expired(SessionTimer::Rto, now) {
                link.on_rto(c, now);
            }
        }
        if c.timers.is_expired(SessionTimer::Pacing, now) {
            c.timers.stop(SessionTimer::Pacing);
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// or [`poll_transmit`](Self::poll_transmit) has work, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let c = &self.c;
        match &mut self.phase {
            Phase::Closed { kill_pending, .. } => kill_pending.then_some(c.last_now),
            // Only the handshake timer and (NOT_CONFIRMED) the request
            // timers are armed before ESTABLISHED.
            Phase::Handshaking(_) | Phase::NotConfirmed(..) => c.timers.next_timeout(),
            Phase::Established(link) => {
                let mut t = c
                    .timers
                    .iter()
                    .filter(|&(k, _)| k != SessionTimer::Pacing)
                    .map(|(_, at)| at)
                    .min();
                let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
                if !link.lossy_out.is_empty() {
                    at(c.last_now);
                }
                if link.pops_since_ack > 0 {
                    at(c.last_now + c.cfg.ack_delay);
                }
                if link.send.has_pending() {
                    match c.timers.get(SessionTimer::Pacing) {
                        Some(p) => at(p),
                        None if c.cc.window_open() => at(c.last_now),
                        None => {}
                    }
                }
                t
            }
        }
    }

    // ---------------------------------------------------------------- output

    /// Writes the next datagram to send into `buf` (which must hold
    /// [`MAX_PACKET_SIZE`] bytes) and says what it is; `None` when nothing is
    /// due now. Call repeatedly until `None`, then wait for
    /// [`poll_timeout`](Self::poll_timeout) or new input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if buf.len() < MAX_PACKET_SIZE {
            return None;
        }
        self.c.last_now = now;
        let t = self.next_transmit(now, buf);
        if t.is_some() {
            self.c.stats.packets_sent += 1;
        }
        t
    }

    fn next_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let c = &mut self.c;
        match &mut self.phase {
            Phase::Closed { link, kill_pending } => {
                if !std::mem::take(kill_pending) {
                    return None;
                }
                let link = link.as_mut()?;
                let end = link.send.end();
                let len = link.write_data(buf, end, &[PACKET_ID_KILL]);
                Some(Transmit {
                    len,
                    kind: TransmitKind::Data(DataKind::Kill),
                })
            }
            Phase::Handshaking(hs) => hs.poll_send(c, now, buf),
            Phase::NotConfirmed(hs, link) => {
                if let Some(t) = hs.poll_send(c, now, buf) {
                    // §4.5: request packets go with the handshake re-sends.
                    c.timers.set(SessionTimer::Request, now);
                    return Some(t);
                }
                link.poll_send(c, now, buf, false)
            }
            Phase::Established(link) => link.poll_send(c, now, buf, true),
        }
    }

    /// The cookie request or handshake this session has sent and re-sends
    /// in its current state; `None` before the first one went out and once
    /// it is established or closed.
    pub fn handshake_packet(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::Handshaking(hs) | Phase::NotConfirmed(hs, _) => hs.packet(),
            Phase::Established(_) | Phase::Closed { .. } => None,
        }
    }

    // ---------------------------------------------------------------- API

    /// Queues a lossless packet (id 16..=191 first, 1..=1373 bytes) and
    /// returns its packet number. [`SendError::BufferFull`] is backpressure:
    /// retry after acknowledgements (see
    /// [`send_buffer_free`](Self::send_buffer_free)).
    pub fn send_lossless(&mut self, now: Instant, data: &[u8]) -> Result<u32, SendError> {
        let link = self.check_send(
            now,
            data,
            packet_id::LOSSLESS_FIRST..=packet_id::LOSSLESS_LAST,
        )?;
        link.send.push(data).ok_or(SendError::BufferFull)
    }

    /// What every send checks: established, 1..=1373 bytes, the id in `ids`.
    fn check_send(
        &mut self,
        now: Instant,
        data: &[u8],
        ids: std::ops::RangeInclusive<u8>,
    ) -> Result<&mut Link, SendError> {
        self.c.last_now = now;
        let link = match &mut self.phase {
            Phase::Established(l) => l,
            Phase::Closed { .. } => return Err(SendError::Closed),
            Phase::Handshaking(_) | Phase::NotConfirmed(..) => {
                return Err(SendError::NotEstablished)
            }
        };
        match data.first() {
            None => Err(SendError::BadLength(0)),
            Some(_) if data.len() > MAX_DATA_SIZE => Err(SendError::BadLength(data.len())),
            Some(id) if !ids.contains(id) => Err(SendError::BadId(*id)),
            Some(_) => Ok(link),
        }
    }

    /// Queues a lossy packet (id 192..=254 first, 1..=1373 bytes). It bypasses
    /// congestion control and leaves before queued lossless data.
    pub fn send_lossy(&mut self, now: Instant, data: &[u8]) -> Result<(), SendError> {
        let max = self.c.cfg.max_lossy_out;
        let link = self.check_send(now, data, packet_id::LOSSY_FIRST..=packet_id::LOSSY_LAST)?;
        if link.lossy_out.len() >= max {
            return Err(SendError::BufferFull);
        }
        link.lossy_out.push_back(data.to_vec());
        Ok(())
    }

    /// Closes the connection: one KILL is sent (best effort, §4.5) if a
    /// session key exists; no event is reported for a local close.
    pub fn kill(&mut self, now: Instant) {
        self.c.last_now = now;
        self.enter_closed(true);
    }

    /// Moves to CLOSED: every timer stops, queued lossy data is dropped, the
    /// link stays (unread data can still be taken) with one KILL to write if
    /// `kill`; the handshake material goes. A session already closed keeps
    /// what it had.
    fn enter_closed(&mut self, kill: bool) {
        self.c.timers.stop_all();
        self.phase = match std::mem::replace(&mut self.phase, Phase::CLOSED) {
            Phase::NotConfirmed(_, mut l) | Phase::Established(mut l) => {
                l.lossy_out.clear();
                Phase::Closed {
                    link: Some(l),
                    kill_pending: kill,
                }
            }
            other @ Phase::Closed { .. } => other,
            Phase::Handshaking(_) => Phase::CLOSED,
        };
    }

    /// The next event: informational events first, then lossless data in
    /// order, then lossy data, then a terminal event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.c.events.pop_front() {
            return Some(e);
        }
        if let Some(link) = self.phase.link_mut() {
            if let Some(d) = link.recv.pop() {
                link.pops_since_ack += 1;
                return Some(Event::Lossless(d));
            }
            if let Some(d) = link.lossy_in.pop_front() {
                return Some(Event::Lossy(d));
            }
        }
        self.c.terminal.take()
    }

    /// Our TX base nonce (for tests and diagnostics).
    pub fn tx_base_nonce(&self) -> &Nonce {
        &self.c.tx_base
    }

    /// Our real public key.
    pub fn our_real(&self) -> &PublicKey {
        &self.c.our_real_pk
    }
}

#[cfg(test)]
mod tests;
