//! A network-namespace lab for real-process tests: two peers, each behind
//! its own NAT router, and relay hosts on a shared "wan".
//!
//! ```text
//!                wan namespace: bridge br0, 203.0.113.0/24 (no uplink)
//!   ┌───────────────┬───────────────┬──────────────────┬──────────────────┐
//!  relay 0         relay 1 …       natA 203.0.113.21   natB 203.0.113.22
//!  203.0.113.10    203.0.113.11     │ 198.51.100.1      │ 192.0.2.1
//!                                  hostA 198.51.100.2  hostB 192.0.2.2
//! ```
//!
//! Each NAT router forwards between its LAN and the wan and masquerades
//! TCP and UDP leaving on the wan to a configurable source-port range
//! (`masquerade to :20000-20999`), with conntrack byte counters on
//! (`nf_conntrack_acct`). Hosts route by default through their NAT; NATs
//! have no default route and the wan bridge no uplink, so no packet leaves
//! the lab. Only documentation address ranges are used.
//!
//! Invariants:
//! - every namespace is named `tlab<PID>n<COUNTER>-<role>` (the test
//!   process's PID and a per-process counter), so parallel tests and test
//!   processes never collide; interfaces are created directly inside the
//!   lab's namespaces (never in the caller's);
//! - on drop (also while a test panics) every process started through
//!   [`Lab::spawn`] is killed by its pidfd (never by name, and never a
//!   recycled PID) and its exit awaited (bounded), then every namespace is
//!   deleted; if the test process is killed instead, its lab processes die
//!   with it (`PR_SET_PDEATHSIG`) and the next lab deletes the namespaces
//!   left behind (and kills any process still in them);
//! - every wait is bounded ([`CMD_TIMEOUT`] for helper commands);
//! - a missing component (not root, `ip`/`nft`/`conntrack` missing) panics
//!   with what to install: a test using the lab fails, never skips.

#![allow(dead_code)]

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a helper command (ip, nft, conntrack) may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of every lab namespace.
const PREFIX: &str = "tlab";
/// nftables table and chain of the NAT rule.
const NAT_TABLE: &str = "tlabnat";
const NAT_CHAIN: &str = "post";
/// nftables table of the drop-unknown rules.
const FILTER_TABLE: &str = "tlabfilter";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One of the two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Peer A: LAN 198.51.100.0/24, NAT 203.0.113.21.
    A,
    /// Peer B: LAN 192.0.2.0/24, NAT 203.0.113.22.
    B,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }

    /// The LAN's first three octets.
    fn lan(self) -> [u8; 3] {
        match self {
            Side::A => [198, 51, 100],
            Side::B => [192, 0, 2],
        }
    }
}

/// The lab's shape.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Relay hosts on the wan (1..=10).
    pub relays: usize,
    /// The NATs' masquerade source-port range.
    pub port_range: (u16, u16),
    /// How a NAT treats a TCP segment of a flow it has no state for (after
    /// a flush): `false` (Linux's default, `nf_conntrack_tcp_loose=1`)
    /// adopts it as a new flow — an outgoing one is mapped to a new source
    /// port (the far end then answers with a RST), an incoming one reaches
    /// the router itself, which answers with a RST; `true` drops both
    /// silently (`nf_conntrack_tcp_loose=0` and `ct state invalid drop`),
    /// as many home routers do: nobody learns that the flow is gone until
    /// a timeout.
    pub drop_unknown: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            relays: 1,
            port_range: (20000, 20999),
            drop_unknown: false,
        }
    }
}

/// A TCP conntrack entry of a NAT router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// TCP state (ESTABLISHED, TIME_WAIT, …).
    pub state: String,
    /// Source as the host sent it (LAN address).
    pub orig_src: SocketAddrV4,
    /// Destination as the host sent it.
    pub orig_dst: SocketAddrV4,
    /// The address the far end sees (after masquerade): the reply's
    /// destination.
    pub mapped: SocketAddrV4,
    /// Bytes host → far end (0 without `nf_conntrack_acct`).
    pub bytes_out: u64,
    /// Bytes far end → host.
    pub bytes_in: u64,
}

