//! Unit tests of the self-prober.

use super::*;
use crate::relay_client::RelaySetConfig;

fn keys(seed: u64) -> KeyPair {
    KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

fn prober(seed: u8) -> (SelfProber, RelaySet) {
    let main = keys(u64::from(seed));
    let p = SelfProber::new(&main, [seed; 32], RelaySetConfig::default());
    (p, RelaySet::new(main, RelaySetConfig::default()))
}

fn relay(n: u8) -> (PublicKey, SocketAddr) {
    (
        keys(1000 + u64::from(n)).public,
        SocketAddr::from(([10, 0, 0, n], 1)),
    )
}

/// Seals `n` probes going `dir` on `relay`'s lane.
fn probes(p: &mut SelfProber, relay: &PublicKey, dir: Dir, n: usize) -> Vec<Vec<u8>> {
    let lane = p.lanes.get_mut(relay).expect("lane");
    (0..n)
        .filter_map(|_| {
            let mut pkt = [0u8; MAX_PACKET_SIZE];
            let len = SelfProber::seal_probe(&mut p.rng, &p.shared, lane, dir, &mut pkt)?;
            Some(pkt[..len].to_vec())
        })
        .collect()
}

#[test]
fn sizes_are_those_of_real_data_packets_mostly_full_size() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut count = HashMap::new();
    for _ in 0..10_000 {
        let s = probe_size(&mut rng);
        assert!((MIN_PROBE..=MAX_PACKET_SIZE).contains(&s), "{s}");
        assert_eq!(s % 8, 0, "{s}: net_crypto data packets are multiples of 8");
        *count.entry(s).or_insert(0u32) += 1;
    }
    let full = count[&MAX_PACKET_SIZE];
    let small: u32 = (32..=64).step_by(8).map(|s| count[&s]).sum();
    assert!((5_700..6_300).contains(&full), "full-size {full}");
    assert!((2_200..2_800).contains(&small), "small {small}");
    assert!(count.len() > 100, "the sizes between are used too");
    // Every size a real packet can have is possible.
    assert!(count.keys().any(|&s| s == 1392));
}

#[test]
fn background_gaps_are_random_and_bounded() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let gaps: Vec<Duration> = (0..10_000).map(|_| background_gap(&mut rng)).collect();
    assert!(gaps
        .iter()
        .all(|g| (BACKGROUND_MIN..=BACKGROUND_MAX).contains(g)));
    let mean = gaps.iter().sum::<Duration>() / 10_000;
    assert!(
        (Duration::from_secs(16)..Duration::from_secs(22)).contains(&mean),
        "{mean:?}"
    );
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 9_000);
}

#[test]
fn probes_look_like_a_sessions_data_packets_and_open_in_order_with_gaps() {
    let (mut p, mut main) = prober(1);
    let (r, addr) = relay(1);
    main.add_relay(Instant::now(), r, addr);
    main.mark_up_for_test(&r);
    p.sync(Instant::now(), &mut main);
    assert!(p.has_lane(&r));
    for dir in DIRS {
        let pkts = probes(&mut p, &r, dir, 300);
        assert_eq!(pkts.len(), 300);
        let lows: Vec<u16> = pkts
            .iter()
            .map(|k| u16::from_be_bytes([k[1], k[2]]))
            .collect();
        assert!(pkts.iter().all(|k| k[0] == PACKET_DATA));
        // The two clear bytes continue from a random start, one per
        // packet, wrapping like a nonce's low bytes.
        for w in lows.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1));
        }
        assert!(lows[0] > 1000, "a random start, not a counter: {}", lows[0]);
        // Every other one is lost on the way: the rest still open.
        for k in pkts.iter().step_by(2) {
            p.check(&r, dir, k);
        }
        assert_eq!(p.lanes[&r].forged, 0, "{dir:?}");
    }
    // The two directions' nonces are independent.
    let a = probes(&mut p, &r, Dir::ToProbe, 1);
    let b = probes(&mut p, &r, Dir::ToMain, 1);
    assert_ne!(a[0][1..3], b[0][1..3]);
}

#[test]
fn a_changed_byte_or_a_replay_is_forged() {
    let (mut p, mut main) = prober(2);
    let (r, addr) = relay(2);
    main.add_relay(Instant::now(), r, addr);
    main.mark_up_for_test(&r);
    p.sync(Instant::now(), &mut main);
    let pkts = probes(&mut p, &r, Dir::ToMain, 8);
    let mut forged = 0;
    for (i, k) in pkts.iter().enumerate() {
        let mut k = k.clone();
        if i % 2 == 1 {
            // Anywhere: the id, the nonce bytes, the box.
            let at = (i * 97) % k.len();
            k[at] ^= 0x40;
            forged += 1;
        }
        p.check(&r, Dir::ToMain, &k);
    }
    p.check(&r, Dir::ToMain, &pkts[6]);
    assert_eq!(p.lanes[&r].forged, forged + 1, "a replay does not open");
    // A probe for another direction does not open either.
    let other = probes(&mut p, &r, Dir::ToProbe, 1);
    p.check(&r, Dir::ToMain, &other[0]);
    assert_eq!(p.lanes[&r].forged, forged + 2);
}

