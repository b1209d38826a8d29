//! Datagram link model: each impairment does what it claims, measured over
//! seeds, and runs are reproducible.

use std::time::{Duration, Instant};
use toxlink_sim::{ms, secs, DropReason, LinkConfig, Network, SendResult, SimClock, SimRng};

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

fn net(seed: u64, cfg: LinkConfig) -> (Network<u8>, Instant) {
    let clock = SimClock::new();
    let mut n = Network::new(clock.base(), SimRng::new(seed));
    n.set_link(A, B, cfg);
    (n, clock.base())
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(4)];
    v[..4].copy_from_slice(&i.to_be_bytes());
    for (k, b) in v.iter_mut().enumerate().skip(4) {
        *b = (k as u32).wrapping_mul(31).wrapping_add(i) as u8;
    }
    v
}

fn index(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Everything delivered, in delivery order: (arrival offset, payload).
fn drain(n: &mut Network<u8>, t0: Instant) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    let far = t0 + secs(1_000_000);
    while let Some(d) = n.poll_delivery(far) {
        out.push((d.at - t0, d.data.to_vec()));
    }
    out
}

#[test]
fn random_loss_rate_is_within_statistical_bounds() {
    let p = 0.1;
    let n_pkts = 10_000u32;
    let mut total_lost = 0u64;
    for seed in 0..20 {
        let (mut n, t0) = net(seed, LinkConfig::new().loss(p).latency(ms(10)));
        for i in 0..n_pkts {
            let _ = n.send(
                t0 + Duration::from_micros(u64::from(i)),
                A,
                B,
                payload(i, 8),
            );
        }
        let got = drain(&mut n, t0).len() as u64;
        let lost = u64::from(n_pkts) - got;
        let st = n.link_stats(A, B);
        assert_eq!(st.dropped_loss, lost);
        assert_eq!(st.delivered, got);
        // 5 sigma: sqrt(p(1-p)/n) = 0.003.
        let rate = lost as f64 / f64::from(n_pkts);
        assert!((rate - p).abs() < 0.015, "seed {seed}: loss rate {rate}");
        total_lost += lost;
    }
    let rate = total_lost as f64 / (20.0 * f64::from(n_pkts));
    assert!((rate - p).abs() < 0.004, "aggregate loss rate {rate}");
}

fn loss_bursts(cfg: LinkConfig, seed: u64, n_pkts: u32) -> (f64, f64) {
    let (mut n, t0) = net(seed, cfg);
    for i in 0..n_pkts {
        let _ = n.send(t0, A, B, payload(i, 4));
    }
    let got: Vec<u32> = drain(&mut n, t0).iter().map(|(_, d)| index(d)).collect();
    // Runs of consecutive missing indices.
    let mut bursts = Vec::new();
    let mut expect = 0u32;
    for i in got.iter().copied().chain(std::iter::once(n_pkts)) {
        if i > expect {
            bursts.push(i - expect);
        }
        expect = i + 1;
    }
    let lost: u32 = bursts.iter().sum();
    let mean = f64::from(lost) / bursts.len().max(1) as f64;
    (f64::from(lost) / f64::from(n_pkts), mean)
}

#[test]
fn gilbert_elliott_losses_come_in_bursts_of_the_configured_length() {
    // Bad state loses everything and lasts 1/0.25 = 4 packets on average;
    // stationary loss 0.01 / 0.26 = 3.85 %.
    let ge = LinkConfig::new().gilbert_elliott(0.01, 0.25, 0.0, 1.0);
    let expected = ge
        .gilbert_elliott
        .map(|g| g.stationary_loss())
        .unwrap_or(0.0);
    // Fixed seeds: deterministic, so the bounds cannot flake.
    for seed in 0..2 {
        let (rate, mean_burst) = loss_bursts(ge.clone(), seed, 200_000);
        assert!(
            (mean_burst - 4.0).abs() < 0.35,
            "seed {seed}: mean burst {mean_burst}"
        );
        assert!(
            (rate - expected).abs() < 0.006,
            "seed {seed}: rate {rate} vs {expected}"
        );
        // Same average loss without memory gives bursts of ~1/(1-p) = 1.04.
        let (rrate, rburst) = loss_bursts(LinkConfig::new().loss(expected), seed, 200_000);
        assert!((rrate - expected).abs() < 0.006);
        assert!(rburst < 1.2, "random loss burst {rburst}");
    }
}

