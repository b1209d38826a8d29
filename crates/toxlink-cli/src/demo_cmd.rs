//! `toxlink demo`: the whole story on loopback, no arguments needed.
//!
//! Three toxlink relays and two peers start in this process. Peer A sends a
//! generated stream (`--size`, 256 MiB by default) to peer B as lossless
//! packets while both chat; the stream starts on the relays (direct UDP is
//! blocked). Mid-transfer the demo kills the relay carrying the traffic
//! (and later brings it back), turns the relay then carrying it into one that
//! corrupts 10 % of what it forwards, opens the direct UDP path and later
//! closes it again. A progress bar shows bytes, throughput and the current
//! path; path events are printed as a timeline; at the end a table (or, with
//! `--json`, one JSON object on stdout) gives bytes, throughput, the longest
//! delivery gap, path switches, relays blamed and replaced, and the SHA-256
//! of what was sent and what arrived.
//!
//! Every packet carries its sequence number and content derived from the
//! seed, so the receiver counts lost, duplicated, reordered and corrupted
//! packets itself; the exit status is non-zero if any is not zero or the
//! checksums differ.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use toxlink::{Connection, Node, Received};
use toxlink_cli::text::hex;
use toxlink_faults::FaultyRelay;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::node::{NodeConfig, PathEventKind, RelayEvent, Route};
use toxlink_proto::paths::pool::LossReason;
use toxlink_proto::relay_server::FaultConfig;

/// Lossless packet id of stream data (a custom lossless id, §4.8).
const DATA_ID: u8 = 160;
/// Lossless packet id of chat lines.
const CHAT_ID: u8 = 161;
/// Payload bytes per data packet (1373-byte packets: id, seq, payload).
const PAYLOAD: usize = 1373 - 1 - 8;
/// A chat line every this long.
const CHAT_EVERY: Duration = Duration::from_millis(200);
/// The run fails if nothing arrives for this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Arguments of `toxlink demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Bytes to send: a number with an optional K, M, G, KiB, MiB or GiB suffix.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub size: u64,
    /// Seed of the keys and of the generated stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run without killing relays, corrupting or switching UDP.
    #[arg(long)]
    pub no_faults: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `256MiB`, `64M`, `1000` (the CLI's one size syntax,
/// [`toxlink_cli::text::parse_bytes`]) within the demo's bounds.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let v = toxlink_cli::text::parse_bytes(s)?;
    if v == 0 {
        return Err("size must be at least 1 byte".into());
    }
    if v > 64 << 30 {
        return Err(format!("size {s:?} is above the 64 GiB limit"));
    }
    Ok(v)
}

/// The payload of packet `seq` (deterministic from the seed).
fn fill(seed: u64, seq: u64, out: &mut [u8]) {
    let mut x = seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    for chunk in out.chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Counters shared between the tasks.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    chat_sent: AtomicU64,
    chat_received: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    max_gap_us: AtomicU64,
    done: AtomicBool,
}

struct Receiver {
    sha: Sha256,
    next: u64,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
struct Line {
    at: Duration,
    text: String,
}

/// Names relays "relay 1..3" in the output.
struct Names {
    relays: Vec<PublicKey>,
}

impl Names {
    fn relay(&self, pk: &PublicKey) -> String {
        match self.relays.iter().position(|r| r == pk) {
            Some(i) => format!("relay {}", i + 1),
            None => format!("relay {}", &pk.to_hex()[..8]),
        }
    }

    fn route(&self, r: &Route<SocketAddr>) -> String {
        match r {
            Route::Udp(a) => format!("UDP {a}"),
            Route::Relay { relay, .. } => self.relay(relay),
            other => format!("{other:?}"),
        }
    }

