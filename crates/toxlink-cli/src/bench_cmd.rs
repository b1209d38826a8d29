//! `toxlink bench relay`: relay forwarding throughput and memory per idle
//! client, toxlink's relay and c-toxcore's tox-bootstrapd measured the same
//! way in the same run.
//!
//! Each relay runs as its own process (toxlink: this binary's `relay`
//! subcommand with `--threads 1`, so forwarding uses one core; bootstrapd:
//! started through `toxlink-interop`, only in a build with the
//! `c-toxcore-bench` feature). The load comes from sans-IO relay clients in
//! this process over loopback:
//!
//! * **Throughput**: `pairs` sender→receiver pairs; each sender keeps its
//!   link saturated with 1400-byte DATA packets; receivers count payload
//!   bytes after a warm-up. A relay drops DATA when a receiver's queue is
//!   full, so the figure is what the relay actually forwards. Fairness is
//!   Jain's index over the pairs.
//! * **Memory**: RSS of the relay process (from `/proc/PID/status`) before
//!   and after opening N idle, confirmed clients; the difference over N.
//!   Each client connects from its own loopback address (127.x.y.z), as
//!   clients on the internet do, so the relay's per-address limits apply
//!   as they would there.
//! * **Under attack** (`--attack`, toxlink only): the honest throughput of
//!   `pairs` pairs (4 by default with `--attack`) measured twice on one relay
//!   process — alone, then while 2,000 receivers that never read are sent
//!   DATA at full speed (their queues hold twice the relay's global queue
//!   budget: the relay runs with 64 KiB per client and 64 MiB in all) and a
//!   connection flood opens connections that never say anything from 20
//!   addresses. The attackers first fill their receivers at full speed (the
//!   honest pairs are measured meanwhile, sharing this process's CPU with
//!   the attackers' crypto), then keep them topped up (measured again). The
//!   ratios to the figure without attack and the relay's counters are
//!   printed; nothing is asserted.

use clap::Subcommand;
use rand_core::OsRng;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_client::{Client, ClientConfig, ClientEvent, LinkState};

/// What the c-toxcore rows say in a build without them.
#[cfg(not(feature = "c-toxcore-bench"))]
pub const C_TOXCORE_NOT_BUILT: &str = "not in this build (cargo build --release -p toxlink-cli --features c-toxcore-bench; needs libtoxcore-dev and toxcore-utils)";

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay forwarding throughput and memory per idle client, toxlink vs
    /// tox-bootstrapd.
    Relay(RelayBenchArgs),
    /// Lossless throughput, set-up time and CPU per GB of one connection over
    /// loopback UDP, toxlink vs c-toxcore.
    Udp(crate::bench_udp::UdpBenchArgs),
}

/// Options of `toxlink bench relay`.
#[derive(Debug, clap::Args)]
pub struct RelayBenchArgs {
    /// Seconds of measured forwarding per relay.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Sender→receiver pairs.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Idle-client counts to measure memory at.
    #[arg(long = "idle", default_values_t = vec![1000usize, 10000])]
    pub idle: Vec<usize>,
    /// Skip tox-bootstrapd.
    #[arg(long)]
    pub no_bootstrapd: bool,
    /// Payload bytes a sender may have in flight (end-to-end window).
    #[arg(long, default_value_t = 512 * 1024)]
    pub window: u64,
    /// Bytes per socket write of a sender (1419 = one frame per write).
    #[arg(long, default_value_t = 32 * 1024)]
    pub write_chunk: usize,
    /// Measure honest pairs with and without an attack (receivers that
    /// never read and a connection flood) instead of the usual table.
    #[arg(long)]
    pub attack: bool,
    /// Receivers that never read, with `--attack`.
    #[arg(long, default_value_t = 2000)]
    pub attack_receivers: usize,
}

