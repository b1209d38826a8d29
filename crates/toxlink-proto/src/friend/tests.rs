//! FriendLink against a scripted peer: the online rule, ALIVE timing, the
//! 32 s timeout, discarding before online and SHARE_RELAYS content
//! (docs/PROTOCOL.md §7.3, §7.4).

use super::*;
use crate::crypto::PublicKey;
use crate::wire::packed::{PackedIpPort, Transport};

fn drain(l: &mut FriendLink) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(o) = l.poll_transmit() {
        match o {
            Outgoing::Lossless(d) => v.push(d),
            Outgoing::Lossy(d) => panic!("unexpected lossy {d:?}"),
        }
    }
    v
}

fn events(l: &mut FriendLink) -> Vec<FriendEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn relay(i: u8) -> PackedNode {
    PackedNode {
        ip_port: PackedIpPort {
            transport: Transport::Tcp,
            addr: format!("10.0.0.{i}:33445").parse().expect("addr"),
        },
        public_key: PublicKey([i; 32]),
    }
}

/// Established and online (the peer's ONLINE processed), queues drained.
fn online(cfg: FriendConfig, t0: Instant) -> FriendLink {
    let mut l = FriendLink::new(cfg);
    l.handle_established(t0);
    drain(&mut l);
    l.handle_lossless(t0, &[id::ONLINE]);
    assert_eq!(events(&mut l), vec![FriendEvent::Online]);
    drain(&mut l);
    l
}

#[test]
fn established_sends_online_alive_and_relays() {
    let t0 = Instant::now();
    let cfg = FriendConfig {
        relays: vec![relay(1), relay(2)],
        ..FriendConfig::default()
    };
    let mut l = FriendLink::new(cfg);
    assert!(drain(&mut l).is_empty(), "nothing before ESTABLISHED");
    assert_eq!(l.poll_timeout(), None);
    l.handle_established(t0);
    let sent = drain(&mut l);
    assert_eq!(sent[0], vec![id::ONLINE]);
    assert_eq!(sent[1], vec![id::ALIVE]);
    assert_eq!(sent[2][0], id::SHARE_RELAYS);
    assert_eq!(sent.len(), 3);
    assert!(!l.is_online(), "online only after the peer's ONLINE");
    assert!(events(&mut l).is_empty());
}

#[test]
fn share_relays_carries_at_most_three_tcp_nodes() {
    let t0 = Instant::now();
    let relays: Vec<_> = (1..=5).map(relay).collect();
    let mut l = FriendLink::new(FriendConfig {
        relays: relays.clone(),
        ..FriendConfig::default()
    });
    l.handle_established(t0);
    let sent = drain(&mut l);
    let share = sent
        .iter()
        .find(|p| p[0] == id::SHARE_RELAYS)
        .expect("SHARE_RELAYS sent");
    // 1 id byte + 3 × (1 family + 4 IPv4 + 2 port + 32 key).
    assert_eq!(share.len(), 1 + 3 * 39);
    assert_eq!(share[1], 130, "TCP/IPv4 family");
    match MessengerPacket::parse(share).expect("parses") {
        MessengerPacket::ShareRelays(list) => {
            let got: Vec<_> = list.iter().copied().collect();
            assert_eq!(got, relays[..3].to_vec());
        }
        other => panic!("{other:?}"),
    }
    // Again after 120 s, not before; the peer keeps the link alive meanwhile.
    for s in (8..=112).step_by(8) {
        l.handle_lossless(t0 + Duration::from_secs(s), &[id::ALIVE]);
    }
    l.handle_timeout(t0 + Duration::from_secs(119));
    assert!(drain(&mut l).iter().all(|p| p[0] != id::SHARE_RELAYS));
    l.handle_timeout(t0 + Duration::from_secs(120));
    assert!(drain(&mut l).iter().any(|p| p[0] == id::SHARE_RELAYS));
    assert_eq!(l.stats().share_relays_tx, 2);
}

