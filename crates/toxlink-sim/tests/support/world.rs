//! The world of the relay scenarios: relays and peers on a simulator, set
//! up, befriended, run and measured (shared by every scenario file).

use super::{relay_socket, Friend, PeerNode, RelayNode, RELAY_BASE};
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::node::{NodeConfig, PathEventKind, Route};
use toxlink_proto::relay_server::{FaultConfig, FaultInjector};
use toxlink_sim::{ms, secs, NodeId, Sim, SimError, SimRng, StreamConfig};

/// Relays in every scenario (peers use three).
pub const RELAYS: u32 = 4;
/// Bulk packets of the transfer (one per millisecond, ~650 bytes each).
pub const COUNT: u64 = 3000;
/// Chat messages (one per 100 ms).
pub const CHAT: u64 = 30;
/// When the fault hits, after the first 100 packets were delivered.
pub const FAULT_AT: Duration = Duration::from_millis(500);

pub fn verbose() -> bool {
    std::env::var_os("TOXLINK_RELAY_VERBOSE").is_some()
}

/// A set-up world: relays, peers and their keys.
pub struct World {
    pub sim: Sim<u32>,
    /// Relay `n` (1-based) is `relays[n - 1]`: key and node.
    pub relays: Vec<(PublicKey, NodeId)>,
    /// Peers by number (1-based): key pair and node.
    pub peers: Vec<(KeyPair, NodeId)>,
}

impl World {
    pub fn peer(&self, p: u32) -> &PeerNode {
        let id = self.peers[p as usize - 1].1;
        self.sim.node::<PeerNode>(id).expect("peer node")
    }

    pub fn pk(&self, p: u32) -> PublicKey {
        self.peers[p as usize - 1].0.public
    }

    /// The relay number of `pk`.
    pub fn relay_no(&self, pk: &PublicKey) -> Option<u32> {
        self.relays
            .iter()
            .position(|(k, _)| k == pk)
            .map(|i| i as u32 + 1)
    }

    pub fn failure(&self) -> Option<String> {
        self.peers
            .iter()
            .find_map(|(_, id)| self.sim.node::<PeerNode>(*id)?.failure.clone())
    }
}

/// `peers` peers (numbers 1..=peers), `RELAYS` relays with random stream
/// latencies; peer `p` knows the relays `knows(p)`.
pub fn world(seed: u64, peers: u32, knows: impl Fn(u32) -> Vec<u32>) -> World {
    let mut sim: Sim<u32> = Sim::new(seed);
    let mut r = SimRng::new(seed ^ 0x7265_6c61);
    let now = sim.now();
    let mut relays = Vec::new();
    for n in 1..=RELAYS {
        let mut rng = sim.rng_for(&format!("relay{n}"));
        let kp = KeyPair::generate(&mut rng);
        let pk = kp.public;
        let id = sim.add_node(RelayNode::new(kp, rng), [RELAY_BASE + n]);
        relays.push((pk, id));
        let lat = ms(5 + r.below(30));
        for p in 1..=peers {
            for base in [super::MAIN_BASE, super::PROBE_BASE, super::RAW_BASE] {
                sim.network.set_stream_config(
                    base + p,
                    RELAY_BASE + n,
                    StreamConfig::new().latency(lat + ms(r.below(5))),
                );
            }
        }
    }
    let mut out = Vec::new();
    for p in 1..=peers {
        let mut rng = sim.rng_for(&format!("peer{p}"));
        let kp = KeyPair::generate(&mut rng);
        let mut node = PeerNode::new(now, &mut rng, p, kp.clone(), NodeConfig::default());
        for n in knows(p) {
            node.node
                .add_relay(now, relays[n as usize - 1].0, relay_socket(n));
        }
        let id = sim.add_node(
            node,
            [
                p,
                super::MAIN_BASE + p,
                super::PROBE_BASE + p,
                super::RAW_BASE + p,
            ],
        );
        out.push((kp, id));
    }
    World {
        sim,
        relays,
        peers: out,
    }
}

