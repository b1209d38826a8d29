//! `toxlink send FILE` / `toxlink recv DIR`: one file over a friend
//! connection, verified by size and SHA-256 before it takes its final name.
//!
//! # Protocol (Tox custom lossless packets, ids 160..=191, PROTOCOL.md §7)
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
//! file name stays within 255 bytes, [`part_file_name`]); at END the size
//! and SHA-256 are checked, the file is fsynced, then linked (no overwrite:
//! fails if the name appeared meanwhile) or renamed (overwrite) into place
//! and the directory fsynced. On any failure, or if the process stops
//! early, the part file is removed
//! ([`PartFile`]'s drop): a partial file never carries the final name. The
//! peer's file name and reasons are printed with control characters escaped.

use crate::link::{establish, settings, short_id, LinkError, Linked, PeerArgs};
use crate::transfer_report::{unacknowledged, AckTracker, Report, SAMPLE_EVERY};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::time::{Interval, MissedTickBehavior};
use toxlink::toxlink_proto::crypto::PublicKey;
use toxlink::{Friend, FriendEvent, Node};
use toxlink_cli::text::{escape_controls, parse_bytes};

/// OFFER packet id.
pub const OFFER: u8 = 160;
/// CHUNK packet id.
pub const CHUNK: u8 = 161;
/// END packet id.
pub const END: u8 = 162;
/// REPLY packet id.
pub const REPLY: u8 = 163;
/// Most data bytes in one CHUNK (custom lossless packets hold 1373 bytes,
/// id included).
pub const CHUNK_DATA: usize = 1372;
/// Longest file name in an OFFER.
pub const MAX_NAME: usize = 255;
/// Longest reason in a REPLY.
const MAX_REASON: usize = 1000;
/// How long the sender waits for the receiver's answer to OFFER or END.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// REPLY codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// The offer is accepted: send the chunks.
    Accept = 0,
    /// The offer is refused.
    Refuse = 1,
    /// The file was verified and saved.
    Saved = 2,
    /// Verification or writing failed; nothing was kept.
    Failed = 3,
}

/// A file offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// File name (not yet validated for the local file system).
    pub name: String,
}

impl Offer {
    /// Encodes OFFER (id first).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41 + self.name.len());
        v.push(OFFER);
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.sha256);
        v.extend_from_slice(self.name.as_bytes());
        v
    }

    /// Parses OFFER (id first); `None` if malformed.
    pub fn parse(p: &[u8]) -> Option<Offer> {
        let (&id, rest) = p.split_first()?;
        if id != OFFER || rest.len() < 8 + 32 + 1 || rest.len() > 8 + 32 + MAX_NAME {
            return None;
        }
        let (size, rest) = rest.split_at(8);
        let (sha, name) = rest.split_at(32);
        Some(Offer {
            size: u64::from_be_bytes(size.try_into().ok()?),
            sha256: sha.try_into().ok()?,
            name: String::from_utf8(name.to_vec()).ok()?,
        })
    }
}

/// Encodes REPLY.
pub fn encode_reply(code: ReplyCode, reason: &str) -> Vec<u8> {
    let mut v = vec![REPLY, code as u8];
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    v.extend_from_slice(&reason.as_bytes()[..end]);
    v
}

/// Parses REPLY; `None` if malformed.
pub fn parse_reply(p: &[u8]) -> Option<(ReplyCode, String)> {
    let (&id, rest) = p.split_first()?;
    let (&code, reason) = rest.split_first()?;
    if id != REPLY {
        return None;
    }
    let code = match code {
        0 => ReplyCode::Accept,
        1 => ReplyCode::Refuse,
        2 => ReplyCode::Saved,
        3 => ReplyCode::Failed,
        _ => return None,
    };
    Some((code, String::from_utf8_lossy(reason).into_owned()))
}

/// Checks a received file name: refuses empty names, `/`, `..`, NUL and
/// names longer than [`MAX_NAME`] bytes.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty file name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("file name longer than {MAX_NAME} bytes"));
    }
    if name.contains('/') {
        return Err(format!("file name {name:?} contains '/'"));
    }
    if name.contains("..") || name == "." {
        return Err(format!("file name {name:?} contains '..'"));
    }
    if name.contains('\0') {
        return Err(format!("file name {name:?} contains NUL"));
    }
    Ok(())
}

