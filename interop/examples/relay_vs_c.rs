//! Figures, same run: connection set-up time and custom-lossless throughput
//! through a TCP relay, toxlink ↔ c-toxcore next to c-toxcore ↔ c-toxcore
//! (issue 5, "Relay" figures).
//!
//! `cargo run --release -p toxlink-interop --example relay_vs_c [PACKETS] [SIZE]`
//! (defaults 2000 packets of 1373 bytes, id byte included). Needs
//! libtoxcore-dev and toxcore-utils (tox-bootstrapd).
//!
//! * toxlink ↔ c-toxcore, once through a toxlink relay and once through
//!   tox-bootstrapd's: as in `tests/friend_relay.rs` — the harness has the
//!   relay (`tox_add_tcp_relay`) and us as a friend; our node has the
//!   relay, the peer's keys, and its UDP path cut; set-up = our
//!   `connect_via_relays` call → the harness reports `CONN tcp`. Then one
//!   direction after the other: first send → last packet received.
//! * c-toxcore ↔ c-toxcore: `measure_link(Transport::TcpRelay)` — two
//!   TCP-only harnesses with tox-bootstrapd as bootstrap node and relay;
//!   set-up includes finding each other through the onion (they cannot be
//!   handed the other's address).
//!
//! Observed (release, 2 shared cores, 2,000 × 1373 B, two runs): toxlink ↔
//! c-toxcore set-up 0.2–1.2 s through the toxlink relay (1.2 s when our
//! first OOB cookie request arrives before c-toxcore's relay link is up and
//! is re-sent after 1 s) and 1.26–1.31 s through tox-bootstrapd; toxlink →
//! c-toxcore 0.79–0.80 MB/s (toxlink relay) and 0.62–0.63 MB/s
//! (tox-bootstrapd); c-toxcore → toxlink 0.82 and 0.65–0.67 MB/s; c-toxcore
//! ↔ c-toxcore set-up 9.1–9.2 s (onion discovery) and 0.57–0.58 MB/s. The
//! relay-path rate is set by c-toxcore (it drains its relay socket slowly,
//! and its own sender is the other end), not by toxlink.

use std::net::SocketAddr;
use std::time::Duration;
use toxlink::toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Friend, FriendConfig, FriendEvent, Node};
use toxlink_faults::FaultyRelay;
use toxlink_interop::bootstrapd::Bootstrapd;
use toxlink_interop::harness::{custom_packet, mono_us, ConnKind};
use toxlink_interop::measure::measure_link;
use toxlink_interop::{Harness, HarnessOptions, PairOptions, Transport};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Ours {
    connect: Duration,
    tx_secs: f64,
    tx_clean: bool,
    rx_secs: f64,
    rx_in_order: bool,
}

