//! Sim adapters for the relay scenarios: a [`RelayNode`] hosting the sans-IO
//! relay server on a sim address, and a [`PeerNode`] hosting a
//! `node::Node<u32>` whose relay links are sim streams.
//!
//! Addresses (all `u32`):
//! * peer `p` (1..=99) sends and receives UDP on address `p`; its main relay
//!   links are opened from `MAIN_BASE + p`, its self-probe links from
//!   `PROBE_BASE + p` (so an `Opened` event names one kind of link);
//! * relay `n` (1..=99) accepts streams on `RELAY_BASE + n`; the node knows it
//!   as `10.0.0.n:1` ([`relay_socket`] / [`relay_addr`] map between the two).
//!
//! A [`PeerNode`] opens one stream per [`LinkId`] the node asks for, matches
//! the `Opened` (or refusing `Reset`) to it in open order per (local, remote)
//! pair, and discards streams of links the node gave up on meanwhile (a
//! generation counter per link). It feeds stream bytes, FIN and RST into the
//! node and writes whatever the node has for a link after every input.
//!
//! Invariants: every map that is iterated is a `BTreeMap` (a run is fixed by
//! its seed); every loop is bounded by what the node or server queued.

#![allow(dead_code)]

pub mod world;

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::friend::{FriendEvent, FriendLink, Outgoing};
use toxlink_proto::node::{Input, LinkId, LinkOutput, Node, NodeConfig, PathEvent, RelayEvent};
use toxlink_proto::relay_client::{Client, ClientConfig, ClientEvent};
use toxlink_proto::relay_server::{ConnId, Server, ServerConfig};
use toxlink_proto::session::{Event, SendError, MAX_PACKET_SIZE};
use toxlink_sim::{Output, SimNode, SimRng, StreamEvent, StreamId, StreamInfo, StreamSide};

/// First address of the relays (relay `n` is at `RELAY_BASE + n`).
pub const RELAY_BASE: u32 = 100;
/// Local address of peer `p`'s main relay links is `MAIN_BASE + p`.
pub const MAIN_BASE: u32 = 1000;
/// Local address of peer `p`'s self-probe links is `PROBE_BASE + p`.
pub const PROBE_BASE: u32 = 2000;
/// Local address of peer `p`'s raw (hostile) relay client is `RAW_BASE + p`.
pub const RAW_BASE: u32 = 3000;
/// Bytes drained from a node or server per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// The socket address the nodes use for relay `n`.
pub fn relay_socket(n: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, n as u8), 1))
}

/// The sim address of the relay at `addr` (`10.0.0.n:1` ↔ `RELAY_BASE + n`).
pub fn relay_addr(addr: SocketAddr) -> u32 {
    match addr {
        SocketAddr::V4(a) => RELAY_BASE + u32::from(a.ip().octets()[3]),
        SocketAddr::V6(_) => 0,
    }
}

/// A relay server on one sim address.
pub struct RelayNode {
    /// The sans-IO server.
    pub server: Server<SimRng>,
    out: VecDeque<Output<u32>>,
    /// Streams per connection (a `ConnId` is the stream id).
    conns: BTreeMap<u64, StreamId>,
}

impl RelayNode {
    /// A relay with key pair `kp`.
    pub fn new(kp: KeyPair, rng: SimRng) -> Self {
        RelayNode {
            server: Server::new(kp, rng, ServerConfig::default()),
            out: VecDeque::new(),
            conns: BTreeMap::new(),
        }
    }

    /// The streams of the relay's clients.
    pub fn streams(&self) -> Vec<StreamId> {
        self.conns.values().copied().collect()
    }

