//! A stranger's handshake flood against the sans-IO node: the cost per
//! handshake of a genuine handshake (valid cookie) from a peer the node does
//! not allow, replayed from 20,000 source addresses (100,000 per iteration
//! batch), beside the cost of a packet whose cookie does not open (the
//! cheapest refusal) in the same run. Target: ≤ 2 µs per handshake.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use toxlink_proto::node::Input;

#[path = "../tests/support/flood.rs"]
mod flood;

fn bench(c: &mut Criterion) {
    let (mut victim, hs, now) = flood::stranger_handshake();
    assert!(!hs.is_empty(), "the stranger sent no handshake");
    let mut bad = hs.clone();
    // Break the cookie's box: refused at the first (symmetric) check.
    bad[40] ^= 1;
    let mut g = c.benchmark_group("handshake_flood");
    g.throughput(Throughput::Elements(100_000));
    for (name, pkt) in [("stranger_valid_cookie", &hs), ("bad_cookie_anchor", &bad)] {
        g.bench_function(name, |b| {
            let mut d = vec![0u8; pkt.len()];
            b.iter(|| {
                for i in 0..100_000u32 {
                    d.copy_from_slice(pkt);
                    let _ = victim.handle(
                        now,
                        Input::Datagram {
                            from: 1_000 + i % 20_000,
                            data: &mut d,
                        },
                    );
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
