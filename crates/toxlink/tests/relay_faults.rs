//! The fault-injecting relay on real sockets: corrupted DATA still arrives
//! in valid relay frames (only the end-to-end layer can notice), and a
//! black-holed relay keeps answering pings while DATA vanishes.

mod common;

use common::*;
use std::time::Duration;
use toxlink::relay::{RelayServer, RelayServerConfig};
use toxlink_proto::relay_client::{RelayLinkState, RelaySetEvent};
use toxlink_proto::relay_server::{FaultConfig, FaultInjector, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupting_then_blackholing_relay() {
    let (s, faults) = RelayServer::bind_with_fault_hook(RelayServerConfig {
        keypair: keypair(700),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        stun_listen: Vec::new(),
        server: ServerConfig::default(),
    })
    .await
    .unwrap();
    let relay = s.public_key();
    let (a, b) = two_nodes(relay, s.local_addrs()[0], 71).await;
    faults.set(FaultInjector::new(FaultConfig {
        corrupt: 0.25,
        blackhole_after: Some(Duration::from_millis(1500)),
        seed: 9,
        ..FaultConfig::default()
    }));
    let pb = b.public_key();
    for i in 0..400u32 {
        a.send_data_wait(&relay, &pb, &[i.to_be_bytes(), [0xee; 4]].concat())
            .await
            .unwrap();
    }
    let mut bad = 0;
    for i in 0..400u32 {
        let ev = wait_for(&b, 5, |e| matches!(e, RelaySetEvent::Data { .. })).await;
        let RelaySetEvent::Data { data, .. } = ev else {
            unreachable!()
        };
        if data != [i.to_be_bytes(), [0xee; 4]].concat() {
            bad += 1;
        }
    }
    assert_eq!(bad, s.counters().fault_corrupted);
    assert!((50..150).contains(&bad), "{bad} of 400 corrupted");
    // After the black-hole time: DATA vanishes, the link stays up (pings
    // are still answered).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..50 {
        a.send_data(&relay, &pb, b"gone").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.counters().drop_fault, 50);
    assert_eq!(a.relay_state(&relay), Some(RelayLinkState::Connected));
    let pongs_before = a.relay_counters(&relay).unwrap().0.pongs;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(a.relay_counters(&relay).unwrap().0.pongs > pongs_before);
    a.shutdown().await;
    b.shutdown().await;
    s.shutdown().await;
}