fn toxlink_vs_c(bootstrapd: bool, packets: u32, size: usize) -> Res<Ours> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let daemon = if bootstrapd {
        Some(Bootstrapd::start()?)
    } else {
        None
    };
    let toxlink_relay = if bootstrapd {
        None
    } else {
        Some(rt.block_on(FaultyRelay::start())?)
    };
    let (relay_pk, relay_addr) = match (&daemon, &toxlink_relay) {
        (Some(d), _) => (PublicKey(d.public_key()), d.tcp_addr()),
        (None, Some(t)) => (t.public_key(), t.addr()),
        (None, None) => return Err("no relay".into()),
    };
    let mut h = Harness::start(&HarnessOptions::new())?;
    h.add_tcp_relay(relay_addr, &relay_pk.0)?;
    // As in the tests (see tests/common/mod.rs, SEND_BUFFER).
    let mut cfg = NodeConfig::default();
    cfg.session.send_buffer = 64;
    let node = rt.block_on(Node::bind(
        "127.0.0.1:0".parse()?,
        KeyPair::generate(&mut rand_core::OsRng),
        cfg,
    ))?;
    let friend = h.add_friend(&node.public_key().0)?;
    let udp: SocketAddr = format!("127.0.0.1:{}", h.udp_port()).parse()?;
    let (peer, dht) = (PublicKey(h.public_key()), PublicKey(h.dht_key()));
    {
        let _g = rt.enter();
        node.add_relay(relay_pk, relay_addr);
        node.set_udp_blocked(udp, true);
    }

    let t0 = mono_us();
    let f = rt.block_on(async {
        let conn =
            tokio::time::timeout(Duration::from_secs(30), node.connect_via_relays(peer, dht))
                .await??;
        let f = Friend::start(conn, FriendConfig::default());
        loop {
            match tokio::time::timeout(Duration::from_secs(10), f.next_event()).await? {
                Some(FriendEvent::Online) => break,
                Some(_) => {}
                None => return Err::<_, Box<dyn std::error::Error>>("closed".into()),
            }
        }
        Ok(f)
    })?;
    let ev = h.wait_connected_event(friend, Duration::from_secs(20))?;
    if ev.kind != ConnKind::Tcp {
        return Err(format!("c-toxcore reports {}", ev.kind).into());
    }
    let connect = Duration::from_micros(ev.mono_us.saturating_sub(t0));

    // toxlink → c-toxcore.
    let start = mono_us();
    rt.block_on(async {
        for seq in 0..packets {
            f.send_custom_lossless(&custom_packet(160, seq, size, mono_us()))
                .await?;
        }
        Ok::<_, toxlink::FriendError>(())
    })?;
    let s = h.wait_stats(
        friend,
        Duration::from_secs(120),
        Duration::from_millis(20),
        |s| s.custom.good() >= u64::from(packets),
    )?;
    let tx_secs = s.custom.last_rx_us.saturating_sub(start) as f64 / 1e6;
    let tx_clean = s.custom.lost + s.custom.dup + s.custom.reordered + s.custom.bad == 0;

    // c-toxcore → toxlink.
    h.start_custom(friend, packets, size, 170)?;
    let mut in_order = true;
    let last = rt.block_on(async {
        let mut got = 0u32;
        let mut last = 0;
        while got < packets {
            match tokio::time::timeout(Duration::from_secs(120), f.next_event()).await? {
                Some(FriendEvent::CustomLossless(d)) if d.first() == Some(&170) => {
                    last = mono_us();
                    in_order &= d.get(1..5) == Some(&got.to_be_bytes()[..]);
                    got += 1;
                }
                Some(_) => {}
                None => return Err::<_, Box<dyn std::error::Error>>("closed".into()),
            }
        }
        Ok(last)
    })?;
    let sent = h.wait_sent(Duration::from_secs(10))?;
    let rx_secs = last.saturating_sub(sent.start_us) as f64 / 1e6;
    f.close();
    h.quit()?;
    drop(toxlink_relay);
    if let Some(d) = daemon {
        d.stop();
    }
    Ok(Ours {
        connect,
        tx_secs,
        tx_clean,
        rx_secs,
        rx_in_order: in_order,
    })
}

fn main() -> Res<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let packets: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1373);
    let mb = |secs: f64| f64::from(packets) * size as f64 / secs / 1e6;
    println!(
        "{packets} custom lossless packets of {size} bytes, through a TCP relay on loopback\n"
    );

    let mut rows = Vec::new();
    for (name, bsd) in [("toxlink relay", false), ("tox-bootstrapd relay", true)] {
        rows.push((name, toxlink_vs_c(bsd, packets, size)));
    }
    let opts = PairOptions {
        packets,
        packet_size: size,
        udp: false,
        ..PairOptions::default()
    };
    let c = measure_link(Transport::TcpRelay, &opts);

    println!("| pair | relay | set-up | throughput a → b | throughput b → a |");
    println!("|---|---|---|---|---|");
    for (name, r) in &rows {
        match r {
            Ok(o) => println!(
                "| toxlink ↔ c-toxcore | {name} | {:.1} ms | toxlink → c: {:.2} s, {:.2} MB/s{} | c → toxlink: {:.2} s, {:.2} MB/s{} |",
                o.connect.as_secs_f64() * 1e3,
                o.tx_secs,
                mb(o.tx_secs),
                if o.tx_clean { "" } else { " (LOSS/REORDER!)" },
                o.rx_secs,
                mb(o.rx_secs),
                if o.rx_in_order { "" } else { " (OUT OF ORDER!)" },
            ),
            Err(e) => println!("| toxlink ↔ c-toxcore | {name} | FAILED: {e} | | |"),
        }
    }
    match &c {
        Ok(c) => {
            println!(
                "| c-toxcore ↔ c-toxcore | tox-bootstrapd relay | {:.1} ms (onion discovery included) | c → c: {:.2} s, {:.2} MB/s | — |",
                c.connect_time.as_secs_f64() * 1e3,
                c.transfer_time.as_secs_f64(),
                c.mbytes_per_s,
            );
            println!("\nc-toxcore pair detail: {c}");
        }
        Err(e) => println!("| c-toxcore ↔ c-toxcore | tox-bootstrapd relay | FAILED: {e} | | |"),
    }
    Ok(())
}
