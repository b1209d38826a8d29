//! Simulator suites for the net_crypto session (issue 4): two
//! `toxlink_proto::node::Node`s connect through a simulated link and move at
//! least 1 MiB of lossless data plus lossy packets, under loss 0–30 %, bursty
//! (Gilbert–Elliott) loss, reordering, duplication, corruption 0–5 %, latency
//! 0–300 ms and bandwidth caps. Every seed asserts: delivered intact, in order,
//! no duplicate, no kill; lossy packets arrive whole or not at all.
//!
//! Replay one seed: `TOXLINK_SEEDS=<seed> cargo test -p toxlink-sim --test session_suite`.

use bytes::Bytes;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::node::{Node, NodeConfig};
use toxlink_proto::session::{Event, SendError, SessionConfig, MAX_PACKET_SIZE};
use toxlink_sim::{ms, run_seeds, secs, LinkConfig, Output, Sim, SimNode, SimRng};

const MIB: u64 = 1 << 20;

/// Lossless payload `k`: id 160, BE64 k, then a pattern of k (9..1373 bytes).
fn payload(k: u64) -> Vec<u8> {
    let len = 9 + (k as usize * 7919) % (1373 - 9);
    let mut v = Vec::with_capacity(len);
    v.push(160);
    v.extend_from_slice(&k.to_be_bytes());
    v.extend((0..len - 9).map(|i| (k as usize).wrapping_mul(31).wrapping_add(i) as u8));
    v
}

/// Lossy payload `k`: id 200, BE32 k, then `k % 300` bytes equal to `k as u8`.
fn lossy_payload(k: u32) -> Vec<u8> {
    let mut v = vec![200u8];
    v.extend_from_slice(&k.to_be_bytes());
    v.extend(std::iter::repeat_n(k as u8, k as usize % 300));
    v
}

/// Number of lossless packets whose payloads sum to at least `bytes`.
fn packets_for(bytes: u64) -> u64 {
    let mut sum = 0;
    let mut k = 0;
    while sum < bytes {
        sum += payload(k).len() as u64;
        k += 1;
    }
    k
}

struct App {
    node: Node<u8>,
    me: u8,
    peer: Option<PublicKey>,
    /// Lossless packets to send in total.
    to_send: u64,
    next_send: u64,
    lossy_to_send: u32,
    lossy_next: u32,
    recv_next: u64,
    recv_bytes: u64,
    lossy_recv: u32,
    established: bool,
    failure: Option<String>,
    killed: bool,
    buf: Vec<u8>,
}

impl App {
    fn new(now: Instant, rng: &mut SimRng, me: u8) -> Self {
        let real = KeyPair::generate(rng);
        let cfg = NodeConfig {
            session: SessionConfig::default(),
            ..NodeConfig::default()
        };
        App {
            node: Node::new(now, rng, real, cfg),
            me,
            peer: None,
            to_send: 0,
            next_send: 0,
            lossy_to_send: 0,
            lossy_next: 0,
            recv_next: 0,
            recv_bytes: 0,
            lossy_recv: 0,
            established: false,
            failure: None,
            killed: false,
            buf: vec![0u8; MAX_PACKET_SIZE],
        }
    }