/// A file removed on drop.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Tracked {
    pid: i32,
    pidfd: OwnedFd,
    what: String,
}

/// A running lab; see the module documentation.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    relays: usize,
    port_ranges: Mutex<[(u16, u16); 2]>,
    procs: Mutex<Vec<Tracked>>,
}

/// Runs `cmd` to completion within `limit`, capturing its output; panics
/// (after killing it) if it takes longer or cannot start.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("netlab: cannot run {shown}: {e}"));
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("netlab: {shown} still running after {limit:?}");
            }
            Err(e) => panic!("netlab: waiting for {shown}: {e}"),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let o = run_bounded(cmd, CMD_TIMEOUT);
    assert!(
        o.status.success(),
        "netlab: {shown} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    o
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Panics with what is missing unless the lab can run here.
pub fn require_lab_tools() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "netlab: network namespaces need root (running as uid {uid}); run this test as root"
    );
    for (tool, args, package) in [
        ("ip", &["-V"][..], "iproute2"),
        ("nft", &["--version"][..], "nftables"),
        ("conntrack", &["--version"][..], "conntrack"),
    ] {
        let mut c = cmd(tool, args);
        let shown = format!("{c:?}");
        let ok = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .is_ok_and(|mut ch| {
                let deadline = Instant::now() + CMD_TIMEOUT;
                loop {
                    match ch.try_wait() {
                        Ok(Some(st)) => return st.success(),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        _ => {
                            let _ = ch.kill();
                            let _ = ch.wait();
                            return false;
                        }
                    }
                }
            });
        assert!(
            ok,
            "netlab: `{shown}` failed: install the Debian package {package} (scripts/deps.sh does)"
        );
    }
}

/// Whether process `pid` exists.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes lab namespaces whose creating process is gone (a test process
/// killed before its labs were dropped).
fn remove_orphans() {
    let o = run_bounded(&mut cmd("ip", &["netns", "list"]), CMD_TIMEOUT);
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, tail)) = rest.split_once('n') else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // Exactly our pattern: tlab<PID>n<COUNTER>-<role>.
        let ours = tail
            .split_once('-')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if ours && pid > 0 && !alive(pid) {
            // Processes a dead lab left in it (normally gone with their
            // parent: see PR_SET_PDEATHSIG in `exec_cmd`).
            let o = run_bounded(&mut cmd("ip", &["netns", "pids", name]), CMD_TIMEOUT);
            for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(p) = p.parse::<i32>() {
                    // SAFETY: kill by PID, of a process listed in a namespace
                    // only our labs create.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
            let _ = run_bounded(&mut cmd("ip", &["netns", "del", name]), CMD_TIMEOUT);
        }
    }
}

