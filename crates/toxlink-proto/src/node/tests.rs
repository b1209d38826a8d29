//! Unit tests of the node facade.

use super::*;
use crate::session::handshake::PACKET_DATA;
use crate::session::TransmitKind;
use rand_chacha::ChaCha20Rng;
use std::time::Duration;

fn node(seed: u64, now: Instant) -> Node<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let real = KeyPair::generate(&mut rng);
    Node::new(now, &mut rng, real, NodeConfig::default())
}

/// Hands `data` from address `from` to `n`.
fn datagram(n: &mut Node<u8>, now: Instant, from: u8, data: &mut [u8]) -> Result<(), DropReason> {
    n.handle(now, Input::Datagram { from, data })
}

/// [`datagram`], whatever `n` makes of it.
fn deliver(n: &mut Node<u8>, now: Instant, from: u8, data: &mut [u8]) {
    let _ = datagram(n, now, from, data);
}

/// Moves datagrams between node 1 and node 2 (addresses 1 and 2) until
/// nothing is left, for at most `rounds` rounds; `drop_to_2` discards
/// everything addressed to node 2.
fn exchange(a: &mut Node<u8>, b: &mut Node<u8>, now: Instant, drop_to_2: bool) {
    let mut buf = [0u8; MAX_PACKET_SIZE];
    for _ in 0..20 {
        let mut moved = false;
        while let Some((to, t)) = a.poll_transmit(now, &mut buf) {
            assert_eq!(to, 2);
            moved = true;
            if !drop_to_2 {
                deliver(b, now, 1, &mut buf[..t.len]);
            }
        }
        while let Some((to, t)) = b.poll_transmit(now, &mut buf) {
            assert_eq!(to, 1);
            moved = true;
            deliver(a, now, 2, &mut buf[..t.len]);
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn connects_only_to_allowed_peers() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, now, false);
    // b answered the cookie request (anybody gets one) but refused the
    // handshake of a peer it does not know.
    assert_eq!(b.stats().cookies_sent, 1);
    assert_eq!(b.stats().handshakes_refused, 1);
    assert!(b.session(&a.real_pk()).is_none());
    // Once allowed, the next handshake re-send is accepted.
    b.allow(a.real_pk());
    let later = now + Duration::from_secs(1);
    a.handle(later, Input::Timeout)
        .expect("a timeout is always taken");
    exchange(&mut a, &mut b, later, false);
    assert!(a.session(&b.real_pk()).is_some_and(|s| s.is_established()));
    assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
    let ev: Vec<_> = std::iter::from_fn(|| b.poll_event(later)).collect();
    assert!(ev
        .iter()
        .any(|e| e.event == Event::Established && e.peer == a.real_pk()));
    // Data flows through the node API.
    assert_eq!(a.send_lossless(later, &b.real_pk(), &[160, 1]), Ok(0));
    exchange(&mut a, &mut b, later, false);
    let ev: Vec<_> = std::iter::from_fn(|| b.poll_event(later)).collect();
    assert!(ev.iter().any(|e| e.event == Event::Lossless(vec![160, 1])));
}

/// Established a → b; returns b's view of a's session key.
fn established_pair(now: Instant) -> (Node<u8>, Node<u8>, Option<PublicKey>) {
    let mut a = node(6, now);
    let mut b = node(7, now);
    b.allow(a.real_pk());
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, now, false);
    assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
    let key = b
        .session(&a.real_pk())
        .and_then(|s| s.peer_session_pk().copied());
    while b.poll_event(now).is_some() {}
    (a, b, key)
}

fn events(n: &mut Node<u8>, now: Instant) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event(now))
        .map(|e| e.event)
        .collect()
}