    fn flush(&mut self) {
        while let Some((conn, _reason)) = self.server.poll_close() {
            if let Some(s) = self.conns.remove(&conn.0) {
                self.out.push_back(Output::ResetStream {
                    stream: s,
                    side: StreamSide::Acceptor,
                });
            }
        }
        let mut woken = Vec::new();
        while let Some(c) = self.server.poll_wake() {
            woken.push(c);
        }
        woken.sort();
        woken.dedup();
        for c in woken {
            let Some(&s) = self.conns.get(&c.0) else {
                continue;
            };
            let mut buf = Vec::new();
            // Bounded: each round drains at least one frame of a finite queue.
            while self.server.has_output(c) {
                if self.server.drain_into(c, &mut buf, WRITE_CHUNK) == 0 {
                    break;
                }
            }
            if !buf.is_empty() {
                self.out.push_back(Output::StreamWrite {
                    stream: s,
                    side: StreamSide::Acceptor,
                    data: Bytes::from(buf),
                });
            }
        }
    }
}

impl SimNode<u32> for RelayNode {
    fn handle_datagram(&mut self, _now: Instant, _from: u32, _to: u32, _data: Bytes) {}

    fn handle_stream(&mut self, now: Instant, s: StreamInfo<u32>, ev: StreamEvent) {
        if s.side != StreamSide::Acceptor {
            return;
        }
        let conn = ConnId(s.id.0);
        match ev {
            StreamEvent::Opened => {
                self.conns.insert(s.id.0, s.id);
                // Simulated addresses are u32s: read as IPv4 for the
                // per-address limits.
                let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(s.remote));
                self.server.handle_accept(now, conn, ip);
            }
            StreamEvent::Data(d) => {
                if self.conns.contains_key(&s.id.0) {
                    let mut d = d.to_vec();
                    self.server.handle_bytes(now, conn, &mut d);
                }
            }
            StreamEvent::Closed | StreamEvent::Reset => {
                if self.conns.remove(&s.id.0).is_some() {
                    self.server.handle_closed(now, conn);
                }
            }
        }
        self.flush();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.flush();
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output<u32>> {
        self.flush();
        self.out.pop_front()
    }
}

/// Lossless channel of a packet: the bulk transfer or the chat trickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Paced transfer (packet id 160).
    Bulk,
    /// Chat-like trickle (packet id 161).
    Chat,
    /// Paced transfer of full-size packets (packet id 162; counted as the
    /// bulk): 1373 bytes of data, a 1400-byte packet on the wire, as every
    /// chunk of `toxlink send`.
    Full,
}

impl Channel {
    /// Index of the channel's counters in [`Friend`] (full-size is bulk).
    fn index(self) -> usize {
        match self {
            Channel::Bulk | Channel::Full => 0,
            Channel::Chat => 1,
        }
    }
}

/// Lossless payload `k` of `ch`: id, BE64 k, then a pattern of k (9..1300
/// bytes for the bulk, 9..200 for chat, always 1373 for full-size).
pub fn payload(ch: Channel, k: u64) -> Vec<u8> {
    let (id, max) = match ch {
        Channel::Bulk => (160u8, 1300usize),
        Channel::Chat => (161u8, 200usize),
        Channel::Full => (162u8, 1373usize),
    };
    let len = if ch == Channel::Full {
        max
    } else {
        9 + (k as usize * 7919) % (max - 9)
    };
    let mut v = Vec::with_capacity(len);
    v.push(id);
    v.extend_from_slice(&k.to_be_bytes());
    v.extend((0..len - 9).map(|i| (k as usize).wrapping_mul(31).wrapping_add(i) as u8 ^ id));
    v
}