#[test]
fn bandwidth_cap_gives_the_serialisation_time() {
    // 1 MB/s: a 1000-byte datagram takes exactly 1 ms to serialise.
    let (mut n, t0) = net(1, LinkConfig::new().bandwidth(1_000_000).latency(ms(20)));
    for i in 0..1000 {
        assert_eq!(
            n.send(t0, A, B, payload(i, 1000)),
            SendResult::Scheduled { copies: 1 }
        );
    }
    let got = drain(&mut n, t0);
    assert_eq!(got.len(), 1000);
    for (k, (at, d)) in got.iter().enumerate() {
        assert_eq!(index(d) as usize, k);
        assert_eq!(*at, ms(20) + ms(k as u64 + 1), "datagram {k}");
    }
    // An idle link starts serialising at the send time again.
    let t1 = t0 + secs(10);
    let _ = n.send(t1, A, B, payload(0, 500));
    let got = drain(&mut n, t0);
    assert_eq!(got[0].0, secs(10) + ms(20) + Duration::from_micros(500));
}

#[test]
fn queue_limit_tail_drops() {
    let cfg = LinkConfig::new().bandwidth(1_000_000).queue_limit(10_000);
    let (mut n, t0) = net(1, cfg);
    let mut accepted = 0;
    for i in 0..100 {
        match n.send(t0, A, B, payload(i, 1000)) {
            SendResult::Scheduled { .. } => accepted += 1,
            SendResult::Dropped(r) => assert_eq!(r, DropReason::Queue),
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(n.link_stats(A, B).dropped_queue, 90);
    // After 5 ms, five have left the queue: room for five more.
    let t1 = t0 + ms(5);
    assert_eq!(n.link_mut(A, B).backlog_bytes(t1), 5_000);
    let more = (0..10)
        .filter(|i| {
            matches!(
                n.send(t1, A, B, payload(*i, 1000)),
                SendResult::Scheduled { .. }
            )
        })
        .count();
    assert_eq!(more, 5);
    assert_eq!(drain(&mut n, t0).len(), 15);
}

#[test]
fn mtu_drops_oversized_datagrams() {
    let (mut n, t0) = net(1, LinkConfig::new().mtu(1200));
    assert_eq!(
        n.send(t0, A, B, vec![0u8; 1201]),
        SendResult::Dropped(DropReason::Mtu)
    );
    assert_eq!(
        n.send(t0, A, B, vec![0u8; 1200]),
        SendResult::Scheduled { copies: 1 }
    );
    assert_eq!(drain(&mut n, t0).len(), 1);
    assert_eq!(n.link_stats(A, B).dropped_mtu, 1);
}

fn inversions(v: &[u32]) -> usize {
    v.windows(2).filter(|w| w[1] < w[0]).count()
}

#[test]
fn reorder_actually_reorders_and_is_off_by_default() {
    let send_all = |cfg: LinkConfig| {
        let (mut n, t0) = net(5, cfg);
        for i in 0..1000 {
            let _ = n.send(t0 + ms(u64::from(i)), A, B, payload(i, 16));
        }
        let got: Vec<u32> = drain(&mut n, t0).iter().map(|(_, d)| index(d)).collect();
        (got, n.link_stats(A, B))
    };
    let (plain, _) = send_all(LinkConfig::new().latency(ms(5)));
    assert_eq!(plain, (0..1000).collect::<Vec<_>>());
    let (got, st) = send_all(LinkConfig::new().latency(ms(5)).reorder(0.2, ms(10)));
    assert_eq!(got.len(), 1000, "reordering loses nothing");
    assert!(
        (150..250).contains(&st.reordered),
        "reordered {}",
        st.reordered
    );
    assert!(inversions(&got) >= 100, "inversions {}", inversions(&got));
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
}

#[test]
fn jitter_stays_in_bounds_and_can_keep_order() {
    for cfg in [
        LinkConfig::new().latency(ms(50)).jitter_uniform(ms(20)),
        LinkConfig::new()
            .latency(ms(50))
            .jitter_normal(ms(10), ms(20)),
    ] {
        let (mut n, t0) = net(9, cfg.clone());
        for i in 0..2000 {
            let _ = n.send(
                t0 + Duration::from_micros(100 * u64::from(i)),
                A,
                B,
                payload(i, 8),
            );
        }
        let got = drain(&mut n, t0);
        let mut reordered = 0;
        for (at, d) in &got {
            let sent = Duration::from_micros(100 * u64::from(index(d)));
            let delay = *at - sent;
            assert!(
                delay >= ms(30) && delay <= ms(70),
                "{cfg:?}: delay {delay:?}"
            );
        }
        let idx: Vec<u32> = got.iter().map(|(_, d)| index(d)).collect();
        reordered += inversions(&idx);
        assert!(reordered > 0, "jitter reorders by default ({cfg:?})");
        // Same config with order kept.
        let (mut n, t0) = net(9, cfg.jitter_keeps_order(true));
        for i in 0..2000 {
            let _ = n.send(
                t0 + Duration::from_micros(100 * u64::from(i)),
                A,
                B,
                payload(i, 8),
            );
        }
        let idx: Vec<u32> = drain(&mut n, t0).iter().map(|(_, d)| index(d)).collect();
        assert_eq!(inversions(&idx), 0);
    }
}

#[test]
fn duplication_duplicates() {
    let (mut n, t0) = net(3, LinkConfig::new().duplicate(0.3).latency(ms(1)));
    for i in 0..10_000 {
        let _ = n.send(t0, A, B, payload(i, 32));
    }
    let got = drain(&mut n, t0);
    let st = n.link_stats(A, B);
    assert_eq!(got.len() as u64, 10_000 + st.duplicated);
    assert!(
        (2700..3300).contains(&st.duplicated),
        "dups {}",
        st.duplicated
    );
    let mut count = vec![0u8; 10_000];
    for (_, d) in &got {
        assert_eq!(d, &payload(index(d), 32), "duplicates are intact");
        count[index(d) as usize] += 1;
    }
    assert!(count.iter().all(|c| *c == 1 || *c == 2));
    assert_eq!(
        count.iter().filter(|c| **c == 2).count() as u64,
        st.duplicated
    );
}

#[test]
fn corruption_changes_bytes_within_the_configured_bound() {
    for (cfg, bits_mode) in [
        (LinkConfig::new().corrupt_bits(0.5, 3), true),
        (LinkConfig::new().corrupt_bytes(0.5, 4), false),
    ] {
        let (mut n, t0) = net(11, cfg);
        for i in 0..4000 {
            let _ = n.send(t0, A, B, payload(i, 100));
        }
        let got = drain(&mut n, t0);
        assert_eq!(got.len(), 4000);
        let mut damaged = 0u64;
        for (k, (_, d)) in got.iter().enumerate() {
            // Zero latency, no jitter: delivery order is send order, so the
            // original is known even if the index bytes were hit.
            let orig = payload(k as u32, 100);
            assert_eq!(d.len(), orig.len());
            let diff_bits: u32 = d.iter().zip(&orig).map(|(a, b)| (a ^ b).count_ones()).sum();
            let diff_bytes = d.iter().zip(&orig).filter(|(a, b)| a != b).count();
            if diff_bits > 0 {
                damaged += 1;
                if bits_mode {
                    assert!(diff_bits <= 3, "{diff_bits} bits flipped");
                } else {
                    assert!(diff_bytes <= 4, "{diff_bytes} bytes changed");
                }
            }
        }
        assert_eq!(damaged, n.link_stats(A, B).corrupted);
        assert!((1800..2200).contains(&damaged), "damaged {damaged}");
    }
}

#[test]
fn down_link_black_holes_sent_and_in_flight_datagrams() {
    let (mut n, t0) = net(1, LinkConfig::new().latency(ms(100)));
    let _ = n.send(t0, A, B, payload(0, 8)); // arrives at 100 ms
    n.link_mut(A, B).set_up(false);
    assert_eq!(
        n.send(t0 + ms(10), A, B, payload(1, 8)),
        SendResult::Dropped(DropReason::Down)
    );
    assert!(
        n.poll_delivery(t0 + ms(200)).is_none(),
        "in-flight datagram dropped"
    );
    n.link_mut(A, B).set_up(true);
    let _ = n.send(t0 + ms(300), A, B, payload(2, 8));
    let got = drain(&mut n, t0);
    assert_eq!(got.len(), 1);
    assert_eq!(index(&got[0].1), 2);
    assert_eq!(n.link_stats(A, B).dropped_down, 2);
    // Only the configured direction exists; B -> A has no route.
    assert_eq!(
        n.send(t0, B, A, payload(3, 8)),
        SendResult::Dropped(DropReason::NoRoute)
    );
    assert_eq!(n.stats().no_route, 1);
}

#[test]
fn default_link_config_routes_unknown_pairs_and_link_mut_does_not_open_routes() {
    let clock = SimClock::new();
    let t0 = clock.base();
    let mut n: Network<u8> = Network::new(t0, SimRng::new(1));
    n.link_mut(A, C); // touched, but there is no default: created down
    assert_eq!(
        n.send(t0, A, C, vec![1]),
        SendResult::Dropped(DropReason::Down)
    );
    n.set_default_link(Some(LinkConfig::new().latency(ms(7))));
    assert!(matches!(
        n.send(t0, B, C, vec![2]),
        SendResult::Scheduled { .. }
    ));
    let d = n
        .poll_delivery(t0 + ms(7))
        .map(|d| (d.from, d.to, d.at - t0));
    assert_eq!(d, Some((B, C, ms(7))));
}

fn trace(seed: u64, extra_link: bool) -> (u64, Vec<u32>) {
    let cfg = LinkConfig::new()
        .latency(ms(20))
        .jitter_uniform(ms(5))
        .loss(0.05)
        .reorder(0.05, ms(3))
        .duplicate(0.02)
        .corrupt_bits(0.02, 2)
        .bandwidth(2_000_000);
    let (mut n, t0) = net(seed, cfg.clone());
    if extra_link {
        n.set_link(A, C, cfg);
    }
    for i in 0..3000u32 {
        let t = t0 + Duration::from_micros(300 * u64::from(i));
        let _ = n.send(t, A, B, payload(i, 200 + (i as usize % 900)));
        if extra_link {
            let _ = n.send(t, A, C, payload(i, 100));
        }
    }
    let ab: Vec<u32> = drain(&mut n, t0)
        .iter()
        .filter(|(_, d)| d.len() != 100)
        .map(|(_, d)| index(d))
        .collect();
    (n.trace_hash(), ab)
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let (h1, v1) = trace(42, false);
    let (h2, v2) = trace(42, false);
    let (h3, v3) = trace(43, false);
    assert_eq!(h1, h2);
    assert_eq!(v1, v2);
    assert_ne!(h1, h3);
    assert_ne!(v1, v3);
}

#[test]
fn adding_a_link_does_not_change_another_links_randomness() {
    let (_, alone) = trace(7, false);
    let (_, with_other) = trace(7, true);
    assert_eq!(alone, with_other);
}

#[test]
fn config_change_applies_to_later_datagrams() {
    let (mut n, t0) = net(1, LinkConfig::new().latency(ms(10)));
    let _ = n.send(t0, A, B, payload(0, 8));
    n.link_mut(A, B).config_mut().latency = ms(50);
    let _ = n.send(t0 + ms(1), A, B, payload(1, 8));
    let got = drain(&mut n, t0);
    assert_eq!(got[0].0, ms(10));
    assert_eq!(got[1].0, ms(51));
}