#[test]
fn a_restarted_peer_with_a_new_dht_key_replaces_the_session() {
    let now = Instant::now();
    let (a, mut b, old_key) = established_pair(now);
    // New process: same long-term key, new DHT key.
    let real = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(6));
    let mut a2 = Node::new(
        now,
        &mut ChaCha20Rng::seed_from_u64(66),
        real,
        NodeConfig::default(),
    );
    assert_eq!(a2.real_pk(), a.real_pk());
    assert_ne!(a2.dht_pk(), a.dht_pk());
    let soon = now + Duration::from_millis(100);
    a2.connect(soon, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a2, &mut b, soon, false);
    let ev = events(&mut b, soon);
    assert!(ev.contains(&Event::Killed), "{ev:?}");
    assert!(ev.contains(&Event::Established), "{ev:?}");
    assert!(a2.session(&b.real_pk()).is_some_and(|s| s.is_established()));
    assert_ne!(
        b.session(&a.real_pk())
            .and_then(|s| s.peer_session_pk().copied()),
        old_key
    );
}

#[test]
fn a_new_session_of_the_same_peer_replaces_a_silent_one_only() {
    let now = Instant::now();
    let (mut a, mut b, old_key) = established_pair(now);
    // Same process starts a new session (same DHT key, new session key).
    let soon = now + Duration::from_millis(500);
    a.connect(soon, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, soon, false);
    // Within 2 s of the last packet the old session stays.
    assert_eq!(
        b.session(&a.real_pk())
            .and_then(|s| s.peer_session_pk().copied()),
        old_key
    );
    assert!(events(&mut b, soon).is_empty());
    // After 2 s of silence the re-sent handshake takes over.
    let later = now + Duration::from_secs(3);
    a.handle(later, Input::Timeout)
        .expect("a timeout is always taken");
    exchange(&mut a, &mut b, later, false);
    let ev = events(&mut b, later);
    assert!(ev.contains(&Event::Killed), "{ev:?}");
    assert!(ev.contains(&Event::Established), "{ev:?}");
    assert!(a.session(&b.real_pk()).is_some_and(|s| s.is_established()));
}

/// Moves datagrams between a (addresses 1, 11) and b (2, 12); datagrams
/// to an address in `down` are dropped. Returns the addresses used by a.
fn exchange2(a: &mut Node<u8>, b: &mut Node<u8>, now: Instant, down: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut used = Vec::new();
    for _ in 0..50 {
        let mut moved = false;
        while let Some((to, t)) = a.poll_transmit(now, &mut buf) {
            moved = true;
            used.push(to);
            if !down.contains(&to) {
                deliver(b, now, to - 1, &mut buf[..t.len]);
            }
        }
        while let Some((to, t)) = b.poll_transmit(now, &mut buf) {
            moved = true;
            if !down.contains(&to) {
                deliver(a, now, to + 1, &mut buf[..t.len]);
            }
        }
        if !moved {
            break;
        }
    }
    used
}

#[test]
fn a_closed_path_hands_its_packets_to_the_other_one() {
    let now = Instant::now();
    let (mut a, mut b, _) = established_pair(now);
    let (pa, pb) = (a.real_pk(), b.real_pk());
    assert!(a.add_path(now, &pb, 12));
    assert!(b.add_path(now, &pa, 11));
    assert!(!a.add_path(now, &PublicKey([9; 32]), 13), "no session");
    // Traffic proves both paths (probes go on each alone).
    let mut t = now;
    let mut n = 0u8;
    for _ in 0..20 {
        t += Duration::from_millis(50);
        a.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        b.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        a.send_lossless(t, &pb, &[160, n]).unwrap();
        n += 1;
        exchange2(&mut a, &mut b, t, &[]);
    }
    let table = a.path_table(&pb).unwrap();
    assert_eq!(table.paths().count(), 2);
    assert!(
        table.paths().all(|p| p.state() == Health::Healthy),
        "{:?}",
        table.paths().map(|p| p.state()).collect::<Vec<_>>()
    );
    while a.poll_path_event().is_some() {}
    // Packets in flight on address 2 when it goes down and is reported
    // closed: resent at once on 12, delivered in order.
    t += Duration::from_millis(50);
    for _ in 0..5 {
        a.send_lossless(t, &pb, &[160, n]).unwrap();
        n += 1;
    }
    let used = exchange2(&mut a, &mut b, t, &[2, 12]);
    assert!(!used.is_empty());
    a.path_closed(t, 2);
    let ev: Vec<_> = std::iter::from_fn(|| a.poll_path_event()).collect();
    assert!(
        ev.iter().any(|e| e.addr == Route::Udp(2)
            && matches!(
                e.kind,
                PathEventKind::Health {
                    new: Health::Dead,
                    reason: PathReason::Closed,
                    ..
                }
            )),
        "{ev:?}"
    );
    let used = exchange2(&mut a, &mut b, t, &[2]);
    assert!(used.iter().all(|&x| x == 12), "{used:?}");
    assert!(used.len() >= 5, "stranded packets resent at once: {used:?}");
    let got: Vec<u8> = std::iter::from_fn(|| b.poll_event(t))
        .filter_map(|e| match e.event {
            Event::Lossless(d) => d.get(1).copied(),
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..n).collect::<Vec<u8>>(), "all, in order");
    let ev: Vec<_> = std::iter::from_fn(|| a.poll_path_event()).collect();
    assert!(
        ev.iter().any(|e| e.addr == Route::Udp(12)
            && e.kind
                == PathEventKind::Primary {
                    from: Some(Route::Udp(2))
                }),
        "{ev:?}"
    );
}