#[test]
fn no_relays_no_share_relays() {
    let t0 = Instant::now();
    let mut l = FriendLink::new(FriendConfig::default());
    l.handle_established(t0);
    assert!(drain(&mut l).iter().all(|p| p[0] != id::SHARE_RELAYS));
    l.set_relays(t0 + Duration::from_secs(1), vec![relay(9)]);
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], id::SHARE_RELAYS);
    assert_eq!(sent[0].len(), 40);
}

#[test]
fn online_rule_replies_and_sends_profile() {
    let t0 = Instant::now();
    let mut l = FriendLink::new(FriendConfig {
        name: b"toxlink".to_vec(),
        user_status: 1,
        ..FriendConfig::default()
    });
    l.handle_established(t0);
    drain(&mut l);
    // An ONLINE with a body is not ONLINE (length must be exactly 1).
    l.handle_lossless(t0, &[id::ONLINE, 0]);
    assert!(!l.is_online());
    assert_eq!(l.stats().malformed, 1);
    l.handle_lossless(t0, &[id::ONLINE]);
    assert!(l.is_online());
    assert_eq!(events(&mut l), vec![FriendEvent::Online]);
    let sent = drain(&mut l);
    assert_eq!(
        sent,
        vec![
            vec![id::ONLINE],
            [&[id::NICKNAME][..], b"toxlink"].concat(),
            vec![id::STATUSMESSAGE],
            vec![id::USERSTATUS, 1],
            vec![id::TYPING, 0],
        ]
    );
    // A second ONLINE while online: no reply, no event.
    l.handle_lossless(t0, &[id::ONLINE]);
    assert!(drain(&mut l).is_empty());
    assert!(events(&mut l).is_empty());
}

#[test]
fn messenger_packets_before_online_are_discarded() {
    let t0 = Instant::now();
    let mut l = FriendLink::new(FriendConfig::default());
    l.handle_established(t0);
    drain(&mut l);
    l.handle_lossless(t0, b"@hello");
    l.handle_lossless(t0, &[160, 1, 2, 3]);
    l.handle_lossless(t0, &[id::NICKNAME, b'x']);
    l.handle_lossy(t0, &[200, 9]);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.stats().discarded, 4);
    assert!(l.message(b"hi").is_err(), "cannot send before online");
    // friend_connection packets still count before online.
    l.handle_lossless(t0, &[id::ALIVE]);
    assert_eq!(l.stats().alive_rx, 1);
    l.handle_lossless(t0, &[id::ONLINE]);
    l.handle_lossless(t0, b"@hello");
    l.handle_lossless(t0, &[160, 1, 2, 3]);
    l.handle_lossy(t0, &[200, 9]);
    assert_eq!(
        events(&mut l),
        vec![
            FriendEvent::Online,
            FriendEvent::Message(b"hello".to_vec()),
            FriendEvent::CustomLossless(vec![160, 1, 2, 3]),
            FriendEvent::CustomLossy(vec![200, 9]),
        ]
    );
}

#[test]
fn tolerates_profile_packets_and_reports_them() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    for p in [
        &[id::NICKNAME, b'c'][..],
        &[id::STATUSMESSAGE][..],
        &[id::USERSTATUS, 2][..],
        &[id::USERSTATUS, 7][..],
        &[id::TYPING, 1][..],
        &[id::ACTION, b'w', b'a', b'v', b'e'][..],
        &[id::FILE_DATA, 0, 1, 2][..],
        &[id::TYPING][..],
    ] {
        l.handle_lossless(t0, p);
    }
    assert_eq!(
        events(&mut l),
        vec![
            FriendEvent::Nickname(b"c".to_vec()),
            FriendEvent::StatusMessage(Vec::new()),
            FriendEvent::UserStatus(2),
            FriendEvent::Typing(true),
            FriendEvent::Action(b"wave".to_vec()),
            FriendEvent::Other(vec![id::FILE_DATA, 0, 1, 2]),
        ]
    );
    assert_eq!(l.stats().malformed, 1, "TYPING without its byte");
    assert!(l.is_online());
}

