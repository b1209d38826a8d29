//! The fault tools of `toxlink-faults` on real loopback sockets: a relay
//! reset (RST to every client, still listening), a relay killed (listener
//! closed too) and restarted, a dropped server handle, and faults on DATA to
//! one receiver only.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use toxlink_faults::FaultyRelay;
use toxlink_proto::relay_client::{PeerRelayState, RelayLinkState, RelaySetEvent};

/// Waits (bounded) until the relay counts `n` client connections.
async fn wait_clients(relay: &FaultyRelay, n: u64) {
    for _ in 0..400 {
        if relay.handle().is_some_and(|h| h.counters().clients == n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("relay never had {n} clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_sends_rst_and_clients_reconnect() {
    let relay = FaultyRelay::start().await.unwrap();
    let (rk, addr) = (relay.public_key(), relay.addr());
    let (a, b) = two_nodes(rk, addr, 800).await;
    // A raw TCP connection (no handshake yet) sees the RST itself.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    wait_clients(&relay, 3).await;
    let t = Instant::now();
    assert_eq!(relay.reset(), 3);
    let mut buf = [0u8; 16];
    let r = timeout(Duration::from_secs(2), raw.read(&mut buf))
        .await
        .expect("raw read ends in time");
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "closed with RST, not FIN"
    );
    for rt in [&a, &b] {
        let ev = wait_for(rt, 2, |e| matches!(e, RelaySetEvent::RelayDown { .. })).await;
        eprintln!("after reset: {ev:?} at {:?}", t.elapsed());
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    // Still listening: both links come back and the peers meet again.
    let pb = b.public_key();
    wait_for(&a, 10, |e| matches!(e, RelaySetEvent::RelayUp { .. })).await;
    wait_for(&a, 10, |e| {
        matches!(e, RelaySetEvent::PeerState { peer, state: PeerRelayState::Online, .. } if *peer == pb)
    })
    .await;
    assert_eq!(a.relay_state(&rk), Some(RelayLinkState::Connected));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_links_and_listener_restart_brings_them_back() {
    let mut relay = FaultyRelay::start().await.unwrap();
    let (rk, addr) = (relay.public_key(), relay.addr());
    let (a, b) = two_nodes(rk, addr, 810).await;
    let t = Instant::now();
    relay.kill().await;
    assert!(!relay.is_running());
    for rt in [&a, &b] {
        wait_for(rt, 2, |e| matches!(e, RelaySetEvent::RelayDown { .. })).await;
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    let refused = timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .expect("connect answered in time");
    assert!(refused.is_err(), "nothing listens once killed");
    assert_ne!(a.relay_state(&rk), Some(RelayLinkState::Connected));
    // Same key, same address: the clients' retries find it again.
    relay.restart().await.unwrap();
    assert_eq!(relay.addr(), addr);
    for rt in [&a, &b] {
        wait_for(rt, 15, |e| matches!(e, RelaySetEvent::RelayUp { .. })).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    relay.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_relay_is_a_kill() {
    let relay = FaultyRelay::start().await.unwrap();
    let (rk, addr) = (relay.public_key(), relay.addr());
    let (a, b) = two_nodes(rk, addr, 820).await;
    drop(relay);
    for rt in [&a, &b] {
        wait_for(rt, 2, |e| matches!(e, RelaySetEvent::RelayDown { .. })).await;
    }
    // The listener goes with the aborted accept task (bounded wait).
    let mut closed = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "listener closed after the handle was dropped");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_only_to_one_receiver_then_cleared() {
    use toxlink_proto::relay_server::FaultConfig;

    let relay = FaultyRelay::start().await.unwrap();
    let rk = relay.public_key();
    let (a, b) = two_nodes(rk, relay.addr(), 830).await;
    let (pa, pb) = (a.public_key(), b.public_key());
    relay.set_faults(FaultConfig {
        drop: 1.0,
        only_to: Some(pb),
        ..FaultConfig::default()
    });
    for i in 0..20u8 {
        a.send_data_wait(&rk, &pb, &[i; 50]).await.unwrap();
        b.send_data_wait(&rk, &pa, &[i; 60]).await.unwrap();
    }
    // b -> a is untouched.
    for i in 0..20u8 {
        let ev = wait_for(&a, 5, |e| matches!(e, RelaySetEvent::Data { .. })).await;
        let RelaySetEvent::Data { data, .. } = ev else {
            unreachable!()
        };
        assert_eq!(data, vec![i; 60]);
    }
    let h = relay.handle().unwrap();
    for _ in 0..200 {
        if h.counters().drop_fault == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.counters().drop_fault, 20, "every a -> b packet dropped");
    relay.clear_faults();
    a.send_data_wait(&rk, &pb, b"after clear").await.unwrap();
    let ev = wait_for(&b, 5, |e| matches!(e, RelaySetEvent::Data { .. })).await;
    let RelaySetEvent::Data { data, .. } = ev else {
        unreachable!()
    };
    assert_eq!(
        data, b"after clear",
        "nothing dropped earlier leaked through"
    );
    assert_eq!(h.counters().drop_fault, 20);
    a.shutdown().await;
    b.shutdown().await;
}
