//! The sans-IO endpoint (DESIGN.md §2 "node"): owns our keys, the stateless
//! cookie responder, one [`Session`] per peer (by real public key), the relay
//! links shared by all peers ([`RelaySet`]), the relay pool, the blame ledger
//! and the self-prober; maps every incoming packet to its owner and gathers
//! every outgoing one.
//!
//! The address type `A` is whatever the owner uses to name a UDP address (a
//! `SocketAddr` in the tokio runtime, a small id in the simulator). A path of
//! a peer is a [`Route`]: a UDP address, or a relay through which both sides
//! route to each other (PROTOCOL.md §3). Each route becomes a [`PathId`] of
//! the session and a [`PathKey`] of its path table.
//!
//! Multipath (DESIGN.md §3): each session has a [`PathTable`] and a
//! [`Scheduler`]: every lossless transmit is recorded per path copy with its
//! packet number, acknowledgements reported by the session
//! ([`Session::drain_acked`]) prove paths, and data goes on `Choice.primary`
//! plus a copy on `Choice.secondary` when the scheduler asks for redundancy.
//! A path that dies hands its stranded packets back to the session, which
//! resends them at once ([`Session::mark_lost`]). Paths that are not proven by
//! traffic of their own (unproven, dead, standby) get a *probe* now and then:
//! a new lossless packet sent on that path alone. Handshake-phase packets go
//! to the route that last delivered an authenticated packet (or the one given
//! to [`Node::connect`]) and, for cookie requests and handshakes, also through
//! every relay of the peer (as OOB until the peer routes to us, §3), so a
//! c-toxcore peer sees the behaviour it expects.
//!
//! Relays (DESIGN.md §3): the [`RelayPool`] keeps a target number of relays
//! per peer from the known ones — ours ([`Node::add_relay`]) and, for that
//! friend's connection only, the ones a friend named
//! ([`Node::add_friend_relay`]: never changing how we reach a relay we know
//! otherwise, nor where a self-probe goes); the node ties the peer
//! to each (routing request), and a relay route becomes a path of the session
//! when the peer is ONLINE on it. Every way a relay leaves a peer — link down,
//! route refused, demoted as slow, dropped for tampering, disconnected for
//! everyone — goes through [`RelayPool::relay_lost`] and is replaced at once
//! from the known relays. Authentication failures of packets that came
//! through a relay are counted per (relay, peer) in the [`BlameLedger`]: past
//! a small threshold the relay is dropped for that peer only, and a
//! self-probe ([`probe`]) decides whether it is disconnected for everyone.
//!
//! Runtime protocol for relays: open the TCP connections
//! [`Node::poll_relay_connect`] asks for and report
//! [`Node::relay_connected`] / [`Node::relay_connect_failed`]; feed what a
//! socket reads to [`Node::relay_bytes`]; write what
//! [`Node::relay_drain`] gives whenever [`Node::relay_has_output`]; close the
//! sockets [`Node::poll_relay_close`] names and report closed sockets with
//! [`Node::relay_closed`]. Each link is named by a [`LinkId`].
//!
//! Rules (PROTOCOL.md §4.3, §4.4, §6):
//! * Cookie requests are answered for anybody, statelessly, rate limited, on
//!   the route they came from.
//! * From an unknown route only handshakes are processed; a valid one from a
//!   peer we are connecting to is adopted, one from an unknown peer creates a
//!   session only if the peer is allowed (friends list or accept-all).
//! * Everything else from an unknown route is dropped and counted.
//! * A session that times out while we initiated is started again (as
//!   c-toxcore's friend_connection does), so heavy loss never turns into a
//!   spurious disconnect; a killed session is reported and removed.
//! * An established session whose peer has been silent for 2 s gives way to
//!   a valid handshake with a new session key from that peer (it restarted);
//!   the old one is reported as [`Event::Killed`].
//!
//! Memory is bounded by the number of allowed peers (sessions), by a cap on
//! routes per peer, on known relays and on queued responses and events.

pub mod probe;

use crate::crypto::{KeyPair, PublicKey, SharedKey};
use crate::error::{Misbehavior, Overload, Refusal};
use crate::paths::blame::{BlameConfig, BlameLedger, DisconnectReason, Verdict};
use crate::paths::health::{Health, HealthConfig};
use crate::paths::pool::{
    LearnError, LossReason, PoolConfig, PoolEvent, RelayInfo, RelayPool, Source,
};
use crate::paths::scheduler::{Choice, Scheduler, SchedulerConfig};
use crate::paths::table::PathTable;
use crate::paths::PathKey;
use crate::relay_client::{
    PeerRelayState, RelayLinkState, RelaySet, RelaySetConfig, RelaySetEvent, SocketId,
};
use crate::session::handshake::{
    open_handshake, CookieKey, CookieResponder, CookieResponderConfig, TokenBucket,
    COOKIE_RESPONSE_SIZE, PACKET_COOKIE_REQUEST, PACKET_HANDSHAKE,
};
use crate::session::{
    DataKind, DropReason, Event, Identity, PathId, SendError, Session, SessionConfig, State,
    Transmit, TransmitKind, MAX_PACKET_SIZE,
};
use crate::wire::relay::MAX_OOB_DATA;
use crate::wire::WireError;
use probe::{ProbeOutcome, SelfProber};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Routes remembered per peer (UDP addresses and relays).
const MAX_ROUTES_PER_PEER: usize = 16;
/// Silence after which an ESTABLISHED session gives way to a new handshake
/// from the same peer (the peer restarted).
const RESTART_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// Public-key operations per second (and burst) for handshakes of peers
/// not allowed in advance (accept-all mode).
const X25519_PER_SEC: f64 = 200.0;
/// See [`X25519_PER_SEC`].
const X25519_BURST: f64 = 50.0;
/// Cookie responses queued before more requests are dropped.
const MAX_QUEUED_RESPONSES: usize = 256;
/// Path and relay events queued for the owner (the oldest are dropped
/// beyond).
const MAX_PATH_EVENTS: usize = 1024;
/// Probe interval of a path that is unproven, suspect, unmeasured, or a
/// standby that looks better than the primary.
const PROBE_UNPROVEN: Duration = Duration::from_millis(200);
/// Probe interval of a dead (not closed) or standby path that does not
/// look better than the primary.
const PROBE_STANDBY: Duration = Duration::from_secs(1);
/// A relay path that has been without proof (suspect, then dead) this long
/// while its relay link is up (the relay answers PINGs but delivers nothing
/// for the peer) loses the relay for that peer, replaced by a spare.
const RELAY_DEAD_FOR: Duration = Duration::from_millis(1500);
/// How often relay RTTs are compared to demote slow relays.
const SLOW_CHECK: Duration = Duration::from_millis(250);
/// Lossless packets in flight while the primary path is a relay: an AIMD
/// window on top of the session's congestion control, from
/// [`RELAY_CAP_MIN`] up to [`RELAY_CAP_MAX`]. A relay's queue towards one
/// client is shallow (ours holds 256 KiB) and drops silently when the client
/// reads slowly (c-toxcore drains its relay socket at a few hundred packets a
/// second), and the loss shows only when the peer's next request packet
/// arrives, up to a second later: an uncapped window overran it and the
/// resends kept it overrun until c-toxcore timed us out. The cap grows by a
/// quarter per two caps' worth of packets delivered on the relay path
/// without a loss while its RTT shows no queue, and halves on a loss there.
const RELAY_CAP_MIN: u32 = 64;
/// Largest relay window (see [`RELAY_CAP_MIN`]).
const RELAY_CAP_MAX: u32 = 4096;
/// How long the relay routes of a departed peer stay tied (see
/// `forget_peer_routes`).
const UNTIE_GRACE: Duration = Duration::from_secs(1);
/// Departed routes waiting to be untied at most (beyond, untied at once).
const MAX_PENDING_UNTIE: usize = 4096;
/// How often a session without any route is looked at again (its timers
/// are due but nothing can be sent).
const ROUTELESS_RETRY: Duration = Duration::from_millis(50);
/// Relay events handled per input before the rest waits for the next call
/// (bounds the work of one call).
const RELAY_EVENTS_PER_CALL: usize = 8192;

/// Where a packet of a peer comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Route<A> {
    /// Direct UDP.
    Udp(A),
    /// Through a TCP relay.
    Relay {
        /// The relay's public key.
        relay: PublicKey,
        /// The key the peer uses on relays (its DHT key).
        peer: PublicKey,
    },
}

impl<A> Route<A> {
    /// The relay key of a relay route.
    pub fn relay(&self) -> Option<&PublicKey> {
        match self {
            Route::Relay { relay, .. } => Some(relay),
            Route::Udp(_) => None,
        }
    }
}

/// One relay socket of the node: the main identity's, or the self-prober's,
/// for one connection attempt. A new attempt to the same relay is a new
/// `LinkId`, so a close meant for the old socket never reaches the new one,
/// and reports about a socket that is no longer current are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// The relay.
    pub relay: PublicKey,
    /// A link of the self-probe identity.
    pub probe: bool,
    /// Connection attempt (per relay and identity, increasing).
    pub attempt: u64,
}

impl LinkId {
    fn new(socket: SocketId, probe: bool) -> Self {
        LinkId {
            relay: socket.relay,
            probe,
            attempt: socket.attempt,
        }
    }

    fn socket(&self) -> SocketId {
        SocketId {
            relay: self.relay,
            attempt: self.attempt,
        }
    }
}

/// The table key of a route with session path `id`. UDP addresses are
/// opaque to the node, so each is named to the path table by its [`PathId`]
/// packed into an IPv6 address.
fn key_of<A>(route: &Route<A>, id: PathId) -> PathKey {
    match route {
        Route::Udp(_) => PathKey::Udp(SocketAddr::from((Ipv6Addr::from(u128::from(id.0)), 0))),
        Route::Relay { relay, .. } => PathKey::Relay(*relay),
    }
}

/// Why a path changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathReason {
    /// A packet sent on this path alone was acknowledged.
    Proven,
    /// Packets sent on it were not acknowledged within its timeout.
    NoProof,
    /// The transport closed it (UDP path reported closed, relay link down,
    /// the peer left the relay, the relay was dropped).
    Closed,
}

/// What happened to a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEventKind<A> {
    /// The path's health changed. On `Dead`, `resent` packets that were
    /// stranded on it were handed back to the session for resending at once.
    Health {
        /// Previous state.
        old: Health,
        /// New state.
        new: Health,
        /// Why.
        reason: PathReason,
        /// Lossless packets resent at once because of this change.
        resent: usize,
    },
    /// The primary path changed (from `from`, if there was one).
    Primary {
        /// Previous primary route.
        from: Option<Route<A>>,
    },
    /// The relay pool started using this relay for the peer.
    RelayAdded,
    /// The relay left the peer's set (and was replaced where possible).
    RelayDropped {
        /// Why.
        reason: LossReason,
    },
    /// A packet from the peer through this relay failed authentication.
    AuthFailure {
        /// Failures counted for (relay, peer) in the blame window.
        failures: usize,
    },
}