#[test]
fn alive_every_interval_and_poll_timeout_says_when() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    let mut at = t0;
    for i in 1..=10u64 {
        let due = l.poll_timeout().expect("a timer");
        assert_eq!(due, t0 + ALIVE_INTERVAL * i as u32, "ALIVE #{i} due");
        // Nothing early.
        l.handle_timeout(due - Duration::from_millis(1));
        assert!(drain(&mut l).is_empty());
        l.handle_timeout(due);
        assert_eq!(drain(&mut l), vec![vec![id::ALIVE]]);
        // The peer keeps us alive too.
        l.handle_lossless(due, &[id::ALIVE]);
        at = due;
    }
    assert!(at - t0 >= Duration::from_secs(80));
    assert!(l.is_online());
    assert_eq!(l.stats().alive_tx, 11);
}

#[test]
fn timeout_after_32_s_without_alive_even_with_other_traffic() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    l.handle_lossless(t0 + Duration::from_secs(10), &[id::ALIVE]);
    let last = t0 + Duration::from_secs(10);
    // Other packets do not refresh liveness.
    for s in 11..42 {
        l.handle_lossless(t0 + Duration::from_secs(s), b"@still here");
    }
    l.handle_timeout(last + Duration::from_secs(32));
    assert!(l.is_online(), "exactly 32 s is not past the deadline");
    assert!(!l.wants_close());
    let due = l.poll_timeout().expect("timer");
    assert!(due > last + Duration::from_secs(32));
    assert!(due <= last + Duration::from_secs(33));
    l.handle_timeout(due);
    assert!(l.wants_close());
    assert!(l.is_dead());
    let evs = events(&mut l);
    assert_eq!(
        evs.last(),
        Some(&FriendEvent::Offline(OfflineReason::Timeout))
    );
    assert_eq!(l.poll_timeout(), None);
    // Nothing more goes out, and late packets are ignored.
    drain(&mut l);
    l.handle_timeout(due + Duration::from_secs(60));
    assert!(drain(&mut l).is_empty());
    l.handle_lossless(due, &[id::ONLINE]);
    assert!(events(&mut l).is_empty());
}

#[test]
fn timeout_before_online_closes_without_offline_event() {
    let t0 = Instant::now();
    let mut l = FriendLink::new(FriendConfig::default());
    l.handle_established(t0);
    let mut now = t0;
    while let Some(t) = l.poll_timeout() {
        now = t;
        l.handle_timeout(now);
        assert!(now - t0 < Duration::from_secs(40), "bounded");
    }
    assert!(l.wants_close());
    assert!(now > t0 + Duration::from_secs(32));
    assert!(events(&mut l).is_empty());
}

#[test]
fn offline_then_online_again_and_connection_closed() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    l.handle_lossless(t0, &[id::OFFLINE]);
    assert!(!l.is_online());
    assert!(!l.wants_close());
    assert_eq!(
        events(&mut l),
        vec![FriendEvent::Offline(OfflineReason::PeerOffline)]
    );
    l.handle_lossless(t0, b"@dropped");
    assert!(events(&mut l).is_empty());
    l.handle_lossless(t0, &[id::ONLINE]);
    assert_eq!(events(&mut l), vec![FriendEvent::Online]);
    assert_eq!(drain(&mut l)[0], vec![id::ONLINE], "replied again");
    l.handle_closed(t0);
    assert_eq!(
        events(&mut l),
        vec![FriendEvent::Offline(OfflineReason::ConnectionClosed)]
    );
    assert!(l.is_dead());
}

