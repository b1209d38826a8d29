//! A network-namespace lab for real-process tests: two peers, each behind
//! its own NAT router (or both behind one), relay hosts and optionally a
//! STUN host on a shared "wan".
//!
//! ```text
//!                wan namespace: bridge br0, 203.0.113.0/24 (no uplink)
//!   ┌───────────────┬──────────────┬───────────────┬──────────────────┬──────────────────┐
//!  relay 0        relay 1 …       stun (optional)  natA 203.0.113.21   natB 203.0.113.22
//!  203.0.113.10   203.0.113.11    203.0.113.30      │ 198.51.100.1      │ 192.0.2.1
//!                                                  hostA 198.51.100.2  hostB 192.0.2.2
//! ```
//!
//! With [`LabConfig::same_lan`] there is no natB: a switch namespace (`lan`,
//! bridge br0) joins natA's LAN side (port `gw`) and both hosts (ports `hA`,
//! `hB`; hostB is 198.51.100.3), and a bridge-family nftables table there
//! counts what crosses between the two hosts ([`Lab::lan_counters`]).
//!
//! Each NAT router forwards between its LAN and the wan and masquerades
//! what leaves on the wan, per [`Mapping`]: by default TCP and UDP to a
//! configurable source-port range (`masquerade to :20000-20999`), or
//! port-preserving (plain `masquerade`), or symmetric
//! (`masquerade fully-random`); conntrack byte counters are on
//! (`nf_conntrack_acct`). Optionally on each NAT's wan link: random loss in
//! both directions (a netdev table, `numgen random mod 1000 < N drop`, with
//! counters), a delay (netem, only where the kernel has it) and an uplink
//! rate (tbf). A host's UDP can be blocked and unblocked by a firewall rule
//! on the host or on its NAT ([`Lab::block_udp`]). The STUN host runs
//! coturn (`turnserver --stun-only`, [`Lab::start_coturn`]).
//!
//! Hosts route by default through their NAT; NATs have no default route and
//! the wan bridge no uplink, so no packet leaves the lab. Only documentation
//! address ranges are used.
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
//! - a missing component (not root, `ip`/`nft`/`conntrack`/`tc` missing,
//!   coturn's `turnserver` when a test starts it) panics with what to
//!   install: a test using the lab fails, never skips.

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
/// nftables table of the routers' own firewall ([`LabConfig::router_firewall`]).
const ROUTER_TABLE: &str = "tlabrouter";
/// nftables (netdev) table of the wan loss rules, in each NAT.
const LOSS_TABLE: &str = "tlabloss";
/// nftables (inet) table of the UDP firewall of [`Lab::block_udp`].
const FIREWALL_TABLE: &str = "tlabfw";
/// nftables (bridge) table of the LAN counters of a same-LAN lab.
const LAN_TABLE: &str = "tlablan";
/// The STUN host's address on the wan.
const STUN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
/// coturn's port (the STUN host's namespace is private, so a fixed port
/// collides with nothing).
pub const COTURN_PORT: u16 = 3478;

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

/// How a NAT router chooses the wan source port of a LAN socket's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `masquerade to :LO-HI`, the lab's [`LabConfig::port_range`] (the
    /// default). A source port outside the range (every ephemeral port of
    /// the hosts) gets a random port of the range per new flow, so one
    /// socket has a different wan port towards each destination: as
    /// symmetric as [`Mapping::Symmetric`].
    Range,
    /// Plain `masquerade`: the source port is kept when that wan address
    /// and port is free towards the destination, so one socket has the
    /// same wan address and port towards every destination
    /// (endpoint-independent mapping). Filtering stays address-and-port
    /// dependent (conntrack lets in only replies to flows sent out), and
    /// there is no hairpinning.
    PortPreserving,
    /// `masquerade fully-random`: a random wan port per new flow, so one
    /// socket has a different wan port towards each destination.
    Symmetric,
}