    fn key(&self, k: Option<Route<SocketAddr>>) -> String {
        match k {
            None => "(none yet)".into(),
            Some(Route::Udp(_)) => "direct UDP".into(),
            Some(Route::Relay { relay, .. }) => self.relay(&relay),
            Some(other) => format!("{other:?}"),
        }
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs the demo; `Err` is a one-line reason (setup failure or data loss).
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let t0 = Instant::now();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            FaultyRelay::start()
                .await
                .map_err(|e| format!("cannot start a relay on 127.0.0.1: {e}"))?,
        );
    }
    let names = Names {
        relays: relays.iter().map(|r| r.public_key()).collect(),
    };
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let cfg = NodeConfig {
        dht_is_real: true,
        ..NodeConfig::default()
    };
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let a = Node::bind(loopback, KeyPair::generate(&mut rng), cfg.clone())
        .await
        .map_err(|e| format!("cannot bind peer A: {e}"))?;
    let b = Arc::new(
        Node::bind(loopback, KeyPair::generate(&mut rng), cfg)
            .await
            .map_err(|e| format!("cannot bind peer B: {e}"))?,
    );
    b.allow(a.public_key());
    for r in &relays {
        a.add_relay(r.public_key(), r.addr());
        b.add_relay(r.public_key(), r.addr());
    }
    // Start on the relays: direct UDP is closed until the demo opens it.
    a.set_udp_blocked(b.local_addr(), true);
    b.set_udp_blocked(a.local_addr(), true);
    let bb = b.clone();
    let accept = tokio::spawn(async move { bb.accept().await });
    let ca = tokio::time::timeout(
        Duration::from_secs(20),
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
    )
    .await
    .map_err(|_| "peers did not connect through the relays within 20 s".to_string())?
    .map_err(|e| format!("peer A could not connect: {e}"))?;
    let cb = tokio::time::timeout(Duration::from_secs(5), accept)
        .await
        .map_err(|_| "peer B did not accept within 5 s".to_string())?
        .map_err(|e| format!("accept task failed: {e}"))?
        .ok_or("peer B stopped accepting")?;
    let setup = t0.elapsed();

    let stats = Arc::new(Stats::default());
    let total_packets = args.size.div_ceil(PAYLOAD as u64);
    let sender = tokio::spawn(send_stream(ca.clone(), args.seed, args.size, stats.clone()));
    let receiver = Arc::new(Mutex::new(Receiver {
        sha: Sha256::new(),
        next: 0,
    }));
    let recv_task = tokio::spawn(receive_stream(
        cb.clone(),
        args.seed,
        args.size,
        total_packets,
        stats.clone(),
        receiver.clone(),
    ));

    let interactive = !args.json && std::io::stderr().is_terminal();
    let pb = ProgressBar::with_draw_target(
        Some(args.size),
        if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .map_err(|e| format!("progress bar: {e}"))?
        .progress_chars("=> "),
    );
    let mut timeline: Vec<Line> = Vec::new();
    let say = |timeline: &mut Vec<Line>, text: String| {
        let at = t0.elapsed();
        let line = format!("[{:>7.3} s] {text}", at.as_secs_f64());
        if interactive {
            pb.println(line);
        } else if !args.json {
            eprintln!("{line}");
        }
        timeline.push(Line { at, text });
    };
    say(
        &mut timeline,
        format!(
            "connected through the relays in {:.0} ms (UDP closed)",
            setup.as_secs_f64() * 1e3
        ),
    );