/// Longest file name on Linux file systems (NAME_MAX), part files included.
const NAME_MAX: usize = 255;

/// The part file name `.NAME.part-XXXXXXXX` of `name`, NAME shortened on a
/// character boundary so the whole is at most [`NAME_MAX`] bytes.
pub fn part_file_name(name: &str, tag: u32) -> String {
    let suffix = format!(".part-{tag:08x}");
    let mut end = name.len().min(NAME_MAX - 1 - suffix.len());
    // At most 3 steps back: a UTF-8 character is at most 4 bytes.
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}{suffix}", name.get(..end).unwrap_or_default())
}

/// Refuses an offer of `size` bytes larger than `max_size` or than the
/// space free for us in `dir` (statvfs: available blocks × fragment size).
pub fn check_room(dir: &Path, size: u64, max_size: Option<u64>) -> Result<(), TransferError> {
    if let Some(max) = max_size.filter(|&m| size > m) {
        return Err(TransferError::Refused(format!(
            "file of {size} bytes is larger than the receiver's --max-size of {max} bytes"
        )));
    }
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| TransferError::Io(dir.display().to_string(), e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if size > free {
        return Err(TransferError::Refused(format!(
            "file of {size} bytes does not fit: {free} bytes free in the receiver's directory"
        )));
    }
    Ok(())
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// A file being received: `DIR/.NAME.part-<random>` until verified. Dropped
/// before [`finish`](Self::finish) succeeds, it removes the part file.
#[derive(Debug)]
pub struct PartFile {
    part: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    written: u64,
    offer: Offer,
    overwrite: bool,
}

impl PartFile {
    /// Validates the offer against `dir` and creates the part file.
    pub fn create(
        dir: &Path,
        offer: Offer,
        overwrite: bool,
        rng: &mut impl RngCore,
    ) -> Result<PartFile, TransferError> {
        validate_name(&offer.name).map_err(TransferError::Refused)?;
        let target = dir.join(&offer.name);
        if !overwrite && target.symlink_metadata().is_ok() {
            return Err(TransferError::Refused(format!(
                "{}: file exists (use --overwrite)",
                target.display()
            )));
        }
        if overwrite && target.is_dir() {
            return Err(TransferError::Refused(format!(
                "{}: is a directory",
                target.display()
            )));
        }
        let part = dir.join(part_file_name(&offer.name, rng.next_u32()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(|e| TransferError::Io(part.display().to_string(), e))?;
        Ok(PartFile {
            part,
            target,
            dir: dir.to_path_buf(),
            file: Some(std::io::BufWriter::with_capacity(1 << 16, file)),
            hasher: Sha256::new(),
            written: 0,
            offer,
            overwrite,
        })
    }

    /// The part file's path.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends data; refuses more than the offered size.
    pub fn write(&mut self, data: &[u8]) -> Result<(), TransferError> {
        let total = self.written + data.len() as u64;
        if total > self.offer.size {
            return Err(TransferError::Verify(format!(
                "more data than the offered {} bytes",
                self.offer.size
            )));
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| TransferError::Verify("write after finish".into()))?;
        f.write_all(data)
            .map_err(|e| TransferError::Io(self.part.display().to_string(), e))?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Verifies size and SHA-256, fsyncs and moves the file into place;
    /// returns the final path.
    pub fn finish(mut self) -> Result<PathBuf, TransferError> {
        if self.written != self.offer.size {
            return Err(TransferError::Verify(format!(
                "got {} of {} bytes",
                self.written, self.offer.size
            )));
        }
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if got != self.offer.sha256 {
            return Err(TransferError::Verify(format!(
                "SHA-256 {} differs from the offered {}",
                hex(&got),
                hex(&self.offer.sha256)
            )));
        }
        let io = |p: &Path, e| TransferError::Io(p.display().to_string(), e);
        let file = self
            .file
            .take()
            .ok_or_else(|| TransferError::Verify("finished twice".into()))?;
        let file = file
            .into_inner()
            .map_err(|e| io(&self.part, e.into_error()))?;
        file.sync_all().map_err(|e| io(&self.part, e))?;
        drop(file);
        if self.overwrite {
            std::fs::rename(&self.part, &self.target).map_err(|e| io(&self.target, e))?;
        } else {
            // A hard link fails if the name exists by now: never overwrite.
            std::fs::hard_link(&self.part, &self.target).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    TransferError::Refused(format!(
                        "{}: file exists (use --overwrite)",
                        self.target.display()
                    ))
                } else {
                    io(&self.target, e)
                }
            })?;
            std::fs::remove_file(&self.part).map_err(|e| io(&self.part, e))?;
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.written = u64::MAX; // marks success for drop
        Ok(self.target.clone())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.written != u64::MAX {
            self.file = None;
            if let Err(e) = std::fs::remove_file(&self.part) {
                tracing::warn!(path = %self.part.display(), error = %e, "cannot remove part file");
            }
        }
    }
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

/// Options of `toxlink send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The file to send.
    pub file: PathBuf,
    /// Name to offer (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// At the end print one JSON line on stdout (ok, bytes, seconds,
    /// max_gap_ms, path_switches, paths, error: see transfer_report.rs);
    /// the lines otherwise printed on stdout go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Keys, peer, transport and config flags.
    #[command(flatten)]
    pub peer: PeerArgs,
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
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// At the end print one JSON line on stdout (ok, bytes, seconds,
    /// max_gap_ms, path_switches, paths, error: see transfer_report.rs);
    /// the lines otherwise printed on stdout go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Keys, peer, transport and config flags.
    #[command(flatten)]
    pub peer: PeerArgs,
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

/// Waits for the peer's REPLY.
async fn wait_reply(f: &Friend, what: &str) -> Result<(ReplyCode, String), LinkError> {
    loop {
        if let FriendEvent::CustomLossless(p) = next_event(f, REPLY_TIMEOUT, what).await? {
            if let Some(r) = parse_reply(&p) {
                return Ok(r);
            }
            tracing::debug!(id = p.first().copied(), "ignored custom packet");
        }
    }
}

/// [`wait_reply`] while sampling acknowledgements.
async fn wait_reply_sampling(
    f: &Friend,
    what: &str,
    prog: &mut SendProgress<'_>,
) -> Result<(ReplyCode, String), LinkError> {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            biased;
            _ = prog.tick.tick() => prog.sample(),
            ev = next_event(f, left, what) => {
                if let FriendEvent::CustomLossless(p) = ev? {
                    if let Some(r) = parse_reply(&p) {
                        prog.sample();
                        return Ok(r);
                    }
                    tracing::debug!(id = p.first().copied(), "ignored custom packet");
                }
            }
        }
    }
}

/// Hashes a file: (size, SHA-256).
fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), TransferError> {
    let io = |e| TransferError::Io(path.display().to_string(), e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((size, h.finalize().into()))
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

/// The sender's view of acknowledgements, sampled on a ticker.
struct SendProgress<'a> {
    node: Option<&'a Node>,
    peer: PublicKey,
    acks: AckTracker,
    report: &'a Report,
    tick: Interval,
}

impl SendProgress<'_> {
    /// Drains path events and records acknowledgement progress.
    fn sample(&mut self) {
        let Some(node) = self.node else { return };
        self.report.observe(node);
        if let Some(total) = unacknowledged(node, &self.peer).and_then(|u| self.acks.sample(u)) {
            self.report.delivered(Instant::now(), total);
        }
    }
}

/// Runs `toxlink send`; `report` gets its figures.
pub async fn send(a: SendArgs, report: &Report) -> Result<(), TransferError> {
    let mut s = settings(&a.peer, None)?;
    s.info_on_stderr = a.json;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                TransferError::Refused(format!("{}: no usable file name", a.file.display()))
            })?,
    };
    validate_name(&name).map_err(TransferError::Refused)?;
    if a.file.is_dir() {
        return Err(TransferError::Refused(format!(
            "{}: is a directory",
            a.file.display()
        )));
    }
    let (size, sha256) = hash_file(&a.file)?;
    let linked = establish(&s, true, "toxlink send").await?;
    report.relays(&linked.relays);
    let r = send_body(&linked, &a, &s, name, size, sha256, report).await;
    if let Some(n) = linked.node() {
        report.observe(n);
    }
    linked.close().await;
    r
}