/// Options of `toxlink bench`: a subcommand, or `--json` for a short
/// summary of both.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Run a short UDP and relay benchmark and print one JSON object on
    /// stdout (`udp_lossless_mb_s`, `relay_lossless_mb_s`, ...).
    #[arg(long)]
    pub json: bool,
    /// MiB moved over UDP for `--json`.
    #[arg(long, default_value_t = 128)]
    pub mib: u64,
    /// Seconds of relay forwarding measured for `--json`.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
}

/// Runs a benchmark.
pub async fn run(b: BenchArgs) -> Result<(), String> {
    match (b.command, b.json) {
        (Some(BenchCommand::Relay(a)), _) => relay(a).await,
        (Some(BenchCommand::Udp(a)), _) => crate::bench_udp::run(a).await,
        (None, true) => json_summary(b.mib, b.seconds).await,
        (None, false) => {
            // Everything, one table after the other: a toxlink connection
            // over UDP next to c-toxcore, the same through a toxlink relay,
            // and the relays themselves (toxlink vs tox-bootstrapd).
            crate::bench_udp::run(crate::bench_udp::UdpBenchArgs {
                mib: 256,
                runs: 3,
                ctoxcore_packets: 40_000,
                no_ctoxcore: false,
            })
            .await?;
            let (_relay, t) = start_toxlink().await?;
            let via = crate::bench_udp::toxlink_run_via(128, 1, Some((t.pk, t.addr))).await?;
            println!(
                "toxlink through a toxlink relay (UDP blocked): set-up {:.1} ms, lossless {:.1} MB/s, CPU {:.1} s/GB",
                via.setup.as_secs_f64() * 1e3,
                via.mb_s,
                via.cpu_s_per_gb
            );
            relay(RelayBenchArgs {
                seconds: 4,
                pairs: 1,
                idle: vec![1000, 10000],
                no_bootstrapd: false,
                window: 512 * 1024,
                write_chunk: 32 * 1024,
                attack: false,
                attack_receivers: 2000,
            })
            .await
        }
    }
}

/// `toxlink bench --json`: one toxlink UDP run (`mib` MiB of lossless data
/// between two nodes of this process), the same through a toxlink relay
/// child process with UDP blocked, and the relay's raw forwarding rate (one
/// pair of relay clients for `seconds`), as one JSON object on stdout.
async fn json_summary(mib: u64, seconds: u64) -> Result<(), String> {
    let udp = crate::bench_udp::toxlink_run(mib.max(1), 0).await?;
    let (relay_mb_s, relay_cpu, via_relay) = {
        let (_relay, t) = start_toxlink().await?;
        let (total, _per, cpu) = throughput(&t, 1, seconds.max(1), 32 * 1024, 512 * 1024).await?;
        let via = crate::bench_udp::toxlink_run_via(mib.max(1), 1, Some((t.pk, t.addr))).await?;
        (total, cpu, via)
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let out = serde_json::json!({
        "udp_lossless_mb_s": round(udp.mb_s),
        "udp_setup_ms": round(udp.setup.as_secs_f64() * 1e3),
        "udp_cpu_s_per_gb": round(udp.cpu_s_per_gb),
        "udp_mib": mib.max(1),
        "relay_lossless_mb_s": round(via_relay.mb_s),
        "relay_setup_ms": round(via_relay.setup.as_secs_f64() * 1e3),
        "relay_lossless_method": "one toxlink connection (1373-byte lossless packets) through a toxlink relay process, direct UDP blocked",
        "relay_forward_mb_s": round(relay_mb_s),
        "relay_cpu_percent": round(relay_cpu * 100.0),
        "relay_seconds": seconds.max(1),
        "relay_forward_method": "toxlink relay process (1 thread) forwarding 1400-byte DATA between one pair of relay clients with a 512 KiB end-to-end window",
    });
    println!("{out}");
    Ok(())
}

/// A relay under test.
struct Target {
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
    pk: PublicKey,
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

/// A toxlink relay child process; killed on drop.
struct ToxlinkRelay {
    child: tokio::process::Child,
    /// The last lines it printed (its counters, on SIGUSR1).
    lines: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    //! A temporary directory removed on drop (std only).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for ToxlinkRelay {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_toxlink() -> Result<(ToxlinkRelay, Target), String> {
    start_toxlink_with(None).await
}

/// A toxlink relay child process, with a TOML config if given.
async fn start_toxlink_with(config: Option<&str>) -> Result<(ToxlinkRelay, Target), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("toxlink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = tempfile_dir::Dir(dir);
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        "relay",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--threads",
        "1",
        "--keys-file",
    ])
    .arg(dir.0.join("keys"));
    if let Some(text) = config {
        let path = dir.0.join("relay.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().ok_or("relay exited")?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let pk_line = next_line(&mut lines).await?;
    let pk = pk_line
        .strip_prefix("public key ")
        .and_then(PublicKey::from_hex)
        .ok_or("bad public key line")?;
    let addr_line = next_line(&mut lines).await?;
    let addr = addr_line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or("bad address line")?;
    // Keep draining stdout so the child never blocks on it.
    let kept = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let keep = kept.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
            if k.len() >= 256 {
                k.pop_front();
            }
            k.push_back(l);
        }
    });
    Ok((
        ToxlinkRelay {
            child,
            lines: kept,
            _dir: dir,
        },
        Target {
            name: "toxlink relay",
            pid,
            addr,
            pk,
        },
    ))
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<String, String> {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "relay start timed out".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "relay exited".to_string())
}

