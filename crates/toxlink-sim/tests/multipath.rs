//! Multipath scenarios (issue 6, docs/DESIGN.md §3–§4): two `Node`s joined by two
//! direct paths (node 1 owns addresses 1 and 11, node 2 owns 2 and 12; path
//! A is 1↔2, path B is 11↔12). Node 1 streams paced lossless packets to node
//! 2 while a path fails. Every seed asserts: every packet delivered, intact,
//! in order, no duplicate, no kill, and the bound of its scenario (longest
//! delivery gap, or time to move traffic). Each test prints the worst
//! measured figure and the redundancy overhead (bytes of secondary copies /
//! bytes delivered).
//!
//! Replay one seed: `TOXLINK_SEEDS=<seed> cargo test -p toxlink-sim --test multipath <name>`;
//! `TOXLINK_MULTIPATH_VERBOSE=1` prints the path events of every seed.

use bytes::Bytes;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::node::{Input, Node, NodeConfig, PathEvent, PathEventKind, Route};
use toxlink_proto::session::{Event, SendError, MAX_PACKET_SIZE};
use toxlink_sim::{ms, run_seeds, secs, LinkConfig, Output, Sim, SimNode, SimRng};

/// Lossless packets sent (one per millisecond: a 3 s transfer).
const COUNT: u64 = 3000;
/// Pacing of the sender.
const EVERY: Duration = Duration::from_millis(1);
/// When the fault hits, after the first 100 packets were delivered.
const FAULT_AT: Duration = Duration::from_millis(700);

/// Lossless payload `k`: id 160, BE64 k, then a pattern of k (9..700 bytes).
fn payload(k: u64) -> Vec<u8> {
    let len = 9 + (k as usize * 7919) % (700 - 9);
    let mut v = Vec::with_capacity(len);
    v.push(160);
    v.extend_from_slice(&k.to_be_bytes());
    v.extend((0..len - 9).map(|i| (k as usize).wrapping_mul(31).wrapping_add(i) as u8));
    v
}

struct App {
    node: Node<u8>,
    me: u8,
    peer: PublicKey,
    /// The peer's second address, added once established.
    second: Option<u8>,
    to_send: u64,
    next_send: u64,
    send_from: Option<Instant>,
    recv_next: u64,
    recv_bytes: u64,
    last_delivery: Option<Instant>,
    max_gap: Duration,
    failure: Option<String>,
    established_at: Option<Instant>,
    /// Current primary (peer address) per the node's path events.
    primary: Option<u8>,
    path_log: Vec<PathEvent<u8>>,
    buf: Vec<u8>,
}

impl App {
    fn new(now: Instant, rng: &mut SimRng, me: u8, peer: PublicKey, second: Option<u8>) -> Self {
        let real = KeyPair::generate(rng);
        App {
            node: Node::new(now, rng, real, NodeConfig::default()),
            me,
            peer,
            second,
            to_send: 0,
            next_send: 0,
            send_from: None,
            recv_next: 0,
            recv_bytes: 0,
            last_delivery: None,
            max_gap: Duration::ZERO,
            failure: None,
            established_at: None,
            primary: None,
            path_log: Vec::new(),
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
                Event::Established => {
                    self.established_at.get_or_insert(now);
                    if let Some(a) = self.second.take() {
                        self.node.add_path(now, &self.peer, a);
                    }
                }
                Event::Lossless(d) => {
                    if d != payload(self.recv_next) {
                        self.fail(format!(
                            "node {}: lossless #{} wrong or out of order",
                            self.me, self.recv_next
                        ));
                    }
                    if let Some(t) = self.last_delivery {
                        self.max_gap = self.max_gap.max(now.saturating_duration_since(t));
                    }
                    self.last_delivery = Some(now);
                    self.recv_next += 1;
                    self.recv_bytes += d.len() as u64;
                }
                Event::Killed | Event::HandshakeTimeout => {
                    self.fail(format!("node {}: {:?}", self.me, ev.event));
                }
                _ => {}
            }
        }
        while let Some(e) = self.node.poll_path_event() {
            if let (PathEventKind::Primary { .. }, Route::Udp(a)) = (&e.kind, e.addr) {
                self.primary = Some(a);
            }
            self.path_log.push(e);
        }
        if self.to_send == 0 || self.established_at.is_none() {
            return;
        }
        let from = *self.send_from.get_or_insert(now);
        while self.next_send < self.to_send
            && from + EVERY * u32::try_from(self.next_send).unwrap_or(u32::MAX) <= now
        {
            match self
                .node
                .send_lossless(now, &self.peer, &payload(self.next_send))
            {
                Ok(_) => self.next_send += 1,
                Err(SendError::BufferFull) => break,
                Err(e) => {
                    self.fail(format!("send_lossless: {e}"));
                    break;
                }
            }
        }
    }

    fn next_send_at(&self) -> Option<Instant> {
        let from = self.send_from?;
        (self.next_send < self.to_send)
            .then(|| from + EVERY * u32::try_from(self.next_send).unwrap_or(u32::MAX))
    }
}

