//! A c-toxcore peer in a child process: `harness/harness.c` (libtoxcore's
//! public API only) compiled with the system C compiler and driven line by
//! line over stdin/stdout.
//!
//! # Protocol (the authoritative text is the comment at the top of harness.c)
//!
//! Start-up prints `ID <hex>`, `PK <hex>`, `DHTPK <hex>`, `UDPPORT <port>`,
//! `READY`. Every command line gets exactly one reply line, either its success
//! line or `ERR <COMMAND> <reason>`:
//!
//! | command | success reply |
//! |---|---|
//! | `BOOTSTRAP <ip> <port> <pkhex>` | `OK BOOTSTRAP` |
//! | `RELAY <ip> <port> <pkhex>` | `OK RELAY` |
//! | `ADDFRIEND <pkhex>` | `FRIEND <n>` |
//! | `MSG <friend> <text>` | `OK MSG <id>` |
//! | `SENDCUSTOM <friend> <count> <size> <id>` (160..=191) | `OK SENDCUSTOM`, later `SENT ...` |
//! | `SENDLOSSY <friend> <count> <size> <id>` (200..=254) | `OK SENDLOSSY`, later `SENT ...` |
//! | `STATS [<friend>]` | `STATS friend=<n> key=value ...` (with `custom_ids=`, `lossy_ids=`, `conn_changes=`, `conn_offline=`) |
//! | `QUIT` | `BYE` (then the process exits; stdin EOF exits too) |
//!
//! Asynchronous events: `CONN <friend> <none|udp|tcp> <ms> <mono_us>`,
//! `SELFCONN <none|udp|tcp> <ms> <mono_us>`, `MSGRX <friend> <text>`,
//! `PKTID <friend> <lossless|lossy> <id> <len> <mono_us>` (the first packet
//! of an id the custom packet callbacks delivered from a friend,
//! [`PacketIdEvent`]).
//!
//! What a c-toxcore application can see of a friend's packets that
//! libtoxcore does not handle itself: the two custom packet callbacks
//! (counted per packet id in [`Stats::custom_ids`] / [`Stats::lossy_ids`],
//! first of each id as `PKTID`) and the friend's connection status
//! (`CONN`, counted in [`Stats::conn_changes`] / [`Stats::conn_offline`]).
//! Custom packets carry a sequence number, an FNV-1a checksum and their send
//! time; the receiving harness counts good, bad, duplicate, reordered and lost
//! packets and the longest gap between packets ([`Stats`]). Times named
//! `*_us` are `CLOCK_MONOTONIC` microseconds, comparable across processes.
//!
//! # Invariants
//! * A reader thread moves stdout lines into a channel; [`Harness::expect_line`]
//!   keeps lines it skips in a buffer, so no event is lost between calls.
//! * Every wait has a timeout. The child is killed by PID on drop (after
//!   closing its stdin, which makes it exit by itself), dies with the test
//!   process (`PR_SET_PDEATHSIG`), and its stderr goes to [`Harness::log_path`].
//!
//! Layout: `compile` builds the C program, `options` its command line,
//! `replies` parses what it prints, `packets` is the custom packet
//! format; this module runs the process.

mod compile;
mod options;
mod packets;
mod replies;
#[cfg(test)]
mod tests;

pub use compile::{
    build_harness, harness_available, harness_cache_dir, harness_source, require_harness,
};
pub use options::HarnessOptions;
pub use packets::{custom_checksum, custom_packet, mono_us};
pub use replies::{ConnEvent, ConnKind, PacketIdEvent, SendReport, Stats, StreamStats};

use crate::error::{InteropError, Result};
use crate::process;
use replies::{parse_conn_event, parse_key};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tracing::{debug, trace, warn};

/// Largest custom packet c-toxcore sends, id byte included
/// (`TOX_MAX_CUSTOM_PACKET_SIZE`).
pub const MAX_CUSTOM_PACKET_SIZE: usize = 1373;

/// Smallest custom packet the harness sends: id, sequence number, checksum,
/// send time.
pub const MIN_CUSTOM_PACKET_SIZE: usize = 17;

/// How long [`Harness::start`] waits for `READY`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout for a command's immediate reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Unmatched lines kept at most; older ones are dropped with a warning.
const MAX_PENDING_LINES: usize = 100_000;

