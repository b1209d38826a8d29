//! toxlink as a Tox friend of a c-toxcore 0.2.18 peer over UDP on loopback
//! (issue 5, item 3; docs/PROTOCOL.md §7): our node knows the C peer's DHT key,
//! address and long-term key and is its friend (`ADDFRIEND` with our real
//! key); it connects, runs [`toxlink::Friend`] (ONLINE, ALIVE, profile), and
//! the C peer reports us online over UDP (we also share a dead relay with
//! it, which must not disturb that). Messages go both ways (its
//! nickname reaches us too); 100 custom lossy packets go each way (at least
//! 90 % must arrive on loopback, all intact); then 10,000 custom lossless
//! packets go each way at the same time and arrive complete and in order: on
//! its side by the harness's checksum, sequence, duplicate and loss
//! counters, on ours by checking every sequence number and checksum. Finally
//! both sides idle for 34 s (longer than the 32 s friend timeout): ALIVE
//! keeps the friend online on both sides. Every wait is bounded; the test
//! takes about 41 s.

use std::time::{Duration, Instant};
use toxlink::toxlink_proto::crypto::KeyPair;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::toxlink_proto::wire::packed::{PackedIpPort, PackedNode, Transport};
use toxlink::{Friend, FriendConfig, FriendEvent};
use toxlink_interop::harness::{custom_checksum, custom_packet, require_harness, ConnKind};
use toxlink_interop::{Harness, HarnessOptions};

mod common;
use common::next;
use common::{befriend, rng_seeded};

const PACKETS: u32 = 10_000;
const OUR_SIZE: usize = 1373;
const THEIR_SIZE: usize = 1373;
/// Custom lossy packets each way.
const LOSSY: u32 = 100;
/// Idle period, longer than c-toxcore's friend timeout of 32 s.
const IDLE: Duration = Duration::from_secs(34);