/// A raw relay link: sans-IO client on a socket.
struct Link {
    c: Client,
    s: TcpStream,
    buf: Vec<u8>,
}

/// The `i`-th loopback source address of a group (`127.group.x.y`, never
/// ending in 0): distinct clients look like distinct hosts to the relay.
fn loopback_src(group: u8, i: usize) -> IpAddr {
    let i = i % (250 * 250);
    IpAddr::from([127, group, (i / 250) as u8, (i % 250) as u8 + 1])
}

/// A TCP connection to `to` from `src` (a loopback address; binding a
/// client socket to any 127.x.y.z works on Linux). A small receive buffer
/// keeps the kernel from soaking up much for a client that never reads.
async fn connect_from(
    to: SocketAddr,
    src: IpAddr,
    small_rcvbuf: bool,
) -> Result<TcpStream, String> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if small_rcvbuf {
        sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
    }
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

impl Link {
    async fn connect(t: &Target, kp: KeyPair) -> Result<Link, String> {
        Self::connect_from(t, kp, IpAddr::from([127, 0, 0, 1])).await
    }

    async fn connect_from(t: &Target, kp: KeyPair, src: IpAddr) -> Result<Link, String> {
        let s = connect_from(t.addr, src, false).await?;
        let c = Client::new(
            Instant::now(),
            kp,
            t.pk,
            &mut OsRng,
            ClientConfig::default(),
        );
        let mut l = Link {
            c,
            s,
            buf: vec![0u8; 1 << 16],
        };
        l.pump_until(|c| c.state() == LinkState::Connected).await?;
        // Flush the confirming PING.
        l.flush().await?;
        Ok(l)
    }

    async fn flush(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        self.c.drain_into(&mut out, usize::MAX);
        self.s.write_all(&out).await.map_err(|e| e.to_string())
    }

    async fn pump_until(
        &mut self,
        mut done: impl FnMut(&mut Client) -> bool,
    ) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                self.flush().await?;
                if done(&mut self.c) {
                    return Ok(());
                }
                if let LinkState::Disconnected(r) = self.c.state() {
                    return Err(format!("link died: {r:?}"));
                }
                let n = self
                    .s
                    .read(&mut self.buf)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("relay closed the link".into());
                }
                self.c.handle_bytes(Instant::now(), &mut self.buf[..n]);
            }
        })
        .await
        .map_err(|_| "timed out".to_string())?
    }
}

