//! One net_crypto connection as a sans-IO state machine (PROTOCOL.md §4–§6).
//!
//! A [`Session`] is fed datagrams with [`Session::handle_packet`] and timer
//! ticks with [`Session::handle_timeout`], and is polled for datagrams to send
//! ([`Session::poll_transmit`]), for application events
//! ([`Session::poll_event`]) and for its next deadline
//! ([`Session::poll_timeout`]). It never reads a clock, opens a socket or
//! picks a path.
//!
//! # Paths
//! The session is path-agnostic (DESIGN.md §3). Every input carries an opaque
//! [`PathId`] chosen by the owner; the session records when each path last
//! carried an authenticated packet ([`Session::last_authenticated`]), reports
//! authentication failures as a [`DropReason`] of [`Session::handle_packet`]
//! (the owner blames the path) and accepts a data packet from any path, deduplicating by nonce and packet
//! number. Outgoing packets are written into the caller's buffer with a
//! [`TransmitKind`]; the owner decides where they go and may report
//! [`Session::on_sent`] so that [`Session::resend_in_flight`] can force
//! immediate retransmission of what was in flight on a path that died.
//!
//! # States (§4.5)
//! `CookieRequesting → HandshakeSent → NotConfirmed → Established`, plus
//! `Closed`. The current cookie request / handshake is re-sent every
//! `handshake_interval` (1 s); after `handshake_tries` (8) sends without
//! progress the attempt ends with [`Event::HandshakeTimeout`]. There is no
//! timeout once established; only an authenticated KILL (or a local
//! [`Session::kill`]) ends the connection. Bad input never does (§6).
//!
//! # Invariants
//! * Nothing on the hot path allocates except storing received lossless data
//!   (handed to the application as the `Vec` of [`Event::Lossless`]) and
//!   copying submitted data into the send buffer (buffers are recycled).
//! * Memory is bounded: send buffer ≤ `send_buffer` packets (then
//!   [`SendError::BufferFull`]), receive buffer ≤ 32768 packets, lossy queues
//!   and informational events bounded (excess dropped and counted).
//! * The receive buffer is the delivery queue: `recv_start` only advances when
//!   the application takes a packet, so a slow reader slows the sender
//!   (backpressure end to end).

pub mod congestion;
pub mod handshake;
pub mod reliable;

use crate::crypto::{KeyPair, Nonce, PublicKey, SharedKey, MAC_SIZE};
use crate::wire::net_crypto::{DataPacket, DataPlaintext, RequestDecoder};
use congestion::Congestion;
use handshake::{
    build_cookie_request, build_handshake, open_cookie_response, open_handshake, CookieKey, EchoId,
    HandshakeError, HandshakeParams, Retry, ValidHandshake, COOKIE_REQUEST_SIZE, HANDSHAKE_SIZE,
    PACKET_COOKIE_RESPONSE, PACKET_DATA, PACKET_HANDSHAKE,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use reliable::{RecvBuffer, RxNonce, SendBuffer, Stored, MAX_DATA_SIZE, PACKET_BUFFER_SIZE};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `MAX_CRYPTO_PACKET_SIZE` (§4.7): the largest datagram a session writes; the
/// buffer given to [`Session::poll_transmit`] must hold this many bytes.
pub const MAX_PACKET_SIZE: usize = 1400;
/// Smallest valid data packet (§4.7).
pub const MIN_DATA_PACKET_SIZE: usize = 28;
/// Overhead of a data packet around its data: id, nonce, tag, two numbers.
pub const DATA_OVERHEAD: usize = 1 + 2 + MAC_SIZE + 8;

/// Packet id of a request packet (§4.8).
pub const PACKET_ID_REQUEST: u8 = 1;
/// Packet id of a kill packet (§4.8).
pub const PACKET_ID_KILL: u8 = 2;

/// An opaque path handle chosen by the owner (a UDP address, a relay, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u32);

/// What a transmitted datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// A cookie request (145 bytes).
    CookieRequest,
    /// A cookie response (161 bytes; from the node's responder).
    CookieResponse,
    /// A handshake (385 bytes).
    Handshake,
    /// A data packet.
    Data(DataKind),
}

/// What a data packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A lossless packet.
    Lossless {
        /// Its packet number.
        number: u32,
        /// Not its first transmission.
        retransmission: bool,
    },
    /// A lossy packet.
    Lossy,
    /// A request packet (acknowledgements and missing-packet list).
    Request,
    /// A kill packet.
    Kill,
}

/// A datagram written into the caller's buffer by [`Session::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// What it is.
    pub kind: TransmitKind,
}

/// Something the owner or the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection is established (a data packet from the peer decrypted).
    Established,
    /// The next lossless packet, in order (id byte first).
    Lossless(Vec<u8>),
    /// A lossy packet (id byte first); may be reordered or missing.
    Lossy(Vec<u8>),
    /// The peer sent an authenticated KILL. Terminal.
    Killed,
    /// The handshake did not complete in time. Terminal.
    HandshakeTimeout,
    /// A handshake named a different DHT key for the peer (§4.4): the owner
    /// should kill this session and connect again.
    PeerDhtKeyChanged {
        /// The new DHT key.
        dht: PublicKey,
    },
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The send buffer (or lossy queue) is full: retry after events or acks.
    #[error("send buffer full")]
    BufferFull,
    /// The connection is not established yet.
    #[error("connection not established")]
    NotEstablished,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// Data must be 1..=1373 bytes.
    #[error("bad data length {0}")]
    BadLength(usize),
    /// The id byte is not in the range of this kind of packet.
    #[error("packet id {0} not allowed here")]
    BadId(u8),
}

/// Why an incoming datagram was dropped (for logging and tests; dropping is
/// always silent on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Empty or unknown first byte, or a bad length.
    #[error("malformed")]
    Malformed,
    /// Not expected in the current state.
    #[error("unexpected in state {0:?}")]
    WrongState(State),
    /// A handshake-phase packet was refused.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A data packet failed authentication.
    #[error("authentication failed")]
    Auth,
    /// A datagram already processed (same nonce).
    #[error("duplicate datagram")]
    Duplicate,
    /// Invalid content inside an authenticated packet.
    #[error("invalid content")]
    Invalid,
}

