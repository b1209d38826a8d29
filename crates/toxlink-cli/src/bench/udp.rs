//! `toxlink bench udp`: lossless throughput of one net_crypto connection over
//! loopback UDP, toxlink and c-toxcore 0.2.18 side by side in the same run.
//!
//! * **toxlink**: two nodes in this process (each with its own driver task on
//!   a 2-thread runtime) connect and stream `--mib` MiB of 1373-byte lossless
//!   packets; `--runs` runs, median reported. Set-up time is from `connect()`
//!   to an established connection on both sides. CPU is this process's user +
//!   system time over the whole run (both ends, set-up included), per GB
//!   moved.
//! * **c-toxcore** (only in a build with the `c-toxcore-bench` feature): two
//!   harness processes on Debian's libtoxcore (crate `toxlink-interop`)
//!   befriend each other through a local tox-bootstrapd and send
//!   `--ctoxcore-packets` custom lossless packets of 1373 bytes. Set-up time
//!   is from the friend add to both reporting the connection (c-toxcore finds
//!   its friend through the DHT/onion, so this includes discovery). CPU is
//!   the children's user + system time over the whole run (both peers and the
//!   daemon, set-up included), per GB moved. Without the feature the table
//!   says how to get this row.
//!
//! Throughput figures are bytes of packet data (id byte included) per second,
//! MB = 10^6 bytes.

use std::time::{Duration, Instant};
use toxlink::toxlink_proto::crypto::KeyPair;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Node, Received};

/// Options of `toxlink bench udp`.
#[derive(Debug, clap::Args)]
pub struct UdpBenchArgs {
    /// MiB per toxlink run.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// toxlink runs (median reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Custom lossless packets for the c-toxcore pair.
    #[arg(long, default_value_t = 40_000)]
    pub ctoxcore_packets: u32,
    /// Skip the c-toxcore pair.
    #[arg(long)]
    pub no_ctoxcore: bool,
}

/// One measured connection.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Set-up time.
    pub setup: Duration,
    /// Throughput, MB/s.
    pub mb_s: f64,
    /// CPU seconds per GB moved (whole run).
    pub cpu_s_per_gb: f64,
}