impl Lab {
    /// Builds the lab (see the module documentation); panics with the
    /// reason if it cannot.
    pub fn new(cfg: LabConfig) -> Lab {
        require_lab_tools();
        assert!(
            (1..=10).contains(&cfg.relays),
            "netlab: 1..=10 relays, not {}",
            cfg.relays
        );
        remove_orphans();
        let prefix = format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            relays: cfg.relays,
            port_ranges: Mutex::new([cfg.port_range; 2]),
            procs: Mutex::new(Vec::new()),
        };
        // Any panic below drops `lab`, which removes what was made so far.
        lab.build(&cfg);
        lab
    }

    fn add_ns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        run_ok(&mut cmd("ip", &["netns", "add", &name]));
        self.namespaces.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// `ip -n NS ARGS…`, which must succeed.
    fn ip(&self, ns: &str, args: &[&str]) {
        let mut c = cmd("ip", &["-n", ns]);
        c.args(args);
        run_ok(&mut c);
    }

    /// A veth pair from `a` (named `a_if`) to `b` (named `b_if`).
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.ip(
            a,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
        self.ip(a, &["link", "set", a_if, "up"]);
        self.ip(b, &["link", "set", b_if, "up"]);
    }

    fn build(&mut self, cfg: &LabConfig) {
        let wan = self.add_ns("wan");
        self.ip(&wan, &["link", "add", "br0", "type", "bridge"]);
        self.ip(&wan, &["link", "set", "br0", "up"]);
        for i in 0..cfg.relays {
            let ns = self.add_ns(&format!("relay{i}"));
            let port = format!("r{i}");
            self.veth(&wan, &port, &ns, "eth0");
            self.ip(&wan, &["link", "set", &port, "master", "br0"]);
            let addr = format!("{}/24", self.relay_ip(i));
            self.ip(&ns, &["addr", "add", &addr, "dev", "eth0"]);
        }
        for side in [Side::A, Side::B] {
            let nat = self.add_ns(&format!("nat{}", side.name()));
            let host = self.add_ns(&format!("host{}", side.name()));
            let port = format!("nat{}", side.name());
            self.veth(&wan, &port, &nat, "wan0");
            self.ip(&wan, &["link", "set", &port, "master", "br0"]);
            let wan_addr = format!("{}/24", self.nat_wan_ip(side));
            self.ip(&nat, &["addr", "add", &wan_addr, "dev", "wan0"]);
            self.veth(&nat, "lan0", &host, "eth0");
            let gw = self.gateway_ip(side);
            self.ip(&nat, &["addr", "add", &format!("{gw}/24"), "dev", "lan0"]);
            let host_addr = format!("{}/24", self.host_ip(side));
            self.ip(&host, &["addr", "add", &host_addr, "dev", "eth0"]);
            self.ip(&host, &["route", "add", "default", "via", &gw.to_string()]);
            for kv in ["net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_acct=1"] {
                run_ok(&mut cmd(
                    "ip",
                    &["netns", "exec", &nat, "sysctl", "-q", "-w", kv],
                ));
            }
            self.set_masquerade(side, cfg.port_range, false);
            if cfg.drop_unknown {
                run_ok(&mut cmd(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &nat,
                        "sysctl",
                        "-q",
                        "-w",
                        "net.netfilter.nf_conntrack_tcp_loose=0",
                    ],
                ));
                let script = format!(
                    "add table ip {FILTER_TABLE}\n\
                     add chain ip {FILTER_TABLE} labfwd \
                     {{ type filter hook forward priority filter; policy accept; }}\n\
                     add rule ip {FILTER_TABLE} labfwd ct state invalid drop\n\
                     add chain ip {FILTER_TABLE} labin \
                     {{ type filter hook input priority filter; policy accept; }}\n\
                     add rule ip {FILTER_TABLE} labin ct state invalid drop\n"
                );
                self.nft(side, &script);
            }
        }
    }

    /// Installs (or replaces) the NAT rule of `side`'s router.
    fn set_masquerade(&self, side: Side, (lo, hi): (u16, u16), replace: bool) {
        assert!(lo <= hi, "netlab: bad port range {lo}-{hi}");
        // One nft transaction: the old rule is gone and the new one in place
        // at the same moment.
        let mut script = if replace {
            format!("flush chain ip {NAT_TABLE} {NAT_CHAIN}\n")
        } else {
            format!(
                "add table ip {NAT_TABLE}\n\
                 add chain ip {NAT_TABLE} {NAT_CHAIN} \
                 {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
            )
        };
        script.push_str(&format!(
            "add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" meta l4proto {{ tcp, udp }} \
             masquerade to :{lo}-{hi}\n\
             add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" masquerade\n"
        ));
        self.nft(side, &script);
        self.port_ranges.lock().unwrap_or_else(|e| e.into_inner())[side as usize] = (lo, hi);
    }

    /// Runs an nft script in `side`'s NAT router (one transaction).
    fn nft(&self, side: Side, script: &str) {
        let file =
            TempFile(std::env::temp_dir().join(format!("{}-nat{}.nft", self.prefix, side.name())));
        std::fs::write(&file.0, script).expect("netlab: write nft script");
        let p = file.0.to_string_lossy().into_owned();
        run_ok(&mut self.exec_cmd(&self.nat_ns(side), "nft", &["-f", &p]));
    }

    /// The namespace prefix (`tlab<PID>n<COUNTER>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Namespace of the wan bridge.
    pub fn wan_ns(&self) -> String {
        format!("{}-wan", self.prefix)
    }

    /// Namespace of relay host `i`.
    pub fn relay_ns(&self, i: usize) -> String {
        assert!(i < self.relays, "netlab: no relay {i}");
        format!("{}-relay{i}", self.prefix)
    }

    /// Namespace of `side`'s NAT router.
    pub fn nat_ns(&self, side: Side) -> String {
        format!("{}-nat{}", self.prefix, side.name())
    }

    /// Namespace of `side`'s host.
    pub fn host_ns(&self, side: Side) -> String {
        format!("{}-host{}", self.prefix, side.name())
    }

    /// Relay host `i`'s address on the wan.
    pub fn relay_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 10 + i as u8)
    }

    /// `side`'s NAT router address on the wan (what the relays see).
    pub fn nat_wan_ip(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => Ipv4Addr::new(203, 0, 113, 21),
            Side::B => Ipv4Addr::new(203, 0, 113, 22),
        }
    }

    /// `side`'s NAT router address on its LAN (the host's gateway).
    pub fn gateway_ip(&self, side: Side) -> Ipv4Addr {
        let [a, b, c] = side.lan();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// `side`'s host address.
    pub fn host_ip(&self, side: Side) -> Ipv4Addr {
        let [a, b, c] = side.lan();
        Ipv4Addr::new(a, b, c, 2)
    }

    /// `side`'s NAT's current masquerade port range.
    pub fn port_range(&self, side: Side) -> (u16, u16) {
        self.port_ranges.lock().unwrap_or_else(|e| e.into_inner())[side as usize]
    }

    /// A command that runs `program args…` inside namespace `ns`; start it
    /// with [`spawn`](Self::spawn) (tracked) or [`run`](Self::run).
    pub fn exec_cmd(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        assert!(
            self.namespaces.iter().any(|n| n == ns),
            "netlab: {ns} is not a namespace of this lab"
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).args(args);
        // SAFETY: prctl is async-signal-safe. The process is killed if the
        // test thread that started it dies without dropping the lab (the
        // test process was killed).
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        c
    }

    /// Starts `cmd` (from [`exec_cmd`](Self::exec_cmd)); the process is
    /// killed when the lab is dropped. `ip netns exec` execs the program,
    /// so the child's PID is the program's.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let shown = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("netlab: cannot start {shown}: {e}"));
        let pid = child.id() as i32;
        // SAFETY: pidfd_open on our own unreaped child (it cannot be reaped
        // before we return it); the fd is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!("netlab: pidfd_open({pid}) for {shown}: {e}");
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Tracked {
                pid,
                pidfd,
                what: shown,
            });
        child
    }

    /// Runs `program args…` in `ns` to completion (bounded by
    /// [`CMD_TIMEOUT`]).
    pub fn run(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        run_bounded(&mut self.exec_cmd(ns, program, args), CMD_TIMEOUT)
    }

    /// Like [`run`](Self::run), but the command must succeed.
    pub fn run_ok(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        run_ok(&mut self.exec_cmd(ns, program, args))
    }

    /// Forgets every connection of `side`'s NAT (`conntrack -F`): the next
    /// packet of a flow is mapped afresh.
    pub fn flush_nat(&self, side: Side) {
        self.run_ok(&self.nat_ns(side), "conntrack", &["-F"]);
    }

    /// Deletes `side`'s NAT entries of TCP flows to `to` (`conntrack -D`);
    /// returns how many were deleted.
    pub fn break_flow(&self, side: Side, to: SocketAddr) -> usize {
        let ip = to.ip().to_string();
        let port = to.port().to_string();
        let o = self.run(
            &self.nat_ns(side),
            "conntrack",
            &["-D", "-p", "tcp", "--orig-dst", &ip, "--dport", &port],
        );
        // "conntrack v…: N flow entries have been deleted." (status 1 if 0).
        let text = String::from_utf8_lossy(&o.stderr);
        text.split_whitespace()
            .zip(text.split_whitespace().skip(1))
            .find(|(_, w)| *w == "flow")
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("netlab: unexpected conntrack -D output: {text}"))
    }

    /// Replaces `side`'s masquerade rule with port range `range`, then
    /// flushes its conntrack table so the next packet of every flow gets a
    /// port from the new range.
    pub fn change_port_range(&self, side: Side, range: (u16, u16)) {
        self.set_masquerade(side, range, true);
        self.flush_nat(side);
    }

    /// `side`'s NAT's TCP flows (`conntrack -L -p tcp`).
    pub fn flows(&self, side: Side) -> Vec<Flow> {
        let o = self.run_ok(&self.nat_ns(side), "conntrack", &["-L", "-p", "tcp"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(parse_flow)
            .collect()
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets created there
    /// stay in it): for test-side sockets in the lab.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        assert!(
            self.namespaces.iter().any(|n| n == ns),
            "netlab: {ns} is not a namespace of this lab"
        );
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("netlab: {path}: {e}"));
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open nsfs file.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                r,
                0,
                "netlab: setns {path}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Parses one `conntrack -L` line of a TCP flow.
fn parse_flow(line: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    if words.next()? != "tcp" {
        return None;
    }
    let state = words.nth(2)?.to_string();
    let mut kv: Vec<(&str, &str)> = Vec::new();
    for w in line.split_whitespace() {
        if let Some(p) = w.split_once('=') {
            kv.push(p);
        }
    }
    // Original direction first, then the reply direction.
    let nth = |key: &str, n: usize| kv.iter().filter(|(k, _)| *k == key).nth(n).map(|(_, v)| *v);
    let addr = |ip: &str, ipn: usize, port: &str, portn: usize| -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(
            nth(ip, ipn)?.parse().ok()?,
            nth(port, portn)?.parse().ok()?,
        ))
    };
    Some(Flow {
        state,
        orig_src: addr("src", 0, "sport", 0)?,
        orig_dst: addr("dst", 0, "dport", 0)?,
        mapped: addr("dst", 1, "dport", 1)?,
        bytes_out: nth("bytes", 0).and_then(|v| v.parse().ok()).unwrap_or(0),
        bytes_in: nth("bytes", 1).and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &procs {
            // SAFETY: a pidfd we own; signalling an exited process fails
            // harmlessly (ESRCH), a recycled PID is never hit.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    p.pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
        for p in &procs {
            // The pidfd turns readable when the process has exited.
            let mut pfd = libc::pollfd {
                fd: p.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
            if n != 1 {
                eprintln!(
                    "netlab: process {} ({}) did not exit within 5 s of SIGKILL",
                    p.pid, p.what
                );
            }
            // Not reaped here: the test may still wait for its Child (an
            // exited process holds no namespace).
        }
        for ns in self.namespaces.iter().rev() {
            let mut c = cmd("ip", &["netns", "del", ns]);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_bounded(&mut c, CMD_TIMEOUT)
            }));
            match r {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "netlab: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(_) => eprintln!("netlab: ip netns del {ns} did not finish"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conntrack_line() {
        let f = parse_flow(
            "tcp      6 119 ESTABLISHED src=198.51.100.2 dst=203.0.113.10 sport=39316 \
             dport=33445 packets=6 bytes=325 src=203.0.113.10 dst=203.0.113.21 \
             sport=33445 dport=20185 packets=4 bytes=216 [ASSURED] mark=0 use=1",
        )
        .expect("flow");
        assert_eq!(f.state, "ESTABLISHED");
        assert_eq!(f.orig_src, "198.51.100.2:39316".parse().unwrap());
        assert_eq!(f.orig_dst, "203.0.113.10:33445".parse().unwrap());
        assert_eq!(f.mapped, "203.0.113.21:20185".parse().unwrap());
        assert_eq!((f.bytes_out, f.bytes_in), (325, 216));
        assert!(parse_flow("udp 17 29 src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2").is_none());
    }
}
