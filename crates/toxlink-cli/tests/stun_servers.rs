//! Issue 15, reflexive addresses by STUN, with real servers in the
//! network-namespace lab (tests/common/netlab.rs): host A behind its
//! masquerading NAT runs `toxlink stun-probe` (the node's `StunClient` over
//! one UDP socket) against
//!
//! - coturn (`turnserver --stun-only`, Debian's `coturn`: a STUN server we
//!   did not write) on relay host 0, port 3478, and
//! - `toxlink relay` on relay host 1, whose STUN service listens by
//!   default on the TCP port numbers (33445 here),
//!
//! and must see the NAT's wan address with a port of its masquerade range
//! from each, from one local socket (both mappings are reported; whether
//! they differ is what `mapping varies` says). From relay host 1 itself
//! (no NAT) coturn must report exactly the probe's own address and port.
//! Relay host 2 runs `toxlink relay --stun ADDR` (explicit address) next
//! to one with `--no-stun`; neither answers on its TCP port number. Last,
//! A's NAT is made to map per destination (nftables `masquerade random`)
//! and three servers must see three mappings: `mapping varies`.
//!
//! The relay's STUN counters are read back through SIGUSR1. Every process
//! is started through the lab (killed by pidfd when it drops); every wait
//! is bounded. Needs root, iproute2, nftables, conntrack and coturn, and
//! fails (never skips) without them.

mod common;

use common::netlab::{run_bounded, Lab, LabConfig, Side, CMD_TIMEOUT};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// coturn's port.
const TURN_PORT: u16 = 3478;
/// `toxlink relay`'s TCP port (its STUN port by default).
const RELAY_PORT: u16 = 33445;
/// The lab's nftables NAT table and chain (tests/common/netlab.rs).
const NAT_TABLE: &str = "tlabnat";
const NAT_CHAIN: &str = "post";
/// A server must be listening within this.
const START_WAIT: Duration = Duration::from_secs(20);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_toxlink")
}

/// Panics with what to install unless `turnserver` runs.
fn require_coturn() {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("turnserver").is_file()));
    assert!(
        found,
        "stun_servers: no `turnserver` on PATH: install the Debian package coturn (scripts/deps.sh does)"
    );
    let o = run_bounded(Command::new("turnserver").arg("--version"), CMD_TIMEOUT);
    assert!(o.status.success(), "turnserver --version: {o:?}");
}