fn cpu_time(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One toxlink run on loopback.
pub async fn toxlink_run(mib: u64, seed: u64) -> Result<Figures, String> {
    toxlink_run_via(mib, seed, None).await
}

/// One toxlink run on loopback; with `relay` (public key, address) direct
/// UDP is blocked on both sides, so everything goes through that relay.
pub async fn toxlink_run_via(
    mib: u64,
    seed: u64,
    relay: Option<(toxlink_proto::crypto::PublicKey, std::net::SocketAddr)>,
) -> Result<Figures, String> {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let _ = rng.next_u32();
    let cpu0 = cpu_time(libc::RUSAGE_SELF);
    let addr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let cfg = NodeConfig {
        dht_is_real: relay.is_some(),
        ..NodeConfig::default()
    };
    let a = Node::bind(addr, KeyPair::generate(&mut rng), cfg.clone())
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let b = Node::bind(addr, KeyPair::generate(&mut rng), cfg)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    b.allow(a.public_key());
    if let Some((pk, at)) = relay {
        for n in [&a, &b] {
            n.add_relay(pk, at);
        }
        a.set_udp_blocked(b.local_addr(), true);
        b.set_udp_blocked(a.local_addr(), true);
    }
    let t0 = Instant::now();
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    let setup = t0.elapsed();
    let ca = ca.map_err(|e| format!("connect: {e}"))?;
    let cb = cb.ok_or("accept: node closed")?;
    let n = (mib << 20).div_ceil(1373);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut buf = vec![0x5au8; 1373];
        buf[0] = 160;
        for _ in 0..n {
            if ca.send_lossless(&buf).await.is_err() {
                return Err("send failed");
            }
        }
        Ok(ca)
    });
    let mut got = 0u64;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(30), cb.recv()).await {
            Ok(Some(Received::Lossless(p))) if p.len() == 1373 => got += 1,
            Ok(Some(Received::Lossless(p))) => {
                return Err(format!("packet of {} bytes, expected 1373", p.len()))
            }
            Ok(Some(Received::Lossy(_))) => {}
            Ok(None) | Err(_) => return Err(format!("stalled after {got} of {n} packets")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = sender.await;
    let bytes = (n * 1373) as f64;
    let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
    Ok(Figures {
        setup,
        mb_s: bytes / secs / 1e6,
        cpu_s_per_gb: cpu / (bytes / 1e9),
    })
}

/// The c-toxcore pair over UDP.
#[cfg(feature = "c-toxcore-bench")]
pub fn ctoxcore_run(packets: u32) -> Result<Figures, String> {
    use toxlink_interop::measure::{measure_link, PairOptions, Transport};
    let opts = PairOptions {
        packets,
        udp: true,
        tcp: false,
        ..PairOptions::default()
    };
    let cpu0 = cpu_time(libc::RUSAGE_CHILDREN);
    let f = measure_link(Transport::Udp, &opts).map_err(|e| e.to_string())?;
    let cpu = cpu_time(libc::RUSAGE_CHILDREN) - cpu0;
    if f.lost + f.dup + f.reordered + f.bad != 0 {
        return Err(format!("c-toxcore pair was not lossless: {f}"));
    }
    Ok(Figures {
        setup: f.connect_time,
        mb_s: f.mbytes_per_s,
        cpu_s_per_gb: cpu / (f.bytes as f64 / 1e9),
    })
}

fn median(mut v: Vec<Figures>) -> Option<Figures> {
    v.sort_by(|a, b| a.mb_s.total_cmp(&b.mb_s));
    v.get(v.len() / 2).copied()
}

fn line(name: &str, f: &Figures) -> String {
    format!(
        "{name:<10} set-up {:>9.1} ms   lossless {:>7.1} MB/s   CPU {:>6.1} s/GB",
        f.setup.as_secs_f64() * 1e3,
        f.mb_s,
        f.cpu_s_per_gb
    )
}

/// Runs the benchmark and prints the table.
pub async fn run(a: UdpBenchArgs) -> Result<(), String> {
    let mut ours = Vec::new();
    for i in 0..a.runs.max(1) {
        let f = toxlink_run(a.mib, i as u64).await?;
        println!("{}", line(&format!("toxlink#{i}"), &f));
        ours.push(f);
    }
    let ours = median(ours).ok_or("no run")?;
    println!(
        "{}   (median of {} runs, {} MiB each)",
        line("toxlink", &ours),
        a.runs.max(1),
        a.mib
    );
    if a.no_ctoxcore {
        return Ok(());
    }
    #[cfg(not(feature = "c-toxcore-bench"))]
    {
        println!("c-toxcore  {}", super::C_TOXCORE_NOT_BUILT);
        Ok(())
    }
    #[cfg(feature = "c-toxcore-bench")]
    {
        let packets = a.ctoxcore_packets;
        let theirs = tokio::task::spawn_blocking(move || ctoxcore_run(packets))
            .await
            .map_err(|e| e.to_string())?;
        match theirs {
            Ok(t) => {
                println!(
                    "{}   ({} packets of 1373 bytes)",
                    line("c-toxcore", &t),
                    packets
                );
                println!(
                    "ratio      set-up {:.0}x faster   throughput {:.1}x   CPU per GB {:.2}x",
                    t.setup.as_secs_f64() / ours.setup.as_secs_f64().max(1e-9),
                    ours.mb_s / t.mb_s.max(1e-9),
                    ours.cpu_s_per_gb / t.cpu_s_per_gb.max(1e-9),
                );
            }
            Err(e) => println!("c-toxcore  FAILED: {e}"),
        }
        Ok(())
    }
}
