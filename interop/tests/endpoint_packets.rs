//! toxlink's endpoint exchange (issue 15) is harmless to a c-toxcore 0.2.18
//! peer: c-toxcore drops the lossy packets with id 199 silently.
//!
//! toxlink peers exchange endpoints over the net_crypto session in LOSSY
//! data packets whose id is 199, then a subtype (0 endpoint list, 1 path
//! challenge, 2 path response) and a payload. toxlink sends them to every
//! peer, c-toxcore ones included, because it cannot tell them apart. Id 199
//! is in c-toxcore's lossy A/V range 192..=199: Messenger hands such a
//! packet only to an RTP handler registered for its id by toxav (which
//! registers 192, 193 and 196), so without one the packet is dropped: no
//! callback, no event, no disconnect. This test proves that on the real
//! library, through a toxlink relay (lab scenario 6 of the issue) and over
//! direct UDP.
//!
//! Each test connects our node to a c-toxcore harness as its friend,
//! exchanges a message each way, then sends the endpoint packets: one of
//! each subtype with a plausible payload plus edge cases (id alone, empty
//! list, unknown subtype, the largest packet), then a burst of [`BURST`]
//! over [`BURST_SPAN`] while messages go both ways and a stream of custom
//! lossless packets goes each way. Checked on the c-toxcore side, which
//! counts every packet its custom lossless and lossy callbacks deliver (by
//! id) and every friend connection status change (STATS, `PKTID` and `CONN`
//! lines): no lossy packet at all, only our lossless stream's id, no status
//! change since the first going-online, every message and stream packet
//! intact; on ours: the friend stays online, its stream arrives complete.
//! Finally a control: endpoint packets interleaved with custom lossy ones
//! (id 200) on the same connection. c-toxcore delivers the custom ones (so
//! its lossy callback works and the lossy path carried packets right next
//! to ours) and still nothing with id 199.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::crypto::PublicKey;
use toxlink::toxlink_proto::error::SendError;
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Friend, FriendConfig, FriendEvent, Node};
use toxlink_interop::harness::{
    custom_checksum, custom_packet, require_harness, ConnKind, PacketIdEvent,
};
use toxlink_interop::{Harness, HarnessOptions, Stats};

/// The endpoint exchange's packet id (lossy, c-toxcore's A/V range).
const ENDPOINT_ID: u8 = 199;
/// Its subtypes.
const ENDPOINT_LIST: u8 = 0;
const PATH_CHALLENGE: u8 = 1;
const PATH_RESPONSE: u8 = 2;
/// Endpoint packets in the burst, and over how long they are spread.
const BURST: u32 = 200;
const BURST_SPAN: Duration = Duration::from_secs(4);
/// Custom lossless packets each way during the burst (ours id 160, its 170).
const STREAM: u32 = 300;
const STREAM_SIZE: usize = 600;
const OUR_STREAM_ID: u8 = 160;
const ITS_STREAM_ID: u8 = 170;
/// Custom lossy packets (id 200) of the control, each after an endpoint
/// packet.
const CONTROL: u32 = 50;
const CONTROL_ID: u8 = 200;
/// Bound on the streams and on waiting for c-toxcore's counters.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to packets still in flight before c-toxcore's counters are
/// read for the verdict.
const SETTLE: Duration = Duration::from_secs(1);

/// An endpoint message: id, subtype, payload.
fn endpoint_message(subtype: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![ENDPOINT_ID, subtype];
    p.extend_from_slice(payload);
    p
}

/// A plausible endpoint list: a count, then packed UDP endpoints (Tox's
/// packed IP/port: family 2 = UDP IPv4 or 10 = UDP IPv6, address, port BE).
fn endpoint_list(seq: u32) -> Vec<u8> {
    let mut p = vec![4u8];
    for (i, ip) in [[127, 0, 0, 1], [192, 168, 1, 23], [203, 0, 113, 7]]
        .iter()
        .enumerate()
    {
        p.push(2);
        p.extend_from_slice(ip);
        p.extend_from_slice(&(33445 + i as u16 + (seq % 100) as u16).to_be_bytes());
    }
    p.push(10);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&33445u16.to_be_bytes());
    endpoint_message(ENDPOINT_LIST, &p)
}

