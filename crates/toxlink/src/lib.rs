//! tokio runtime for toxlink: a [`Node`] bound to one UDP socket (IPv4 or
//! IPv6) driving the sans-IO [`toxlink_proto::node::Node`], and
//! [`Connection`]s to peers with `send_lossless`, `send_lossy`, `recv` and
//! `close`. [`Friend`] runs the Tox friend protocol (ONLINE, ALIVE, messages,
//! custom packets; docs/PROTOCOL.md §7) on top of a connection.
//!
//! One driver task per node owns the socket and the protocol state (behind a
//! short-held mutex shared with the connection handles). It reads datagrams in
//! batches, feeds them to the core, writes everything the core wants to send,
//! dispatches events to the connections and sleeps until the next datagram,
//! timer or API call. The core never sees a clock or a socket.
//!
//! The node's relay links are one task each (`links.rs`), driven through the
//! core's I/O contract (`toxlink_proto::node::io`). [`relay`] holds the TCP
//! relay server ([`relay::RelayServer`]), a standalone set of relay client
//! links for tools and tests ([`relay::RelaySetRuntime`]) and the one TCP
//! loop all of them use.
//!
//! Backpressure: [`Connection::send_lossless`] waits while the session's send
//! buffer is full; the driver stops taking received data from the core while a
//! connection's receive queue holds more than [`RECV_QUEUE_LIMIT`] packets, so
//! a slow reader slows the sender instead of growing memory.

#![warn(missing_docs)]

mod endpoints;
mod links;
pub mod relay;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::node::{
    Input, LinkId, Node as ProtoNode, NodeConfig, NodeStats, PathEvent, PathEventKind, RelayEvent,
    Route,
};
use toxlink_proto::paths::health::Health;
use toxlink_proto::session::{Event, SendError, MAX_PACKET_SIZE};

pub use toxlink_proto;

pub mod friend;
pub use friend::{Friend, FriendConfig, FriendError, FriendEvent};

/// Received packets queued per connection before the driver stops taking
/// more from the core.
pub const RECV_QUEUE_LIMIT: usize = 4096;
/// Datagrams read or written per batch.
const BATCH: usize = 64;

/// Errors of the runtime API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The connection is closed (killed by the peer, closed locally, or the
    /// node shut down).
    #[error("connection closed")]
    Closed,
    /// The handshake did not complete.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The data was refused (length or packet id).
    #[error("send refused: {0}")]
    Send(SendError),
}

/// A packet received on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A lossless packet, in order (id byte first).
    Lossless(Vec<u8>),
    /// A lossy packet (id byte first).
    Lossy(Vec<u8>),
}

#[derive(Default)]
struct ConnState {
    queue: VecDeque<Received>,
    established: bool,
    closed: Option<Error>,
    /// Woken when data arrives, on establishment and on close.
    readable: Arc<Notify>,
    /// Woken when the send buffer may have room.
    writable: Arc<Notify>,
    announced: bool,
}

/// Path and relay events kept for the application (the oldest are dropped
/// beyond).
const EVENT_QUEUE_LIMIT: usize = 4096;

