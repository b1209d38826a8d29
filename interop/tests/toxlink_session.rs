//! Our net_crypto session (through the `toxlink` runtime) against c-toxcore
//! 0.2.18 over UDP on loopback: we initiate (cookie request, handshake), the
//! c-toxcore peer (which has us as a friend) accepts; we go online with
//! ONLINE and ALIVE; 2,000 custom lossless packets go to it (checked by its
//! checksum, sequence and duplicate counters) and come back echoed, in order;
//! 1,000 of its own custom packets come to us in order.

use std::net::SocketAddr;
use std::time::Duration;
use toxlink::toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Node, Received};
use toxlink_interop::harness::harness_available;
use toxlink_interop::{Harness, HarnessOptions};

const PACKETS: u32 = 2_000;

/// A packet in the harness's custom layout: id ‖ seq BE32 ‖ FNV-1a BE32 over
/// the packet with this field zeroed ‖ send time BE64 ‖ filler.
fn custom(id: u8, seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = id;
    p[1..5].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(17) {
        *b = (seq as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    let mut h: u32 = 0x811c_9dc5;
    for &b in &p {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    p[5..9].copy_from_slice(&h.to_be_bytes());
    p
}

#[test]
fn toxlink_session_with_c_toxcore_over_udp() {
    if !harness_available() {
        eprintln!("skipping: libtoxcore harness not available");
        return;
    }
    let mut h = Harness::start(&HarnessOptions::new().echo(true)).expect("harness");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(5);
    let node = rt
        .block_on(Node::bind(
            "127.0.0.1:0".parse().expect("addr"),
            KeyPair::generate(&mut rng),
            NodeConfig::default(),
        ))
        .expect("bind");
    let friend = h.add_friend(&node.public_key().0).expect("add friend");
    let peer = PublicKey(h.public_key());
    let peer_dht = PublicKey(h.dht_key());
    let addr: SocketAddr = format!("127.0.0.1:{}", h.udp_port()).parse().expect("addr");

    let conn = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), node.connect(peer, peer_dht, addr)).await
        })
        .expect("connect within 20 s")
        .expect("connect");
    // Go online at the Messenger level (PROTOCOL.md §7.3, §7.4).
    rt.block_on(async {
        conn.send_lossless(&[24]).await.expect("ONLINE");
        conn.send_lossless(&[16]).await.expect("ALIVE");
    });
    let kind = h
        .wait_connected(friend, Duration::from_secs(20))
        .expect("c-toxcore sees us online");
    eprintln!("c-toxcore reports the friend connection as {kind:?}");

    // 2,000 custom packets to c-toxcore; it echoes each one back.
    rt.block_on(async {
        for seq in 0..PACKETS {
            conn.send_lossless(&custom(160, seq, 1373))
                .await
                .expect("send");
        }
    });
    let stats = h
        .wait_stats(
            friend,
            Duration::from_secs(60),
            Duration::from_millis(100),
            |s| s.custom.rx >= u64::from(PACKETS),
        )
        .expect("c-toxcore receives all");
    assert_eq!(stats.custom.bad, 0, "checksums");
    assert_eq!(stats.custom.dup, 0);
    assert_eq!(stats.custom.reordered, 0);
    assert_eq!(stats.custom.lost, 0);
    assert_eq!(stats.custom.good(), u64::from(PACKETS));

    // Echoes (and its Messenger chatter, ids < 160) come back in order.
    let mut echoed = 0u32;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while echoed < PACKETS {
                match conn.recv().await {
                    Some(Received::Lossless(d)) if d[0] == 160 => {
                        assert_eq!(d, custom(160, echoed, 1373), "echo #{echoed}");
                        echoed += 1;
                    }
                    Some(_) => {}
                    None => panic!("closed after {echoed} echoes"),
                }
                if echoed % 500 == 0 {
                    // Keep friend_connection alive (ALIVE every < 8 s).
                    conn.send_lossless(&[16]).await.expect("ALIVE");
                }
            }
        })
        .await
        .expect("all echoes within 60 s");
    });

    // 1,000 of its own custom packets (id 170, 1,000 bytes) to us, in order.
    h.start_custom(friend, 1000, 1000, 170).expect("start");
    let mut got = 0u32;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while got < 1000 {
                match conn.recv().await {
                    Some(Received::Lossless(d)) if d[0] == 170 => {
                        assert_eq!(d.len(), 1000);
                        let seq = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                        assert_eq!(seq, got, "in order, no duplicate");
                        got += 1;
                    }
                    Some(_) => {}
                    None => panic!("closed after {got}"),
                }
            }
        })
        .await
        .expect("its packets within 60 s");
    });
    let sent = h
        .wait_sent(Duration::from_secs(30))
        .expect("its SENT report");
    assert_eq!(sent.accepted, 1000);
    conn.close();
}