/// Makes `a` and `b` friends; `a` connects (through relays, or also over
/// UDP if `udp`); `a` sends `bulk` packets to `b`, `b` sends `chat`
/// messages to `a`.
pub fn befriend(w: &mut World, a: u32, b: u32, bulk: u64, chat: u64, udp: bool) {
    let (pa, pb) = (w.pk(a), w.pk(b));
    let now = w.sim.now();
    let ida = w.peers[a as usize - 1].1;
    let idb = w.peers[b as usize - 1].1;
    if let Some(n) = w.sim.node_mut::<PeerNode>(idb) {
        let mut f = Friend::new(pa);
        f.chat_total = chat;
        n.friends.push(f);
        n.node.allow(pa);
    }
    if let Some(n) = w.sim.node_mut::<PeerNode>(ida) {
        let mut f = Friend::new(pb);
        f.bulk_total = bulk;
        n.friends.push(f);
        if udp {
            n.node.connect(now, pb, pb, b);
        } else {
            n.node.connect_via_relays(now, pb, pb);
        }
    }
}

/// Runs until `b` has received `n` bulk packets from `a`.
pub fn run_until_flowing(w: &mut World, a: u32, b: u32, n: u64) -> Result<(), String> {
    let ida = w.peers[a as usize - 1].1;
    let idb = w.peers[b as usize - 1].1;
    let pa = w.pk(a);
    w.sim
        .run_while(
            |s| {
                let failed = [ida, idb]
                    .iter()
                    .any(|id| s.node::<PeerNode>(*id).is_some_and(|p| p.failure.is_some()));
                !failed
                    && s.node::<PeerNode>(idb)
                        .and_then(|p| p.friend(&pa))
                        .is_none_or(|f| f.recv[0] < n)
            },
            secs(20),
        )
        .map_err(|e| format!("set-up: {e}"))?;
    match w.failure() {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Runs until every transfer of every peer is complete (or a failure).
pub fn run_to_end(w: &mut World, max: Duration) -> Result<(), String> {
    let ids: Vec<NodeId> = w.peers.iter().map(|(_, id)| *id).collect();
    let keys: Vec<PublicKey> = w.peers.iter().map(|(k, _)| k.public).collect();
    let done = |s: &mut Sim<u32>| -> bool {
        let mut all = true;
        for (i, id) in ids.iter().enumerate() {
            let Some(p) = s.node::<PeerNode>(*id) else {
                continue;
            };
            if p.failure.is_some() {
                return true;
            }
            // Everything this peer sends has arrived at the friend.
            for f in &p.friends {
                let Some(j) = keys.iter().position(|k| *k == f.pk) else {
                    continue;
                };
                let got = s
                    .node::<PeerNode>(ids[j])
                    .and_then(|q| q.friend(&keys[i]))
                    .map_or([0, 0], |g| g.recv);
                if got[0] < f.bulk_total || got[1] < f.chat_total {
                    all = false;
                }
            }
        }
        all
    };
    let r = w.sim.run_while(|s| !done(s), max);
    if let Some(f) = w.failure() {
        return Err(f);
    }
    r.map_err(|e: SimError| {
        let mut msg = format!("{e}");
        for (i, (_, id)) in w.peers.iter().enumerate() {
            if let Some(p) = w.sim.node::<PeerNode>(*id) {
                for f in &p.friends {
                    msg += &format!(
                        "; peer {} from {:?}: received {:?}, sent {:?}",
                        i + 1,
                        &f.pk.0[..2],
                        f.recv,
                        f.next
                    );
                }
            }
        }
        msg
    })
}

/// Prints the logs of the peers (verbose runs).
pub fn dump(w: &World, seed: u64, fault_time: Instant) {
    for (i, (_, id)) in w.peers.iter().enumerate() {
        let Some(p) = w.sim.node::<PeerNode>(*id) else {
            continue;
        };
        eprintln!("seed {seed} peer {}: stats {:?}", i + 1, p.node.stats());
        for f in &p.friends {
            eprintln!(
                "  friend {:?}: recv {:?} gap {:?} at {:?}",
                &f.pk.0[..2],
                f.recv,
                f.max_gap,
                f.max_gap_at
                    .map(|t| t.saturating_duration_since(fault_time))
            );
        }
        let name = |k: &PublicKey| {
            w.relay_no(k)
                .map_or(format!("{:?}", &k.0[..2]), |n| format!("R{n}"))
        };
        for e in &p.path_log {
            let dt = e.at.checked_duration_since(fault_time).map_or_else(
                || format!("-{:?}", fault_time.saturating_duration_since(e.at)),
                |d| format!("+{d:?}"),
            );
            let addr = match e.addr {
                Route::Udp(a) => format!("udp {a}"),
                Route::Relay { relay, .. } => name(&relay),
                other => format!("{other:?}"),
            };
            eprintln!("  {dt} {:?} {addr} {:?}", &e.peer.0[..2], e.kind);
        }
        for (t, e) in &p.relay_log {
            let dt = t.saturating_duration_since(fault_time);
            eprintln!("  relay +{dt:?} {e:?}");
        }
    }
}

/// Figures of one seed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    /// Longest gap between two bulk deliveries.
    pub max_gap: Duration,
    /// Time from the fault to the event the scenario waits for.
    pub switch: Option<Duration>,
    /// Bytes of redundant copies sent by the bulk sender.
    pub copy_bytes: u64,
    /// Bulk bytes delivered.
    pub delivered: u64,
    /// Deliveries (any peer, any channel) that differ from what was sent.
    pub corrupt: u64,
}

pub fn figures(w: &World, a: u32, b: u32, switch: Option<Duration>) -> Figures {
    let pa = w.pk(a);
    let fb = w.peer(b).friend(&pa);
    Figures {
        max_gap: fb.map_or(Duration::ZERO, |f| f.max_gap),
        switch,
        copy_bytes: w.peer(a).node.stats().copy_bytes,
        delivered: fb.map_or(0, |f| f.recv_bytes),
        corrupt: w
            .peers
            .iter()
            .filter_map(|(_, id)| w.sim.node::<PeerNode>(*id))
            .flat_map(|p| p.friends.iter().map(|f| f.corrupt))
            .sum(),
    }
}

/// Resets every stream of relay `n` (both peers' links).
pub fn reset_relay(s: &mut Sim<u32>, relay: NodeId) {
    let streams = s
        .node::<RelayNode>(relay)
        .map(|r| r.streams())
        .unwrap_or_default();
    for id in streams {
        s.reset_stream(id);
    }
}

/// Black-holes every stream of relay `n`.
pub fn black_hole_relay(s: &mut Sim<u32>, relay: NodeId) {
    let streams = s
        .node::<RelayNode>(relay)
        .map(|r| r.streams())
        .unwrap_or_default();
    for id in streams {
        s.black_hole_stream(id);
    }
}

pub fn install(s: &mut Sim<u32>, relay: NodeId, cfg: FaultConfig) {
    let now = s.now();
    if let Some(r) = s.node_mut::<RelayNode>(relay) {
        r.server.set_fault_injector(now, FaultInjector::new(cfg));
    }
}

/// First time (after `from`) `p` logged a path event for `peer` matching `f`.
pub fn first_event(
    w: &World,
    p: u32,
    peer: u32,
    from: Instant,
    f: impl Fn(&PathEventKind<u32>, &Route<u32>) -> bool,
) -> Option<Duration> {
    let pk = w.pk(peer);
    w.peer(p)
        .path_log
        .iter()
        .filter(|e| e.at >= from && e.peer == pk)
        .find(|e| f(&e.kind, &e.addr))
        .map(|e| e.at.saturating_duration_since(from))
}
