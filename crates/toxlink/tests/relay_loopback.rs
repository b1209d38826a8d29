//! Two toxlink relay clients through the toxlink relay server on loopback.

mod common;

use common::*;
use std::time::{Duration, Instant};
use toxlink::relay::{RelayServer, RelayServerConfig, RelayServerHandle};
use toxlink_proto::relay_client::{PeerRelayState, RelayLinkState, RelaySetEvent};
use toxlink_proto::relay_server::ServerConfig;

async fn server() -> RelayServerHandle {
    RelayServer::bind(RelayServerConfig {
        keypair: keypair(500),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        stun_listen: Vec::new(),
        server: ServerConfig::default(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_packets_each_way_in_order() {
    let s = server().await;
    let relay = s.public_key();
    let (a, b) = two_nodes(relay, s.local_addrs()[0], 1).await;
    exchange(&a, &b, relay, 10_000).await;
    let c = s.counters();
    assert_eq!(c.data_packets, 20_000);
    assert_eq!(c.oob_packets, 2);
    assert_eq!(c.drop_queue_full, 0, "client queues bound the relay's");
    a.shutdown().await;
    b.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_ipv4_and_ipv6_at_once() {
    let s = match RelayServer::bind(RelayServerConfig {
        keypair: keypair(501),
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        stun_listen: Vec::new(),
        server: ServerConfig::default(),
    })
    .await
    {
        Ok(s) => s,
        Err(e) => panic!("binding 127.0.0.1 and ::1: {e}"),
    };
    let relay = s.public_key();
    let v6 = s.local_addrs()[1];
    assert!(v6.is_ipv6());
    let (a, b) = two_nodes(relay, v6, 20).await;
    exchange(&a, &b, relay, 100).await;
    a.shutdown().await;
    b.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_peer_is_noticed_at_once_and_relay_restart_reconnects() {
    let s = server().await;
    let relay = s.public_key();
    let addr = s.local_addrs()[0];
    let (a, b) = two_nodes(relay, addr, 10).await;
    let pb = b.public_key();
    // b goes away: a hears the disconnect notification at once (no 30-40 s
    // keep-alive wait as with tox-bootstrapd).
    let t = Instant::now();
    b.shutdown().await;
    wait_for(&a, 2, |e| {
        matches!(e, RelaySetEvent::PeerState { peer, state: PeerRelayState::Registered, .. } if *peer == pb)
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(1));
    // The relay dies (connections reset): a notices at once and keeps
    // retrying with backoff.
    s.shutdown().await;
    wait_for(&a, 2, |e| matches!(e, RelaySetEvent::RelayDown { .. })).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_ne!(a.relay_state(&relay), Some(RelayLinkState::Connected));
    a.shutdown().await;
}
