//! Seal + open of one box at 64, 1400 and 65536 bytes with each crypto
//! backend (RustCrypto and libsodium), in the same run so the ratio is
//! meaningful. Run: `cargo bench -p toxlink-proto --bench crypto`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use toxlink_proto::crypto::backend::{Backend, RustCrypto};
use toxlink_proto::crypto::{Nonce, SharedKey, MAC_SIZE};

fn seal_open<B: Backend>(key: &SharedKey, nonce: &Nonce, buf: &mut [u8]) {
    key.seal_in_place_with::<B>(nonce, buf)
        .expect("non-empty plaintext");
    key.open_in_place_with::<B>(nonce, buf)
        .expect("our own box opens");
}

fn bench(c: &mut Criterion) {
    let key = SharedKey([0x42; 32]);
    let nonce = Nonce([0x24; 24]);
    let mut g = c.benchmark_group("seal+open");
    for size in [64usize, 1400, 65536] {
        let mut buf = vec![0xa5u8; size + MAC_SIZE];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new(RustCrypto::NAME, size), &size, |b, _| {
            b.iter(|| seal_open::<RustCrypto>(&key, &nonce, &mut buf))
        });
        #[cfg(feature = "sodium")]
        {
            use toxlink_proto::crypto::backend::Sodium;
            g.bench_with_input(BenchmarkId::new(Sodium::NAME, size), &size, |b, _| {
                b.iter(|| seal_open::<Sodium>(&key, &nonce, &mut buf))
            });
        }
    }
    g.finish();
    c.bench_function("precompute (X25519 + HSalsa20)", |b| {
        b.iter(|| {
            SharedKey::precompute(
                &toxlink_proto::crypto::PublicKey([9; 32]),
                &toxlink_proto::crypto::SecretKey([3; 32]),
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
