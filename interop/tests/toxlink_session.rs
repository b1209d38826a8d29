//! Our net_crypto session (through the `toxlink` runtime) against c-toxcore
//! 0.2.18 over UDP on loopback: we initiate (cookie request, handshake), the
//! c-toxcore peer (which has us as a friend) accepts; we go online with
//! ONLINE and ALIVE; 2,000 custom lossless packets (`TOXLINK_INTEROP_PACKETS`) go to it (checked by its
//! checksum, sequence and duplicate counters) and come back echoed, in order;
//! 1,000 of its own custom packets come to us in order.

use std::time::Duration;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::Received;
use toxlink_interop::harness::{custom_packet, require_harness};
use toxlink_interop::{Harness, HarnessOptions};

mod common;
use common::befriend;

#[test]
fn toxlink_session_with_c_toxcore_over_udp() {
    // TOXLINK_INTEROP_PACKETS raises the count for a throughput figure.
    let packets: u32 = std::env::var("TOXLINK_INTEROP_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    require_harness();
    let mut h = Harness::start(&HarnessOptions::new().echo(true)).expect("harness");
    let rt = common::runtime();
    let node = common::bind_node(&rt, 5, NodeConfig::default());
    let c = befriend(&mut h, &node);
    let (friend, peer, peer_dht, addr) = (c.friend, c.peer, c.peer_dht, c.peer_udp);

    let conn = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), node.connect(peer, peer_dht, addr)).await
        })
        .expect("connect within 20 s")
        .expect("connect");
    // Go online at the Messenger level (docs/PROTOCOL.md §7.3, §7.4).
    rt.block_on(async {
        conn.send_lossless(&[24]).await.expect("ONLINE");
        conn.send_lossless(&[16]).await.expect("ALIVE");
    });
    let kind = h
        .wait_connected(friend, Duration::from_secs(20))
        .expect("c-toxcore sees us online");
    eprintln!("c-toxcore reports the friend connection as {kind:?}");

    // 2,000 custom packets to c-toxcore; it echoes each one back.
    let t0 = std::time::Instant::now();
    rt.block_on(async {
        for seq in 0..packets {
            conn.send_lossless(&custom_packet(160, seq, 1373, 0))
                .await
                .expect("send");
        }
    });
    let stats = h
        .wait_stats(
            friend,
            Duration::from_secs(60),
            Duration::from_millis(100),
            |s| s.custom.rx >= u64::from(packets),
        )
        .expect("c-toxcore receives all");
    let took = t0.elapsed().as_secs_f64();
    eprintln!(
        "toxlink → c-toxcore: {packets} × 1373 B in {took:.2} s ({:.1} MB/s, includes 100 ms stats polling)",
        f64::from(packets) * 1373.0 / took / 1e6
    );
    common::all_custom_intact(&stats.custom, packets);

    // Echoes (and its Messenger chatter, ids < 160) come back in order. The
    // harness drops echoes its own send queue cannot take (`echo_dropped`),
    // so the check is: every echo is intact, sequence numbers only increase,
    // and we get exactly as many as it sent.
    let echo = h
        .wait_stats(
            friend,
            Duration::from_secs(60),
            Duration::from_millis(100),
            |s| s.echo_tx + s.echo_dropped >= u64::from(packets),
        )
        .expect("c-toxcore echoed or dropped every packet");
    eprintln!(
        "c-toxcore echoed {} packets, dropped {} (its send queue was full)",
        echo.echo_tx, echo.echo_dropped
    );
    let mut echoed = 0u64;
    let mut last: Option<u32> = None;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while echoed < echo.echo_tx {
                match conn.recv().await {
                    Some(Received::Lossless(d)) if d[0] == 160 => {
                        let seq = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                        assert!(
                            last.is_none_or(|l| seq > l),
                            "echo order: {seq} after {last:?}"
                        );
                        assert_eq!(d, custom_packet(160, seq, 1373, 0), "echo #{seq} intact");
                        last = Some(seq);
                        echoed += 1;
                        if echoed % 500 == 0 {
                            // Keep friend_connection alive (ALIVE every < 8 s).
                            conn.send_lossless(&[16]).await.expect("ALIVE");
                        }
                    }
                    Some(_) => {}
                    None => panic!("closed after {echoed} echoes"),
                }
            }
        })
        .await
        .expect("all echoes within 60 s");
    });

    // Its own custom packets (id 170, 1,000 bytes; half as many) to us, in
    // order.
    let theirs = packets / 2;
    let t1 = std::time::Instant::now();
    h.start_custom(friend, theirs, 1000, 170).expect("start");
    let mut got = 0u32;
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            while got < theirs {
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
    let took = t1.elapsed().as_secs_f64();
    eprintln!(
        "c-toxcore → toxlink: {theirs} × 1000 B in {took:.2} s ({:.1} MB/s)",
        f64::from(theirs) * 1000.0 / took / 1e6
    );
    let sent = h
        .wait_sent(Duration::from_secs(30))
        .expect("its SENT report");
    assert_eq!(sent.accepted, theirs);
    conn.close();
}
