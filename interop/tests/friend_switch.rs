//! toxlink as a Tox friend of a c-toxcore 0.2.18 peer while our side moves
//! between direct UDP and a relay (issue 5, "Switch"; PROTOCOL.md §3, §6).
//!
//! Both share a toxlink relay (the harness with `tox_add_tcp_relay`, and
//! SHARE_RELAYS from us); we connect with the peer's UDP address too, so
//! the connection starts on UDP. While 20,000 custom lossless packets flow each way, our side cuts
//! and restores its direct UDP path (`set_udp_blocked`): UDP → relay (at
//! 3 s) → UDP (13 s) → relay (23 s), and back to UDP at 35 s so that the
//! rest of c-toxcore's stream drains at UDP speed. c-toxcore keeps sending by UDP until
//! its 8 s direct timeout runs out and its relay link (put to sleep while
//! UDP was direct) is back, so its side stalls for up to ~10 s at a cut:
//! that is expected. Checked: c-toxcore receives all our packets, intact,
//! in order, without duplicates or losses (its counters), and never reports
//! us offline (every `CONN` event is `udp` or `tcp`); we receive all of its
//! packets in order; our primary path was the relay and UDP in turn. Our
//! sender is paced (~800 packets/s) so that the stream spans the switches.
//! Every wait is bounded; the harness is killed at the end.
//!
//! **Status: fails, so it is `#[ignore]`d** (run it with `--ignored`).
//! Observed in 3 runs on 2 shared cores: c-toxcore receives all 20,000 of
//! our packets, complete and in order, across every switch; but its own
//! stream to us stops at the first cut (2,429–2,498 of 20,000 within
//! 120 s, i.e. what it sent in the first 3 s on UDP) and never resumes,
//! not even when UDP is restored. Our node's state for the peer on the
//! relay stays `Registered` (routing response, the peer not routed to us):
//! after a UDP first contact c-toxcore does not route to our DHT key on
//! the shared relay, even with SHARE_RELAYS, so its packets to us can only
//! go OOB (≤ 1024 bytes: data packets do not fit). Opening the connection
//! on the relay first and adding UDP afterwards does not help either:
//! c-toxcore drops our UDP data from an address it never handshook with
//! (PROTOCOL.md §6) and stays on TCP. Why its stream does not resume once
//! UDP is restored was not found in the time available.

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::node::{PathEventKind, Route};
use toxlink_interop::harness::{harness_available, ConnKind};

