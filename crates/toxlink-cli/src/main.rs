//! The `toxlink` command: `toxlink demo` (everything on loopback),
//! `toxlink keygen` (keys file, public key, Tox ID),
//! `toxlink relay` (a Tox TCP relay server), `toxlink chat` / `peer`
//! (messages with a toxlink or c-toxcore peer), `toxlink send` / `recv`
//! (one verified file), `toxlink bench` (benchmarks) and `toxlink
//! stun-probe` (this host's reflexive address from STUN servers).
//!
//! Every failure, including bad arguments, ends as one line
//! `toxlink: ...` on stderr and a non-zero exit (2 for bad arguments, 1
//! otherwise); a panic is reported the same way, without a backtrace.

mod bench;
mod chat_cmd;
#[cfg(feature = "demo")]
mod demo_cmd;
mod keygen_cmd;
mod link;
mod relay_cmd;
mod stun_probe_cmd;
mod transfer;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    #[cfg(feature = "demo")]
    Demo(demo_cmd::DemoArgs),
    /// Create (or read) a keys file and print its public key and Tox ID.
    Keygen(keygen_cmd::KeygenArgs),
    /// Run a Tox TCP relay server (c-toxcore and toxlink clients can use it).
    Relay(relay_cmd::RelayArgs),
    /// Chat with another toxlink peer (stdin lines out, messages on stdout).
    Chat(chat_cmd::ChatArgs),
    /// Chat with a c-toxcore peer given its UDP address, DHT key and key/Tox ID.
    Peer(chat_cmd::PeerCmdArgs),
    /// Send one file to a peer running `toxlink recv`.
    Send(transfer::SendArgs),
    /// Receive one file from a peer running `toxlink send` into DIR.
    Recv(transfer::RecvArgs),
    /// Benchmarks (`bench --json`: a short summary as one JSON object).
    Bench(bench::BenchArgs),
    /// Ask STUN servers for this host's reflexive (public) UDP address.
    StunProbe(stun_probe_cmd::StunProbeArgs),
}

/// Runs a command until it ends or SIGINT/SIGTERM arrives; an interrupted
/// command is dropped (a part file is removed, the connection closed, child
/// processes killed) and the grace period for the peer's KILL is waited out.
async fn until_signal<E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    tokio::select! {
        r = work => r.map_err(|e| e.to_string()),
        _ = link::interrupted() => {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            Err("interrupted".to_string())
        }
    }
}

/// Prints clap's error as one `toxlink: ...` line (help and version as
/// usual) and gives the exit code.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // The first paragraph of clap's message, on one line.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let line = para.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            let line = if line.is_empty() {
                "bad arguments"
            } else {
                line
            };
            eprintln!("toxlink: {line} (see --help)");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("toxlink: internal error: {msg}{at}");
    }));
    // Parse first: the default log level depends on the command (the demo
    // prints its own timeline; a relay logs what it does).
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let default_log = match cli.command {
        #[cfg(feature = "demo")]
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
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        match cli.command {
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo_cmd::run(args).await,
            Command::Keygen(args) => keygen_cmd::run(args),
            Command::Relay(args) => relay_cmd::run(args).await.map_err(|e| e.to_string()),
            Command::Chat(args) => until_signal(chat_cmd::chat(args)).await,
            Command::Peer(args) => until_signal(chat_cmd::peer(args)).await,
            Command::Send(args) => {
                let report =
                    transfer::report::Report::new(args.flags.json, transfer::report::Role::Send);
                let r = until_signal(transfer::send(args, &report)).await;
                report.print(&r);
                r
            }
            Command::Recv(args) => {
                let report =
                    transfer::report::Report::new(args.flags.json, transfer::report::Role::Recv);
                let r = until_signal(transfer::recv(args, &report)).await;
                report.print(&r);
                r
            }
            Command::Bench(b) => until_signal(bench::run(b)).await,
            Command::StunProbe(args) => until_signal(stun_probe_cmd::run(args)).await,
        }
    });
    // Do not wait for tasks blocked on stdin or the network.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors can quote the peer (a refusal reason, a file name).
            eprintln!("toxlink: {}", toxlink_cli::text::escape_controls(&e));
            ExitCode::FAILURE
        }
    }
}
