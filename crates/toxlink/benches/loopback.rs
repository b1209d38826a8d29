//! Lossless throughput of one connection over UDP loopback, two nodes in one
//! process (each with its own driver task). Prints MB/s per run and the
//! median; not a pass/fail test.
//!
//! `cargo bench -p toxlink --bench loopback` (env `TOXLINK_BENCH_MIB`, default
//! 256; `TOXLINK_BENCH_RUNS`, default 3; `TOXLINK_BENCH_ADDR`, default
//! `127.0.0.1:0`).

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::crypto::KeyPair;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Node, Received};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(mib: u64, addr: &str, seed: u64) -> f64 {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let addr = addr.parse().expect("address");
    let a = Node::bind(addr, KeyPair::generate(&mut rng), NodeConfig::default())
        .await
        .expect("bind");
    let b = Node::bind(addr, KeyPair::generate(&mut rng), NodeConfig::default())
        .await
        .expect("bind");
    b.allow(a.public_key());
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    let (ca, cb) = (ca.expect("connect"), cb.expect("accept"));
    let n = (mib << 20).div_ceil(1372);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut buf = vec![0x5au8; 1373];
        buf[0] = 160;
        for _ in 0..n {
            ca.send_lossless(&buf).await.expect("send");
        }
        ca
    });
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(30), cb.recv()).await {
            Ok(Some(Received::Lossless(_))) => got += 1,
            Ok(Some(Received::Lossy(_))) => {}
            Ok(None) | Err(_) => panic!("stalled after {got} of {n}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = sender.await;
    (n * 1372) as f64 / secs / 1e6
}

fn main() {
    let mib = env_u64("TOXLINK_BENCH_MIB", 256);
    let runs = env_u64("TOXLINK_BENCH_RUNS", 3);
    let addr = std::env::var("TOXLINK_BENCH_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut v = Vec::new();
    for i in 0..runs {
        let r = rt.block_on(run(mib, &addr, i));
        println!("run {i}: {mib} MiB lossless over UDP {addr}: {r:.1} MB/s");
        v.push(r);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    println!("median: {:.1} MB/s", v[v.len() / 2]);
}
