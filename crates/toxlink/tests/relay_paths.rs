//! Relays as paths of a connection, with real sockets on loopback (issue 6):
//! two toxlink nodes share three toxlink relays (and, where said, direct
//! UDP); a lossless stream must arrive complete and in order while relays
//! are reset, killed, corrupt, and UDP comes and goes. Each test prints its
//! longest delivery gap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use toxlink::testing::FaultyRelay;
use toxlink::{Connection, Node, Received};
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::node::{NodeConfig, PathEventKind, RelayEvent, Route};
use toxlink_proto::paths::pool::LossReason;
use toxlink_proto::paths::PathKey;
use toxlink_proto::relay_server::{FaultConfig, FaultInjector};

fn cfg() -> NodeConfig {
    NodeConfig {
        dht_is_real: true,
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

/// Connects a → b through relays only (or UDP too with `udp`).
async fn connect(s: &Setup, udp: bool) -> (Connection, Connection) {
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

fn relay_of(k: Option<PathKey>) -> Option<toxlink_proto::crypto::PublicKey> {
    k.and_then(|k| k.relay().copied())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_transfer_and_relay_reset() {
    let s = setup(3, 10).await;
    let (ca, cb) = timeout(Duration::from_secs(15), connect(&s, false))
        .await
        .expect("connected through relays in time");
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
    let gap = timeout(Duration::from_secs(60), rx)
        .await
        .expect("received in time")
        .expect("join")
        .expect("all in order");
    assert!(reset_done);
    println!("relay reset: longest delivery gap {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupting_relay_is_dropped_and_replaced() {
    let s = setup(4, 20).await;
    let (ca, cb) = timeout(Duration::from_secs(15), connect(&s, false))
        .await
        .expect("connected in time");
    let n = 6000;
    let rx = tokio::spawn(receive(cb, n));
    let mut victim = None;
    let started = Instant::now();
    let mut corrupt_at = None;
    send(&ca, n, 20, |i| {
        if i == 1500 {
            // The relay b receives through: a's primary.
            let pk = relay_of(s.a.primary(&s.b.public_key())).expect("on a relay");
            let r = s.relays.iter().find(|r| r.public_key() == pk).unwrap();
            r.handle()
                .unwrap()
                .set_fault_injector(FaultInjector::new(FaultConfig {
                    corrupt: 0.1,
                    seed: 7,
                    ..FaultConfig::default()
                }));
            victim = Some(pk);
            corrupt_at = Some(Instant::now());
        }
    })
    .await;
    timeout(Duration::from_secs(60), rx)
        .await
        .expect("received in time")
        .expect("join")
        .expect("all in order, nothing corrupted");
    let victim = victim.expect("victim chosen");
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
    let t = dropped.saturating_duration_since(corrupt_at.unwrap());
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
    assert!(!matches!(
        Route::<SocketAddr>::Relay {
            relay: victim,
            peer: s.a.dht_key()
        },
        Route::Udp(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_relays_switch_both_ways() {
    let s = setup(3, 30).await;
    let (ca, cb) = timeout(Duration::from_secs(15), connect(&s, true))
        .await
        .expect("connected in time");
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
    let gap = timeout(Duration::from_secs(60), rx)
        .await
        .expect("received in time")
        .expect("join")
        .expect("all in order");
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