#[test]
fn a_peer_without_any_route_asks_for_no_timer_in_the_past() {
    let now = Instant::now();
    let mut a = node(1, now);
    let b = node(2, now);
    // No relay known, no UDP address: the session has nowhere to send.
    a.connect_via_relays(now, b.real_pk(), b.dht_pk());
    let mut buf = vec![0u8; MAX_PACKET_SIZE];
    let mut t = now;
    for _ in 0..20 {
        a.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        while a.poll_transmit(t, &mut buf).is_some() {}
        let next = a.poll_timeout().expect("the session keeps a timer");
        assert!(next > t, "timer {next:?} is not after {t:?}");
        t = next;
    }
}

#[test]
fn acknowledgements_also_go_back_the_way_the_peers_data_came() {
    let now = Instant::now();
    let mut a = node(6, now);
    // No redundant copies at B (they would hide the point).
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let real = KeyPair::generate(&mut rng);
    let cfg = NodeConfig {
        scheduler: SchedulerConfig {
            redundancy_window: Duration::ZERO,
            ..SchedulerConfig::default()
        },
        ..NodeConfig::default()
    };
    let mut b = Node::new(now, &mut rng, real, cfg);
    b.allow(a.real_pk());
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, now, false);
    let pa = a.real_pk();
    let pb = b.real_pk();
    // B's lossless packets prove address 1: it is B's primary.
    let mut t = now;
    for n in 0..5u8 {
        t += Duration::from_millis(20);
        b.send_lossless(t, &pa, &[160, n]).unwrap();
        exchange(&mut a, &mut b, t, false);
    }
    assert!(b.add_path(t, &pa, 11));
    assert!(matches!(b.primary(&pa), Some(Route::Udp(_))));
    // A's data reaches B from address 11 only (its address 1 is dead in
    // A's direction); B must acknowledge through 11 too.
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut to_b = Vec::new();
    let mut dests = Vec::new();
    for n in 0..10u8 {
        t += Duration::from_millis(20);
        a.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        b.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        a.send_lossless(t, &pb, &[160, n]).unwrap();
        while let Some((_, tr)) = a.poll_transmit(t, &mut buf) {
            to_b.push(buf[..tr.len].to_vec());
        }
        for mut d in to_b.drain(..) {
            let _ = b.handle(
                t,
                Input::Datagram {
                    from: 11,
                    data: &mut d,
                },
            );
        }
        while let Some((to, tr)) = b.poll_transmit(t, &mut buf) {
            if tr.kind == TransmitKind::Data(DataKind::Request) {
                dests.push(to);
            }
        }
    }
    assert!(dests.contains(&11), "request packets went to {dests:?}");
}

#[test]
fn drops_data_from_unknown_addresses() {
    let now = Instant::now();
    let mut b = node(3, now);
    let mut junk = [0x1bu8; 100];
    assert!(datagram(&mut b, now, 9, &mut junk).is_err());
    let mut junk = [0x19u8; 161];
    assert!(datagram(&mut b, now, 9, &mut junk).is_err());
    assert_eq!(b.stats().unknown_source, 2);
    let mut buf = [0u8; MAX_PACKET_SIZE];
    assert!(b.poll_transmit(now, &mut buf).is_none());
}

