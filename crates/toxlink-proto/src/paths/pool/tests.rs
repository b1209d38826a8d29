//! Unit tests of the relay pool.

use super::*;
use crate::paths::test_util::{ms, pk};

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1000 + n))
}
fn info(b: u8) -> RelayInfo {
    RelayInfo {
        addr: addr(u16::from(b)),
        public_key: pk(b),
    }
}
/// Relay `b` as a friend names it, at a port of its choosing.
fn named(b: u8, port: u16) -> RelayInfo {
    RelayInfo {
        addr: SocketAddr::from(([192, 0, 2, 1], port)),
        public_key: pk(b),
    }
}
fn pool(n: u8) -> RelayPool {
    let mut p = RelayPool::default();
    let t = Instant::now();
    for b in 1..=n {
        assert_eq!(p.learn(t, info(b), Source::Own), Ok(vec![]));
    }
    p
}
fn uses(ev: &[PoolEvent]) -> Vec<(PublicKey, RelayInfo)> {
    ev.iter()
        .filter_map(|e| match e {
            PoolEvent::Use { peer, relay } => Some((*peer, *relay)),
            _ => None,
        })
        .collect()
}
fn closes(ev: &[PoolEvent]) -> Vec<PublicKey> {
    ev.iter()
        .filter_map(|e| match e {
            PoolEvent::Close { relay } => Some(*relay),
            _ => None,
        })
        .collect()
}
/// A pool of `n` own relays (see [`pool`]) with the peers `peers` added,
/// and the time they were added at.
fn pool_with(n: u8, peers: &[u8]) -> (Instant, RelayPool) {
    let t = Instant::now();
    let mut p = pool(n);
    for &b in peers {
        p.add_peer(t, pk(b));
    }
    (t, p)
}
/// Friend `friend` names relay `b` at `port`: the pool keeps its word.
fn friend_names(p: &mut RelayPool, t: Instant, b: u8, port: u16, friend: u8) -> Vec<PoolEvent> {
    p.learn(t, named(b, port), Source::Friend(pk(friend)))
        .expect("a friend's word is kept")
}
/// Runs the pool's timers up to `until`, collecting the events.
fn run(p: &mut RelayPool, until: Instant) -> Vec<PoolEvent> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match p.poll_timeout() {
            Some(t) if t <= until => out.extend(p.tick(t)),
            _ => break,
        }
    }
    out
}

#[test]
fn a_peer_gets_the_target_number_of_relays() {
    let t = Instant::now();
    let mut p = pool(5);
    let ev = p.add_peer(t, pk(100));
    assert_eq!(ev.len(), 3);
    assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
    assert!(matches!(ev[0], PoolEvent::Use { relay, .. } if relay == info(1)));
}

#[test]
fn every_loss_reason_replaces_through_the_same_path() {
    let t = Instant::now();
    for reason in [
        LossReason::Offline,
        LossReason::Slow,
        LossReason::Tampering,
        LossReason::Disconnected,
    ] {
        let mut p = pool(5);
        p.add_peer(t, pk(100));
        let ev = p.relay_lost(t, Some(pk(100)), pk(2), reason);
        assert_eq!(
            ev,
            vec![
                PoolEvent::Drop {
                    peer: pk(100),
                    relay: pk(2),
                    reason
                },
                PoolEvent::Use {
                    peer: pk(100),
                    relay: info(4)
                },
            ],
            "{reason:?}"
        );
        assert_eq!(p.active(&pk(100)), &[pk(1), pk(3), pk(4)]);
    }
}

#[test]
fn tampering_for_one_peer_leaves_the_others_alone() {
    let (t, mut p) = pool_with(4, &[100, 101]);
    p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Tampering);
    assert!(!p.active(&pk(100)).contains(&pk(1)));
    assert!(p.active(&pk(101)).contains(&pk(1)));
    // Does not come back for that peer when others fail meanwhile.
    p.relay_lost(t, Some(pk(100)), pk(2), LossReason::Offline);
    assert!(!p.active(&pk(100)).contains(&pk(1)));
}