#[test]
fn the_probe_identity_follows_the_relay_set_from_the_start() {
    let (mut p, mut main) = prober(3);
    let now = Instant::now();
    let (r1, a1) = relay(1);
    let (r2, a2) = relay(2);
    main.add_relay(now, r1, a1);
    main.mark_up_for_test(&r1);
    main.add_relay(now, r2, a2);
    main.mark_up_for_test(&r2);
    p.sync(now, &mut main);
    let mut wanted: Vec<SocketAddr> =
        std::iter::from_fn(|| p.set.poll_connect().map(|(_, a)| a)).collect();
    wanted.sort();
    assert_eq!(
        wanted,
        vec![a1, a2],
        "a link to every relay, no blame needed"
    );
    for r in [r1, r2] {
        assert_eq!(main.peer_state(&p.probe_pk, &r), Some(PeerRelayState::None));
        assert_eq!(p.set.peer_state(&p.main_pk, &r), Some(PeerRelayState::None));
    }
    // A background exchange is due on each within the clamp.
    let t = p.poll_timeout().expect("a timer");
    assert!(t >= now + BACKGROUND_MIN && t <= now + BACKGROUND_MAX);
    // The relay leaves the node's set: its lane and link go.
    main.remove_relay(&r1);
    p.sync(now, &mut main);
    assert!(!p.has_lane(&r1) && p.has_lane(&r2));
    assert!(p.set.relays().all(|r| *r == r2));
}

#[test]
fn runs_are_bounded_and_end_by_their_deadline_without_busy_timers() {
    let (mut p, mut main) = prober(4);
    let now = Instant::now();
    let relays: Vec<_> = (1..=6).map(relay).collect();
    for (r, a) in &relays {
        main.add_relay(now, *r, *a);
    }
    let (r0, a0) = relays[0];
    assert!(p.start(now, r0, a0, &mut main));
    assert!(!p.start(now, r0, a0, &mut main), "one run per relay");
    for (r, a) in &relays[1..MAX_RUNS] {
        assert!(p.start(now, *r, *a, &mut main));
    }
    let (r5, a5) = relays[MAX_RUNS];
    assert!(!p.start(now, r5, a5, &mut main), "at most MAX_RUNS");
    // No route ever comes up (no relay answers): the probes wait, no
    // timer is in the past, every run fails by its deadline.
    let mut t = now;
    let mut outcomes = Vec::new();
    for _ in 0..10_000 {
        p.pump(t, &mut main);
        outcomes.extend(std::iter::from_fn(|| p.poll_outcome()));
        assert!(p.lanes.values().all(|l| l.sends.len() <= MAX_PENDING));
        let next = p.poll_timeout().expect("background timers");
        assert!(next > t, "timer {next:?} not after {t:?}");
        if next > now + RUN_DEADLINE + Duration::from_secs(60) {
            break;
        }
        t = next;
    }
    assert_eq!(outcomes.len(), MAX_RUNS);
    assert!(outcomes.iter().all(|o| !o.ok && !o.background));
    assert_eq!(p.running(), 0);
    assert!(p.start(t, r5, a5, &mut main), "room again");
}

#[test]
fn a_run_passes_on_intact_probes_and_fails_on_one_forged_or_a_silent_direction() {
    let now = Instant::now();
    for case in 0..3 {
        let (mut p, mut main) = prober(5);
        let (r, a) = relay(1);
        main.add_relay(now, r, a);
        main.mark_up_for_test(&r);
        assert!(p.start(now, r, a, &mut main));
        for dir in DIRS {
            let pkts = probes(&mut p, &r, dir, usize::from(PROBES));
            for (i, k) in pkts.iter().enumerate() {
                let mut k = k.clone();
                match case {
                    1 if i == 5 && dir == Dir::ToMain => k[40] ^= 1,
                    2 if dir == Dir::ToProbe => continue,
                    _ => {}
                }
                p.check(&r, dir, &k);
            }
        }
        p.finish(now + RUN_DEADLINE, &mut main);
        let o = p.poll_outcome().expect("ended by the deadline");
        assert_eq!(o.ok, case == 0, "case {case}: {o:?}");
        assert!(!o.background);
    }
}

#[test]
fn a_forged_background_probe_is_reported_once_per_run_length() {
    let (mut p, mut main) = prober(6);
    let now = Instant::now();
    let (r, a) = relay(1);
    main.add_relay(now, r, a);
    main.mark_up_for_test(&r);
    p.sync(now, &mut main);
    let mut k = probes(&mut p, &r, Dir::ToProbe, 3);
    k[0][10] ^= 4;
    k[1][10] ^= 4;
    p.check(&r, Dir::ToProbe, &k[0]);
    p.check(&r, Dir::ToProbe, &k[2]);
    p.finish(now, &mut main);
    let o = p.poll_outcome().expect("reported");
    assert!(!o.ok && o.background && o.forged == 1, "{o:?}");
    p.check(&r, Dir::ToProbe, &k[1]);
    p.finish(now + Duration::from_secs(1), &mut main);
    assert!(p.poll_outcome().is_none(), "not again at once");
    let mut k = probes(&mut p, &r, Dir::ToProbe, 1);
    k[0][10] ^= 4;
    p.check(&r, Dir::ToProbe, &k[0]);
    p.finish(now + RUN_DEADLINE, &mut main);
    assert!(p.poll_outcome().is_some_and(|o| o.background));
}
