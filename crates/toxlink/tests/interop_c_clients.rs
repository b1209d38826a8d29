//! Interop B: c-toxcore 0.2.18 clients use the toxlink relay.
//!
//! Two libtoxcore harness processes (interop/harness/harness.c, built with
//! the system compiler and pkg-config) run TCP-only (`--no-udp`). Both
//! bootstrap to a private tox-bootstrapd and get two TCP relays: the toxlink
//! relay (in this process, 127.0.0.1:0) and tox-bootstrapd's relay. They
//! befriend each other (`tox_friend_add_norequest` both ways) and connect.
//! The test then checks, on the toxlink relay's own counters, that both
//! completed the relay handshake, that a route between them exists, that the
//! server's keep-alive PINGs (interval shortened to 1 s) got matching PONGs
//! and that no link was closed; stops tox-bootstrapd; and exchanges messages
//! and 1,000 custom lossless packets each way, which must all arrive complete
//! and in order while neither peer reports the other offline, and which the
//! toxlink relay's forwarded-byte counter must account for.
//!
//! Why both relays and the bootstrap node (observed with libtoxcore 0.2.18,
//! see interop/src/measure.rs): TCP-only c-toxcore finds friends through the
//! onion, which it reaches through its first three relays; the toxlink relay
//! does not run the onion (it ignores ONION_REQUEST, docs/PROTOCOL.md §2.5), so
//! without tox-bootstrapd the peers never find each other.
//!
//! Why a set-up may be retried: a peer ties to a friend the relays named in
//! the friend's DHT-PK announcement (docs/PROTOCOL.md §7.2) and, when it accepts
//! an incoming handshake that came as OOB (§3), the relay that handshake came
//! through. When the connection is set up before a peer got the
//! announcement, that peer ties only the relay of the first handshake it
//! processed. Then it never asks the toxlink relay for a route (the relay's
//! trace log shows the other side's routing request, OOB cookie request,
//! the cookie response and the OOB handshake, then nothing from that side),
//! and once tox-bootstrapd is gone the other side's packets reach it as OOB,
//! which c-toxcore drops (no message arrived within 20 s in such a run).
//! This is c-toxcore's choice, not something the relay can answer. Observed:
//! with the toxlink relay added second, 2 of 7 set-ups had no route on it;
//! added first (c-toxcore polls its relay links in the order they were
//! added), 1 of 14. The test therefore adds it first and, if c-toxcore
//! connected without routing on it, starts over with fresh processes (at most
//! 3 attempts within 100 s; the attempts are printed). Everything after the
//! set-up is checked strictly.
//!
//! Set-up time varies: usually about 9 s, but in about 1 of 4 runs 40–70 s,
//! because c-toxcore also sends onion requests through the toxlink relay,
//! which drops them (counted as `drop_onion`), and must wait for those paths
//! to time out. The connect bound is therefore generous.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use toxlink::relay::{RelayServer, RelayServerConfig, RelayServerHandle};
use toxlink_interop::harness::{require_harness, ConnEvent, MAX_CUSTOM_PACKET_SIZE};
use toxlink_interop::{require_bootstrapd, Bootstrapd, ConnKind, Harness, HarnessOptions};
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::relay_server::{Counters, ServerConfig};

/// Bound on befriend → both connected (see the module notes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on all set-up attempts together.
const SETUP_BUDGET: Duration = Duration::from_secs(100);
/// Set-up attempts at most.
const MAX_ATTEMPTS: u32 = 3;
/// How long after connecting a route on the toxlink relay may take.
const ROUTE_WAIT: Duration = Duration::from_secs(5);
/// Bound on each wait during the exchange.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for relay counters to reach a value.
const COUNTER_TIMEOUT: Duration = Duration::from_secs(15);
/// The relay's keep-alive interval in this test (c-toxcore's is 30 s).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Custom lossless packets per direction.
const PACKETS: u32 = 1_000;
/// Packet sizes per direction (different, so mixed-up streams would show).
const SIZE_AB: usize = MAX_CUSTOM_PACKET_SIZE;
const SIZE_BA: usize = 500;
/// Messages per direction after tox-bootstrapd stopped.
const MESSAGES: usize = 5;

