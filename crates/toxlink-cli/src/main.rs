//! The `toxlink` command: `toxlink keygen` (keys file, public key, Tox ID),
//! `toxlink relay` (a Tox TCP relay server) and
//! `toxlink bench relay|udp` (benchmarks); more subcommands join the
//! [`Command`] enum as they are written.

mod bench_cmd;
mod bench_udp;
mod demo_cmd;
mod keygen_cmd;
mod relay_cmd;

use clap::{Parser, Subcommand};

/// toxlink: the Tox middle level network protocol in Rust.
#[derive(Debug, Parser)]
#[command(name = "toxlink", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Everything on loopback: 3 relays, 2 peers, a 256 MiB transfer and a
    /// chat while relays die and lie and direct UDP comes and goes.
    Demo(demo_cmd::DemoArgs),
    /// Create (or read) a keys file and print its public key and Tox ID.
    Keygen(keygen_cmd::KeygenArgs),
    /// Run a Tox TCP relay server (c-toxcore and toxlink clients can use it).
    Relay(relay_cmd::RelayArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
}

fn main() -> std::process::ExitCode {
    // Parse first: the default log level depends on the command (the demo
    // prints its own timeline; a relay logs what it does).
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Relay(relay_cmd::RelayArgs {
        threads: Some(n), ..
    }) = &cli.command
    {
        builder.worker_threads((*n).max(1));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("toxlink: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        match cli.command {
            Command::Demo(args) => demo_cmd::run(args).await,
            Command::Keygen(args) => keygen_cmd::run(args),
            Command::Relay(args) => relay_cmd::run(args).await.map_err(|e| e.to_string()),
            Command::Bench(b) => bench_cmd::run(b).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toxlink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