#[test]
fn exclusions_expire_slow_after_5_min_tampering_after_30_min() {
    let t = Instant::now();
    let min = Duration::from_secs(60);
    let mut p = pool(3);
    p.add_peer(t, pk(100));
    p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Tampering);
    p.relay_lost(t, Some(pk(100)), pk(2), LossReason::Slow);
    assert_eq!(p.active(&pk(100)), &[pk(3)]);
    assert!(run(&mut p, t + 5 * min - ms(1)).is_empty());
    assert_eq!(p.active(&pk(100)), &[pk(3)]);
    // The slow one returns after 5 minutes, through the timer.
    let ev = run(&mut p, t + 5 * min);
    assert_eq!(uses(&ev), vec![(pk(100), info(2))]);
    assert!(p.is_excluded(t + 5 * min, &pk(100), &pk(1)));
    assert!(run(&mut p, t + 30 * min - ms(1)).is_empty());
    let ev = run(&mut p, t + 30 * min);
    assert_eq!(uses(&ev), vec![(pk(100), info(1))]);
    assert_eq!(p.active(&pk(100)), &[pk(3), pk(2), pk(1)]);
    assert_eq!(p.poll_timeout(), None, "no timer left behind");
}

#[test]
fn exclusions_are_bounded_per_peer() {
    let t = Instant::now();
    let mut p = RelayPool::new(PoolConfig {
        max_excluded: 4,
        ..Default::default()
    });
    for b in 1..=20 {
        p.learn(t, info(b), Source::Own).expect("learn");
    }
    p.add_peer(t, pk(100));
    for b in 1..=20 {
        p.relay_lost(
            t + ms(u64::from(b)),
            Some(pk(100)),
            pk(b),
            LossReason::Tampering,
        );
    }
    let set = &p.peers[&pk(100)];
    assert_eq!(set.excluded.len(), 4);
    // The ones ending first gave way.
    assert!(set.excluded.contains_key(&pk(20)));
    assert!(!set.excluded.contains_key(&pk(1)));
}

#[test]
fn offline_relays_back_off_then_return() {
    let (t, mut p) = pool_with(3, &[100]);
    let ev = p.relay_lost(t, None, pk(1), LossReason::Offline);
    assert_eq!(ev.len(), 1, "no replacement available: only the drop");
    assert_eq!(p.refill(t + ms(1000), pk(100)), vec![]);
    let ev = p.refill(t + ms(2000), pk(100));
    assert_eq!(
        ev,
        vec![PoolEvent::Use {
            peer: pk(100),
            relay: info(1)
        }]
    );
    // Second time offline: 4 s back-off, unless it reconnects earlier.
    p.relay_lost(t + ms(3000), None, pk(1), LossReason::Offline);
    assert_eq!(p.refill(t + ms(6000), pk(100)), vec![]);
    p.link_up(t + ms(6000), &pk(1));
    assert_eq!(p.refill(t + ms(6000), pk(100)).len(), 1);
}

#[test]
fn a_back_off_ending_tops_the_set_up_through_the_timer() {
    let (t, mut p) = pool_with(3, &[100]);
    p.relay_lost(t, None, pk(1), LossReason::Offline);
    assert_eq!(p.poll_timeout(), Some(t + ms(2000)));
    let ev = run(&mut p, t + ms(2000));
    assert_eq!(uses(&ev), vec![(pk(100), info(1))]);
}

#[test]
fn a_global_disconnect_drops_it_for_every_peer() {
    let (t, mut p) = pool_with(4, &[100, 101]);
    let ev = p.relay_lost(t, None, pk(1), LossReason::Disconnected);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PoolEvent::Drop { .. }))
            .count(),
        2
    );
    assert!(!p.active(&pk(100)).contains(&pk(1)));
    assert!(!p.active(&pk(101)).contains(&pk(1)));
    assert_eq!(p.active(&pk(100)).len(), 3);
}

#[test]
fn a_slow_relay_is_demoted_after_a_while() {
    let (t, mut p) = pool_with(4, &[100]);
    let rtts = [(pk(1), ms(20)), (pk(2), ms(25)), (pk(3), ms(2000))];
    assert!(p.observe_rtts(t, pk(100), &rtts).is_empty());
    assert!(p.observe_rtts(t + ms(1999), pk(100), &rtts).is_empty());
    let ev = p.observe_rtts(t + ms(2000), pk(100), &rtts);
    assert_eq!(
        ev[0],
        PoolEvent::Drop {
            peer: pk(100),
            relay: pk(3),
            reason: LossReason::Slow
        }
    );
    assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(4)]);
    // A merely somewhat slower relay is kept.
    let rtts = [(pk(1), ms(20)), (pk(2), ms(60)), (pk(4), ms(70))];
    assert!(p.observe_rtts(t + ms(9000), pk(100), &rtts).is_empty());
    assert!(p.observe_rtts(t + ms(19000), pk(100), &rtts).is_empty());
}