/// The sender's side once connected.
async fn send_body(
    linked: &Linked,
    a: &SendArgs,
    s: &crate::link::Settings,
    name: String,
    size: u64,
    sha256: [u8; 32],
    report: &Report,
) -> Result<(), TransferError> {
    let f = &linked.friend;
    loop {
        match next_event(f, s.timeout, "ONLINE").await? {
            FriendEvent::Online => break,
            other => tracing::debug!(?other, "event before ONLINE"),
        }
    }
    let offer = Offer {
        size,
        sha256,
        name: name.clone(),
    };
    send_packet(f, &offer.encode()).await?;
    report.offer(&name, size, sha256);
    match wait_reply(f, "an answer to the offer").await? {
        (ReplyCode::Accept, _) => {}
        (_, reason) => {
            return Err(TransferError::Refused(format!(
                "by the peer: {}",
                escape_controls(&reason)
            )))
        }
    }
    let pb = progress(size, a.quiet, &name);
    let io = |e| TransferError::Io(a.file.display().to_string(), e);
    let mut file = std::fs::File::open(&a.file).map_err(io)?;
    // [CHUNK id][up to CHUNK_DATA bytes]; `read` fills at most the data
    // part, so `..1 + n` stays inside the buffer.
    let mut pkt = vec![CHUNK; 1 + CHUNK_DATA];
    let mut sent = 0u64;
    let mut prog = SendProgress {
        node: linked.node(),
        peer: f.connection().peer(),
        acks: AckTracker::default(),
        report,
        tick: ticker(),
    };
    while sent < size {
        let n = file.read(&mut pkt[1..]).map_err(io)?;
        if n == 0 {
            return Err(TransferError::Verify(format!(
                "{} shrank while sending ({sent} of {size} bytes)",
                a.file.display()
            )));
        }
        let n = n.min((size - sent) as usize);
        let chunk = &pkt[..1 + n];
        // Send, but notice a FAILED reply or a closed connection meanwhile.
        loop {
            tokio::select! {
                biased;
                _ = prog.tick.tick() => prog.sample(),
                r = f.send_custom_lossless(chunk) => {
                    let number = r.map_err(|e| {
                        LinkError::Peer(format!("connection closed after {sent} of {size} bytes ({e})"))
                    })?;
                    prog.acks.queued(number, sent + n as u64);
                    break;
                }
                ev = f.next_event() => match ev {
                    Some(FriendEvent::CustomLossless(p)) => {
                        if let Some((_, reason)) = parse_reply(&p) {
                            let reason = escape_controls(&reason);
                            return Err(TransferError::Verify(format!("at the peer: {reason}")));
                        }
                    }
                    None | Some(FriendEvent::Offline(_)) => {
                        return Err(LinkError::Peer(format!(
                            "connection closed after {sent} of {size} bytes"
                        ))
                        .into())
                    }
                    Some(_) => {}
                }
            }
        }
        sent += n as u64;
        report.queued(sent);
        pb.set_position(sent);
    }
    send_packet(f, &[END]).await?;
    let result = wait_reply_sampling(f, "the verification result", &mut prog).await?;
    pb.finish_and_clear();
    match result {
        (ReplyCode::Saved, _) => {
            // The receiver has verified every byte.
            report.set_bytes(size);
            say(
                a.json,
                format!("sent {name} ({size} bytes, sha256 {})", hex(&sha256)),
            );
            Ok(())
        }
        (_, reason) => Err(TransferError::Verify(format!(
            "at the peer: {}",
            escape_controls(&reason)
        ))),
    }
}