/// What one peer sends to and has received from one friend.
#[derive(Debug)]
pub struct Friend {
    /// The friend's long-term (and DHT) key.
    pub pk: PublicKey,
    /// Bulk packets to send, one per `bulk_every`.
    pub bulk_total: u64,
    /// The bulk packets are full-size ([`Channel::Full`]).
    pub bulk_full: bool,
    /// Deliveries whose content differs from what was sent under the
    /// number they carry (a corrupted packet the session let through).
    pub corrupt: u64,
    /// Pacing of the bulk transfer.
    pub bulk_every: Duration,
    /// Chat messages to send, one per `chat_every`.
    pub chat_total: u64,
    /// Pacing of the chat.
    pub chat_every: Duration,
    /// Next bulk / chat number to send.
    pub next: [u64; 2],
    /// When sending started (after the session was established).
    pub send_from: Option<Instant>,
    /// Next bulk / chat number expected.
    pub recv: [u64; 2],
    /// Bulk bytes received.
    pub recv_bytes: u64,
    /// Last bulk delivery.
    pub last_bulk: Option<Instant>,
    /// Longest time between two bulk deliveries.
    pub max_gap: Duration,
    /// When the longest gap ended.
    pub max_gap_at: Option<Instant>,
    /// When the session was first established.
    pub established: Option<Instant>,
    /// The connection is expected to end (a close): a KILL is recorded in
    /// `killed` instead of failing the run.
    pub expect_kill: bool,
    /// When the connection was killed (only with `expect_kill`).
    pub killed: Option<Instant>,
    /// The Tox friend layer over this connection (ONLINE, ALIVE,
    /// SHARE_RELAYS), when the scenario runs it: Messenger packets (ids
    /// below 160) go to it, the payload channels (160..) stay the
    /// checker's.
    pub link: Option<FriendLink>,
    /// Friend-layer events, in order, with their time.
    pub link_log: Vec<(Instant, FriendEvent)>,
    /// The send buffer was full at the last attempt: wait for the next
    /// input or node timer instead of polling the pacing timer.
    blocked: bool,
}

impl Friend {
    /// A friend with nothing to send.
    pub fn new(pk: PublicKey) -> Self {
        Friend {
            pk,
            bulk_total: 0,
            bulk_full: false,
            corrupt: 0,
            bulk_every: Duration::from_millis(1),
            chat_total: 0,
            chat_every: Duration::from_millis(100),
            next: [0; 2],
            send_from: None,
            recv: [0; 2],
            recv_bytes: 0,
            last_bulk: None,
            max_gap: Duration::ZERO,
            max_gap_at: None,
            established: None,
            expect_kill: false,
            killed: None,
            link: None,
            link_log: Vec::new(),
            blocked: false,
        }
    }

    fn due(&self, ch: usize) -> Option<Instant> {
        if self.blocked {
            return None;
        }
        let from = self.send_from?;
        let (total, every) = if ch == 0 {
            (self.bulk_total, self.bulk_every)
        } else {
            (self.chat_total, self.chat_every)
        };
        (self.next[ch] < total)
            .then(|| from + every * u32::try_from(self.next[ch]).unwrap_or(u32::MAX))
    }
}

/// A hostile relay client of a peer on one relay (same key as the peer):
/// it routes to a victim and sends it DATA that cannot authenticate.
pub struct RawClient {
    /// The relay link.
    pub client: Client,
    /// The relay's sim address.
    pub relay: u32,
    /// Its stream, once opened.
    pub stream: Option<StreamId>,
    /// Keys it routes to.
    pub victims: Vec<PublicKey>,
    /// Garbage packets sent.
    pub sent: u64,
}

