//! Sans-IO Tox TCP relay server (PROTOCOL.md §2.2–§2.5).
//!
//! The runtime owns the sockets and gives each accepted connection a
//! [`ConnId`]. It feeds [`Server::handle_accept`], [`Server::handle_bytes`],
//! [`Server::handle_closed`] and [`Server::handle_timeout`], and after each
//! call polls [`Server::poll_wake`] (connections with new output; drain them
//! with [`Server::drain_into`]), [`Server::poll_close`] (connections the
//! server wants closed) and [`Server::poll_timeout`].
//!
//! Invariants kept:
//! * A route exists only after both clients asked for each other (§2.5); the
//!   slot tables of both ends always agree (`a.slot.link = (b, j)` ⇔
//!   `b.slot[j].link = (a, i)`).
//! * At most one confirmed link per client key; a newly confirmed link kills
//!   the old one first (§2.2).
//! * Memory per client is bounded: the input buffer never holds more than one
//!   partial frame (≤ 2050 bytes), priority output is bounded by
//!   [`ServerConfig::priority_queue_bytes`] (past it the client is closed as a
//!   slow consumer: control frames are never dropped), data output by
//!   [`ServerConfig::queue_bytes`] per client and
//!   [`ServerConfig::total_queue_bytes`] overall (past them forwarded DATA and
//!   OOB are dropped and counted). Empty buffers are freed on timer scans.
//! * Malformed input closes only the connection that sent it; nothing panics.
//!
//! Hostile clients (each bound configurable in [`ServerConfig`]):
//! * **Receivers that do not read.** A client is *stalled* while data is
//!   queued for it and none of it has been drained for a while: the clock
//!   starts when data is queued to an empty queue and restarts at every
//!   drain that takes some. (The runtime drains into its own write buffer
//!   whenever that buffer is written out, so data waits here only while the
//!   client's socket takes nothing: a blocked write.) A client stalled for
//!   [`ServerConfig::slow_consumer_timeout`] (3 s, the write deadline of
//!   Tailscale's DERP) is closed as [`CloseReason::SlowConsumer`] — whether
//!   its queue is full or the sender keeps it just below full. When the
//!   global budget (`total_queue_bytes`) is full, the client stalled the
//!   longest — for at least [`PRESSURE_STALL`] — is closed at once to make
//!   room (counted in [`Counters::slow_consumer_evictions`]), so receivers
//!   that never read cannot starve everyone else's DATA.
//! * **OOB floods.** OOB is charged to its sender: a token bucket of
//!   [`ServerConfig::oob_bytes_per_sec`] bytes a second (one second of
//!   burst) per connection; past it OOB is dropped
//!   ([`ForwardDrop::OobRateLimited`]). And OOB is queued to a receiver only
//!   while its data queue is under half of `queue_bytes`: the other half is
//!   for DATA of the peers it routed.
//! * **Connection floods.** The runtime tells [`Server::handle_accept`] the
//!   peer's address. Connections per address are capped
//!   ([`ServerConfig::max_conns_per_ip`], 32) and so are connections per
//!   address that have not confirmed yet
//!   ([`ServerConfig::max_unconfirmed_per_ip`], 8); further accepts are
//!   closed ([`CloseReason::TooManyFromIp`]). IPv6 addresses count per /64
//!   (one subscriber's prefix), IPv4-mapped IPv6 as IPv4. When the global
//!   unconfirmed bound ([`ServerConfig::max_unconfirmed`]) is reached, the
//!   eviction policy is: the oldest unconfirmed connection *of the address
//!   holding the most unconfirmed connections* is evicted (ties: the address
//!   whose oldest is oldest). A flooder therefore evicts its own handshakes
//!   first; a client's handshake in progress is evicted only when every
//!   address holds as few unconfirmed connections as its own, i.e. by a
//!   flood from at least `max_unconfirmed` distinct addresses (1,024 by
//!   default, 128 /64s or IPv4 addresses at 8 each cannot do it), and then in
//!   age order as c-toxcore does.
//!
//! Differences from c-toxcore 0.2.18, on purpose: a closed TCP connection is
//! noticed at once (the runtime calls [`Server::handle_closed`]); handshakes
//! and unconfirmed links time out ([`ServerConfig::handshake_timeout`]); a
//! well-formed FORWARD_REQUEST (id 10) is dropped and counted instead of
//! closing the link (no forwarding service is attached, and a valid id never
//! disconnects); ONION_REQUEST (id 8) is ignored as c-toxcore does with the
//! onion disabled. Ids 1, 7, 9, 11 sent by a client are server-to-client ids
//! and close the link as in c-toxcore; 12–15 are reserved and close it too.

mod fault;
#[cfg(test)]
mod tests;

use fault::FaultAction;
pub use fault::{FaultConfig, FaultInjector};

use crate::crypto::{KeyPair, Nonce, PublicKey};
use crate::relay_queue::FrameQueue;
use crate::wire::relay::{
    split_frame, FrameSplit, HandshakePayload, HandshakeRequest, HandshakeResponse, RelayPacket,
    SecureChannel, HANDSHAKE_REQUEST_SIZE, MAX_FRAME_BOX, NUM_CLIENT_CONNECTIONS,
    NUM_RESERVED_PORTS,
};
use rand_core::CryptoRngCore;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A connection, named by the runtime. Ids must not be reused while the
/// server still knows the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Limits and timers of a relay server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections (any state) at once; further accepts are closed.
    pub max_clients: usize,
    /// Most connections that have not yet sent their first valid frame; a new
    /// one beyond this evicts the oldest (as c-toxcore's 256-entry rings do).
    pub max_unconfirmed: usize,
    /// A connection must complete the handshake *and* send its first frame
    /// within this time of being accepted (c-toxcore has no such timer).
    pub handshake_timeout: Duration,
    /// Interval of the server's keep-alive PING (c-toxcore: 30 s).
    pub ping_interval: Duration,
    /// No matching PONG within this time of a PING closes the link (10 s).
    pub ping_timeout: Duration,
    /// Bound on queued DATA/OOB bytes towards one client; beyond it forwarded
    /// packets to that client are dropped and counted.
    pub queue_bytes: usize,
    /// Bound on queued DATA/OOB bytes over all clients.
    pub total_queue_bytes: usize,
    /// Bound on queued priority bytes towards one client; beyond it the
    /// client (which does not read) is closed. Control frames are never
    /// dropped.
    pub priority_queue_bytes: usize,
    /// Most connections (any state) from one address (IPv6: one /64); further
    /// accepts are closed with [`CloseReason::TooManyFromIp`].
    pub max_conns_per_ip: usize,
    /// Most unconfirmed connections from one address (IPv6: one /64);
    /// further accepts are closed with [`CloseReason::TooManyFromIp`].
    pub max_unconfirmed_per_ip: usize,
    /// A client whose queued data waits this long without any of it being
    /// drained (its socket takes nothing) is closed
    /// ([`CloseReason::SlowConsumer`]).
    pub slow_consumer_timeout: Duration,
    /// OOB bytes one connection may send per second (and at once); past it
    /// its OOB is dropped ([`ForwardDrop::OobRateLimited`]).
    pub oob_bytes_per_sec: usize,
    /// For the runtime: the kernel send buffer (SO_SNDBUF) of each accepted
    /// socket, 0 to leave it to the kernel's autotuning. Without a cap a
    /// client that never reads can park up to `tcp_wmem`'s maximum (4 MiB by
    /// default on Linux, reached at once on loopback) in the kernel, outside
    /// every bound above, and the slow-consumer deadline only starts once
    /// that is full. Linux doubles the value given.
    pub socket_send_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: 100_000,
            max_unconfirmed: 1024,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            queue_bytes: 256 * 1024,
            total_queue_bytes: 512 * 1024 * 1024,
            priority_queue_bytes: 64 * 1024,
            max_conns_per_ip: 32,
            max_unconfirmed_per_ip: 8,
            slow_consumer_timeout: Duration::from_secs(3),
            oob_bytes_per_sec: 128 * 1024,
            socket_send_buffer: 128 * 1024,
        }
    }
}