#[test]
fn known_list_is_bounded() {
    let t = Instant::now();
    let mut p = RelayPool::new(PoolConfig {
        max_known: 2,
        ..Default::default()
    });
    assert!(p.learn(t, info(1), Source::Own).is_ok());
    assert!(p.learn(t, info(2), Source::Own).is_ok());
    assert_eq!(p.learn(t, info(3), Source::Own), Err(LearnError::Full));
    assert_eq!(
        p.learn(t, named(4, 9), Source::Friend(pk(100))),
        Err(LearnError::Full)
    );
    assert!(p.learn(t, info(1), Source::Own).is_ok(), "a known key");
    assert_eq!(p.known().count(), 2);
}

#[test]
fn friends_cannot_push_out_our_own_relays_but_we_push_out_theirs() {
    let t = Instant::now();
    let mut p = RelayPool::new(PoolConfig {
        max_known: 3,
        ..Default::default()
    });
    p.learn(t, info(1), Source::Own).expect("own");
    friend_names(&mut p, t, 2, 2, 100);
    friend_names(&mut p, t, 3, 3, 101);
    assert_eq!(
        p.learn(t, named(4, 4), Source::Friend(pk(102))),
        Err(LearnError::Full)
    );
    // Our own relay takes the place of the oldest unused friend's one.
    p.learn(t, info(5), Source::Own).expect("own");
    let keys: Vec<PublicKey> = p.known().map(|k| k.public_key).collect();
    assert_eq!(keys, vec![pk(1), pk(3), pk(5)]);
}

#[test]
fn unroutable_relay_addresses_are_refused() {
    let t = Instant::now();
    let mut p = RelayPool::default();
    for a in [
        "0.0.0.0:33445",
        "[::]:33445",
        "10.0.0.1:0",
        "224.0.0.1:33445",
        "255.255.255.255:1",
    ] {
        let a: SocketAddr = a.parse().expect("literal");
        let r = RelayInfo {
            addr: a,
            public_key: pk(1),
        };
        assert_eq!(
            p.learn(t, r, Source::Friend(pk(100))),
            Err(LearnError::BadAddress(a))
        );
        assert_eq!(p.learn(t, r, Source::Own), Err(LearnError::BadAddress(a)));
    }
    assert_eq!(p.known().count(), 0);
}

#[test]
fn a_peer_leaving_a_relay_keeps_it_tied_and_takes_a_spare_until_it_returns() {
    let (t, mut p) = pool_with(5, &[100, 101]);
    assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
    // The peer's own link to relay 2 broke: relay 2 stays, a spare joins.
    let ev = p.peer_left(t, pk(100), pk(2));
    assert_eq!(
        ev,
        vec![PoolEvent::Use {
            peer: pk(100),
            relay: info(4)
        }]
    );
    assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3), pk(4)]);
    assert!(p.is_absent(&pk(100), &pk(2)));
    // Leaving twice takes no second spare.
    assert!(p.peer_left(t, pk(100), pk(2)).is_empty());
    // Nothing changed for the relay itself: other peers may still take it.
    let ev = p.relay_lost(t, Some(pk(101)), pk(1), LossReason::Slow);
    assert!(ev.contains(&PoolEvent::Use {
        peer: pk(101),
        relay: info(4)
    }));
    p.peer_returned(&pk(100), &pk(2));
    assert!(!p.is_absent(&pk(100), &pk(2)));
    // The set never grows past the hard cap, however often peers leave.
    for r in 1..=5 {
        p.peer_left(t, pk(100), pk(r));
    }
    assert!(p.active(&pk(100)).len() <= PoolConfig::default().max);
}

#[test]
fn a_route_refused_for_one_peer_does_not_back_the_relay_off_for_others() {
    let (t, mut p) = pool_with(4, &[100]);
    p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Offline);
    // A new peer still gets relay 1 at once.
    p.add_peer(t, pk(101));
    assert!(p.active(&pk(101)).contains(&pk(1)));
}

// --- Framing (docs/DESIGN.md §3): what friends say about relays. ---