/// A path event of one peer (see [`Node::poll_path_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEvent<A> {
    /// The peer.
    pub peer: PublicKey,
    /// The path.
    pub addr: Route<A>,
    /// When.
    pub at: Instant,
    /// What.
    pub kind: PathEventKind<A>,
}

/// Node-wide relay events (see [`Node::poll_relay_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A relay link finished its handshake.
    Up {
        /// The relay.
        relay: PublicKey,
    },
    /// A relay link died (it is reconnected with back-off).
    Down {
        /// The relay.
        relay: PublicKey,
    },
    /// A self-probe through the relay started.
    ProbeStarted {
        /// The relay.
        relay: PublicKey,
    },
    /// A self-probe ended.
    Probed(ProbeOutcome),
    /// The relay was disconnected for everyone.
    Disconnected {
        /// The relay.
        relay: PublicKey,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Multipath state of one session.
struct Paths {
    table: PathTable,
    sched: Scheduler,
    /// Last probe per path key.
    probed: Vec<(PathKey, Instant)>,
    primary: Option<PathKey>,
    /// The scheduler's choice for one instant: the runtime polls a whole
    /// batch of transmits with the same `now`, and recording a send does not
    /// change any path's health at that instant, so the choice is reused
    /// until `now` moves or the table changes otherwise.
    cached: Option<(Instant, Choice)>,
    /// The window cap while on a relay (see [`RELAY_CAP_MIN`]).
    relay_cap: u32,
    /// The relay path and its (delivered, lost) totals at the last cap
    /// change.
    cap_seen: Option<(PathKey, u64, u64)>,
    /// The cap last given to the session.
    cap_applied: Option<u32>,
    /// Relay paths without proof (suspect or dead, not closed) and since
    /// when: a relay whose link stays up but that delivers nothing for the
    /// peer is replaced after [`RELAY_DEAD_FOR`].
    dead_relays: Vec<(PublicKey, Instant)>,
}

impl Paths {
    fn new(cfg: &NodeConfig) -> Self {
        Paths {
            table: PathTable::new(cfg.health),
            sched: Scheduler::new(cfg.scheduler),
            probed: Vec::new(),
            primary: None,
            cached: None,
            relay_cap: RELAY_CAP_MIN,
            cap_seen: None,
            cap_applied: None,
            dead_relays: Vec::new(),
        }
    }

    /// Adjusts the relay window from the primary path's delivered and lost
    /// totals; returns the cap the session should have (None: not on a
    /// relay).
    fn relay_window(&mut self) -> Option<u32> {
        let key = self.primary.filter(|k| !k.is_direct())?;
        let entry = self.table.path(&key);
        let (d, l) = entry.map_or((0, 0), |e| e.health().loss().totals());
        // Grow only while the relay path shows no queue: its latest RTT
        // sample within twice its minimum plus 10 ms. A relay in front of a
        // slow reader (c-toxcore) queues long before it drops, and its
        // drops are reported a second late.
        let no_queue = entry.is_some_and(|e| {
            let r = e.health().rtt();
            match (r.latest(), r.srtt(), r.min()) {
                (Some(x), Some(sr), Some(m)) => x.max(sr) <= m * 2 + Duration::from_millis(10),
                _ => false,
            }
        });
        match self.cap_seen {
            Some((k, d0, l0)) if k == key => {
                if l > l0 {
                    self.relay_cap = (self.relay_cap / 2).max(RELAY_CAP_MIN);
                    self.cap_seen = Some((key, d, l));
                } else if no_queue && d >= d0 + 2 * u64::from(self.relay_cap) {
                    self.relay_cap = (self.relay_cap + self.relay_cap / 4).min(RELAY_CAP_MAX);
                    self.cap_seen = Some((key, d, l));
                }
            }
            _ => self.cap_seen = Some((key, d, l)),
        }
        Some(self.relay_cap)
    }

    /// The table, for any change other than recording a send: forgets the
    /// cached choice.
    fn table_mut(&mut self) -> &mut PathTable {
        self.cached = None;
        &mut self.table
    }

    /// The scheduler's choice at `now` (cached per instant).
    fn choose(&mut self, now: Instant) -> Choice {
        match self.cached {
            Some((t, c)) if t == now => c,
            _ => {
                let c = self.sched.choose(&self.table, now);
                self.cached = Some((now, c));
                c
            }
        }
    }

    /// A path (other than a healthy primary) due for a probe at `now`.
    fn probe_due(&self, now: Instant) -> Option<PathKey> {
        let primary_score = self
            .primary
            .and_then(|k| self.table.path(&k))
            .map(|p| self.sched.score(p));
        self.table.paths().map(|p| p.key()).find(|k| {
            let Some(entry) = self.table.path(k) else {
                return false;
            };
            if entry.health().is_closed() {
                return false;
            }
            let h = self.table.health(now, k).unwrap_or(Health::Dead);
            let every = match h {
                Health::Healthy if Some(*k) == self.primary => return false,
                // Proven (by reverse evidence) but not measured yet, or
                // looking better than the primary but not by the switching
                // margin yet: measure it more often.
                Health::Healthy
                    if entry.health().rtt().srtt().is_none()
                        || primary_score.is_some_and(|s| self.sched.score(entry) < s) =>
                {
                    PROBE_UNPROVEN
                }
                Health::Unproven | Health::Suspect => PROBE_UNPROVEN,
                Health::Healthy | Health::Dead => PROBE_STANDBY,
            };
            self.probed
                .iter()
                .find(|(pk, _)| pk == k)
                .is_none_or(|(_, t)| now.saturating_duration_since(*t) >= every)
        })
    }

    fn probed_at(&mut self, key: PathKey, now: Instant) {
        if let Some(e) = self.probed.iter_mut().find(|(k, _)| *k == key) {
            e.1 = now;
        } else {
            self.probed.push((key, now));
        }
    }
}

/// Node configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Configuration of every session.
    pub session: SessionConfig,
    /// Cookie responder rate limit.
    pub cookie: CookieResponderConfig,
    /// Accept handshakes from any peer (otherwise only from [`Node::allow`]ed
    /// ones).
    pub accept_all: bool,
    /// Path health timeouts (multipath).
    pub health: HealthConfig,
    /// Path scheduler parameters (multipath).
    pub scheduler: SchedulerConfig,
    /// Use the long-term key pair as the DHT key pair too (instead of a
    /// fresh one per process, §1). Two toxlink peers that know each other's
    /// long-term keys can then meet on a shared relay without a DHT or onion
    /// lookup: a relay routes by DHT key (§3).
    pub dht_is_real: bool,
    /// Relay links (ping interval, timeouts, reconnect back-off).
    pub relay: RelaySetConfig,
    /// Relays kept per peer and their replacement.
    pub pool: PoolConfig,
    /// Blame thresholds.
    pub blame: BlameConfig,
}

/// What the node tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The peer (real public key).
    pub peer: PublicKey,
    /// What happened.
    pub event: Event,
}

/// Node counters.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// Cookie requests answered.
    pub cookies_sent: u64,
    /// Datagrams from unknown addresses that were not handshakes.
    pub unknown_source: u64,
    /// Handshakes refused (invalid, or from a peer not allowed).
    pub handshakes_refused: u64,
    /// Sessions restarted after a handshake timeout.
    pub reconnects: u64,
    /// Redundant copies sent on a secondary path.
    pub copies_sent: u64,
    /// Bytes of those copies.
    pub copy_bytes: u64,
    /// Lossless packets sent alone on a path to probe it.
    pub probes_sent: u64,
    /// Packets handed to a relay (DATA or OOB).
    pub relay_sent: u64,
    /// Packets a relay link refused (not connected, queue full, too big for
    /// OOB).
    pub relay_refused: u64,
    /// Packets from a relay that failed authentication.
    pub relay_auth_failures: u64,
    /// Relays dropped for one peer, for any reason.
    pub relays_dropped: u64,
    /// Self-probes run.
    pub self_probes: u64,
    /// Public-key operations done for handshakes of peers not allowed in
    /// advance (accept-all mode; rate limited).
    pub handshake_key_ops: u64,
}

struct Peer<A> {
    session: Session,
    dht: PublicKey,
    routes: Vec<Route<A>>,
    /// Index into `routes` of the handshake-phase route.
    current: usize,
    /// We initiated (restart on timeout).
    initiator: bool,
    /// Path table and scheduler.
    paths: Paths,
}

/// The sans-IO endpoint. See the module documentation.
pub struct Node<A> {
    cfg: NodeConfig,
    id: Identity,
    rng: ChaCha20Rng,
    responder: CookieResponder,
    peers: HashMap<PublicKey, Peer<A>>,
    by_route: HashMap<Route<A>, PublicKey>,
    path_ids: HashMap<Route<A>, PathId>,
    next_path: u32,
    allowed: HashSet<PublicKey>,
    /// Our long-term key precomputed with each allowed peer's: a handshake
    /// naming an allowed peer costs no public-key operation, one naming
    /// anybody else is refused before any (bounded by `allowed`).
    real_keys: HashMap<PublicKey, SharedKey>,
    /// Public-key operations for handshakes of peers not allowed in advance
    /// (accept-all mode only): rate limited, so a flood costs bounded CPU.
    x25519_budget: TokenBucket,
    responses: VecDeque<(Route<A>, [u8; COOKIE_RESPONSE_SIZE])>,
    events: VecDeque<NodeEvent>,
    order: Vec<PublicKey>,
    rr: usize,
    stats: NodeStats,
    path_events: VecDeque<PathEvent<A>>,
    relay_events: VecDeque<RelayEvent>,
    /// A redundant copy of the last datagram, for a secondary UDP path.
    copy: Option<(A, Transmit, Box<[u8; MAX_PACKET_SIZE]>)>,
    last_now: Option<Instant>,
    relays: RelaySet,
    pool: RelayPool,
    blame: BlameLedger,
    prober: SelfProber,
    last_slow_check: Option<Instant>,
    /// Relay routes of departed peers, untied after [`UNTIE_GRACE`]:
    /// (since, peer DHT key, relay).
    pending_untie: Vec<(Option<Instant>, PublicKey, PublicKey)>,
}

impl<A> Debug for Node<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("real", &self.id.real.public)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Drains a bounded number of events of a relay set.
fn drain_set(set: &mut RelaySet) -> Vec<RelaySetEvent> {
    std::iter::from_fn(|| set.poll_event())
        .take(RELAY_EVENTS_PER_CALL)
        .collect()
}