/// Why the server closed (or lost) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The runtime reported the TCP connection closed.
    PeerClosed,
    /// `max_clients` reached when it was accepted.
    TooManyClients,
    /// Evicted as the oldest unconfirmed connection.
    Evicted,
    /// Hello not for this relay or not decryptable (no reply is sent).
    BadHandshake,
    /// Handshake or first frame not done within `handshake_timeout`.
    HandshakeTimeout,
    /// A frame with `L > 2048`.
    Oversized,
    /// A frame failed authentication.
    BadTag,
    /// A frame whose plaintext does not parse (bad length, reserved id).
    Malformed,
    /// A well-formed packet that the protocol forbids here (wrong direction,
    /// unallocated slot, PONG 0).
    ProtocolViolation,
    /// No PONG within `ping_timeout`.
    PingTimeout,
    /// It does not read: its priority queue overflowed, or its queued data
    /// made no progress for `slow_consumer_timeout` (or, while the global
    /// budget is full, for [`PRESSURE_STALL`]).
    SlowConsumer,
    /// A newer link with the same client key was confirmed.
    Replaced,
    /// Its address (IPv6: /64) already had `max_conns_per_ip` connections,
    /// or `max_unconfirmed_per_ip` unconfirmed ones, when it was accepted.
    TooManyFromIp,
}

/// Why a forwarded packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardDrop {
    /// DATA on a slot that is allocated but not connected.
    NotConnected,
    /// Receiver's data queue is over `queue_bytes`.
    QueueFull,
    /// All queues together are over `total_queue_bytes`.
    TotalQueueFull,
    /// OOB for a key with no confirmed link here.
    OobNoDestination,
    /// OOB past its sender's `oob_bytes_per_sec`.
    OobRateLimited,
    /// ONION_REQUEST: no onion service attached.
    OnionIgnored,
    /// FORWARD_REQUEST: no forwarding service attached.
    ForwardIgnored,
    /// Dropped by the fault injector.
    Fault,
}

/// Statistics of a server. Gauges are current values, the rest totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Gauge: connections known (any state).
    pub clients: u64,
    /// Gauge: confirmed connections.
    pub confirmed: u64,
    /// Gauge: connected route pairs.
    pub routes: u64,
    /// Gauge: queued output bytes over all clients (data).
    pub queued_bytes: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes answered.
    pub handshakes: u64,
    /// DATA packets forwarded.
    pub data_packets: u64,
    /// DATA payload bytes forwarded.
    pub data_bytes: u64,
    /// OOB packets delivered.
    pub oob_packets: u64,
    /// OOB payload bytes delivered.
    pub oob_bytes: u64,
    /// PINGs answered.
    pub pongs_sent: u64,
    /// Keep-alive PINGs the server sent (§2.5).
    pub pings_sent: u64,
    /// PONGs that matched the server's outstanding PING.
    pub pongs_received: u64,
    /// Drops: not connected.
    pub drop_not_connected: u64,
    /// Drops: receiver queue full.
    pub drop_queue_full: u64,
    /// Drops: global queue bound.
    pub drop_total_queue_full: u64,
    /// Drops: OOB without destination.
    pub drop_oob_no_destination: u64,
    /// Drops: OOB over its sender's rate.
    pub drop_oob_rate_limited: u64,
    /// Stalled receivers closed early because the global queue budget was
    /// full (also counted in `closes.slow_consumer`).
    pub slow_consumer_evictions: u64,
    /// Ignored onion requests.
    pub drop_onion: u64,
    /// Ignored forward requests.
    pub drop_forward: u64,
    /// Drops by the fault injector.
    pub drop_fault: u64,
    /// Packets corrupted by the fault injector.
    pub fault_corrupted: u64,
    /// Packets delayed by the fault injector.
    pub fault_delayed: u64,
    /// Closes by reason (indexed as listed in [`CloseReason`]).
    pub closes: CloseCounters,
}

/// Closes per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseCounters {
    /// [`CloseReason::PeerClosed`]
    pub peer_closed: u64,
    /// [`CloseReason::TooManyClients`]
    pub too_many_clients: u64,
    /// [`CloseReason::Evicted`]
    pub evicted: u64,
    /// [`CloseReason::BadHandshake`]
    pub bad_handshake: u64,
    /// [`CloseReason::HandshakeTimeout`]
    pub handshake_timeout: u64,
    /// [`CloseReason::Oversized`]
    pub oversized: u64,
    /// [`CloseReason::BadTag`]
    pub bad_tag: u64,
    /// [`CloseReason::Malformed`]
    pub malformed: u64,
    /// [`CloseReason::ProtocolViolation`]
    pub protocol_violation: u64,
    /// [`CloseReason::PingTimeout`]
    pub ping_timeout: u64,
    /// [`CloseReason::SlowConsumer`]
    pub slow_consumer: u64,
    /// [`CloseReason::Replaced`]
    pub replaced: u64,
    /// [`CloseReason::TooManyFromIp`]
    pub too_many_from_ip: u64,
}