    // The fault schedule, by share of the stream received.
    let mut step = 0usize;
    let steps = if args.no_faults { 0 } else { 5 };
    let mut killed: Option<usize> = None;
    let mut switches: Vec<(Duration, String)> = Vec::new();
    let mut blamed: Vec<(Duration, String, String)> = Vec::new();
    let mut replaced: Vec<(Duration, String)> = Vec::new();
    let mut path_events = 0u64;
    // Per peer: a relay was dropped, so the next one added replaces it.
    let mut dropped = [false; 2];
    let mut last_progress = (0u64, Instant::now());
    let peer_b = b.public_key();
    loop {
        let got = stats.received.load(Ordering::Relaxed);
        pb.set_position(got.min(args.size));
        pb.set_message(format!("path: {}", names.key(a.primary(&peer_b))));
        let frac = got as f64 / args.size as f64;
        if step < steps && frac >= [0.15, 0.30, 0.45, 0.60, 0.80][step] {
            match step {
                0 => {
                    let i = primary_relay(&a, &peer_b, &names).unwrap_or(0);
                    if let Some(r) = relays.get_mut(i) {
                        r.kill().await;
                    }
                    killed = Some(i);
                    say(&mut timeline, format!("FAULT: relay {} killed", i + 1));
                }
                1 => {
                    if let Some(i) = killed {
                        if let Some(r) = relays.get_mut(i) {
                            r.restart()
                                .await
                                .map_err(|e| format!("cannot restart relay {}: {e}", i + 1))?;
                        }
                        say(&mut timeline, format!("relay {} is back", i + 1));
                    }
                }
                2 => {
                    let i = primary_relay(&a, &peer_b, &names)
                        .or_else(|| (0..3).find(|i| Some(*i) != killed))
                        .unwrap_or(0);
                    if let Some(r) = relays.get(i) {
                        r.set_faults(FaultConfig {
                            corrupt: 0.10,
                            seed: args.seed,
                            ..FaultConfig::default()
                        });
                    }
                    say(
                        &mut timeline,
                        format!("FAULT: relay {} corrupts 10% of what it forwards", i + 1),
                    );
                }
                3 => {
                    // The peers told each other their endpoints over the
                    // relays (node::discovery): once the firewall opens,
                    // they punch through and move to the direct path.
                    a.set_udp_blocked(b.local_addr(), false);
                    b.set_udp_blocked(a.local_addr(), false);
                    say(&mut timeline, "direct UDP opened".into());
                }
                _ => {
                    a.set_udp_blocked(b.local_addr(), true);
                    b.set_udp_blocked(a.local_addr(), true);
                    say(&mut timeline, "FAULT: direct UDP closed".into());
                }
            }
            step += 1;
        }
        // Path events of both peers.
        for (ni, (node, who)) in [(&a, "A"), (&*b, "B")].into_iter().enumerate() {
            while let Some(e) = node.poll_path_event() {
                path_events += 1;
                let at = e.at.saturating_duration_since(t0);
                let what = names.route(&e.addr);
                match e.kind {
                    PathEventKind::Primary { from } => {
                        let from = from.map_or("-".into(), |f| names.route(&f));
                        if who == "A" {
                            switches.push((at, format!("{from} -> {what}")));
                        }
                        say(
                            &mut timeline,
                            format!("{who}: now sending on {what} (was {from})"),
                        );
                    }
                    PathEventKind::RelayDropped { reason } => {
                        let why = match reason {
                            LossReason::Offline => "offline",
                            LossReason::Slow => "slow",
                            LossReason::Tampering => "tampering",
                            LossReason::Disconnected => "disconnected",
                            _ => "other",
                        };
                        if matches!(reason, LossReason::Tampering | LossReason::Disconnected) {
                            blamed.push((at, format!("{what} (for {who}'s peer)"), why.into()));
                        }
                        dropped[ni] = true;
                        say(&mut timeline, format!("{who}: {what} dropped ({why})"));
                    }
                    PathEventKind::RelayAdded => {
                        if dropped[ni] {
                            replaced.push((at, format!("{who}: {what}")));
                        }
                        say(&mut timeline, format!("{who}: {what} in use"));
                    }
                    PathEventKind::AuthFailure { failures } => {
                        say(
                            &mut timeline,
                            format!("{who}: packet through {what} failed authentication ({failures} in window)"),
                        );
                    }
                    PathEventKind::Health {
                        old,
                        new,
                        reason,
                        resent,
                    } => {
                        say(
                            &mut timeline,
                            format!(
                                "{who}: {what} {old:?} -> {new:?} ({reason:?}{})",
                                if resent > 0 {
                                    format!(", {resent} packets resent at once")
                                } else {
                                    String::new()
                                }
                            ),
                        );
                    }
                    other => say(&mut timeline, format!("{who}: {what}: {other:?}")),
                }
            }
            while let Some(e) = node.poll_relay_event() {
                let text = match e {
                    RelayEvent::Up { relay } => format!("{}: {} link up", who, names.relay(&relay)),
                    RelayEvent::Down { relay } => {
                        format!("{}: {} link down", who, names.relay(&relay))
                    }
                    RelayEvent::ProbeStarted { relay } => {
                        format!(
                            "{}: self-probe through {} started",
                            who,
                            names.relay(&relay)
                        )
                    }
                    RelayEvent::Probed(o) if o.background => format!(
                        "{}: background self-probe through {} arrived forged",
                        who,
                        names.relay(&o.relay)
                    ),
                    RelayEvent::Probed(o) => format!(
                        "{}: self-probe through {}: {} ({} intact, {} forged)",
                        who,
                        names.relay(&o.relay),
                        if o.ok { "good" } else { "FAILED" },
                        o.intact,
                        o.forged
                    ),
                    RelayEvent::Disconnected { relay, reason } => {
                        blamed.push((t0.elapsed(), names.relay(&relay), format!("{reason:?}")));
                        format!(
                            "{}: {} disconnected for everyone ({reason:?})",
                            who,
                            names.relay(&relay)
                        )
                    }
                    other => format!("{who}: {other:?}"),
                };
                say(&mut timeline, text);
            }
        }
        if stats.done.load(Ordering::Acquire) {
            break;
        }
        if got != last_progress.0 {
            last_progress = (got, Instant::now());
        } else if last_progress.1.elapsed() > STALL_LIMIT {
            pb.abandon();
            return Err(format!(
                "transfer stalled: nothing arrived for {} s at {got} of {} bytes",
                STALL_LIMIT.as_secs(),
                args.size
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = t0.elapsed().saturating_sub(setup).as_secs_f64();
    pb.finish_and_clear();
    let sha_sent = sender
        .await
        .map_err(|e| format!("sender task failed: {e}"))??;
    recv_task
        .await
        .map_err(|e| format!("receiver task failed: {e}"))??;
    let sha_received = {
        let r = receiver.lock().map_err(|_| "receiver state poisoned")?;
        hex(&r.sha.clone().finalize())
    };
    let bytes = stats.received.load(Ordering::Relaxed);
    let lost = stats.lost.load(Ordering::Relaxed);
    let duplicated = stats.duplicated.load(Ordering::Relaxed);
    let reordered = stats.reordered.load(Ordering::Relaxed);
    let corrupted = stats.corrupted.load(Ordering::Relaxed);
    let max_gap_ms = stats.max_gap_us.load(Ordering::Relaxed) as f64 / 1e3;
    let chat_sent = stats.chat_sent.load(Ordering::Relaxed);
    let chat_received = stats.chat_received.load(Ordering::Relaxed);
    let mb_s = bytes as f64 / 1e6 / seconds.max(1e-9);
    let ok = lost == 0
        && duplicated == 0
        && reordered == 0
        && corrupted == 0
        && sha_sent == sha_received
        && bytes == args.size;
    if args.json {
        let sw: Vec<String> = switches
            .iter()
            .map(|(t, s)| {
                format!(
                    "{{\"at_s\":{:.3},\"switch\":{}}}",
                    t.as_secs_f64(),
                    json_str(s)
                )
            })
            .collect();
        let bl: Vec<String> = blamed
            .iter()
            .map(|(t, r, why)| {
                format!(
                    "{{\"at_s\":{:.3},\"relay\":{},\"reason\":{}}}",
                    t.as_secs_f64(),
                    json_str(r),
                    json_str(why)
                )
            })
            .collect();
        let tl: Vec<String> = timeline
            .iter()
            .map(|l| {
                format!(
                    "{{\"at_s\":{:.3},\"event\":{}}}",
                    l.at.as_secs_f64(),
                    json_str(&l.text)
                )
            })
            .collect();
        println!(
            "{{\"bytes\":{bytes},\"seconds\":{seconds:.3},\"throughput_mb_s\":{mb_s:.1},\"lost\":{lost},\"duplicated\":{duplicated},\"reordered\":{reordered},\"corrupted\":{corrupted},\"max_gap_ms\":{max_gap_ms:.1},\"path_switches\":{},\"path_events\":{path_events},\"relays_blamed\":{},\"relays_replaced\":{},\"chat_sent\":{chat_sent},\"chat_received\":{chat_received},\"sha256_sent\":{},\"sha256_received\":{},\"seed\":{},\"faults\":{},\"switches\":[{}],\"blamed\":[{}],\"timeline\":[{}],\"ok\":{ok}}}",
            switches.len(),
            blamed.len(),
            replaced.len(),
            json_str(&sha_sent),
            json_str(&sha_received),
            args.seed,
            !args.no_faults,
            sw.join(","),
            bl.join(","),
            tl.join(","),
        );
    } else {
        let mut t = String::new();
        let _ = writeln!(t, "\ntoxlink demo — summary (seed {})", args.seed);
        let _ = writeln!(t, "  bytes delivered      {bytes} of {}", args.size);
        let _ = writeln!(
            t,
            "  time                 {seconds:.2} s ({mb_s:.1} MB/s), set-up {:.0} ms",
            setup.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            t,
            "  chat lines           {chat_received} of {chat_sent} received, in order"
        );
        let _ = writeln!(t, "  longest delivery gap {max_gap_ms:.1} ms");
        let _ = writeln!(t, "  lost / duplicated / reordered / corrupted   {lost} / {duplicated} / {reordered} / {corrupted}");
        let _ = writeln!(t, "  path events          {path_events}");
        let _ = writeln!(t, "  path switches (A)    {}", switches.len());
        for (at, s) in &switches {
            let _ = writeln!(t, "      {:>8.3} s  {s}", at.as_secs_f64());
        }
        let _ = writeln!(t, "  relays blamed        {}", blamed.len());
        for (at, r, why) in &blamed {
            let _ = writeln!(t, "      {:>8.3} s  {r}: {why}", at.as_secs_f64());
        }
        let _ = writeln!(t, "  relays (re)added     {}", replaced.len());
        for (at, r) in &replaced {
            let _ = writeln!(t, "      {:>8.3} s  {r}", at.as_secs_f64());
        }
        let _ = writeln!(t, "  SHA-256 sent         {sha_sent}");
        let _ = writeln!(t, "  SHA-256 received     {sha_received}");
        let _ = writeln!(
            t,
            "  result               {}",
            if ok {
                "OK: every byte arrived once, in order, intact"
            } else {
                "FAILED"
            }
        );
        print!("{t}");
    }
    drop(relays);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stream damaged: {lost} lost, {duplicated} duplicated, {reordered} reordered, {corrupted} corrupted, checksums {}",
            if sha_sent == sha_received { "equal" } else { "differ" }
        ))
    }
}

/// Index of the relay A currently sends on.
fn primary_relay(a: &Node, peer: &PublicKey, names: &Names) -> Option<usize> {
    let k = a.primary(peer)?;
    let r = k.relay()?;
    names.relays.iter().position(|x| x == r)
}

async fn send_stream(
    conn: Connection,
    seed: u64,
    size: u64,
    stats: Arc<Stats>,
) -> Result<String, String> {
    let mut sha = Sha256::new();
    let mut pkt = vec![0u8; 1 + 8 + PAYLOAD];
    let mut seq = 0u64;
    let mut left = size;
    let mut next_chat = Instant::now();
    let mut chat_n = 0u64;
    while left > 0 {
        if Instant::now() >= next_chat {
            next_chat += CHAT_EVERY;
            let line = format!("chat line {chat_n}: how is the transfer going?");
            let mut c = vec![CHAT_ID];
            c.extend_from_slice(&chat_n.to_be_bytes());
            c.extend_from_slice(line.as_bytes());
            conn.send_lossless(&c)
                .await
                .map_err(|e| format!("chat send failed: {e}"))?;
            chat_n += 1;
            stats.chat_sent.store(chat_n, Ordering::Relaxed);
        }
        let n = left.min(PAYLOAD as u64) as usize;
        pkt[0] = DATA_ID;
        pkt[1..9].copy_from_slice(&seq.to_be_bytes());
        fill(seed, seq, &mut pkt[9..9 + n]);
        sha.update(&pkt[9..9 + n]);
        conn.send_lossless(&pkt[..9 + n])
            .await
            .map_err(|e| format!("send failed at packet {seq}: {e}"))?;
        stats.sent.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
        seq += 1;
    }
    Ok(hex(&sha.finalize()))
}

async fn receive_stream(
    conn: Connection,
    seed: u64,
    size: u64,
    total: u64,
    stats: Arc<Stats>,
    state: Arc<Mutex<Receiver>>,
) -> Result<(), String> {
    let mut expect = vec![0u8; PAYLOAD];
    let mut last: Option<Instant> = None;
    let mut chat_next = 0u64;
    let mut done = 0u64;
    while done < total {
        let Some(r) = conn.recv().await else {
            stats.lost.store(total - done, Ordering::Relaxed);
            stats.done.store(true, Ordering::Release);
            return Err(format!("connection closed after {done} of {total} packets"));
        };
        let Received::Lossless(d) = r else {
            continue;
        };
        match d.first() {
            Some(&CHAT_ID) if d.len() >= 9 => {
                let n = u64::from_be_bytes(d[1..9].try_into().unwrap_or_default());
                if n != chat_next {
                    stats.reordered.fetch_add(1, Ordering::Relaxed);
                }
                chat_next = n + 1;
                stats.chat_received.fetch_add(1, Ordering::Relaxed);
            }
            Some(&DATA_ID) if d.len() >= 10 => {
                let now = Instant::now();
                if let Some(t) = last {
                    let gap = now.saturating_duration_since(t).as_micros() as u64;
                    stats.max_gap_us.fetch_max(gap, Ordering::Relaxed);
                }
                last = Some(now);
                let seq = u64::from_be_bytes(d[1..9].try_into().unwrap_or_default());
                let body = &d[9..];
                let mut st = state.lock().map_err(|_| "receiver state poisoned")?;
                if seq < st.next {
                    stats.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if seq > st.next {
                    stats.reordered.fetch_add(1, Ordering::Relaxed);
                    stats.lost.fetch_add(seq - st.next, Ordering::Relaxed);
                }
                let want = (size - seq.saturating_mul(PAYLOAD as u64)).min(PAYLOAD as u64) as usize;
                fill(seed, seq, &mut expect[..want]);
                if body != &expect[..want] {
                    stats.corrupted.fetch_add(1, Ordering::Relaxed);
                }
                st.sha.update(body);
                st.next = seq + 1;
                done = st.next;
                stats
                    .received
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    stats.done.store(true, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64M"), Ok(64_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("65GiB").is_err());
    }

    #[test]
    fn stream_content_depends_on_seed_and_sequence() {
        let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        fill(1, 5, &mut a);
        fill(1, 6, &mut b);
        fill(2, 5, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut a2 = [0u8; 64];
        fill(1, 5, &mut a2);
        assert_eq!(a, a2);
    }
}