#[test]
fn initiator_restarts_after_a_handshake_timeout() {
    let now = Instant::now();
    let mut a = node(4, now);
    let b = node(5, now);
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut t = now;
    let mut cookie_requests = 0;
    for _ in 0..40 {
        while let Some((_, tx)) = a.poll_transmit(t, &mut buf) {
            assert_eq!(tx.kind, TransmitKind::CookieRequest);
            cookie_requests += 1;
        }
        t += Duration::from_millis(500);
        a.handle(t, Input::Timeout)
            .expect("a timeout is always taken");
        assert!(a.poll_event(t).is_none(), "no timeout reaches the owner");
    }
    assert!(a.stats().reconnects >= 1);
    assert!(cookie_requests > 8);
    assert!(a.session(&b.real_pk()).is_some());
}

/// A relay that replays a peer's handshake as OOB under made-up sender
/// keys (issue: it evicted the UDP route after 16 replays and the node
/// never sent over UDP again): the sender must be the handshake's DHT
/// key, so every replay is dropped, no route or path id is added, and
/// the UDP route stays — during the handshake and once established.
#[test]
fn a_relay_replaying_a_handshake_under_made_up_keys_cannot_evict_the_udp_route() {
    let now = Instant::now();
    let mut a = node(11, now);
    let mut b = node(12, now);
    b.allow(a.real_pk());
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    // Run the handshake, keeping a's handshake and holding b's answer
    // back so that b stays NOT_CONFIRMED.
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut hs = None;
    for _ in 0..4 {
        while let Some((_, t)) = a.poll_transmit(now, &mut buf) {
            if buf[0] == PACKET_HANDSHAKE {
                hs = Some(buf[..t.len].to_vec());
            }
            deliver(&mut b, now, 1, &mut buf[..t.len]);
        }
        while let Some((_, t)) = b.poll_transmit(now, &mut buf) {
            if buf[0] != PACKET_HANDSHAKE {
                deliver(&mut a, now, 2, &mut buf[..t.len]);
            }
        }
    }
    let hs = hs.expect("a sent its handshake");
    assert_eq!(
        b.session(&a.real_pk()).map(|s| s.state()),
        Some(State::NotConfirmed)
    );
    let relay = PublicKey([0xee; 32]);
    let a_pk = a.real_pk();
    let replay = |b: &mut Node<u8>, n: u8| {
        let ids = b.book.len();
        for i in 0..20u8 {
            let made_up = PublicKey([n ^ i; 32]);
            let mut p = hs.clone();
            let r = b.on_packet(
                now,
                Route::Relay {
                    relay,
                    peer: made_up,
                },
                &mut p,
            );
            assert!(r.is_err(), "replay {i} accepted");
        }
        assert_eq!(b.book.len(), ids, "replays allocated path ids");
        let routes = &b.peers[&a_pk].routes;
        assert_eq!(routes, &vec![Route::Udp(1)], "{routes:?}");
    };
    replay(&mut b, 0x10);
    // Established, the same.
    let later = now + Duration::from_secs(1);
    a.handle(later, Input::Timeout)
        .expect("a timeout is always taken");
    b.handle(later, Input::Timeout)
        .expect("a timeout is always taken");
    exchange(&mut a, &mut b, later, false);
    assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
    replay(&mut b, 0x40);
    // And b still sends to a over UDP.
    assert!(b.send_lossless(later, &a.real_pk(), &[160, 7]).is_ok());
    let mut sent_udp = false;
    while let Some((to, _)) = b.poll_transmit(later, &mut buf) {
        sent_udp |= to == 1;
    }
    assert!(sent_udp);
}