fn online(c: &mut Client) -> bool {
    std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, ClientEvent::PeerOnline { .. }))
}

/// Forwarding throughput over `pairs` pairs: (total MB/s, per-pair MB/s).
async fn throughput(
    t: &Target,
    pairs: usize,
    secs: u64,
    chunk: usize,
    window: u64,
) -> Result<(f64, Vec<f64>, f64), String> {
    let mut tasks = Vec::new();
    let warmup = Duration::from_millis(700);
    // Connect and route every pair first, then start them all together.
    let mut linked = Vec::new();
    for _ in 0..pairs {
        let (ka, kb) = (KeyPair::generate(&mut OsRng), KeyPair::generate(&mut OsRng));
        let (pa, pb) = (ka.public, kb.public);
        let mut a = Link::connect(t, ka).await?;
        let mut b = Link::connect(t, kb).await?;
        a.c.route(pb).map_err(|e| e.to_string())?;
        b.c.route(pa).map_err(|e| e.to_string())?;
        a.flush().await?;
        b.pump_until(online).await?;
        a.pump_until(|c| {
            online(c)
                || matches!(
                    c.route_state(&pb),
                    Some(toxlink_proto::relay_client::RouteState::Online { .. })
                )
        })
        .await?;
        linked.push((a, b, pb));
    }
    let start = Instant::now() + Duration::from_millis(100);
    for (mut a, mut b, pb) in linked {
        let measure_from = start + warmup;
        let end = measure_from + Duration::from_secs(secs);
        let acked = Arc::new(AtomicU64::new(0));
        let acked2 = acked.clone();
        let sender = tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let payload = vec![0x5au8; 1400];
            let mut out = Vec::with_capacity(chunk);
            let mut written = 0usize;
            let mut sent = 0u64;
            let mut last_ack = (0u64, Instant::now());
            while Instant::now() < end {
                // An end-to-end window, as net_crypto's congestion control
                // would keep: the relay forwards, it does not buffer. What
                // the relay dropped is written off after 50 ms without
                // progress.
                let now_acked = acked.load(Ordering::Relaxed);
                if now_acked != last_ack.0 {
                    last_ack = (now_acked, Instant::now());
                } else if last_ack.1.elapsed() > Duration::from_millis(50) {
                    sent = now_acked;
                    last_ack.1 = Instant::now();
                }
                if sent >= now_acked + window {
                    tokio::time::sleep(Duration::from_micros(50)).await;
                    continue;
                }
                while sent < acked.load(Ordering::Relaxed) + window
                    && a.c.queued_bytes() < chunk
                    && a.c.send_data(&pb, &payload).is_ok()
                {
                    sent += payload.len() as u64;
                }
                out.clear();
                a.c.drain_into(&mut out, chunk);
                written += out.len();
                if a.s.write_all(&out).await.is_err() {
                    break;
                }
            }
            if std::env::var_os("TOXLINK_BENCH_DEBUG").is_some() {
                eprintln!("sender wrote {written} bytes, state {:?}", a.c.state());
            }
            a
        });
        let receiver = tokio::spawn(async move {
            let mut bytes = 0u64;
            let mut buf = vec![0u8; 1 << 18];
            while Instant::now() < end {
                let n = match tokio::time::timeout(Duration::from_millis(200), b.s.read(&mut buf))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => continue,
                };
                b.c.handle_bytes(Instant::now(), &mut buf[..n]);
                let counting = Instant::now() >= measure_from;
                while let Some(ev) = b.c.poll_event() {
                    if let ClientEvent::Data { data, .. } = ev {
                        acked2.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if counting {
                            bytes += data.len() as u64;
                        }
                    }
                }
                // Answer pings so the relay keeps us.
                let mut out = Vec::new();
                b.c.drain_into(&mut out, 1 << 16);
                if !out.is_empty() && b.s.write_all(&out).await.is_err() {
                    break;
                }
            }
            if std::env::var_os("TOXLINK_BENCH_DEBUG").is_some() {
                eprintln!(
                    "receiver counted {bytes} bytes, state {:?} {:?}",
                    b.c.state(),
                    b.c.counters()
                );
            }
            (b, bytes)
        });
        tasks.push((sender, receiver));
    }
    let wait = (start + warmup).saturating_duration_since(Instant::now());
    tokio::time::sleep(wait).await;
    let cpu0 = cpu_secs(t.pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (cpu_secs(t.pid) - cpu0) / secs as f64;
    let mut per = Vec::new();
    for (s, r) in tasks {
        let _ = s.await;
        let (_, bytes) = r.await.map_err(|e| e.to_string())?;
        per.push(bytes as f64 / secs as f64 / 1e6);
    }
    Ok((per.iter().sum(), per, cpu))
}

