//! Two c-toxcore peers befriended through a private `tox-bootstrapd`, and the
//! baseline figures later benchmarks compare toxlink against.
//!
//! [`connect_pair`] starts two harnesses, bootstraps both to the daemon, adds
//! each other with `tox_friend_add_norequest` (docs/PROTOCOL.md §7.1) and waits
//! until both report the friend connected. For [`Transport::TcpRelay`] both
//! run with `--no-udp` and get the daemon as a TCP relay **and** as a
//! bootstrap node. Observed with libtoxcore 0.2.18: with the relay alone
//! (`tox_add_tcp_relay` only) neither side reports itself online and the
//! friends never connect within 60 s; with `tox_bootstrap` + relay on both
//! sides they connect over TCP in about 9 s; if only one side has the relay,
//! the other never comes online. Likely reason (inferred, not traced):
//! friends are found through the onion (docs/PROTOCOL.md §7.2), and a TCP-only
//! node builds its onion paths from nodes passed to `tox_bootstrap`, which
//! the relay call does not provide.
//!
//! Observed figures and caveats (loopback, shared 2-core machine): set-up
//! takes 8.5–10 s either way (presumably mostly onion announce), 20 000 × 1373-byte packets
//! move at about 2.3–2.9 MB/s, much of it c-toxcore's congestion-control
//! ramp-up. Through the TCP relay a burst sometimes collapses (4 of 9
//! runs): the rate falls to about 4–5 packets/s with about 560 ms latency,
//! or the friend connection drops (`friend_not_connected` at the sender).
//! Timeouts therefore bound every transfer.
//!
//! [`measure_pair`] then times connection set-up and a one-way burst of
//! custom lossless packets. Times come from `CLOCK_MONOTONIC` in both this
//! process and the harnesses, so they exclude pipe and scheduling latency of
//! the control channel.

use crate::bootstrapd::Bootstrapd;
use crate::error::{InteropError, Result};
use crate::harness::{ConnKind, Harness, HarnessOptions, MAX_CUSTOM_PACKET_SIZE};
use crate::process;
use std::fmt;
use std::time::Duration;
use tracing::info;

/// How the two peers are meant to reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Default c-toxcore with UDP: direct UDP connection expected.
    Udp,
    /// Both peers without UDP, through the daemon's TCP relay.
    TcpRelay,
}

impl Transport {
    /// The connection kind c-toxcore should report.
    pub fn expected_kind(self) -> ConnKind {
        match self {
            Transport::Udp => ConnKind::Udp,
            Transport::TcpRelay => ConnKind::Tcp,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::TcpRelay => "TCP relay",
        })
    }
}

/// Two connected c-toxcore peers.
#[derive(Debug)]
pub struct Pair {
    /// First peer.
    pub a: Harness,
    /// Second peer.
    pub b: Harness,
    /// `b`'s friend number at `a`.
    pub a_friend: u32,
    /// `a`'s friend number at `b`.
    pub b_friend: u32,
    /// How `a` sees `b` connected.
    pub a_kind: ConnKind,
    /// How `b` sees `a` connected.
    pub b_kind: ConnKind,
    /// From just before the first `ADDFRIEND` until both reported the
    /// connection.
    pub connect_time: Duration,
}

/// Starts two harnesses (options `a_opts`, `b_opts`; `--no-udp` is added for
/// [`Transport::TcpRelay`]), introduces them to `bootstrapd` as described in
/// the module documentation, befriends them and waits ≤ `connect_timeout`
/// for both to see the other connected.
pub fn connect_pair(
    bootstrapd: &Bootstrapd,
    transport: Transport,
    a_opts: &HarnessOptions,
    b_opts: &HarnessOptions,
    connect_timeout: Duration,
) -> Result<Pair> {
    let prepare = |o: &HarnessOptions| {
        let o = o.clone();
        match transport {
            Transport::Udp => o,
            Transport::TcpRelay => o.no_udp(),
        }
    };
    let mut a = Harness::start(&prepare(a_opts))?;
    let mut b = Harness::start(&prepare(b_opts))?;
    for h in [&mut a, &mut b] {
        h.bootstrap(bootstrapd.udp_addr(), &bootstrapd.public_key())?;
        if transport == Transport::TcpRelay {
            h.add_tcp_relay(bootstrapd.tcp_addr(), &bootstrapd.public_key())?;
        }
    }
    let t0 = process::mono_us();
    let a_friend = a.add_friend(&b.public_key())?;
    let b_friend = b.add_friend(&a.public_key())?;
    let ea = a.wait_connected_event(a_friend, connect_timeout)?;
    let eb = b.wait_connected_event(b_friend, connect_timeout)?;
    let connect_time = Duration::from_micros(ea.mono_us.max(eb.mono_us).saturating_sub(t0));
    info!(%transport, ?connect_time, a = %ea.kind, b = %eb.kind, "c-toxcore pair connected");
    Ok(Pair {
        a,
        b,
        a_friend,
        b_friend,
        a_kind: ea.kind,
        b_kind: eb.kind,
        connect_time,
    })
}

/// What [`measure_pair`] does.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Custom lossless packets sent from `a` to `b` (default 20 000).
    pub packets: u32,
    /// Size of each, id byte included (default 1373, the maximum).
    pub packet_size: usize,
    /// Bound on connection set-up (default 60 s).
    pub connect_timeout: Duration,
    /// Bound on the transfer (default 60 s; c-toxcore moves 20 000 × 1373
    /// bytes in about 10 s over loopback UDP, but through a TCP relay it
    /// sometimes collapses to a few packets per second, see the crate notes).
    pub transfer_timeout: Duration,
    /// Measure over UDP (default true).
    pub udp: bool,
    /// Measure over the TCP relay (default true).
    pub tcp: bool,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            packets: 20_000,
            packet_size: MAX_CUSTOM_PACKET_SIZE,
            connect_timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(60),
            udp: true,
            tcp: true,
        }
    }
}