/// Where [`Lab::block_udp`] drops a host's UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallAt {
    /// On the host itself (output and input on its LAN interface): its
    /// sends fail with EPERM, nothing comes in.
    Host,
    /// On the host's NAT router (forward): dropped silently both ways.
    Nat,
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
    /// The NAT routers drop what comes from the wan for the router itself
    /// and belongs to no flow (`iifname wan0 ct state new drop` in input),
    /// as the firewall of a home router does. Without it (the default) a
    /// router answers such a packet itself (ICMP port unreachable, TCP
    /// RST) and conntrack keeps an entry for it; a packet from a peer
    /// that arrives before the host's first packet to that peer then
    /// holds the tuple, and the host's flow to the peer loses its port
    /// even on a [`Mapping::PortPreserving`] NAT (the NAT picks another).
    pub router_firewall: bool,
    /// How the NAT of A (`[0]`) and of B (`[1]`) maps ports; with
    /// `same_lan` only `[0]` counts.
    pub mapping: [Mapping; 2],
    /// Both hosts behind A's NAT on one LAN (see the module documentation).
    pub same_lan: bool,
    /// Random loss on each NAT's wan link, in each direction, per 1000
    /// packets (0: none). With loss every lab interface sends single
    /// packets (`gso_max_segs 1`), so the rules drop packets, not GSO
    /// trains.
    pub wan_loss_per_mille: u32,
    /// Delay added to what leaves each NAT on the wan (netem), if the
    /// kernel has netem ([`Lab::has_netem`]); ignored otherwise.
    pub wan_delay_ms: u32,
    /// Each NAT's wan uplink (what leaves on the wan) limited to this many
    /// kbit/s (tbf, 50 ms of queue); `None`: unlimited.
    pub uplink_kbit: Option<u32>,
    /// A STUN host on the wan (namespace `stun`, [`Lab::stun_ip`]), for
    /// [`Lab::start_coturn`].
    pub stun_host: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            relays: 1,
            port_range: (20000, 20999),
            drop_unknown: false,
            router_firewall: false,
            mapping: [Mapping::Range; 2],
            same_lan: false,
            wan_loss_per_mille: 0,
            wan_delay_ms: 0,
            uplink_kbit: None,
            stun_host: false,
        }
    }
}

/// Bytes (and packets) a same-LAN lab's switch forwarded, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LanCounters {
    /// UDP from host A to host B, (packets, bytes).
    pub udp_a_to_b: (u64, u64),
    /// UDP from host B to host A.
    pub udp_b_to_a: (u64, u64),
    /// IPv4 from host A to the NAT router (to the wan).
    pub a_to_router: (u64, u64),
    /// IPv4 from host B to the NAT router.
    pub b_to_router: (u64, u64),
}

/// A coturn STUN server started by [`Lab::start_coturn`] (killed with the
/// lab).
#[derive(Debug, Clone)]
pub struct Coturn {
    /// Where it answers STUN (UDP).
    pub addr: SocketAddr,
    /// Its log (`--log-binding`: one line per Binding request).
    pub log: std::path::PathBuf,
}

impl Coturn {
    /// The sources of the UDP endpoints coturn saw ("New UDP endpoint …
    /// remote addr IP:PORT"), in order, without repeats.
    pub fn clients(&self) -> Vec<SocketAddrV4> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut v: Vec<SocketAddrV4> = Vec::new();
        for l in text.lines().filter(|l| l.contains("New UDP endpoint")) {
            if let Some(a) = l
                .split("remote addr ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.trim_end_matches(',').parse().ok())
            {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
        }
        v
    }

    /// How many Binding requests coturn answered with success.
    pub fn bindings_answered(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("BINDING processed, success"))
            .count()
    }
}