async fn send_packet(f: &Friend, p: &[u8]) -> Result<(), LinkError> {
    f.send_custom_lossless(p)
        .await
        .map(drop)
        .map_err(|e| LinkError::Peer(format!("send: {e}")))
}

/// Runs `toxlink recv`; `report` gets its figures.
pub async fn recv(a: RecvArgs, report: &Report) -> Result<(), TransferError> {
    let mut s = settings(&a.peer, None)?;
    s.info_on_stderr = a.json;
    if !a.dir.is_dir() {
        return Err(TransferError::Io(
            a.dir.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let linked = establish(&s, true, "toxlink recv").await?;
    report.relays(&linked.relays);
    let f = &linked.friend;
    let who = short_id(&linked.friend.connection().peer());
    // The offer: no deadline (the sender sends it as soon as it is online),
    // but the connection must stay up.
    let offer = loop {
        if let FriendEvent::CustomLossless(p) =
            next_event(f, Duration::from_secs(24 * 3600), "an offer").await?
        {
            match Offer::parse(&p) {
                Some(o) => break o,
                None => tracing::debug!(id = p.first().copied(), "ignored custom packet"),
            }
        }
    };
    report.offer(&offer.name, offer.size, offer.sha256);
    let created = check_room(&a.dir, offer.size, a.max_size)
        .and_then(|()| PartFile::create(&a.dir, offer.clone(), a.overwrite, &mut rand_core::OsRng));
    let mut part = match created {
        Ok(p) => p,
        Err(e) => {
            let _ = send_packet(f, &encode_reply(ReplyCode::Refuse, &e.to_string())).await;
            linger(&linked.friend).await;
            linked.close().await;
            return Err(e);
        }
    };
    tracing::debug!(part = %part.part_path().display(), size = offer.size, "receiving");
    send_packet(f, &encode_reply(ReplyCode::Accept, "")).await?;
    let pb = progress(offer.size, a.quiet, &escape_controls(&offer.name));
    let mut tick = ticker();
    let outcome: Result<PathBuf, TransferError> = async {
        loop {
            let ev = tokio::select! {
                biased;
                _ = tick.tick() => {
                    if let Some(n) = linked.node() {
                        report.observe(n);
                    }
                    continue;
                }
                ev = next_event(f, Duration::from_secs(24 * 3600), "data") => ev,
            };
            let p = match ev {
                Ok(FriendEvent::CustomLossless(p)) => p,
                Ok(_) => continue,
                Err(_) => {
                    return Err(LinkError::Peer(format!(
                        "connection closed after {} of {} bytes",
                        part.written(),
                        offer.size
                    ))
                    .into())
                }
            };
            match p.split_first() {
                Some((&CHUNK, data)) if !data.is_empty() => {
                    part.write(data)?;
                    report.delivered(Instant::now(), part.written());
                    pb.set_position(part.written());
                }
                Some((&END, [])) => {
                    report.delivered(Instant::now(), part.written());
                    return part.finish();
                }
                _ => tracing::debug!(id = p.first().copied(), "ignored custom packet"),
            }
        }
    }
    .await;
    pb.finish_and_clear();
    let reply = match &outcome {
        Ok(_) => encode_reply(ReplyCode::Saved, ""),
        Err(e) => encode_reply(ReplyCode::Failed, &e.to_string()),
    };
    let _ = send_packet(f, &reply).await;
    linger(&linked.friend).await;
    if let Some(n) = linked.node() {
        report.observe(n);
    }
    linked.close().await;
    let path = outcome?;
    say(
        a.json,
        format!(
            "received {} from {who} ({} bytes, sha256 {}) -> {}",
            escape_controls(&offer.name),
            offer.size,
            hex(&offer.sha256),
            escape_controls(&path.display().to_string())
        ),
    );
    Ok(())
}

/// Gives our last packet time to arrive: waits (≤ 5 s) for the peer to close
/// the connection, which it does once it has our reply.
async fn linger(f: &Friend) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = f.next_event().await {
            if matches!(e, FriendEvent::Offline(_)) {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(1)
    }

    fn offer_for(data: &[u8], name: &str) -> Offer {
        Offer {
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
            name: name.into(),
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn packets_round_trip_and_malformed_ones_are_refused() {
        let o = offer_for(b"abc", "x.bin");
        let enc = o.encode();
        assert_eq!(enc[0], OFFER);
        assert_eq!(Offer::parse(&enc), Some(o));
        assert_eq!(Offer::parse(&enc[..41]), None, "empty name");
        assert_eq!(Offer::parse(&[OFFER]), None);
        let mut bad = enc.clone();
        bad.push(0xff);
        assert_eq!(Offer::parse(&bad), None, "not UTF-8");
        let r = encode_reply(ReplyCode::Failed, "why");
        assert_eq!(parse_reply(&r), Some((ReplyCode::Failed, "why".into())));
        assert_eq!(parse_reply(&[REPLY, 9]), None);
        assert_eq!(parse_reply(&[REPLY]), None);
        let long = "é".repeat(600);
        assert!(encode_reply(ReplyCode::Refuse, &long).len() <= 2 + MAX_REASON);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("report.pdf").is_ok());
        assert!(validate_name(".hidden").is_ok());
        for bad in ["", "a/b", "/etc", "..", "../x", "a..b", "nul\0", "."] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn a_verified_file_is_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
        let part = p.part_path().to_path_buf();
        assert!(part
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".f.part-"));
        for c in data.chunks(CHUNK_DATA) {
            p.write(c).unwrap();
        }
        assert_eq!(entries(dir.path()).len(), 1, "only the part file so far");
        let path = p.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(entries(dir.path()), vec!["f".to_string()], "part file gone");
    }

    #[test]
    fn a_corrupt_short_or_long_file_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![1u8; 3000];
        // Wrong content.
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
        let mut tampered = data.clone();
        tampered[100] ^= 1;
        p.write(&tampered).unwrap();
        let e = p.finish().unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        assert!(entries(dir.path()).is_empty());
        // Short.
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
        p.write(&data[..10]).unwrap();
        let e = p.finish().unwrap_err().to_string();
        assert!(e.contains("got 10 of 3000"), "{e}");
        assert!(entries(dir.path()).is_empty());
        // Too long.
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
        p.write(&data).unwrap();
        assert!(p.write(&[0]).is_err());
        drop(p);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn existing_files_need_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"old").unwrap();
        let data = b"new".to_vec();
        let e = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        // The name appears while receiving: still not overwritten.
        std::fs::remove_file(dir.path().join("f")).unwrap();
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
        p.write(&data).unwrap();
        std::fs::write(dir.path().join("f"), b"old").unwrap();
        assert!(p.finish().unwrap_err().to_string().contains("exists"));
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["f".to_string()]);
        // With overwrite.
        let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), true, &mut rng()).unwrap();
        p.write(&data).unwrap();
        p.finish().unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
        let e =
            PartFile::create(dir.path(), offer_for(&data, "../f"), true, &mut rng()).unwrap_err();
        assert!(e.to_string().contains("'/'"), "{e}");
    }

    #[test]
    fn a_file_name_of_255_bytes_gets_a_part_file_name_of_at_most_255_bytes() {
        let names = [
            "a".to_string(),
            "x".repeat(240),
            "x".repeat(241),
            "x".repeat(255),
            format!("x{}", "ü".repeat(127)), // 255 bytes, 240 falls inside a ü
            "日".repeat(85),                 // 255 bytes of 3-byte characters
            format!("abc{}", "😀".repeat(63)), // 255 bytes of 4-byte characters
        ];
        for name in &names {
            assert!(name.len() <= MAX_NAME);
            let part = part_file_name(name, 0xdead_beef);
            assert!(
                part.len() <= 255,
                "{} bytes for a {}-byte name",
                part.len(),
                name.len()
            );
            let kept = part
                .strip_prefix('.')
                .and_then(|p| p.strip_suffix(".part-deadbeef"))
                .unwrap();
            assert!(name.starts_with(kept), "{kept:?}");
            assert!(
                kept.len() + 4 > name.len().min(240),
                "shortened no more than needed"
            );
            if name.len() <= 240 {
                assert_eq!(kept, name);
            }
        }
        // Received for real: the part file can be created, the file gets
        // its full 255-byte name.
        let dir = tempfile::tempdir().unwrap();
        for name in &names[3..] {
            let data = name.as_bytes().to_vec();
            let mut p =
                PartFile::create(dir.path(), offer_for(&data, name), false, &mut rng()).unwrap();
            p.write(&data).unwrap();
            let path = p.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data);
            assert_eq!(path.file_name().unwrap().len(), name.len());
        }
        assert_eq!(entries(dir.path()).len(), 4, "no part file left");
    }

    #[test]
    fn an_offer_over_max_size_or_the_free_space_is_refused_before_any_byte_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_room(dir.path(), 2000, Some(1999)).unwrap_err();
        assert!(matches!(e, TransferError::Refused(_)));
        assert_eq!(
            e.to_string(),
            "refused file of 2000 bytes is larger than the receiver's --max-size of 1999 bytes"
        );
        let e = check_room(dir.path(), u64::MAX / 2, None).unwrap_err();
        assert!(matches!(e, TransferError::Refused(_)));
        assert!(e.to_string().contains("does not fit"), "{e}");
        check_room(dir.path(), 2000, Some(2000)).unwrap();
        check_room(dir.path(), 0, Some(0)).unwrap();
        assert!(entries(dir.path()).is_empty());
        assert!(check_room(&dir.path().join("missing"), 1, None).is_err());
    }
}