/// Issue #15 (roaming): a data packet from an address no route names is
/// tried against the established sessions, within a budget of trial
/// decryptions (100 at once, 500 a second), so a flood of junk from new
/// addresses costs bounded CPU; a packet of the peer's from a new address
/// still makes that address the peer's route once the budget refilled.
#[test]
fn junk_from_unknown_addresses_costs_at_most_the_roaming_budget_and_a_roaming_peer_is_followed() {
    let now = Instant::now();
    let mut a = node(1, now);
    let mut b = node(2, now);
    b.allow(a.real_pk());
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, now, false);
    assert_eq!(a.send_lossless(now, &b.real_pk(), &[160, 1]), Ok(0));
    exchange(&mut a, &mut b, now, false);
    assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    for i in 0..5000u32 {
        let mut junk = [0u8; 200];
        rng.fill_bytes(&mut junk);
        junk[0] = PACKET_DATA;
        let from = 10 + (i % 200) as u8;
        assert!(datagram(&mut b, now, from, &mut junk).is_err());
    }
    let st = b.stats();
    assert!(
        st.roam_trials <= 100,
        "{} trials at one instant",
        st.roam_trials
    );
    assert_eq!(st.roamed, 0);
    assert!(st.roam_budget_exhausted >= 4900);
    // One second later: a's next packet arrives from address 3 (its NAT
    // rebound); b follows it there.
    let later = now + Duration::from_secs(1);
    assert_eq!(a.send_lossless(later, &b.real_pk(), &[160, 2]), Ok(1));
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut sent = 0;
    while let Some((to, t)) = a.poll_transmit(later, &mut buf) {
        assert_eq!(to, 2);
        sent += 1;
        datagram(&mut b, later, 3, &mut buf[..t.len]).expect("authenticated from the new address");
    }
    assert!(sent >= 1);
    assert_eq!(b.stats().roamed, 1, "one roam, then the route is known");
    assert!(b.candidates(&a.real_pk()).iter().any(|(x, _)| *x == 3));
    let ev: Vec<_> = std::iter::from_fn(|| b.poll_event(later)).collect();
    assert!(ev.iter().any(|e| e.event == Event::Lossless(vec![160, 2])));
}

/// Issue #15 (hole punching): a friend that advertises address after
/// address makes us challenge each at most 14 times, and all of them
/// together at most the node's challenge budget (50 at once, 100 a
/// second): we cannot be turned into a packet cannon at others.
#[test]
fn a_friend_advertising_address_after_address_gets_at_most_the_challenge_budget() {
    let now = Instant::now();
    let mut a = node(3, now);
    let mut b = node(4, now);
    b.allow(a.real_pk());
    a.connect(now, b.real_pk(), b.dht_pk(), 2);
    exchange(&mut a, &mut b, now, false);
    assert_eq!(a.send_lossless(now, &b.real_pk(), &[160, 1]), Ok(0));
    exchange(&mut a, &mut b, now, false);
    assert!(b.session(&a.real_pk()).is_some_and(|s| s.is_established()));
    let mut buf = [0u8; MAX_PACKET_SIZE];
    let mut elsewhere = 0u64;
    for round in 0..30u8 {
        let list: Vec<(EndpointKind, u8)> = (0..7u8)
            .map(|i| (EndpointKind::Local, 20 + round * 7 + i))
            .collect();
        a.handle(now, Input::Endpoints(&list))
            .expect("endpoints are always taken");
        for _ in 0..50 {
            let mut moved = false;
            while let Some((to, t)) = a.poll_transmit(now, &mut buf) {
                moved = true;
                if to == 2 {
                    deliver(&mut b, now, 1, &mut buf[..t.len]);
                }
            }
            while let Some((to, t)) = b.poll_transmit(now, &mut buf) {
                moved = true;
                if to == 1 {
                    deliver(&mut a, now, 2, &mut buf[..t.len]);
                } else {
                    elsewhere += 1;
                }
            }
            if !moved {
                break;
            }
        }
    }
    let st = b.stats();
    assert!(st.endpoint_lists_received >= 30, "{st:?}");
    assert!(
        st.challenges_sent <= 50 && elsewhere <= 50,
        "{} challenges ({elsewhere} datagrams elsewhere) at one instant",
        st.challenges_sent
    );
    assert!(st.punch_budget_exhausted > 0, "{st:?}");
    assert!(b.candidates(&a.real_pk()).len() <= 8);
}
