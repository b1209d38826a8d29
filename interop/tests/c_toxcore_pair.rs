//! c-toxcore ↔ c-toxcore through a private tox-bootstrapd, over UDP and over
//! its TCP relay: befriend (norequest, both sides), connect, one message each
//! way, 2,000 custom lossless packets each way, complete and in order.

use std::time::Duration;
use toxlink_interop::harness::MAX_CUSTOM_PACKET_SIZE;
use toxlink_interop::measure::Pair;
use toxlink_interop::{
    connect_pair, Bootstrapd, ConnKind, Harness, HarnessOptions, Stats, Transport,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
const PACKETS: u32 = 2_000;
/// Different sizes per direction, so a mixed-up stream would show.
const SIZE_AB: usize = MAX_CUSTOM_PACKET_SIZE;
const SIZE_BA: usize = 500;

/// Waits (≤ TRANSFER_TIMEOUT, polling every 100 ms) until harness `h` has
/// received `want` custom lossless packets from `friend`; its statistics.
fn custom_rx_reaches(h: &mut Harness, friend: u32, want: u64, what: &str) -> Stats {
    h.wait_stats(friend, TRANSFER_TIMEOUT, Duration::from_millis(100), |s| {
        s.custom.rx >= want
    })
    .expect(what)
}

fn exchange(p: &mut Pair, transport: Transport) {
    // Messages both ways.
    p.a.send_message(p.a_friend, "hello from a")
        .expect("msg a→b");
    p.b.send_message(p.b_friend, "hello from b: ünïcode ok")
        .expect("msg b→a");
    assert_eq!(
        p.b.expect_message(p.b_friend, Duration::from_secs(20))
            .unwrap(),
        "hello from a"
    );
    assert_eq!(
        p.a.expect_message(p.a_friend, Duration::from_secs(20))
            .unwrap(),
        "hello from b: ünïcode ok"
    );

    // 2,000 custom lossless packets each way, both directions at once.
    p.a.start_custom(p.a_friend, PACKETS, SIZE_AB, 160)
        .expect("start a→b");
    p.b.start_custom(p.b_friend, PACKETS, SIZE_BA, 191)
        .expect("start b→a");
    let sa = p.a.wait_sent(TRANSFER_TIMEOUT).expect("a sent");
    let sb = p.b.wait_sent(TRANSFER_TIMEOUT).expect("b sent");
    assert_eq!((sa.accepted, sa.error.as_deref()), (PACKETS, None));
    assert_eq!((sb.accepted, sb.error.as_deref()), (PACKETS, None));

    let want = u64::from(PACKETS);
    let at_b = custom_rx_reaches(&mut p.b, p.b_friend, want, "b receives all");
    let at_a = custom_rx_reaches(&mut p.a, p.a_friend, want, "a receives all");
    for (who, s, size) in [("b", &at_b, SIZE_AB), ("a", &at_a, SIZE_BA)] {
        let c = &s.custom;
        assert_eq!(c.rx, want, "{who}: {s:?}");
        assert_eq!(
            (c.bad, c.dup, c.reordered, c.lost),
            (0, 0, 0, 0),
            "{who}: {s:?}"
        );
        assert_eq!(c.good(), want);
        assert_eq!(c.bytes_rx, want * size as u64, "{who}: wrong packet sizes");
        assert_eq!(s.msgs_rx, 1);
        assert_eq!(
            s.status,
            transport.expected_kind(),
            "{who} changed transport"
        );
        println!(
            "{transport} {who}: {} packets, max gap {:.1} ms, latency avg {:.1} ms max {:.1} ms",
            c.rx,
            c.max_gap_us as f64 / 1e3,
            c.lat_avg_us as f64 / 1e3,
            c.lat_max_us as f64 / 1e3
        );
    }
}

fn run(transport: Transport) {
    let bsd = Bootstrapd::start().expect("tox-bootstrapd (package toxcore-utils)");
    let o = HarnessOptions::new();
    let mut p = connect_pair(
        &bsd,
        transport,
        &o.clone().name("a"),
        &o.name("b"),
        CONNECT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{transport}: pair did not connect: {e}"));
    println!(
        "{transport}: connected in {:.2} s ({} / {})",
        p.connect_time.as_secs_f64(),
        p.a_kind,
        p.b_kind
    );
    let want = transport.expected_kind();
    assert_eq!((p.a_kind, p.b_kind), (want, want));
    exchange(&mut p, transport);
    p.a.quit().expect("quit a");
    p.b.quit().expect("quit b");
    bsd.stop();
}

#[test]
fn c_toxcore_pair_over_udp() {
    run(Transport::Udp);
}

#[test]
fn c_toxcore_pair_over_tcp_relay() {
    run(Transport::TcpRelay);
}

/// `--echo`: every custom lossless packet comes back unchanged, so the
/// sender's statistics see its own stream again, with round-trip latencies.
#[test]
fn c_toxcore_echo_and_lossy_over_udp() {
    let bsd = Bootstrapd::start().expect("tox-bootstrapd");
    let o = HarnessOptions::new();
    let mut p = connect_pair(
        &bsd,
        Transport::Udp,
        &o,
        &o.clone().echo(true),
        CONNECT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("pair did not connect: {e}"));
    let n = 300u32;
    let r =
        p.a.send_custom(p.a_friend, n, 100, 170, TRANSFER_TIMEOUT)
            .expect("send");
    assert_eq!((r.accepted, r.error), (n, None));
    let want = u64::from(n);
    let back = custom_rx_reaches(&mut p.a, p.a_friend, want, "echoes come back");
    let c = &back.custom;
    assert_eq!(
        (c.rx, c.bad, c.dup, c.reordered, c.lost),
        (want, 0, 0, 0, 0),
        "{back:?}"
    );
    assert_eq!(c.bytes_rx, want * 100);
    assert!(c.lat_avg_us > 0 && c.lat_max_us >= c.lat_avg_us, "{back:?}");
    let at_b = p.b.stats(p.b_friend).expect("stats b");
    assert_eq!(
        (at_b.custom.rx, at_b.echo_tx, at_b.echo_dropped),
        (want, want, 0)
    );
    println!(
        "echo RTT avg {:.2} ms max {:.2} ms",
        c.lat_avg_us as f64 / 1e3,
        c.lat_max_us as f64 / 1e3
    );

    // Lossy packets (200..=254) take the same checks; loss is allowed but
    // counted, corruption and duplicates are not.
    let r =
        p.a.send_lossy(p.a_friend, n, 200, 222, TRANSFER_TIMEOUT)
            .expect("send lossy");
    assert_eq!((r.accepted, r.lossy, r.error), (n, true, None));
    let l =
        p.b.wait_stats(
            p.b_friend,
            TRANSFER_TIMEOUT,
            Duration::from_millis(100),
            |s| s.lossy.rx >= want / 2,
        )
        .expect("most lossy packets arrive on loopback");
    std::thread::sleep(Duration::from_millis(500));
    let l2 = p.b.stats(p.b_friend).expect("stats");
    assert!(l2.lossy.rx >= l.lossy.rx && l2.lossy.rx <= want, "{l2:?}");
    assert_eq!((l2.lossy.bad, l2.lossy.dup), (0, 0), "{l2:?}");
    assert_eq!(l2.lossy.bytes_rx, l2.lossy.good() * 200);
    assert_eq!(
        l2.custom.rx, want,
        "lossy packets must not count as lossless"
    );
    println!(
        "lossy: {} of {n} arrived, lost {}, reordered {}",
        l2.lossy.rx, l2.lossy.lost, l2.lossy.reordered
    );
}

#[test]
fn conn_kind_is_what_the_transport_promises() {
    assert_eq!(Transport::Udp.expected_kind(), ConnKind::Udp);
    assert_eq!(Transport::TcpRelay.expected_kind(), ConnKind::Tcp);
}
