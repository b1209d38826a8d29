//! Shared helpers of the relay integration tests: two nodes on one relay.

#![allow(dead_code)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::timeout;
use toxlink::relay::RelaySetRuntime;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_client::{PeerRelayState, RelaySetConfig, RelaySetEvent};

pub fn keypair(seed: u64) -> KeyPair {
    KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// Waits (bounded) for an event matching `f`, skipping others.
pub async fn wait_for(
    rt: &RelaySetRuntime,
    secs: u64,
    mut f: impl FnMut(&RelaySetEvent) -> bool,
) -> RelaySetEvent {
    timeout(Duration::from_secs(secs), async {
        loop {
            let ev = rt.next_event().await.expect("event channel open");
            if f(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event in time")
}

/// Two nodes tied to each other on one relay, both ONLINE.
pub async fn two_nodes(
    relay: PublicKey,
    addr: SocketAddr,
    seed: u64,
) -> (RelaySetRuntime, RelaySetRuntime) {
    let a = RelaySetRuntime::new(keypair(seed), RelaySetConfig::default());
    let b = RelaySetRuntime::new(keypair(seed + 1), RelaySetConfig::default());
    let (pa, pb) = (a.public_key(), b.public_key());
    a.add_relay(relay, addr);
    b.add_relay(relay, addr);
    a.tie(pb, &relay).unwrap();
    b.tie(pa, &relay).unwrap();
    for (rt, peer) in [(&a, pb), (&b, pa)] {
        wait_for(rt, 10, |e| {
            matches!(e, RelaySetEvent::PeerState { peer: p, state: PeerRelayState::Online, .. } if *p == peer)
        })
        .await;
    }
    (a, b)
}

fn payload(i: u32, from: u8) -> Vec<u8> {
    let mut v = vec![from; 100 + (i as usize * 7) % 1300];
    v[..4].copy_from_slice(&i.to_be_bytes());
    v
}

/// Packets a sender may have in flight: a relay drops DATA when a
/// receiver's queue is full (as c-toxcore's does), so losslessness needs an
/// end-to-end window, as net_crypto provides.
const WINDOW: u32 = 128;

async fn recv_all(rt: &RelaySetRuntime, from: PublicKey, tag: u8, n: u32, got: &AtomicU32) {
    let mut next = 0u32;
    let mut oob = 0;
    while next < n || oob == 0 {
        let ev = rt.next_event().await.expect("events");
        match ev {
            RelaySetEvent::Data { peer, data, .. } => {
                assert_eq!(peer, from);
                assert_eq!(
                    data,
                    payload(next, tag),
                    "packet {next} intact and in order"
                );
                next += 1;
                got.store(next, Ordering::Release);
            }
            RelaySetEvent::Oob { from: f, data, .. } => {
                assert_eq!(f, from);
                assert_eq!(data, vec![tag; 500]);
                oob += 1;
            }
            RelaySetEvent::RelayDown { reason, .. } => {
                eprintln!("relay link down during the exchange: {reason:?}");
            }
            _ => {}
        }
    }
}

async fn send_all(
    rt: &RelaySetRuntime,
    relay: PublicKey,
    to: PublicKey,
    tag: u8,
    n: u32,
    acked: &AtomicU32,
) {
    rt.send_oob(&relay, &to, &[tag; 500]).unwrap();
    for i in 0..n {
        while i >= acked.load(Ordering::Acquire) + WINDOW {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        rt.send_data_wait(&relay, &to, &payload(i, tag))
            .await
            .unwrap();
    }
}

/// Sends `n` numbered packets each way at full speed, OOB both ways, and
/// checks everything arrives intact, in order, and that pings were answered.
pub async fn exchange(a: &RelaySetRuntime, b: &RelaySetRuntime, relay: PublicKey, n: u32) {
    let (pa, pb) = (a.public_key(), b.public_key());
    let (got_a, got_b) = (AtomicU32::new(0), AtomicU32::new(0));
    let r = timeout(Duration::from_secs(60), async {
        tokio::join!(
            send_all(a, relay, pb, 1, n, &got_b),
            send_all(b, relay, pa, 2, n, &got_a),
            recv_all(a, pb, 2, n, &got_a),
            recv_all(b, pa, 1, n, &got_b)
        );
    })
    .await;
    if r.is_err() {
        for (name, rt, got) in [("a", a, &got_a), ("b", b, &got_b)] {
            eprintln!(
                "{name}: received {} state {:?} last down {:?} counters {:?} peer {:?}",
                got.load(Ordering::Relaxed),
                rt.relay_last_down(&relay),
                rt.relay_state(&relay),
                rt.relay_counters(&relay),
                rt.peer_relays(&if name == "a" { pb } else { pa })
            );
        }
        panic!("exchange did not finish in time");
    }
    for rt in [a, b] {
        let (c, _) = rt.relay_counters(&relay).unwrap();
        assert!(c.pongs >= 1, "pings answered");
        assert!(rt.relay_rtt(&relay).is_some());
        assert_eq!(c.data_received, u64::from(n));
    }
}