/// Connection state (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Tunables of a session. Defaults follow c-toxcore where the wire or the
/// peer depends on them.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Re-send interval of cookie requests and handshakes (1 s, §4.5).
    pub handshake_interval: Duration,
    /// Sends of one handshake-phase packet before giving up (8, §4.5).
    pub handshake_tries: u32,
    /// Send buffer capacity in packets (≤ 32768).
    pub send_buffer: u32,
    /// Longest interval between request packets (1 s, §4.9).
    pub request_interval: Duration,
    /// Longest delay before acknowledging received lossless data.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many lossless packets.
    pub ack_every: u32,
    /// Smallest gap between request packets triggered by holes.
    pub min_request_gap: Duration,
    /// Queued outgoing lossy packets.
    pub max_lossy_out: usize,
    /// Queued incoming lossy packets.
    pub max_lossy_in: usize,
    /// Queued informational events.
    pub max_events: usize,
    /// First lossless packet number in both directions. c-toxcore uses 0; both
    /// ends must agree (tests start near `u32::MAX` to exercise wrap).
    pub initial_packet_number: u32,
    /// RTT assumed before any measurement.
    pub initial_rtt: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_interval: Duration::from_secs(1),
            handshake_tries: 8,
            send_buffer: PACKET_BUFFER_SIZE,
            request_interval: Duration::from_secs(1),
            ack_delay: Duration::from_millis(5),
            ack_every: 32,
            min_request_gap: Duration::from_millis(1),
            max_lossy_out: 256,
            max_lossy_in: 1024,
            max_events: 4096,
            initial_packet_number: 0,
            initial_rtt: Duration::from_millis(100),
        }
    }
}

/// Our keys as a node: real (long-term) pair, DHT pair, cookie key (§1, §4.2).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Long-term key pair (the Tox ID key).
    pub real: KeyPair,
    /// DHT key pair (per process).
    pub dht: KeyPair,
    /// The node's cookie key and clock.
    pub cookie_key: CookieKey,
}

/// Counters of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Datagrams written.
    pub packets_sent: u64,
    /// Lossless retransmissions.
    pub retransmissions: u64,
    /// Datagrams handled.
    pub packets_received: u64,
    /// Data packets that failed authentication.
    pub auth_failures: u64,
    /// Duplicate datagrams (same nonce).
    pub duplicate_datagrams: u64,
    /// Lossless packets received twice (same number).
    pub duplicate_lossless: u64,
    /// Other drops.
    pub dropped: u64,
    /// Events or lossy packets dropped because a queue was full.
    pub queue_drops: u64,
    /// Retransmission timeouts.
    pub rtos: u64,
    /// Packet numbers that request packets were walked over (per packet at
    /// most what we transmitted and still hold, plus nothing for the
    /// numbers below our buffer, which are crossed per list byte).
    pub request_numbers_walked: u64,
}

/// One net_crypto connection. See the module documentation.
pub struct Session {
    cfg: SessionConfig,
    rng: ChaCha20Rng,
    state: State,
    peer_real: PublicKey,
    peer_dht: PublicKey,
    our_real_pk: PublicKey,
    real_shared: SharedKey,
    dht_shared: SharedKey,
    cookie_key: CookieKey,
    session_kp: KeyPair,
    tx_base: Nonce,
    tx_nonce: Nonce,
    echo_id: EchoId,
    cookie_request: Box<[u8; COOKIE_REQUEST_SIZE]>,
    handshake: Option<Box<[u8; HANDSHAKE_SIZE]>>,
    peer_session_pk: Option<PublicKey>,
    retry: Retry,
    last_ctrl_sent: Option<Instant>,
    key: Option<SharedKey>,
    rx: Option<RxNonce>,
    send: SendBuffer,
    recv: RecvBuffer,
    cc: Congestion,
    events: VecDeque<Event>,
    lossy_in: VecDeque<Vec<u8>>,
    lossy_out: VecDeque<Vec<u8>>,
    terminal: Option<Event>,
    kill_pending: bool,
    request_at: Option<Instant>,
    last_request_sent: Option<Instant>,
    next_baseline: Option<Instant>,
    unacked_rx: u32,
    pops_since_ack: u32,
    pace_at: Option<Instant>,
    rto_at: Option<Instant>,
    rto_backoff: u32,
    largest_acked_sent: Option<Instant>,
    last_now: Option<Instant>,
    paths: Vec<PathInfo>,
    /// Per send path (tagged by the owner with [`Session::on_sent`]): the
    /// newest send time acknowledged and a smoothed RTT, so that loss is
    /// judged against the packet's own path (multipath: a packet overtaken
    /// by one sent later on a *faster* path is not lost).
    send_paths: Vec<SendPath>,
    last_authenticated_any: Option<Instant>,
    scratch: Vec<u32>,
    /// Lossless packet numbers acknowledged since the owner last drained
    /// them (`None`: not recorded; see [`Session::record_acks`]).
    acked_log: Option<Vec<u32>>,
    stats: SessionStats,
}

/// Loss evidence of one send path (see `Session::send_paths`).
#[derive(Debug, Clone, Copy)]
struct SendPath {
    path: PathId,
    largest_acked_sent: Option<Instant>,
    srtt: Option<Duration>,
}

/// Send paths tracked at most (the owner's paths of one peer).
const MAX_SEND_PATHS: usize = 16;

/// Most acknowledged numbers kept for an owner that does not drain them
/// (two send buffers' worth); later ones are not recorded.
const MAX_ACKED_LOG: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct PathInfo {
    path: PathId,
    last_auth: Instant,
}

