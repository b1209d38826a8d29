//! `toxlink bench relay --attack` (see [`super::relay`](mod@super::relay)): honest pairs
//! measured alone and while receivers that never read are flooded and a
//! connection flood runs.

use rand_core::OsRng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_client::{Client, ClientConfig, ClientEvent, LinkState};

use super::relay::{jain, throughput};
use super::relay_link::{connect_from, loopback_src, Link};
use super::target::{rss_kib, start_toxlink_with, Target};
use super::RelayBenchArgs;

/// The relay limits of the attack run: small queues, so that the receivers
/// that never read hold twice the global budget.
const ATTACK_CONFIG: &str = "[limits]\nqueue_bytes = 65536\ntotal_queue_bytes = 67108864\n";

/// Attacker senders; each is routed with `receivers / ATTACK_SENDERS`
/// receivers (at most 240 per link).
const ATTACK_SENDERS: usize = 10;

/// `toxlink bench relay --attack`: honest throughput alone, while the
/// attackers fill their receivers and while they hold them, on one relay
/// process.
pub(super) async fn attack(a: &RelayBenchArgs) -> Result<(), String> {
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
    // The baseline again, the attack over: the machine's own drift between
    // the phases (a noisy 2-core box) is halved by using the mean of both.
    let (after, per_after, cpu_after) =
        throughput(&t, pairs, a.seconds, a.write_chunk, a.window).await?;
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
    println!(
        "honest, alone again:     {after:>7.1} MB/s over {pairs} pairs (Jain {:.3}), relay CPU {:.0}%",
        jain(&per_after),
        cpu_after * 100.0
    );
    let base = (alone + after) / 2.0;
    let pct = |x: f64| if base > 0.0 { x / base * 100.0 } else { 0.0 };
    println!(
        "honest throughput kept (against the mean of both baselines): {:.1} % during the fill, {:.1} % while the attack holds",
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