    fn fail(&mut self, msg: String) {
        if self.failure.is_none() {
            self.failure = Some(msg);
        }
    }

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.node.poll_event(now) {
            match ev.event {
                Event::Established => self.established = true,
                Event::Lossless(d) => {
                    let want = payload(self.recv_next);
                    if d != want {
                        self.fail(format!(
                            "node {}: lossless #{} wrong (len {} want {})",
                            self.me,
                            self.recv_next,
                            d.len(),
                            want.len()
                        ));
                    }
                    self.recv_next += 1;
                    self.recv_bytes += d.len() as u64;
                }
                Event::Lossy(d) => {
                    let ok = d.len() >= 5 && d[0] == 200 && {
                        let k = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                        d == lossy_payload(k)
                    };
                    if !ok {
                        self.fail(format!("node {}: corrupted lossy packet", self.me));
                    }
                    self.lossy_recv += 1;
                }
                Event::Killed => {
                    self.killed = true;
                    self.fail(format!("node {}: spurious kill", self.me));
                }
                Event::HandshakeTimeout => {
                    self.fail(format!("node {}: responder handshake timed out", self.me));
                }
                _ => {}
            }
        }
        let Some(peer) = self.peer else { return };
        if !self.node.session(&peer).is_some_and(|s| s.is_established()) {
            return;
        }
        while self.next_send < self.to_send {
            match self
                .node
                .send_lossless(now, &peer, &payload(self.next_send))
            {
                Ok(_) => self.next_send += 1,
                Err(SendError::BufferFull) => break,
                Err(e) => {
                    self.fail(format!("send_lossless: {e}"));
                    break;
                }
            }
        }
        // One lossy packet per 16 lossless ones.
        while self.lossy_next < self.lossy_to_send
            && u64::from(self.lossy_next) * 16 <= self.next_send
        {
            match self
                .node
                .send_lossy(now, &peer, &lossy_payload(self.lossy_next))
            {
                Ok(()) => self.lossy_next += 1,
                Err(_) => break,
            }
        }
    }
}