/// A path challenge or response: an 8-byte token and a 2-byte path id.
fn path_token(subtype: u8, seq: u32) -> Vec<u8> {
    let mut p = (u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .to_be_bytes()
        .to_vec();
    p.extend_from_slice(&((seq % 7) as u16).to_be_bytes());
    endpoint_message(subtype, &p)
}

/// The `seq`-th endpoint packet of a burst: the three subtypes in turn.
fn endpoint_packet(seq: u32) -> Vec<u8> {
    match seq % 3 {
        0 => endpoint_list(seq),
        1 => path_token(PATH_CHALLENGE, seq),
        _ => path_token(PATH_RESPONSE, seq),
    }
}

/// One of each subtype, then edge cases: the id alone, an empty list, an
/// unknown subtype, the largest lossy packet c-toxcore takes (1373 bytes).
fn endpoint_samples() -> Vec<Vec<u8>> {
    let mut largest = endpoint_list(0);
    largest.resize(1373, 0x5a);
    vec![
        endpoint_list(0),
        path_token(PATH_CHALLENGE, 1),
        path_token(PATH_RESPONSE, 1),
        vec![ENDPOINT_ID],
        endpoint_message(ENDPOINT_LIST, &[0]),
        endpoint_message(0xff, b"unknown subtype"),
        largest,
    ]
}

/// Sends one lossy packet on the friend's connection (the Friend API takes
/// custom ids 200..=254 only; the connection takes any lossy id), waiting
/// while our lossy queue is full.
async fn send_lossy(f: &Friend, p: &[u8]) {
    loop {
        match f.connection().send_lossy(p) {
            Ok(()) => return,
            Err(toxlink::Error::Send(SendError::BufferFull)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("send_lossy {:?}…: {e}", &p[..p.len().min(4)]),
        }
    }
}

/// Our node and a c-toxcore friend, connected and online on both sides.
struct Pair {
    rt: tokio::runtime::Runtime,
    node: Arc<Node>,
    peer: PublicKey,
    h: Harness,
    /// Our friend number at the harness.
    friend: u32,
    f: Arc<Friend>,
    /// How c-toxcore reports us connected.
    kind: ConnKind,
    /// The shared relay (kept running), if any.
    relay: Option<Relay>,
    label: &'static str,
}

impl Pair {
    /// DATA packets the shared toxlink relay forwarded (`None` without one).
    fn relay_packets(&self) -> Option<u64> {
        match &self.relay {
            Some(Relay::Toxlink(r)) => {
                Some(r.handle().expect("relay running").counters().data_packets)
            }
            _ => None,
        }
    }
}

/// Over direct UDP on loopback, no relay.
fn pair_over_udp(seed: u64) -> Pair {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut h =
        Harness::start(&HarnessOptions::new().name("ctox").toxcore_log(true)).expect("harness");
    eprintln!("c-toxcore log: {}", h.log_path().display());
    let rt = runtime();
    let node = bind_node(&rt, seed, NodeConfig::default());
    let c = befriend(&mut h, &node);
    let f = rt.block_on(async {
        let conn = tokio::time::timeout(
            Duration::from_secs(20),
            node.connect(c.peer, c.peer_dht, c.peer_udp),
        )
        .await
        .expect("connect within 20 s")
        .expect("connect");
        let f = Friend::start(
            conn,
            FriendConfig {
                name: b"toxlink".to_vec(),
                ..FriendConfig::default()
            },
        );
        loop {
            match next(&f, "online", Duration::from_secs(10)).await {
                FriendEvent::Online => return f,
                FriendEvent::Offline(r) => panic!("offline before online: {r:?}"),
                _ => {}
            }
        }
    });
    let ev = h
        .wait_connected_event(c.friend, Duration::from_secs(10))
        .expect("c-toxcore sees us online");
    assert_eq!(ev.kind, ConnKind::Udp, "reported over UDP");
    Pair {
        rt,
        node: Arc::new(node),
        peer: c.peer,
        h,
        friend: c.friend,
        f: Arc::new(f),
        kind: ConnKind::Udp,
        relay: None,
        label: "udp",
    }
}

/// Through a toxlink relay both use, our direct UDP path cut (as in
/// `friend_relay.rs`).
fn pair_through_relay(seed: u64) -> Pair {
    let s = setup(false, seed);
    s.node.set_udp_blocked(s.peer_udp, true);
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
    let f = s.start_friend(conn);
    let mut s = s;
    let ev =
        s.h.wait_connected_event(s.friend, Duration::from_secs(20))
            .expect("c-toxcore sees us online");
    assert_eq!(ev.kind, ConnKind::Tcp, "reported over TCP");
    assert!(s.on_relay(), "primary is the relay: {:?}", s.primary());
    let Setup {
        h,
        friend,
        rt,
        node,
        relay,
        peer,
        ..
    } = s;
    Pair {
        rt,
        node,
        peer,
        h,
        friend,
        f: Arc::new(f),
        kind: ConnKind::Tcp,
        relay: Some(relay),
        label: "toxlink relay",
    }
}

/// What our receiving task saw: its stream checked packet by packet, its
/// messages passed on as they come.
struct Received {
    stream: u32,
    lossy: u32,
    other: u32,
}

/// Takes every event of `f` until its stream is complete and `stop` fired:
/// custom lossless packets must come in order, intact; messages go to
/// `messages`; going offline fails the test.
async fn receive_all(
    f: Arc<Friend>,
    messages: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Received {
    let mut r = Received {
        stream: 0,
        lossy: 0,
        other: 0,
    };
    let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
    let mut stopped = false;
    while r.stream < STREAM || !stopped {
        let e = tokio::select! {
            e = tokio::time::timeout_at(deadline, f.next_event()) => e,
            _ = &mut stop, if !stopped => {
                stopped = true;
                continue;
            }
        };
        let e = e
            .unwrap_or_else(|_| panic!("only {} of its {STREAM} packets", r.stream))
            .unwrap_or_else(|| panic!("closed after {} of its packets", r.stream));
        match e {
            FriendEvent::CustomLossless(d) => {
                assert_eq!((d.len(), d[0]), (STREAM_SIZE, ITS_STREAM_ID));
                let seq = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                assert_eq!(seq, r.stream, "in order, none missing, no duplicate");
                let sum = u32::from_be_bytes([d[5], d[6], d[7], d[8]]);
                assert_eq!(sum, custom_checksum(&d), "checksum of #{seq}");
                r.stream += 1;
            }
            FriendEvent::Message(m) => {
                let _ = messages.send(m);
            }
            FriendEvent::Offline(why) => panic!("offline after {} packets: {why:?}", r.stream),
            FriendEvent::CustomLossy(_) => r.lossy += 1,
            FriendEvent::Other(_) => r.other += 1,
            _ => {}
        }
    }
    r
}

/// The checks after the burst: c-toxcore's application saw nothing of the
/// endpoint packets and never saw us change status.
fn assert_nothing_surfaced(p: &mut Pair, st: &Stats, what: &str) {
    let label = p.label;
    assert!(
        st.lossy_ids.is_empty() && st.lossy.rx == 0,
        "[{label}] {what}: c-toxcore delivered lossy packets to its application: \
         by id {:?}, {:?}",
        st.lossy_ids,
        st.lossy
    );
    assert_eq!(
        st.custom_ids,
        BTreeMap::from([(OUR_STREAM_ID, u64::from(STREAM))]),
        "[{label}] {what}: lossless packets c-toxcore delivered, by id"
    );
    let ids = p.h.take_packet_id_events(p.friend).expect("PKTID lines");
    let unexpected: Vec<&PacketIdEvent> = ids
        .iter()
        .filter(|e| e.lossy || e.id != OUR_STREAM_ID)
        .collect();
    assert!(
        unexpected.is_empty(),
        "[{label}] {what}: c-toxcore reported packets {unexpected:?}"
    );
    assert_eq!(
        (st.conn_changes, st.conn_offline, st.status),
        (1, 0, p.kind),
        "[{label}] {what}: c-toxcore's status changes of us (only the first going-online)"
    );
    let conn = p.h.take_lines(&format!("CONN {} ", p.friend));
    assert!(
        conn.is_empty(),
        "[{label}] {what}: c-toxcore changed our status: {conn:?}"
    );
    assert!(p.f.is_online(), "[{label}] {what}: online on our side");
    let established = p.node.inspect(|c| {
        c.session(&p.peer)
            .is_some_and(|s| s.is_established() && !s.is_closed())
    });
    assert!(established, "[{label}] {what}: our session is up");
}

fn exercise(mut p: Pair) {
    let label = p.label;
    let t0 = Instant::now();
    message_each_way(&p.rt, &mut p.h, p.friend, &p.f);
    let st = p.h.stats(p.friend).expect("stats");
    assert!(
        st.lossy_ids.is_empty() && st.custom_ids.is_empty(),
        "[{label}] before: {st:?}"
    );
    assert_eq!(
        (st.conn_changes, st.conn_offline),
        (1, 0),
        "[{label}] before"
    );

    // One of each kind, then the edge cases, in a quiet moment: each left
    // our session as a datagram.
    let samples = endpoint_samples();
    let relayed_before = (p.relay_packets(), p.node.stats().relay_sent);
    let packets_written = |p: &Pair| {
        p.node
            .inspect(|c| c.session(&p.peer).map(|s| s.stats().packets_sent))
            .expect("session")
    };
    let before = packets_written(&p);
    p.rt.block_on(async {
        for s in &samples {
            send_lossy(&p.f, s).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let written = packets_written(&p) - before;
    assert!(
        written >= samples.len() as u64,
        "[{label}] {written} datagrams for {} endpoint packets",
        samples.len()
    );

    // The burst, while messages go both ways and a custom lossless stream
    // goes each way.
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let receiver = p.rt.spawn(receive_all(p.f.clone(), msg_tx, stop_rx));
    p.h.start_custom(p.friend, STREAM, STREAM_SIZE, ITS_STREAM_ID)
        .expect("start its stream");
    let sender = spawn_sender(&p.rt, &p.f, STREAM, STREAM_SIZE, Some(3), Instant::now());
    let burst = {
        let f = p.f.clone();
        p.rt.spawn(async move {
            let mut tick = tokio::time::interval(BURST_SPAN / BURST);
            for seq in 0..BURST {
                tick.tick().await;
                send_lossy(&f, &endpoint_packet(seq)).await;
            }
        })
    };
    let mut rounds = 0u32;
    while rounds == 0 || !burst.is_finished() {
        let ours = format!("toxlink {rounds}");
        let its = format!("ctox {rounds}");
        p.h.send_message(p.friend, &its).expect("MSG");
        p.rt.block_on(p.f.send_message(ours.as_bytes()))
            .expect("send message");
        assert_eq!(
            p.h.expect_message(p.friend, MESSAGE_TIMEOUT)
                .expect("c-toxcore shows our message"),
            ours,
            "[{label}]"
        );
        let got = p
            .rt
            .block_on(async { tokio::time::timeout(MESSAGE_TIMEOUT, msg_rx.recv()).await })
            .unwrap_or_else(|_| panic!("[{label}] its message {rounds} within {MESSAGE_TIMEOUT:?}"))
            .expect("receiver running");
        assert_eq!(got, its.as_bytes(), "[{label}]");
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    p.rt.block_on(burst).expect("burst task");
    let burst_took = t0.elapsed();
    let _ = stop_tx.send(());
    let st =
        p.h.wait_stats(
            p.friend,
            TRANSFER_TIMEOUT,
            Duration::from_millis(100),
            |s| s.custom.rx >= u64::from(STREAM),
        )
        .unwrap_or_else(|e| panic!("[{label}] c-toxcore receives our stream: {e}"));
    all_custom_intact(&st.custom, STREAM);
    let got =
        p.rt.block_on(async { tokio::time::timeout(TRANSFER_TIMEOUT, receiver).await })
            .expect("its stream in time")
            .expect("receiver task");
    assert_eq!(got.stream, STREAM);
    assert_eq!(
        (got.lossy, got.other),
        (0, 0),
        "[{label}] what c-toxcore sent us"
    );
    p.rt.block_on(sender).expect("sender task");
    let its = p.h.wait_sent(Duration::from_secs(10)).expect("its SENT");
    assert_eq!((its.accepted, its.error), (STREAM, None), "[{label}]");
    // One more message each way after everything.
    message_each_way(&p.rt, &mut p.h, p.friend, &p.f);
    std::thread::sleep(SETTLE);

    let st = p.h.stats(p.friend).expect("stats");
    eprintln!(
        "[{label}] {} endpoint packets sent ({} before and {BURST} in a burst during {rounds} \
         message rounds and {STREAM} lossless packets each way), {:.1} s; c-toxcore: {st:?}",
        samples.len() as u32 + BURST,
        samples.len(),
        burst_took.as_secs_f64()
    );
    assert_nothing_surfaced(&mut p, &st, "after the burst");
    if let Some(forwarded) = p.relay_packets() {
        // Through the relay, all of it: our packets left through our relay
        // link, and the relay forwarded them and c-toxcore's.
        let ours = samples.len() as u64 + u64::from(BURST + STREAM);
        let sent = p.node.stats().relay_sent - relayed_before.1;
        let forwarded = forwarded - relayed_before.0.unwrap_or(0);
        assert!(sent >= ours, "[{label}] our relay_sent {sent} < {ours}");
        assert!(
            forwarded >= ours + u64::from(STREAM),
            "[{label}] the relay forwarded {forwarded} DATA packets"
        );
        eprintln!(
            "[{label}] our relay_sent +{sent}, the relay forwarded +{forwarded} DATA packets"
        );
    }
    assert_eq!(st.msgs_rx, 2 + u64::from(rounds), "[{label}] messages");
    // Our node also sent its own endpoint lists to this peer by itself
    // (node::discovery: it cannot know the peer is c-toxcore), never
    // acknowledged, so re-sent at most 5 times per generation of the list,
    // each time on at most 3 paths;
    // c-toxcore surfaced none of them (the checks above).
    let ns = p.node.stats();
    assert!(
        ns.endpoint_msgs_sent >= 1,
        "[{label}] the node sent no endpoint list: {ns:?}"
    );
    assert!(
        ns.endpoint_msgs_sent <= 5 * 3 * ns.endpoint_changes.max(1),
        "[{label}] {} endpoint lists for {} generations",
        ns.endpoint_msgs_sent,
        ns.endpoint_changes
    );
    assert_eq!(
        ns.endpoint_lists_received, 0,
        "[{label}] c-toxcore sent a list?"
    );
    eprintln!(
        "[{label}] the node sent {} endpoint lists of its own ({} generations)",
        ns.endpoint_msgs_sent, ns.endpoint_changes
    );

    // Control: custom lossy packets (id 200) right after endpoint packets on
    // the same connection. c-toxcore delivers those, so its lossy callback
    // works and the path carried lossy packets; still nothing of id 199.
    p.rt.block_on(async {
        for seq in 0..CONTROL {
            send_lossy(&p.f, &endpoint_packet(seq)).await;
            p.f.send_custom_lossy(&custom_packet(CONTROL_ID, seq, 100, 0))
                .expect("send custom lossy");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let want = u64::from(CONTROL) * 9 / 10;
    let st =
        p.h.wait_stats(
            p.friend,
            Duration::from_secs(10),
            Duration::from_millis(50),
            |s| s.lossy.good() >= want,
        )
        .unwrap_or_else(|e| panic!("[{label}] c-toxcore receives the control packets: {e}"));
    std::thread::sleep(SETTLE);
    let st = p.h.stats(p.friend).unwrap_or(st);
    let n = st.lossy.good();
    assert!(
        n >= want && n <= u64::from(CONTROL),
        "[{label}] control: {st:?}"
    );
    assert_eq!(
        st.lossy_ids,
        BTreeMap::from([(CONTROL_ID, st.lossy.rx)]),
        "[{label}] control: only the custom lossy packets reached c-toxcore's application"
    );
    assert_eq!((st.lossy.bad, st.lossy.dup), (0, 0), "[{label}] control");
    let ids = p.h.take_packet_id_events(p.friend).expect("PKTID lines");
    assert_eq!(
        ids.iter().map(|e| (e.lossy, e.id)).collect::<Vec<_>>(),
        [(true, CONTROL_ID)],
        "[{label}] control: PKTID events"
    );
    assert_eq!(
        (st.conn_changes, st.conn_offline, st.status),
        (1, 0, p.kind),
        "[{label}] control: status"
    );
    assert!(p.f.is_online(), "[{label}] control: online on our side");
    eprintln!(
        "[{label}] control: {n} of {CONTROL} custom lossy packets delivered, none of the \
         {CONTROL} endpoint packets between them; whole test {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    p.f.close();
    p.h.quit().expect("harness quits");
    drop(p.relay);
}

#[test]
fn c_toxcore_ignores_toxlink_endpoint_packets_silently_and_stays_online_through_a_relay() {
    require_harness();
    exercise(pair_through_relay(71));
}

#[test]
fn c_toxcore_ignores_toxlink_endpoint_packets_silently_and_stays_online_over_udp() {
    require_harness();
    exercise(pair_over_udp(72));
}
