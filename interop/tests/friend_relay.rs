//! toxlink as a Tox friend of a c-toxcore 0.2.18 peer through a TCP relay
//! (issue 5, "Relay"; docs/PROTOCOL.md §3, §6, §7): the same as `friend_udp.rs`,
//! but the traffic goes through a relay both sides use — a toxlink relay in
//! one test, tox-bootstrapd's in the other.
//!
//! The harness gets the relay with `tox_add_tcp_relay` and adds us as a
//! friend (`tox_friend_add_norequest`); our node gets the same relay
//! (`Node::add_relay`), knows the peer's long-term and DHT keys and its UDP
//! address, but our direct UDP path to it is cut (`set_udp_blocked`: we
//! neither send to nor accept from its address) and we connect through the
//! relays only. First contact goes OOB to the peer's DHT key (§3); c-toxcore
//! answers and routes to our DHT key, after which everything is DATA.
//! Checked: the C peer reports us online over TCP and never changes that;
//! our node's primary path is the relay and the peer is ONLINE on it;
//! messages go both ways; then `PACKETS` custom lossless packets each way
//! at the same time arrive complete and in order (its side by the harness's
//! checksum, duplicate, reordering and loss counters; ours by checking every
//! sequence number and checksum). Set-up time and the transfer times are
//! printed. Every wait is bounded; the harness and tox-bootstrapd are
//! killed by PID at the end.

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::relay_client::PeerRelayState;
use toxlink_interop::bootstrapd::require_bootstrapd;
use toxlink_interop::harness::{require_harness, ConnKind};

/// Custom lossless packets each way. c-toxcore's own sender through a relay
/// slows to tens of packets per second when both directions run at once
/// (3,000 each way: only 767 of its packets within 60 s in one run; see also
/// interop/src/measure.rs), so the stream is kept short.
const PACKETS: u32 = 1_000;
const SIZE: usize = 1373;

fn friend_through_relay(bootstrapd: bool, seed: u64) {
    require_harness();
    if bootstrapd {
        require_bootstrapd();
    }
    let test_start = Instant::now();
    let mut s = setup(bootstrapd, seed);
    let name = if bootstrapd {
        "tox-bootstrapd"
    } else {
        "toxlink"
    };
    // Our direct path is cut: the C peer can reach us through the relay only.
    s.node.set_udp_blocked(s.peer_udp, true);

    let t0 = Instant::now();
    let conn =
        s.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                s.node.connect_via_relays(s.peer, s.peer_dht),
            )
            .await
        })
        .expect("connected through the relay within 30 s")
        .expect("connect");
    let established = t0.elapsed();
    let f = s.start_friend(conn);
    let online_here = t0.elapsed();
    let ev =
        s.h.wait_connected_event(s.friend, Duration::from_secs(20))
            .expect("c-toxcore sees us online");
    assert_eq!(ev.kind, ConnKind::Tcp, "reported over TCP");
    let online_there = t0.elapsed();
    eprintln!(
        "[{name} relay] set-up: established {:.1} ms, online here {:.1} ms, \
         reported TCP-connected by c-toxcore after {:.1} ms",
        established.as_secs_f64() * 1e3,
        online_here.as_secs_f64() * 1e3,
        online_there.as_secs_f64() * 1e3
    );
    assert!(s.on_relay(), "primary is the relay: {:?}", s.primary());
    assert_eq!(s.relay_state(), Some(PeerRelayState::Online));

    messages_both_ways(&mut s, &f);

    // PACKETS custom lossless packets each way, at the same time.
    let f = Arc::new(f);
    let t1 = Instant::now();
    s.h.start_custom(s.friend, PACKETS, SIZE, 170)
        .expect("start its sending");
    let sender = spawn_sender(&s.rt, &f, PACKETS, SIZE, None, t1);
    let receiver = s.rt.spawn(receive_custom(
        f.clone(),
        PACKETS,
        170,
        SIZE,
        Duration::from_secs(60),
    ));
    s.spawn_trace(60);
    let stats =
        s.h.wait_stats(
            s.friend,
            Duration::from_secs(60),
            Duration::from_millis(100),
            |st| st.custom.rx >= u64::from(PACKETS),
        )
        .unwrap_or_else(|e| {
            s.diagnose();
            panic!("c-toxcore receives all: {e}")
        });
    let ours_took = t1.elapsed();
    common::all_custom_intact(&stats.custom, PACKETS);
    assert_eq!(stats.status, ConnKind::Tcp, "still TCP-connected");
    let done =
        s.rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), receiver).await })
            .expect("its packets within 60 s")
            .expect("receiver task");
    let theirs_took = done - t1;
    let send_took = s.rt.block_on(sender).expect("sender task");
    let sent = s.h.wait_sent(Duration::from_secs(10)).expect("its SENT");
    assert_eq!(sent.accepted, PACKETS);
    assert!(sent.error.is_none(), "its send: {:?}", sent.error);
    let mb = |d: Duration| (f64::from(PACKETS) * SIZE as f64) / d.as_secs_f64() / 1e6;
    eprintln!(
        "[{name} relay] {PACKETS} × {SIZE} B toxlink → c-toxcore: {:.2} s ({:.2} MB/s, our sends \
         took {:.2} s); c-toxcore → toxlink: {:.2} s ({:.2} MB/s)",
        ours_took.as_secs_f64(),
        mb(ours_took),
        send_took.as_secs_f64(),
        theirs_took.as_secs_f64(),
        mb(theirs_took)
    );
    assert!(f.is_online(), "still online here");
    assert!(s.on_relay(), "still on the relay: {:?}", s.primary());
    // c-toxcore never changed our status (no CONN event since online).
    match s.h.next_conn_event(s.friend, Duration::from_millis(200)) {
        Err(toxlink_interop::InteropError::Timeout { .. }) => {}
        Ok(ev) => panic!("c-toxcore changed our status: {ev:?}"),
        Err(e) => panic!("harness: {e}"),
    }
    let st = s.node.stats();
    assert!(st.relay_sent >= u64::from(PACKETS), "relay_sent {st:?}");
    if let Relay::Toxlink(r) = &s.relay {
        let c = r.handle().expect("running").counters();
        assert!(
            c.data_packets >= 2 * u64::from(PACKETS),
            "the relay forwarded both streams: {c:?}"
        );
    }
    f.close();
    let Setup { h, relay, .. } = s;
    h.quit().expect("harness quits");
    drop(relay);
    eprintln!(
        "[{name} relay] whole test {:.1} s",
        test_start.elapsed().as_secs_f64()
    );
}

#[test]
fn toxlink_friend_of_c_toxcore_through_toxlink_relay() {
    friend_through_relay(false, 61);
}

#[test]
fn toxlink_friend_of_c_toxcore_through_tox_bootstrapd_relay() {
    friend_through_relay(true, 62);
}
