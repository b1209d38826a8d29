//! The sans-IO endpoint (docs/DESIGN.md §2 "node"): owns our keys, the stateless
//! cookie responder, one [`Session`] per peer (by real public key), the relay
//! links shared by all peers ([`RelaySet`]), the relay pool, the blame ledger
//! and the self-prober; maps every incoming packet to its owner and gathers
//! every outgoing one.
//!
//! The address type `A` is whatever the owner uses to name a UDP address (a
//! `SocketAddr` in the tokio runtime, a small id in the simulator). A path of
//! a peer is a [`Route`]: a UDP address, or a relay through which both sides
//! route to each other (docs/PROTOCOL.md §3). Each route becomes a [`PathId`] of
//! the session and a [`PathKey`] of its path table.
//!
//! Multipath (docs/DESIGN.md §3): each session has a [`PathTable`] and a
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
//! Relays (docs/DESIGN.md §3): the [`RelayPool`] keeps a target number of relays
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
//! The owner drives the node through one I/O contract ([`io`]): every input
//! goes through [`Node::handle`] ([`Input`]: datagrams, relay-link progress,
//! timeouts), and it takes out UDP datagrams ([`Node::poll_transmit`]),
//! relay sockets to open or close ([`Node::poll_link`]), the bytes each link
//! writes ([`Node::drain_link`]), events and the next timeout.
//!
//! Layout, one job per file: [`io`] (the contract), `admission` (cookie
//! responder, allow-list, handshakes on unknown routes, dispatch of every
//! packet), `peer` (one peer's multipath state and where each transmit
//! goes), `relays` (relay links, pool, blame, self-probes and the glue that
//! turns their decisions into routes), `routes` (route identity: the
//! [`Route`]s, [`LinkId`]s and the route book that gives each route its one
//! [`PathId`]), `events` (what the owner is told), [`probe`] (the
//! self-prober); this file is the facade (configuration, counters, the
//! public verbs).
//!
//! Rules (docs/PROTOCOL.md §4.3, §4.4, §6):
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

mod addr;
mod admission;
mod discovery;
mod events;
pub mod io;
mod peer;
pub mod probe;
mod relays;
mod routes;

use crate::timer::{Timer, TimerTable};
pub use crate::wire::path_control::EndpointKind;
pub use addr::Addr;
use admission::{X25519_BURST, X25519_PER_SEC};
use discovery::state::{PUNCH_BURST, PUNCH_PER_SEC, ROAM_BURST, ROAM_PER_SEC};
use discovery::{Discovery, LocalEndpoints};
pub use events::{NodeEvent, PathEvent, PathEventKind, PathReason, RelayEvent};
pub use io::{Input, LinkOutput};
use peer::{Paths, Peer, ROUTELESS_RETRY};
use routes::RouteBook;
pub use routes::{LinkId, Route};

use crate::crypto::{KeyPair, PublicKey, SharedKey};
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
use probe::{ProbeOutcome, SelfProber};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The node's own deadlines (sessions, path tables, relay links, the pool
/// and the prober keep theirs; [`Node::poll_timeout`] is the earliest of
/// all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeTimer {
    /// The next comparison of relay RTTs and check for relays that deliver
    /// nothing (every `SLOW_CHECK`, once there are peers and relays).
    SlowCheck,
    /// The earliest untie of a departed peer's relay route (`UNTIE_GRACE`
    /// after it left).
    Untie,
}

impl Timer for NodeTimer {
    const ALL: &'static [Self] = &[NodeTimer::SlowCheck, NodeTimer::Untie];
    fn index(self) -> usize {
        self as usize
    }
}

/// Node configuration.
#[derive(Debug, Clone)]
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
    /// Find direct paths by ourselves (`discovery.rs`): advertise our
    /// endpoints to peers, punch theirs, follow a peer that roams. On by
    /// default; off, every direct path is the owner's (`connect` with an
    /// address, `add_path`), as for tests of relay-only connections on one
    /// host.
    pub discover_direct_paths: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            session: SessionConfig::default(),
            cookie: CookieResponderConfig::default(),
            accept_all: false,
            health: HealthConfig::default(),
            scheduler: SchedulerConfig::default(),
            dht_is_real: false,
            relay: RelaySetConfig::default(),
            pool: PoolConfig::default(),
            blame: BlameConfig::default(),
            discover_direct_paths: true,
        }
    }
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
    /// Datagrams to or from a blocked UDP address, dropped.
    pub blocked: u64,
    /// Our endpoint list changed (a new generation).
    pub endpoint_changes: u64,
    /// Endpoint lists sent to peers (path control, lossy).
    pub endpoint_msgs_sent: u64,
    /// Endpoint lists received from peers.
    pub endpoint_lists_received: u64,
    /// Path control packets that did not parse.
    pub control_malformed: u64,
    /// Path challenges sent to candidate endpoints.
    pub challenges_sent: u64,
    /// Path challenges received (and answered, within bounds).
    pub challenges_received: u64,
    /// Answers to challenges sent.
    pub responses_sent: u64,
    /// Answers to our challenges received: paths proven both ways.
    pub responses_received: u64,
    /// Candidates given up after every challenge went unanswered.
    pub candidates_given_up: u64,
    /// Data packets from unknown addresses that authenticated under a
    /// session: the peer roamed, the address became a route.
    pub roamed: u64,
    /// Packets from unknown addresses not tried because the roaming budget
    /// was spent.
    pub roam_budget_exhausted: u64,
    /// Direct routes left because the peer stopped advertising them (and
    /// nothing came from them for a moment).
    pub routes_withdrawn: u64,
    /// Direct routes left because the peer roamed away from them.
    pub routes_left_after_roaming: u64,
    /// Challenges not sent (yet) because the node's challenge budget was
    /// spent.
    pub punch_budget_exhausted: u64,
    /// Trial decryptions of packets from unknown addresses (at most
    /// `ROAM_PER_SEC` a second, after a burst).
    pub roam_trials: u64,
}