#[test]
fn a_friend_poisoning_a_relay_address_cannot_change_how_we_reach_it_or_where_we_probe() {
    let (t, mut p) = pool_with(3, &[100, 66]);
    p.link_up(t, &pk(1));
    for port in 1..=5 {
        // Five friends (or one, five times) name relay 1 elsewhere.
        let ev = p
            .learn(t, named(1, port), Source::Friend(pk(60 + port as u8)))
            .expect("kept as the friend's word");
        assert!(ev.is_empty(), "{ev:?}");
    }
    assert_eq!(p.known().find(|k| k.public_key == pk(1)), Some(info(1)));
    assert_eq!(p.probe_addr(&pk(1)), Some(addr(1)));
    // Its link going down and the relay coming back change nothing.
    p.relay_lost(t, None, pk(1), LossReason::Offline);
    let ev = run(&mut p, t + ms(2000));
    assert_eq!(uses(&ev), vec![(pk(66), info(1)), (pk(100), info(1))]);
    assert!(closes(&ev).is_empty(), "our own relay keeps its link");
    assert_eq!(p.probe_addr(&pk(1)), Some(addr(1)));
    assert_eq!(p.own_relays().count(), 3, "nothing of theirs is shared on");
    // Only our own word moves it.
    let moved = RelayInfo {
        addr: addr(99),
        public_key: pk(1),
    };
    assert_eq!(
        p.learn(t, moved, Source::Own),
        Ok(vec![PoolEvent::Relink { relay: moved }])
    );
    assert_eq!(p.probe_addr(&pk(1)), Some(addr(99)));
}

#[test]
fn a_friends_relay_serves_only_that_friend_until_our_own_link_proves_it() {
    let (t, mut p) = pool_with(0, &[100, 101]);
    friend_names(&mut p, t, 7, 7, 100);
    assert!(p.refill(t, pk(101)).is_empty(), "not for another friend");
    assert_eq!(
        p.probe_addr(&pk(7)),
        None,
        "a friend's word is no probe address"
    );
    let ev = p.refill(t, pk(100));
    assert_eq!(uses(&ev), vec![(pk(100), named(7, 7))]);
    // Our link comes up there: the probe may go where the link is.
    p.link_up(t + ms(100), &pk(7));
    assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
    assert!(run(&mut p, t + ms(100) + Duration::from_secs(59)).is_empty());
    assert_eq!(p.own_relays().count(), 0);
    // Up for a minute: our own evidence. It serves everyone now.
    let ev = run(&mut p, t + ms(100) + Duration::from_secs(60));
    assert_eq!(uses(&ev), vec![(pk(101), named(7, 7))]);
    assert_eq!(p.own_relays().count(), 1);
    // A friend renaming it afterwards moves nothing.
    friend_names(&mut p, t, 7, 666, 100);
    assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
}

#[test]
fn a_friend_renaming_a_relay_whose_link_is_open_does_not_move_the_link() {
    let (t, mut p) = pool_with(0, &[100, 66]);
    friend_names(&mut p, t, 7, 7, 100);
    p.refill(t, pk(100));
    p.link_up(t, &pk(7));
    // The framer names the same relay elsewhere, then renames it.
    friend_names(&mut p, t, 7, 666, 66);
    friend_names(&mut p, t, 7, 667, 66);
    let ev = p.refill(t, pk(66));
    assert_eq!(uses(&ev), vec![(pk(66), named(7, 7))], "the link's address");
    assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
    // Its link dropping and coming back keeps the verified address.
    p.relay_lost(t, None, pk(7), LossReason::Offline);
    let ev = run(&mut p, t + ms(2000));
    assert!(uses(&ev).iter().all(|(_, r)| *r == named(7, 7)), "{ev:?}");
}

#[test]
fn a_friends_relay_whose_link_never_comes_up_is_forgotten_not_retried_forever() {
    let (t, mut p) = pool_with(3, &[100]);
    p.relay_lost(t, Some(pk(100)), pk(3), LossReason::Tampering);
    friend_names(&mut p, t, 7, 7, 100);
    assert_eq!(uses(&p.refill(t, pk(100))), vec![(pk(100), named(7, 7))]);
    // Nothing answers there: 12 s later the address failed, the link is
    // closed at once, the relay backed off.
    let ev = run(&mut p, t + Duration::from_secs(12));
    assert!(ev.contains(&PoolEvent::Close { relay: pk(7) }), "{ev:?}");
    assert!(!p.active(&pk(100)).contains(&pk(7)));
    // Tried once more after the back-off, fails again: forgotten.
    let ev = run(&mut p, t + Duration::from_secs(60));
    assert_eq!(uses(&ev), vec![(pk(100), named(7, 7))]);
    assert_eq!(closes(&ev), vec![pk(7)]);
    assert!(p.known().all(|k| k.public_key != pk(7)));
    let later = run(&mut p, t + Duration::from_secs(3600));
    assert!(uses(&later).iter().all(|(_, r)| r.public_key != pk(7)));
    assert!(closes(&later).is_empty());
}

