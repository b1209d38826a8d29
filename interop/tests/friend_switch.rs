//! toxlink as a Tox friend of a c-toxcore 0.2.18 peer while our side moves
//! between direct UDP and a relay (issue 5, "Switch"; docs/PROTOCOL.md §3, §6).
//!
//! Both share a toxlink relay (the harness with `tox_add_tcp_relay`, and
//! SHARE_RELAYS from us, §7.3, so that c-toxcore routes to us on it); we
//! connect with the peer's UDP address too, so the connection starts on
//! UDP. While 20,000 custom lossless packets are sent each way, our side
//! cuts and restores its direct UDP path (`set_udp_blocked`: no sending to
//! and no accepting from the peer's address): UDP → relay (at 3 s) → UDP
//! (13 s) → relay (18 s), and UDP again at 30 s. Our sender is paced
//! (~800 packets/s) so that our stream spans every switch.
//!
//! Checked: c-toxcore receives all 20,000 of ours, intact, in order,
//! without duplicates or losses (its counters); it never reports us
//! offline (its `CONN` events alternate `udp`/`tcp`, never `none`); our
//! primary path goes UDP → relay → UDP → relay; every packet of its stream
//! that reaches us is intact and in order, and everything c-toxcore had
//! handed to net_crypto 5 s after the last switch reaches us within 20 s.
//!
//! **What is not checked, and why: all 20,000 of c-toxcore's packets.**
//! At a cut c-toxcore keeps sending by UDP until its 8 s direct timeout
//! (§6), and all of that is dropped by us. Its congestion control (§5)
//! then collapses to its minimum of about 4 packets/s and does not recover
//! within the test: its log shows `congestion control: rejecting packet`
//! every ~200 ms to the end, and the harness's `custom_tx` stays at what
//! it sent before the first cut (2,115–2,498 of 20,000 in 6 runs, also
//! with 120 s bounds and also after UDP had been back for 85 s). Everything
//! it did send reached us. The same collapse is known between two
//! c-toxcore peers over a TCP relay (interop/src/measure.rs). Every wait is
//! bounded; the harness is killed at the end; the test takes about 45 s.

mod common;

use common::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::node::{PathEventKind, Route};
use toxlink::FriendEvent;
use toxlink_interop::harness::{custom_checksum, require_harness, ConnKind};

const PACKETS: u32 = 20_000;
const SIZE: usize = 1373;
/// When our side cuts (true) or restores (false) UDP, after the transfer
/// starts. The last entry lets c-toxcore's rest drain over UDP: its own
/// sender through a relay runs at tens of packets per second (observed: 2,498
/// of its 20,000 within 120 s when the schedule ended on the relay).
const SCHEDULE: [(u64, bool); 4] = [(3, true), (13, false), (18, true), (30, false)];
/// Bound on the whole transfer.
const LIMIT: Duration = Duration::from_secs(90);
/// How long its accepted packets may take to reach us after the last switch.
const DRAIN: Duration = Duration::from_secs(20);

#[test]
fn c_toxcore_friend_while_we_switch_udp_and_relay() {
    require_harness();
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
    s.spawn_trace(90);
    let t0 = Instant::now();
    s.h.start_custom(s.friend, PACKETS, SIZE, 170)
        .expect("start its sending");
    let sender = spawn_sender(&s.rt, &f, PACKETS, SIZE, Some(8), t0);
    // Its packets: checked one by one (order, checksum), counted in `got`.
    let got = Arc::new(AtomicU32::new(0));
    let receiver = {
        let (f, got) = (f.clone(), got.clone());
        s.rt.spawn(async move {
            let deadline = tokio::time::Instant::now() + LIMIT;
            let mut n = 0u32;
            while n < PACKETS {
                match tokio::time::timeout_at(deadline, f.next_event()).await {
                    Ok(Some(FriendEvent::CustomLossless(d))) => {
                        assert_eq!(d.len(), SIZE);
                        assert_eq!(d[0], 170);
                        let seq = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                        assert_eq!(seq, n, "in order, none missing, no duplicate");
                        let sum = u32::from_be_bytes([d[5], d[6], d[7], d[8]]);
                        assert_eq!(sum, custom_checksum(&d), "checksum of #{seq}");
                        n += 1;
                        got.store(n, Ordering::Relaxed);
                    }
                    Ok(Some(FriendEvent::Offline(r))) => panic!("offline after {n}: {r:?}"),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("closed after {n}"),
                    Err(_) => break,
                }
            }
        })
    };
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
    common::all_custom_intact(&stats.custom, PACKETS);
    let send_took = s.rt.block_on(sender).expect("sender task");
    s.rt.block_on(switcher).expect("switcher");
    eprintln!(
        "{PACKETS} × {SIZE} B toxlink → c-toxcore across the switches: all at c-toxcore after \
         {:.1} s (our sends took {:.1} s, its longest gap {:.0} ms)",
        ours_took.as_secs_f64(),
        send_took.as_secs_f64(),
        stats.custom.max_gap_us as f64 / 1e3
    );

    // Its stream: everything c-toxcore has handed to net_crypto so far must
    // reach us (in order, checked by the receiver) within DRAIN; all 20,000
    // only if its congestion control recovered (see the module notes).
    std::thread::sleep(
        (t0 + Duration::from_secs(SCHEDULE[3].0 + 5)).saturating_duration_since(Instant::now()),
    );
    let its = s.h.stats(s.friend).expect("its STATS").custom_tx;
    let drain_start = Instant::now();
    while u64::from(got.load(Ordering::Relaxed)) < its && drain_start.elapsed() < DRAIN {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ours = got.load(Ordering::Relaxed);
    eprintln!(
        "c-toxcore → toxlink: {ours} of {PACKETS} received in order after {:.1} s; c-toxcore \
         had accepted {its} for sending {}s after the last switch",
        t0.elapsed().as_secs_f64(),
        5
    );
    if u64::from(ours) < its {
        s.diagnose();
    }
    assert!(
        u64::from(ours) >= its,
        "every packet c-toxcore sent arrives: {ours} < {its}"
    );
    // A receiver that stopped early panicked (order, checksum, offline).
    if receiver.is_finished() {
        s.rt.block_on(receiver)
            .expect("receiver: in order, intact, online");
    } else {
        receiver.abort();
    }
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