/// Polls the relay counters (every 50 ms, at most `COUNTER_TIMEOUT`) until
/// `done` holds; panics with the last counters otherwise.
fn wait_counters(
    relay: &RelayServerHandle,
    what: &str,
    mut done: impl FnMut(&Counters) -> bool,
) -> Counters {
    let deadline = Instant::now() + COUNTER_TIMEOUT;
    loop {
        let c = relay.counters();
        if done(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "toxlink relay counters: {what} not reached within {COUNTER_TIMEOUT:?}: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `CONN <friend> ...` events the harness printed and nobody consumed yet.
fn conn_events(h: &mut Harness, friend: u32) -> Vec<ConnEvent> {
    let prefix = format!("CONN {friend} ");
    h.unread_lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let mut it = rest.split_whitespace();
            let kind: ConnKind = it.next().and_then(|k| k.parse().ok()).expect("kind");
            let ms_since_start = it.next().and_then(|v| v.parse().ok()).expect("ms");
            let mono_us = it.next().and_then(|v| v.parse().ok()).expect("mono_us");
            ConnEvent {
                kind,
                ms_since_start,
                mono_us,
            }
        })
        .collect()
}

/// A usable set-up: both peers connected over TCP relays and routed to each
/// other on the toxlink relay.
struct Setup {
    bsd: Bootstrapd,
    a: Harness,
    b: Harness,
    /// b's friend number at a.
    af: u32,
    /// a's friend number at b.
    bf: u32,
}

/// One set-up attempt with fresh processes (see the module notes). `Err`
/// (with the reason) when c-toxcore did not route on the toxlink relay;
/// panics on anything else, including not connecting within `left`.
fn set_up(
    relay: &RelayServerHandle,
    relay_addr: SocketAddr,
    relay_pk: &[u8; 32],
    left: Duration,
) -> Result<Setup, String> {
    // Links of an earlier attempt are gone first (their processes exited).
    wait_counters(relay, "no clients", |c| c.clients == 0);
    let c0 = relay.counters();
    let bsd = Bootstrapd::start().expect("tox-bootstrapd starts");
    let o = HarnessOptions::new().no_udp();
    let mut a = Harness::start(&o.clone().name("a")).expect("harness a");
    let mut b = Harness::start(&o.name("b")).expect("harness b");
    for h in [&mut a, &mut b] {
        h.add_tcp_relay(relay_addr, relay_pk)
            .expect("RELAY toxlink");
        h.bootstrap(bsd.udp_addr(), &bsd.public_key())
            .expect("BOOTSTRAP");
        h.add_tcp_relay(bsd.tcp_addr(), &bsd.public_key())
            .expect("RELAY tox-bootstrapd");
    }

    // Handshakes: both c-toxcore nodes completed the relay handshake and
    // confirmed their links (§2.2) right after RELAY.
    let c = wait_counters(relay, "2 confirmed links", |c| c.confirmed >= 2);
    assert_eq!(
        (c.accepted - c0.accepted, c.handshakes - c0.handshakes),
        (2, 2),
        "{c:?}"
    );

    let t0 = Instant::now();
    let af = a.add_friend(&b.public_key()).expect("a adds b");
    let bf = b.add_friend(&a.public_key()).expect("b adds a");
    let timeout = left.min(CONNECT_TIMEOUT);
    let ea = a
        .wait_connected_event(af, timeout)
        .expect("a sees b connected");
    let eb = b
        .wait_connected_event(bf, timeout)
        .expect("b sees a connected");
    assert_eq!((ea.kind, eb.kind), (ConnKind::Tcp, ConnKind::Tcp));
    println!(
        "c-toxcore peers connected over TCP relays {:.2} s after befriending",
        t0.elapsed().as_secs_f64()
    );

    // Routing: both asked the toxlink relay for each other (§2.5). c-toxcore
    // asks right when it connects, or not at all.
    let until = Instant::now() + ROUTE_WAIT;
    while relay.counters().routes == 0 {
        if Instant::now() >= until {
            return Err(format!(
                "connected, but no route on the toxlink relay: {:?}",
                relay.counters()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(relay.counters().routes, 1);
    Ok(Setup { bsd, a, b, af, bf })
}

#[test]
fn c_toxcore_clients_through_the_toxlink_relay() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    require_bootstrapd();
    require_harness();
    let t_start = Instant::now();

    // The toxlink relay, served by a runtime in this process while the test
    // thread drives the harnesses (blocking I/O).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let relay = rt
        .block_on(RelayServer::bind(RelayServerConfig {
            keypair: KeyPair::generate(&mut rand_core::OsRng),
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            stun_listen: Vec::new(),
            server: ServerConfig {
                ping_interval: PING_INTERVAL,
                ..ServerConfig::default()
            },
        }))
        .expect("toxlink relay binds");
    let relay_addr = relay.local_addrs()[0];
    let relay_pk = relay.public_key().0;

    let mut attempts = 0;
    let deadline = Instant::now() + SETUP_BUDGET;
    let Setup {
        bsd,
        mut a,
        mut b,
        af,
        bf,
    } = loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match set_up(&relay, relay_addr, &relay_pk, left) {
            Ok(s) => break s,
            Err(why) => {
                println!("set-up attempt {attempts}: {why}");
                assert!(
                    attempts < MAX_ATTEMPTS && Instant::now() < deadline,
                    "no usable set-up in {attempts} attempts: {why}"
                );
            }
        }
    };
    println!("set-up attempts: {attempts}");
    // Keep-alive: our PINGs got matching PONGs on both links (§2.5, §2.6);
    // c-toxcore's own PINGs got our PONGs, and no link was closed.
    let p0 = relay.counters().pongs_received;
    let c = wait_counters(&relay, "4 matching PONGs", |c| c.pongs_received >= p0 + 4);
    assert!(c.pings_sent >= c.pongs_received, "{c:?}");
    assert!(c.pongs_sent >= 2, "c-toxcore pings at confirmation: {c:?}");
    assert_eq!(c.closes.ping_timeout, 0, "{c:?}");
    assert_eq!(c.confirmed, 2, "{c:?}");
    println!("toxlink relay before stopping tox-bootstrapd: {c:?}");

    // From now on the toxlink relay is the only way between the peers.
    bsd.stop();
    let before = relay.counters();
    let t_stop = Instant::now();

    // Messages both ways.
    for i in 0..MESSAGES {
        a.send_message(af, &format!("a→b {i}")).expect("MSG a");
        b.send_message(bf, &format!("b→a {i}")).expect("MSG b");
    }
    for i in 0..MESSAGES {
        assert_eq!(
            b.expect_message(bf, TRANSFER_TIMEOUT)
                .expect("b gets a message"),
            format!("a→b {i}")
        );
        assert_eq!(
            a.expect_message(af, TRANSFER_TIMEOUT)
                .expect("a gets a message"),
            format!("b→a {i}")
        );
    }

    // Custom lossless packets both ways at once.
    a.start_custom(af, PACKETS, SIZE_AB, 160)
        .expect("start a→b");
    b.start_custom(bf, PACKETS, SIZE_BA, 191)
        .expect("start b→a");
    // c-toxcore's own congestion control sometimes collapses to a few
    // packets per second over TCP relays (seen with tox-bootstrapd's relay
    // too, see interop/); on failure, show what our relay did meanwhile.
    let sa = a
        .wait_sent(TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("a sent: {e:?}; relay {:?}", relay.counters()));
    let sb = b
        .wait_sent(TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("b sent: {e:?}; relay {:?}", relay.counters()));
    assert_eq!((sa.accepted, sa.error.as_deref()), (PACKETS, None));
    assert_eq!((sb.accepted, sb.error.as_deref()), (PACKETS, None));
    let want = u64::from(PACKETS);
    let every = Duration::from_millis(100);
    let at_b = b
        .wait_stats(bf, TRANSFER_TIMEOUT, every, |s| s.custom.rx >= want)
        .expect("b receives all");
    let at_a = a
        .wait_stats(af, TRANSFER_TIMEOUT, every, |s| s.custom.rx >= want)
        .expect("a receives all");
    let elapsed = t_stop.elapsed();
    for (who, s, size) in [("b", &at_b, SIZE_AB), ("a", &at_a, SIZE_BA)] {
        let c = &s.custom;
        assert_eq!(c.rx, want, "{who}: {s:?}");
        assert_eq!(
            (c.bad, c.dup, c.reordered, c.lost),
            (0, 0, 0, 0),
            "{who}: complete and in order: {s:?}"
        );
        assert_eq!(c.bytes_rx, want * size as u64, "{who}: packet sizes");
        assert_eq!(s.msgs_rx, MESSAGES as u64, "{who}: messages");
        assert_eq!(s.status, ConnKind::Tcp, "{who}: still connected");
        println!(
            "{who} received {} packets / {} bytes; max gap {:.1} ms; latency avg {:.1} ms max {:.1} ms",
            c.rx,
            c.bytes_rx,
            c.max_gap_us as f64 / 1e3,
            c.lat_avg_us as f64 / 1e3,
            c.lat_max_us as f64 / 1e3
        );
    }

    // Neither peer reported the other offline (or changed transport) at any
    // time after connecting.
    for (who, h, f) in [("a", &mut a, af), ("b", &mut b, bf)] {
        let evs = conn_events(h, f);
        assert!(evs.is_empty(), "{who}: connection changes {evs:?}");
    }

    // The toxlink relay forwarded it: DATA bytes at least the payload sent
    // after tox-bootstrapd stopped (net_crypto adds headers and padding).
    let after = relay.counters();
    let payload = want * (SIZE_AB + SIZE_BA) as u64;
    let forwarded = after.data_bytes - before.data_bytes;
    let packets = after.data_packets - before.data_packets;
    println!(
        "toxlink relay after the exchange ({:.2} s): {packets} DATA packets / {forwarded} bytes \
         forwarded for {payload} bytes of custom packets; {after:?}",
        elapsed.as_secs_f64()
    );
    assert!(forwarded >= payload, "{forwarded} < {payload}: {after:?}");
    assert!(packets >= 2 * want, "{after:?}");
    assert_eq!(
        after.closes,
        Default::default(),
        "no link closed: {after:?}"
    );
    assert_eq!((after.confirmed, after.routes), (2, 1), "{after:?}");
    assert_eq!(
        after.drop_not_connected, before.drop_not_connected,
        "{after:?}"
    );

    a.quit().expect("quit a");
    b.quit().expect("quit b");
    rt.block_on(relay.shutdown());
    println!("total {:.1} s", t_start.elapsed().as_secs_f64());
}
