//! Simulator speed: prints datagram events per second of real time for a
//! busy two-node scenario. Not asserted (timing varies); it asserts only that
//! every event happened. Run in release for real figures:
//! `TOXLINK_PERF_EVENTS=1000000 cargo test --release -p toxlink-sim --test throughput -- --nocapture`

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;
use toxlink_sim::{ms, secs, us, LinkConfig, Output, Sim, SimNode};

/// Bounces every datagram back to where it came from.
#[derive(Default)]
struct Bouncer {
    out: VecDeque<Output<u8>>,
    received: u64,
}

impl SimNode<u8> for Bouncer {
    fn handle_datagram(&mut self, _now: Instant, from: u8, to: u8, data: Bytes) {
        self.received += 1;
        self.out.push_back(Output::Datagram {
            from: to,
            to: from,
            data,
        });
    }
    fn poll_output(&mut self, _now: Instant) -> Option<Output<u8>> {
        self.out.pop_front()
    }
}

#[test]
fn datagram_events_per_second() {
    let target: u64 = std::env::var("TOXLINK_PERF_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut sim: Sim<u8> = Sim::new(1);
    sim.network.connect(
        1,
        2,
        LinkConfig::new()
            .latency(ms(5))
            .jitter_uniform(us(200))
            .duplicate(0.001)
            .loss(0.001)
            .bandwidth(1_000_000_000),
    );
    let a = sim.add_node(Bouncer::default(), [1]);
    let b = sim.add_node(Bouncer::default(), [2]);
    // 1000 "balls" of 1200 bytes in flight.
    for i in 0..1000u32 {
        let mut p = vec![0u8; 1200];
        p[..4].copy_from_slice(&i.to_be_bytes());
        sim.inject(1, 2, p);
    }
    let started = Instant::now();
    let received = |s: &mut Sim<u8>| {
        s.node::<Bouncer>(a).map_or(0, |n| n.received)
            + s.node::<Bouncer>(b).map_or(0, |n| n.received)
    };
    sim.run_while(|s| received(s) < target, secs(100_000))
        .expect("enough bounces");
    let real = started.elapsed();
    let events = received(&mut sim);
    assert!(events >= target);
    assert_eq!(events, sim.network.stats().datagrams_delivered);
    println!(
        "{events} datagram events, {:?} virtual, {real:?} real: {:.0} events/s",
        sim.elapsed(),
        events as f64 / real.as_secs_f64()
    );
}