impl<A: Copy + Eq + Hash + Debug> Node<A> {
    /// A node with the given long-term key; the DHT key and the cookie key
    /// are fresh (per process, §1) unless [`NodeConfig::dht_is_real`].
    pub fn new(now: Instant, rng: &mut impl CryptoRngCore, real: KeyPair, cfg: NodeConfig) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let dht = if cfg.dht_is_real {
            real.clone()
        } else {
            KeyPair::generate(&mut rng)
        };
        let cookie_key = CookieKey::new(&mut rng, now);
        let mut probe_seed = [0u8; 32];
        rng.fill_bytes(&mut probe_seed);
        Node {
            responder: CookieResponder::new(cfg.cookie),
            relays: RelaySet::new(dht.clone(), cfg.relay.clone()),
            prober: SelfProber::new(&dht, probe_seed, cfg.relay.clone()),
            pool: RelayPool::new(cfg.pool),
            blame: BlameLedger::new(cfg.blame),
            cfg,
            id: Identity {
                real,
                dht,
                cookie_key,
            },
            rng,
            peers: HashMap::new(),
            by_route: HashMap::new(),
            path_ids: HashMap::new(),
            next_path: 0,
            allowed: HashSet::new(),
            real_keys: HashMap::new(),
            x25519_budget: TokenBucket::new(X25519_PER_SEC, X25519_BURST),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            order: Vec::new(),
            rr: 0,
            stats: NodeStats::default(),
            path_events: VecDeque::new(),
            relay_events: VecDeque::new(),
            copy: None,
            last_now: Some(now),
            last_slow_check: None,
            pending_untie: Vec::new(),
        }
    }

    /// Our long-term public key.
    pub fn real_pk(&self) -> PublicKey {
        self.id.real.public
    }

    /// Our DHT public key (peers need it to connect to us; relays see it).
    pub fn dht_pk(&self) -> PublicKey {
        self.id.dht.public
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The session with `peer`, if any.
    pub fn session(&self, peer: &PublicKey) -> Option<&Session> {
        self.peers.get(peer).map(|p| &p.session)
    }

    /// Allows handshakes from `peer` (a friend).
    pub fn allow(&mut self, peer: PublicKey) {
        self.allow_inner(peer);
    }

    fn allow_inner(&mut self, peer: PublicKey) {
        self.allowed.insert(peer);
        let real = &self.id.real;
        self.real_keys
            .entry(peer)
            .or_insert_with(|| real.precompute(&peer));
    }

    fn path_of(&mut self, route: Route<A>) -> PathId {
        if let Some(p) = self.path_ids.get(&route) {
            return *p;
        }
        let p = PathId(self.next_path);
        self.next_path = self.next_path.wrapping_add(1);
        self.path_ids.insert(route, p);
        p
    }

    fn key_of_route(&mut self, route: Route<A>) -> PathKey {
        let id = self.path_of(route);
        key_of(&route, id)
    }

    /// Adds `route` to `peer`'s routes (it becomes the handshake-phase route
    /// if `current`). A UDP route becomes a path at once; a relay route when
    /// the peer is ONLINE on the relay.
    fn add_route(&mut self, peer: PublicKey, route: Route<A>, current: bool) {
        let key = self.key_of_route(route);
        if let Some(prev) = self.by_route.insert(route, peer) {
            if prev != peer {
                if let Some(p) = self.peers.get_mut(&prev) {
                    p.routes.retain(|a| *a != route);
                    p.current = p.current.min(p.routes.len().saturating_sub(1));
                    p.paths.table_mut().remove_path(&key);
                }
            }
        }
        let online = match route {
            Route::Udp(_) => true,
            Route::Relay { relay, peer } => {
                self.relays.peer_state(&peer, &relay) == Some(PeerRelayState::Online)
            }
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(i) = p.routes.iter().position(|a| *a == route) {
            if current {
                p.current = i;
            }
        } else {
            if p.routes.len() >= MAX_ROUTES_PER_PEER {
                // Forget the oldest UDP address to make room for a newer
                // one. A relay route never evicts a direct one (relays
                // leave through the pool): past the cap it is not added.
                if matches!(route, Route::Relay { .. }) {
                    return;
                }
                if let Some(i) = p.routes.iter().position(|r| matches!(r, Route::Udp(_))) {
                    let old = p.routes.remove(i);
                    self.by_route.remove(&old);
                    if let Some(id) = self.path_ids.remove(&old) {
                        p.paths.table_mut().remove_path(&key_of(&old, id));
                    }
                } else {
                    return;
                }
            }
            p.routes.push(route);
            if current || p.routes.len() == 1 {
                p.current = p.routes.len() - 1;
            }
        }
        if online {
            p.paths.table_mut().add_path(key);
        }
    }

    /// Removes a route of `peer`: its path is closed (stranded packets are
    /// resent at once) and packets from it are no longer accepted.
    fn remove_route(&mut self, now: Instant, peer: PublicKey, route: Route<A>) {
        let Some(id) = self.path_ids.get(&route).copied() else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().on_closed(now, &key_of(&route, id));
        }
        self.path_changes(now, peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            let cur = p.routes.get(p.current).copied();
            p.routes.retain(|r| *r != route);
            p.current = cur
                .and_then(|c| p.routes.iter().position(|r| *r == c))
                .unwrap_or(0);
        }
        if self.by_route.get(&route) == Some(&peer) {
            self.by_route.remove(&route);
            self.path_ids.remove(&route);
        }
    }

    /// Adds `addr` as another direct path to `peer` (which must have a
    /// session): data from it is accepted once authenticated, and the
    /// scheduler may send on it. Returns false if there is no session.
    pub fn add_path(&mut self, now: Instant, peer: &PublicKey, addr: A) -> bool {
        self.last_now = Some(now);
        if !self.peers.contains_key(peer) {
            return false;
        }
        self.add_route(*peer, Route::Udp(addr), false);
        true
    }

    /// The transport reports `addr` unusable (interface down, route gone):
    /// the path is dead at once and its packets in flight are resent.
    pub fn path_closed(&mut self, now: Instant, addr: A) {
        self.last_now = Some(now);
        let Some((peer, key)) = self.udp_path(addr) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().on_closed(now, &key);
        }
        self.path_changes(now, peer);
    }

    /// A UDP path that was reported closed works again: it is probed and may
    /// carry data once proven.
    pub fn path_reopened(&mut self, now: Instant, addr: A) {
        self.last_now = Some(now);
        let Some((peer, key)) = self.udp_path(addr) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().add_path(key);
        }
    }

    /// The peer and table key of the UDP path to `addr`, if it is one.
    fn udp_path(&self, addr: A) -> Option<(PublicKey, PathKey)> {
        let route = Route::Udp(addr);
        let peer = self.by_route.get(&route)?;
        let id = self.path_ids.get(&route)?;
        Some((*peer, key_of(&route, *id)))
    }

    /// The path table of the session with `peer` (per-path bytes, health).
    pub fn path_table(&self, peer: &PublicKey) -> Option<&PathTable> {
        self.peers.get(peer).map(|p| &p.paths.table)
    }

    /// The current primary path of `peer`, if one was chosen.
    pub fn primary(&self, peer: &PublicKey) -> Option<PathKey> {
        self.peers.get(peer).and_then(|p| p.paths.primary)
    }

    /// The next path event of any peer (health changes, primary switches,
    /// relays added and dropped).
    pub fn poll_path_event(&mut self) -> Option<PathEvent<A>> {
        self.path_events.pop_front()
    }

    /// The next node-wide relay event (links up and down, self-probes,
    /// relays disconnected for everyone).
    pub fn poll_relay_event(&mut self) -> Option<RelayEvent> {
        self.relay_events.pop_front()
    }

    fn push_path_event(&mut self, e: PathEvent<A>) {
        if self.path_events.len() >= MAX_PATH_EVENTS {
            self.path_events.pop_front();
        }
        tracing::debug!(peer = ?e.peer, addr = ?e.addr, kind = ?e.kind, "path event");
        self.path_events.push_back(e);
    }

    fn push_relay_event(&mut self, e: RelayEvent) {
        if self.relay_events.len() >= MAX_PATH_EVENTS {
            self.relay_events.pop_front();
        }
        tracing::debug!(event = ?e, "relay event");
        self.relay_events.push_back(e);
    }

    /// The route of path `key` of `peer`.
    fn route_of(&self, peer: &Peer<A>, key: PathKey) -> Option<Route<A>> {
        match key {
            PathKey::Relay(relay) => Some(Route::Relay {
                relay,
                peer: peer.dht,
            }),
            PathKey::Udp(_) => peer.routes.iter().copied().find(|r| {
                matches!(r, Route::Udp(_))
                    && self.path_ids.get(r).is_some_and(|id| key_of(r, *id) == key)
            }),
        }
    }

    /// Applies path health changes of `peer`: stranded packets are resent at
    /// once, every change becomes a [`PathEvent`].
    fn path_changes(&mut self, now: Instant, peer: PublicKey) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let changes = p.paths.table_mut().poll_changes(now);
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            if !c.resend.is_empty() {
                p.session.mark_lost(&c.resend);
            }
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let mut out = Vec::with_capacity(changes.len());
        let mut doubted = Vec::new();
        let mut dead = Vec::new();
        for c in changes {
            let Some(addr) = self.route_of(p, c.key) else {
                continue;
            };
            let closed = p
                .paths
                .table
                .path(&c.key)
                .is_some_and(|e| e.health().is_closed());
            if let Route::Relay { relay, .. } = addr {
                // A relay path that stopped delivering: make its link prove
                // it is alive (a NAT or firewall may have cut it silently),
                // and time how long it goes without proof.
                let no_proof = matches!(c.new, Health::Suspect | Health::Dead);
                if no_proof {
                    doubted.push(relay);
                }
                dead.push((relay, no_proof && !closed));
            }
            let reason = match c.new {
                Health::Dead if closed => PathReason::Closed,
                Health::Dead | Health::Suspect => PathReason::NoProof,
                Health::Healthy | Health::Unproven => PathReason::Proven,
            };
            out.push(PathEvent {
                peer,
                addr,
                at: now,
                kind: PathEventKind::Health {
                    old: c.old,
                    new: c.new,
                    reason,
                    resent: c.resend.len(),
                },
            });
        }
        for e in out {
            self.push_path_event(e);
        }
        for relay in doubted {
            self.relays.verify(now, &relay);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            let d = &mut p.paths.dead_relays;
            for (relay, is_dead) in dead {
                let known = d.iter().position(|(r, _)| *r == relay);
                match (is_dead, known) {
                    (true, None) => d.push((relay, now)),
                    (false, Some(i)) => {
                        d.swap_remove(i);
                    }
                    _ => {}
                }
            }
        }
    }

    fn insert_peer(&mut self, now: Instant, real: PublicKey, mut peer: Peer<A>) {
        peer.session.record_acks();
        let routes = std::mem::take(&mut peer.routes);
        let current = peer.current;
        self.peers.insert(real, peer);
        if !self.order.contains(&real) {
            self.order.push(real);
        }
        for (i, r) in routes.into_iter().enumerate() {
            self.add_route(real, r, i == current);
        }
        let evs = self.pool.add_peer(now, real);
        self.apply_pool(now, evs);
    }

    /// Starts (or restarts) a connection to `peer` at `addr` (§4.3). The peer
    /// is allowed implicitly.
    pub fn connect(&mut self, now: Instant, peer: PublicKey, peer_dht: PublicKey, addr: A) {
        self.connect_inner(now, peer, peer_dht, Some(Route::Udp(addr)));
    }

    /// Starts (or restarts) a connection to `peer` through relays only: the
    /// handshake goes through every relay of the pool the peer is on (add
    /// them first with [`Node::add_relay`]). The peer is allowed implicitly.
    pub fn connect_via_relays(&mut self, now: Instant, peer: PublicKey, peer_dht: PublicKey) {
        self.connect_inner(now, peer, peer_dht, None);
    }

    fn connect_inner(
        &mut self,
        now: Instant,
        peer: PublicKey,
        peer_dht: PublicKey,
        route: Option<Route<A>>,
    ) {
        self.last_now = Some(now);
        self.allow_inner(peer);
        let session = Session::connect(
            now,
            &mut self.rng,
            self.cfg.session.clone(),
            &self.id,
            peer,
            peer_dht,
        );
        let (mut routes, mut current) = match self.peers.remove(&peer) {
            Some(p) if p.dht == peer_dht => (p.routes, p.current),
            Some(p) => {
                self.forget_peer_routes(&peer, p);
                (Vec::new(), 0)
            }
            None => (Vec::new(), 0),
        };
        if let Some(r) = route {
            match routes.iter().position(|x| *x == r) {
                Some(i) => current = i,
                None => {
                    routes.push(r);
                    current = routes.len() - 1;
                }
            }
        }
        self.insert_peer(
            now,
            peer,
            Peer {
                session,
                dht: peer_dht,
                routes,
                current,
                initiator: true,
                paths: Paths::new(&self.cfg),
            },
        );
    }

    /// Handles one datagram from UDP address `from`. `buf` may be modified
    /// (decrypted in place).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: A,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        self.on_packet(now, Route::Udp(from), buf)
    }

    fn on_packet(
        &mut self,
        now: Instant,
        from: Route<A>,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        match buf.first() {
            Some(&PACKET_COOKIE_REQUEST) => {
                if self.responses.len() >= MAX_QUEUED_RESPONSES {
                    return Err(DropReason::Overloaded(Overload::QueueFull));
                }
                let mut out = [0u8; COOKIE_RESPONSE_SIZE];
                self.responder.respond(
                    &mut self.rng,
                    now,
                    &self.id.dht,
                    &self.id.cookie_key,
                    buf,
                    &mut out,
                )?;
                self.stats.cookies_sent += 1;
                self.responses.push_back((from, out));
                Ok(())
            }
            Some(&PACKET_HANDSHAKE) => self.on_handshake(now, from, buf),
            Some(_) => {
                let Some(peer) = self.by_route.get(&from).copied() else {
                    self.stats.unknown_source += 1;
                    return Err(DropReason::UnknownRoute);
                };
                self.last_now = Some(now);
                let path = self.path_of(from);
                let p = self.peers.get_mut(&peer).ok_or(DropReason::UnknownRoute)?;
                let r = p.session.handle_packet(now, path, buf);
                match (&r, from) {
                    (Ok(()), _) => {
                        if let Some(i) = p.routes.iter().position(|a| *a == from) {
                            p.current = i;
                        }
                        let table = p.paths.table_mut();
                        let key = key_of(&from, path);
                        table.on_received(now, &key);
                        // Acknowledgements carried by this very packet: the
                        // newest acknowledged send time is reverse evidence
                        // for this path, then the acks prove the paths they
                        // went on.
                        let mut newest: Option<Instant> = None;
                        p.session.drain_acked(|n| {
                            if let Some(t) = table.first_sent(n) {
                                newest = Some(newest.map_or(t, |x| x.max(t)));
                            }
                            table.on_acked(now, n);
                        });
                        if let Some(t) = newest {
                            table.on_reverse_proof(now, &key, t);
                        }
                        let cap = p.paths.relay_window();
                        if cap != p.paths.cap_applied {
                            p.paths.cap_applied = cap;
                            p.session.set_inflight_cap(cap);
                        }
                        if let Route::Relay { relay, .. } = from {
                            self.blame.on_auth_success(now, relay, peer);
                        }
                        self.path_changes(now, peer);
                    }
                    (
                        Err(DropReason::Misbehaved(Misbehavior::DataAuth)),
                        Route::Relay { relay, .. },
                    ) => {
                        self.on_relay_auth_failure(now, relay, peer, from);
                    }
                    _ => {}
                }
                r
            }
            None => Err(DropReason::Malformed(WireError::Empty)),
        }
    }

    /// A packet of `peer` through `relay` failed authentication (§6: dropped
    /// silently; DESIGN.md §3: counted against the relay for that peer).
    fn on_relay_auth_failure(
        &mut self,
        now: Instant,
        relay: PublicKey,
        peer: PublicKey,
        route: Route<A>,
    ) {
        self.stats.relay_auth_failures += 1;
        let verdicts = self.blame.on_auth_failure(now, relay, peer);
        let failures = self.blame.failures(&relay, &peer);
        self.push_path_event(PathEvent {
            peer,
            addr: route,
            at: now,
            kind: PathEventKind::AuthFailure { failures },
        });
        self.apply_verdicts(now, verdicts);
    }

    fn apply_verdicts(&mut self, now: Instant, verdicts: impl IntoIterator<Item = Verdict>) {
        for v in verdicts {
            match v {
                Verdict::Keep => {}
                Verdict::DropForPeer { relay, peer } => {
                    tracing::info!(
                        ?relay,
                        ?peer,
                        "relay tampered with a peer's packets: dropped for that peer"
                    );
                    let evs = self
                        .pool
                        .relay_lost(now, Some(peer), relay, LossReason::Tampering);
                    self.apply_pool(now, evs);
                }
                Verdict::SelfProbe { relay } => self.start_self_probe(now, relay),
                Verdict::Disconnect { relay, reason } => self.disconnect_relay(now, relay, reason),
            }
        }
    }

    /// Self-probes `relay` at our own address for it, or where our link to
    /// it is up — never at an address only a friend named.
    fn start_self_probe(&mut self, now: Instant, relay: PublicKey) {
        let Some(addr) = self.pool.probe_addr(&relay) else {
            tracing::debug!(?relay, "no address of our own to self-probe");
            self.blame.probe_not_started(&relay);
            return;
        };
        if !self.relays.relays().any(|r| *r == relay) {
            self.relays.add_relay(now, relay, addr);
        }
        if self.prober.start(now, relay, addr, &mut self.relays) {
            self.stats.self_probes += 1;
            self.push_relay_event(RelayEvent::ProbeStarted { relay });
        } else {
            self.blame.probe_not_started(&relay);
        }
    }

    fn disconnect_relay(&mut self, now: Instant, relay: PublicKey, reason: DisconnectReason) {
        tracing::warn!(?relay, ?reason, "relay disconnected for everyone");
        let evs = self
            .pool
            .relay_lost(now, None, relay, LossReason::Disconnected);
        self.apply_pool(now, evs);
        self.relays.remove_relay(&relay);
        self.push_relay_event(RelayEvent::Disconnected { relay, reason });
    }

    /// Carries out what the relay pool decided.
    fn apply_pool(&mut self, now: Instant, evs: Vec<PoolEvent>) {
        for ev in evs {
            match ev {
                PoolEvent::Use { peer, relay } => {
                    let Some(dht) = self.peers.get(&peer).map(|p| p.dht) else {
                        continue;
                    };
                    // Adds the link, or sets the address its next attempt
                    // dials (the pool's: ours, or the friend's whose set
                    // this is, never moved while the link is open).
                    self.relays.add_relay(now, relay.public_key, relay.addr);
                    if let Err(e) = self.relays.tie(dht, &relay.public_key) {
                        tracing::debug!(relay = ?relay.public_key, error = ?e, "cannot route to the peer yet");
                    }
                    let route = Route::Relay {
                        relay: relay.public_key,
                        peer: dht,
                    };
                    self.add_route(peer, route, false);
                    self.push_path_event(PathEvent {
                        peer,
                        addr: route,
                        at: now,
                        kind: PathEventKind::RelayAdded,
                    });
                }
                PoolEvent::Drop {
                    peer,
                    relay,
                    reason,
                } => {
                    self.stats.relays_dropped += 1;
                    let Some(dht) = self.peers.get(&peer).map(|p| p.dht) else {
                        continue;
                    };
                    self.relays.untie(&dht, &relay);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.paths.dead_relays.retain(|(r, _)| *r != relay);
                    }
                    let route = Route::Relay { relay, peer: dht };
                    self.remove_route(now, peer, route);
                    self.push_path_event(PathEvent {
                        peer,
                        addr: route,
                        at: now,
                        kind: PathEventKind::RelayDropped { reason },
                    });
                }
                PoolEvent::Relink { relay } => {
                    if self.relays.relays().any(|r| *r == relay.public_key) {
                        self.relays.add_relay(now, relay.public_key, relay.addr);
                    }
                }
                PoolEvent::Close { relay } => {
                    // A running self-probe keeps the link until it ends
                    // (closed then, see `pump_relays`).
                    if !self.prober.is_running(&relay) {
                        self.relays.remove_relay(&relay);
                    }
                }
            }
        }
    }

    /// Learns a relay of our own (configuration, the application): peers
    /// with fewer relays than the target start using it. This address is
    /// the one we reach the relay at; only our own word changes it (a
    /// friend's goes through [`Node::add_friend_relay`]).
    pub fn add_relay(&mut self, now: Instant, relay: PublicKey, addr: SocketAddr) {
        self.last_now = Some(now);
        let info = RelayInfo {
            addr,
            public_key: relay,
        };
        match self.pool.learn(now, info, Source::Own) {
            Ok(evs) => self.apply_pool(now, evs),
            Err(e) => {
                tracing::debug!(?relay, %addr, error = %e, "relay not learnt");
                return;
            }
        }
        // Connected at once, so that peers on it can reach us (OOB).
        if !self.relays.relays().any(|r| *r == relay) {
            self.relays.add_relay(now, relay, addr);
        }
        for i in 0..self.order.len() {
            let peer = self.order[i];
            let evs = self.pool.refill(now, peer);
            self.apply_pool(now, evs);
        }
    }

    /// Learns a relay `friend` (its real key) named in SHARE_RELAYS: kept as
    /// that friend's word, used for that friend's connection only (until our
    /// own link to it has worked for a while), never changing how we reach a
    /// relay we know otherwise nor where a self-probe goes (see
    /// [`RelayPool`]). Only a friend that is online should be heard.
    pub fn add_friend_relay(
        &mut self,
        now: Instant,
        friend: PublicKey,
        relay: PublicKey,
        addr: SocketAddr,
    ) -> Result<(), LearnError> {
        self.last_now = Some(now);
        let info = RelayInfo {
            addr,
            public_key: relay,
        };
        let evs = self.pool.learn(now, info, Source::Friend(friend))?;
        self.apply_pool(now, evs);
        let evs = self.pool.refill(now, friend);
        self.apply_pool(now, evs);
        Ok(())
    }

    /// The relay pool (known relays, relays in use per peer).
    pub fn relay_pool(&self) -> &RelayPool {
        &self.pool
    }

    /// The relay links (state, RTT, counters per relay).
    pub fn relay_set(&self) -> &RelaySet {
        &self.relays
    }

    /// The blame ledger.
    pub fn blame(&self) -> &BlameLedger {
        &self.blame
    }

    fn set_of(&mut self, link: &LinkId) -> &mut RelaySet {
        if link.probe {
            &mut self.prober.set
        } else {
            &mut self.relays
        }
    }

    /// A relay TCP connection to open.
    pub fn poll_relay_connect(&mut self) -> Option<(LinkId, SocketAddr)> {
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
    pub fn poll_relay_close(&mut self) -> Option<LinkId> {
        if let Some(socket) = self.relays.poll_close() {
            return Some(LinkId::new(socket, false));
        }
        self.prober
            .set
            .poll_close()
            .map(|socket| LinkId::new(socket, true))
    }

    /// The TCP connection of `link` is up (the relay handshake starts).
    pub fn relay_connected(&mut self, now: Instant, link: LinkId) {
        self.last_now = Some(now);
        let mut rng = ChaCha20Rng::from_seed({
            let mut s = [0u8; 32];
            self.rng.fill_bytes(&mut s);
            s
        });
        self.set_of(&link)
            .handle_connected(now, &link.socket(), &mut rng);
    }

    /// The TCP connection of `link` could not be opened.
    pub fn relay_connect_failed(&mut self, now: Instant, link: LinkId) {
        self.last_now = Some(now);
        self.set_of(&link)
            .handle_connect_failed(now, &link.socket());
        self.pump_relays(now);
    }

    /// Bytes read from `link`'s socket.
    pub fn relay_bytes(&mut self, now: Instant, link: LinkId, bytes: &mut [u8]) {
        self.last_now = Some(now);
        self.set_of(&link).handle_bytes(now, &link.socket(), bytes);
        self.pump_relays(now);
    }

    /// `link`'s socket closed.
    pub fn relay_closed(&mut self, now: Instant, link: LinkId) {
        self.last_now = Some(now);
        self.set_of(&link).handle_closed(now, &link.socket());
        self.pump_relays(now);
    }

    /// Whether `link` has bytes to write.
    pub fn relay_has_output(&self, link: &LinkId) -> bool {
        if link.probe {
            self.prober.set.has_output(&link.socket())
        } else {
            self.relays.has_output(&link.socket())
        }
    }

    /// Appends at most about `limit` bytes of `link`'s output to `out`.
    pub fn relay_drain(&mut self, link: &LinkId, out: &mut Vec<u8>, limit: usize) -> usize {
        self.set_of(link).drain_into(&link.socket(), out, limit)
    }

    /// Sends `data` to `peer` (DHT key) through `relay`: DATA when the peer
    /// is ONLINE there, else OOB if it fits (§3).
    fn relay_send(&mut self, relay: PublicKey, peer: PublicKey, data: &[u8]) -> bool {
        let r = if self.relays.peer_state(&peer, &relay) == Some(PeerRelayState::Online) {
            self.relays.send_data(&relay, &peer, data)
        } else if data.len() <= MAX_OOB_DATA {
            self.relays.send_oob(&relay, &peer, data)
        } else {
            self.stats.relay_refused += 1;
            return false;
        };
        match r {
            Ok(()) => {
                self.stats.relay_sent += 1;
                true
            }
            Err(e) => {
                tracing::trace!(?relay, error = ?e, "relay refused a packet");
                self.stats.relay_refused += 1;
                false
            }
        }
    }

    /// Handles the relay sets' events: packets to the sessions, route and
    /// link changes to the path tables and the pool, self-probe results.
    fn pump_relays(&mut self, now: Instant) {
        // Handling events can cause more (ties, drops); a few rounds settle.
        for _ in 0..4 {
            let evs = drain_set(&mut self.relays);
            if evs.is_empty() {
                break;
            }
            self.handle_relay_events(now, evs);
        }
        self.prober.pump(now, &mut self.relays);
        while let Some(o) = self.prober.poll_outcome() {
            self.push_relay_event(RelayEvent::Probed(o));
            let v = self.blame.on_self_probe(now, o.relay, o.ok);
            if o.ok {
                // Proven good: other peers may use it again at once.
                self.pool.relay_back(&o.relay);
            }
            self.apply_verdicts(now, [v]);
            if !self.pool.is_linked(&o.relay) {
                // Closed by the pool while the probe ran.
                self.relays.remove_relay(&o.relay);
            }
        }
    }

    fn handle_relay_events(&mut self, now: Instant, evs: Vec<RelaySetEvent>) {
        for ev in evs {
            match ev {
                RelaySetEvent::Data {
                    relay,
                    peer,
                    mut data,
                } => {
                    if self.prober.is_probe_peer(&peer) {
                        self.prober.on_main_data(&relay, &data);
                    } else {
                        let _ = self.on_packet(now, Route::Relay { relay, peer }, &mut data);
                    }
                }
                RelaySetEvent::Oob {
                    relay,
                    from,
                    mut data,
                } => {
                    let _ = self.on_packet(now, Route::Relay { relay, peer: from }, &mut data);
                }
                RelaySetEvent::PeerState { peer, relay, state } => {
                    if self.prober.is_probe_peer(&peer) {
                        self.prober
                            .on_main_state(now, &relay, state, &mut self.relays);
                        continue;
                    }
                    self.on_peer_relay_state(now, relay, peer, state);
                    if state != PeerRelayState::None {
                        self.resend_handshakes_on(relay, Some(peer));
                    }
                }
                RelaySetEvent::RelayUp { relay } => {
                    self.pool.link_up(now, &relay);
                    self.push_relay_event(RelayEvent::Up { relay });
                    self.resend_handshakes_on(relay, None);
                    for i in 0..self.order.len() {
                        let peer = self.order[i];
                        let evs = self.pool.refill(now, peer);
                        self.apply_pool(now, evs);
                    }
                }
                RelaySetEvent::RelayDown { relay, .. } => {
                    self.push_relay_event(RelayEvent::Down { relay });
                    let evs = self.pool.relay_lost(now, None, relay, LossReason::Offline);
                    self.apply_pool(now, evs);
                }
                RelaySetEvent::RouteRefused { peer, relay } => {
                    let route = Route::Relay { relay, peer };
                    if let Some(real) = self.by_route.get(&route).copied() {
                        let evs = self
                            .pool
                            .relay_lost(now, Some(real), relay, LossReason::Offline);
                        self.apply_pool(now, evs);
                    }
                }
                RelaySetEvent::Rtt { .. } => {}
            }
        }
    }

    /// The peer's state on a relay changed: ONLINE makes the route a path
    /// (re-opened if it was closed), anything else closes it.
    fn on_peer_relay_state(
        &mut self,
        now: Instant,
        relay: PublicKey,
        peer_dht: PublicKey,
        state: PeerRelayState,
    ) {
        let route = Route::Relay {
            relay,
            peer: peer_dht,
        };
        let Some(real) = self.by_route.get(&route).copied() else {
            return;
        };
        let key = PathKey::Relay(relay);
        let mut left = false;
        if let Some(p) = self.peers.get_mut(&real) {
            if state == PeerRelayState::Online {
                p.paths.table_mut().add_path(key);
            } else {
                left = state == PeerRelayState::Registered
                    && p.paths
                        .table
                        .path(&key)
                        .is_some_and(|e| !e.health().is_closed());
                p.paths.table_mut().on_closed(now, &key);
            }
        }
        self.path_changes(now, real);
        if state == PeerRelayState::Online {
            self.pool.peer_returned(&real, &relay);
        } else if left {
            // The peer left a relay that is still up for us (its link broke,
            // e.g. a NAT rebinding, or it dropped the relay): the route stays
            // tied, so the path comes back the moment the peer does (a
            // c-toxcore peer re-routes now and then too), and a spare relay,
            // if one is known, keeps the peer's redundancy meanwhile.
            let evs = self.pool.peer_left(now, real, relay);
            self.apply_pool(now, evs);
        }
    }

    /// Demotes relays far slower than the peer's best one, and relays that
    /// deliver nothing for the peer while their link stays up (through the
    /// pool's one replacement path).
    fn check_slow_relays(&mut self, now: Instant) {
        if self
            .last_slow_check
            .is_some_and(|t| now.saturating_duration_since(t) < SLOW_CHECK)
        {
            return;
        }
        self.last_slow_check = Some(now);
        for i in 0..self.order.len() {
            let peer = self.order[i];
            self.check_dead_relays(now, peer);
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let rtts: Vec<(PublicKey, Duration)> = p
                .paths
                .table
                .paths()
                .filter(|e| !e.health().is_closed())
                .filter_map(|e| Some((*e.key().relay()?, e.health().rtt().srtt()?)))
                .collect();
            if rtts.len() < 2 {
                continue;
            }
            let evs = self.pool.observe_rtts(now, peer, &rtts);
            self.apply_pool(now, evs);
        }
    }

    /// A relay path without proof for [`RELAY_DEAD_FOR`] while its relay link is up
    /// and not being verified (so the relay answers PINGs but delivers
    /// nothing for this peer — data was outstanding, or the path would not
    /// be dead) loses the relay for the peer, when a spare can replace it.
    fn check_dead_relays(&mut self, now: Instant, peer: PublicKey) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if !self.pool.has_spare(now, &peer) {
            return;
        }
        let gone: Vec<PublicKey> = p
            .paths
            .dead_relays
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(*since) >= RELAY_DEAD_FOR)
            .map(|(r, _)| *r)
            .filter(|r| {
                self.relays.relay_state(r) == Some(RelayLinkState::Connected)
                    && !self.relays.verifying(r)
            })
            .collect();
        for relay in gone {
            tracing::debug!(
                ?peer,
                ?relay,
                "relay delivers nothing for the peer: replaced"
            );
            if let Some(p) = self.peers.get_mut(&peer) {
                p.paths.dead_relays.retain(|(r, _)| *r != relay);
            }
            let evs = self
                .pool
                .relay_lost(now, Some(peer), relay, LossReason::Slow);
            self.apply_pool(now, evs);
        }
    }

    fn on_handshake(
        &mut self,
        now: Instant,
        from: Route<A>,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        // Known route: the session validates it (§4.4, known connection).
        if let Some(peer) = self.by_route.get(&from).copied() {
            let path = self.path_of(from);
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.session.state() != State::Closed && p.session.state() != State::Established {
                    return p.session.handle_packet(now, path, buf);
                }
            }
        }
        // Unknown path (§4.4): validate with our cookie key (symmetric), then
        // look up the peer by the real key in the cookie: an allowed peer's
        // key is precomputed, anybody else is refused before any public-key
        // work (accept-all mode: within a rate-limited budget).
        let (real_keys, budget, accept_all) = (
            &self.real_keys,
            &mut self.x25519_budget,
            self.cfg.accept_all,
        );
        let real = &self.id.real;
        let mut key_ops = 0;
        let hs = open_handshake(
            &self.id.cookie_key,
            now,
            None,
            |pk| match real_keys.get(pk) {
                Some(k) => Some(k.clone()),
                None if accept_all && budget.take(now) => {
                    key_ops += 1;
                    Some(real.precompute(pk))
                }
                None => None,
            },
            buf,
        );
        self.stats.handshake_key_ops += key_ops;
        let hs = hs.inspect_err(|_| self.stats.handshakes_refused += 1)?;
        // A handshake through a relay comes from the peer's DHT key (the
        // relay names the sender of OOB and DATA): a relay replaying it under
        // another sender key is not the peer, and must not become a route.
        if let Route::Relay { peer, .. } = from {
            if !peer.ct_eq(&hs.peer_dht) {
                self.stats.handshakes_refused += 1;
                return Err(DropReason::Refused(Refusal::WrongSender));
            }
        }
        // Only an authenticated handshake from a new route earns a path id
        // (so spoofed junk cannot grow the table).
        let path = self.path_of(from);
        // A handshake that came through a relay: route to the peer there.
        if let Route::Relay { relay, peer } = from {
            let _ = self.relays.tie(peer, &relay);
        }
        if let Some(p) = self.peers.get_mut(&hs.peer_real) {
            let state = p.session.state();
            if !hs.peer_dht.ct_eq(&p.dht) || state == State::Closed {
                // Different DHT key (the peer restarted) or a dead session:
                // start over as new (§4.4).
                if state != State::Closed {
                    self.events.push_back(NodeEvent {
                        peer: hs.peer_real,
                        event: Event::Killed,
                    });
                }
                self.remove_peer(&hs.peer_real);
            } else if matches!(state, State::CookieRequesting | State::HandshakeSent) {
                let r = p.session.handle_packet(now, path, buf);
                self.add_route(hs.peer_real, from, true);
                return r;
            } else {
                // NOT_CONFIRMED / ESTABLISHED on another path: a new path for
                // a live session. Accept it as an address only if the session
                // takes the handshake (NOT_CONFIRMED), else drop (§4.4).
                if state == State::NotConfirmed {
                    let r = p.session.handle_packet(now, path, buf);
                    if r.is_ok() {
                        self.add_route(hs.peer_real, from, true);
                    }
                    return r;
                }
                // ESTABLISHED. A handshake with a new session key, authenticated
                // by the peer's long-term key on a fresh cookie, while the old
                // session has been silent for a while, means the peer started
                // over (restart, or it gave up on us): replace the dead
                // session instead of ignoring the peer forever. A replayed
                // handshake of the current session carries the same key and
                // is dropped.
                let silent = p
                    .session
                    .last_authenticated_any()
                    .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_SILENCE);
                let new_key = p.session.peer_session_pk() != Some(&hs.peer_session_pk);
                if !(silent && new_key) {
                    return Err(DropReason::Refused(Refusal::WrongState(state)));
                }
                tracing::debug!(peer = ?hs.peer_real, "peer restarted the connection");
                self.events.push_back(NodeEvent {
                    peer: hs.peer_real,
                    event: Event::Killed,
                });
                self.remove_peer(&hs.peer_real);
            }
        }
        if !self.cfg.accept_all && !self.allowed.contains(&hs.peer_real) {
            self.stats.handshakes_refused += 1;
            return Err(DropReason::Refused(Refusal::NotAllowed));
        }
        let session = Session::accept(now, &mut self.rng, self.cfg.session.clone(), &self.id, &hs);
        self.insert_peer(
            now,
            hs.peer_real,
            Peer {
                session,
                dht: hs.peer_dht,
                routes: vec![from],
                current: 0,
                initiator: false,
                paths: Paths::new(&self.cfg),
            },
        );
        Ok(())
    }

    /// Unties a departing peer from its relays and forgets its routes.
    fn forget_peer_routes(&mut self, real: &PublicKey, p: Peer<A>) {
        let mut untie = Vec::new();
        for r in p.routes {
            if let Route::Relay { relay, peer } = r {
                untie.push((peer, relay));
            }
            if self.by_route.get(&r) == Some(real) {
                self.by_route.remove(&r);
                self.path_ids.remove(&r);
            }
        }
        // The pool's drops are carried out here (the peer entry is gone).
        for relay in self.pool.active(real).to_vec() {
            untie.push((p.dht, relay));
        }
        let _ = self.pool.remove_peer(real);
        // Untied a little later: our last packets (a KILL) may still be on
        // their way through the relay, and the relay would tell the peer
        // that we left ahead of the data it still holds for it.
        for (peer, relay) in untie {
            if self.pending_untie.len() < MAX_PENDING_UNTIE {
                self.pending_untie.push((self.last_now, peer, relay));
            } else {
                self.relays.untie(&peer, &relay);
            }
        }
    }

    /// Unties routes of departed peers once their grace has passed (unless
    /// the peer is back on that relay).
    fn untie_departed(&mut self, now: Instant) {
        let mut keep = Vec::new();
        for (since, peer, relay) in std::mem::take(&mut self.pending_untie) {
            if since.is_some_and(|t| now.saturating_duration_since(t) < UNTIE_GRACE) {
                keep.push((since, peer, relay));
                continue;
            }
            if !self.by_route.contains_key(&Route::Relay { relay, peer }) {
                self.relays.untie(&peer, &relay);
            }
        }
        self.pending_untie = keep;
    }

    fn remove_peer(&mut self, peer: &PublicKey) {
        if let Some(p) = self.peers.remove(peer) {
            self.forget_peer_routes(peer, p);
        }
        self.order.retain(|k| k != peer);
    }

    /// Processes timers of every session and relay link.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.untie_departed(now);
        self.relays.handle_timeout(now);
        self.prober.set.handle_timeout(now);
        self.prober.finish(now, &mut self.relays);
        self.pump_relays(now);
        for p in self.peers.values_mut() {
            if p.session.poll_timeout().is_some_and(|t| t <= now) {
                p.session.handle_timeout(now);
            }
        }
        for i in 0..self.order.len() {
            let k = self.order[i];
            self.path_changes(now, k);
        }
        self.check_slow_relays(now);
        if self.pool.poll_timeout().is_some_and(|t| t <= now) {
            let evs = self.pool.tick(now);
            self.apply_pool(now, evs);
        }
        self.collect_events(now);
    }

    fn collect_events(&mut self, now: Instant) {
        let mut restart = Vec::new();
        let mut dead = Vec::new();
        for k in &self.order {
            let Some(p) = self.peers.get_mut(k) else {
                continue;
            };
            while let Some(e) = p.session.poll_event() {
                match e {
                    Event::HandshakeTimeout if p.initiator => {
                        restart.push((*k, p.dht, p.routes.get(p.current).copied()));
                    }
                    Event::HandshakeTimeout | Event::Killed => {
                        dead.push(*k);
                        self.events.push_back(NodeEvent { peer: *k, event: e });
                    }
                    Event::PeerDhtKeyChanged { dht } if p.initiator => {
                        restart.push((*k, dht, p.routes.get(p.current).copied()));
                    }
                    e => self.events.push_back(NodeEvent { peer: *k, event: e }),
                }
            }
        }
        for k in dead {
            self.remove_peer(&k);
        }
        for (k, dht, r) in restart {
            self.stats.reconnects += 1;
            tracing::debug!(peer = ?k, "handshake timed out, connecting again");
            self.connect_inner(now, k, dht, r);
        }
    }

    /// The earliest timer of any session, relay link or self-probe.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        for p in self.peers.values_mut() {
            let path_t = self.last_now.and_then(|n| p.paths.table.poll_timeout(n));
            let mut session_t = p.session.poll_timeout();
            if p.routes.is_empty() {
                // No route at all (every relay lost, no UDP address): the
                // session's "transmit now" cannot be served, so a timer due
                // already would be asked for again and again at the same
                // instant. Look again a little later (a route coming back
                // is an input of its own).
                if let (Some(s), Some(n)) = (session_t, self.last_now) {
                    if s <= n {
                        session_t = Some(n + ROUTELESS_RETRY);
                    }
                }
            }
            for x in session_t.into_iter().chain(path_t) {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        }
        let slow = (!self.order.is_empty() && self.pool.known().next().is_some())
            .then(|| self.last_slow_check.map(|c| c + SLOW_CHECK))
            .flatten();
        let untie = self
            .pending_untie
            .iter()
            .filter_map(|(since, _, _)| since.map(|t| t + UNTIE_GRACE))
            .min();
        for x in [
            self.relays.poll_timeout(),
            self.prober.poll_timeout(),
            self.pool.poll_timeout(),
            slow,
            untie,
        ]
        .into_iter()
        .flatten()
        {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    /// Writes the next UDP datagram into `buf` (≥ 1400 bytes) and returns its
    /// destination and what it is. Packets for relay routes are handed to
    /// the relay links on the way (see [`Node::relay_has_output`]).
    /// Sessions are served round-robin.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(A, Transmit)> {
        if buf.len() < MAX_PACKET_SIZE {
            return None;
        }
        self.last_now = Some(now);
        if let Some((to, t, data)) = self.copy.take() {
            buf[..t.len].copy_from_slice(&data[..t.len]);
            return Some((to, t));
        }
        while let Some((to, r)) = self.responses.pop_front() {
            let t = Transmit {
                len: COOKIE_RESPONSE_SIZE,
                kind: TransmitKind::CookieResponse,
            };
            match to {
                Route::Udp(a) => {
                    buf[..COOKIE_RESPONSE_SIZE].copy_from_slice(&r);
                    return Some((a, t));
                }
                Route::Relay { relay, peer } => {
                    self.relay_send(relay, peer, &r);
                }
            }
        }
        // Each round either returns a UDP datagram or hands one packet to a
        // relay; bounded so one call cannot spin.
        for _ in 0..4096 {
            let n = self.order.len();
            let mut sent = false;
            for k in 0..n {
                let idx = (self.rr + k) % n;
                let key = self.order[idx];
                let Some(p) = self.peers.get_mut(&key) else {
                    continue;
                };
                let Some(&fallback) = p.routes.get(p.current) else {
                    continue;
                };
                let Some(t) = p.session.poll_transmit(now, buf) else {
                    continue;
                };
                self.rr = (idx + 1) % n.max(1);
                sent = true;
                let (to, second) = self.route(now, key, fallback, t);
                if matches!(
                    t.kind,
                    TransmitKind::CookieRequest | TransmitKind::Handshake
                ) {
                    self.handshake_on_relays(key, to, &buf[..t.len]);
                }
                let mut udp_second = None;
                match second {
                    Some(Route::Relay { relay, peer }) => {
                        self.relay_send(relay, peer, &buf[..t.len]);
                    }
                    Some(Route::Udp(a)) => udp_second = Some(a),
                    None => {}
                }
                match to {
                    Route::Udp(a) => {
                        if let Some(s) = udp_second {
                            let mut data = Box::new([0u8; MAX_PACKET_SIZE]);
                            data[..t.len].copy_from_slice(&buf[..t.len]);
                            self.copy = Some((s, t, data));
                        }
                        return Some((a, t));
                    }
                    Route::Relay { relay, peer } => {
                        self.relay_send(relay, peer, &buf[..t.len]);
                        if let Some(s) = udp_second {
                            return Some((s, t));
                        }
                    }
                }
                break;
            }
            if !sent {
                return None;
            }
        }
        None
    }

    /// Sends the current cookie request or handshake of every peer still
    /// handshaking that has a route through `relay` (the link just came up,
    /// or the peer appeared on it), instead of waiting for the session's 1 s
    /// re-send.
    fn resend_handshakes_on(&mut self, relay: PublicKey, only: Option<PublicKey>) {
        let out: Vec<(PublicKey, Vec<u8>)> = self
            .peers
            .values()
            .filter(|p| only.is_none_or(|o| o == p.dht))
            .filter(|p| p.routes.iter().any(|r| r.relay() == Some(&relay)))
            .filter_map(|p| Some((p.dht, p.session.handshake_packet()?.to_vec())))
            .collect();
        for (dht, pkt) in out {
            self.relay_send(relay, dht, &pkt);
        }
    }

    /// Cookie requests and handshakes also go through every relay of the
    /// peer other than `to` (as OOB until the peer routes to us, §3, §6).
    fn handshake_on_relays(&mut self, peer: PublicKey, to: Route<A>, pkt: &[u8]) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let relays: Vec<Route<A>> = p
            .routes
            .iter()
            .copied()
            .filter(|r| *r != to && matches!(r, Route::Relay { .. }))
            .collect();
        for r in relays {
            if let Route::Relay { relay, peer } = r {
                self.relay_send(relay, peer, pkt);
            }
        }
    }

    /// Where one transmit of `peer` goes: the scheduler's primary (and a copy
    /// on its secondary) for data, a probe path alone for some new lossless
    /// packets, the handshake-phase route otherwise. Records lossless
    /// copies in the path table.
    fn route(
        &mut self,
        now: Instant,
        peer: PublicKey,
        fallback: Route<A>,
        t: Transmit,
    ) -> (Route<A>, Option<Route<A>>) {
        let TransmitKind::Data(kind) = t.kind else {
            return (fallback, None);
        };
        let last_key = self
            .path_ids
            .get(&fallback)
            .map(|id| key_of(&fallback, *id));
        let Some(p) = self.peers.get_mut(&peer) else {
            return (fallback, None);
        };
        let choice = p.paths.choose(now);
        let switched = choice.primary.filter(|k| Some(*k) != p.paths.primary);
        let old_primary = p.paths.primary;
        p.paths.primary = choice.primary;
        if switched.is_some() {
            let cap = p.paths.relay_window();
            if cap != p.paths.cap_applied {
                p.paths.cap_applied = cap;
                p.session.set_inflight_cap(cap);
            }
        }
        let (first, second) = match kind {
            DataKind::Lossless {
                number,
                retransmission,
            } => {
                let probe = if retransmission {
                    None
                } else {
                    p.paths.probe_due(now)
                };
                let (first, second) = match probe {
                    Some(k) => {
                        p.paths.probed_at(k, now);
                        self.stats.probes_sent += 1;
                        (Some(k), None)
                    }
                    None => (choice.primary, choice.secondary),
                };
                for k in first.iter().chain(second.iter()) {
                    p.paths.table.on_sent(now, k, number, t.len);
                }
                (first, second)
            }
            // Acknowledgements (request packets) and KILL also go back the
            // way the peer's last authenticated packet came, when that is
            // not the primary: a path that died in our direction only is
            // noticed through lossless traffic, and a side that sends
            // little of it (a receiver) would otherwise acknowledge into
            // the void while the peer's data reaches it on another path.
            DataKind::Request | DataKind::Kill => (
                choice.primary,
                choice
                    .secondary
                    .or(last_key.filter(|k| Some(*k) != choice.primary)),
            ),
            DataKind::Lossy => (choice.primary, None),
        };
        let Some(p) = self.peers.get(&peer) else {
            return (fallback, None);
        };
        let to = first.and_then(|k| self.route_of(p, k)).unwrap_or(fallback);
        let second = second
            .and_then(|k| self.route_of(p, k))
            .filter(|a| *a != to);
        if let DataKind::Lossless { number, .. } = kind {
            // A packet is judged lost by the evidence of the path it went on
            // only: one overtaken by a later packet on a faster path (a UDP
            // path, a probe on another relay) is merely queued (a relay in
            // front of a slow reader queues for seconds).
            if let (Some(id), Some(p)) =
                (self.path_ids.get(&to).copied(), self.peers.get_mut(&peer))
            {
                p.session.on_sent(number, id);
            }
        }
        let Some(p) = self.peers.get(&peer) else {
            return (fallback, None);
        };
        if second.is_some() {
            self.stats.copies_sent += 1;
            self.stats.copy_bytes += t.len as u64;
        }
        if let Some(k) = switched {
            let from = old_primary.and_then(|k| self.route_of(p, k));
            if let Some(addr) = self.route_of(p, k) {
                self.push_path_event(PathEvent {
                    peer,
                    addr,
                    at: now,
                    kind: PathEventKind::Primary { from },
                });
            }
        }
        (to, second)
    }

    /// The next event of any peer (data in order per peer).
    pub fn poll_event(&mut self, now: Instant) -> Option<NodeEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.collect_events(now);
        self.events.pop_front()
    }

    /// Queues lossless data to `peer` (see [`Session::send_lossless`]).
    pub fn send_lossless(
        &mut self,
        now: Instant,
        peer: &PublicKey,
        data: &[u8],
    ) -> Result<u32, SendError> {
        let p = self.peers.get_mut(peer).ok_or(SendError::Closed)?;
        p.session.send_lossless(now, data)
    }

    /// Queues lossy data to `peer` (see [`Session::send_lossy`]).
    pub fn send_lossy(
        &mut self,
        now: Instant,
        peer: &PublicKey,
        data: &[u8],
    ) -> Result<(), SendError> {
        let p = self.peers.get_mut(peer).ok_or(SendError::Closed)?;
        p.session.send_lossy(now, data)
    }

    /// Free send-buffer slots towards `peer`.
    pub fn send_buffer_free(&self, peer: &PublicKey) -> u32 {
        self.peers
            .get(peer)
            .map_or(0, |p| p.session.send_buffer_free())
    }

    /// Closes the connection to `peer` (one KILL goes out); the session is
    /// removed once the KILL was sent.
    pub fn close(&mut self, now: Instant, peer: &PublicKey) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.session.kill(now);
            p.initiator = false;
        }
    }

    /// Removes sessions that are closed and have nothing left to send.
    pub fn reap(&mut self) {
        let dead: Vec<PublicKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.remove_peer(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TransmitKind;
    use rand_chacha::ChaCha20Rng;
    use std::time::Duration;

    fn node(seed: u64, now: Instant) -> Node<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let real = KeyPair::generate(&mut rng);
        Node::new(now, &mut rng, real, NodeConfig::default())
    }

    /// Moves datagrams between node 1 and node 2 (addresses 1 and 2) until
    /// nothing is left, for at most `rounds` rounds; `drop_to_2` discards
    /// everything addressed to node 2.
    fn exchange(a: &mut Node<u8>, b: &mut Node<u8>, now: Instant, drop_to_2: bool) {
        let mut buf = [0u8; MAX_PACKET_SIZE];
        for _ in 0..20 {
            let mut moved = false;
            while let Some((to, t)) = a.poll_transmit(now, &mut buf) {
                assert_eq!(to, 2);
                moved = true;
                if !drop_to_2 {
                    let _ = b.handle_datagram(now, 1, &mut buf[..t.len]);
                }
            }
            while let Some((to, t)) = b.poll_transmit(now, &mut buf) {
                assert_eq!(to, 1);
                moved = true;
                let _ = a.handle_datagram(now, 2, &mut buf[..t.len]);
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn connects_only_to_allowed_peers() {
        let now = Instant::now();
        let mut a = node(1, now);
        let mut b = node(2, now);
        a.connect(now, b.real_pk(), b.dht_pk(), 2);
        exchange(&mut a, &mut b, now, false);
        // b answered the cookie request (anybody gets one) but refused the
        // handshake of a peer it does not know.
        assert_eq!(b.stats().cookies_sent, 1);
        assert_eq!(b.stats().handshakes_refused, 1);
        assert!(b.session(&a.real_pk()).is_none());
        // Once allowed, the next handshake re-send is accepted.
        b.allow(a.real_pk());
        let later = now + Duration::from_secs(1);
        a.handle_timeout(later);
        exchange(&mut a, &mut b, later, false);
        assert!(a.session(&b.real_pk()).is_some_and(|s| s.is_established()));
        assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
        let ev: Vec<_> = std::iter::from_fn(|| b.poll_event(later)).collect();
        assert!(ev
            .iter()
            .any(|e| e.event == Event::Established && e.peer == a.real_pk()));
        // Data flows through the node API.
        assert_eq!(a.send_lossless(later, &b.real_pk(), &[160, 1]), Ok(0));
        exchange(&mut a, &mut b, later, false);
        let ev: Vec<_> = std::iter::from_fn(|| b.poll_event(later)).collect();
        assert!(ev.iter().any(|e| e.event == Event::Lossless(vec![160, 1])));
    }

    /// Established a → b; returns b's view of a's session key.
    fn established_pair(now: Instant) -> (Node<u8>, Node<u8>, Option<PublicKey>) {
        let mut a = node(6, now);
        let mut b = node(7, now);
        b.allow(a.real_pk());
        a.connect(now, b.real_pk(), b.dht_pk(), 2);
        exchange(&mut a, &mut b, now, false);
        assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
        let key = b
            .session(&a.real_pk())
            .and_then(|s| s.peer_session_pk().copied());
        while b.poll_event(now).is_some() {}
        (a, b, key)
    }

    fn events(n: &mut Node<u8>, now: Instant) -> Vec<Event> {
        std::iter::from_fn(|| n.poll_event(now))
            .map(|e| e.event)
            .collect()
    }

    #[test]
    fn a_restarted_peer_with_a_new_dht_key_replaces_the_session() {
        let now = Instant::now();
        let (a, mut b, old_key) = established_pair(now);
        // New process: same long-term key, new DHT key.
        let real = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(6));
        let mut a2 = Node::new(
            now,
            &mut ChaCha20Rng::seed_from_u64(66),
            real,
            NodeConfig::default(),
        );
        assert_eq!(a2.real_pk(), a.real_pk());
        assert_ne!(a2.dht_pk(), a.dht_pk());
        let soon = now + Duration::from_millis(100);
        a2.connect(soon, b.real_pk(), b.dht_pk(), 2);
        exchange(&mut a2, &mut b, soon, false);
        let ev = events(&mut b, soon);
        assert!(ev.contains(&Event::Killed), "{ev:?}");
        assert!(ev.contains(&Event::Established), "{ev:?}");
        assert!(a2.session(&b.real_pk()).is_some_and(|s| s.is_established()));
        assert_ne!(
            b.session(&a.real_pk())
                .and_then(|s| s.peer_session_pk().copied()),
            old_key
        );
    }

    #[test]
    fn a_new_session_of_the_same_peer_replaces_a_silent_one_only() {
        let now = Instant::now();
        let (mut a, mut b, old_key) = established_pair(now);
        // Same process starts a new session (same DHT key, new session key).
        let soon = now + Duration::from_millis(500);
        a.connect(soon, b.real_pk(), b.dht_pk(), 2);
        exchange(&mut a, &mut b, soon, false);
        // Within 2 s of the last packet the old session stays.
        assert_eq!(
            b.session(&a.real_pk())
                .and_then(|s| s.peer_session_pk().copied()),
            old_key
        );
        assert!(events(&mut b, soon).is_empty());
        // After 2 s of silence the re-sent handshake takes over.
        let later = now + Duration::from_secs(3);
        a.handle_timeout(later);
        exchange(&mut a, &mut b, later, false);
        let ev = events(&mut b, later);
        assert!(ev.contains(&Event::Killed), "{ev:?}");
        assert!(ev.contains(&Event::Established), "{ev:?}");
        assert!(a.session(&b.real_pk()).is_some_and(|s| s.is_established()));
    }

    /// Moves datagrams between a (addresses 1, 11) and b (2, 12); datagrams
    /// to an address in `down` are dropped. Returns the addresses used by a.
    fn exchange2(a: &mut Node<u8>, b: &mut Node<u8>, now: Instant, down: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; MAX_PACKET_SIZE];
        let mut used = Vec::new();
        for _ in 0..50 {
            let mut moved = false;
            while let Some((to, t)) = a.poll_transmit(now, &mut buf) {
                moved = true;
                used.push(to);
                if !down.contains(&to) {
                    let _ = b.handle_datagram(now, to - 1, &mut buf[..t.len]);
                }
            }
            while let Some((to, t)) = b.poll_transmit(now, &mut buf) {
                moved = true;
                if !down.contains(&to) {
                    let _ = a.handle_datagram(now, to + 1, &mut buf[..t.len]);
                }
            }
            if !moved {
                break;
            }
        }
        used
    }

    #[test]
    fn a_closed_path_hands_its_packets_to_the_other_one() {
        let now = Instant::now();
        let (mut a, mut b, _) = established_pair(now);
        let (pa, pb) = (a.real_pk(), b.real_pk());
        assert!(a.add_path(now, &pb, 12));
        assert!(b.add_path(now, &pa, 11));
        assert!(!a.add_path(now, &PublicKey([9; 32]), 13), "no session");
        // Traffic proves both paths (probes go on each alone).
        let mut t = now;
        let mut n = 0u8;
        for _ in 0..20 {
            t += Duration::from_millis(50);
            a.handle_timeout(t);
            b.handle_timeout(t);
            a.send_lossless(t, &pb, &[160, n]).unwrap();
            n += 1;
            exchange2(&mut a, &mut b, t, &[]);
        }
        let table = a.path_table(&pb).unwrap();
        assert_eq!(table.paths().count(), 2);
        assert!(
            table.paths().all(|p| p.state() == Health::Healthy),
            "{:?}",
            table.paths().map(|p| p.state()).collect::<Vec<_>>()
        );
        while a.poll_path_event().is_some() {}
        // Packets in flight on address 2 when it goes down and is reported
        // closed: resent at once on 12, delivered in order.
        t += Duration::from_millis(50);
        for _ in 0..5 {
            a.send_lossless(t, &pb, &[160, n]).unwrap();
            n += 1;
        }
        let used = exchange2(&mut a, &mut b, t, &[2, 12]);
        assert!(!used.is_empty());
        a.path_closed(t, 2);
        let ev: Vec<_> = std::iter::from_fn(|| a.poll_path_event()).collect();
        assert!(
            ev.iter().any(|e| e.addr == Route::Udp(2)
                && matches!(
                    e.kind,
                    PathEventKind::Health {
                        new: Health::Dead,
                        reason: PathReason::Closed,
                        ..
                    }
                )),
            "{ev:?}"
        );
        let used = exchange2(&mut a, &mut b, t, &[2]);
        assert!(used.iter().all(|&x| x == 12), "{used:?}");
        assert!(used.len() >= 5, "stranded packets resent at once: {used:?}");
        let got: Vec<u8> = std::iter::from_fn(|| b.poll_event(t))
            .filter_map(|e| match e.event {
                Event::Lossless(d) => d.get(1).copied(),
                _ => None,
            })
            .collect();
        assert_eq!(got, (0..n).collect::<Vec<u8>>(), "all, in order");
        let ev: Vec<_> = std::iter::from_fn(|| a.poll_path_event()).collect();
        assert!(
            ev.iter().any(|e| e.addr == Route::Udp(12)
                && e.kind
                    == PathEventKind::Primary {
                        from: Some(Route::Udp(2))
                    }),
            "{ev:?}"
        );
    }

    #[test]
    fn a_peer_without_any_route_asks_for_no_timer_in_the_past() {
        let now = Instant::now();
        let mut a = node(1, now);
        let b = node(2, now);
        // No relay known, no UDP address: the session has nowhere to send.
        a.connect_via_relays(now, b.real_pk(), b.dht_pk());
        let mut buf = vec![0u8; MAX_PACKET_SIZE];
        let mut t = now;
        for _ in 0..20 {
            a.handle_timeout(t);
            while a.poll_transmit(t, &mut buf).is_some() {}
            let next = a.poll_timeout().expect("the session keeps a timer");
            assert!(next > t, "timer {next:?} is not after {t:?}");
            t = next;
        }
    }

    #[test]
    fn acknowledgements_also_go_back_the_way_the_peers_data_came() {
        let now = Instant::now();
        let mut a = node(6, now);
        // No redundant copies at B (they would hide the point).
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let real = KeyPair::generate(&mut rng);
        let cfg = NodeConfig {
            scheduler: SchedulerConfig {
                redundancy_window: Duration::ZERO,
                ..SchedulerConfig::default()
            },
            ..NodeConfig::default()
        };
        let mut b = Node::new(now, &mut rng, real, cfg);
        b.allow(a.real_pk());
        a.connect(now, b.real_pk(), b.dht_pk(), 2);
        exchange(&mut a, &mut b, now, false);
        let pa = a.real_pk();
        let pb = b.real_pk();
        // B's lossless packets prove address 1: it is B's primary.
        let mut t = now;
        for n in 0..5u8 {
            t += Duration::from_millis(20);
            b.send_lossless(t, &pa, &[160, n]).unwrap();
            exchange(&mut a, &mut b, t, false);
        }
        assert!(b.add_path(t, &pa, 11));
        assert!(matches!(b.primary(&pa), Some(PathKey::Udp(_))));
        // A's data reaches B from address 11 only (its address 1 is dead in
        // A's direction); B must acknowledge through 11 too.
        let mut buf = [0u8; MAX_PACKET_SIZE];
        let mut to_b = Vec::new();
        let mut dests = Vec::new();
        for n in 0..10u8 {
            t += Duration::from_millis(20);
            a.handle_timeout(t);
            b.handle_timeout(t);
            a.send_lossless(t, &pb, &[160, n]).unwrap();
            while let Some((_, tr)) = a.poll_transmit(t, &mut buf) {
                to_b.push(buf[..tr.len].to_vec());
            }
            for mut d in to_b.drain(..) {
                let _ = b.handle_datagram(t, 11, &mut d);
            }
            while let Some((to, tr)) = b.poll_transmit(t, &mut buf) {
                if tr.kind == TransmitKind::Data(DataKind::Request) {
                    dests.push(to);
                }
            }
        }
        assert!(dests.contains(&11), "request packets went to {dests:?}");
    }

    #[test]
    fn drops_data_from_unknown_addresses() {
        let now = Instant::now();
        let mut b = node(3, now);
        let mut junk = [0x1bu8; 100];
        assert!(b.handle_datagram(now, 9, &mut junk).is_err());
        let mut junk = [0x19u8; 161];
        assert!(b.handle_datagram(now, 9, &mut junk).is_err());
        assert_eq!(b.stats().unknown_source, 2);
        let mut buf = [0u8; MAX_PACKET_SIZE];
        assert!(b.poll_transmit(now, &mut buf).is_none());
    }

    #[test]
    fn initiator_restarts_after_a_handshake_timeout() {
        let now = Instant::now();
        let mut a = node(4, now);
        let b = node(5, now);
        a.connect(now, b.real_pk(), b.dht_pk(), 2);
        let mut buf = [0u8; MAX_PACKET_SIZE];
        let mut t = now;
        let mut cookie_requests = 0;
        for _ in 0..40 {
            while let Some((_, tx)) = a.poll_transmit(t, &mut buf) {
                assert_eq!(tx.kind, TransmitKind::CookieRequest);
                cookie_requests += 1;
            }
            t += Duration::from_millis(500);
            a.handle_timeout(t);
            assert!(a.poll_event(t).is_none(), "no timeout reaches the owner");
        }
        assert!(a.stats().reconnects >= 1);
        assert!(cookie_requests > 8);
        assert!(a.session(&b.real_pk()).is_some());
    }

    /// A relay that replays a peer's handshake as OOB under made-up sender
    /// keys (issue: it evicted the UDP route after 16 replays and the node
    /// never sent over UDP again): the sender must be the handshake's DHT
    /// key, so every replay is dropped, no route or path id is added, and
    /// the UDP route stays — during the handshake and once established.
    #[test]
    fn a_relay_replaying_a_handshake_under_made_up_keys_cannot_evict_the_udp_route() {
        let now = Instant::now();
        let mut a = node(11, now);
        let mut b = node(12, now);
        b.allow(a.real_pk());
        a.connect(now, b.real_pk(), b.dht_pk(), 2);
        // Run the handshake, keeping a's handshake and holding b's answer
        // back so that b stays NOT_CONFIRMED.
        let mut buf = [0u8; MAX_PACKET_SIZE];
        let mut hs = None;
        for _ in 0..4 {
            while let Some((_, t)) = a.poll_transmit(now, &mut buf) {
                if buf[0] == PACKET_HANDSHAKE {
                    hs = Some(buf[..t.len].to_vec());
                }
                let _ = b.handle_datagram(now, 1, &mut buf[..t.len]);
            }
            while let Some((_, t)) = b.poll_transmit(now, &mut buf) {
                if buf[0] != PACKET_HANDSHAKE {
                    let _ = a.handle_datagram(now, 2, &mut buf[..t.len]);
                }
            }
        }
        let hs = hs.expect("a sent its handshake");
        assert_eq!(
            b.session(&a.real_pk()).map(|s| s.state()),
            Some(State::NotConfirmed)
        );
        let relay = PublicKey([0xee; 32]);
        let a_pk = a.real_pk();
        let replay = |b: &mut Node<u8>, n: u8| {
            let ids = b.path_ids.len();
            for i in 0..20u8 {
                let made_up = PublicKey([n ^ i; 32]);
                let mut p = hs.clone();
                let r = b.on_packet(
                    now,
                    Route::Relay {
                        relay,
                        peer: made_up,
                    },
                    &mut p,
                );
                assert!(r.is_err(), "replay {i} accepted");
            }
            assert_eq!(b.path_ids.len(), ids, "replays allocated path ids");
            let routes = &b.peers[&a_pk].routes;
            assert_eq!(routes, &vec![Route::Udp(1)], "{routes:?}");
        };
        replay(&mut b, 0x10);
        // Established, the same.
        let later = now + Duration::from_secs(1);
        a.handle_timeout(later);
        b.handle_timeout(later);
        exchange(&mut a, &mut b, later, false);
        assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
        replay(&mut b, 0x40);
        // And b still sends to a over UDP.
        assert!(b.send_lossless(later, &a.real_pk(), &[160, 7]).is_ok());
        let mut sent_udp = false;
        while let Some((to, _)) = b.poll_transmit(later, &mut buf) {
            sent_udp |= to == 1;
        }
        assert!(sent_udp);
    }
}
