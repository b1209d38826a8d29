//! Relays as paths of a connection, with real sockets on loopback (issue 6):
//! two toxlink nodes share three toxlink relays (and, where said, direct
//! UDP); a lossless stream must arrive complete and in order while relays
//! are reset, killed, corrupt, and UDP comes and goes. Each test prints its
//! longest delivery gap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use toxlink::{Connection, Node, Received};
use toxlink_faults::FaultyRelay;
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::node::{NodeConfig, PathEventKind, RelayEvent, Route};
use toxlink_proto::paths::pool::LossReason;
use toxlink_proto::relay_server::FaultConfig;

/// Both nodes share one host, so they would find the direct path by
/// themselves (node::discovery): off here, where UDP is used only where a
/// test says so.
fn cfg() -> NodeConfig {
    NodeConfig {
        dht_is_real: true,
        discover_direct_paths: false,
        ..NodeConfig::default()
    }
}

fn key(seed: u8) -> KeyPair {
    use rand_chacha::rand_core::SeedableRng;
    KeyPair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(u64::from(
        seed,
    )))
}

struct Setup {
    a: Node,
    b: Arc<Node>,
    relays: Vec<FaultyRelay>,
}

async fn setup(n_relays: usize, seed: u8) -> Setup {
    let mut relays = Vec::new();
    for _ in 0..n_relays {
        relays.push(FaultyRelay::start().await.expect("relay"));
    }
    let a = Node::bind("127.0.0.1:0".parse().unwrap(), key(seed), cfg())
        .await
        .expect("bind a");
    let b = Node::bind("127.0.0.1:0".parse().unwrap(), key(seed + 1), cfg())
        .await
        .expect("bind b");
    b.allow(a.public_key());
    for r in &relays {
        a.add_relay(r.public_key(), r.addr());
        b.add_relay(r.public_key(), r.addr());
    }
    Setup {
        a,
        b: Arc::new(b),
        relays,
    }
}

/// Connects a → b through relays only (or UDP too with `udp`), within 15 s.
async fn connect(s: &Setup, udp: bool) -> (Connection, Connection) {
    timeout(Duration::from_secs(15), connect_now(s, udp))
        .await
        .expect("connected in time")
}

async fn connect_now(s: &Setup, udp: bool) -> (Connection, Connection) {
    let b = s.b.clone();
    let acc = tokio::spawn(async move { b.accept().await });
    let ca = if udp {
        s.a.connect(s.b.public_key(), s.b.dht_key(), s.b.local_addr())
            .await
    } else {
        s.a.connect_via_relays(s.b.public_key(), s.b.dht_key())
            .await
    };
    let ca = ca.expect("connect");
    let cb = timeout(Duration::from_secs(10), acc)
        .await
        .expect("accept in time")
        .expect("join")
        .expect("incoming");
    (ca, cb)
}

/// `from` connects to `to` through relays only, within 15 s.
async fn via_relays(from: &Node, to: &Node, what: &str) -> Connection {
    timeout(
        Duration::from_secs(15),
        from.connect_via_relays(to.public_key(), to.dht_key()),
    )
    .await
    .expect("in time")
    .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// What [`receive`] on `rx` returns, within 60 s; `what` if it failed.
async fn all_received(
    rx: tokio::task::JoinHandle<Result<Duration, String>>,
    what: &str,
) -> Duration {
    timeout(Duration::from_secs(60), rx)
        .await
        .expect("received in time")
        .expect("join")
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Packet `i`: id 160, then i (BE32), then a filler derived from i.
fn packet(i: u32) -> Vec<u8> {
    let mut p = vec![160u8];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..600u32).map(|k| (i.wrapping_mul(31).wrapping_add(k)) as u8));
    p
}

/// Receives `n` packets in order; returns the longest gap between two
/// deliveries.
async fn receive(cb: Connection, n: u32) -> Result<Duration, String> {
    let mut last = Instant::now();
    let mut gap = Duration::ZERO;
    for i in 0..n {
        let r = timeout(Duration::from_secs(20), cb.recv())
            .await
            .map_err(|_| format!("packet {i}: nothing for 20 s"))?;
        match r {
            Some(Received::Lossless(d)) => {
                if d != packet(i) {
                    return Err(format!("packet {i}: wrong content or order"));
                }
            }
            Some(Received::Lossy(_)) => return Err("unexpected lossy".into()),
            None => return Err(format!("closed at packet {i}")),
        }
        let now = Instant::now();
        gap = gap.max(now - last);
        last = now;
    }
    Ok(gap)
}