impl SimNode<u8> for App {
    fn handle_datagram(&mut self, now: Instant, from: u8, _to: u8, data: Bytes) {
        let mut d = data.to_vec();
        let _ = self
            .node
            .handle(now, Input::Datagram { from, data: &mut d });
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let _ = self.node.handle(now, Input::Timeout);
        self.pump(now);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let t = self.node.poll_timeout();
        match (t, self.next_send_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output<u8>> {
        self.pump(now);
        let (to, t) = self.node.poll_transmit(now, &mut self.buf)?;
        // The local address on the same path as the destination.
        let src = if to >= 10 { self.me + 10 } else { self.me };
        Some(Output::datagram(
            src,
            to,
            Bytes::copy_from_slice(&self.buf[..t.len]),
        ))
    }
}

/// What a scenario does at `FAULT_AT` and what it measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// The primary path silently drops everything.
    BlackHole,
    /// The primary path goes down and both nodes are told (interface down).
    Cut,
    /// Path B (clean, while A loses 30 %) appears only at the fault time.
    BetterAppears,
    /// The primary path gets 2 s of extra delay.
    Delay,
}

/// Figures of one seed.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    max_gap: Duration,
    /// Time from the fault to the primary switch it calls for.
    switch: Option<Duration>,
    copy_bytes: u64,
    delivered: u64,
}