/// A peer: a `Node<u32>` with sim streams as relay links, a UDP address, the
/// application (transfers with its friends) and logs of what happened.
pub struct PeerNode {
    /// The sans-IO node.
    pub node: Node<u32>,
    /// UDP address (and peer number).
    pub me: u32,
    /// Friends, with their transfers.
    pub friends: Vec<Friend>,
    /// Path events, in order.
    pub path_log: Vec<PathEvent<u32>>,
    /// Relay events, in order, with their time.
    pub relay_log: Vec<(Instant, RelayEvent)>,
    /// First failure (wrong data, killed session...).
    pub failure: Option<String>,
    /// Every relay address the node dialled (self-probe link?, address).
    pub dialed: Vec<(bool, SocketAddr)>,
    /// Stream of each live link (each connection attempt is its own
    /// `LinkId`).
    links: BTreeMap<LinkId, StreamId>,
    by_stream: BTreeMap<StreamId, LinkId>,
    /// Opens in flight per (local, remote), in order.
    pending: BTreeMap<(u32, u32), VecDeque<LinkId>>,
    /// A hostile raw client, if any.
    pub raw: Option<RawClient>,
    /// UDP datagrams sent, per destination.
    pub udp_sent: BTreeMap<u32, u64>,
    /// The source address its UDP datagrams leave with, if not `me`: a NAT
    /// in front of it (a scenario changes it to rebind the NAT).
    pub udp_src: Option<u32>,
    out: VecDeque<Output<u32>>,
    buf: Vec<u8>,
}

impl PeerNode {
    /// Peer number `me` with key pair `kp` (its DHT key too).
    pub fn new(now: Instant, rng: &mut SimRng, me: u32, kp: KeyPair, cfg: NodeConfig) -> Self {
        let cfg = NodeConfig {
            dht_is_real: true,
            ..cfg
        };
        PeerNode {
            node: Node::new(now, rng, kp, cfg),
            me,
            friends: Vec::new(),
            path_log: Vec::new(),
            relay_log: Vec::new(),
            failure: None,
            dialed: Vec::new(),
            links: BTreeMap::new(),
            by_stream: BTreeMap::new(),
            pending: BTreeMap::new(),
            raw: None,
            udp_sent: BTreeMap::new(),
            udp_src: None,
            out: VecDeque::new(),
            buf: vec![0u8; MAX_PACKET_SIZE],
        }
    }

    /// Records the first failure.
    pub fn fail(&mut self, msg: String) {
        if self.failure.is_none() {
            self.failure = Some(msg);
        }
    }

    /// The friend with key `pk`.
    pub fn friend(&self, pk: &PublicKey) -> Option<&Friend> {
        self.friends.iter().find(|f| f.pk == *pk)
    }

    /// The friend with key `pk`, mutably.
    pub fn friend_mut(&mut self, pk: &PublicKey) -> Option<&mut Friend> {
        self.friends.iter_mut().find(|f| f.pk == *pk)
    }

    /// The stream of relay `relay`'s main link, if open.
    pub fn link_stream(&self, relay: &PublicKey) -> Option<StreamId> {
        self.links
            .iter()
            .rev()
            .find(|(l, _)| l.relay == *relay && !l.probe)
            .map(|(_, s)| *s)
    }

    fn local_addr(&self, probe: bool) -> u32 {
        if probe {
            PROBE_BASE + self.me
        } else {
            MAIN_BASE + self.me
        }
    }

    /// Everything that follows an input: app events, sends, relay link
    /// opens, closes and writes.
    fn pump(&mut self, now: Instant) {
        self.app(now);
        // Opens before closes on purpose: every attempt is its own LinkId,
        // so the order cannot matter (the runtime closes first).
        while let Some(out) = self.node.poll_link() {
            match out {
                LinkOutput::Open { link, addr } => {
                    self.dialed.push((link.probe, addr));
                    let (from, to) = (self.local_addr(link.probe), relay_addr(addr));
                    self.pending.entry((from, to)).or_default().push_back(link);
                    self.out.push_back(Output::OpenStream { from, to });
                }
                LinkOutput::Close(link) => {
                    if let Some(s) = self.links.remove(&link) {
                        self.by_stream.remove(&s);
                        self.out.push_back(Output::ResetStream {
                            stream: s,
                            side: StreamSide::Initiator,
                        });
                    }
                }
                _ => {}
            }
        }
        let live: Vec<(LinkId, StreamId)> = self.links.iter().map(|(k, s)| (*k, *s)).collect();
        for (link, s) in live {
            let mut buf = Vec::new();
            while self.node.link_has_output(&link) {
                if self.node.drain_link(&link, &mut buf, WRITE_CHUNK) == 0 {
                    break;
                }
            }
            if !buf.is_empty() {
                self.out.push_back(Output::StreamWrite {
                    stream: s,
                    side: StreamSide::Initiator,
                    data: Bytes::from(buf),
                });
            }
        }
        if let Some(raw) = self.raw.as_mut() {
            if let Some(s) = raw.stream {
                let mut buf = Vec::new();
                while raw.client.has_output() {
                    if raw.client.drain_into(&mut buf, WRITE_CHUNK) == 0 {
                        break;
                    }
                }
                if !buf.is_empty() {
                    self.out.push_back(Output::StreamWrite {
                        stream: s,
                        side: StreamSide::Initiator,
                        data: Bytes::from(buf),
                    });
                }
            }
        }
    }

