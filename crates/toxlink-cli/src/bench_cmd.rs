//! `toxlink bench relay` (written next).

use clap::Subcommand;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay forwarding throughput and memory per idle client.
    Relay,
}

/// Runs a benchmark.
pub async fn run(_b: BenchCommand) -> Result<(), String> {
    Ok(())
}