fn scenario(seed: u64, fault: Fault) -> Result<Figures, String> {
    let mut sim: Sim<u8> = Sim::new(seed);
    let mut r = SimRng::new(seed ^ 0x6d75_6c74);
    let lat_a = ms(5 + r.below(40));
    let lat_b = ms(5 + r.below(40));
    // The better path is clean while A loses 30 % each way. (Lower RTT
    // alone is not observable before traffic moves: Tox acknowledges a
    // packet that overtook a hole only once the hole is filled, so probes on
    // a faster path come back at the slower path's pace; see the report.)
    // It is also no slower than A: see the report on slower paths.
    let loss_a = if fault == Fault::BetterAppears {
        0.3
    } else {
        0.0
    };
    let lat_b = if fault == Fault::BetterAppears {
        ms(5 + r.below(lat_a.as_millis() as u64 - 4))
    } else {
        lat_b
    };
    sim.network.connect(
        1,
        2,
        LinkConfig::new()
            .latency(lat_a)
            .jitter_uniform(ms(2))
            .loss(loss_a),
    );
    if fault != Fault::BetterAppears {
        sim.network.connect(
            11,
            12,
            LinkConfig::new().latency(lat_b).jitter_uniform(ms(2)),
        );
    }
    let now = sim.now();
    let mut r1 = sim.rng_for("node1");
    let mut r2 = sim.rng_for("node2");
    let second = fault != Fault::BetterAppears;
    let mut b = App::new(now, &mut r2, 2, PublicKey([0; 32]), second.then_some(11));
    let pk2 = b.node.real_pk();
    let a = App::new(now, &mut r1, 1, pk2, second.then_some(12));
    b.peer = a.node.real_pk();
    let mut a = a;
    b.node.allow(a.node.real_pk());
    a.node.connect(now, pk2, b.node.dht_pk(), 2);
    a.to_send = COUNT;
    let ia = sim.add_node(a, [1, 11]);
    let ib = sim.add_node(b, [2, 12]);
    // Run until the transfer is flowing, then schedule the fault.
    sim.run_while(
        |s| s.node::<App>(ib).is_none_or(|b| b.recv_next < 100),
        secs(30),
    )
    .map_err(|e| format!("set-up: {e}"))?;
    let fault_time = sim.now() + FAULT_AT;
    let victim = std::rc::Rc::new(std::cell::Cell::new(0u8));
    let v = victim.clone();
    sim.at_instant(fault_time, move |s| {
        let now = s.now();
        let primary = s.node::<App>(ia).and_then(|a| a.primary).unwrap_or(2);
        if std::env::var_os("TOXLINK_MULTIPATH_VERBOSE").is_some() {
            if let Some(a) = s.node::<App>(ia) {
                for p in a
                    .node
                    .path_table(&a.peer)
                    .into_iter()
                    .flat_map(|t| t.paths())
                {
                    eprintln!(
                        "  at fault: {:?} {:?} srtt {:?} loss {:?} sent {:?}",
                        p.key(),
                        p.state(),
                        p.health().rtt().srtt(),
                        p.health().loss().totals(),
                        p.sent()
                    );
                }
            }
        }
        v.set(primary);
        let (x, y) = if primary == 2 { (1, 2) } else { (11, 12) };
        match fault {
            Fault::BlackHole => s.network.set_path_up(x, y, false),
            Fault::Cut => {
                s.network.set_path_up(x, y, false);
                if let Some(a) = s.node_mut::<App>(ia) {
                    a.node.path_closed(now, y);
                }
                if let Some(b) = s.node_mut::<App>(ib) {
                    b.node.path_closed(now, x);
                }
            }
            Fault::BetterAppears => {
                s.network.connect(
                    11,
                    12,
                    LinkConfig::new().latency(lat_b).jitter_uniform(ms(2)),
                );
                if let Some(a) = s.node_mut::<App>(ia) {
                    let pk = a.peer;
                    a.node.add_path(now, &pk, 12);
                }
                if let Some(b) = s.node_mut::<App>(ib) {
                    let pk = b.peer;
                    b.node.add_path(now, &pk, 11);
                }
            }
            Fault::Delay => {
                for (f, t) in [(x, y), (y, x)] {
                    let lat = s.network.link(f, t).map_or(ms(0), |l| l.config().latency);
                    s.network.set_link(
                        f,
                        t,
                        LinkConfig::new()
                            .latency(lat + secs(2))
                            .jitter_uniform(ms(2)),
                    );
                }
            }
        }
    });
    if std::env::var_os("TOXLINK_MULTIPATH_VERBOSE").is_some() {
        for k in 1..12u32 {
            sim.at_instant(fault_time + ms(100) * k, move |s| {
                let now = s.now();
                if let Some(a) = s.node::<App>(ia) {
                    for p in a
                        .node
                        .path_table(&a.peer)
                        .into_iter()
                        .flat_map(|t| t.paths())
                    {
                        eprintln!(
                            "  +{}ms: {:?} {:?} srtt {:?} rate {:.3} sent {:?}",
                            100 * k,
                            p.key(),
                            a.node
                                .path_table(&a.peer)
                                .and_then(|t| t.health(now, &p.key())),
                            p.health().rtt().srtt(),
                            p.health().loss().rate(),
                            p.sent()
                        );
                    }
                }
            });
        }
    }
    let done = |s: &mut Sim<u8>| {
        let failed = s.node::<App>(ia).is_some_and(|a| a.failure.is_some())
            || s.node::<App>(ib).is_some_and(|b| b.failure.is_some());
        !failed && s.node::<App>(ib).is_some_and(|b| b.recv_next < COUNT)
    };
    let res = sim.run_while(done, secs(30));
    let a = sim.node::<App>(ia).ok_or("node a")?;
    let b = sim.node::<App>(ib).ok_or("node b")?;
    let victim = victim.get();
    // The switch the fault calls for: off the victim, or onto path B.
    let switch = a
        .path_log
        .iter()
        .filter(|e| e.at >= fault_time && matches!(e.kind, PathEventKind::Primary { .. }))
        .find(|e| match fault {
            Fault::BetterAppears => e.addr == Route::Udp(12),
            _ => e.addr != Route::Udp(victim),
        })
        .map(|e| e.at.saturating_duration_since(fault_time));
    if std::env::var_os("TOXLINK_MULTIPATH_VERBOSE").is_some() {
        eprintln!(
            "seed {seed} {fault:?}: A {lat_a:?} B {lat_b:?} victim {victim} gap {:?} switch {switch:?} stats {:?}",
            b.max_gap,
            a.node.stats()
        );
        eprintln!("  receiver stats {:?}", b.node.stats());
        eprintln!(
            "  session srtt {:?} min {:?}",
            a.node.session(&a.peer).map(|s| s.congestion().srtt()),
            a.node.session(&a.peer).map(|s| s.congestion().min_rtt())
        );
        for (n, t) in [
            ("a", a.node.path_table(&a.peer)),
            ("b", b.node.path_table(&b.peer)),
        ] {
            let Some(t) = t else { continue };
            for p in t.paths() {
                eprint!("  {n} ");
                eprintln!(
                    "  path {:?} {:?} srtt {:?} min {:?} loss {:?} sent {:?}",
                    p.key(),
                    p.state(),
                    p.health().rtt().srtt(),
                    p.health().rtt().min(),
                    p.health().loss().totals(),
                    p.sent()
                );
            }
        }
        for e in &a.path_log {
            eprintln!(
                "  {:?} {:?} {:?}",
                e.at.saturating_duration_since(fault_time),
                e.addr,
                e.kind
            );
        }
    }
    if let Some(f) = a.failure.as_ref().or(b.failure.as_ref()) {
        return Err(f.clone());
    }
    res.map_err(|e| format!("{e}: delivered {} of {COUNT}", b.recv_next))?;
    if b.recv_next != COUNT {
        return Err(format!("delivered {} of {COUNT}", b.recv_next));
    }
    Ok(Figures {
        max_gap: b.max_gap,
        switch,
        copy_bytes: a.node.stats().copy_bytes,
        delivered: b.recv_bytes,
    })
}

