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
//! | `STATS [<friend>]` | `STATS friend=<n> key=value ...` |
//! | `QUIT` | `BYE` (then the process exits; stdin EOF exits too) |
//!
//! Asynchronous events: `CONN <friend> <none|udp|tcp> <ms> <mono_us>`,
//! `SELFCONN <none|udp|tcp> <ms> <mono_us>`, `MSGRX <friend> <text>`.
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

use crate::error::{InteropError, Result};
use crate::process;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
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

/// The C source of the harness.
pub fn harness_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/harness.c")
}

/// Directory the compiled harness is cached in: `$CARGO_TARGET_DIR/interop`
/// if that variable is set when the tests run, else `<workspace>/target/interop`.
pub fn harness_cache_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("interop"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop"),
    }
}

/// Serialises builds inside this process and remembers the result.
static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Compiles `harness.c` (once per process) and returns the binary's path.
///
/// Rebuilds only if the binary is missing or older than the source. Safe to
/// call from parallel tests and parallel processes: the compiler writes a
/// unique temporary name that is then renamed into place atomically.
/// Compiler: `$CC` or `cc`; flags from `pkg-config --cflags --libs toxcore`.
pub fn build_harness() -> Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let src = harness_source();
    let dir = harness_cache_dir();
    let out = dir.join("toxlink-harness");
    if !is_fresh(&out, &src) {
        compile(&src, &dir, &out)?;
    }
    *built = Some(out.clone());
    Ok(out)
}

fn is_fresh(out: &Path, src: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((mtime(out), mtime(src)), (Some(o), Some(s)) if o >= s)
}

fn pkg_config_toxcore() -> Result<Vec<String>> {
    let o = Command::new("pkg-config")
        .args(["--cflags", "--libs", "toxcore"])
        .output()
        .map_err(|e| InteropError::io("running pkg-config", e))?;
    if !o.status.success() {
        return Err(InteropError::Unavailable(format!(
            "pkg-config toxcore failed (install libtoxcore-dev): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn compile(src: &Path, dir: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| InteropError::io(format!("creating {dir:?}"), e))?;
    let flags = pkg_config_toxcore()?;
    let tmp = tempfile::Builder::new()
        .prefix(".toxlink-harness-")
        .tempfile_in(dir)
        .map_err(|e| InteropError::io(format!("creating a temp file in {dir:?}"), e))?
        .into_temp_path();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    debug!(?src, ?out, "compiling the c-toxcore harness");
    let o = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&tmp)
        .arg(src)
        .args(&flags)
        .output()
        .map_err(|e| InteropError::io(format!("running {cc:?}"), e))?;
    if !o.status.success() {
        return Err(InteropError::Compile {
            source_path: src.to_path_buf(),
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    if !o.stderr.is_empty() {
        warn!(
            "harness.c compiler output:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    tmp.persist(out)
        .map_err(|e| InteropError::io(format!("renaming the harness to {out:?}"), e.error))?;
    Ok(())
}

/// Whether the harness can be built here: pkg-config knows `toxcore`.
pub fn harness_available() -> bool {
    pkg_config_toxcore().is_ok()
}

/// For tests: fails the test (never skips it) when the harness cannot be
/// built here, naming the package to install. The README's test command
/// installs it, so a missing harness is a broken set-up, not a pass.
///
/// # Panics
/// When pkg-config does not know `toxcore`.
pub fn require_harness() {
    if let Err(e) = pkg_config_toxcore() {
        panic!("the c-toxcore interop harness cannot be built: {e} (run ./scripts/test.sh, which installs libtoxcore-dev, or apt-get install libtoxcore-dev pkg-config)");
    }
}

/// Connection status of a friend or of the node itself (`Tox_Connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// Not connected.
    None,
    /// Connected directly over UDP.
    Udp,
    /// Connected through a TCP relay.
    Tcp,
}

impl FromStr for ConnKind {
    type Err = InteropError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(ConnKind::None),
            "udp" => Ok(ConnKind::Udp),
            "tcp" => Ok(ConnKind::Tcp),
            other => Err(InteropError::Protocol(format!(
                "unknown connection kind {other:?}"
            ))),
        }
    }
}

impl fmt::Display for ConnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnKind::None => "none",
            ConnKind::Udp => "udp",
            ConnKind::Tcp => "tcp",
        })
    }
}

/// A `CONN` / `SELFCONN` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnEvent {
    /// New status.
    pub kind: ConnKind,
    /// Milliseconds since the harness process started.
    pub ms_since_start: u64,
    /// `CLOCK_MONOTONIC` microseconds at the event.
    pub mono_us: u64,
}