impl SimNode<u8> for App {
    fn handle_datagram(&mut self, now: Instant, from: u8, _to: u8, data: Bytes) {
        let mut d = data.to_vec();
        let _ = self.node.handle_datagram(now, from, &mut d);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.pump(now);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output<u8>> {
        self.pump(now);
        let (to, t) = self.node.poll_transmit(now, &mut self.buf)?;
        Some(Output::datagram(
            self.me,
            to,
            Bytes::copy_from_slice(&self.buf[..t.len]),
        ))
    }
}

/// One scenario: node 1 streams to node 2 over `link` (both directions).
fn scenario(
    seed: u64,
    link: LinkConfig,
    simultaneous: bool,
    limit: Duration,
) -> Result<(), String> {
    let mut sim: Sim<u8> = Sim::new(seed);
    sim.network.connect(1, 2, link);
    let now = sim.now();
    let mut r1 = sim.rng_for("node1");
    let mut r2 = sim.rng_for("node2");
    let mut a = App::new(now, &mut r1, 1);
    let mut b = App::new(now, &mut r2, 2);
    let (a_pk, a_dht) = (a.node.real_pk(), a.node.dht_pk());
    let (b_pk, b_dht) = (b.node.real_pk(), b.node.dht_pk());
    a.peer = Some(b_pk);
    b.peer = Some(a_pk);
    b.node.allow(a_pk);
    a.node.connect(now, b_pk, b_dht, 2);
    if simultaneous {
        b.node.connect(now, a_pk, a_dht, 1);
    }
    let count = packets_for(MIB);
    a.to_send = count;
    a.lossy_to_send = 64;
    let ia = sim.add_node(a, [1]);
    let ib = sim.add_node(b, [2]);
    let done = |s: &mut Sim<u8>| {
        let b = s.node::<App>(ib);
        let a = s.node::<App>(ia);
        let failed =
            a.is_some_and(|a| a.failure.is_some()) || b.is_some_and(|b| b.failure.is_some());
        !failed && b.is_some_and(|b| b.recv_next < count)
    };
    let res = sim.run_while(done, limit);
    let a = sim.node::<App>(ia).ok_or("node a")?;
    let b = sim.node::<App>(ib).ok_or("node b")?;
    if let Some(f) = a.failure.as_ref().or(b.failure.as_ref()) {
        return Err(f.clone());
    }
    res.map_err(|e| {
        format!(
            "{e}: delivered {} of {count} packets ({} bytes); a est {} b est {}; a {:?}",
            b.recv_next,
            b.recv_bytes,
            a.established,
            b.established,
            a.node.session(&b_pk)
        )
    })?;
    if std::env::var_os("TOXLINK_SUITE_VERBOSE").is_some() {
        eprintln!(
            "seed {seed}: {:?} virtual, link 1→2 {:?}, sender {:?}",
            sim.elapsed(),
            sim.network.link(1, 2).map(|l| *l.stats()),
            a.node.session(&b_pk).map(|s| s.stats().clone()),
        );
    }
    if b.recv_bytes < MIB {
        return Err(format!("only {} bytes", b.recv_bytes));
    }
    if a.killed || b.killed {
        return Err("killed".into());
    }
    if b.lossy_recv > 64 {
        return Err(format!("{} lossy packets of 64 sent", b.lossy_recv));
    }
    Ok(())
}

/// The acceptance mix: every seed draws its own impairments.
fn random_link(seed: u64) -> (LinkConfig, bool) {
    let mut r = SimRng::new(seed ^ 0x5e55_1011);
    let latency = ms(r.below(301));
    let mut l = LinkConfig::new().latency(latency);
    let kind = seed % 6;
    let loss = r.unit() * 0.30;
    l = match kind {
        // Bursty loss: average ≈ loss, bursts of ~4.
        0 => l.gilbert_elliott(loss / 4.0, 0.25, 0.0, 0.5 + r.unit() * 0.5),
        _ => l.loss(loss),
    };
    if kind == 1 || kind == 4 {
        l = l.reorder(0.05 + r.unit() * 0.2, ms(1 + r.below(50)));
    }
    if kind == 2 || kind == 4 {
        l = l.duplicate(r.unit() * 0.1);
    }
    l = l.corrupt_bits(r.unit() * 0.05, 3);
    if kind == 3 || kind == 5 {
        // Bandwidth cap 1–20 MB/s with a queue of 20–200 packets.
        let bw = 1_000_000 + r.below(19_000_000);
        l = l
            .bandwidth(bw)
            .queue_limit(1400 * (20 + r.below(181) as usize));
    }
    if r.bernoulli(0.3) {
        l = l.jitter_uniform(ms(r.below(20)));
    }
    (l, seed % 10 == 7)
}

#[test]
fn session_acceptance_1000_seeds() {
    run_seeds("session_acceptance_1000_seeds", 0..1000, |seed| {
        let (link, simultaneous) = random_link(seed);
        scenario(seed, link, simultaneous, secs(1200))
    });
}

#[test]
fn clean_link_fills_quickly() {
    // 1 MiB on a clean 50 ms RTT link with a 50 MB/s cap: well under 1 s of
    // virtual time (c-toxcore's slow start needs ~10 s).
    run_seeds("clean_link_fills_quickly", 0..4, |seed| {
        let link = LinkConfig::new()
            .latency(ms(25))
            .bandwidth(50_000_000)
            .queue_limit(1400 * 500);
        let mut sim_time = Duration::ZERO;
        let r = scenario_timed(seed, link, &mut sim_time);
        r?;
        if sim_time > secs(1) {
            return Err(format!("took {sim_time:?} of virtual time"));
        }
        Ok(())
    });
}

fn scenario_timed(seed: u64, link: LinkConfig, took: &mut Duration) -> Result<(), String> {
    let mut sim: Sim<u8> = Sim::new(seed);
    sim.network.connect(1, 2, link);
    let now = sim.now();
    let mut r1 = sim.rng_for("node1");
    let mut r2 = sim.rng_for("node2");
    let mut a = App::new(now, &mut r1, 1);
    let mut b = App::new(now, &mut r2, 2);
    let b_pk = b.node.real_pk();
    a.peer = Some(b_pk);
    b.peer = Some(a.node.real_pk());
    b.node.allow(a.node.real_pk());
    a.node.connect(now, b_pk, b.node.dht_pk(), 2);
    let count = packets_for(MIB);
    a.to_send = count;
    sim.add_node(a, [1]);
    let ib = sim.add_node(b, [2]);
    sim.run_while(
        |s| {
            s.node::<App>(ib)
                .is_some_and(|b| b.recv_next < count && b.failure.is_none())
        },
        secs(60),
    )
    .map_err(|e| e.to_string())?;
    *took = sim.elapsed();
    match sim.node::<App>(ib).and_then(|b| b.failure.clone()) {
        Some(f) => Err(f),
        None => Ok(()),
    }
}
