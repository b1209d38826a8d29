//! `toxlink bench`: end-to-end benchmarks. [`udp`]: one connection over
//! loopback UDP; [`relay`](mod@relay): relay forwarding and memory per client
//! ([`relay_attack`]: the same under attack), on relay processes started by
//! [`target`] and loaded through raw relay links ([`relay_link`]); `--json`:
//! a short summary of both.

mod relay;
mod relay_attack;
mod relay_link;
mod target;
pub mod udp;

use clap::Subcommand;

use relay::{relay, throughput};
use target::start_toxlink;

/// What the c-toxcore rows say in a build without them.
#[cfg(not(feature = "c-toxcore-bench"))]
pub const C_TOXCORE_NOT_BUILT: &str = "not in this build (cargo build --release -p toxlink-cli --features c-toxcore-bench; needs libtoxcore-dev and toxcore-utils)";

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay forwarding throughput and memory per idle client, toxlink vs
    /// tox-bootstrapd.
    Relay(RelayBenchArgs),
    /// Lossless throughput, set-up time and CPU per GB of one connection over
    /// loopback UDP, toxlink vs c-toxcore.
    Udp(udp::UdpBenchArgs),
}

/// Options of `toxlink bench relay`.
#[derive(Debug, clap::Args)]
pub struct RelayBenchArgs {
    /// Seconds of measured forwarding per relay.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Sender→receiver pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Idle-client counts to measure memory at.
    #[arg(long = "idle", default_values_t = vec![1000usize, 10000])]
    pub idle: Vec<usize>,
    /// Skip tox-bootstrapd.
    #[arg(long)]
    pub no_bootstrapd: bool,
    /// Payload bytes a sender may have in flight (end-to-end window).
    #[arg(long, default_value_t = 512 * 1024)]
    pub window: u64,
    /// Bytes per socket write of a sender (1419 = one frame per write).
    #[arg(long, default_value_t = 32 * 1024)]
    pub write_chunk: usize,
    /// Measure honest pairs with and without an attack (receivers that
    /// never read and a connection flood) instead of the usual table.
    #[arg(long)]
    pub attack: bool,
    /// Receivers that never read, with `--attack`.
    #[arg(long, default_value_t = 2000)]
    pub attack_receivers: usize,
}

/// Options of `toxlink bench`: a subcommand, or `--json` for a short
/// summary of both.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Run a short UDP and relay benchmark and print one JSON object on
    /// stdout (`udp_lossless_mb_s`, `relay_lossless_mb_s`, ...).
    #[arg(long)]
    pub json: bool,
    /// MiB moved over UDP for `--json`.
    #[arg(long, default_value_t = 128)]
    pub mib: u64,
    /// Seconds of relay forwarding measured for `--json`.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
}

/// Runs a benchmark.
pub async fn run(b: BenchArgs) -> Result<(), String> {
    match (b.command, b.json) {
        (Some(BenchCommand::Relay(a)), _) => relay(a).await,
        (Some(BenchCommand::Udp(a)), _) => udp::run(a).await,
        (None, true) => json_summary(b.mib, b.seconds).await,
        (None, false) => {
            // Everything, one table after the other: a toxlink connection
            // over UDP next to c-toxcore, the same through a toxlink relay,
            // and the relays themselves (toxlink vs tox-bootstrapd).
            udp::run(udp::UdpBenchArgs {
                mib: 256,
                runs: 3,
                ctoxcore_packets: 40_000,
                no_ctoxcore: false,
            })
            .await?;
            let (_relay, t) = start_toxlink().await?;
            let via = udp::toxlink_run_via(128, 1, Some((t.pk, t.addr))).await?;
            println!(
                "toxlink through a toxlink relay (UDP blocked): set-up {:.1} ms, lossless {:.1} MB/s, CPU {:.1} s/GB",
                via.setup.as_secs_f64() * 1e3,
                via.mb_s,
                via.cpu_s_per_gb
            );
            relay(RelayBenchArgs {
                seconds: 4,
                pairs: 1,
                idle: vec![1000, 10000],
                no_bootstrapd: false,
                window: 512 * 1024,
                write_chunk: 32 * 1024,
                attack: false,
                attack_receivers: 2000,
            })
            .await
        }
    }
}

/// `toxlink bench --json`: one toxlink UDP run (`mib` MiB of lossless data
/// between two nodes of this process), the same through a toxlink relay
/// child process with UDP blocked, and the relay's raw forwarding rate (one
/// pair of relay clients for `seconds`), as one JSON object on stdout.
async fn json_summary(mib: u64, seconds: u64) -> Result<(), String> {
    let udp = udp::toxlink_run(mib.max(1), 0).await?;
    let (relay_mb_s, relay_cpu, via_relay) = {
        let (_relay, t) = start_toxlink().await?;
        let (total, _per, cpu) = throughput(&t, 1, seconds.max(1), 32 * 1024, 512 * 1024).await?;
        let via = udp::toxlink_run_via(mib.max(1), 1, Some((t.pk, t.addr))).await?;
        (total, cpu, via)
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let out = serde_json::json!({
        "udp_lossless_mb_s": round(udp.mb_s),
        "udp_setup_ms": round(udp.setup.as_secs_f64() * 1e3),
        "udp_cpu_s_per_gb": round(udp.cpu_s_per_gb),
        "udp_mib": mib.max(1),
        "relay_lossless_mb_s": round(via_relay.mb_s),
        "relay_setup_ms": round(via_relay.setup.as_secs_f64() * 1e3),
        "relay_lossless_method": "one toxlink connection (1373-byte lossless packets) through a toxlink relay process, direct UDP blocked",
        "relay_forward_mb_s": round(relay_mb_s),
        "relay_cpu_percent": round(relay_cpu * 100.0),
        "relay_seconds": seconds.max(1),
        "relay_forward_method": "toxlink relay process (1 thread) forwarding 1400-byte DATA between one pair of relay clients with a 512 KiB end-to-end window",
    });
    println!("{out}");
    Ok(())
}