const PACKETS: u32 = 20_000;
const SIZE: usize = 1373;
/// When our side cuts (true) or restores (false) UDP, after the transfer
/// starts. The last entry lets c-toxcore's rest drain over UDP: its own
/// sender through a relay runs at tens of packets per second (observed: 2,498
/// of its 20,000 within 120 s when the schedule ended on the relay).
const SCHEDULE: [(u64, bool); 4] = [(3, true), (13, false), (23, true), (35, false)];
/// Bound on the whole transfer.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
#[ignore = "fails: c-toxcore's stream to us stalls at the first UDP cut (issue 5 report)"]
fn c_toxcore_friend_while_we_switch_udp_and_relay() {
    if !harness_available() {
        eprintln!("skipping: libtoxcore harness not available");
        return;
    }
    let test_start = Instant::now();
    let mut s = setup(false, 71);
    let conn =
        s.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                s.node.connect(s.peer, s.peer_dht, s.peer_udp),
            )
            .await
        })
        .expect("connected within 20 s")
        .expect("connect");
    let f = s.start_friend(conn);
    let kind =
        s.h.wait_connected(s.friend, Duration::from_secs(10))
            .expect("c-toxcore sees us online");
    assert_eq!(kind, ConnKind::Udp, "starts on UDP");
    eprintln!("peer on relay before the transfer: {:?}", s.relay_state());

    let f = Arc::new(f);
    let t0 = Instant::now();
    s.h.start_custom(s.friend, PACKETS, SIZE, 170)
        .expect("start its sending");
    let sender = {
        let f = f.clone();
        s.rt.spawn(async move {
            for seq in 0..PACKETS {
                f.send_custom_lossless(&custom(160, seq, SIZE))
                    .await
                    .expect("send custom");
                if seq % 8 == 7 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            t0.elapsed()
        })
    };
    let receiver =
        s.rt.spawn(receive_custom(f.clone(), PACKETS, 170, SIZE, LIMIT));
    let switcher = {
        let node = s.node.clone();
        let addr = s.peer_udp;
        s.rt.spawn(async move {
            for (at, cut) in SCHEDULE {
                tokio::time::sleep_until((t0 + Duration::from_secs(at)).into()).await;
                node.set_udp_blocked(addr, cut);
                eprintln!(
                    "{:>5.1} s: UDP {}",
                    t0.elapsed().as_secs_f64(),
                    if cut { "cut" } else { "restored" }
                );
            }
        })
    };
    let stats =
        s.h.wait_stats(s.friend, LIMIT, Duration::from_millis(200), |st| {
            st.custom.rx >= u64::from(PACKETS)
        })
        .unwrap_or_else(|e| {
            s.diagnose();
            panic!("c-toxcore receives all: {e}")
        });
    let ours_took = t0.elapsed();
    assert_eq!(stats.custom.bad, 0, "checksums at c-toxcore");
    assert_eq!(stats.custom.dup, 0, "duplicates at c-toxcore");
    assert_eq!(stats.custom.reordered, 0, "reordered at c-toxcore");
    assert_eq!(stats.custom.lost, 0, "lost at c-toxcore");
    assert_eq!(stats.custom.good(), u64::from(PACKETS));
    let done =
        s.rt.block_on(async { tokio::time::timeout(LIMIT, receiver).await })
            .expect("its packets in time")
            .expect("receiver task: all in order");
    let theirs_took = done - t0;
    let send_took = s.rt.block_on(sender).expect("sender task");
    s.rt.block_on(switcher).expect("switcher");
    let sent = s.h.wait_sent(Duration::from_secs(10)).expect("its SENT");
    assert_eq!(sent.accepted, PACKETS);
    assert!(sent.error.is_none(), "its send: {:?}", sent.error);
    eprintln!(
        "{PACKETS} × {SIZE} B each way: c-toxcore had ours after {:.1} s (our sends took {:.1} s, \
         its longest gap {:.0} ms); we had its after {:.1} s",
        ours_took.as_secs_f64(),
        send_took.as_secs_f64(),
        stats.custom.max_gap_us as f64 / 1e3,
        theirs_took.as_secs_f64()
    );
    assert!(f.is_online(), "still online here");

    // c-toxcore never reported us offline: every status change it made is
    // UDP or TCP.
    let mut kinds = vec![ConnKind::Udp];
    loop {
        match s.h.next_conn_event(s.friend, Duration::from_millis(300)) {
            Ok(ev) => kinds.push(ev.kind),
            Err(toxlink_interop::InteropError::Timeout { .. }) => break,
            Err(e) => panic!("harness: {e}"),
        }
        assert!(kinds.len() < 100, "too many status changes: {kinds:?}");
    }
    eprintln!("c-toxcore's view of us: {kinds:?}");
    assert!(
        !kinds.contains(&ConnKind::None),
        "c-toxcore reported us offline: {kinds:?}"
    );
    // Our primary path went UDP → relay → UDP → relay.
    let mut primaries = Vec::new();
    while let Some(e) = s.node.poll_path_event() {
        if let PathEventKind::Primary { .. } = e.kind {
            let relay = matches!(e.addr, Route::Relay { .. });
            if primaries.last() != Some(&relay) {
                primaries.push(relay);
            }
        }
    }
    eprintln!("our primaries (true = relay): {primaries:?}");
    assert!(
        primaries
            .windows(4)
            .any(|w| w == [false, true, false, true]),
        "UDP → relay → UDP → relay: {primaries:?}"
    );
    f.close();
    let Setup { h, relay, .. } = s;
    h.quit().expect("harness quits");
    drop(relay);
    eprintln!("whole test {:.1} s", test_start.elapsed().as_secs_f64());
}