/// Start options of a harness process (its command-line arguments).
#[derive(Debug, Clone, Default)]
pub struct HarnessOptions {
    /// UDP port; 0 (default) picks a free one.
    pub udp_port: u16,
    /// Disable UDP: TCP relays only (`--no-udp`).
    pub no_udp: bool,
    /// Enable IPv6 (default off).
    pub ipv6: bool,
    /// Enable LAN discovery (default off).
    pub local_discovery: bool,
    /// Fixed long-term secret key, so tests know the keys in advance.
    pub secret_key: Option<[u8; 32]>,
    /// Self name.
    pub name: Option<String>,
    /// Echo every received custom lossless packet back to its sender.
    pub echo: bool,
    /// Write libtoxcore's own log to the stderr log file.
    pub toxcore_log: bool,
}

impl HarnessOptions {
    /// Default options: UDP on a free port, IPv4 only, no LAN discovery.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the UDP port (0 = a free one).
    pub fn udp_port(mut self, port: u16) -> Self {
        self.udp_port = port;
        self
    }
    /// Disables UDP (TCP relays only).
    pub fn no_udp(mut self) -> Self {
        self.no_udp = true;
        self
    }
    /// Enables or disables IPv6.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }
    /// Enables or disables LAN discovery.
    pub fn local_discovery(mut self, on: bool) -> Self {
        self.local_discovery = on;
        self
    }
    /// Uses a fixed long-term secret key.
    pub fn secret_key(mut self, sk: [u8; 32]) -> Self {
        self.secret_key = Some(sk);
        self
    }
    /// Sets the self name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Enables echo of custom lossless packets.
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }
    /// Enables libtoxcore's log (to [`Harness::log_path`]).
    pub fn toxcore_log(mut self, on: bool) -> Self {
        self.toxcore_log = on;
        self
    }

    fn args(&self) -> Result<Vec<String>> {
        let mut a = vec!["--udp-port".to_owned(), self.udp_port.to_string()];
        if self.no_udp {
            a.push("--no-udp".into());
        }
        a.extend(["--ipv6".into(), u8::from(self.ipv6).to_string()]);
        a.extend([
            "--local-discovery".into(),
            u8::from(self.local_discovery).to_string(),
        ]);
        if let Some(sk) = &self.secret_key {
            a.extend(["--secret-key".into(), hex::encode_upper(sk)]);
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.contains(['\n', '\r', '\0']) {
                return Err(InteropError::InvalidArgument(format!("name {n:?}")));
            }
            a.extend(["--name".into(), n.clone()]);
        }
        if self.echo {
            a.push("--echo".into());
        }
        if self.toxcore_log {
            a.push("--log".into());
        }
        Ok(a)
    }
}

/// Receive statistics of one packet kind from one friend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Packets received (including bad and duplicate ones).
    pub rx: u64,
    /// Packets too short or with a wrong checksum.
    pub bad: u64,
    /// Packets whose sequence number had been seen before.
    pub dup: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers below the highest seen that never arrived.
    pub lost: u64,
    /// Bytes of good, distinct packets (id byte included).
    pub bytes_rx: u64,
    /// Longest time between two consecutive good packets, µs.
    pub max_gap_us: u64,
    /// `CLOCK_MONOTONIC` µs of the last good packet (0 = none yet).
    pub last_rx_us: u64,
    /// Mean one-way latency (send → receive, same host clock), µs.
    pub lat_avg_us: u64,
    /// Largest one-way latency, µs.
    pub lat_max_us: u64,
}

impl StreamStats {
    /// Good, distinct packets.
    pub fn good(&self) -> u64 {
        self.rx.saturating_sub(self.bad).saturating_sub(self.dup)
    }
}

/// A parsed `STATS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Friend number the figures are about.
    pub friend: u32,
    /// Current connection status of that friend.
    pub status: ConnKind,
    /// Custom lossless packets received from the friend.
    pub custom: StreamStats,
    /// Custom lossy packets received from the friend.
    pub lossy: StreamStats,
    /// Messages received from the friend.
    pub msgs_rx: u64,
    /// Custom lossless packets accepted by toxcore for sending to the friend.
    pub custom_tx: u64,
    /// Custom lossy packets accepted for sending.
    pub lossy_tx: u64,
    /// Echoed packets (all friends).
    pub echo_tx: u64,
    /// Packets that could not be echoed (all friends).
    pub echo_dropped: u64,
    /// `CLOCK_MONOTONIC` µs when the reply was written.
    pub now_us: u64,
}