/// A TCP or UDP conntrack entry of a NAT router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// TCP state (ESTABLISHED, TIME_WAIT, …); empty for UDP.
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
    same_lan: bool,
    stun_host: bool,
    netem: bool,
    /// Every interface sends single packets (no GSO): set with wan loss.
    no_gso: bool,
    port_ranges: Mutex<[(u16, u16); 2]>,
    mappings: Mutex<[Mapping; 2]>,
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
        ("tc", &["-V"][..], "iproute2"),
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
            same_lan: cfg.same_lan,
            stun_host: cfg.stun_host,
            netem: false,
            no_gso: cfg.wan_loss_per_mille > 0,
            port_ranges: Mutex::new([cfg.port_range; 2]),
            mappings: Mutex::new(cfg.mapping),
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
        if self.no_gso {
            // The loss rules see what the interfaces send: a GSO train of
            // up to 64 KiB would be one packet to them (a burst lost).
            self.ip(a, &["link", "set", a_if, "gso_max_segs", "1"]);
            self.ip(b, &["link", "set", b_if, "gso_max_segs", "1"]);
        }
        self.ip(a, &["link", "set", a_if, "up"]);
        self.ip(b, &["link", "set", b_if, "up"]);
    }

    /// `ip netns exec NS sysctl -q -w KV`, which must succeed.
    fn sysctl(&self, ns: &str, kv: &str) {
        run_ok(&mut cmd(
            "ip",
            &["netns", "exec", ns, "sysctl", "-q", "-w", kv],
        ));
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
        if cfg.stun_host {
            let ns = self.add_ns("stun");
            self.veth(&wan, "s0", &ns, "eth0");
            self.ip(&wan, &["link", "set", "s0", "master", "br0"]);
            self.ip(
                &ns,
                &["addr", "add", &format!("{STUN_IP}/24"), "dev", "eth0"],
            );
        }
        let nat_sides: &[Side] = if cfg.same_lan {
            &[Side::A]
        } else {
            &[Side::A, Side::B]
        };
        for &side in nat_sides {
            let nat = self.add_ns(&format!("nat{}", side.name()));
            let port = format!("nat{}", side.name());
            self.veth(&wan, &port, &nat, "wan0");
            self.ip(&wan, &["link", "set", &port, "master", "br0"]);
            let wan_addr = format!("{}/24", self.nat_wan_ip(side));
            self.ip(&nat, &["addr", "add", &wan_addr, "dev", "wan0"]);
            for kv in ["net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_acct=1"] {
                self.sysctl(&nat, kv);
            }
            let mapping = cfg.mapping[side as usize];
            self.set_masquerade(side, mapping, cfg.port_range, false);
            if cfg.drop_unknown {
                self.sysctl(&nat, "net.netfilter.nf_conntrack_tcp_loose=0");
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
            if cfg.router_firewall {
                // A dropped packet's conntrack entry is never confirmed.
                let script = format!(
                    "add table ip {ROUTER_TABLE}\n\
                     add chain ip {ROUTER_TABLE} wanin \
                     {{ type filter hook input priority filter; policy accept; }}\n\
                     add rule ip {ROUTER_TABLE} wanin iifname \"wan0\" ct state new drop\n"
                );
                self.nft(side, &script);
            }
            self.wan_link(side, cfg);
        }
        if cfg.same_lan {
            // natA's LAN side, both hosts: ports of one switch.
            let nat = self.nat_ns(Side::A);
            let lan = self.add_ns("lan");
            self.ip(&lan, &["link", "add", "br0", "type", "bridge"]);
            self.ip(&lan, &["link", "set", "br0", "up"]);
            self.veth(&lan, "gw", &nat, "lan0");
            self.ip(&lan, &["link", "set", "gw", "master", "br0"]);
            for side in [Side::A, Side::B] {
                let host = self.add_ns(&format!("host{}", side.name()));
                let port = format!("h{}", side.name());
                self.veth(&lan, &port, &host, "eth0");
                self.ip(&lan, &["link", "set", &port, "master", "br0"]);
            }
            let script = format!(
                "add table bridge {LAN_TABLE}\n\
                 add counter bridge {LAN_TABLE} udp_a_to_b\n\
                 add counter bridge {LAN_TABLE} udp_b_to_a\n\
                 add counter bridge {LAN_TABLE} a_to_router\n\
                 add counter bridge {LAN_TABLE} b_to_router\n\
                 add chain bridge {LAN_TABLE} lanfwd \
                 {{ type filter hook forward priority filter; policy accept; }}\n\
                 add rule bridge {LAN_TABLE} lanfwd iifname \"hA\" oifname \"hB\" meta l4proto udp \
                 counter name \"udp_a_to_b\"\n\
                 add rule bridge {LAN_TABLE} lanfwd iifname \"hB\" oifname \"hA\" meta l4proto udp \
                 counter name \"udp_b_to_a\"\n\
                 add rule bridge {LAN_TABLE} lanfwd iifname \"hA\" oifname \"gw\" ether type ip \
                 counter name \"a_to_router\"\n\
                 add rule bridge {LAN_TABLE} lanfwd iifname \"hB\" oifname \"gw\" ether type ip \
                 counter name \"b_to_router\"\n"
            );
            self.nft_in(&lan, "lan", &script);
        } else {
            for side in [Side::A, Side::B] {
                let nat = self.nat_ns(side);
                let host = self.add_ns(&format!("host{}", side.name()));
                self.veth(&nat, "lan0", &host, "eth0");
            }
        }
        for side in [Side::A, Side::B] {
            let (nat, host) = (self.nat_ns(side), self.host_ns(side));
            let gw = self.gateway_ip(side);
            if side == Side::A || !cfg.same_lan {
                self.ip(&nat, &["addr", "add", &format!("{gw}/24"), "dev", "lan0"]);
            }
            let host_addr = format!("{}/24", self.host_ip(side));
            self.ip(&host, &["addr", "add", &host_addr, "dev", "eth0"]);
            self.ip(&host, &["route", "add", "default", "via", &gw.to_string()]);
        }
    }

    /// Loss, delay and rate on `side`'s NAT's wan link, per `cfg`.
    fn wan_link(&mut self, side: Side, cfg: &LabConfig) {
        let nat = self.nat_ns(side);
        if cfg.wan_loss_per_mille > 0 {
            let n = cfg.wan_loss_per_mille;
            assert!(n <= 1000, "netlab: loss {n} per mille");
            let mut script = format!(
                "add table netdev {LOSS_TABLE}\n\
                 add counter netdev {LOSS_TABLE} lost_in\n\
                 add counter netdev {LOSS_TABLE} lost_out\n"
            );
            for (dir, hook) in [("in", "ingress"), ("out", "egress")] {
                script.push_str(&format!(
                    "add chain netdev {LOSS_TABLE} loss{dir} \
                     {{ type filter hook {hook} device \"wan0\" priority filter; policy accept; }}\n\
                     add rule netdev {LOSS_TABLE} loss{dir} numgen random mod 1000 < {n} \
                     counter name \"lost_{dir}\" drop\n"
                ));
            }
            self.nft(side, &script);
        }
        let mut parent = vec!["root"];
        if cfg.wan_delay_ms > 0 {
            let delay = format!("{}ms", cfg.wan_delay_ms);
            let o = self.run(
                &nat,
                "tc",
                &[
                    "qdisc", "add", "dev", "wan0", "root", "handle", "1:", "netem", "delay", &delay,
                ],
            );
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                self.netem = true;
                parent = vec!["parent", "1:1"];
            } else if err.contains("unknown") || err.contains("Unknown") {
                // This kernel has no netem: no delay (Lab::has_netem).
                self.netem = false;
            } else {
                panic!("netlab: tc qdisc add … netem in {nat}: {}", err.trim());
            }
        }
        if let Some(kbit) = cfg.uplink_kbit {
            assert!(kbit >= 64, "netlab: uplink of {kbit} kbit/s");
            // The bucket holds 10 ms of the rate, at least a few packets.
            let burst = format!("{}", (kbit as u64 * 1000 / 8 / 100).max(8 * 1514));
            let rate = format!("{kbit}kbit");
            let mut args = vec!["qdisc", "add", "dev", "wan0"];
            args.extend(&parent);
            args.extend([
                "handle", "10:", "tbf", "rate", &rate, "burst", &burst, "latency", "50ms",
            ]);
            self.run_ok(&nat, "tc", &args);
        }
    }

    /// Installs (or replaces) the NAT rule of `side`'s router: `mapping`,
    /// with `range` for [`Mapping::Range`].
    fn set_masquerade(&self, side: Side, mapping: Mapping, (lo, hi): (u16, u16), replace: bool) {
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
        let how = match mapping {
            Mapping::Range => format!("masquerade to :{lo}-{hi}"),
            Mapping::PortPreserving => "masquerade".to_string(),
            Mapping::Symmetric => "masquerade fully-random".to_string(),
        };
        script.push_str(&format!(
            "add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" meta l4proto {{ tcp, udp }} {how}\n\
             add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" masquerade\n"
        ));
        self.nft(side, &script);
        let i = self.nat_side(side) as usize;
        self.port_ranges.lock().unwrap_or_else(|e| e.into_inner())[i] = (lo, hi);
        self.mappings.lock().unwrap_or_else(|e| e.into_inner())[i] = mapping;
    }

    /// Runs an nft script in `side`'s NAT router (one transaction).
    fn nft(&self, side: Side, script: &str) {
        self.nft_in(&self.nat_ns(side), &format!("nat{}", side.name()), script);
    }

    /// Runs an nft script in namespace `ns` (one transaction); `tag` names
    /// the script's temporary file.
    fn nft_in(&self, ns: &str, tag: &str, script: &str) {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let file = TempFile(std::env::temp_dir().join(format!("{}-{tag}-{n}.nft", self.prefix)));
        std::fs::write(&file.0, script).expect("netlab: write nft script");
        let p = file.0.to_string_lossy().into_owned();
        run_ok(&mut self.exec_cmd(ns, "nft", &["-f", &p]));
    }

    /// (packets, bytes) of named counter `name` of nftables table
    /// `family table` in `ns`.
    fn nft_counter(&self, ns: &str, family: &str, table: &str, name: &str) -> (u64, u64) {
        let o = self.run_ok(ns, "nft", &["list", "counter", family, table, name]);
        let text = String::from_utf8_lossy(&o.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |key: &str| {
            words
                .windows(2)
                .find(|w| w[0] == key)
                .and_then(|w| w[1].parse::<u64>().ok())
                .unwrap_or_else(|| panic!("netlab: no {key} in `nft list counter`: {text}"))
        };
        (after("packets"), after("bytes"))
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

    /// The side whose NAT router `side` is behind (A for both in a
    /// same-LAN lab).
    fn nat_side(&self, side: Side) -> Side {
        if self.same_lan {
            Side::A
        } else {
            side
        }
    }

    /// Namespace of `side`'s NAT router (A's for both in a same-LAN lab).
    pub fn nat_ns(&self, side: Side) -> String {
        format!("{}-nat{}", self.prefix, self.nat_side(side).name())
    }

    /// Namespace of the STUN host (a lab with [`LabConfig::stun_host`]).
    pub fn stun_ns(&self) -> String {
        assert!(
            self.stun_host,
            "netlab: no STUN host (LabConfig::stun_host)"
        );
        format!("{}-stun", self.prefix)
    }

    /// The STUN host's address on the wan.
    pub fn stun_ip(&self) -> Ipv4Addr {
        STUN_IP
    }

    /// Namespace of the switch of a same-LAN lab.
    pub fn lan_ns(&self) -> String {
        assert!(self.same_lan, "netlab: not a same-LAN lab");
        format!("{}-lan", self.prefix)
    }

    /// Whether the hosts share one LAN behind one NAT.
    pub fn same_lan(&self) -> bool {
        self.same_lan
    }

    /// Whether the kernel has netem, so [`LabConfig::wan_delay_ms`] took
    /// effect (known once a lab with a delay was built).
    pub fn has_netem(&self) -> bool {
        self.netem
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
        match self.nat_side(side) {
            Side::A => Ipv4Addr::new(203, 0, 113, 21),
            Side::B => Ipv4Addr::new(203, 0, 113, 22),
        }
    }

    /// `side`'s NAT router address on its LAN (the host's gateway).
    pub fn gateway_ip(&self, side: Side) -> Ipv4Addr {
        let [a, b, c] = self.nat_side(side).lan();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// `side`'s host address (on a shared LAN, B is .3).
    pub fn host_ip(&self, side: Side) -> Ipv4Addr {
        let [a, b, c] = self.nat_side(side).lan();
        let last = if self.same_lan && side == Side::B {
            3
        } else {
            2
        };
        Ipv4Addr::new(a, b, c, last)
    }

    /// `side`'s NAT's current masquerade port range (used by
    /// [`Mapping::Range`]).
    pub fn port_range(&self, side: Side) -> (u16, u16) {
        self.port_ranges.lock().unwrap_or_else(|e| e.into_inner())[self.nat_side(side) as usize]
    }

    /// `side`'s NAT's current mapping.
    pub fn mapping(&self, side: Side) -> Mapping {
        self.mappings.lock().unwrap_or_else(|e| e.into_inner())[self.nat_side(side) as usize]
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
        self.set_masquerade(side, Mapping::Range, range, true);
        self.flush_nat(side);
    }

    /// Replaces `side`'s NAT rule with `mapping` (keeping the port range),
    /// then flushes its conntrack table.
    pub fn change_mapping(&self, side: Side, mapping: Mapping) {
        self.set_masquerade(side, mapping, self.port_range(side), true);
        self.flush_nat(side);
    }

    /// `side`'s NAT's UDP flows (`conntrack -L -p udp`); `state` is empty.
    pub fn udp_flows(&self, side: Side) -> Vec<Flow> {
        let o = self.run_ok(&self.nat_ns(side), "conntrack", &["-L", "-p", "udp"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| parse_flow_of(l, "udp"))
            .collect()
    }

    /// Packets the wan loss rules of `side`'s NAT dropped so far: (coming
    /// in from the wan, going out to it); (0, 0) without loss.
    pub fn wan_losses(&self, side: Side) -> (u64, u64) {
        let ns = self.nat_ns(side);
        let o = self.run_ok(&ns, "nft", &["list", "tables"]);
        if !String::from_utf8_lossy(&o.stdout).contains(LOSS_TABLE) {
            return (0, 0);
        }
        let n = |c: &str| self.nft_counter(&ns, "netdev", LOSS_TABLE, c).0;
        (n("lost_in"), n("lost_out"))
    }

    /// What a same-LAN lab's switch forwarded so far.
    pub fn lan_counters(&self) -> LanCounters {
        let ns = self.lan_ns();
        let c = |name: &str| self.nft_counter(&ns, "bridge", LAN_TABLE, name);
        LanCounters {
            udp_a_to_b: c("udp_a_to_b"),
            udp_b_to_a: c("udp_b_to_a"),
            a_to_router: c("a_to_router"),
            b_to_router: c("b_to_router"),
        }
    }

    /// The namespace and the nft rules of `side`'s UDP firewall at `at`.
    fn firewall(&self, side: Side, at: FirewallAt) -> (String, String) {
        let t = FIREWALL_TABLE;
        match at {
            FirewallAt::Host => (
                self.host_ns(side),
                format!(
                    "add chain inet {t} fwout \
                     {{ type filter hook output priority filter; policy accept; }}\n\
                     add rule inet {t} fwout oifname \"eth0\" meta l4proto udp counter name \"dropped\" drop\n\
                     add chain inet {t} fwin \
                     {{ type filter hook input priority filter; policy accept; }}\n\
                     add rule inet {t} fwin iifname \"eth0\" meta l4proto udp counter name \"dropped\" drop\n"
                ),
            ),
            FirewallAt::Nat => {
                let ip = self.host_ip(side);
                (
                    self.nat_ns(side),
                    format!(
                        "add chain inet {t} fwfwd \
                         {{ type filter hook forward priority filter; policy accept; }}\n\
                         add rule inet {t} fwfwd ip saddr {ip} meta l4proto udp counter name \"dropped\" drop\n\
                         add rule inet {t} fwfwd ip daddr {ip} meta l4proto udp counter name \"dropped\" drop\n"
                    ),
                )
            }
        }
    }

    /// Drops every UDP packet of `side`'s host from now on, at `at` (see
    /// [`FirewallAt`]); TCP (the relay links) is untouched. Blocking again
    /// restarts the count.
    pub fn block_udp(&self, side: Side, at: FirewallAt) {
        let (ns, rules) = self.firewall(side, at);
        let t = FIREWALL_TABLE;
        // Any earlier block goes in the same transaction.
        let script = format!(
            "add table inet {t}\ndelete table inet {t}\nadd table inet {t}\n\
             add counter inet {t} dropped\n{rules}"
        );
        self.nft_in(&ns, "fw", &script);
    }

    /// Lets `side`'s UDP through again at `at`; returns how many packets
    /// the block dropped (0 if there was none).
    pub fn unblock_udp(&self, side: Side, at: FirewallAt) -> u64 {
        let (ns, _) = self.firewall(side, at);
        let t = FIREWALL_TABLE;
        let o = self.run_ok(&ns, "nft", &["list", "tables"]);
        if !String::from_utf8_lossy(&o.stdout).contains(t) {
            return 0;
        }
        let dropped = self.nft_counter(&ns, "inet", t, "dropped").0;
        self.nft_in(&ns, "fw", &format!("delete table inet {t}\n"));
        dropped
    }

    /// Starts coturn as a STUN-only server on the STUN host
    /// ([`COTURN_PORT`]; no configuration file, no database of ours: `-n`,
    /// its SQLite user database in `dir`), logging every Binding request to
    /// `dir/coturn.log`; returns once it answers a Binding request (≤ 10 s).
    /// Panics naming the package if `turnserver` is missing.
    pub fn start_coturn(&self, dir: &std::path::Path) -> Coturn {
        let ns = self.stun_ns();
        let ip = STUN_IP.to_string();
        let port = COTURN_PORT.to_string();
        let log = dir.join("coturn.log");
        let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        let (log_s, pid_s, db_s) = (
            s(log.clone()),
            s(dir.join("coturn.pid")),
            s(dir.join("coturn.db")),
        );
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| d.join("turnserver").is_file())
        });
        assert!(
            found,
            "netlab: `turnserver` not found: install the Debian package coturn \
             (scripts/deps.sh does)"
        );
        let out = std::fs::File::create(dir.join("coturn.out")).expect("netlab: coturn.out");
        let err = out.try_clone().expect("netlab: coturn.out");
        let mut c = self.exec_cmd(
            &ns,
            "turnserver",
            &[
                "-n",
                "--stun-only",
                "--listening-ip",
                &ip,
                "--listening-port",
                &port,
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-software-attribute",
                "--log-binding",
                // Without -v the Binding lines are not logged (coturn 4.6).
                "-v",
                "--no-stdout-log",
                "--simple-log",
                "--log-file",
                &log_s,
                "--pidfile",
                &pid_s,
                "--userdb",
                &db_s,
            ],
        );
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = self.spawn(&mut c);
        let addr = SocketAddr::from((STUN_IP, COTURN_PORT));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.in_ns(&ns, move || {
                let sock = std::net::UdpSocket::bind((STUN_IP, 0)).ok()?;
                stun_binding(&sock, addr, Duration::from_millis(300))
            });
            if answer.is_some() {
                break;
            }
            let text = || {
                let mut t = std::fs::read_to_string(dir.join("coturn.out")).unwrap_or_default();
                t.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
                t
            };
            if let Ok(Some(st)) = child.try_wait() {
                panic!("netlab: coturn exited ({st}):\n{}", text());
            }
            assert!(
                Instant::now() < deadline,
                "netlab: coturn answered no STUN Binding request within 10 s:\n{}",
                text()
            );
        }
        Coturn { addr, log }
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

/// Sends STUN Binding requests (RFC 5389, no attributes) from `sock` to
/// `server` every 100 ms until an answer with the same transaction id comes
/// or `limit` passes; returns its XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS):
/// where `server` saw `sock`.
pub fn stun_binding(
    sock: &std::net::UdpSocket,
    server: SocketAddr,
    limit: Duration,
) -> Option<SocketAddrV4> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    let mut req = [0u8; 20];
    req[1] = 0x01; // Binding request
    req[4..8].copy_from_slice(&COOKIE);
    let id: [u8; 12] = std::array::from_fn(|i| {
        (std::process::id() as u8)
            ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u8)
            ^ (i as u8).wrapping_mul(37)
    });
    req[8..20].copy_from_slice(&id);
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&req, server).ok()?;
        let step = Instant::now() + Duration::from_millis(100);
        while Instant::now() < step.min(deadline) {
            let left = step.min(deadline).saturating_duration_since(Instant::now());
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            let m = &buf[..n];
            // Binding success response with our transaction id.
            if from != server || n < 20 || m[0..2] != [0x01, 0x01] || m[8..20] != id {
                continue;
            }
            let mut at = 20;
            let mut plain = None;
            while at + 4 <= n {
                let kind = u16::from_be_bytes([m[at], m[at + 1]]);
                let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
                let v = m.get(at + 4..at + 4 + len)?;
                // Family 1 (IPv4): port (2), address (4).
                if len == 8 && v[1] == 1 {
                    let port = u16::from_be_bytes([v[2], v[3]]);
                    let ip = [v[4], v[5], v[6], v[7]];
                    if kind == 0x0020 {
                        let port = port ^ 0x2112;
                        let ip: [u8; 4] = std::array::from_fn(|i| ip[i] ^ COOKIE[i]);
                        return Some(SocketAddrV4::new(ip.into(), port));
                    }
                    if kind == 0x0001 {
                        plain = Some(SocketAddrV4::new(ip.into(), port));
                    }
                }
                at += 4 + len.div_ceil(4) * 4;
            }
            return plain;
        }
    }
    None
}