impl CloseCounters {
    fn bump(&mut self, r: CloseReason) {
        let c = match r {
            CloseReason::PeerClosed => &mut self.peer_closed,
            CloseReason::TooManyClients => &mut self.too_many_clients,
            CloseReason::Evicted => &mut self.evicted,
            CloseReason::BadHandshake => &mut self.bad_handshake,
            CloseReason::HandshakeTimeout => &mut self.handshake_timeout,
            CloseReason::Oversized => &mut self.oversized,
            CloseReason::BadTag => &mut self.bad_tag,
            CloseReason::Malformed => &mut self.malformed,
            CloseReason::ProtocolViolation => &mut self.protocol_violation,
            CloseReason::PingTimeout => &mut self.ping_timeout,
            CloseReason::SlowConsumer => &mut self.slow_consumer,
            CloseReason::Replaced => &mut self.replaced,
            CloseReason::TooManyFromIp => &mut self.too_many_from_ip,
        };
        *c += 1;
    }
}

impl Counters {
    fn drop(&mut self, r: ForwardDrop) {
        let c = match r {
            ForwardDrop::NotConnected => &mut self.drop_not_connected,
            ForwardDrop::QueueFull => &mut self.drop_queue_full,
            ForwardDrop::TotalQueueFull => &mut self.drop_total_queue_full,
            ForwardDrop::OobNoDestination => &mut self.drop_oob_no_destination,
            ForwardDrop::OobRateLimited => &mut self.drop_oob_rate_limited,
            ForwardDrop::OnionIgnored => &mut self.drop_onion,
            ForwardDrop::ForwardIgnored => &mut self.drop_forward,
            ForwardDrop::Fault => &mut self.drop_fault,
        };
        *c += 1;
    }
}

/// Hasher for [`ConnId`] keys: ids are runtime counters, a multiplicative
/// mix is enough and much cheaper than SipHash on the forwarding path.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

type IdMap<V> = HashMap<ConnId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 128-byte hello (bytes gathered in `rx`).
    AwaitHello,
    /// Replied; waiting for the first valid frame.
    Unconfirmed,
    /// Confirmed (§2.2): reachable by routes and OOB.
    Confirmed,
}

/// One slot of a link (§2.4): index 0..240 (wire id 16 + index).
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u8,
    peer: PublicKey,
    /// The other end when connected: its connection and slot index.
    link: Option<(ConnId, u8)>,
}

#[derive(Debug)]
struct Conn {
    state: State,
    pk: PublicKey,
    chan: Option<SecureChannel>,
    /// Partial input: the hello, or one incomplete frame.
    rx: Vec<u8>,
    out: FrameQueue,
    /// Sorted by index.
    slots: Vec<Slot>,
    accepted_at: Instant,
    next_ping: Instant,
    /// Outstanding PING: its id and when it was sent.
    ping: Option<([u8; 8], Instant)>,
    /// Already listed in `wakes`.
    woken: bool,
    /// The peer's address as counted for the per-address limits.
    ip: IpAddr,
    /// Accept order (for the eviction policy).
    seq: u64,
    /// Since when its queued data has waited with nothing drained (None
    /// while its data queue is empty).
    stalled_since: Option<Instant>,
    /// Listed in `restarted`.
    restart_pending: bool,
    /// OOB token bucket: bytes it may still send, refilled at `oob_at`.
    oob_tokens: u64,
    oob_at: Instant,
}

impl Conn {
    fn slot_by_peer(&self, pk: &PublicKey) -> Option<usize> {
        self.slots.iter().position(|s| s.peer == *pk)
    }

    fn slot_pos(&self, index: u8) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&index, |s| s.index)
    }

    fn deadline(&self, cfg: &ServerConfig) -> Instant {
        match self.state {
            State::AwaitHello | State::Unconfirmed => self.accepted_at + cfg.handshake_timeout,
            State::Confirmed => match self.ping {
                Some((_, sent)) => sent + cfg.ping_timeout,
                None => self.next_ping,
            },
        }
    }

    /// Refills the OOB bucket and takes `cost` bytes if there are enough.
    fn take_oob(&mut self, now: Instant, rate: usize, cost: usize) -> bool {
        let rate = rate as u64;
        let dt = now.saturating_duration_since(self.oob_at);
        let add = (dt.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000)
            .min(u128::from(rate)) as u64;
        if add > 0 {
            self.oob_tokens = (self.oob_tokens + add).min(rate);
            self.oob_at = now;
        }
        let cost = cost as u64;
        if self.oob_tokens < cost {
            return false;
        }
        self.oob_tokens -= cost;
        true
    }
}

/// How long a receiver must have been stalled (data queue full, nothing
/// drained) before it is closed to make room when the global queue budget
/// is full. Long enough that a receiver which reads is never picked (its
/// runtime drains a batch every few milliseconds), short enough that honest
/// traffic barely notices a flood of receivers that do not read.
pub const PRESSURE_STALL: Duration = Duration::from_millis(250);

/// Closes at most this many stalled receivers to make room for one packet.
const MAX_PRESSURE_CLOSES: usize = 4;

/// The address as counted for the per-address limits: IPv4 (also when
/// IPv4-mapped), or the /64 prefix of an IPv6 address (a subscriber gets a
/// whole /64, so counting single IPv6 addresses would limit nothing).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// A distinct loopback address per connection id, for tests that stand for
/// many clients (127.x.y.z from the id's low 24 bits).
#[cfg(test)]
pub(crate) fn test_ip(conn: ConnId) -> IpAddr {
    let [_, _, _, _, _, a, b, c] = conn.0.to_be_bytes();
    IpAddr::V4(std::net::Ipv4Addr::new(127, a, b, c))
}

/// Connections from one address.
#[derive(Debug, Default)]
struct IpState {
    /// Connections in any state.
    conns: usize,
    /// Unconfirmed ones, oldest first: (accept order, id).
    unconfirmed: VecDeque<(u64, ConnId)>,
}

impl IpState {
    /// Its key in the eviction order: most unconfirmed last, and among
    /// equals the one whose oldest is oldest last.
    fn rank(&self, ip: IpAddr) -> Option<(usize, Reverse<u64>, IpAddr)> {
        let &(seq, _) = self.unconfirmed.front()?;
        Some((self.unconfirmed.len(), Reverse(seq), ip))
    }
}

/// A fresh temporary key pair and its shared key with the client's
/// temporary key; refuses a low-order client key.
fn temp_session(
    rng: &mut impl CryptoRngCore,
    theirs: &PublicKey,
) -> Result<(PublicKey, crate::crypto::SharedKey), crate::crypto::CryptoError> {
    let temp = KeyPair::generate(rng);
    let key = temp.try_precompute(theirs)?;
    Ok((temp.public, key))
}

