//! Two toxlink nodes as Tox friends on loopback (docs/PROTOCOL.md §7.4): both go
//! online through the ONLINE exchange, profiles, messages, actions and custom
//! lossless / lossy packets arrive; closing one side takes the other offline;
//! a friend whose peer stops sending ALIVE times out and closes (with short
//! timers, docs/PROTOCOL.md §7.3).

use std::time::Duration;
use toxlink::toxlink_proto::crypto::KeyPair;
use toxlink::toxlink_proto::friend::OfflineReason;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Friend, FriendConfig, FriendEvent, Node};

const WAIT: Duration = Duration::from_secs(10);

async fn next(f: &Friend, what: &str) -> FriendEvent {
    tokio::time::timeout(WAIT, f.next_event())
        .await
        .unwrap_or_else(|_| panic!("{what}: no event within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: closed"))
}

/// Waits for the first event matching `pred`, skipping others (bounded).
async fn until(f: &Friend, what: &str, pred: impl Fn(&FriendEvent) -> bool) -> FriendEvent {
    for _ in 0..100 {
        let e = next(f, what).await;
        if pred(&e) {
            return e;
        }
    }
    panic!("{what}: not among 100 events");
}

async fn nodes(seed: u64) -> (Node, Node) {
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(seed);
    let lo = "127.0.0.1:0".parse().expect("addr");
    let mut bind = || Node::bind(lo, KeyPair::generate(&mut rng), NodeConfig::default());
    let (a, b) = (bind().await.expect("bind"), bind().await.expect("bind"));
    b.allow(a.public_key());
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_toxlink_friends_talk() {
    let (a, b) = nodes(77).await;
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    let fa = Friend::start(
        ca.expect("connect"),
        FriendConfig {
            name: b"alice".to_vec(),
            ..FriendConfig::default()
        },
    );
    let fb = Friend::start(cb.expect("accept"), FriendConfig::default());
    assert_eq!(next(&fa, "a online").await, FriendEvent::Online);
    assert_eq!(next(&fb, "b online").await, FriendEvent::Online);
    assert!(fa.is_online() && fb.is_online());
    // b learns a's profile, sent after going online.
    assert_eq!(
        next(&fb, "nickname").await,
        FriendEvent::Nickname(b"alice".to_vec())
    );

    fa.send_message(b"hello b").await.expect("message");
    fa.send_action(b"waves").await.expect("action");
    fb.send_message(b"hello a").await.expect("message");
    assert_eq!(
        until(&fb, "message", |e| matches!(e, FriendEvent::Message(_))).await,
        FriendEvent::Message(b"hello b".to_vec())
    );
    assert_eq!(
        next(&fb, "action").await,
        FriendEvent::Action(b"waves".to_vec())
    );
    assert_eq!(
        until(&fa, "message", |e| matches!(e, FriendEvent::Message(_))).await,
        FriendEvent::Message(b"hello a".to_vec())
    );

    // 2,000 custom lossless packets, in order.
    let sender = {
        tokio::spawn(async move {
            for i in 0..2000u32 {
                let mut p = vec![165u8; 600];
                p[1..5].copy_from_slice(&i.to_be_bytes());
                fa.send_custom_lossless(&p).await.expect("send");
            }
            fa
        })
    };
    for i in 0..2000u32 {
        let e = until(&fb, "custom", |e| {
            matches!(e, FriendEvent::CustomLossless(_))
        })
        .await;
        let FriendEvent::CustomLossless(d) = e else {
            unreachable!()
        };
        assert_eq!(d.len(), 600);
        assert_eq!(d[0], 165);
        assert_eq!(u32::from_be_bytes([d[1], d[2], d[3], d[4]]), i, "in order");
    }
    let fa = sender.await.expect("sender");
    assert!(fa.send_custom_lossless(&[159, 0]).await.is_err(), "id 159");
    fb.send_custom_lossy(&[201, 1, 2]).expect("lossy");
    assert_eq!(
        until(&fa, "lossy", |e| matches!(e, FriendEvent::CustomLossy(_))).await,
        FriendEvent::CustomLossy(vec![201, 1, 2])
    );

    // Closing a sends KILL: b goes offline.
    fa.close();
    assert_eq!(
        until(&fb, "offline", |e| matches!(e, FriendEvent::Offline(_))).await,
        FriendEvent::Offline(OfflineReason::ConnectionClosed)
    );
    assert!(!fb.is_online());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out_and_is_killed() {
    let (a, b) = nodes(78).await;
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    // a expects ALIVE within 1 s; b sends one only every 60 s (just the one
    // on going up), so a gives up after about 1 s and sends KILL.
    let t0 = std::time::Instant::now();
    let fa = Friend::start(
        ca.expect("connect"),
        FriendConfig {
            timeout: Duration::from_secs(1),
            ..FriendConfig::default()
        },
    );
    let fb = Friend::start(
        cb.expect("accept"),
        FriendConfig {
            alive_interval: Duration::from_secs(60),
            ..FriendConfig::default()
        },
    );
    assert_eq!(next(&fa, "a online").await, FriendEvent::Online);
    assert_eq!(next(&fb, "b online").await, FriendEvent::Online);
    assert_eq!(
        until(&fa, "a offline", |e| matches!(e, FriendEvent::Offline(_))).await,
        FriendEvent::Offline(OfflineReason::Timeout)
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    assert!(!fa.is_online());
    // The KILL takes b offline too.
    assert_eq!(
        until(&fb, "b offline", |e| matches!(e, FriendEvent::Offline(_))).await,
        FriendEvent::Offline(OfflineReason::ConnectionClosed)
    );
    // And a's event stream ends.
    assert_eq!(
        tokio::time::timeout(WAIT, fa.next_event())
            .await
            .expect("a's events end"),
        None
    );
    assert!(
        fa.send_message(b"late").await.is_err(),
        "nothing sent after the timeout"
    );
}

/// Data sent the moment the peer is online never overtakes our own ONLINE
/// (which the peer needs first, or it drops the data, §7.4). Before the
/// fix the control task could send ONLINE after such data; under load this
/// lost the first packet about once in 25 runs, so run it 40 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_data_after_online_is_not_dropped() {
    for seed in 0..40u64 {
        let (a, b) = nodes(1000 + seed).await;
        let (ca, cb) = tokio::join!(
            a.connect(b.public_key(), b.dht_key(), b.local_addr()),
            b.accept()
        );
        let fa = Friend::start(ca.expect("connect"), FriendConfig::default());
        let fb = Friend::start(cb.expect("accept"), FriendConfig::default());
        // b sends as soon as it sees a online; a must receive it.
        until(&fb, "b online", |e| *e == FriendEvent::Online).await;
        fb.send_custom_lossless(&[160, seed as u8])
            .await
            .expect("send");
        let got = until(&fa, "first custom packet", |e| {
            matches!(e, FriendEvent::CustomLossless(_))
        })
        .await;
        assert_eq!(got, FriendEvent::CustomLossless(vec![160, seed as u8]));
        assert_eq!(fa.stats().discarded, 0, "run {seed}");
    }
}

/// A friend's SHARE_RELAYS teaches our node its relays, which then become
/// paths of the connection (docs/DESIGN.md §3, relay pool: learning relays from
/// the peer); our own known relays are shared without being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_relays_become_paths() {
    let relay = toxlink_faults::FaultyRelay::start().await.expect("relay");
    let (a, b) = nodes(78).await;
    // Only a knows the relay.
    a.add_relay(relay.public_key(), relay.addr());
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    let fa = Friend::start(ca.expect("connect"), FriendConfig::default());
    let fb = Friend::start(cb.expect("accept"), FriendConfig::default());
    let e = until(&fb, "b gets a's relays", |e| {
        matches!(e, FriendEvent::ShareRelays(_))
    })
    .await;
    let FriendEvent::ShareRelays(list) = e else {
        unreachable!("matched above")
    };
    assert!(list.iter().any(|n| n.public_key == relay.public_key()));
    // b learnt it and, like a, routes the peer through it: the relay becomes
    // a live path on both sides.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let on = |n: &Node, peer| {
            n.inspect(|core| {
                core.path_table(&peer).is_some_and(|t| {
                    t.paths().any(|p| {
                        p.key().relay() == Some(&relay.public_key()) && !p.health().is_closed()
                    })
                })
            })
        };
        if on(&a, b.public_key()) && on(&b, a.public_key()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shared relay did not become a path on both sides"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((fa, fb));
}