/// Runs `fault` for `seeds`, checks each seed with `check`, prints the worst
/// figures and the redundancy overhead.
fn run(
    name: &str,
    seeds: std::ops::Range<u64>,
    fault: Fault,
    check: fn(&Figures) -> Result<(), String>,
) {
    let all: Mutex<Vec<Figures>> = Mutex::new(Vec::new());
    run_seeds(name, seeds, |seed| {
        let f = scenario(seed, fault)?;
        check(&f)?;
        all.lock().map_err(|e| e.to_string())?.push(f);
        Ok(())
    });
    let all = all.into_inner().unwrap_or_default();
    let worst_gap = all.iter().map(|f| f.max_gap).max().unwrap_or_default();
    let worst_switch = all.iter().filter_map(|f| f.switch).max();
    let copies: u64 = all.iter().map(|f| f.copy_bytes).sum();
    let delivered: u64 = all.iter().map(|f| f.delivered).sum();
    eprintln!(
        "{name}: {} seeds, longest delivery gap {worst_gap:?}, slowest switch {worst_switch:?}, redundancy overhead {:.1}% (secondary copy bytes / bytes delivered)",
        all.len(),
        100.0 * copies as f64 / delivered.max(1) as f64
    );
}

#[test]
fn primary_black_hole_loses_nothing_gap_under_1_5_s() {
    run("primary_black_hole", 0..100, Fault::BlackHole, |f| {
        if f.max_gap >= ms(1500) {
            return Err(format!("gap {:?}", f.max_gap));
        }
        Ok(())
    });
}

#[test]
fn primary_cut_with_close_signal_loses_nothing_gap_under_1_5_s() {
    run("primary_cut", 0..100, Fault::Cut, |f| {
        if f.max_gap >= ms(1500) {
            return Err(format!("gap {:?}", f.max_gap));
        }
        Ok(())
    });
}

#[test]
fn a_clean_path_appearing_takes_the_traffic_off_a_lossy_one() {
    run(
        "better_path_appears",
        0..100,
        Fault::BetterAppears,
        // Bound 2 s: the new path's RTT is measured by acks that come back
        // on the old, lossy path, so its estimate starts high (80 ms for a
        // 12 ms path in the slowest seed) and converges over a few probes;
        // since loss is judged per send path (a relay queue is not loss),
        // the old path's losses are no longer inferred from the new path's
        // faster packets, and the slowest of 300 seeds takes 1.54 s (was
        // 1.06 s). The issue-6 bound "on UDP < 1 s after it works" (relays
        // → UDP) is checked in relay_paths.rs.
        |f| match f.switch {
            Some(s) if s < secs(2) => Ok(()),
            s => Err(format!("switch to the better path {s:?}")),
        },
    );
}

#[test]
fn two_seconds_of_delay_moves_traffic_off_in_under_3_s() {
    run("primary_delayed_2s", 0..100, Fault::Delay, |f| {
        match f.switch {
            Some(s) if s < secs(3) => Ok(()),
            s => Err(format!("moved off after {s:?}")),
        }
    });
}