/// A packet held back by the fault injector.
#[derive(Debug)]
struct Delayed {
    at: Instant,
    to: ConnId,
    slot_id: u8,
    payload: Vec<u8>,
}

/// The relay server state machine. See the module documentation for the
/// calling protocol.
pub struct Server<R> {
    keypair: KeyPair,
    rng: R,
    cfg: ServerConfig,
    clients: IdMap<Conn>,
    by_key: HashMap<PublicKey, ConnId>,
    /// Per-address counts and unconfirmed connections.
    ips: HashMap<IpAddr, IpState>,
    /// Addresses with unconfirmed connections in eviction order (last first).
    unconfirmed_rank: BTreeSet<(usize, Reverse<u64>, IpAddr)>,
    unconfirmed_count: usize,
    /// Stalled receivers, longest stalled first.
    stalled: BTreeSet<(Instant, ConnId)>,
    /// Drained since the last call that tells the time, data left: their
    /// stall clock restarts then.
    restarted: Vec<ConnId>,
    next_seq: u64,
    closes: VecDeque<(ConnId, CloseReason)>,
    wakes: Vec<ConnId>,
    next_timeout: Option<Instant>,
    counters: Counters,
    queued_total: usize,
    fault: Option<Box<fault::FaultState>>,
    delayed: VecDeque<Delayed>,
}

impl<R> std::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &self.keypair.public)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRngCore> Server<R> {
    /// A relay with static key pair `keypair` (its DHT key pair, §2.1).
    pub fn new(keypair: KeyPair, rng: R, cfg: ServerConfig) -> Self {
        Server {
            keypair,
            rng,
            cfg,
            clients: IdMap::default(),
            by_key: HashMap::new(),
            ips: HashMap::new(),
            unconfirmed_rank: BTreeSet::new(),
            unconfirmed_count: 0,
            stalled: BTreeSet::new(),
            restarted: Vec::new(),
            next_seq: 0,
            closes: VecDeque::new(),
            wakes: Vec::new(),
            next_timeout: None,
            counters: Counters::default(),
            queued_total: 0,
            fault: None,
            delayed: VecDeque::new(),
        }
    }