#[test]
fn commands_validate() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    assert_eq!(l.message(b"hi").expect("ok"), b"@hi".to_vec());
    assert_eq!(l.action(b"waves").expect("ok"), b"Awaves".to_vec());
    assert_eq!(l.message(b""), Err(FriendError::BadLength(0)));
    assert_eq!(l.message(&[b'x'; 1373]), Err(FriendError::BadLength(1373)));
    assert!(l.message(&[b'x'; 1372]).is_ok());
    assert_eq!(l.custom_lossless(&[159, 0]), Err(FriendError::BadId(159)));
    assert_eq!(l.custom_lossless(&[192]), Err(FriendError::BadId(192)));
    assert!(l.custom_lossless(&[191; 1373]).is_ok());
    assert_eq!(
        l.custom_lossless(&[170; 1374]),
        Err(FriendError::BadLength(1374))
    );
    assert_eq!(l.custom_lossy(&[199]), Err(FriendError::BadId(199)));
    assert!(l.custom_lossy(&[254, 1]).is_ok());
    assert_eq!(l.custom_lossy(&[]), Err(FriendError::BadLength(0)));
    l.set_name(b"new").expect("ok");
    l.set_user_status(2).expect("ok");
    assert_eq!(l.set_user_status(3), Err(FriendError::BadId(3)));
    l.set_typing(true).expect("ok");
    assert_eq!(
        drain(&mut l),
        vec![
            b"0new".to_vec(),
            vec![id::USERSTATUS, 2],
            vec![id::TYPING, 1]
        ]
    );
}

#[test]
fn share_relays_are_reported_only_once_the_peer_is_online() {
    let t0 = Instant::now();
    let mut l = FriendLink::new(FriendConfig::default());
    l.handle_established(t0);
    let share = |r: &[PackedNode]| {
        MessengerPacket::ShareRelays(RelayList::new(r))
            .to_vec()
            .expect("encode")
    };
    // Before ONLINE: held, the latest one only.
    l.handle_lossless(t0, &share(&[relay(1), relay(2)]));
    l.handle_lossless(t0, &share(&[relay(3), relay(4)]));
    assert!(events(&mut l).is_empty(), "nothing before ONLINE");
    l.handle_lossless(t0, &[id::ONLINE]);
    assert_eq!(
        events(&mut l),
        vec![
            FriendEvent::Online,
            FriendEvent::ShareRelays(vec![relay(3), relay(4)])
        ]
    );
    // Online: reported at once.
    l.handle_lossless(t0, &share(&[relay(5)]));
    assert_eq!(
        events(&mut l),
        vec![FriendEvent::ShareRelays(vec![relay(5)])]
    );
    // A malformed one is ignored whole.
    let mut bad = share(&[relay(5)]);
    bad[1] = 99;
    l.handle_lossless(t0, &bad);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.stats().malformed, 1);
    // Offline again (the peer sent OFFLINE): held until the next ONLINE.
    l.handle_lossless(t0, &[id::OFFLINE]);
    assert_eq!(
        events(&mut l),
        vec![FriendEvent::Offline(OfflineReason::PeerOffline)]
    );
    l.handle_lossless(t0, &share(&[relay(6)]));
    assert!(events(&mut l).is_empty());
    // A link that dies never reports what it held.
    l.handle_closed(t0);
    assert!(events(&mut l).is_empty());
}

#[test]
fn hostile_online_offline_flood_stays_bounded() {
    let t0 = Instant::now();
    let mut l = online(FriendConfig::default(), t0);
    for _ in 0..(3 * MAX_QUEUED) {
        l.handle_lossless(t0, &[id::OFFLINE]);
        l.handle_lossless(t0, &[id::ONLINE]);
    }
    assert!(l.out.len() <= MAX_QUEUED);
    assert!(l.events.len() <= MAX_QUEUED);
    assert!(l.stats().overflow > 0);
}