#[test]
fn a_link_that_dies_before_coming_up_moves_to_the_next_named_address() {
    let (t, mut p) = pool_with(0, &[100, 101]);
    friend_names(&mut p, t, 7, 666, 66);
    friend_names(&mut p, t, 7, 7, 100);
    friend_names(&mut p, t, 7, 7, 101);
    assert_eq!(uses(&p.refill(t, pk(100))), vec![(pk(100), named(7, 666))]);
    // The relay handshake at the framer's address fails (wrong key).
    let ev = p.relay_lost(t + ms(100), None, pk(7), LossReason::Offline);
    assert!(ev.contains(&PoolEvent::Close { relay: pk(7) }), "{ev:?}");
    let ev = run(&mut p, t + ms(2100));
    assert_eq!(
        uses(&ev),
        vec![(pk(100), named(7, 7)), (pk(101), named(7, 7))]
    );
    p.link_up(t + ms(2200), &pk(7));
    assert_eq!(p.probe_addr(&pk(7)), Some(named(7, 7).addr));
}

#[test]
fn a_friend_keeps_at_most_four_relays_the_oldest_unused_gives_way() {
    let (t, mut p) = pool_with(0, &[100]);
    for b in 1..=4 {
        friend_names(&mut p, t, b, u16::from(b), 100);
    }
    // Three are in use (the target); the fourth is a spare.
    p.refill(t, pk(100));
    assert_eq!(p.active(&pk(100)), &[pk(1), pk(2), pk(3)]);
    friend_names(&mut p, t, 5, 5, 100);
    let keys: Vec<PublicKey> = p.known().map(|k| k.public_key).collect();
    assert_eq!(keys, vec![pk(1), pk(2), pk(3), pk(5)]);
    // Renaming one it has is no new entry.
    friend_names(&mut p, t, 1, 11, 100);
    assert_eq!(p.known().count(), 4);
    // All four in use: a fifth is refused.
    p.relay_lost(t, Some(pk(100)), pk(1), LossReason::Offline);
    assert_eq!(p.active(&pk(100)), &[pk(2), pk(3), pk(5)]);
    p.peer_left(t + ms(2000), pk(100), pk(2));
    assert_eq!(p.active(&pk(100)).len(), 4);
    assert_eq!(
        p.learn(t, named(6, 6), Source::Friend(pk(100))),
        Err(LearnError::FriendFull(4))
    );
}

#[test]
fn an_unused_link_to_a_friends_relay_is_closed_after_2_s() {
    let (t, mut p) = pool_with(0, &[100]);
    friend_names(&mut p, t, 7, 7, 100);
    p.refill(t, pk(100));
    p.link_up(t, &pk(7));
    p.remove_peer(&pk(100));
    assert!(run(&mut p, t + ms(1999)).is_empty());
    assert_eq!(closes(&run(&mut p, t + ms(2000))), vec![pk(7)]);
    assert!(!p.is_linked(&pk(7)));
    assert_eq!(p.probe_addr(&pk(7)), None);
}

#[test]
fn a_link_the_pool_asked_to_close_proves_nothing_when_it_comes_up() {
    let (t, mut p) = pool_with(0, &[100]);
    friend_names(&mut p, t, 7, 7, 100);
    p.refill(t, pk(100));
    p.remove_peer(&pk(100));
    assert_eq!(closes(&run(&mut p, t + ms(2000))), vec![pk(7)]);
    // Kept open by a self-probe, renamed meanwhile, and up again.
    friend_names(&mut p, t, 7, 666, 100);
    p.link_up(t + ms(2100), &pk(7));
    assert_eq!(p.probe_addr(&pk(7)), None);
    assert_eq!(p.poll_timeout(), None, "and nothing to prove");
}

#[test]
fn friends_addresses_per_relay_are_bounded() {
    let t = Instant::now();
    let mut p = pool(1);
    for f in 0..50u8 {
        friend_names(&mut p, t, 1, 100 + u16::from(f), 100 + f);
    }
    assert_eq!(p.known[0].named.len(), PoolConfig::default().max_namers);
    assert_eq!(p.known().count(), 1);
}