/// Grace period between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running harness process. See the module documentation.
#[derive(Debug)]
pub struct Harness {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pending: VecDeque<String>,
    tox_id: String,
    public_key: [u8; 32],
    dht_key: [u8; 32],
    udp_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Builds (if needed) and starts a harness, waiting for `READY`.
    pub fn start(opts: &HarnessOptions) -> Result<Harness> {
        let bin = build_harness()?;
        let dir = tempfile::Builder::new()
            .prefix("toxlink-harness-")
            .tempdir()
            .map_err(|e| InteropError::io("creating a temp dir", e))?;
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| InteropError::io(format!("creating {log_path:?}"), e))?;
        let mut cmd = Command::new(&bin);
        cmd.args(opts.args()?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = process::spawn(cmd, "harness")?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        if let Some(stdout) = stdout {
            std::thread::Builder::new()
                .name(format!("harness-{pid}-stdout"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        trace!(pid, %line, "harness says");
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| InteropError::io("starting the harness reader thread", e))?;
        }
        let mut h = Harness {
            child: Some(child),
            stdin,
            lines: rx,
            pending: VecDeque::new(),
            tox_id: String::new(),
            public_key: [0; 32],
            dht_key: [0; 32],
            udp_port: 0,
            log_path,
            _dir: dir,
        };
        // On error `h` drops, which stops the child.
        let deadline = Instant::now() + START_TIMEOUT;
        let left = || deadline.saturating_duration_since(Instant::now());
        let field = |h: &mut Harness, p: &str, t| -> Result<String> {
            let line = h.expect_any(&[p, "ERR START"], t)?;
            match line.strip_prefix(p) {
                Some(v) => Ok(v.to_owned()),
                None => Err(InteropError::Refused {
                    command: "start".into(),
                    reply: line,
                }),
            }
        };
        h.tox_id = field(&mut h, "ID ", left())?;
        h.public_key = parse_key(&field(&mut h, "PK ", left())?)?;
        h.dht_key = parse_key(&field(&mut h, "DHTPK ", left())?)?;
        let port = field(&mut h, "UDPPORT ", left())?;
        h.udp_port = port
            .parse()
            .map_err(|_| InteropError::Protocol(format!("bad UDPPORT {port:?}")))?;
        field(&mut h, "READY", left())?;
        debug!(pid, udp_port = h.udp_port, pk = %hex::encode_upper(h.public_key), "harness ready");
        Ok(h)
    }

    /// The Tox ID (76 hex digits: public key, nospam, checksum).
    pub fn tox_id(&self) -> &str {
        &self.tox_id
    }

    /// Long-term public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// DHT public key (the key it uses towards TCP relays, docs/PROTOCOL.md §2.1).
    pub fn dht_key(&self) -> [u8; 32] {
        self.dht_key
    }

    /// Bound UDP port (0 with `--no-udp`).
    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// PID of the harness process (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// File holding the harness's stderr (libtoxcore log with `toxcore_log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends one command line (no newline inside).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        if line.contains(['\n', '\r']) {
            return Err(InteropError::InvalidArgument(format!(
                "line with a line break: {line:?}"
            )));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| InteropError::Protocol("harness stdin closed".into()))?;
        let r = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        r.map_err(|e| InteropError::io(format!("writing {line:?} to the harness"), e))
    }

    /// Returns the first line (buffered or new) starting with `prefix`,
    /// waiting at most `timeout`. Lines skipped on the way are kept.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        self.expect_any(&[prefix], timeout)
    }

    /// Like [`expect_line`](Self::expect_line) for several prefixes: the first
    /// line starting with any of them.
    pub fn expect_any(&mut self, prefixes: &[&str], timeout: Duration) -> Result<String> {
        let matches = |l: &str| prefixes.iter().any(|p| l.starts_with(p));
        if let Some(i) = self.pending.iter().position(|l| matches(l)) {
            if let Some(l) = self.pending.remove(i) {
                return Ok(l);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if matches(&l) => return Ok(l),
                Ok(l) => {
                    if self.pending.len() >= MAX_PENDING_LINES {
                        if let Some(old) = self.pending.pop_front() {
                            warn!(%old, "harness: dropping an unread line");
                        }
                    }
                    self.pending.push_back(l);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(InteropError::Timeout {
                        what: format!("harness line starting with {prefixes:?}"),
                        after: timeout,
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.exited_error()),
            }
        }
    }

    /// Removes and returns the received, not yet consumed lines starting
    /// with `prefix` (others stay for later `expect_*` calls).
    pub fn take_lines(&mut self, prefix: &str) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.pending.push_back(l);
        }
        let (taken, kept): (VecDeque<String>, VecDeque<String>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|l| l.starts_with(prefix));
        self.pending = kept;
        taken.into()
    }

    /// Removes and returns the `PKTID` events about `friend` received so far
    /// (see [`take_lines`](Self::take_lines)).
    pub fn take_packet_id_events(&mut self, friend: u32) -> Result<Vec<PacketIdEvent>> {
        self.take_lines(&format!("PKTID {friend} "))
            .iter()
            .map(|l| PacketIdEvent::parse(l))
            .collect()
    }

    /// Lines received but not yet consumed by an `expect_*` call.
    pub fn unread_lines(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.pending.push_back(l);
        }
        self.pending.iter().cloned().collect()
    }

    fn exited_error(&mut self) -> InteropError {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(s))) => s.to_string(),
            _ => "stdout closed".into(),
        };
        InteropError::ChildExited {
            what: format!("harness {}", self.pid()),
            status,
            log_tail: process::log_tail(&self.log_path, 30),
        }
    }

    /// Sends `line` and waits for its reply: a line starting with `ok_prefix`
    /// or `ERR <first word of line>` (→ [`InteropError::Refused`]).
    pub fn command(&mut self, line: &str, ok_prefix: &str, timeout: Duration) -> Result<String> {
        self.send_line(line)?;
        let word = line.split(' ').next().unwrap_or_default();
        let err_prefix = format!("ERR {word} ");
        let reply = self.expect_any(&[ok_prefix, &err_prefix], timeout)?;
        if reply.starts_with(&err_prefix) {
            return Err(InteropError::Refused {
                command: line.to_owned(),
                reply,
            });
        }
        Ok(reply)
    }

    /// `tox_bootstrap` to a DHT node.
    pub fn bootstrap(&mut self, addr: SocketAddr, pk: &[u8; 32]) -> Result<()> {
        let line = format!(
            "BOOTSTRAP {} {} {}",
            addr.ip(),
            addr.port(),
            hex::encode_upper(pk)
        );
        self.command(&line, "OK BOOTSTRAP", REPLY_TIMEOUT).map(drop)
    }

    /// `tox_add_tcp_relay`.
    pub fn add_tcp_relay(&mut self, addr: SocketAddr, pk: &[u8; 32]) -> Result<()> {
        let line = format!(
            "RELAY {} {} {}",
            addr.ip(),
            addr.port(),
            hex::encode_upper(pk)
        );
        self.command(&line, "OK RELAY", REPLY_TIMEOUT).map(drop)
    }

    /// `tox_friend_add_norequest`; returns the friend number.
    pub fn add_friend(&mut self, pk: &[u8; 32]) -> Result<u32> {
        let line = format!("ADDFRIEND {}", hex::encode_upper(pk));
        let reply = self.command(&line, "FRIEND ", REPLY_TIMEOUT)?;
        reply
            .strip_prefix("FRIEND ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| InteropError::Protocol(format!("bad reply {reply:?}")))
    }

    /// Waits for the next `CONN <friend> ...` event.
    pub fn next_conn_event(&mut self, friend: u32, timeout: Duration) -> Result<ConnEvent> {
        let line = self.expect_line(&format!("CONN {friend} "), timeout)?;
        parse_conn_event(
            line.strip_prefix(&format!("CONN {friend} "))
                .unwrap_or_default(),
            &line,
        )
    }

    /// Waits until `friend` is connected (UDP or TCP), consuming its `CONN`
    /// events in order; returns the event that reported the connection.
    pub fn wait_connected_event(&mut self, friend: u32, timeout: Duration) -> Result<ConnEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next_conn_event(friend, left).map_err(|e| match e {
                InteropError::Timeout { .. } => InteropError::Timeout {
                    what: format!("friend {friend} to connect"),
                    after: timeout,
                },
                other => other,
            })?;
            if ev.kind != ConnKind::None {
                return Ok(ev);
            }
        }
    }

    /// Waits until `friend` is connected; returns how.
    pub fn wait_connected(&mut self, friend: u32, timeout: Duration) -> Result<ConnKind> {
        self.wait_connected_event(friend, timeout).map(|e| e.kind)
    }

    /// Waits until the node itself is connected to the network (`SELFCONN`).
    pub fn wait_self_connected(&mut self, timeout: Duration) -> Result<ConnKind> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.expect_line("SELFCONN ", left)?;
            let ev = parse_conn_event(line.strip_prefix("SELFCONN ").unwrap_or_default(), &line)?;
            if ev.kind != ConnKind::None {
                return Ok(ev.kind);
            }
        }
    }

    /// Sends a normal message; returns its message id. `text` must be 1..=1372
    /// bytes without line breaks.
    pub fn send_message(&mut self, friend: u32, text: &str) -> Result<u32> {
        if text.is_empty() || text.len() > 1372 || text.contains(['\n', '\r']) {
            return Err(InteropError::InvalidArgument(format!(
                "message must be 1..=1372 bytes without line breaks: {text:?}"
            )));
        }
        let reply = self.command(&format!("MSG {friend} {text}"), "OK MSG ", REPLY_TIMEOUT)?;
        reply
            .strip_prefix("OK MSG ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| InteropError::Protocol(format!("bad reply {reply:?}")))
    }

    /// Waits for the next message from `friend`; returns its text (control
    /// characters became spaces).
    pub fn expect_message(&mut self, friend: u32, timeout: Duration) -> Result<String> {
        let p = format!("MSGRX {friend} ");
        let line = self.expect_line(&p, timeout)?;
        Ok(line.strip_prefix(&p).unwrap_or_default().to_owned())
    }

    /// Starts sending `count` custom lossless packets of `size` bytes
    /// (17..=1373, id byte included) with packet id `id` (160..=191); returns
    /// once the harness accepted the command. Finish with [`wait_sent`](Self::wait_sent).
    pub fn start_custom(&mut self, friend: u32, count: u32, size: usize, id: u8) -> Result<()> {
        self.start_send("SENDCUSTOM", friend, count, size, id)
    }

    /// Starts sending custom lossy packets (ids 200..=254); see
    /// [`start_custom`](Self::start_custom).
    pub fn start_lossy(&mut self, friend: u32, count: u32, size: usize, id: u8) -> Result<()> {
        self.start_send("SENDLOSSY", friend, count, size, id)
    }

    fn start_send(
        &mut self,
        cmd: &str,
        friend: u32,
        count: u32,
        size: usize,
        id: u8,
    ) -> Result<()> {
        if !(MIN_CUSTOM_PACKET_SIZE..=MAX_CUSTOM_PACKET_SIZE).contains(&size) {
            return Err(InteropError::InvalidArgument(format!(
                "packet size {size} outside {MIN_CUSTOM_PACKET_SIZE}..={MAX_CUSTOM_PACKET_SIZE}"
            )));
        }
        let line = format!("{cmd} {friend} {count} {size} {id}");
        self.command(&line, &format!("OK {cmd}"), REPLY_TIMEOUT)
            .map(drop)
    }

    /// Waits for the `SENT` line of a send started with `start_custom` /
    /// `start_lossy`.
    pub fn wait_sent(&mut self, timeout: Duration) -> Result<SendReport> {
        let line = self.expect_line("SENT ", timeout)?;
        SendReport::parse(&line)
    }

    /// Sends `count` custom lossless packets and waits (≤ `timeout`) until
    /// libtoxcore accepted all of them (or the run ended early: see
    /// [`SendReport::error`]). Delivery is checked on the receiver's [`Stats`].
    pub fn send_custom(
        &mut self,
        friend: u32,
        count: u32,
        size: usize,
        id: u8,
        timeout: Duration,
    ) -> Result<SendReport> {
        self.start_custom(friend, count, size, id)?;
        self.wait_sent(timeout)
    }

    /// Sends `count` custom lossy packets; see [`send_custom`](Self::send_custom).
    pub fn send_lossy(
        &mut self,
        friend: u32,
        count: u32,
        size: usize,
        id: u8,
        timeout: Duration,
    ) -> Result<SendReport> {
        self.start_lossy(friend, count, size, id)?;
        self.wait_sent(timeout)
    }

    /// Current statistics about `friend`.
    pub fn stats(&mut self, friend: u32) -> Result<Stats> {
        let line = self.command(&format!("STATS {friend}"), "STATS friend=", REPLY_TIMEOUT)?;
        Stats::parse(&line)
    }

    /// Polls [`stats`](Self::stats) every `every` until `done` holds;
    /// returns the last figures, or times out after `timeout`.
    pub fn wait_stats(
        &mut self,
        friend: u32,
        timeout: Duration,
        every: Duration,
        mut done: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats(friend)?;
            if done(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(InteropError::Timeout {
                    what: format!("statistics condition on friend {friend}; last: {s:?}"),
                    after: timeout,
                });
            }
            std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Asks the harness to quit and waits for it to exit (bounded; killed if
    /// it does not).
    pub fn quit(mut self) -> Result<()> {
        let r = self.command("QUIT", "BYE", REPLY_TIMEOUT).map(drop);
        self.shutdown();
        r
    }

    fn shutdown(&mut self) {
        // EOF on stdin makes the harness leave its loop by itself.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let status = process::terminate(&mut child, STOP_GRACE);
            debug!(pid, %status, "harness stopped");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown();
    }
}