/// One input to a link in the property test.
#[derive(Debug, Clone)]
enum Op {
    Lossless(Vec<u8>),
    Lossy(Vec<u8>),
    /// Advance the clock by this many milliseconds and run the timers.
    Wait(u32),
    Closed,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    // Ids the link interprets, plus anything.
    let interesting = prop_oneof![
        Just(id::ALIVE),
        Just(id::SHARE_RELAYS),
        Just(id::ONLINE),
        Just(id::OFFLINE),
        Just(id::NICKNAME),
        Just(id::USERSTATUS),
        Just(id::TYPING),
        Just(id::MESSAGE),
        Just(id::ACTION),
        Just(160u8),
        any::<u8>(),
    ];
    let data = (interesting, proptest::collection::vec(any::<u8>(), 0..60)).prop_map(
        |(first, mut rest)| {
            // Bias towards the exact lengths control packets need.
            if rest.len() > 40 {
                rest.clear();
            }
            rest.insert(0, first);
            rest
        },
    );
    prop_oneof![
        6 => data.clone().prop_map(Op::Lossless),
        2 => data.prop_map(Op::Lossy),
        3 => (0u32..20_000).prop_map(Op::Wait),
        1 => Just(Op::Closed),
    ]
}

proptest::proptest! {
    /// Arbitrary packets and timing never panic, keep the queues bounded,
    /// never deliver Messenger data while the peer is not online, never leave
    /// more than 8 s without an ALIVE queued while up, and a close is only
    /// requested after more than 32 s without the peer's ALIVE.
    #[test]
    fn arbitrary_inputs_keep_the_rules(ops in proptest::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut l = FriendLink::new(FriendConfig { relays: vec![relay(1)], ..FriendConfig::default() });
        l.handle_established(now);
        let mut online = false;
        let mut last_alive_rx = now;
        let mut last_alive_tx = now;
        for op in ops {
            match op {
                Op::Lossless(d) => {
                    if d == [id::ALIVE] && !l.is_dead() {
                        last_alive_rx = now;
                    }
                    l.handle_lossless(now, &d);
                }
                Op::Lossy(d) => l.handle_lossy(now, &d),
                Op::Wait(ms) => {
                    // Timers run at least at every deadline, as a runtime would.
                    let until = now + Duration::from_millis(u64::from(ms));
                    while let Some(t) = l.poll_timeout().filter(|&t| t <= until) {
                        now = t.max(now);
                        l.handle_timeout(now);
                        for o in std::iter::from_fn(|| l.poll_transmit()) {
                            if o == Outgoing::Lossless(vec![id::ALIVE]) {
                                last_alive_tx = now;
                            }
                        }
                    }
                    now = until;
                    l.handle_timeout(now);
                }
                Op::Closed => l.handle_closed(now),
            }
            for o in std::iter::from_fn(|| l.poll_transmit()) {
                if o == Outgoing::Lossless(vec![id::ALIVE]) {
                    last_alive_tx = now;
                }
            }
            for e in std::iter::from_fn(|| l.poll_event()) {
                match e {
                    FriendEvent::Online => {
                        proptest::prop_assert!(!online, "Online twice");
                        online = true;
                    }
                    FriendEvent::Offline(_) => {
                        proptest::prop_assert!(online, "Offline while offline");
                        online = false;
                    }
                    FriendEvent::ShareRelays(n) => {
                        proptest::prop_assert!(online, "SHARE_RELAYS while not online");
                        proptest::prop_assert!(n.len() <= 3);
                    }
                    other => proptest::prop_assert!(online, "{other:?} while not online"),
                }
            }
            proptest::prop_assert_eq!(online, l.is_online());
            proptest::prop_assert!(l.out.len() <= MAX_QUEUED && l.events.len() <= MAX_QUEUED);
            if l.wants_close() {
                proptest::prop_assert!(now > last_alive_rx + FRIEND_CONNECTION_TIMEOUT);
            }
            if !l.is_dead() {
                proptest::prop_assert!(now - last_alive_tx <= ALIVE_INTERVAL);
                proptest::prop_assert!(now <= last_alive_rx + FRIEND_CONNECTION_TIMEOUT + Duration::from_millis(1));
            }
        }
    }
}