/// The sans-IO endpoint. See the module documentation.
pub struct Node<A> {
    cfg: NodeConfig,
    id: Identity,
    rng: ChaCha20Rng,
    responder: CookieResponder,
    peers: HashMap<PublicKey, Peer<A>>,
    /// Every route's path id and owner (see [`RouteBook`]).
    book: RouteBook<A>,
    /// UDP addresses the owner blocked ([`Node::set_udp_blocked`]).
    blocked: HashSet<A>,
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
    /// The node's own timers (each component keeps its own table).
    timers: TimerTable<NodeTimer, { NodeTimer::ALL.len() }>,
    /// Relay routes of departed peers, untied after [`UNTIE_GRACE`]:
    /// (since, peer DHT key, relay).
    pending_untie: Vec<(Option<Instant>, PublicKey, PublicKey)>,
    /// Our candidate endpoints (discovery.rs).
    local: LocalEndpoints,
    /// Trial decryptions for packets from unknown addresses.
    roam_budget: TokenBucket,
    /// Challenges to candidate endpoints.
    punch_budget: TokenBucket,
    /// Path control output may be due at once.
    control_pending: bool,
    /// The earliest discovery deadline seen at the last scan.
    control_at: Option<Instant>,
}

impl<A> Debug for Node<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("real", &self.id.real.public)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<A: Addr> Node<A> {
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
            book: RouteBook::new(),
            blocked: HashSet::new(),
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
            timers: TimerTable::new(),
            pending_untie: Vec::new(),
            local: LocalEndpoints::default(),
            roam_budget: TokenBucket::new(ROAM_PER_SEC, ROAM_BURST),
            punch_budget: TokenBucket::new(PUNCH_PER_SEC, PUNCH_BURST),
            control_pending: false,
            control_at: None,
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

    /// The path table of the session with `peer` (per-path bytes, health).
    pub fn path_table(&self, peer: &PublicKey) -> Option<&PathTable> {
        self.peers.get(peer).map(|p| &p.paths.table)
    }

    /// The current primary path of `peer`, if one was chosen: its real
    /// address, or the relay.
    pub fn primary(&self, peer: &PublicKey) -> Option<Route<A>> {
        let p = self.peers.get(peer)?;
        self.route_of(p, p.paths.primary?)
    }

    /// The route a path key of `peer`'s path table stands for (the real
    /// address of a direct path).
    pub fn route(&self, peer: &PublicKey, key: PathKey) -> Option<Route<A>> {
        self.route_of(self.peers.get(peer)?, key)
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
                discovery: Discovery::new(),
            },
        );
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

    fn remove_peer(&mut self, peer: &PublicKey) {
        if let Some(p) = self.peers.remove(peer) {
            self.forget_peer_routes(peer, p);
        }
        self.order.retain(|k| k != peer);
    }

    /// Processes timers of every session and relay link.
    fn on_timeout(&mut self, now: Instant) {
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
            .then(|| self.timers.get(NodeTimer::SlowCheck))
            .flatten();
        let untie = self.timers.get(NodeTimer::Untie);
        for x in [
            self.discovery_timeout(),
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

    /// Writes the next UDP datagram into `buf` (at least
    /// [`MAX_PACKET_SIZE`] bytes) and returns its destination and what it
    /// is. Sessions are served round-robin; packets bound for a relay go to
    /// their link's queue on the way ([`Node::link_has_output`]). Datagrams
    /// to a blocked address are dropped here. When nothing is left, closed
    /// sessions that sent everything are removed.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(A, Transmit)> {
        // Each turn takes one packet off a session: bounded.
        for _ in 0..4096 {
            match self.next_transmit(now, buf) {
                Some((to, _)) if self.blocked.contains(&to) => self.stats.blocked += 1,
                Some(out) => return Some(out),
                None => break,
            }
        }
        self.reap();
        None
    }

    /// Removes sessions that are closed and have nothing left to send.
    fn reap(&mut self) {
        if !self.peers.values().any(|p| p.session.is_closed()) {
            return;
        }
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
mod tests;