    /// The relay's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.keypair.public
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Current statistics.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.clients = self.clients.len() as u64;
        c.confirmed = self.by_key.len() as u64;
        c.queued_bytes = self.queued_total as u64;
        c
    }

    /// Installs a fault injector for forwarded DATA (tests only: a
    /// [`FaultInjector`] can only be built with the `fault-injection`
    /// feature).
    /// A new injector replaces the previous one (fresh PRNG and black-hole
    /// clock).
    pub fn set_fault_injector(&mut self, now: Instant, injector: FaultInjector) {
        self.fault = Some(Box::new(injector.start(now)));
    }

    /// Removes the fault injector: forwarded DATA passes untouched again.
    /// Packets it already delayed are still delivered when due.
    pub fn clear_fault_injector(&mut self) {
        self.fault = None;
    }

    /// A new TCP connection from `peer` (its IP address) was accepted.
    /// Refused (a close is queued) past `max_clients`, or past the
    /// per-address limits; past `max_unconfirmed` an unconfirmed connection
    /// is evicted by the policy of the module documentation.
    pub fn handle_accept(&mut self, now: Instant, conn: ConnId, peer: IpAddr) {
        self.settle(now);
        self.counters.accepted += 1;
        if self.clients.len() >= self.cfg.max_clients || self.clients.contains_key(&conn) {
            self.counters.closes.bump(CloseReason::TooManyClients);
            self.closes.push_back((conn, CloseReason::TooManyClients));
            return;
        }
        let ip = ip_key(peer);
        if let Some(st) = self.ips.get(&ip) {
            if st.conns >= self.cfg.max_conns_per_ip.max(1)
                || st.unconfirmed.len() >= self.cfg.max_unconfirmed_per_ip.max(1)
            {
                tracing::debug!(?conn, %ip, conns = st.conns, "relay: too many connections from one address");
                self.counters.closes.bump(CloseReason::TooManyFromIp);
                self.closes.push_back((conn, CloseReason::TooManyFromIp));
                return;
            }
        }
        // Bounded: each round closes one unconfirmed connection (or stops).
        for _ in 0..=self.unconfirmed_count {
            if self.unconfirmed_count < self.cfg.max_unconfirmed.max(1) {
                break;
            }
            let victim = self
                .unconfirmed_rank
                .last()
                .and_then(|&(_, _, vip)| self.ips.get(&vip)?.unconfirmed.front())
                .map(|&(_, id)| id);
            let Some(old) = victim else {
                break;
            };
            if !self.close(old, CloseReason::Evicted) {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.clients.insert(
            conn,
            Conn {
                state: State::AwaitHello,
                pk: PublicKey([0; 32]),
                chan: None,
                rx: Vec::new(),
                out: FrameQueue::default(),
                slots: Vec::new(),
                accepted_at: now,
                next_ping: now,
                ping: None,
                woken: false,
                ip,
                seq,
                stalled_since: None,
                restart_pending: false,
                oob_tokens: self.cfg.oob_bytes_per_sec as u64,
                oob_at: now,
            },
        );
        let st = self.ips.entry(ip).or_default();
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.remove(&r);
        }
        st.conns += 1;
        st.unconfirmed.push_back((seq, conn));
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.insert(r);
        }
        self.unconfirmed_count += 1;
        self.arm(now + self.cfg.handshake_timeout);
    }

    /// The runtime saw the connection end (EOF, reset, error). Its routes are
    /// torn down at once and its peers notified.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.settle(now);
        if self.remove(conn, CloseReason::PeerClosed) {
            tracing::debug!(?conn, "relay client closed its connection");
        }
    }

    /// Bytes read from a connection. Frames are decrypted in place in
    /// `bytes` (hence `&mut`); an incomplete tail is kept.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &mut [u8]) {
        self.settle(now);
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let mut input = bytes;
        if c.state == State::AwaitHello {
            let need = HANDSHAKE_REQUEST_SIZE - c.rx.len();
            let take = need.min(input.len());
            c.rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if c.rx.len() < HANDSHAKE_REQUEST_SIZE {
                return;
            }
            let hello = std::mem::take(&mut c.rx);
            if !self.handshake(conn, &hello) {
                return;
            }
        }
        // Complete a frame left over from an earlier read.
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if !c.rx.is_empty() {
            let mut rx = std::mem::take(&mut c.rx);
            if rx.len() < 2 {
                let take = (2 - rx.len()).min(input.len());
                rx.extend_from_slice(&input[..take]);
                input = &mut input[take..];
                if rx.len() < 2 {
                    self.put_rx(conn, rx);
                    return;
                }
            }
            let box_len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
            if box_len > MAX_FRAME_BOX {
                self.close(conn, CloseReason::Oversized);
                return;
            }
            let want = 2 + box_len;
            let take = (want - rx.len()).min(input.len());
            rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if rx.len() < want {
                self.put_rx(conn, rx);
                return;
            }
            if box_len > 0 && !self.frame(now, conn, &mut rx[2..]) {
                return;
            }
            rx.clear();
            self.put_rx(conn, rx);
        }
        loop {
            match split_frame(input) {
                Ok(FrameSplit::Incomplete) => {
                    if !input.is_empty() {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            c.rx.extend_from_slice(input);
                        }
                    }
                    return;
                }
                Ok(FrameSplit::Empty) => input = &mut input[2..],
                Ok(FrameSplit::Frame { box_len }) => {
                    let (frame, rest) = input.split_at_mut(2 + box_len);
                    if !self.frame(now, conn, &mut frame[2..]) {
                        return;
                    }
                    input = rest;
                }
                Err(_) => {
                    self.close(conn, CloseReason::Oversized);
                    return;
                }
            }
        }
    }

    /// Timers: handshake timeouts, keep-alive pings, ping timeouts, delayed
    /// (fault-injected) packets, freeing idle buffers. Call at
    /// [`poll_timeout`](Self::poll_timeout) or later; calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
        self.release_delayed(now);
        let mut next: Option<Instant> = self.delayed.front().map(|d| d.at);
        let mut to_close = Vec::new();
        let mut to_ping = Vec::new();
        for (&id, c) in self.clients.iter_mut() {
            match c.state {
                State::AwaitHello | State::Unconfirmed => {
                    if now >= c.accepted_at + self.cfg.handshake_timeout {
                        to_close.push((id, CloseReason::HandshakeTimeout));
                        continue;
                    }
                }
                State::Confirmed => match c.ping {
                    Some((_, sent)) if now >= sent + self.cfg.ping_timeout => {
                        to_close.push((id, CloseReason::PingTimeout));
                        continue;
                    }
                    None if now >= c.next_ping => to_ping.push(id),
                    _ => {}
                },
            }
            if c.out.is_empty() {
                c.out.shrink_idle();
            }
            if c.rx.is_empty() && c.rx.capacity() > 0 {
                c.rx = Vec::new();
            }
            let d = c.deadline(&self.cfg);
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        for id in to_ping {
            let mut ping_id = [0u8; 8];
            while ping_id == [0; 8] {
                self.rng.fill_bytes(&mut ping_id);
            }
            if let Some(c) = self.clients.get_mut(&id) {
                c.ping = Some((ping_id, now));
                c.next_ping = now + self.cfg.ping_interval;
                let d = now + self.cfg.ping_timeout;
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            self.counters.pings_sent += 1;
            self.send_prio(id, &RelayPacket::Ping { ping_id });
        }
        for (id, r) in to_close {
            self.close(id, r);
        }
        // Receivers stalled past the deadline (bounded by the set's size).
        while let Some(&(since, id)) = self.stalled.first() {
            let deadline = since + self.cfg.slow_consumer_timeout;
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                break;
            }
            tracing::debug!(?id, "relay: receiver stalled past the deadline");
            if !self.close(id, CloseReason::SlowConsumer) {
                // Not a client any more: a stale entry (cannot happen, the
                // set is kept in step with the table).
                self.stalled.remove(&(since, id));
            }
        }
        self.next_timeout = next;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// A connection with new output since the last call (drain it).
    pub fn poll_wake(&mut self) -> Option<ConnId> {
        while let Some(id) = self.wakes.pop() {
            if let Some(c) = self.clients.get_mut(&id) {
                c.woken = false;
                return Some(id);
            }
        }
        None
    }

    /// A connection the server wants closed, and why. The server has already
    /// forgotten it; the runtime closes the socket and must not report it
    /// again.
    pub fn poll_close(&mut self) -> Option<(ConnId, CloseReason)> {
        self.closes.pop_front()
    }

    /// Appends the connection's pending output to `out`: raw handshake bytes,
    /// then every priority frame, then whole data frames while the appended
    /// output stays within `limit` (at least one). Returns bytes appended.
    pub fn drain_into(&mut self, conn: ConnId, out: &mut Vec<u8>, limit: usize) -> usize {
        let Some(c) = self.clients.get_mut(&conn) else {
            return 0;
        };
        let before = c.out.data_len();
        let n = c.out.drain_into(c.chan.as_mut(), out, limit);
        let drained = before.saturating_sub(c.out.data_len());
        self.queued_total = self.queued_total.saturating_sub(drained);
        if drained > 0 {
            // Progress: the clock restarts, or stops if nothing is left.
            if let Some(since) = c.stalled_since.take() {
                self.stalled.remove(&(since, conn));
            }
            // Still data left: the clock restarts at the next call that
            // tells the time (drains do not).
            if c.out.data_len() > 0 && !c.restart_pending {
                c.restart_pending = true;
                self.restarted.push(conn);
            }
        }
        n
    }

    /// Whether the connection has output waiting.
    pub fn has_output(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| !c.out.is_empty())
    }

    /// Heap bytes held by one connection's input and output buffers (not
    /// its slot table), for tests and metrics.
    pub fn conn_buffer_bytes(&self, conn: ConnId) -> usize {
        self.clients
            .get(&conn)
            .map_or(0, |c| c.rx.capacity() + c.out.capacity())
    }

    /// Checks the structural invariants of the module documentation
    /// (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut linked = 0;
        let mut queued = 0;
        let mut unconfirmed = 0;
        for (&id, c) in &self.clients {
            queued += c.out.data_len();
            assert!(c.rx.len() <= 2 + MAX_FRAME_BOX.max(HANDSHAKE_REQUEST_SIZE));
            assert!(c.slots.windows(2).all(|w| w[0].index < w[1].index));
            assert!(c.slots.len() <= NUM_CLIENT_CONNECTIONS);
            for s in &c.slots {
                if let Some((o, j)) = s.link {
                    linked += 1;
                    let oc = &self.clients[&o];
                    let os = &oc.slots[oc.slot_pos(j).expect("partner slot exists")];
                    assert_eq!(os.link, Some((id, s.index)), "links agree");
                    assert_eq!((os.peer, s.peer), (c.pk, oc.pk), "slots name each other");
                }
            }
            match c.state {
                State::Confirmed => assert_eq!(self.by_key.get(&c.pk), Some(&id)),
                _ => unconfirmed += 1,
            }
        }
        for (pk, id) in &self.by_key {
            let c = &self.clients[id];
            assert_eq!((c.pk, c.state), (*pk, State::Confirmed));
        }
        assert_eq!(self.counters.routes * 2, linked, "route gauge");
        assert_eq!(self.queued_total, queued, "queued bytes gauge");
        assert_eq!(self.unconfirmed_count, unconfirmed, "unconfirmed count");
        let mut per_ip: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        let mut stalled = 0;
        for (&id, c) in &self.clients {
            let e = per_ip.entry(c.ip).or_default();
            e.0 += 1;
            if c.state != State::Confirmed {
                e.1 += 1;
                assert!(self.ips[&c.ip].unconfirmed.contains(&(c.seq, id)));
            }
            if let Some(since) = c.stalled_since {
                stalled += 1;
                assert!(self.stalled.contains(&(since, id)));
            }
        }
        assert_eq!(self.stalled.len(), stalled, "stalled set");
        assert_eq!(self.ips.len(), per_ip.len(), "no empty address entries");
        for (ip, st) in &self.ips {
            assert_eq!((st.conns, st.unconfirmed.len()), per_ip[ip], "{ip}");
            assert!(st.conns <= self.cfg.max_conns_per_ip.max(1));
            assert!(st.unconfirmed.len() <= self.cfg.max_unconfirmed_per_ip.max(1));
            if let Some(r) = st.rank(*ip) {
                assert!(self.unconfirmed_rank.contains(&r));
            }
        }
        assert_eq!(
            self.unconfirmed_rank.len(),
            self.ips
                .values()
                .filter(|s| !s.unconfirmed.is_empty())
                .count()
        );
    }

    // ---- internals ----

    fn arm(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |n| n.min(at)));
    }

    fn put_rx(&mut self, conn: ConnId, rx: Vec<u8>) {
        if let Some(c) = self.clients.get_mut(&conn) {
            c.rx = rx;
        }
    }

    fn wake(&mut self, conn: ConnId) {
        if let Some(c) = self.clients.get_mut(&conn) {
            if !c.woken {
                c.woken = true;
                self.wakes.push(conn);
            }
        }
    }

    /// §2.2: open the hello, reply, become unconfirmed. False if closed.
    fn handshake(&mut self, conn: ConnId, hello: &[u8]) -> bool {
        let Ok(req) = HandshakeRequest::parse(hello) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        // A low-order client key is refused as libsodium does.
        let Ok(key) = self.keypair.try_precompute(&req.client_pk) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        let Ok(theirs) = req.open(&key) else {
            // A hello for another key or garbage: closed without a reply.
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        // So is a low-order temporary key (the session key would be the
        // all-zero X25519 output, known to anyone).
        let Ok(session) = temp_session(&mut self.rng, &theirs.temp_pk) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        let (temp_pk, session) = session;
        let ours = HandshakePayload {
            temp_pk,
            base_nonce: Nonce::random(&mut self.rng),
        };
        let reply = HandshakeResponse::seal(&key, Nonce::random(&mut self.rng), &ours);
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        c.pk = req.client_pk;
        c.chan = Some(SecureChannel::new(
            session,
            ours.base_nonce,
            theirs.base_nonce,
        ));
        c.state = State::Unconfirmed;
        c.out.push_raw(&reply.to_bytes());
        self.counters.handshakes += 1;
        self.wake(conn);
        true
    }

    /// Opens and handles one frame box. False if the connection was closed.
    fn frame(&mut self, now: Instant, conn: ConnId, frame_box: &mut [u8]) -> bool {
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        let Some(chan) = c.chan.as_mut() else {
            return false;
        };
        let Ok(plain) = chan.open_in_place(frame_box) else {
            self.close(conn, CloseReason::BadTag);
            return false;
        };
        if c.state == State::Unconfirmed {
            self.confirm(now, conn);
        }
        let Ok(packet) = RelayPacket::parse(plain) else {
            self.close(conn, CloseReason::Malformed);
            return false;
        };
        self.packet(now, conn, packet)
    }

    /// §2.2: the first frame confirms; an older confirmed link with the same
    /// key is killed first.
    fn confirm(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        c.state = State::Confirmed;
        c.next_ping = now + self.cfg.ping_interval;
        let pk = c.pk;
        let (ip, seq) = (c.ip, c.seq);
        tracing::trace!(?conn, client = ?pk, "relay: link confirmed");
        self.forget_unconfirmed(ip, seq, conn);
        if let Some(old) = self.by_key.insert(pk, conn) {
            if old != conn {
                // Restore the mapping after removal of the old link.
                self.close(old, CloseReason::Replaced);
                self.by_key.insert(pk, conn);
            }
        }
        self.arm(now + self.cfg.ping_interval);
    }

    fn packet(&mut self, now: Instant, conn: ConnId, packet: RelayPacket<'_>) -> bool {
        match packet {
            RelayPacket::Data {
                connection_id,
                data,
            } => return self.forward(now, conn, connection_id, data),
            RelayPacket::RoutingRequest { peer } => self.routing_request(conn, peer),
            RelayPacket::ConnectNotification { .. } => {}
            RelayPacket::DisconnectNotification { connection_id } => {
                return self.disconnect_notification(conn, connection_id)
            }
            RelayPacket::Ping { ping_id } => {
                self.counters.pongs_sent += 1;
                self.send_prio(conn, &RelayPacket::Pong { ping_id });
            }
            RelayPacket::Pong { ping_id } => {
                if ping_id == [0; 8] {
                    self.close(conn, CloseReason::ProtocolViolation);
                    return false;
                }
                let mut answered = None;
                if let Some(c) = self.clients.get_mut(&conn) {
                    if c.ping.is_some_and(|(id, _)| id == ping_id) {
                        c.ping = None;
                        answered = Some(c.next_ping);
                    }
                }
                if let Some(next_ping) = answered {
                    self.counters.pongs_received += 1;
                    // The timer was armed for the PONG deadline; the next
                    // PING may be due earlier (ping_interval < ping_timeout).
                    self.arm(next_ping);
                }
            }
            RelayPacket::OobSend { destination, data } => self.oob(now, conn, destination, data),
            RelayPacket::OnionRequest { .. } => self.counters.drop(ForwardDrop::OnionIgnored),
            RelayPacket::ForwardRequest { .. } => self.counters.drop(ForwardDrop::ForwardIgnored),
            RelayPacket::RoutingResponse { .. }
            | RelayPacket::OobRecv { .. }
            | RelayPacket::OnionResponse { .. }
            | RelayPacket::Forwarding { .. } => {
                self.close(conn, CloseReason::ProtocolViolation);
                return false;
            }
        }
        self.clients.contains_key(&conn)
    }

    /// §2.5 ROUTING_REQUEST.
    fn routing_request(&mut self, conn: ConnId, peer: PublicKey) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let own = c.pk;
        tracing::trace!(?conn, client = ?own, ?peer, "relay: routing request");
        let refuse = RelayPacket::RoutingResponse {
            connection_id: 0,
            peer,
        };
        if peer == own {
            self.send_prio(conn, &refuse);
            return;
        }
        if let Some(i) = c.slot_by_peer(&peer) {
            let connection_id = NUM_RESERVED_PORTS + c.slots[i].index;
            self.send_prio(
                conn,
                &RelayPacket::RoutingResponse {
                    connection_id,
                    peer,
                },
            );
            return;
        }
        // Lowest free index: slots are sorted, so the first gap.
        let mut index = 0u8;
        for s in &c.slots {
            if s.index != index {
                break;
            }
            index += 1;
        }
        if usize::from(index) >= NUM_CLIENT_CONNECTIONS {
            self.send_prio(conn, &refuse);
            return;
        }
        let pos = c.slot_pos(index).unwrap_or_else(|p| p);
        c.slots.insert(
            pos,
            Slot {
                index,
                peer,
                link: None,
            },
        );
        self.send_prio(
            conn,
            &RelayPacket::RoutingResponse {
                connection_id: NUM_RESERVED_PORTS + index,
                peer,
            },
        );
        // Pair if the peer is here and has asked for us.
        let Some(&other) = self.by_key.get(&peer) else {
            return;
        };
        let Some(o) = self.clients.get_mut(&other) else {
            return;
        };
        let Some(j) = o.slot_by_peer(&own) else {
            return;
        };
        if o.slots[j].link.is_some() {
            return;
        }
        let other_index = o.slots[j].index;
        o.slots[j].link = Some((conn, index));
        if let Some(c) = self.clients.get_mut(&conn) {
            if let Ok(p) = c.slot_pos(index) {
                c.slots[p].link = Some((other, other_index));
            }
        }
        self.counters.routes += 1;
        self.send_prio(
            conn,
            &RelayPacket::ConnectNotification {
                connection_id: NUM_RESERVED_PORTS + index,
            },
        );
        self.send_prio(
            other,
            &RelayPacket::ConnectNotification {
                connection_id: NUM_RESERVED_PORTS + other_index,
            },
        );
    }

    /// §2.5 DISCONNECT_NOTIFICATION from a client. False if closed.
    fn disconnect_notification(&mut self, conn: ConnId, connection_id: u8) -> bool {
        let pos = connection_id
            .checked_sub(NUM_RESERVED_PORTS)
            .and_then(|index| self.clients.get(&conn)?.slot_pos(index).ok());
        let Some(pos) = pos else {
            self.close(conn, CloseReason::ProtocolViolation);
            return false;
        };
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        let slot = c.slots.remove(pos);
        if let Some((other, j)) = slot.link {
            self.unlink(other, j);
        }
        true
    }

    /// The other end of a connected slot lost its partner: back to
    /// "requested" and told so.
    fn unlink(&mut self, other: ConnId, index: u8) {
        let Some(o) = self.clients.get_mut(&other) else {
            return;
        };
        if let Ok(p) = o.slot_pos(index) {
            o.slots[p].link = None;
            self.counters.routes = self.counters.routes.saturating_sub(1);
            self.send_prio(
                other,
                &RelayPacket::DisconnectNotification {
                    connection_id: NUM_RESERVED_PORTS + index,
                },
            );
        }
    }

    /// §2.5 DATA. False if the sender was closed.
    fn forward(&mut self, now: Instant, conn: ConnId, connection_id: u8, data: &[u8]) -> bool {
        let Some(c) = self.clients.get(&conn) else {
            return false;
        };
        let pos = connection_id
            .checked_sub(NUM_RESERVED_PORTS)
            .and_then(|i| c.slot_pos(i).ok());
        let Some(pos) = pos else {
            self.close(conn, CloseReason::ProtocolViolation);
            return false;
        };
        let Some((to, j)) = c.slots[pos].link else {
            self.counters.drop(ForwardDrop::NotConnected);
            return true;
        };
        let slot_id = NUM_RESERVED_PORTS + j;
        let from = (c.pk, c.accepted_at);
        let to_end = self.clients.get(&to).map(|r| (r.pk, r.accepted_at));
        let action = match (self.fault.as_mut(), to_end) {
            (Some(f), Some((to_pk, to_at)))
                if f.applies(&fault::Forwarded {
                    from: (&from.0, from.1),
                    to: (&to_pk, to_at),
                    len: data.len(),
                }) =>
            {
                f.decide(now)
            }
            _ => FaultAction::Pass,
        };
        match action {
            FaultAction::Pass | FaultAction::Corrupt => {
                self.push_data(now, to, slot_id, data, action == FaultAction::Corrupt);
            }
            FaultAction::Drop => self.counters.drop(ForwardDrop::Fault),
            FaultAction::Delay(d) => {
                self.counters.fault_delayed += 1;
                if self.delayed.len() >= 1 << 16 {
                    self.counters.drop(ForwardDrop::Fault);
                } else {
                    let at = now + d;
                    self.delayed.push_back(Delayed {
                        at,
                        to,
                        slot_id,
                        payload: data.to_vec(),
                    });
                    self.arm(at);
                }
            }
        }
        // The sender itself may have been closed to make room (it was
        // stalled under pressure).
        self.clients.contains_key(&conn)
    }

    fn release_delayed(&mut self, now: Instant) {
        while self.delayed.front().is_some_and(|d| d.at <= now) {
            let Some(d) = self.delayed.pop_front() else {
                break;
            };
            // Deliver only if the receiver still holds that connected slot.
            let live = self.clients.get(&d.to).is_some_and(|c| {
                c.slot_pos(d.slot_id - NUM_RESERVED_PORTS)
                    .is_ok_and(|p| c.slots[p].link.is_some())
            });
            if live {
                self.push_data(now, d.to, d.slot_id, &d.payload, false);
            }
        }
    }

    /// Queues a forwarded DATA frame for `to`, or drops it (counted).
    fn push_data(&mut self, now: Instant, to: ConnId, slot_id: u8, data: &[u8], corrupt: bool) {
        let frame = data.len() + 1 + crate::wire::relay::FRAME_OVERHEAD;
        if !self.room_for(now, to, frame, self.cfg.queue_bytes) {
            return;
        }
        let Some(r) = self.clients.get_mut(&to) else {
            return;
        };
        let was_empty = r.out.data_len() == 0;
        let queued = r.out.push_data_bytes(slot_id, data);
        if corrupt {
            if let Some(f) = self.fault.as_mut() {
                f.corrupt(queued);
            }
            self.counters.fault_corrupted += 1;
        }
        self.queued_total += frame;
        self.counters.data_packets += 1;
        self.counters.data_bytes += data.len() as u64;
        if was_empty {
            self.mark_waiting(now, to);
        }
        self.wake(to);
    }

    /// Whether a data frame of `frame` bytes may be queued to `to`, whose
    /// queue may hold `bound` bytes: drops (counted) otherwise. A receiver
    /// whose own queue is full becomes stalled; a full global budget closes
    /// receivers stalled for [`PRESSURE_STALL`] (longest first) to make room.
    fn room_for(&mut self, now: Instant, to: ConnId, frame: usize, bound: usize) -> bool {
        let Some(r) = self.clients.get_mut(&to) else {
            return false;
        };
        if r.out.data_len() + frame > bound {
            self.counters.drop(ForwardDrop::QueueFull);
            return false;
        }
        for _ in 0..MAX_PRESSURE_CLOSES {
            if self.queued_total + frame <= self.cfg.total_queue_bytes {
                return true;
            }
            let victim = self
                .stalled
                .iter()
                .take(2)
                .find(|&&(since, id)| id != to && now >= since + PRESSURE_STALL)
                .copied();
            let Some((_, id)) = victim else {
                break;
            };
            tracing::debug!(
                ?id,
                "relay: closing a stalled receiver, the queue budget is full"
            );
            self.counters.slow_consumer_evictions += 1;
            self.close(id, CloseReason::SlowConsumer);
        }
        if self.queued_total + frame > self.cfg.total_queue_bytes {
            self.counters.drop(ForwardDrop::TotalQueueFull);
            return false;
        }
        true
    }

    /// §2.5 OOB_SEND: delivered to a confirmed link only, no feedback;
    /// charged to the sender's OOB budget, queued only while the receiver's
    /// queue is under half full.
    fn oob(&mut self, now: Instant, conn: ConnId, destination: PublicKey, data: &[u8]) {
        let Some(sender) = self.clients.get(&conn).map(|c| c.pk) else {
            return;
        };
        tracing::trace!(?conn, ?sender, ?destination, len = data.len(), "relay: OOB");
        let Some(&to) = self.by_key.get(&destination) else {
            self.counters.drop(ForwardDrop::OobNoDestination);
            return;
        };
        let packet = RelayPacket::OobRecv { sender, data };
        let frame = packet.encoded_len() + crate::wire::relay::FRAME_OVERHEAD;
        let rate = self.cfg.oob_bytes_per_sec;
        let charged = self
            .clients
            .get_mut(&conn)
            .is_some_and(|c| c.take_oob(now, rate, frame));
        if !charged {
            self.counters.drop(ForwardDrop::OobRateLimited);
            return;
        }
        if !self.room_for(now, to, frame, self.cfg.queue_bytes / 2) {
            return;
        }
        let Some(r) = self.clients.get_mut(&to) else {
            return;
        };
        let was_empty = r.out.data_len() == 0;
        if r.out.push_data(&packet).is_ok() {
            self.queued_total += frame;
            self.counters.oob_packets += 1;
            self.counters.oob_bytes += data.len() as u64;
            if was_empty {
                self.mark_waiting(now, to);
            }
            self.wake(to);
        }
    }

    /// Queues a priority frame; closes a receiver whose priority backlog is
    /// over its bound (control frames are never dropped).
    fn send_prio(&mut self, conn: ConnId, packet: &RelayPacket<'_>) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.out.prio_len() + packet.encoded_len() > self.cfg.priority_queue_bytes {
            self.close(conn, CloseReason::SlowConsumer);
            return;
        }
        if c.out.push_prio(packet).is_ok() {
            self.wake(conn);
        }
    }

    /// Forgets a connection and asks the runtime to close it. False if it
    /// was not known.
    fn close(&mut self, conn: ConnId, reason: CloseReason) -> bool {
        if self.remove(conn, reason) {
            tracing::debug!(?conn, ?reason, "relay closing client");
            self.closes.push_back((conn, reason));
            return true;
        }
        false
    }

    /// Restarts the stall clock of the connections drained since the last
    /// call (each listed once).
    fn settle(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.restarted) {
            if let Some(c) = self.clients.get_mut(&conn) {
                c.restart_pending = false;
                if c.out.data_len() > 0 {
                    self.mark_waiting(now, conn);
                }
            }
        }
    }

    /// Starts the stall clock of `conn` at `at` (data now waits for it).
    fn mark_waiting(&mut self, at: Instant, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.stalled_since.is_none() {
            c.stalled_since = Some(at);
            self.stalled.insert((at, conn));
            self.arm(at + self.cfg.slow_consumer_timeout);
        }
    }

    /// Takes an unconfirmed connection out of its address's list.
    fn forget_unconfirmed(&mut self, ip: IpAddr, seq: u64, conn: ConnId) {
        let Some(st) = self.ips.get_mut(&ip) else {
            return;
        };
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.remove(&r);
        }
        // At most max_unconfirmed_per_ip entries.
        if let Some(i) = st.unconfirmed.iter().position(|&e| e == (seq, conn)) {
            st.unconfirmed.remove(i);
            self.unconfirmed_count = self.unconfirmed_count.saturating_sub(1);
        }
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.insert(r);
        }
    }

    /// Removes a connection, tearing down its routes (§2.5: peers get
    /// DISCONNECT_NOTIFICATION and fall back to "requested").
    fn remove(&mut self, conn: ConnId, reason: CloseReason) -> bool {
        let Some(c) = self.clients.remove(&conn) else {
            return false;
        };
        self.counters.closes.bump(reason);
        self.queued_total = self.queued_total.saturating_sub(c.out.data_len());
        if let Some(since) = c.stalled_since {
            self.stalled.remove(&(since, conn));
        }
        match c.state {
            State::Confirmed => {
                if self.by_key.get(&c.pk) == Some(&conn) {
                    self.by_key.remove(&c.pk);
                }
            }
            State::AwaitHello | State::Unconfirmed => self.forget_unconfirmed(c.ip, c.seq, conn),
        }
        if let Some(st) = self.ips.get_mut(&c.ip) {
            st.conns = st.conns.saturating_sub(1);
            if st.conns == 0 {
                self.ips.remove(&c.ip);
            }
        }
        for s in &c.slots {
            if let Some((other, j)) = s.link {
                self.unlink(other, j);
            }
        }
        true
    }
}