    /// Application: node events (deliveries checked in order), path and
    /// relay events logged, paced sends.
    fn app(&mut self, now: Instant) {
        while let Some(ev) = self.node.poll_event(now) {
            let me = self.me;
            match ev.event {
                Event::Established => {
                    if let Some(f) = self.friend_mut(&ev.peer) {
                        f.established.get_or_insert(now);
                        f.send_from.get_or_insert(now);
                        if let Some(l) = f.link.as_mut() {
                            l.handle_established(now);
                        }
                    }
                }
                Event::Lossless(d) if d.first().is_some_and(|id| *id < 160) => {
                    if let Some(l) = self.friend_mut(&ev.peer).and_then(|f| f.link.as_mut()) {
                        l.handle_lossless(now, &d);
                    }
                }
                Event::Killed if self.friend(&ev.peer).is_some_and(|f| f.expect_kill) => {
                    if let Some(f) = self.friend_mut(&ev.peer) {
                        f.killed.get_or_insert(now);
                        if let Some(l) = f.link.as_mut() {
                            l.handle_closed(now);
                        }
                    }
                }
                Event::Lossless(d) => {
                    let Some(f) = self.friend_mut(&ev.peer) else {
                        continue;
                    };
                    let ch = match d.first() {
                        Some(160) => Channel::Bulk,
                        Some(161) => Channel::Chat,
                        Some(162) => Channel::Full,
                        _ => continue,
                    };
                    let i = ch.index();
                    let ok = d == payload(ch, f.recv[i]);
                    let claimed = d
                        .get(1..9)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes);
                    if claimed.is_none_or(|c| d != payload(ch, c)) {
                        f.corrupt += 1;
                    }
                    let k = f.recv[i];
                    f.recv[i] += 1;
                    if i == 0 {
                        f.recv_bytes += d.len() as u64;
                        if let Some(t) = f.last_bulk {
                            let gap = now.saturating_duration_since(t);
                            if gap > f.max_gap {
                                f.max_gap = gap;
                                f.max_gap_at = Some(now);
                            }
                        }
                        f.last_bulk = Some(now);
                    }
                    if !ok {
                        self.fail(format!(
                            "peer {me}: {ch:?} #{k} corrupted, lost, duplicated or out of order"
                        ));
                    }
                }
                Event::Killed | Event::HandshakeTimeout => {
                    self.fail(format!("peer {me}: {:?} at {now:?}", ev.event));
                }
                _ => {}
            }
        }
        self.friend_layer(now);
        while let Some(e) = self.node.poll_path_event() {
            self.path_log.push(e);
        }
        while let Some(e) = self.node.poll_relay_event() {
            self.relay_log.push((now, e));
        }
        for i in 0..self.friends.len() {
            self.friends[i].blocked = false;
            let bulk = if self.friends[i].bulk_full {
                Channel::Full
            } else {
                Channel::Bulk
            };
            for ch in [bulk, Channel::Chat] {
                let c = ch.index();
                // Bounded by the packets due (and by the send buffer).
                while self.friends[i].due(c).is_some_and(|t| t <= now) {
                    let (pk, k) = (self.friends[i].pk, self.friends[i].next[c]);
                    match self.node.send_lossless(now, &pk, &payload(ch, k)) {
                        Ok(_) => self.friends[i].next[c] += 1,
                        Err(SendError::BufferFull) => {
                            self.friends[i].blocked = true;
                            break;
                        }
                        Err(e) => {
                            let me = self.me;
                            self.fail(format!("peer {me}: send_lossless: {e}"));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The friend layer of every friend that runs one: its packets go to
    /// the node, SHARE_RELAYS to the relay pool (as the runtime's friend
    /// task does), its events to `link_log`.
    fn friend_layer(&mut self, now: Instant) {
        for i in 0..self.friends.len() {
            let pk = self.friends[i].pk;
            let Some(link) = self.friends[i].link.as_mut() else {
                continue;
            };
            if link.poll_timeout().is_some_and(|t| t <= now) {
                link.handle_timeout(now);
            }
            let mut out = Vec::new();
            while let Some(o) = link.poll_transmit() {
                out.push(o);
            }
            let mut events = Vec::new();
            while let Some(e) = link.poll_event() {
                events.push(e);
            }
            for o in out {
                let r = match o {
                    Outgoing::Lossless(d) => self.node.send_lossless(now, &pk, &d).map(|_| ()),
                    Outgoing::Lossy(d) => self.node.send_lossy(now, &pk, &d),
                    other => {
                        tracing::debug!(?other, "friend-layer output not understood");
                        continue;
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "friend-layer packet not sent");
                }
            }
            for e in events {
                if let FriendEvent::ShareRelays(list) = &e {
                    self.node.learn_shared_relays(now, pk, list);
                }
                self.friends[i].link_log.push((now, e));
            }
        }
    }

    /// Runs the Tox friend layer over the connection with `pk`, sharing
    /// the relays the node knows on its own.
    pub fn run_friend_layer(&mut self, now: Instant, pk: &PublicKey) {
        let relays = self.node.shareable_relays();
        if let Some(f) = self.friends.iter_mut().find(|f| f.pk == *pk) {
            let mut link = FriendLink::new(Default::default());
            link.set_relays(now, relays);
            f.link = Some(link);
        }
    }

    fn on_link_stream(&mut self, now: Instant, s: StreamInfo<u32>, ev: StreamEvent) {
        if let Some(&link) = self.by_stream.get(&s.id) {
            match ev {
                StreamEvent::Opened => {}
                StreamEvent::Data(d) => {
                    let mut d = d.to_vec();
                    let _ = self.node.handle(now, Input::LinkBytes(link, &mut d));
                }
                StreamEvent::Closed | StreamEvent::Reset => {
                    self.by_stream.remove(&s.id);
                    self.links.remove(&link);
                    if ev == StreamEvent::Closed {
                        self.out.push_back(Output::ResetStream {
                            stream: s.id,
                            side: StreamSide::Initiator,
                        });
                    }
                    let _ = self.node.handle(now, Input::LinkClosed(link));
                }
            }
            return;
        }
        // A new stream: the answer to the oldest open of this pair.
        if !matches!(ev, StreamEvent::Opened | StreamEvent::Reset) {
            return;
        }
        let Some(link) = self
            .pending
            .get_mut(&(s.local, s.remote))
            .and_then(|q| q.pop_front())
        else {
            return;
        };
        // Reported whatever happened meanwhile: the node ignores (and
        // closes) an attempt it no longer wants.
        if ev == StreamEvent::Opened {
            self.links.insert(link, s.id);
            self.by_stream.insert(s.id, link);
            let _ = self.node.handle(now, Input::LinkUp(link));
        } else {
            let _ = self.node.handle(now, Input::LinkFailed(link));
        }
    }

    fn on_raw_stream(&mut self, now: Instant, s: StreamInfo<u32>, ev: StreamEvent) {
        let Some(raw) = self.raw.as_mut() else {
            return;
        };
        match ev {
            StreamEvent::Opened => raw.stream = Some(s.id),
            StreamEvent::Data(d) => {
                let mut d = d.to_vec();
                raw.client.handle_bytes(now, &mut d);
                while let Some(e) = raw.client.poll_event() {
                    if e == ClientEvent::Connected {
                        for v in raw.victims.clone() {
                            let _ = raw.client.route(v);
                        }
                    }
                }
            }
            StreamEvent::Closed | StreamEvent::Reset => {
                raw.stream = None;
                raw.client.handle_closed(now);
            }
        }
    }

    /// Starts the hostile raw client of this peer on relay `n` (key pair
    /// `kp`, the peer's own), routing to `victims`.
    pub fn start_raw(
        &mut self,
        now: Instant,
        rng: &mut SimRng,
        kp: KeyPair,
        relay_pk: PublicKey,
        n: u32,
        victims: Vec<PublicKey>,
    ) {
        let client = Client::new(now, kp, relay_pk, rng, ClientConfig::default());
        self.raw = Some(RawClient {
            client,
            relay: RELAY_BASE + n,
            stream: None,
            victims,
            sent: 0,
        });
        self.out.push_back(Output::OpenStream {
            from: RAW_BASE + self.me,
            to: RELAY_BASE + n,
        });
    }

    /// The raw client sends `count` garbage net_crypto data packets to every
    /// victim it is online with. Returns how many went out.
    pub fn send_garbage(&mut self, rng: &mut SimRng, count: usize) -> u64 {
        let Some(raw) = self.raw.as_mut() else {
            return 0;
        };
        let mut sent = 0;
        for v in raw.victims.clone() {
            for _ in 0..count {
                let mut pkt = vec![0u8; 60 + rng.below(400) as usize];
                rng.fill(&mut pkt);
                pkt[0] = 27;
                if raw.client.send_data(&v, &pkt).is_ok() {
                    sent += 1;
                }
            }
        }
        raw.sent += sent;
        sent
    }
}

impl SimNode<u32> for PeerNode {
    fn handle_datagram(&mut self, now: Instant, from: u32, _to: u32, data: Bytes) {
        let mut d = data.to_vec();
        let _ = self
            .node
            .handle(now, Input::Datagram { from, data: &mut d });
        self.pump(now);
    }

    fn handle_stream(&mut self, now: Instant, s: StreamInfo<u32>, ev: StreamEvent) {
        if s.local == RAW_BASE + self.me {
            self.on_raw_stream(now, s, ev);
        } else {
            self.on_link_stream(now, s, ev);
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let _ = self.node.handle(now, Input::Timeout);
        if let Some(raw) = self.raw.as_mut() {
            if raw.client.poll_timeout().is_some_and(|t| t <= now) {
                raw.client.handle_timeout(now);
            }
        }
        self.pump(now);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let mut t = self.node.poll_timeout();
        let sends = self
            .friends
            .iter()
            .flat_map(|f| [f.due(0), f.due(1)])
            .flatten();
        let raw = self.raw.as_ref().and_then(|r| r.client.poll_timeout());
        let links = self
            .friends
            .iter()
            .filter_map(|f| f.link.as_ref()?.poll_timeout());
        for x in sends.chain(raw).chain(links) {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output<u32>> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        self.pump(now);
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        let Some((to, t)) = self.node.poll_transmit(now, &mut self.buf) else {
            // Relay packets may have been queued on the links meanwhile.
            self.pump(now);
            return self.out.pop_front();
        };
        // Relay packets queued on the links by poll_transmit go out on the
        // next calls.
        self.pump(now);
        *self.udp_sent.entry(to).or_default() += 1;
        Some(Output::datagram(
            self.udp_src.unwrap_or(self.me),
            to,
            Bytes::copy_from_slice(&self.buf[..t.len]),
        ))
    }
}
