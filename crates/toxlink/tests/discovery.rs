//! Direct paths found by the nodes themselves, on real sockets (issue #15):
//! two nodes that meet on a relay, with no address handed in, move their
//! traffic onto direct UDP (their interface endpoints, exchanged over the
//! session) with nothing lost. The NAT scenarios are in the CLI's
//! `nat_traversal` lab.

use std::time::{Duration, Instant};
use tokio::time::timeout;
use toxlink::{Node, Received};
use toxlink_faults::FaultyRelay;
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::node::{NodeConfig, Route};

fn key(seed: u64) -> KeyPair {
    use rand_chacha::rand_core::SeedableRng;
    KeyPair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed))
}

fn packet(i: u32) -> Vec<u8> {
    let mut p = vec![160u8];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..500u32).map(|k| (i.wrapping_mul(7).wrapping_add(k)) as u8));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_meeting_on_a_relay_go_direct_by_themselves_within_2s_losing_nothing() {
    let relay = FaultyRelay::start().await.expect("relay");
    let cfg = NodeConfig {
        dht_is_real: true,
        ..NodeConfig::default()
    };
    let a = Node::bind("127.0.0.1:0".parse().unwrap(), key(41), cfg.clone())
        .await
        .expect("bind a");
    let b = std::sync::Arc::new(
        Node::bind("127.0.0.1:0".parse().unwrap(), key(42), cfg)
            .await
            .expect("bind b"),
    );
    b.allow(a.public_key());
    a.add_relay(relay.public_key(), relay.addr());
    b.add_relay(relay.public_key(), relay.addr());
    let b2 = b.clone();
    let acc = tokio::spawn(async move { b2.accept().await });
    let ca = timeout(
        Duration::from_secs(15),
        a.connect_via_relays(b.public_key(), b.dht_key()),
    )
    .await
    .expect("in time")
    .expect("connect");
    let cb = timeout(Duration::from_secs(10), acc)
        .await
        .expect("accept in time")
        .expect("join")
        .expect("incoming");
    let up = Instant::now();
    let first = a.primary(&b.public_key());
    assert!(
        matches!(first, Some(Route::Relay { .. })),
        "started on {first:?}, not on the relay"
    );
    let n = 3000u32;
    let rx = tokio::spawn(async move {
        for i in 0..n {
            match timeout(Duration::from_secs(20), cb.recv()).await {
                Ok(Some(Received::Lossless(d))) if d == packet(i) => {}
                other => return Err(format!("packet {i}: {other:?}")),
            }
        }
        Ok(())
    });
    let want = Route::Udp(b.local_addr());
    let mut direct_after = None;
    for i in 0..n {
        ca.send_lossless(&packet(i)).await.expect("send");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if direct_after.is_none() && a.primary(&b.public_key()) == Some(want) {
            direct_after = Some(up.elapsed());
        }
    }
    timeout(Duration::from_secs(60), rx)
        .await
        .expect("received in time")
        .expect("join")
        .expect("all in order");
    let st = a.stats();
    eprintln!(
        "direct after {direct_after:?}; a: {} endpoint lists, {} challenges, {} answers",
        st.endpoint_msgs_sent, st.challenges_sent, st.responses_received
    );
    let t = direct_after.expect("never on the direct path");
    assert!(
        t <= Duration::from_secs(2),
        "direct after {t:?} (bound 2 s)"
    );
    assert!(st.responses_received >= 1, "{st:?}");
}