/// Figures of one transport.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFigures {
    /// What was set up.
    pub transport: Transport,
    /// What `a` reported (the one that sends).
    pub kind: ConnKind,
    /// Friend add → both connected.
    pub connect_time: Duration,
    /// Good, distinct packets received by `b`.
    pub packets: u64,
    /// Their bytes (id byte included).
    pub bytes: u64,
    /// From the first send at `a` to the last packet at `b`.
    pub transfer_time: Duration,
    /// `bytes / transfer_time` in MB/s (10^6 bytes).
    pub mbytes_per_s: f64,
    /// Lost, duplicate, reordered and corrupt packets (all 0 for lossless).
    pub lost: u64,
    /// Duplicates seen by `b`.
    pub dup: u64,
    /// Reordered packets seen by `b`.
    pub reordered: u64,
    /// Checksum failures seen by `b`.
    pub bad: u64,
    /// Longest pause between two packets at `b`.
    pub max_gap: Duration,
    /// Mean one-way latency.
    pub latency_avg: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
}

impl fmt::Display for LinkFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (reported {}): connect {:.2} s; {} packets / {} bytes in {:.3} s = {:.2} MB/s; \
             lost {} dup {} reordered {} bad {}; max gap {:.1} ms; latency avg {:.1} ms max {:.1} ms",
            self.transport,
            self.kind,
            self.connect_time.as_secs_f64(),
            self.packets,
            self.bytes,
            self.transfer_time.as_secs_f64(),
            self.mbytes_per_s,
            self.lost,
            self.dup,
            self.reordered,
            self.bad,
            self.max_gap.as_secs_f64() * 1e3,
            self.latency_avg.as_secs_f64() * 1e3,
            self.latency_max.as_secs_f64() * 1e3,
        )
    }
}

/// Result of [`measure_pair`]: one entry per requested transport.
#[derive(Debug)]
pub struct PairFigures {
    /// UDP figures, if requested.
    pub udp: Option<Result<LinkFigures>>,
    /// TCP relay figures, if requested.
    pub tcp: Option<Result<LinkFigures>>,
}

impl fmt::Display for PairFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, r) in [("udp", &self.udp), ("tcp", &self.tcp)] {
            match r {
                None => writeln!(f, "{name}: not measured")?,
                Some(Ok(x)) => writeln!(f, "{name}: {x}")?,
                Some(Err(e)) => writeln!(f, "{name}: FAILED: {e}")?,
            }
        }
        Ok(())
    }
}

/// Measures connection set-up time and custom-lossless throughput between
/// two c-toxcore peers, each transport with a fresh daemon and fresh peers.
/// A failing transport is reported in its entry; `Err` only if nothing could
/// be attempted (e.g. a missing program).
pub fn measure_pair(opts: &PairOptions) -> Result<PairFigures> {
    if !crate::bootstrapd::bootstrapd_available() {
        return Err(InteropError::Unavailable("tox-bootstrapd".into()));
    }
    crate::harness::build_harness()?;
    let run = |t| measure_link(t, opts);
    Ok(PairFigures {
        udp: opts.udp.then(|| run(Transport::Udp)),
        tcp: opts.tcp.then(|| run(Transport::TcpRelay)),
    })
}

/// One transport: daemon, pair, burst from `a` to `b`.
pub fn measure_link(transport: Transport, opts: &PairOptions) -> Result<LinkFigures> {
    let bsd = Bootstrapd::start()?;
    let o = HarnessOptions::new();
    let mut p = connect_pair(&bsd, transport, &o, &o, opts.connect_timeout)?;
    let before = p.b.stats(p.b_friend)?;
    let sent = p.a.send_custom(
        p.a_friend,
        opts.packets,
        opts.packet_size,
        160,
        opts.transfer_timeout,
    )?;
    if let Some(e) = sent.error {
        return Err(InteropError::Protocol(format!(
            "sender stopped after {} packets: {e}",
            sent.accepted
        )));
    }
    let want = before.custom.good() + u64::from(opts.packets);
    let after = p.b.wait_stats(
        p.b_friend,
        opts.transfer_timeout,
        Duration::from_millis(50),
        |s| s.custom.good() >= want,
    )?;
    let packets = after.custom.good() - before.custom.good();
    let bytes = after.custom.bytes_rx - before.custom.bytes_rx;
    let transfer_time =
        Duration::from_micros(after.custom.last_rx_us.saturating_sub(sent.start_us));
    let secs = transfer_time.as_secs_f64();
    let figures = LinkFigures {
        transport,
        kind: p.a_kind,
        connect_time: p.connect_time,
        packets,
        bytes,
        transfer_time,
        mbytes_per_s: if secs > 0.0 {
            bytes as f64 / secs / 1e6
        } else {
            0.0
        },
        lost: after.custom.lost,
        dup: after.custom.dup,
        reordered: after.custom.reordered,
        bad: after.custom.bad,
        max_gap: Duration::from_micros(after.custom.max_gap_us),
        latency_avg: Duration::from_micros(after.custom.lat_avg_us),
        latency_max: Duration::from_micros(after.custom.lat_max_us),
    };
    info!(%figures, "measured");
    p.a.quit()?;
    p.b.quit()?;
    bsd.stop();
    Ok(figures)
}