impl Stats {
    /// Parses a `STATS friend=... ...` line.
    pub fn parse(line: &str) -> Result<Stats> {
        let rest = line
            .strip_prefix("STATS ")
            .ok_or_else(|| InteropError::Protocol(format!("not a STATS line: {line:?}")))?;
        let map: HashMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| -> Result<&str> {
            map.get(k)
                .copied()
                .ok_or_else(|| InteropError::Protocol(format!("STATS lacks {k}: {line:?}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| InteropError::Protocol(format!("STATS {k} not a number: {line:?}")))
        };
        let stream = |p: &str| -> Result<StreamStats> {
            Ok(StreamStats {
                rx: num(&format!("{p}rx"))?,
                bad: num(&format!("{p}bad"))?,
                dup: num(&format!("{p}dup"))?,
                reordered: num(&format!("{p}reordered"))?,
                lost: num(&format!("{p}lost"))?,
                bytes_rx: num(&format!("{p}bytes_rx"))?,
                max_gap_us: num(&format!("{p}max_gap_us"))?,
                last_rx_us: num(&format!("{p}last_rx_us"))?,
                lat_avg_us: num(&format!("{p}lat_avg_us"))?,
                lat_max_us: num(&format!("{p}lat_max_us"))?,
            })
        };
        Ok(Stats {
            friend: u32::try_from(num("friend")?)
                .map_err(|_| InteropError::Protocol(format!("bad friend: {line:?}")))?,
            status: get("status")?.parse()?,
            custom: stream("custom_")?,
            lossy: stream("lossy_")?,
            msgs_rx: num("msgs_rx")?,
            custom_tx: num("custom_tx")?,
            lossy_tx: num("lossy_tx")?,
            echo_tx: num("echo_tx")?,
            echo_dropped: num("echo_dropped")?,
            now_us: num("now_us")?,
        })
    }
}

/// Outcome of a `SENDCUSTOM` / `SENDLOSSY` run (the `SENT` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Packets libtoxcore accepted.
    pub accepted: u32,
    /// Milliseconds from the command to the last accepted packet.
    pub ms: u64,
    /// Friend number.
    pub friend: u32,
    /// Whether these were lossy packets.
    pub lossy: bool,
    /// `CLOCK_MONOTONIC` µs when sending started.
    pub start_us: u64,
    /// Why the run ended early (`None` = all accepted).
    pub error: Option<String>,
}

impl SendReport {
    /// Parses a `SENT <n> <ms> friend=.. kind=.. start_us=.. err=..` line.
    pub fn parse(line: &str) -> Result<SendReport> {
        let bad = || InteropError::Protocol(format!("bad SENT line: {line:?}"));
        let mut it = line.split_whitespace();
        if it.next() != Some("SENT") {
            return Err(bad());
        }
        let accepted = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let ms = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let map: HashMap<&str, &str> = it.filter_map(|kv| kv.split_once('=')).collect();
        let friend = map
            .get("friend")
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let start_us = map
            .get("start_us")
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let lossy = match map.get("kind") {
            Some(&"lossy") => true,
            Some(&"lossless") => false,
            _ => return Err(bad()),
        };
        let error = match map.get("err") {
            Some(&"none") => None,
            Some(e) => Some((*e).to_owned()),
            None => return Err(bad()),
        };
        Ok(SendReport {
            accepted,
            ms,
            friend,
            lossy,
            start_us,
            error,
        })
    }
}

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

    /// DHT public key (the key it uses towards TCP relays, PROTOCOL.md §2.1).
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

fn parse_key(s: &str) -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut k)
        .map_err(|_| InteropError::Protocol(format!("bad key {s:?}")))?;
    Ok(k)
}

/// `CLOCK_MONOTONIC` in microseconds: the clock the harness stamps its
/// events and packets with.
pub fn mono_us() -> u64 {
    process::mono_us()
}