struct State {
    node: ProtoNode<SocketAddr>,
    conns: HashMap<PublicKey, ConnState>,
    incoming: mpsc::Sender<Connection>,
    shutdown: bool,
    links: HashMap<LinkId, Arc<links::LinkHandle>>,
    path_events: VecDeque<PathEvent<SocketAddr>>,
    relay_events: VecDeque<RelayEvent>,
    /// Our candidate endpoints (interfaces, STUN), for the core's discovery.
    endpoints: endpoints::Endpoints,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    /// Woken when a path or relay event is queued.
    events: Notify,
    local: SocketAddr,
    real: PublicKey,
    dht: PublicKey,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A toxlink node on one UDP socket.
pub struct Node {
    shared: Arc<Shared>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("local", &self.shared.local)
            .field("real", &self.shared.real)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds a node to `addr` (e.g. `127.0.0.1:0` or `[::1]:0`) with the
    /// long-term key pair `real`.
    pub async fn bind(addr: SocketAddr, real: KeyPair, cfg: NodeConfig) -> Result<Node, Error> {
        let socket = UdpSocket::bind(addr).await?;
        let sock2 = socket2::SockRef::from(&socket);
        // Large buffers: bursts at hundreds of MB/s.
        let _ = sock2.set_recv_buffer_size(8 << 20);
        let _ = sock2.set_send_buffer_size(8 << 20);
        let local = socket.local_addr()?;
        let mut rng = rand_core::OsRng;
        let node = ProtoNode::new(Instant::now(), &mut rng, real, cfg);
        let (tx, rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            real: node.real_pk(),
            dht: node.dht_pk(),
            state: Mutex::new(State {
                node,
                conns: HashMap::new(),
                incoming: tx,
                shutdown: false,
                links: HashMap::new(),
                path_events: VecDeque::new(),
                relay_events: VecDeque::new(),
                endpoints: endpoints::Endpoints::new(local, Instant::now()),
            }),
            wake: Notify::new(),
            events: Notify::new(),
            local,
        });
        let task = tokio::spawn(drive(shared.clone(), socket));
        Ok(Node {
            shared,
            incoming: tokio::sync::Mutex::new(rx),
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Our long-term public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.real
    }

    /// Asks these STUN servers for our public UDP address (toxlink relays
    /// answer STUN on their TCP port numbers); the addresses they report are
    /// advertised to peers with our interface addresses, so that peers find
    /// a direct path through NATs. An empty list asks none.
    pub fn set_stun_servers(&self, servers: Vec<SocketAddr>) {
        self.shared
            .lock()
            .endpoints
            .set_stun_servers(Instant::now(), servers);
        self.shared.wake.notify_one();
    }

    /// Our public UDP addresses as the STUN servers last reported them.
    pub fn reflexive_addrs(&self) -> Vec<SocketAddr> {
        self.shared.lock().endpoints.reflexive()
    }

    /// The STUN client's counters (requests, responses, timeouts, refusals).
    pub fn stun_counters(&self) -> toxlink_proto::stun::StunCounters {
        self.shared.lock().endpoints.stun_counters()
    }

    /// Our DHT public key (a peer needs it to connect to us).
    pub fn dht_key(&self) -> PublicKey {
        self.shared.dht
    }

    /// Allows incoming connections from `peer`.
    pub fn allow(&self, peer: PublicKey) {
        self.shared.lock().node.allow(peer);
    }

    /// Connects to `peer` (real and DHT key) at `addr` and waits until the
    /// connection is established (or the handshake fails, retried as long as
    /// the returned future is polled).
    pub async fn connect(
        &self,
        peer: PublicKey,
        peer_dht: PublicKey,
        addr: SocketAddr,
    ) -> Result<Connection, Error> {
        self.start_connect(peer, peer_dht, Some(addr)).await
    }

    /// The next incoming connection (established, from an allowed peer).
    pub async fn accept(&self) -> Option<Connection> {
        self.incoming.lock().await.recv().await
    }

    /// Makes a TCP relay known: the node connects to it at once (so peers on
    /// it can reach us) and uses it, with up to two others, as a path to
    /// every peer (docs/DESIGN.md §3).
    pub fn add_relay(&self, relay: PublicKey, addr: SocketAddr) {
        let mut st = self.shared.lock();
        st.node.add_relay(Instant::now(), relay, addr);
        links::service(&mut st, &self.shared);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Connects to `peer` through the known relays only (no UDP address) and
    /// waits until the connection is established. Both sides must share a
    /// relay and know each other's DHT keys (see
    /// [`NodeConfig::dht_is_real`]).
    pub async fn connect_via_relays(
        &self,
        peer: PublicKey,
        peer_dht: PublicKey,
    ) -> Result<Connection, Error> {
        self.start_connect(peer, peer_dht, None).await
    }

    /// Starts a connection (at a UDP address, or through the relays only)
    /// and waits until it is established.
    async fn start_connect(
        &self,
        peer: PublicKey,
        peer_dht: PublicKey,
        addr: Option<SocketAddr>,
    ) -> Result<Connection, Error> {
        let readable = {
            let mut st = self.shared.lock();
            let now = Instant::now();
            match addr {
                Some(addr) => {
                    st.node.connect(now, peer, peer_dht, addr);
                }
                None => st.node.connect_via_relays(now, peer, peer_dht),
            }
            links::service(&mut st, &self.shared);
            let c = st.conns.entry(peer).or_default();
            c.closed = None;
            c.announced = true;
            c.readable.clone()
        };
        self.shared.wake.notify_one();
        self.wait_established(peer, readable).await
    }

    async fn wait_established(
        &self,
        peer: PublicKey,
        readable: Arc<Notify>,
    ) -> Result<Connection, Error> {
        loop {
            let notified = readable.notified();
            {
                let mut st = self.shared.lock();
                let c = st.conns.entry(peer).or_default();
                if c.established {
                    break;
                }
                if let Some(e) = c.closed.take() {
                    return Err(e);
                }
            }
            notified.await;
        }
        Ok(Connection {
            shared: self.shared.clone(),
            peer,
        })
    }

    /// Adds `addr` as another direct UDP path to `peer` (which must have a
    /// session). Returns false if there is none.
    pub fn add_path(&self, peer: &PublicKey, addr: SocketAddr) -> bool {
        let mut st = self.shared.lock();
        let now = Instant::now();
        let r = st.node.add_path(now, peer, addr);
        drop(st);
        self.shared.wake.notify_one();
        r
    }

    /// Stops (`true`) or resumes (`false`) sending to and accepting from the
    /// UDP address `addr`: its path is reported closed (the connection moves
    /// to its other paths at once) or re-opened.
    pub fn set_udp_blocked(&self, addr: SocketAddr, blocked: bool) {
        let mut st = self.shared.lock();
        let now = Instant::now();
        st.node.set_udp_blocked(now, addr, blocked);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// The next path event (health changes, primary switches, relays added,
    /// dropped or blamed), without waiting.
    pub fn poll_path_event(&self) -> Option<PathEvent<SocketAddr>> {
        self.shared.lock().path_events.pop_front()
    }

    /// The next node-wide relay event (links up and down, self-probes,
    /// relays disconnected), without waiting.
    pub fn poll_relay_event(&self) -> Option<RelayEvent> {
        self.shared.lock().relay_events.pop_front()
    }

    /// Waits until a path or relay event is queued (or up to `max`).
    pub async fn wait_event(&self, max: std::time::Duration) {
        let notified = self.shared.events.notified();
        {
            let st = self.shared.lock();
            if !st.path_events.is_empty() || !st.relay_events.is_empty() {
                return;
            }
        }
        let _ = tokio::time::timeout(max, notified).await;
    }

    /// The primary path of the connection to `peer`.
    pub fn primary(&self, peer: &PublicKey) -> Option<Route<SocketAddr>> {
        self.shared.lock().node.primary(peer)
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        self.shared.lock().node.stats().clone()
    }

    /// Runs `f` on the protocol core (path tables, relay set, pool, blame
    /// ledger), for status displays and tests. Keep `f` short: it holds the
    /// node's lock.
    pub fn inspect<R>(&self, f: impl FnOnce(&ProtoNode<SocketAddr>) -> R) -> R {
        f(&self.shared.lock().node)
    }
}

/// A connection to one peer. Cheap to clone; all clones share the stream.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    peer: PublicKey,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connection {
    /// The peer's long-term public key.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// Sends a lossless packet (id 16..=191 first, 1..=1373 bytes); waits
    /// while the send buffer is full. Returns the packet number.
    pub async fn send_lossless(&self, data: &[u8]) -> Result<u32, Error> {
        loop {
            let writable = {
                let mut st = self.shared.lock();
                if st.shutdown {
                    return Err(Error::Closed);
                }
                let writable = match st.conns.get(&self.peer) {
                    Some(c) if c.closed.is_none() => c.writable.clone(),
                    _ => return Err(Error::Closed),
                };
                match st.node.send_lossless(Instant::now(), &self.peer, data) {
                    Ok(n) => {
                        drop(st);
                        self.shared.wake.notify_one();
                        return Ok(n);
                    }
                    Err(SendError::BufferFull) => writable,
                    Err(SendError::Closed) => return Err(Error::Closed),
                    Err(e) => return Err(Error::Send(e)),
                }
            };
            // The permit of a notify_one() sent after our failed attempt is
            // kept, so no wake-up is lost between the check and the await.
            writable.notified().await;
        }
    }

    /// Sends a lossy packet (id 192..=254 first); never waits (a full lossy
    /// queue refuses the packet).
    pub fn send_lossy(&self, data: &[u8]) -> Result<(), Error> {
        let r = self
            .shared
            .lock()
            .node
            .send_lossy(Instant::now(), &self.peer, data);
        self.shared.wake.notify_one();
        r.map_err(|e| match e {
            SendError::Closed => Error::Closed,
            e => Error::Send(e),
        })
    }

    /// The next received packet; `None` once the connection is closed and
    /// everything received before was read.
    pub async fn recv(&self) -> Option<Received> {
        loop {
            let readable = {
                let mut st = self.shared.lock();
                let c = st.conns.get_mut(&self.peer)?;
                if let Some(r) = c.queue.pop_front() {
                    let resume = c.queue.len() + 1 == RECV_QUEUE_LIMIT;
                    drop(st);
                    if resume {
                        self.shared.wake.notify_one();
                    }
                    return Some(r);
                }
                if c.closed.is_some() {
                    return None;
                }
                c.readable.clone()
            };
            readable.notified().await;
        }
    }

    /// Gives the node the TCP relays of this peer's SHARE_RELAYS list as the
    /// peer's word (`Node::learn_shared_relays`).
    pub(crate) fn learn_friend_relays(&self, list: &[toxlink_proto::wire::packed::PackedNode]) {
        let mut st = self.shared.lock();
        st.node.learn_shared_relays(Instant::now(), self.peer, list);
        links::service(&mut st, &self.shared);
    }

    /// The relays the node knows on its own, for SHARE_RELAYS
    /// (`Node::shareable_relays`).
    pub(crate) fn known_relays(&self) -> Vec<toxlink_proto::wire::packed::PackedNode> {
        self.shared.lock().node.shareable_relays()
    }

    /// Closes the connection: one KILL goes to the peer.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        st.node.close(Instant::now(), &self.peer);
        if let Some(c) = st.conns.get_mut(&self.peer) {
            c.closed.get_or_insert(Error::Closed);
            c.readable.notify_waiters();
            c.writable.notify_waiters();
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}

/// Moves core events into the connections; returns false when some receive
/// queue is full (the rest stays in the core: backpressure).
fn dispatch(st: &mut State, shared: &Arc<Shared>, now: Instant) {
    let mut any = false;
    while let Some(e) = st.node.poll_path_event() {
        if matches!(
            (&e.kind, &e.addr),
            (
                PathEventKind::Health {
                    new: Health::Suspect | Health::Dead,
                    ..
                },
                Route::Udp(_)
            )
        ) {
            // A direct path falters: our NAT mapping may have changed (a
            // rebinding); a new reflexive address makes a new endpoint list.
            st.endpoints.recheck(now);
        }
        if st.path_events.len() >= EVENT_QUEUE_LIMIT {
            st.path_events.pop_front();
        }
        st.path_events.push_back(e);
        any = true;
    }
    while let Some(e) = st.node.poll_relay_event() {
        if st.relay_events.len() >= EVENT_QUEUE_LIMIT {
            st.relay_events.pop_front();
        }
        st.relay_events.push_back(e);
        any = true;
    }
    if any {
        shared.events.notify_waiters();
    }
    loop {
        if st.conns.values().any(|c| c.queue.len() >= RECV_QUEUE_LIMIT) {
            return;
        }
        let Some(ev) = st.node.poll_event(now) else {
            return;
        };
        let peer = ev.peer;
        let c = st.conns.entry(peer).or_default();
        match ev.event {
            Event::Established => {
                c.established = true;
                c.closed = None;
                c.readable.notify_one();
                if !c.announced {
                    c.announced = true;
                    let conn = Connection {
                        shared: shared.clone(),
                        peer,
                    };
                    if st.incoming.try_send(conn).is_err() {
                        tracing::warn!(?peer, "accept queue full, closing");
                        st.node.close(now, &peer);
                    }
                }
            }
            Event::Lossless(d) => {
                c.queue.push_back(Received::Lossless(d));
                c.readable.notify_one();
            }
            Event::Lossy(d) => {
                c.queue.push_back(Received::Lossy(d));
                c.readable.notify_one();
            }
            Event::Killed => {
                c.closed = Some(Error::Closed);
                c.readable.notify_waiters();
                c.readable.notify_one();
                c.writable.notify_waiters();
            }
            Event::HandshakeTimeout => {
                c.closed = Some(Error::HandshakeTimeout);
                c.readable.notify_one();
                c.writable.notify_waiters();
            }
            _ => {}
        }
    }
}

/// Datagrams of one GSO send at most (and at most 64 KiB in all).
const MAX_GSO_BYTES: usize = 65_000;
/// Receive buffers per `recvmmsg` batch, each large enough for a GRO train.
const RECV_BUFS: usize = 8;
const RECV_BUF_SIZE: usize = 65_536;

/// Sends `out` (packets laid end to end, `meta` = destination and length of
/// each) with as few system calls as the socket allows: consecutive packets
/// to the same destination with the same size (the last of a run may be
/// shorter) go as one UDP GSO send where the kernel offers it.
async fn send_batch(
    socket: &UdpSocket,
    state: &quinn_udp::UdpSocketState,
    out: &[u8],
    meta: &[(SocketAddr, usize)],
) {
    let max_segments = state.max_gso_segments().max(1);
    let mut i = 0;
    let mut offset = 0;
    while i < meta.len() {
        let (to, seg) = meta[i];
        let mut n = 1;
        let mut bytes = seg;
        while i + n < meta.len()
            && n < max_segments
            && meta[i + n].0 == to
            && meta[i + n].1 <= seg
            && bytes + meta[i + n].1 <= MAX_GSO_BYTES
        {
            bytes += meta[i + n].1;
            n += 1;
            if meta[i + n - 1].1 < seg {
                break; // a shorter packet ends a GSO run
            }
        }
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: &out[offset..offset + bytes],
            segment_size: (n > 1).then_some(seg),
            src_ip: None,
        };
        loop {
            match socket.try_io(tokio::io::Interest::WRITABLE, || {
                state.try_send((&socket).into(), &transmit)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(%to, error = %e, "send failed");
                    break;
                }
            }
        }
        i += n;
        offset += bytes;
    }
}

async fn drive(shared: Arc<Shared>, socket: UdpSocket) {
    let state = match quinn_udp::UdpSocketState::new((&socket).into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "UDP socket set-up failed");
            return;
        }
    };
    tracing::debug!(
        gso = state.max_gso_segments(),
        gro = state.gro_segments(),
        "UDP offloads"
    );
    let mut out = vec![0u8; BATCH * MAX_PACKET_SIZE];
    let mut out_meta: Vec<(SocketAddr, usize)> = Vec::with_capacity(BATCH);
    let mut inbufs = vec![0u8; RECV_BUFS * RECV_BUF_SIZE];
    let mut recv_meta = [quinn_udp::RecvMeta::default(); RECV_BUFS];
    loop {
        // 1. Everything the core wants to send, in batches.
        loop {
            out_meta.clear();
            let mut used = 0;
            let timeout = {
                let mut st = shared.lock();
                if st.shutdown {
                    return;
                }
                let now = Instant::now();
                service_endpoints(&mut st, now);
                while out_meta.len() < BATCH / 2 {
                    let slot = &mut out[used..used + MAX_PACKET_SIZE];
                    match st.endpoints.poll_transmit(now, slot) {
                        Some((to, len)) => {
                            out_meta.push((to, len));
                            used += len;
                        }
                        None => break,
                    }
                }
                while out_meta.len() < BATCH {
                    let slot = &mut out[used..used + MAX_PACKET_SIZE];
                    match st.node.poll_transmit(now, slot) {
                        Some((to, t)) => {
                            out_meta.push((to, t.len));
                            used += t.len;
                        }
                        None => break,
                    }
                }
                links::service(&mut st, &shared);
                let t = st.node.poll_timeout();
                match (t, st.endpoints.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            send_batch(&socket, &state, &out[..used], &out_meta).await;
            if out_meta.len() < BATCH {
                // 2. Wait for input, a timer or an API call.
                let sleep = async {
                    match timeout {
                        Some(t) => {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = socket.readable() => { let _ = r; }
                    _ = sleep => {}
                    _ = shared.wake.notified() => {}
                }
                break;
            }
        }
        // 3. Read what is there (GRO trains split into datagrams), timers,
        //    events.
        let mut st = shared.lock();
        let now = Instant::now();
        for _ in 0..BATCH / 2 {
            let mut slices: Vec<io::IoSliceMut<'_>> = inbufs
                .chunks_mut(RECV_BUF_SIZE)
                .map(io::IoSliceMut::new)
                .collect();
            let r = socket.try_io(tokio::io::Interest::READABLE, || {
                state.recv((&socket).into(), &mut slices, &mut recv_meta)
            });
            drop(slices);
            match r {
                Ok(msgs) => {
                    for (m, buf) in recv_meta
                        .iter()
                        .zip(inbufs.chunks_mut(RECV_BUF_SIZE))
                        .take(msgs)
                    {
                        let stride = m.stride.max(1);
                        for dgram in buf[..m.len.min(RECV_BUF_SIZE)].chunks_mut(stride) {
                            if st.endpoints.handle_datagram(now, m.addr, dgram) {
                                continue;
                            }
                            let _ = st.node.handle(
                                now,
                                Input::Datagram {
                                    from: m.addr,
                                    data: dgram,
                                },
                            );
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    break;
                }
            }
        }
        if st.node.poll_timeout().is_some_and(|t| t <= now) {
            let _ = st.node.handle(now, Input::Timeout);
        }
        dispatch(&mut st, &shared, now);
        notify_writable(&st);
        links::service(&mut st, &shared);
    }
}

/// The endpoint finder's timers; a changed list goes to the core.
fn service_endpoints(st: &mut State, now: Instant) {
    if st.endpoints.poll_timeout().is_some_and(|t| t <= now) {
        st.endpoints.handle_timeout(now);
    }
    if let Some(list) = st.endpoints.take_change() {
        tracing::debug!(?list, "our endpoints");
        let _ = st.node.handle(now, Input::Endpoints(&list));
    }
}

/// Acks may have freed send-buffer space: wake the senders.
fn notify_writable(st: &State) {
    for (peer, c) in st.conns.iter() {
        if st.node.send_buffer_free(peer) > 0 {
            c.writable.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