#[test]
fn toxlink_friend_of_c_toxcore_over_udp() {
    require_harness();
    let test_start = Instant::now();
    let mut h = Harness::start(&HarnessOptions::new().name("ctox")).expect("harness");
    let rt = common::runtime();
    let node = common::bind_node(&rt, 55, NodeConfig::default());
    let c = befriend(&mut h, &node);
    let (friend, peer, peer_dht, addr) = (c.friend, c.peer, c.peer_dht, c.peer_udp);

    // We share one relay (SHARE_RELAYS, §7.3): a loopback port nobody
    // listens on any more. c-toxcore may try it; the friend must stay on UDP.
    let unreachable_relay = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        PackedNode {
            ip_port: PackedIpPort {
                transport: Transport::Tcp,
                addr: l.local_addr().expect("addr"),
            },
            public_key: KeyPair::generate(&mut rng_seeded(!55)).public,
        }
    };

    // Connect and run the friend protocol.
    let t0 = Instant::now();
    let f = rt.block_on(async {
        let conn =
            tokio::time::timeout(Duration::from_secs(20), node.connect(peer, peer_dht, addr))
                .await
                .expect("connect within 20 s")
                .expect("connect");
        let f = Friend::start(
            conn,
            FriendConfig {
                name: b"toxlink".to_vec(),
                relays: vec![unreachable_relay],
                ..FriendConfig::default()
            },
        );
        // It answers our ONLINE with its own: online on our side.
        assert_eq!(
            next(&f, "online", Duration::from_secs(10)).await,
            FriendEvent::Online
        );
        f
    });
    let kind = h
        .wait_connected(friend, Duration::from_secs(10))
        .expect("c-toxcore sees us online");
    assert_eq!(kind, ConnKind::Udp, "reported over UDP");
    eprintln!(
        "online both ways after {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );

    // Its profile arrives (NICKNAME "ctox"); other chatter is tolerated.
    rt.block_on(async {
        for _ in 0..20 {
            match next(&f, "nickname", Duration::from_secs(10)).await {
                FriendEvent::Nickname(n) => {
                    assert_eq!(n, b"ctox");
                    return;
                }
                FriendEvent::StatusMessage(_)
                | FriendEvent::UserStatus(_)
                | FriendEvent::Typing(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no nickname among 20 events");
    });

    // Messages both ways.
    common::message_each_way(&rt, &mut h, friend, &f);

    // Custom lossy packets both ways: on loopback nearly all arrive; each
    // intact, with its id byte.
    for seq in 0..LOSSY {
        f.send_custom_lossy(&custom_packet(200, seq, 600, 0))
            .expect("send lossy");
    }
    let lossy = h
        .wait_stats(
            friend,
            Duration::from_secs(5),
            Duration::from_millis(50),
            |s| s.lossy.rx >= u64::from(LOSSY),
        )
        .or_else(|_| h.stats(friend))
        .expect("stats");
    assert!(
        lossy.lossy.good() >= u64::from(LOSSY) * 9 / 10,
        "c-toxcore got {:?} of {LOSSY} lossy packets",
        lossy.lossy
    );
    assert_eq!(lossy.lossy.bad, 0);
    assert_eq!(lossy.lossy.dup, 0);
    h.start_lossy(friend, LOSSY, 600, 201)
        .expect("start its lossy");
    let got_lossy = rt.block_on(async {
        let mut got = 0u32;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while got < LOSSY {
            match tokio::time::timeout_at(deadline, f.next_event()).await {
                Ok(Some(FriendEvent::CustomLossy(d))) => {
                    assert_eq!(d.len(), 600);
                    assert_eq!(d[0], 201);
                    assert_eq!(
                        u32::from_be_bytes([d[5], d[6], d[7], d[8]]),
                        custom_checksum(&d)
                    );
                    got += 1;
                }
                Ok(Some(FriendEvent::Offline(r))) => panic!("offline: {r:?}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("closed"),
                Err(_) => break,
            }
        }
        got
    });
    assert!(
        got_lossy >= LOSSY * 9 / 10,
        "we got {got_lossy} of its {LOSSY} lossy packets"
    );
    let sent = h.wait_sent(Duration::from_secs(5)).expect("its lossy SENT");
    assert_eq!(sent.accepted, LOSSY);
    assert!(sent.lossy);

    // 10,000 custom lossless packets each way, at the same time.
    let f = std::sync::Arc::new(f);
    let t1 = Instant::now();
    h.start_custom(friend, PACKETS, THEIR_SIZE, 170)
        .expect("start its sending");
    let sender = common::spawn_sender(&rt, &f, PACKETS, OUR_SIZE, None, Instant::now());
    // Its packets: all of them, in order, each intact (or the task fails).
    let receiver = rt.spawn(common::receive_custom(
        f.clone(),
        PACKETS,
        170,
        THEIR_SIZE,
        Duration::from_secs(45),
    ));
    let stats = h
        .wait_stats(
            friend,
            Duration::from_secs(45),
            Duration::from_millis(100),
            |s| s.custom.rx >= u64::from(PACKETS),
        )
        .expect("c-toxcore receives all 10,000");
    let ours_took = t1.elapsed();
    common::all_custom_intact(&stats.custom, PACKETS);
    assert_eq!(stats.status, ConnKind::Udp);
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(45), receiver).await })
        .expect("its packets within 45 s")
        .expect("receiver task: all its packets");
    let theirs_took = t1.elapsed();
    let send_took = rt.block_on(sender).expect("sender task");
    let sent = h.wait_sent(Duration::from_secs(10)).expect("its SENT");
    assert_eq!(sent.accepted, PACKETS);
    assert!(sent.error.is_none(), "its send: {:?}", sent.error);
    eprintln!(
        "10,000 × {OUR_SIZE} B toxlink → c-toxcore: {:.2} s (our sends took {:.2} s); \
         10,000 × {THEIR_SIZE} B c-toxcore → toxlink: done after {:.2} s",
        ours_took.as_secs_f64(),
        send_took.as_secs_f64(),
        theirs_took.as_secs_f64()
    );
    assert!(f.is_online(), "still online");
    assert_eq!(f.stats().malformed, 0);
    assert_eq!(f.stats().share_relays_tx, 1, "our relay was shared once");

    // Idle for longer than c-toxcore's 32 s friend timeout (§7.3): our ALIVE
    // every 8 s keeps us online there (no CONN change at all), its ALIVE keeps
    // it online here.
    match h.next_conn_event(friend, IDLE) {
        Err(toxlink_interop::InteropError::Timeout { .. }) => {}
        Ok(ev) => panic!("c-toxcore changed our status while idle: {ev:?}"),
        Err(e) => panic!("harness: {e}"),
    }
    assert!(f.is_online(), "it stayed online for us");
    assert!(f.stats().alive_rx >= 4, "its ALIVEs: {:?}", f.stats());
    assert!(f.stats().alive_tx >= 5, "our ALIVEs: {:?}", f.stats());
    rt.block_on(f.send_message(b"still here"))
        .expect("send after idle");
    assert_eq!(
        h.expect_message(friend, Duration::from_secs(10))
            .expect("message after idle"),
        "still here"
    );
    f.close();
    h.quit().expect("harness quits");
    eprintln!("whole test {:.1} s", test_start.elapsed().as_secs_f64());
}