/// Sends `n` packets, calling `at(i)` before packet i (fault schedule).
async fn send(ca: &Connection, n: u32, pace_every: u32, mut at: impl FnMut(u32)) {
    for i in 0..n {
        at(i);
        ca.send_lossless(&packet(i)).await.expect("send");
        if pace_every > 0 && i % pace_every == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn relay_of(k: Option<Route<std::net::SocketAddr>>) -> Option<toxlink_proto::crypto::PublicKey> {
    k.and_then(|k| k.relay().copied())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_transfer_and_relay_reset() {
    let s = setup(3, 10).await;
    let (ca, cb) = connect(&s, false).await;
    let n = 6000;
    let rx = tokio::spawn(receive(cb, n));
    let mut reset_done = false;
    send(&ca, n, 20, |i| {
        if i == 2000 && !reset_done {
            reset_done = true;
            // Reset the relay carrying the traffic.
            if let Some(pk) = relay_of(s.a.primary(&s.b.public_key())) {
                let r = s.relays.iter().find(|r| r.public_key() == pk).unwrap();
                assert!(r.reset() > 0, "something to reset");
            }
        }
    })
    .await;
    let gap = all_received(rx, "all in order").await;
    assert!(reset_done);
    println!("relay reset: longest delivery gap {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupting_relay_is_dropped_and_replaced() {
    let s = setup(4, 20).await;
    let started = Instant::now();
    // The relay b receives through (a's primary) corrupts 10 %; nothing
    // corrupted is delivered. The fault comes after b has taken over 1 MiB
    // through it (the relay's send buffer towards b has grown to its full
    // size: while it is small, a loaded machine can make a move off the
    // relay for its queue before b has seen the three failures blame
    // needs; failed once in CI).
    let f = stream_with_fault_on_primary(
        &s,
        6000,
        20,
        2500,
        FaultConfig {
            corrupt: 0.1,
            seed: 7,
            ..FaultConfig::default()
        },
    )
    .await;
    let (victim, corrupt_at) = (f.victim, f.at);
    // b saw the failures and dropped the relay for a, then replaced it.
    let mut dropped = None;
    let mut added_after = false;
    while let Some(e) = s.b.poll_path_event() {
        match e.kind {
            PathEventKind::RelayDropped {
                reason: LossReason::Tampering,
            } if e.addr.relay() == Some(&victim) => dropped = Some(e.at),
            PathEventKind::RelayAdded if dropped.is_some() => added_after = true,
            _ => {}
        }
    }
    let dropped = dropped.expect("the corrupting relay was dropped for the peer");
    assert!(added_after, "a replacement relay was added");
    let t = dropped.saturating_duration_since(corrupt_at);
    println!(
        "corrupting relay dropped {t:?} after it started corrupting (run {:?})",
        started.elapsed()
    );
    let mut probed = false;
    while let Some(e) = s.b.poll_relay_event() {
        if let RelayEvent::Probed(o) = e {
            if o.relay == victim {
                probed = true;
            }
        }
    }
    println!("self-probe ran: {probed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_relays_switch_both_ways() {
    let s = setup(3, 30).await;
    let (ca, cb) = connect(&s, true).await;
    let n = 12000;
    let rx = tokio::spawn(receive(cb, n));
    let b_udp = s.b.local_addr();
    let a_udp = s.a.local_addr();
    let (a, b) = (&s.a, &s.b);
    send(&ca, n, 20, |i| match i {
        3000 | 9000 => {
            a.set_udp_blocked(b_udp, true);
            b.set_udp_blocked(a_udp, true);
        }
        6000 => {
            a.set_udp_blocked(b_udp, false);
            b.set_udp_blocked(a_udp, false);
        }
        _ => {}
    })
    .await;
    let gap = all_received(rx, "all in order").await;
    let mut primaries = Vec::new();
    while let Some(e) = s.a.poll_path_event() {
        if let PathEventKind::Primary { .. } = e.kind {
            primaries.push(e.addr);
        }
    }
    println!("udp/relay switches: {primaries:?}; longest gap {gap:?}");
    assert!(
        primaries.iter().any(|r| r.relay().is_some()),
        "moved to a relay"
    );
    assert!(
        primaries.iter().any(|r| matches!(r, Route::Udp(_))),
        "used UDP"
    );
}

/// Installs `cfg` on the relay a currently sends on; returns its index.
fn fault_primary(s: &Setup, cfg: FaultConfig) -> usize {
    let pk = relay_of(s.a.primary(&s.b.public_key())).expect("a sends on a relay");
    let i = s
        .relays
        .iter()
        .position(|r| r.public_key() == pk)
        .expect("one of ours");
    assert!(s.relays[i].is_running(), "relay {i} running");
    s.relays[i].set_faults(cfg);
    i
}

/// When a's primary first left relay `victim` after `since`.
fn moved_off(
    s: &Setup,
    victim: toxlink_proto::crypto::PublicKey,
    since: Instant,
) -> Option<Duration> {
    let mut out = None;
    while let Some(e) = s.a.poll_path_event() {
        if let PathEventKind::Primary { from } = e.kind {
            if e.at >= since
                && out.is_none()
                && from.and_then(|f| f.relay().copied()) == Some(victim)
            {
                out = Some(e.at.saturating_duration_since(since));
            }
        }
    }
    out
}

/// What [`stream_with_fault_on_primary`] saw.
struct Faulted {
    /// The relay that got the fault.
    victim: toxlink_proto::crypto::PublicKey,
    /// When the fault was installed.
    at: Instant,
    /// The longest delivery gap.
    gap: Duration,
}

/// Connects a → b through the relays and streams `n` packets (a pause
/// every `pace` packets); before packet `fault_at` the relay a sends on
/// gets `cfg`. Every packet must arrive, intact and in order.
async fn stream_with_fault_on_primary(
    s: &Setup,
    n: u32,
    pace: u32,
    fault_at: u32,
    cfg: FaultConfig,
) -> Faulted {
    let (ca, cb) = connect(s, false).await;
    let rx = tokio::spawn(receive(cb, n));
    let mut fault = None;
    let mut cfg = Some(cfg);
    send(&ca, n, pace, |i| {
        if i == fault_at {
            if let Some(cfg) = cfg.take() {
                let v = fault_primary(s, cfg);
                fault = Some((s.relays[v].public_key(), Instant::now()));
            }
        }
    })
    .await;
    let gap = all_received(rx, "all in order, nothing corrupted").await;
    let (victim, at) = fault.expect("fault installed");
    Faulted { victim, at, gap }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_relay_is_left_without_loss() {
    let s = setup(3, 40).await;
    let cfg = FaultConfig {
        blackhole_after: Some(Duration::ZERO),
        ..FaultConfig::default()
    };
    let Faulted { victim, at, gap } = stream_with_fault_on_primary(&s, 5000, 10, 1500, cfg).await;
    let moved = moved_off(&s, victim, at).expect("traffic moved off the black hole");
    println!("black hole: moved off after {moved:?}, longest gap {gap:?}");
    assert!(gap < Duration::from_millis(1500), "gap {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delaying_by_two_seconds_is_left_within_three() {
    let s = setup(3, 50).await;
    let cfg = FaultConfig {
        delay_share: 1.0,
        delay: Duration::from_secs(2),
        ..FaultConfig::default()
    };
    let Faulted { victim, at, gap } = stream_with_fault_on_primary(&s, 5000, 5, 1000, cfg).await;
    let moved = moved_off(&s, victim, at).expect("traffic moved off the slow relay");
    println!("2 s delay: moved off after {moved:?}, longest gap {gap:?}");
    assert!(moved < Duration::from_secs(3), "moved after {moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_relays_but_one_die_then_come_back() {
    let mut s = setup(3, 60).await;
    let (ca, cb) = connect(&s, false).await;
    let n = 6000;
    let rx = tokio::spawn(receive(cb, n));
    for i in 0..n {
        if i == 1500 {
            s.relays[0].kill().await;
            s.relays[1].kill().await;
        }
        if i == 3500 {
            s.relays[0].restart().await.expect("restart 0");
            s.relays[1].restart().await.expect("restart 1");
        }
        ca.send_lossless(&packet(i)).await.expect("send");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let gap = all_received(rx, "all in order, never offline").await;
    // The dead relays came back into use.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active =
            s.a.inspect(|c| c.relay_pool().active(&s.b.public_key()).len());
        if active == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "relays back in use: {active}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("two of three relays died and came back: longest gap {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_black_hole_through_a_forwarder_falls_back_to_relays() {
    use toxlink_faults::{Mode, UdpForwarder};
    let s = setup(3, 70).await;
    let fwd = UdpForwarder::start(s.b.local_addr())
        .await
        .expect("forwarder");
    // a reaches b's UDP only through the forwarder.
    let b = s.b.clone();
    let acc = tokio::spawn(async move { b.accept().await });
    let ca = timeout(
        Duration::from_secs(15),
        s.a.connect(s.b.public_key(), s.b.dht_key(), fwd.a_side()),
    )
    .await
    .expect("in time")
    .expect("connect");
    let cb = timeout(Duration::from_secs(10), acc)
        .await
        .expect("accept in time")
        .expect("join")
        .expect("incoming");
    // b learns a's UDP address from a UDP handshake only; when the
    // handshake through a relay wins the race, b must be told (as the DHT
    // would tell it), or a's UDP packets are from an unknown address.
    s.b.add_path(&s.a.public_key(), fwd.b_side());
    let n = 8000;
    let rx = tokio::spawn(receive(cb, n));
    let mut hole_at = None;
    for i in 0..n {
        if i == 2000 {
            // Measure from UDP: wait (bounded) until it is the primary.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(s.a.primary(&s.b.public_key()), Some(Route::Udp(_))) {
                assert!(Instant::now() < deadline, "UDP never became the primary");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            fwd.set_mode(Mode::BlackHole);
            hole_at = Some(Instant::now());
        }
        if i == 5000 {
            fwd.set_mode(Mode::Pass);
        }
        ca.send_lossless(&packet(i)).await.expect("send");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let gap = all_received(rx, "all in order").await;
    let mut to_relay = None;
    let mut back_to_udp = false;
    while let Some(e) = s.a.poll_path_event() {
        if let PathEventKind::Primary { .. } = e.kind {
            if e.at >= hole_at.unwrap() {
                match e.addr {
                    Route::Relay { .. } if to_relay.is_none() => {
                        to_relay = Some(e.at.saturating_duration_since(hole_at.unwrap()))
                    }
                    Route::Udp(_) if to_relay.is_some() => back_to_udp = true,
                    _ => {}
                }
            }
        }
    }
    let to_relay = to_relay.expect("moved to a relay");
    println!("UDP black hole: on a relay after {to_relay:?}, back on UDP: {back_to_udp}, longest gap {gap:?}");
    assert!(gap < Duration::from_secs(1), "gap {gap:?}");
    assert!(back_to_udp, "UDP taken again once it works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_corrupting_one_peers_traffic_is_dropped_for_that_peer_only() {
    // B sends to A and to C through the same three relays; relay R corrupts
    // only what it forwards to A.
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(FaultyRelay::start().await.expect("relay"));
    }
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = Arc::new(Node::bind(lo, key(80), cfg()).await.expect("a"));
    let b = Node::bind(lo, key(81), cfg()).await.expect("b");
    let c = Arc::new(Node::bind(lo, key(82), cfg()).await.expect("c"));
    a.allow(b.public_key());
    c.allow(b.public_key());
    for r in &relays {
        for n in [&*a, &b, &*c] {
            n.add_relay(r.public_key(), r.addr());
        }
    }
    let (aa, cc) = (a.clone(), c.clone());
    let acc_a = tokio::spawn(async move { aa.accept().await });
    let acc_c = tokio::spawn(async move { cc.accept().await });
    let to_a = via_relays(&b, &a, "b -> a").await;
    let to_c = via_relays(&b, &c, "b -> c").await;
    let from_b_at_a = acc_a.await.expect("join").expect("a accepted");
    let from_b_at_c = acc_c.await.expect("join").expect("c accepted");
    let n = 4000;
    let rx_a = tokio::spawn(receive(from_b_at_a, n));
    let rx_c = tokio::spawn(receive(from_b_at_c, n));
    let mut victim = None;
    for i in 0..n {
        if i == 1000 {
            let pk = relay_of(b.primary(&a.public_key())).expect("b sends to a on a relay");
            let r = relays.iter().find(|r| r.public_key() == pk).unwrap();
            assert!(r.is_running(), "the victim relay runs");
            r.set_faults(FaultConfig {
                corrupt: 0.2,
                only_to: Some(a.dht_key()),
                seed: 3,
                ..FaultConfig::default()
            });
            victim = Some(pk);
        }
        to_a.send_lossless(&packet(i)).await.expect("send to a");
        to_c.send_lossless(&packet(i)).await.expect("send to c");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for rx in [rx_a, rx_c] {
        all_received(rx, "all in order, nothing corrupted").await;
    }
    let victim = victim.unwrap();
    let mut dropped_at_a = false;
    while let Some(e) = a.poll_path_event() {
        if e.addr.relay() == Some(&victim)
            && e.kind
                == (PathEventKind::RelayDropped {
                    reason: LossReason::Tampering,
                })
        {
            dropped_at_a = true;
        }
    }
    assert!(
        dropped_at_a,
        "A dropped the relay that corrupts its traffic"
    );
    // C never saw a bad packet: the relay is still one of its paths to B.
    let (c_uses, c_blames) = c.inspect(|core| {
        (
            core.relay_pool().active(&b.public_key()).contains(&victim),
            core.blame().is_disconnected(&victim) || core.stats().relay_auth_failures > 0,
        )
    });
    assert!(c_uses, "C still uses the relay for B");
    assert!(!c_blames, "C has nothing against the relay");
    println!("relay corrupting only A's traffic: dropped by A, kept by C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_relay_only_connection_reaches_the_peer() {
    let s = setup(2, 90).await;
    let (ca, cb) = connect(&s, false).await;
    ca.send_lossless(&packet(0)).await.expect("send");
    let first = timeout(Duration::from_secs(5), cb.recv())
        .await
        .expect("in time");
    assert_eq!(first, Some(Received::Lossless(packet(0))));
    ca.close();
    // The KILL travels through the relay ahead of the route's teardown.
    let r = timeout(Duration::from_secs(5), cb.recv())
        .await
        .expect("the peer saw the close within 5 s (not the 32 s timeout)");
    assert_eq!(r, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_framing_a_good_relay_hurts_only_itself() {
    use toxlink::relay::RelaySetRuntime;
    use toxlink_proto::relay_client::{PeerRelayState, RelaySetConfig};
    // B talks to A through relay R1 only, and to the framing friend F
    // through R2 and R3; F also holds a raw link on R1 with its own key and
    // sends garbage to B there.
    let relays = [
        FaultyRelay::start().await.expect("r1"),
        FaultyRelay::start().await.expect("r2"),
        FaultyRelay::start().await.expect("r3"),
    ];
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = Node::bind(lo, key(100), cfg()).await.expect("a");
    let b = Arc::new(Node::bind(lo, key(101), cfg()).await.expect("b"));
    let f_key = key(102);
    let f = Node::bind(lo, f_key.clone(), cfg()).await.expect("f");
    b.allow(a.public_key());
    b.allow(f.public_key());
    for r in &relays {
        b.add_relay(r.public_key(), r.addr());
    }
    a.add_relay(relays[0].public_key(), relays[0].addr());
    for r in &relays[1..] {
        f.add_relay(r.public_key(), r.addr());
    }
    let bb = b.clone();
    let acc = tokio::spawn(async move {
        let x = bb.accept().await;
        let y = bb.accept().await;
        (x, y)
    });
    let ca = via_relays(&a, &b, "a -> b").await;
    let _cf = via_relays(&f, &b, "f -> b").await;
    let (x, y) = timeout(Duration::from_secs(10), acc)
        .await
        .expect("accepted in time")
        .expect("join");
    let (x, y) = (x.expect("first"), y.expect("second"));
    let from_a = if x.peer() == a.public_key() { x } else { y };
    // F's raw link on R1, routed to B.
    let r1 = relays[0].public_key();
    let raw = RelaySetRuntime::new(f_key, RelaySetConfig::default());
    raw.add_relay(r1, relays[0].addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = raw.tie(b.dht_key(), &r1);
        if raw
            .peer_relays(&b.dht_key())
            .iter()
            .any(|(r, s)| *r == r1 && *s == PeerRelayState::Online)
        {
            break;
        }
        assert!(Instant::now() < deadline, "raw link routed to B on R1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Garbage shaped like net_crypto data packets, while A streams to B.
    let n = 2000;
    let rx = tokio::spawn(receive(from_a, n));
    for i in 0..n {
        if i % 100 == 0 && i < 1000 {
            let mut junk = vec![27u8; 200];
            junk[1] = i as u8;
            let _ = raw.send_data(&r1, &b.dht_key(), &junk);
        }
        ca.send_lossless(&packet(i)).await.expect("send");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    all_received(rx, "A's stream intact through R1").await;
    // B dropped R1 for F only; its self-probe proved R1 good; R1 is still
    // in use for A.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probed_ok = false;
    let mut disconnected = false;
    while !probed_ok && Instant::now() < deadline {
        while let Some(e) = b.poll_relay_event() {
            match e {
                RelayEvent::Probed(o) if o.relay == r1 && o.ok => probed_ok = true,
                RelayEvent::Disconnected { relay, .. } if relay == r1 => disconnected = true,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(probed_ok, "B's self-probe through R1 passed");
    assert!(!disconnected, "R1 not disconnected");
    let (dropped_for_f, kept_for_a) = b.inspect(|core| {
        (
            core.blame().is_dropped_for(&r1, &f.public_key()),
            core.relay_pool().active(&a.public_key()).contains(&r1),
        )
    });
    assert!(dropped_for_f, "R1 dropped for the framing friend");
    assert!(kept_for_a, "R1 still in use for A");
    println!("framing: R1 dropped for F only, self-probe good, kept for A");
}