/// Opens `n` idle confirmed clients; returns the relay's RSS growth per
/// client in bytes (the clients are kept until the measurement is done).
async fn idle_memory(t: &Target, n: usize) -> Result<(f64, u64, u64), String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(t.pid)?;
    let mut links = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut opened = 0;
    while links.len() < n {
        while opened < n && pending.len() < 64 {
            opened += 1;
            let target = Target {
                name: t.name,
                pid: t.pid,
                addr: t.addr,
                pk: t.pk,
            };
            let src = loopback_src(50, opened);
            pending.spawn(async move {
                let kp = KeyPair::generate(&mut OsRng);
                Link::connect_from(&target, kp, src)
                    .await
                    .map(|l| (l.s, l.c))
            });
        }
        match pending.join_next().await {
            Some(Ok(Ok((s, _c)))) => links.push(s),
            Some(Ok(Err(e))) => return Err(format!("client {}: {e}", links.len())),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    // Let the relay settle (timers free idle buffers).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rss_kib(t.pid)?;
    drop(links);
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    Ok((per, before, after))
}

/// CPU time (user + system) of a process in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let q: f64 = x.iter().map(|v| v * v).sum();
    if q == 0.0 {
        0.0
    } else {
        s * s / (x.len() as f64 * q)
    }
}

async fn bench_target(t: &Target, a: &RelayBenchArgs) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();
    let (total, per, cpu) = throughput(t, a.pairs, a.seconds, a.write_chunk, a.window).await?;
    rows.push(format!(
        "{:<16} forwarding {:>8.1} MB/s of 1400-byte DATA, relay CPU {:.0}% ({} pair(s), Jain {:.3}, per pair {:?})",
        t.name,
        total,
        cpu * 100.0,
        a.pairs,
        jain(&per),
        per.iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    ));
    for &n in &a.idle {
        let (per, before, after) = idle_memory(t, n).await?;
        rows.push(format!(
            "{:<16} {n:>6} idle clients: {:>7.0} B/client (RSS {before} KiB -> {after} KiB)",
            t.name, per
        ));
    }
    Ok(rows)
}