/// A process of the lab whose output goes to files.
struct LabProc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl LabProc {
    fn start(lab: &Lab, logs: &Path, name: &str, ns: &str, program: &str, args: &[&str]) -> Self {
        let out = logs.join(format!("{name}.stdout"));
        let err = logs.join(format!("{name}.stderr"));
        let file = |p: &Path| std::fs::File::create(p).expect("log file");
        let mut cmd = lab.exec_cmd(ns, program, args);
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err));
        let child = lab.spawn(&mut cmd);
        LabProc {
            name: name.into(),
            child,
            out,
            err,
        }
    }

    fn tail(&self) -> String {
        let mut s = String::new();
        for p in [&self.out, &self.err] {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            let from = lines.len().saturating_sub(30);
            s.push_str(&format!(
                "--- {}:\n{}\n",
                p.display(),
                lines[from..].join("\n")
            ));
        }
        s
    }

    /// Waits (bounded) until `f` finds what it wants in the stdout file.
    fn wait_stdout<T>(&mut self, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(v) = f(&text) {
                return v;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before {what}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {START_WAIT:?}:\n{}",
                self.name,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (bounded) until something listens on UDP `port` in `ns`.
fn wait_udp_listener(lab: &Lab, ns: &str, port: u16, p: &mut LabProc) {
    let deadline = Instant::now() + START_WAIT;
    let filter = format!("sport = :{port}");
    loop {
        let o = lab.run_ok(ns, "ss", &["-Hlun", &filter]);
        if !o.stdout.is_empty() {
            return;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("{} exited ({st}):\n{}", p.name, p.tail());
        }
        assert!(
            Instant::now() < deadline,
            "{}: nothing on udp port {port} within {START_WAIT:?}:\n{}",
            p.name,
            p.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `toxlink stun-probe --json` printed.
#[derive(Debug)]
struct Probe {
    local: SocketAddr,
    mapped: Vec<(SocketAddr, Option<SocketAddr>)>,
    reflexive: Vec<SocketAddr>,
    mapping_varies: bool,
    ok: bool,
}

fn stun_probe(lab: &Lab, ns: &str, servers: &[SocketAddr], extra: &[&str]) -> Probe {
    let mut args: Vec<String> = vec!["stun-probe".into(), "--json".into()];
    for s in servers {
        args.push("--server".into());
        args.push(s.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `--timeout` below CMD_TIMEOUT: the probe ends by itself first.
    let o = lab.run(ns, bin(), &args);
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "stun-probe printed no JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let addr = |v: &serde_json::Value| -> Option<SocketAddr> { v.as_str()?.parse().ok() };
    Probe {
        local: addr(&v["local"]).expect("local"),
        mapped: v["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .map(|s| (addr(&s["server"]).expect("server"), addr(&s["mapped"])))
            .collect(),
        reflexive: v["reflexive"]
            .as_array()
            .expect("reflexive")
            .iter()
            .map(|a| addr(a).expect("address"))
            .collect(),
        mapping_varies: v["mapping_varies"].as_bool().expect("mapping_varies"),
        ok: o.status.success(),
    }
}

/// The relay's `toxlink_relay_stun_*` counters, through SIGUSR1.
fn relay_stun_counters(p: &mut LabProc) -> (u64, u64, u64) {
    let before = std::fs::read_to_string(&p.out).unwrap_or_default().len();
    // SAFETY: a signal to our own child, which has not been waited for.
    unsafe {
        libc::kill(p.child.id() as i32, libc::SIGUSR1);
    }
    let get = |text: &str, k: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
    };
    p.wait_stdout("counters after SIGUSR1", |t| {
        let t = t.get(before..)?;
        Some((
            get(t, "toxlink_relay_stun_requests_total")?,
            get(t, "toxlink_relay_stun_answered_total")?,
            get(t, "toxlink_relay_stun_dropped_total")?,
        ))
    })
}

fn start_relay(lab: &Lab, logs: &Path, name: &str, i: usize, extra: &[&str]) -> LabProc {
    let ip = lab.relay_ip(i).to_string();
    let port = RELAY_PORT.to_string();
    let keys = logs.join(format!("{name}.keys"));
    let keys = keys.to_str().expect("utf-8 path");
    let mut args = vec![
        "relay",
        "--bind",
        &ip,
        "--port",
        &port,
        "--no-ipv6",
        "--keys-file",
        keys,
    ];
    args.extend_from_slice(extra);
    let mut p = LabProc::start(lab, logs, name, &lab.relay_ns(i), bin(), &args);
    p.wait_stdout("its listening line", |t| {
        t.lines()
            .find(|l| l.starts_with("listening on "))
            .map(|_| ())
    });
    p
}

fn in_range(port: u16, (lo, hi): (u16, u16)) -> bool {
    (lo..=hi).contains(&port)
}

#[test]
fn reflexive_address_behind_a_nat_from_coturn_and_toxlink_relay() {
    require_coturn();
    let lab = Lab::new(LabConfig {
        relays: 3,
        ..LabConfig::default()
    });
    let logs = tempfile::tempdir().expect("tempdir");

    // coturn, STUN only, on relay host 0.
    let turn_ip = lab.relay_ip(0).to_string();
    let pidfile = logs.path().join("turnserver.pid");
    let turn_port = TURN_PORT.to_string();
    let mut turn = LabProc::start(
        &lab,
        logs.path(),
        "turnserver",
        &lab.relay_ns(0),
        "turnserver",
        &[
            "-n",
            "--stun-only",
            "--listening-ip",
            &turn_ip,
            "--listening-port",
            &turn_port,
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            pidfile.to_str().expect("utf-8 path"),
        ],
    );
    // `toxlink relay` on relay host 1: STUN on its TCP port by default.
    let mut relay = start_relay(&lab, logs.path(), "relay", 1, &[]);
    // On relay host 2: an explicit STUN address (so its TCP port number is
    // silent on UDP); a `--no-stun` relay joins it below.
    let explicit = SocketAddr::from((lab.relay_ip(2), 3479));
    let explicit_s = explicit.to_string();
    let mut relay2 = start_relay(&lab, logs.path(), "relay2", 2, &["--stun", &explicit_s]);
    wait_udp_listener(&lab, &lab.relay_ns(0), TURN_PORT, &mut turn);
    wait_udp_listener(&lab, &lab.relay_ns(1), RELAY_PORT, &mut relay);
    wait_udp_listener(&lab, &lab.relay_ns(2), 3479, &mut relay2);

    let coturn = SocketAddr::from((lab.relay_ip(0), TURN_PORT));
    let ours = SocketAddr::from((lab.relay_ip(1), RELAY_PORT));
    let wan_a = lab.nat_wan_ip(Side::A);
    let range = lab.port_range(Side::A);

    // 1. From host A behind its NAT: both servers, one socket.
    let p = stun_probe(
        &lab,
        &lab.host_ns(Side::A),
        &[coturn, ours],
        &["--timeout", "8"],
    );
    assert!(p.ok, "{p:?}\nturnserver:\n{}", turn.tail());
    assert_eq!(p.local.ip(), std::net::IpAddr::from(Ipv4Addr::UNSPECIFIED));
    assert_eq!(p.mapped.len(), 2, "{p:?}");
    for (server, mapped) in &p.mapped {
        let m = mapped.unwrap_or_else(|| panic!("{server} did not answer: {p:?}\n{}", turn.tail()));
        assert_eq!(m.ip(), std::net::IpAddr::from(wan_a), "{server}: {p:?}");
        assert!(
            in_range(m.port(), range),
            "{server}: port {} not in {range:?}",
            m.port()
        );
    }
    let ports: Vec<u16> = p
        .mapped
        .iter()
        .filter_map(|(_, m)| m.map(|m| m.port()))
        .collect();
    assert_eq!(p.mapping_varies, ports[0] != ports[1], "{p:?}");
    assert_eq!(p.reflexive.len(), if p.mapping_varies { 2 } else { 1 });
    println!(
        "host A behind its NAT: coturn sees {:?}, toxlink relay sees {:?}; mapping varies: {}",
        p.mapped[0].1, p.mapped[1].1, p.mapping_varies
    );

    // 2. Without a NAT (relay host 1 asking coturn): exactly our address.
    let local = SocketAddr::from((lab.relay_ip(1), 40000));
    let local_s = local.to_string();
    let p = stun_probe(
        &lab,
        &lab.relay_ns(1),
        &[coturn],
        &["--timeout", "8", "--bind", &local_s],
    );
    assert!(p.ok, "{p:?}");
    assert_eq!(p.reflexive, vec![local], "{p:?}");

    // 3. The explicit `--stun` address answers.
    let p = stun_probe(
        &lab,
        &lab.host_ns(Side::A),
        &[explicit],
        &["--timeout", "8"],
    );
    assert!(p.ok, "{p:?}");
    assert_eq!(p.reflexive[0].ip(), std::net::IpAddr::from(wan_a));

    // 4. Nothing answers on UDP at relay host 2's TCP ports: the `--stun`
    // relay's (STUN moved) and the `--no-stun` relay's.
    let mut silent = {
        let ip = lab.relay_ip(2).to_string();
        let keys = logs.path().join("silent.keys");
        let mut p = LabProc::start(
            &lab,
            logs.path(),
            "silent",
            &lab.relay_ns(2),
            bin(),
            &[
                "relay",
                "--bind",
                &ip,
                "--port",
                "33446",
                "--no-ipv6",
                "--no-stun",
                "--keys-file",
                keys.to_str().expect("utf-8 path"),
            ],
        );
        p.wait_stdout("its listening line", |t| {
            t.lines()
                .find(|l| l.starts_with("listening on "))
                .map(|_| ())
        });
        p
    };
    for port in [RELAY_PORT, 33446] {
        let to = SocketAddr::from((lab.relay_ip(2), port));
        let p = stun_probe(&lab, &lab.host_ns(Side::A), &[to], &["--timeout", "2"]);
        assert!(!p.ok && p.reflexive.is_empty(), "{to}: {p:?}");
    }
    let silent_counters = relay_stun_counters(&mut silent);
    assert_eq!(silent_counters, (0, 0, 0));

    // 5. A NAT that maps per destination ("symmetric"): A's masquerade
    // rule with `random` (a random port per flow; the lab's rule keeps one
    // mapping per source), then its state flushed. Three servers from one
    // socket see three random ports (all equal: one chance in a million),
    // so the mapping varies.
    let script = logs.path().join("random.nft");
    std::fs::write(
        &script,
        format!(
            "flush chain ip {NAT_TABLE} {NAT_CHAIN}\n\
             add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" meta l4proto {{ tcp, udp }} \
             masquerade to :{}-{} random\n\
             add rule ip {NAT_TABLE} {NAT_CHAIN} oifname \"wan0\" masquerade\n",
            range.0, range.1
        ),
    )
    .expect("nft script");
    lab.run_ok(
        &lab.nat_ns(Side::A),
        "nft",
        &["-f", script.to_str().expect("utf-8 path")],
    );
    lab.flush_nat(Side::A);
    let p = stun_probe(
        &lab,
        &lab.host_ns(Side::A),
        &[coturn, ours, explicit],
        &["--timeout", "8"],
    );
    assert!(p.ok, "{p:?}");
    for (server, mapped) in &p.mapped {
        let m = mapped.unwrap_or_else(|| panic!("{server} did not answer: {p:?}"));
        assert_eq!(m.ip(), std::net::IpAddr::from(wan_a), "{server}: {p:?}");
        assert!(in_range(m.port(), range), "{server}: {p:?}");
    }
    assert!(p.mapping_varies, "{p:?}");
    println!(
        "host A behind a NAT that maps per destination: {:?}",
        p.mapped
    );

    // The relays counted what they answered.
    let (req, answered, dropped) = relay_stun_counters(&mut relay);
    assert!(answered >= 1, "{req} {answered} {dropped}");
    assert_eq!(req, answered + dropped);
    let (_, answered2, _) = relay_stun_counters(&mut relay2);
    assert!(answered2 >= 1);
}

/// On loopback (no lab): when the default STUN address (the TCP one) is
/// taken on UDP, the relay warns and relays without STUN; an explicit
/// `--stun` address that is taken is an error naming it.
#[test]
fn a_taken_udp_port_costs_the_default_stun_but_fails_an_explicit_one() {
    // Held for the whole test: the relay cannot bind it on UDP.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let port = held.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let keys = keys.to_str().expect("utf-8 path");
    let port_s = port.to_string();
    let relay = |extra: &[&str]| {
        let mut c = common::toxlink(&[
            "relay",
            "--bind",
            "127.0.0.1",
            "--port",
            &port_s,
            "--keys-file",
            keys,
        ]);
        c.args(extra).stdin(Stdio::null());
        c
    };
    // Default STUN: starts (TCP on the port), says it does not answer STUN.
    let mut c = relay(&[]);
    let log = dir.path().join("relay.stderr");
    let out = dir.path().join("relay.stdout");
    c.env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).expect("file"))
        .stderr(std::fs::File::create(&log).expect("file"));
    let mut child = c.spawn().expect("relay starts");
    let deadline = Instant::now() + START_WAIT;
    let started = loop {
        let o = std::fs::read_to_string(&out).unwrap_or_default();
        if o.contains(&format!("listening on 127.0.0.1:{port}")) {
            break true;
        }
        if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started, "relay did not start: {err}");
    assert!(err.contains("not answering STUN"), "{err}");
    assert!(
        err.contains(&format!("STUN on udp 127.0.0.1:{port}")),
        "{err}"
    );
    // Explicit: an error naming the address, exit 1, one line.
    let stun = format!("127.0.0.1:{port}");
    let o = run_bounded(&mut relay(&["--stun", &stun]), CMD_TIMEOUT);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    let last = e.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("toxlink: listening on [127.0.0.1:")
            && last.contains(&format!("STUN on udp 127.0.0.1:{port}")),
        "{e}"
    );
    drop(held);
}