/// FNV-1a of a packet in the harness's custom layout, with the checksum
/// field (bytes 5..9) counted as zero.
pub fn custom_checksum(p: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, &b) in p.iter().enumerate() {
        let b = if (5..9).contains(&i) { 0 } else { b };
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A packet in the harness's custom layout: id ‖ seq BE32 ‖ FNV-1a BE32
/// ([`custom_checksum`]) ‖ send time BE64 (`sent_us`, [`mono_us`] or 0) ‖
/// filler. `size` is at least 17.
pub fn custom_packet(id: u8, seq: u32, size: usize, sent_us: u64) -> Vec<u8> {
    let mut p = vec![0u8; size.max(17)];
    p[0] = id;
    p[1..5].copy_from_slice(&seq.to_be_bytes());
    p[9..17].copy_from_slice(&sent_us.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(17) {
        *b = (seq as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    let h = custom_checksum(&p);
    p[5..9].copy_from_slice(&h.to_be_bytes());
    p
}

/// Parses `<kind> <ms> <mono_us>` of a CONN/SELFCONN line.
fn parse_conn_event(rest: &str, line: &str) -> Result<ConnEvent> {
    let bad = || InteropError::Protocol(format!("bad event {line:?}"));
    let mut it = rest.split_whitespace();
    let kind = it.next().ok_or_else(bad)?.parse()?;
    let ms_since_start = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mono_us = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(ConnEvent {
        kind,
        ms_since_start,
        mono_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS_LINE: &str = "STATS friend=3 status=udp custom_rx=10 custom_bad=1 custom_dup=2 \
        custom_reordered=0 custom_lost=4 custom_bytes_rx=700 custom_max_gap_ms=1 custom_max_gap_us=1500 \
        custom_last_rx_us=99 custom_lat_avg_us=5 custom_lat_max_us=9 lossy_rx=0 lossy_bad=0 lossy_dup=0 \
        lossy_reordered=0 lossy_lost=0 lossy_bytes_rx=0 lossy_max_gap_ms=0 lossy_max_gap_us=0 \
        lossy_last_rx_us=0 lossy_lat_avg_us=0 lossy_lat_max_us=0 msgs_rx=2 custom_tx=11 lossy_tx=0 \
        echo_tx=0 echo_dropped=0 now_us=123";

    #[test]
    fn parses_stats() {
        let s = Stats::parse(STATS_LINE).unwrap();
        assert_eq!(s.friend, 3);
        assert_eq!(s.status, ConnKind::Udp);
        assert_eq!(s.custom.rx, 10);
        assert_eq!(s.custom.good(), 7);
        assert_eq!(s.custom.lost, 4);
        assert_eq!(s.custom.max_gap_us, 1500);
        assert_eq!(s.msgs_rx, 2);
        assert_eq!(s.custom_tx, 11);
        assert_eq!(s.now_us, 123);
    }

    #[test]
    fn rejects_incomplete_stats() {
        let cut = STATS_LINE.replace(" msgs_rx=2", "");
        assert!(matches!(Stats::parse(&cut), Err(InteropError::Protocol(_))));
        assert!(Stats::parse("STATX friend=1").is_err());
        let bad_num = STATS_LINE.replace("custom_rx=10", "custom_rx=ten");
        assert!(Stats::parse(&bad_num).is_err());
    }

    #[test]
    fn parses_sent() {
        let r = SendReport::parse("SENT 5 12 friend=0 kind=lossless start_us=77 err=none").unwrap();
        assert_eq!(
            (r.accepted, r.ms, r.friend, r.lossy, r.start_us),
            (5, 12, 0, false, 77)
        );
        assert_eq!(r.error, None);
        let r = SendReport::parse("SENT 2 1 friend=1 kind=lossy start_us=7 err=stalled").unwrap();
        assert!(r.lossy);
        assert_eq!(r.error.as_deref(), Some("stalled"));
        assert!(SendReport::parse("SENT x 1 friend=1 kind=lossy start_us=7 err=none").is_err());
        assert!(SendReport::parse("SENT 1 1 friend=1 kind=odd start_us=7 err=none").is_err());
    }

    #[test]
    fn parses_conn_events() {
        let e = parse_conn_event("tcp 1500 42", "CONN 0 tcp 1500 42").unwrap();
        assert_eq!(
            e,
            ConnEvent {
                kind: ConnKind::Tcp,
                ms_since_start: 1500,
                mono_us: 42
            }
        );
        assert!(parse_conn_event("fast 1 2", "").is_err());
        assert!(parse_conn_event("udp", "").is_err());
    }

    #[test]
    fn options_become_arguments() {
        let a = HarnessOptions::new()
            .no_udp()
            .secret_key([0xab; 32])
            .name("alice")
            .echo(true)
            .args()
            .unwrap();
        let joined = a.join(" ");
        assert!(joined.contains("--no-udp"));
        assert!(joined.contains(&format!("--secret-key {}", "AB".repeat(32))));
        assert!(joined.contains("--name alice"));
        assert!(joined.contains("--echo"));
        assert!(joined.contains("--local-discovery 0"));
        assert!(HarnessOptions::new().name("a\nb").args().is_err());
    }
}
