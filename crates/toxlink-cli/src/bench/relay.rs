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

use rand_core::OsRng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::relay_client::ClientEvent;

use super::relay_attack::attack;
use super::relay_link::{loopback_src, online, Link};
use super::target::{rss_kib, start_toxlink, Target};
use super::RelayBenchArgs;
#[cfg(not(feature = "c-toxcore-bench"))]
use super::C_TOXCORE_NOT_BUILT;
#[cfg(feature = "c-toxcore-bench")]
use toxlink_proto::crypto::PublicKey;

/// Forwarding throughput over `pairs` pairs: (total MB/s, per-pair MB/s).
pub(super) async fn throughput(
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
pub(super) fn cpu_secs(pid: u32) -> f64 {
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

pub(super) fn jain(x: &[f64]) -> f64 {
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

pub(super) async fn relay(a: RelayBenchArgs) -> Result<(), String> {
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