async fn relay(a: RelayBenchArgs) -> Result<(), String> {
    crate::relay_cmd::raise_nofile_limit();
    if a.attack {
        return attack(&a).await;
    }
    let mut rows = Vec::new();
    {
        let (_relay, t) = start_toxlink().await?;
        println!("toxlink relay pid {} on {}", t.pid, t.addr);
        rows.extend(bench_target(&t, &a).await?);
    }
    #[cfg(not(feature = "c-toxcore-bench"))]
    if !a.no_bootstrapd {
        rows.push(format!("{:<16} {C_TOXCORE_NOT_BUILT}", "tox-bootstrapd"));
    }
    #[cfg(feature = "c-toxcore-bench")]
    if !a.no_bootstrapd {
        let d = tokio::task::spawn_blocking(toxlink_interop::Bootstrapd::start)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let t = Target {
            name: "tox-bootstrapd",
            pid: d.pid(),
            addr: d.tcp_addr(),
            pk: PublicKey(d.public_key()),
        };
        println!("tox-bootstrapd pid {} on {}", t.pid, t.addr);
        let r = bench_target(&t, &a).await;
        drop(d);
        rows.extend(r?);
    }
    println!();
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// The relay limits of the attack run: small queues, so that the receivers
/// that never read hold twice the global budget.
const ATTACK_CONFIG: &str = "[limits]\nqueue_bytes = 65536\ntotal_queue_bytes = 67108864\n";

/// Attacker senders; each is routed with `receivers / ATTACK_SENDERS`
/// receivers (at most 240 per link).
const ATTACK_SENDERS: usize = 10;

/// `toxlink bench relay --attack`: honest throughput alone, while the
/// attackers fill their receivers and while they hold them, on one relay
/// process.
async fn attack(a: &RelayBenchArgs) -> Result<(), String> {
    let pairs = if a.pairs == 1 { 4 } else { a.pairs };
    let receivers = a
        .attack_receivers
        .clamp(ATTACK_SENDERS, ATTACK_SENDERS * 240);
    let (relay, t) = start_toxlink_with(Some(ATTACK_CONFIG)).await?;
    println!(
        "toxlink relay pid {} on {} (64 KiB queue per client, 64 MiB in all)",
        t.pid, t.addr
    );
    let (alone, per_alone, cpu_alone) =
        throughput(&t, pairs, a.seconds, a.write_chunk, a.window).await?;
    println!(
        "honest, alone:           {alone:>7.1} MB/s over {pairs} pairs (Jain {:.3}), relay CPU {:.0}%",
        jain(&per_alone),
        cpu_alone * 100.0
    );
    let rss0 = rss_kib(t.pid)?;
    let set_up = Instant::now();
    let (senders, held) = attackers(&t, receivers).await?;
    println!(
        "attack set up in {:.1} s: {ATTACK_SENDERS} senders routed with {} receivers that never read",
        set_up.elapsed().as_secs_f64(),
        held.len()
    );
    // The attack runs until told to stop (at most a minute): the senders
    // fill their receivers, then keep them topped up; the flood goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let filled = Arc::new(AtomicU64::new(0));
    let hard_end = Instant::now() + Duration::from_secs(60);
    let mut tasks = tokio::task::JoinSet::new();
    for (s, peers) in senders {
        tasks.spawn(flood_receivers(
            s,
            peers,
            (stop.clone(), filled.clone(), hard_end),
            a.write_chunk,
        ));
    }
    tasks.spawn(connection_flood(t.addr, stop.clone(), hard_end));
    let fill_start = Instant::now();
    // First while the attackers fill their receivers at full speed (this
    // process's CPU is shared with them on a small machine).
    let (during, per_during, cpu_during) =
        throughput(&t, pairs, a.seconds, a.write_chunk, a.window).await?;
    println!(
        "honest, during the fill: {during:>7.1} MB/s over {pairs} pairs (Jain {:.3}), relay CPU {:.0}%",
        jain(&per_during),
        cpu_during * 100.0
    );
    // Bounded: 30 s at most.
    while filled.load(Ordering::Relaxed) < ATTACK_SENDERS as u64
        && fill_start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "receivers filled (or closed by the relay) in {:.1} s; measuring the honest pairs while the attack holds",
        fill_start.elapsed().as_secs_f64()
    );
    let (under, per_under, cpu_under) =
        throughput(&t, pairs, a.seconds, a.write_chunk, a.window).await?;
    stop.store(true, Ordering::Relaxed);
    let rss1 = rss_kib(t.pid)?;
    let mut attack_bytes = 0u64;
    let mut flood_conns = 0u64;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string())? {
            AttackReport::Sent(n) => attack_bytes += n,
            AttackReport::Connections(n) => flood_conns += n,
        }
    }
    drop(held);
    println!(
        "honest, attack holding:  {under:>7.1} MB/s over {pairs} pairs (Jain {:.3}), relay CPU {:.0}%",
        jain(&per_under),
        cpu_under * 100.0
    );
    println!(
        "attackers wrote {:.0} MB of DATA to receivers that never read and opened {flood_conns} idle connections; relay RSS {rss0} KiB -> {rss1} KiB",
        attack_bytes as f64 / 1e6
    );
    // The relay's own counters (printed on SIGUSR1).
    // SAFETY: kill with the pid of our own child and a standard signal.
    unsafe {
        libc::kill(t.pid as libc::pid_t, libc::SIGUSR1);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wanted = [
        "closes_slow_consumer",
        "closes_evicted",
        "closes_handshake_timeout",
        "drops_total_queue_full",
        "drops_queue_full",
        "drops_not_connected",
        "accepted_total",
        "data_packets_total",
        "queued_bytes",
        "relay_clients",
    ];
    let lines = relay
        .lines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for l in lines.iter().rev().take(80).rev() {
        if wanted.iter().any(|w| l.contains(w)) {
            println!("  relay {l}");
        }
    }
    let pct = |x: f64| if alone > 0.0 { x / alone * 100.0 } else { 0.0 };
    println!(
        "honest throughput kept: {:.1} % during the fill, {:.1} % while the attack holds",
        pct(during),
        pct(under)
    );
    Ok(())
}

