//! Figures, same run: connection set-up time and custom-lossless throughput
//! of toxlink ↔ c-toxcore next to c-toxcore ↔ c-toxcore (issue 5, item 4).
//!
//! `cargo run --release -p toxlink --example friend_vs_c [PACKETS] [SIZE]`
//! (defaults 20000 packets of 1373 bytes, id byte included). Needs
//! libtoxcore-dev and toxcore-utils (tox-bootstrapd).
//!
//! * c-toxcore ↔ c-toxcore: `toxlink_interop::measure_link` over UDP: two
//!   harnesses bootstrapped to a private tox-bootstrapd; set-up = first
//!   `ADDFRIEND` → both report the friend connected (c-toxcore has to find
//!   the friend through its DHT/onion, it cannot be handed an address);
//!   throughput = first send → last packet received.
//! * toxlink ↔ c-toxcore: our node is given the harness's keys and address
//!   (the harness has us as a friend); set-up = `Node::connect` called →
//!   the harness reports `CONN udp` (net_crypto handshake plus the Messenger
//!   ONLINE exchange); throughput measured both ways with the same packet
//!   layout and clock (`CLOCK_MONOTONIC`, shared by the processes).
//!
//! Observed (2 shared cores, 20,000 × 1373 B, three runs): toxlink ↔
//! c-toxcore set-up 151 ms (net_crypto established at ~101 ms: each of the
//! three round trips waits for the harness's next `tox_iterate`, ~50 ms when
//! idle); toxlink → c-toxcore 23–27 MB/s; c-toxcore → toxlink 3.6–3.9 MB/s
//! (c-toxcore's own sender congestion control); c-toxcore ↔ c-toxcore set-up
//! 9.5–10.2 s (DHT/onion discovery) and 2.7–3.1 MB/s.

use std::net::SocketAddr;
use std::time::Duration;
use toxlink::toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Friend, FriendConfig, FriendEvent, Node};
use toxlink_interop::harness::{custom_packet, mono_us};
use toxlink_interop::measure::measure_link;
use toxlink_interop::{Harness, HarnessOptions, PairOptions, Transport};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Ours {
    established: Duration,
    connect: Duration,
    online_here: Duration,
    tx_secs: f64,
    tx_lost: u64,
    rx_secs: f64,
    rx_in_order: bool,
}

fn toxlink_vs_c(packets: u32, size: usize) -> Res<Ours> {
    let mut h = Harness::start(&HarnessOptions::new())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node = rt.block_on(Node::bind(
        "127.0.0.1:0".parse()?,
        KeyPair::generate(&mut rand_core::OsRng),
        NodeConfig::default(),
    ))?;
    let friend = h.add_friend(&node.public_key().0)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", h.udp_port()).parse()?;
    let (peer, dht) = (PublicKey(h.public_key()), PublicKey(h.dht_key()));

    let t0 = mono_us();
    let mut established = Duration::ZERO;
    let f = rt.block_on(async {
        let conn =
            tokio::time::timeout(Duration::from_secs(20), node.connect(peer, dht, addr)).await??;
        established = Duration::from_micros(mono_us() - t0);
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
    let online_here = Duration::from_micros(mono_us() - t0);
    let ev = h.wait_connected_event(friend, Duration::from_secs(20))?;
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
    let tx_lost = s.custom.lost + s.custom.dup + s.custom.reordered + s.custom.bad;

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
    Ok(Ours {
        established,
        connect,
        online_here,
        tx_secs,
        tx_lost,
        rx_secs,
        rx_in_order: in_order,
    })
}

fn main() -> Res<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let packets: u32 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1373);
    let mb = |secs: f64| f64::from(packets) * size as f64 / secs / 1e6;
    println!("{packets} custom lossless packets of {size} bytes, loopback UDP\n");

    let ours = toxlink_vs_c(packets, size)?;
    let opts = PairOptions {
        packets,
        packet_size: size,
        tcp: false,
        ..PairOptions::default()
    };
    let c = measure_link(Transport::Udp, &opts)?;

    println!("| pair | set-up | throughput a → b | throughput b → a |");
    println!("|---|---|---|---|");
    println!(
        "| toxlink ↔ c-toxcore | {:.1} ms (net_crypto established {:.1} ms, online at ours {:.1} ms) | toxlink → c: {:.2} s, {:.1} MB/s{} | c → toxlink: {:.2} s, {:.1} MB/s{} |",
        ours.connect.as_secs_f64() * 1e3,
        ours.established.as_secs_f64() * 1e3,
        ours.online_here.as_secs_f64() * 1e3,
        ours.tx_secs,
        mb(ours.tx_secs),
        if ours.tx_lost == 0 { "" } else { " (LOSS/REORDER!)" },
        ours.rx_secs,
        mb(ours.rx_secs),
        if ours.rx_in_order { "" } else { " (OUT OF ORDER!)" },
    );
    println!(
        "| c-toxcore ↔ c-toxcore | {:.1} ms (DHT discovery included) | c → c: {:.2} s, {:.1} MB/s | — |",
        c.connect_time.as_secs_f64() * 1e3,
        c.transfer_time.as_secs_f64(),
        c.mbytes_per_s,
    );
    println!("\nc-toxcore pair detail: {c}");
    Ok(())
}
