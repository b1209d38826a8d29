//! `toxlink send FILE` / `toxlink recv DIR`: one file over a friend
//! connection, verified by size and SHA-256 before it takes its final name.
//!
//! # Protocol (Tox custom lossless packets, ids 160..=191, docs/PROTOCOL.md §7)
//!
//! Lossless packets arrive complete, once and in order, so the protocol has
//! no sequence numbers or retransmission of its own:
//!
//! | id  | name   | body                                                   |
//! |-----|--------|--------------------------------------------------------|
//! | 160 | OFFER  | size u64 BE ‖ SHA-256 (32 bytes) ‖ name (UTF-8, 1..=255 bytes) |
//! | 161 | CHUNK  | 1..=1372 bytes of file data, in order                  |
//! | 162 | END    | empty: the sender has sent every chunk                 |
//! | 163 | REPLY  | code u8 ‖ reason (UTF-8, ≤ 1000 bytes)                 |
//!
//! REPLY codes: 0 ACCEPT (send the chunks), 1 REFUSE (offer refused, reason
//! given), 2 SAVED (verified and renamed into place), 3 FAILED (verification
//! or a write failed; nothing was kept). The sender sends OFFER, waits for
//! ACCEPT or REFUSE, streams CHUNKs, sends END and waits for SAVED or FAILED;
//! then it closes the connection. The receiver may send FAILED at any time
//! after ACCEPT (e.g. too much data) and stop.
//!
//! # Receiver invariants
//!
//! Names with `/`, `..`, NUL, or empty are refused, and so is an existing
//! file unless `--overwrite`, and a size over `--max-size` or the free space
//! of DIR ([`check_room`]), all before any byte is written. Data goes to
//! `DIR/.NAME.part-<random>` (created exclusively; NAME shortened so the part
//! file name stays within 255 bytes, [`part_file::part_file_name`]); at END the size
//! and SHA-256 are checked, the file is fsynced, then linked (no overwrite:
//! fails if the name appeared meanwhile) or renamed (overwrite) into place
//! and the directory fsynced. On any failure, or if the process stops
//! early, the part file is removed
//! ([`PartFile`]'s drop): a partial file never carries the final name. The
//! peer's file name and reasons are printed with control characters escaped.
//!
//! Layout: [`protocol`] (packets), [`part_file`] (the receiver's file until
//! verified), [`send`](mod@send) and [`recv`](mod@recv) (the two commands), [`report`] (the
//! `--json` line of both), this module (arguments, errors, helpers of both).

mod part_file;
mod protocol;
mod recv;
pub mod report;
mod send;
#[cfg(test)]
mod tests;

pub use part_file::{check_room, PartFile};
pub use protocol::*;
pub use recv::recv;
pub use send::send;

use crate::link::{LinkError, PeerArgs};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::SAMPLE_EVERY;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};
use toxlink::{Friend, FriendEvent};
use toxlink_cli::text::parse_bytes;

/// Errors of a transfer (each one line).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The offer was refused (by us or by the peer).
    #[error("refused {0}")]
    Refused(String),
    /// The received data does not match the offer.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A local file error.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The connection or peer failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A progress bar on stderr (bytes, rate, ETA), hidden when stderr is not a
/// terminal or with `--quiet`.
fn progress(size: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Flags `toxlink send` and `toxlink recv` share.
#[derive(Debug, clap::Args)]
pub struct TransferFlags {
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// At the end print one JSON line on stdout (ok, bytes, seconds,
    /// max_gap_ms, path_switches, paths, error: see transfer/report.rs);
    /// the lines otherwise printed on stdout go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Keys, peer, transport and config flags.
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// Options of `toxlink send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The file to send.
    pub file: PathBuf,
    /// Name to offer (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Output, keys, peer, transport and config flags.
    #[command(flatten)]
    pub flags: TransferFlags,
}

/// Options of `toxlink recv`.
#[derive(Debug, clap::Args)]
pub struct RecvArgs {
    /// Directory to save the file in.
    pub dir: PathBuf,
    /// Replace an existing file of the same name.
    #[arg(long)]
    pub overwrite: bool,
    /// Refuse files larger than this (e.g. 10GiB, 500MB); files larger than
    /// the free space of DIR are always refused.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_size: Option<u64>,
    /// Output, keys, peer, transport and config flags.
    #[command(flatten)]
    pub flags: TransferFlags,
}

/// The next friend event within `limit`; errors if the connection ends or
/// the peer goes offline.
async fn next_event(f: &Friend, limit: Duration, what: &str) -> Result<FriendEvent, LinkError> {
    match tokio::time::timeout(limit, f.next_event()).await {
        Err(_) => Err(LinkError::Unreachable(format!(
            "no {what} from the peer within {} s",
            limit.as_secs()
        ))),
        Ok(None) | Ok(Some(FriendEvent::Offline(_))) => Err(LinkError::Peer(format!(
            "connection to the peer closed while waiting for {what}"
        ))),
        Ok(Some(e)) => Ok(e),
    }
}

/// A result line: stdout, or stderr when stdout carries `--json`.
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// A ticker of [`SAMPLE_EVERY`] that skips missed ticks.
fn ticker() -> Interval {
    let mut t = tokio::time::interval(SAMPLE_EVERY);
    t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    t
}

async fn send_packet(f: &Friend, p: &[u8]) -> Result<(), LinkError> {
    f.send_custom_lossless(p)
        .await
        .map(drop)
        .map_err(|e| LinkError::Peer(format!("send: {e}")))
}