enum AttackReport {
    Sent(u64),
    Connections(u64),
}

/// Connects `ATTACK_SENDERS` senders and `receivers` receivers (over 100
/// loopback addresses, within the per-address limits), routes each receiver with its sender and returns the
/// senders (with their receivers' keys) and the receivers' sockets, which
/// are never read again.
#[allow(clippy::type_complexity)]
async fn attackers(
    t: &Target,
    receivers: usize,
) -> Result<(Vec<(Link, Vec<PublicKey>)>, Vec<TcpStream>), String> {
    let per = receivers / ATTACK_SENDERS;
    let mut senders = Vec::new();
    let mut sender_pks = Vec::new();
    for k in 0..ATTACK_SENDERS {
        let kp = KeyPair::generate(&mut OsRng);
        sender_pks.push(kp.public);
        senders.push(Link::connect_from(t, kp, loopback_src(60, k)).await?);
    }
    let mut held = Vec::with_capacity(per * ATTACK_SENDERS);
    let mut peers: Vec<Vec<PublicKey>> = vec![Vec::new(); ATTACK_SENDERS];
    let mut pending = tokio::task::JoinSet::new();
    let mut opened = 0;
    let total = per * ATTACK_SENDERS;
    // Bounded: `total` connections, 64 at a time, each within its timeouts.
    while held.len() < total {
        while opened < total && pending.len() < 64 {
            let k = opened % ATTACK_SENDERS;
            let (src, to, pk, addr) = (loopback_src(61, opened % 100), sender_pks[k], t.pk, t.addr);
            opened += 1;
            pending.spawn(async move {
                let kp = KeyPair::generate(&mut OsRng);
                let public = kp.public;
                let s = connect_from(addr, src, true).await?;
                let c = Client::new(Instant::now(), kp, pk, &mut OsRng, ClientConfig::default());
                let mut l = Link {
                    c,
                    s,
                    buf: vec![0u8; 4096],
                };
                l.pump_until(|c| c.state() == LinkState::Connected).await?;
                l.c.route(to).map_err(|e| e.to_string())?;
                l.flush().await?;
                Ok::<_, String>((k, public, l.s))
            });
        }
        match pending.join_next().await {
            Some(Ok(Ok((k, public, s)))) => {
                peers[k].push(public);
                held.push(s);
            }
            Some(Ok(Err(e))) => return Err(format!("attack receiver {}: {e}", held.len())),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    let mut out = Vec::new();
    for (s, peers) in senders.iter_mut().zip(&peers) {
        for p in peers {
            s.c.route(*p).map_err(|e| e.to_string())?;
        }
        let want = peers.len();
        let mut online = 0;
        s.pump_until(|c| {
            online += std::iter::from_fn(|| c.poll_event())
                .filter(|e| matches!(e, ClientEvent::PeerOnline { .. }))
                .count();
            online >= want
        })
        .await?;
    }
    for (s, p) in senders.into_iter().zip(peers) {
        out.push((s, p));
    }
    Ok((out, held))
}

/// One attacker sender until told to stop (or `end`): 1400-byte DATA to its receivers in
/// turn, as fast as the relay reads it, until each was sent
/// [`FILL_PER_RECEIVER`] (their socket buffers, the relay's write buffer
/// and its queue are full then); after that one frame to each every 200 ms,
/// so the queues stay held. (An attacker that kept flooding would only be
/// measuring this process's CPU against the honest pairs' on a small
/// machine, not the relay.)
async fn flood_receivers(
    mut s: Link,
    peers: Vec<PublicKey>,
    (stop, filled, end): (Arc<AtomicBool>, Arc<AtomicU64>, Instant),
    chunk: usize,
) -> AttackReport {
    let payload = vec![0x66u8; 1400];
    let mut out = Vec::with_capacity(2 * chunk);
    let mut sent = 0u64;
    let mut next = 0usize;
    let fill = FILL_PER_RECEIVER * peers.len() as u64;
    let mut reported = false;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let filling = sent < fill && !reported;
        if sent >= fill && !reported {
            reported = true;
            filled.fetch_add(1, Ordering::Relaxed);
        }
        // Bounded: one pass over the receivers at most per write.
        for _ in 0..peers.len() {
            if s.c.queued_bytes() >= chunk {
                break;
            }
            next = (next + 1) % peers.len().max(1);
            let _ = s.c.send_data(&peers[next], &payload);
        }
        out.clear();
        s.c.drain_into(&mut out, if filling { chunk } else { usize::MAX });
        if !out.is_empty() {
            match tokio::time::timeout(Duration::from_secs(1), s.s.write_all(&out)).await {
                Ok(Ok(())) => sent += out.len() as u64,
                _ => {
                    // The relay stopped reading us: count as filled.
                    if !reported {
                        filled.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
        if out.is_empty() && !reported {
            // Nothing left to send to: every receiver was closed by the
            // relay before it was full.
            reported = true;
            filled.fetch_add(1, Ordering::Relaxed);
        }
        if out.is_empty() || !filling {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Keep the link's own state current (notifications of receivers the
        // relay closed), without waiting.
        while let Ok(n) = s.s.try_read(&mut s.buf) {
            if n == 0 {
                if !reported {
                    filled.fetch_add(1, Ordering::Relaxed);
                }
                return AttackReport::Sent(sent);
            }
            s.c.handle_bytes(Instant::now(), &mut s.buf[..n]);
            while s.c.poll_event().is_some() {}
        }
    }
    AttackReport::Sent(sent)
}

/// What an attacker sender sends each receiver at full speed: more than a
/// receiver's socket buffers (the relay caps its side at 256 KiB), the
/// relay's 64 KiB write buffer and its 64 KiB queue hold.
const FILL_PER_RECEIVER: u64 = 512 * 1024;

/// Opens connections that never say anything, one every 2 ms from 20
/// loopback addresses, holding the newest 400, until told to stop (or
/// `end`).
async fn connection_flood(to: SocketAddr, stop: Arc<AtomicBool>, end: Instant) -> AttackReport {
    let mut held = std::collections::VecDeque::new();
    let mut n = 0u64;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let src = loopback_src(62, (n % 20) as usize);
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), connect_from(to, src, true)).await
        {
            held.push_back(s);
            if held.len() > 400 {
                held.pop_front();
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    AttackReport::Connections(n)
}