/// Paths whose last authenticated receive is remembered (see
/// [`Session::last_authenticated`]); later ones are not tracked.
const MAX_AUTH_PATHS: usize = 64;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("peer_real", &self.peer_real)
            .field("send_start", &self.send.start())
            .field("send_end", &self.send.end())
            .field("recv_start", &self.recv.start())
            .field("recv_end", &self.recv.end())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new_common(
        now: Instant,
        rng: &mut impl CryptoRngCore,
        cfg: SessionConfig,
        id: &Identity,
        peer_real: PublicKey,
        peer_dht: PublicKey,
        state: State,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let session_kp = KeyPair::generate(&mut rng);
        let tx_base = Nonce::random(&mut rng);
        let mut echo_id = [0u8; 8];
        rng.fill_bytes(&mut echo_id);
        let dht_shared = id.dht.precompute(&peer_dht);
        let cookie_request = Box::new(build_cookie_request(
            &mut rng,
            &id.dht.public,
            &dht_shared,
            &id.real.public,
            &echo_id,
        ));
        let start = cfg.initial_packet_number;
        let cc = Congestion::new(cfg.initial_rtt);
        Session {
            send: SendBuffer::new(start, cfg.send_buffer),
            recv: RecvBuffer::new(start),
            rng,
            state,
            peer_real,
            peer_dht,
            our_real_pk: id.real.public,
            real_shared: id.real.precompute(&peer_real),
            dht_shared,
            cookie_key: id.cookie_key.clone(),
            session_kp,
            tx_base,
            tx_nonce: tx_base,
            echo_id,
            cookie_request,
            handshake: None,
            peer_session_pk: None,
            retry: Retry::now(now),
            last_ctrl_sent: None,
            key: None,
            rx: None,
            cc,
            events: VecDeque::new(),
            lossy_in: VecDeque::new(),
            lossy_out: VecDeque::new(),
            terminal: None,
            kill_pending: false,
            request_at: None,
            last_request_sent: None,
            next_baseline: None,
            unacked_rx: 0,
            pops_since_ack: 0,
            pace_at: None,
            rto_at: None,
            rto_backoff: 0,
            largest_acked_sent: None,
            last_now: Some(now),
            paths: Vec::new(),
            send_paths: Vec::new(),
            last_authenticated_any: None,
            scratch: Vec::new(),
            acked_log: None,
            stats: SessionStats::default(),
            cfg,
        }
    }

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
        Self::new_common(
            now,
            rng,
            cfg,
            id,
            peer_real,
            peer_dht,
            State::CookieRequesting,
        )
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
        let mut s = Self::new_common(
            now,
            rng,
            cfg,
            id,
            hs.peer_real,
            hs.peer_dht,
            State::NotConfirmed,
        );
        s.build_our_handshake(now, &hs.other_cookie);
        s.adopt_peer_handshake(now, hs);
        s
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether data can be sent.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the session is over (and has nothing left to send).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && !self.kill_pending
    }

    /// The peer's real public key.
    pub fn peer_real(&self) -> &PublicKey {
        &self.peer_real
    }

    /// The peer's DHT public key.
    pub fn peer_dht(&self) -> &PublicKey {
        &self.peer_dht
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The congestion controller (read-only, for metrics).
    pub fn congestion(&self) -> &Congestion {
        &self.cc
    }

    /// Free slots in the send buffer.
    pub fn send_buffer_free(&self) -> u32 {
        self.send.free_slots()
    }

    /// Lossless packets submitted and not yet acknowledged.
    pub fn unacknowledged(&self) -> u32 {
        self.send.len()
    }

    /// When an authenticated packet last arrived on `path`.
    pub fn last_authenticated(&self, path: PathId) -> Option<Instant> {
        self.paths
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.last_auth)
    }

    /// When an authenticated packet last arrived on any path.
    pub fn last_authenticated_any(&self) -> Option<Instant> {
        self.last_authenticated_any
    }

    /// The peer's session public key, once its handshake was processed.
    pub fn peer_session_pk(&self) -> Option<&PublicKey> {
        self.peer_session_pk.as_ref()
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
        self.last_now = Some(now);
        self.stats.packets_received += 1;
        let r = match buf.first() {
            Some(&PACKET_COOKIE_RESPONSE) => self.on_cookie_response(now, buf),
            Some(&PACKET_HANDSHAKE) => self.on_handshake(now, path, buf),
            Some(&PACKET_DATA) => self.on_data(now, path, buf),
            _ => Err(DropReason::Malformed),
        };
        if let Err(e) = &r {
            match e {
                DropReason::Auth => self.stats.auth_failures += 1,
                DropReason::Duplicate => self.stats.duplicate_datagrams += 1,
                _ => self.stats.dropped += 1,
            }
            tracing::trace!(peer = ?self.peer_real, ?path, reason = %e, "dropped packet");
        }
        r
    }

    fn on_cookie_response(&mut self, now: Instant, buf: &[u8]) -> Result<(), DropReason> {
        if self.state != State::CookieRequesting {
            return Err(DropReason::WrongState(self.state));
        }
        let cookie = open_cookie_response(&self.dht_shared, &self.echo_id, buf)?;
        if let Some(t) = self.last_ctrl_sent {
            self.cc.seed_rtt(now, now.saturating_duration_since(t));
        }
        self.build_our_handshake(now, &cookie);
        self.state = State::HandshakeSent;
        self.retry = Retry::now(now);
        tracing::debug!(peer = ?self.peer_real, "cookie received, handshake sent");
        Ok(())
    }

    fn build_our_handshake(&mut self, now: Instant, peer_cookie: &handshake::Cookie) {
        let other =
            self.cookie_key
                .make_cookie(&mut self.rng, now, &self.peer_real, &self.peer_dht);
        let hs = build_handshake(
            &mut self.rng,
            &HandshakeParams {
                real_shared: &self.real_shared,
                peer_cookie,
                base_nonce: &self.tx_base,
                session_pk: &self.session_kp.public,
                other_cookie: &other,
            },
        );
        self.handshake = Some(Box::new(hs));
    }

    fn adopt_peer_handshake(&mut self, now: Instant, hs: &ValidHandshake) {
        let same = self.peer_session_pk == Some(hs.peer_session_pk)
            && self.rx.is_some()
            && self.key.is_some();
        if !same {
            self.rx = Some(RxNonce::new(hs.peer_base_nonce));
            self.key = Some(self.session_kp.precompute(&hs.peer_session_pk));
            self.peer_session_pk = Some(hs.peer_session_pk);
        }
        self.state = State::NotConfirmed;
        // §4.5: the first data packet in NOT_CONFIRMED is a request packet.
        self.request_at = Some(now);
        self.next_baseline = Some(now + self.cfg.request_interval);
    }

    fn on_handshake(&mut self, now: Instant, path: PathId, buf: &[u8]) -> Result<(), DropReason> {
        match self.state {
            State::CookieRequesting | State::HandshakeSent | State::NotConfirmed => {}
            s => return Err(DropReason::WrongState(s)),
        }
        let real_shared = self.real_shared.clone();
        let hs = open_handshake(
            &self.cookie_key,
            now,
            Some(&self.peer_real),
            |_| Some(real_shared),
            buf,
        )?;
        if !hs.peer_dht.ct_eq(&self.peer_dht) {
            self.push_info(Event::PeerDhtKeyChanged { dht: hs.peer_dht });
            return Ok(());
        }
        self.note_path(now, path);
        self.last_authenticated_any = Some(now);
        let prev = self.state;
        if prev == State::CookieRequesting {
            self.build_our_handshake(now, &hs.other_cookie);
            self.retry = Retry::now(now);
        }
        if prev == State::HandshakeSent {
            if let Some(t) = self.last_ctrl_sent {
                self.cc.seed_rtt(now, now.saturating_duration_since(t));
            }
        }
        self.adopt_peer_handshake(now, &hs);
        tracing::debug!(peer = ?self.peer_real, ?prev, "peer handshake accepted");
        Ok(())
    }

    fn on_data(&mut self, now: Instant, path: PathId, buf: &mut [u8]) -> Result<(), DropReason> {
        // The wire's parser checks the id and the length bounds.
        let low = DataPacket::parse(buf)
            .map_err(|_| DropReason::Malformed)?
            .nonce_low;
        let (Some(key), Some(rx)) = (self.key.as_ref(), self.rx.as_mut()) else {
            return Err(DropReason::WrongState(self.state));
        };
        if !matches!(self.state, State::NotConfirmed | State::Established) {
            return Err(DropReason::WrongState(self.state));
        }
        // §4.6: reconstruct the nonce from the 2-byte header.
        let cand = rx.candidate(low);
        if key.open_in_place(&cand.nonce, &mut buf[3..]).is_err() {
            // A packet from before the current nonce window (delayed for
            // long on a path that was black-holed, or a relay's stale
            // queue) is old, not forged: dropped without blaming the path.
            // (A failed open leaves the buffer as it was.)
            if let Some(old) = rx.stale(low) {
                if key.open_in_place(&old, &mut buf[3..]).is_ok() {
                    return Err(DropReason::Duplicate);
                }
            }
            return Err(DropReason::Auth);
        }
        let fresh = rx.accept(cand);
        self.note_path(now, path);
        if !fresh {
            // A replayed datagram proves nothing about the peer being alive
            // (a relay can replay old ones to block a restart takeover).
            return Err(DropReason::Duplicate);
        }
        self.last_authenticated_any = Some(now);
        // Opened in place: the plaintext follows the tag. §4.7 (2): any
        // amount of zero padding is skipped; only zeros → drop.
        let Ok(pt) = DataPlaintext::parse(&buf[3 + MAC_SIZE..]) else {
            return Err(DropReason::Invalid);
        };
        let (buffer_start, num, data) = (pt.buffer_start, pt.packet_number, pt.data);
        let id = data[0];
        // §4.7 (1): buffer_start must not acknowledge numbers never sent.
        if !self.send.ack_in_range(buffer_start) {
            return Err(DropReason::Invalid);
        }
        // §4.7 (3): KILL.
        if id == PACKET_ID_KILL {
            tracing::debug!(peer = ?self.peer_real, "killed by peer");
            self.close_with(Event::Killed);
            return Ok(());
        }
        // §4.7 (4): NOT_CONFIRMED → ESTABLISHED.
        if self.state == State::NotConfirmed {
            self.state = State::Established;
            self.handshake = None;
            if let Some(t) = self.last_ctrl_sent {
                self.cc.seed_rtt(now, now.saturating_duration_since(t));
            }
            self.push_event(Event::Established);
            // Confirm the peer quickly too.
            self.request_at = Some(now);
            tracing::debug!(peer = ?self.peer_real, "established");
        }
        // Copy the data out of `buf` so the borrow of the key ends.
        let mut tmp = [0u8; MAX_DATA_SIZE];
        let dlen = data.len().min(MAX_DATA_SIZE);
        tmp[..dlen].copy_from_slice(&data[..dlen]);
        let data = &tmp[..dlen];
        self.cc.on_ack_event(now);
        self.process_ack(now, buffer_start);
        match id {
            PACKET_ID_REQUEST => {
                self.process_request(now, buffer_start, &data[1..]);
                if self.recv.advance_end(num) {
                    self.want_request(now, true);
                }
            }
            16..=191 => match self.recv.store(num, data) {
                Stored::New { hole } => {
                    self.unacked_rx += 1;
                    self.want_request(now, hole);
                }
                Stored::Duplicate => {
                    self.stats.duplicate_lossless += 1;
                    self.unacked_rx += 1;
                    self.want_request(now, false);
                }
                Stored::OutOfWindow => {
                    // Below recv_start: already delivered; the peer lacks our ack.
                    self.stats.duplicate_lossless += 1;
                    self.want_request(now, false);
                }
            },
            192..=254 => {
                if self.recv.advance_end(num) {
                    self.want_request(now, true);
                }
                if self.lossy_in.len() < self.cfg.max_lossy_in {
                    self.lossy_in.push_back(data.to_vec());
                } else {
                    self.stats.queue_drops += 1;
                }
            }
            // 3..=15 reserved, 255 dropped (§4.8).
            _ => return Err(DropReason::Invalid),
        }
        Ok(())
    }

    fn note_path(&mut self, now: Instant, path: PathId) {
        match self.paths.iter_mut().find(|p| p.path == path) {
            Some(p) => p.last_auth = now,
            None => {
                if self.paths.len() < MAX_AUTH_PATHS {
                    self.paths.push(PathInfo {
                        path,
                        last_auth: now,
                    });
                }
            }
        }
    }

    fn push_info(&mut self, e: Event) {
        if self.events.len() < self.cfg.max_events {
            self.events.push_back(e);
        } else {
            self.stats.queue_drops += 1;
        }
    }

    fn push_event(&mut self, e: Event) {
        // Essential events are never dropped (at most a handful per session).
        self.events.push_back(e);
    }

    fn close_with(&mut self, e: Event) {
        self.state = State::Closed;
        self.terminal = Some(e);
        self.lossy_out.clear();
        self.request_at = None;
        self.rto_at = None;
        self.pace_at = None;
        self.next_baseline = None;
    }

    /// A request packet is wanted: at once for a hole (rate-limited), else
    /// after the ack delay or after `ack_every` packets.
    fn want_request(&mut self, now: Instant, urgent: bool) {
        let at = if urgent || self.unacked_rx >= self.cfg.ack_every {
            match self.last_request_sent {
                Some(t) => now.max(t + self.cfg.min_request_gap),
                None => now,
            }
        } else {
            now + self.cfg.ack_delay
        };
        self.request_at = Some(self.request_at.map_or(at, |r| r.min(at)));
    }

    /// `buffer_start` acknowledges everything below it (§4.7 step 1).
    fn process_ack(&mut self, now: Instant, buffer_start: u32) {
        let cc = &mut self.cc;
        let mut newest: Option<Instant> = None;
        let mut progressed = false;
        let mut largest = self.largest_acked_sent;
        let log = &mut self.acked_log;
        let send_paths = &mut self.send_paths;
        let mut per_path: [Option<(PathId, Instant)>; 4] = [None; 4];
        self.send.ack_below(buffer_start, |n, p| {
            progressed = true;
            if let Some(l) = log.as_mut().filter(|l| l.len() < MAX_ACKED_LOG) {
                l.push(n);
            }
            cc.on_acked(now, &p.cc, p.in_flight);
            if let Some(t) = p.sent_time {
                largest = Some(largest.map_or(t, |l| l.max(t)));
                if !p.retransmitted {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                    if let Some(id) = p.path {
                        note_path_ack(&mut per_path, send_paths, id, t);
                    }
                }
            }
        });
        self.largest_acked_sent = largest;
        self.path_rtt_samples(now, &per_path);
        if let Some(t) = newest {
            self.cc.on_rtt(now, now.saturating_duration_since(t));
        }
        if progressed {
            self.on_ack_progress(now);
        }
    }

    fn on_ack_progress(&mut self, now: Instant) {
        self.rto_backoff = 0;
        self.rto_at = (self.cc.in_flight > 0).then(|| now + self.rto());
    }

    fn rto(&self) -> Duration {
        let base = self.cc.srtt()
            + (self.cc.rttvar() * 4).max(Duration::from_millis(1))
            + self.cc.ack_interval()
            + self.cfg.ack_delay;
        let base = base.max(Duration::from_millis(20));
        (base * (1u32 << self.rto_backoff.min(6))).min(Duration::from_secs(10))
    }

    /// A request packet from the peer (§4.9), decoded relative to its own
    /// `buffer_start`.
    fn process_request(&mut self, now: Instant, buffer_start: u32, list: &[u8]) {
        let (_, sent_end) = self.send.sent_range();
        let mut missing = std::mem::take(&mut self.scratch);
        missing.clear();
        let mut newest: Option<Instant> = None;
        let mut progressed = false;
        let mut per_path: [Option<(PathId, Instant)>; 4] = [None; 4];
        let start = self.send.start();
        // Walk from the peer's buffer_start (it may lag ours after reordering)
        // up to what we ever transmitted.
        let walk_end = if sent_end.wrapping_sub(buffer_start) <= 2 * PACKET_BUFFER_SIZE {
            sent_end
        } else {
            buffer_start
        };
        let mut decoder = RequestDecoder::new(list, buffer_start, walk_end);
        // Numbers below our start are acknowledged already (up to 32,768 of
        // them, the peer's `buffer_start` may lag ours that much): cross them
        // in O(list bytes) rather than one by one, so a request costs
        // O(list + what we transmitted), never a 65,536-number walk.
        let below = start.wrapping_sub(buffer_start);
        if below <= walk_end.wrapping_sub(buffer_start) {
            decoder.skip_numbers(below);
        }
        let mut walked = 0u64;
        for item in decoder {
            walked += 1;
            let i = item.number;
            if i.wrapping_sub(start) >= sent_end.wrapping_sub(start) {
                // Below our start: already acknowledged.
                continue;
            }
            if item.requested {
                missing.push(i);
                continue;
            }
            let Some(p) = self.send.get_mut(i) else {
                continue;
            };
            if p.acked || p.sent_time.is_none() {
                continue;
            }
            let was = p.in_flight;
            p.in_flight = false;
            let stamp = p.cc;
            let t = p.sent_time;
            let rt = p.retransmitted;
            let sent_path = p.path;
            self.send.mark_acked(i);
            if let (Some(id), Some(t), false) = (sent_path, t, rt) {
                note_path_ack(&mut per_path, &mut self.send_paths, id, t);
            }
            self.cc.on_acked(now, &stamp, was);
            progressed = true;
            if let Some(l) = self.acked_log.as_mut().filter(|l| l.len() < MAX_ACKED_LOG) {
                l.push(i);
            }
            if let Some(t) = t {
                self.largest_acked_sent = Some(self.largest_acked_sent.map_or(t, |l| l.max(t)));
                if !rt {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
        self.stats.request_numbers_walked += walked;
        if let Some(t) = newest {
            self.cc.on_rtt(now, now.saturating_duration_since(t));
        }
        self.path_rtt_samples(now, &per_path);
        // Loss: requested and either sent before a packet the peer has, or
        // older than one smoothed RTT. A packet tagged with its send path
        // (multipath owner) is judged by that path's evidence only: overtaken
        // by a later packet *of the same path*, or older than that path's
        // smoothed RTT (a slow relay queue is not loss).
        let loss_delay =
            (self.cc.srtt() * 5 / 4 + self.cc.rttvar() * 4).max(Duration::from_millis(1));
        let slack = self.cc.min_rtt() / 8;
        for &i in &missing {
            let Some(p) = self.send.get(i) else { continue };
            let Some(sent) = p.sent_time else { continue };
            if p.acked || p.lost {
                continue;
            }
            let (largest, delay) = match p
                .path
                .and_then(|id| self.send_paths.iter().find(|s| s.path == id))
            {
                Some(sp) => (
                    sp.largest_acked_sent,
                    sp.srtt.map_or(loss_delay, |r| loss_delay.max(r * 5 / 4)),
                ),
                None if p.path.is_some() => (None, loss_delay),
                None => (self.largest_acked_sent, loss_delay),
            };
            let reordered_past = largest.is_some_and(|l| sent + slack < l);
            if reordered_past || now.saturating_duration_since(sent) >= delay {
                self.declare_lost(i);
            }
        }
        self.scratch = missing;
        if progressed {
            self.on_ack_progress(now);
        }
    }

    fn declare_lost(&mut self, i: u32) {
        if let Some(p) = self.send.get_mut(i) {
            if p.in_flight {
                p.in_flight = false;
                let st = p.cc;
                self.cc.on_lost(&st);
            }
        }
        self.send.mark_lost(i);
    }

    // ---------------------------------------------------------------- timers

    /// Processes timers due at `now` (handshake re-sends and give-up, request
    /// packets, retransmission timeout). Call when [`poll_timeout`]
    /// (Self::poll_timeout) passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        let handshaking = matches!(
            self.state,
            State::CookieRequesting | State::HandshakeSent | State::NotConfirmed
        );
        if handshaking && self.retry.sent >= self.cfg.handshake_tries && now >= self.retry.next {
            tracing::debug!(peer = ?self.peer_real, state = ?self.state, "handshake timed out");
            self.close_with(Event::HandshakeTimeout);
            return;
        }
        if matches!(self.state, State::NotConfirmed | State::Established) {
            if self.next_baseline.is_some_and(|t| now >= t) {
                self.request_at = Some(now);
            }
            if self.pops_since_ack > 0 && self.request_at.is_none() {
                self.request_at = Some(now);
            }
        }
        if self.state == State::Established && self.rto_at.is_some_and(|t| now >= t) {
            self.stats.rtos += 1;
            self.cc.on_rto();
            // Retransmit the oldest packet in flight and probe with a request
            // packet carrying our send_end, so the peer reports every hole.
            let (start, end) = self.send.sent_range();
            let mut i = start;
            while i != end {
                if self.send.get(i).is_some_and(|p| p.in_flight && !p.acked) {
                    self.declare_lost(i);
                    break;
                }
                i = i.wrapping_add(1);
            }
            self.request_at = Some(now);
            self.rto_backoff += 1;
            self.rto_at = (self.cc.in_flight > 0 || self.send.next_resend().is_some())
                .then(|| now + self.rto());
        }
        if self.pace_at.is_some_and(|t| now >= t) {
            self.pace_at = None;
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// or [`poll_transmit`](Self::poll_transmit) has work, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            State::Closed => {
                if self.kill_pending {
                    at(self.last_now);
                }
                return t;
            }
            State::CookieRequesting | State::HandshakeSent => at(Some(self.retry.next)),
            State::NotConfirmed => {
                at(Some(self.retry.next));
                at(self.request_at);
                at(self.next_baseline);
            }
            State::Established => {
                at(self.request_at);
                at(self.next_baseline);
                at(self.rto_at);
                if !self.lossy_out.is_empty() {
                    at(self.last_now);
                }
                if self.pops_since_ack > 0 {
                    at(self.last_now.map(|n| n + self.cfg.ack_delay));
                }
                if self.send.has_pending() {
                    match self.pace_at {
                        Some(p) => at(Some(p)),
                        None if self.cc.window_open() => at(self.last_now),
                        None => {}
                    }
                }
            }
        }
        t
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
        self.last_now = Some(now);
        let t = self.next_transmit(now, buf);
        if t.is_some() {
            self.stats.packets_sent += 1;
        }
        t
    }

    fn next_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match self.state {
            State::Closed => {
                if self.kill_pending {
                    self.kill_pending = false;
                    if self.key.is_some() {
                        let len = self.write_data(buf, self.send.end(), &[PACKET_ID_KILL]);
                        return Some(Transmit {
                            len,
                            kind: TransmitKind::Data(DataKind::Kill),
                        });
                    }
                }
                return None;
            }
            State::CookieRequesting => {
                return self.handshake_phase_send(now, buf, true);
            }
            State::HandshakeSent => {
                return self.handshake_phase_send(now, buf, false);
            }
            State::NotConfirmed => {
                if let Some(t) = self.handshake_phase_send(now, buf, false) {
                    return Some(t);
                }
            }
            State::Established => {}
        }
        // Request packet (acks) first: small and time-critical.
        if self.next_baseline.is_some_and(|t| now >= t) {
            self.request_at = Some(now);
        }
        if self.pops_since_ack > 0
            && self.request_at.is_none()
            && self
                .last_request_sent
                .is_none_or(|t| now >= t + self.cfg.ack_delay)
        {
            self.request_at = Some(now);
        }
        if self.request_at.is_some_and(|t| now >= t) {
            return Some(self.write_request(now, buf));
        }
        if self.state != State::Established {
            return None;
        }
        if let Some(d) = self.lossy_out.pop_front() {
            let len = self.write_data(buf, self.send.end(), &d);
            return Some(Transmit {
                len,
                kind: TransmitKind::Data(DataKind::Lossy),
            });
        }
        self.lossless_send(now, buf)
    }

    /// The cookie request or handshake this session has sent and re-sends
    /// in its current state; `None` before the first one went out and once
    /// it is established or closed.
    pub fn handshake_packet(&self) -> Option<&[u8]> {
        if self.retry.sent == 0 {
            return None;
        }
        match self.state {
            State::CookieRequesting => Some(&self.cookie_request[..]),
            State::HandshakeSent | State::NotConfirmed => self.handshake.as_deref().map(|h| &h[..]),
            State::Established | State::Closed => None,
        }
    }

    fn handshake_phase_send(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        cookie: bool,
    ) -> Option<Transmit> {
        if now < self.retry.next || self.retry.sent >= self.cfg.handshake_tries {
            return None;
        }
        let (len, kind) = if cookie {
            buf[..COOKIE_REQUEST_SIZE].copy_from_slice(&self.cookie_request[..]);
            (COOKIE_REQUEST_SIZE, TransmitKind::CookieRequest)
        } else {
            let hs = self.handshake.as_ref()?;
            buf[..HANDSHAKE_SIZE].copy_from_slice(&hs[..]);
            (HANDSHAKE_SIZE, TransmitKind::Handshake)
        };
        self.retry.on_sent(now, self.cfg.handshake_interval);
        self.last_ctrl_sent = Some(now);
        if self.state == State::NotConfirmed {
            // §4.5: request packets go with the handshake re-sends.
            self.request_at = Some(now);
        }
        Some(Transmit { len, kind })
    }

    fn write_request(&mut self, now: Instant, buf: &mut [u8]) -> Transmit {
        let mut list = [0u8; MAX_DATA_SIZE];
        let n = self.recv.encode_request(&mut list);
        let len = self.write_data(buf, self.send.end(), &list[..n]);
        self.request_at = None;
        self.last_request_sent = Some(now);
        self.next_baseline = Some(now + self.cfg.request_interval);
        self.unacked_rx = 0;
        self.pops_since_ack = 0;
        Transmit {
            len,
            kind: TransmitKind::Data(DataKind::Request),
        }
    }

    fn lossless_send(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (n, retransmission) = match self.send.next_resend() {
            Some(n) => (n, true),
            None => (self.send.next_new()?, false),
        };
        match self.cc.can_send(now) {
            Ok(()) => self.pace_at = None,
            Err(t) => {
                self.pace_at = t;
                return None;
            }
        }
        if retransmission {
            self.send.pop_resend();
            self.stats.retransmissions += 1;
        } else {
            self.send.advance_new();
        }
        // Take the data out of the slot to write it (no copy of the Vec).
        let data = match self.send.get_mut(n) {
            Some(p) => std::mem::take(&mut p.data),
            None => return None,
        };
        let len = self.write_data(buf, n, &data);
        let app_limited = !self.send.has_pending();
        let stamp = self.cc.on_sent(now, len as u32, app_limited);
        if let Some(p) = self.send.get_mut(n) {
            p.data = data;
            if p.sent_time.is_some() {
                p.retransmitted = true;
            }
            p.sent_time = Some(now);
            p.in_flight = true;
            p.lost = false;
            p.cc = stamp;
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto());
        }
        Some(Transmit {
            len,
            kind: TransmitKind::Data(DataKind::Lossless {
                number: n,
                retransmission,
            }),
        })
    }

    /// Writes a data packet (§4.6, §4.7) carrying `data` with `num` into
    /// `buf` and returns its length. `data` is 1..=1373 bytes and `buf` holds
    /// 1400 (checked by the callers).
    fn write_data(&mut self, buf: &mut [u8], num: u32, data: &[u8]) -> usize {
        let dlen = data.len().min(MAX_DATA_SIZE);
        let pad = (MAX_DATA_SIZE - dlen) % 8;
        let plen = 8 + pad + dlen;
        let total = 3 + MAC_SIZE + plen;
        let Some(key) = self.key.as_ref() else {
            return 0;
        };
        buf[0] = PACKET_DATA;
        buf[1..3].copy_from_slice(&self.tx_nonce.low16().to_be_bytes());
        let pt = &mut buf[3 + MAC_SIZE..total];
        pt[0..4].copy_from_slice(&self.recv.start().to_be_bytes());
        pt[4..8].copy_from_slice(&num.to_be_bytes());
        pt[8..8 + pad].fill(0);
        pt[8 + pad..].copy_from_slice(&data[..dlen]);
        // Cannot fail: the plaintext is at least 9 bytes.
        let _ = key.seal_in_place(&self.tx_nonce, &mut buf[3..total]);
        // §4.6: every data packet consumes one nonce.
        self.tx_nonce.increment();
        total
    }

    // ---------------------------------------------------------------- API

    /// Queues a lossless packet (id 16..=191 first, 1..=1373 bytes) and
    /// returns its packet number. [`SendError::BufferFull`] is backpressure:
    /// retry after acknowledgements (see [`send_buffer_free`]
    /// (Self::send_buffer_free)).
    pub fn send_lossless(&mut self, now: Instant, data: &[u8]) -> Result<u32, SendError> {
        self.check_send(now, data, 16..=191)?;
        self.send.push(data).ok_or(SendError::BufferFull)
    }

    /// What every send checks: established, 1..=1373 bytes, the id in `ids`.
    fn check_send(
        &mut self,
        now: Instant,
        data: &[u8],
        ids: std::ops::RangeInclusive<u8>,
    ) -> Result<(), SendError> {
        self.last_now = Some(now);
        match self.state {
            State::Established => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotEstablished),
        }
        match data.first() {
            None => Err(SendError::BadLength(0)),
            Some(_) if data.len() > MAX_DATA_SIZE => Err(SendError::BadLength(data.len())),
            Some(id) if !ids.contains(id) => Err(SendError::BadId(*id)),
            Some(_) => Ok(()),
        }
    }

    /// Queues a lossy packet (id 192..=254 first, 1..=1373 bytes). It bypasses
    /// congestion control and leaves before queued lossless data.
    pub fn send_lossy(&mut self, now: Instant, data: &[u8]) -> Result<(), SendError> {
        self.check_send(now, data, 192..=254)?;
        if self.lossy_out.len() >= self.cfg.max_lossy_out {
            return Err(SendError::BufferFull);
        }
        self.lossy_out.push_back(data.to_vec());
        Ok(())
    }

    /// Closes the connection: one KILL is sent (best effort, §4.5) if a
    /// session key exists; no event is reported for a local close.
    pub fn kill(&mut self, now: Instant) {
        self.last_now = Some(now);
        if self.state == State::Closed {
            return;
        }
        self.kill_pending = self.key.is_some();
        self.state = State::Closed;
        self.lossy_out.clear();
        self.request_at = None;
        self.rto_at = None;
        self.next_baseline = None;
    }

    /// The next event: informational events first, then lossless data in
    /// order, then lossy data, then a terminal event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if let Some(d) = self.recv.pop() {
            self.pops_since_ack += 1;
            return Some(Event::Lossless(d));
        }
        if let Some(d) = self.lossy_in.pop_front() {
            return Some(Event::Lossy(d));
        }
        self.terminal.take()
    }

    /// Per-path RTT samples from the newest packet acknowledged per path.
    fn path_rtt_samples(&mut self, now: Instant, per_path: &[Option<(PathId, Instant)>]) {
        for (id, t) in per_path.iter().flatten() {
            let sample = now.saturating_duration_since(*t);
            if let Some(sp) = self.send_paths.iter_mut().find(|s| s.path == *id) {
                sp.srtt = Some(sp.srtt.map_or(sample, |r| (r * 7 + sample) / 8));
            }
        }
    }

    // ---------------------------------------------------------------- multipath hooks

    /// Caps the lossless packets in flight at `packets` (`None`: no cap),
    /// e.g. while the connection runs on a relay.
    pub fn set_inflight_cap(&mut self, packets: Option<u32>) {
        self.cc
            .set_cap(packets.map(|n| f64::from(n) * congestion::FULL_PACKET));
    }

    /// The owner sent lossless packet `number` on `path` (optional; enables
    /// [`resend_in_flight`](Self::resend_in_flight)).
    pub fn on_sent(&mut self, number: u32, path: PathId) {
        if let Some(p) = self.send.get_mut(number) {
            p.path = Some(path);
        }
        if !self.send_paths.iter().any(|s| s.path == path) {
            if self.send_paths.len() >= MAX_SEND_PATHS {
                self.send_paths.remove(0);
            }
            self.send_paths.push(SendPath {
                path,
                largest_acked_sent: None,
                srtt: None,
            });
        }
    }

    /// Marks every packet in flight whose last path matches `filter` as lost,
    /// so it is retransmitted at once (a path died). Returns how many.
    pub fn resend_in_flight(&mut self, mut filter: impl FnMut(PathId) -> bool) -> usize {
        let (start, end) = self.send.sent_range();
        let mut i = start;
        let mut count = 0;
        while i != end {
            let hit = self
                .send
                .get(i)
                .is_some_and(|p| p.in_flight && !p.acked && p.path.is_some_and(&mut filter));
            if hit {
                self.declare_lost(i);
                count += 1;
            }
            i = i.wrapping_add(1);
        }
        count
    }

    /// Starts recording the numbers of acknowledged lossless packets (by
    /// `buffer_start` or by a request packet, §4.7, §4.9) for
    /// [`drain_acked`](Self::drain_acked). Off by default: one `u32` push per
    /// acknowledged packet when on.
    pub fn record_acks(&mut self) {
        self.acked_log.get_or_insert_with(Vec::new);
    }

    /// Calls `f` with every lossless packet number acknowledged since the
    /// last call, in the order the acknowledgements were processed.
    pub fn drain_acked(&mut self, mut f: impl FnMut(u32)) {
        if let Some(l) = self.acked_log.as_mut() {
            for n in l.drain(..) {
                f(n);
            }
        }
    }

    /// Marks the given lossless packets as lost (retransmitted at once).
    pub fn mark_lost(&mut self, numbers: &[u32]) {
        for &n in numbers {
            if self.send.get(n).is_some_and(|p| !p.acked && !p.lost) {
                self.declare_lost(n);
            }
        }
    }

    /// Our TX base nonce (for tests and diagnostics).
    pub fn tx_base_nonce(&self) -> &Nonce {
        &self.tx_base
    }

    /// Our real public key.
    pub fn our_real(&self) -> &PublicKey {
        &self.our_real_pk
    }
}

#[cfg(test)]
mod tests;

/// Records that a packet sent at `t` on `id` was acknowledged: the path's
/// newest acknowledged send time, and the newest per path of this batch (at
/// most 4 paths per batch are sampled for RTT).
fn note_path_ack(
    batch: &mut [Option<(PathId, Instant)>; 4],
    paths: &mut [SendPath],
    id: PathId,
    t: Instant,
) {
    if let Some(sp) = paths.iter_mut().find(|s| s.path == id) {
        sp.largest_acked_sent = Some(sp.largest_acked_sent.map_or(t, |l| l.max(t)));
    }
    match batch.iter_mut().find(|e| e.is_some_and(|(p, _)| p == id)) {
        Some(Some((_, newest))) => *newest = (*newest).max(t),
        _ => {
            if let Some(slot) = batch.iter_mut().find(|e| e.is_none()) {
                *slot = Some((id, t));
            }
        }
    }
}
