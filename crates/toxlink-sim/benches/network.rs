//! Simulator throughput: raw network send/poll and full `Sim` dispatch.
//! `cargo bench -p toxlink-sim --bench network`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::collections::VecDeque;
use std::time::Instant;
use toxlink_sim::{ms, secs, us, LinkConfig, Network, Output, Sim, SimClock, SimNode, SimRng};

const N: u64 = 10_000;

fn impaired() -> LinkConfig {
    LinkConfig::new()
        .latency(ms(20))
        .jitter_uniform(ms(2))
        .loss(0.01)
        .reorder(0.01, ms(5))
        .duplicate(0.01)
        .corrupt_bits(0.01, 2)
        .bandwidth(100_000_000)
}

fn network_send_poll(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xABu8; 1200]);
    let mut g = c.benchmark_group("network");
    g.throughput(Throughput::Elements(N));
    g.bench_function("send_poll_10k_impaired", |b| {
        b.iter_batched(
            || {
                let clock = SimClock::new();
                let mut n: Network<u16> = Network::new(clock.base(), SimRng::new(1));
                n.set_link(1, 2, impaired());
                (n, clock.base())
            },
            |(mut n, t0)| {
                for i in 0..N {
                    let _ = n.send(t0 + us(i * 10), 1, 2, payload.clone());
                }
                let mut k = 0u64;
                while n.poll_delivery(t0 + secs(60)).is_some() {
                    k += 1;
                }
                k
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

#[derive(Default)]
struct Bouncer {
    out: VecDeque<Output<u16>>,
    received: u64,
}

impl SimNode<u16> for Bouncer {
    fn handle_datagram(&mut self, _now: Instant, from: u16, to: u16, data: Bytes) {
        self.received += 1;
        self.out.push_back(Output::Datagram {
            from: to,
            to: from,
            data,
        });
    }
    fn poll_output(&mut self, _now: Instant) -> Option<Output<u16>> {
        self.out.pop_front()
    }
}

fn sim_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(N));
    g.bench_function("bounce_10k_events", |b| {
        b.iter_batched(
            || {
                let mut sim: Sim<u16> = Sim::new(1);
                sim.network.connect(
                    1,
                    2,
                    LinkConfig::new().latency(ms(5)).jitter_uniform(us(100)),
                );
                let a = sim.add_node(Bouncer::default(), [1]);
                let b = sim.add_node(Bouncer::default(), [2]);
                for _ in 0..100 {
                    sim.inject(1, 2, vec![0u8; 1200]);
                }
                (sim, a, b)
            },
            |(mut sim, a, b)| {
                let count = |s: &mut Sim<u16>| {
                    s.node::<Bouncer>(a).map_or(0, |n| n.received)
                        + s.node::<Bouncer>(b).map_or(0, |n| n.received)
                };
                sim.run_while(|s| count(s) < N, secs(10_000))
                    .map(|_| count(&mut sim))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, network_send_poll, sim_dispatch);
criterion_main!(benches);