/// Parses one `conntrack -L` line of a TCP flow.
fn parse_flow(line: &str) -> Option<Flow> {
    parse_flow_of(line, "tcp")
}

/// Parses one `conntrack -L` line of a `proto` ("tcp" or "udp") flow; a
/// UDP flow's `state` is empty.
fn parse_flow_of(line: &str, proto: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    if words.next()? != proto {
        return None;
    }
    let state = if proto == "tcp" {
        words.nth(2)?.to_string()
    } else {
        String::new()
    };
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

    #[test]
    fn parses_a_conntrack_udp_line() {
        let line = "udp      17 29 src=198.51.100.2 dst=203.0.113.30 sport=41000 dport=3478 \
                    packets=1 bytes=48 src=203.0.113.30 dst=203.0.113.21 sport=3478 \
                    dport=53211 packets=1 bytes=88 mark=0 use=1";
        let f = parse_flow_of(line, "udp").expect("flow");
        assert_eq!(f.state, "");
        assert_eq!(f.orig_src, "198.51.100.2:41000".parse().unwrap());
        assert_eq!(f.orig_dst, "203.0.113.30:3478".parse().unwrap());
        assert_eq!(f.mapped, "203.0.113.21:53211".parse().unwrap());
        assert_eq!((f.bytes_out, f.bytes_in), (48, 88));
        assert!(parse_flow(line).is_none(), "not TCP");
        let unreplied = "udp 17 29 src=198.51.100.2 dst=203.0.113.10 sport=41000 dport=9 \
                         packets=1 bytes=29 [UNREPLIED] src=203.0.113.10 dst=203.0.113.21 \
                         sport=9 dport=41000 packets=0 bytes=0 mark=0 use=1";
        let f = parse_flow_of(unreplied, "udp").expect("flow");
        assert_eq!(f.mapped, "203.0.113.21:41000".parse().unwrap());
    }
}
