//! TCP-like stream model: ordered and intact under bandwidth caps and
//! segmentation; open, close, reset, stall, black hole and refusal do what
//! relay code will expect of a TCP connection.

use std::time::{Duration, Instant};
use toxlink_sim::{
    ms, secs, Network, SimClock, SimRng, StreamConfig, StreamError, StreamEvent, StreamId,
    StreamSide,
};

const CLIENT: u8 = 1;
const RELAY: u8 = 2;

fn net() -> (Network<u8>, Instant) {
    let clock = SimClock::new();
    (Network::new(clock.base(), SimRng::new(1)), clock.base())
}

/// All stream events due by `until`: (offset, receiver address, event).
fn events(n: &mut Network<u8>, t0: Instant, until: Duration) -> Vec<(Duration, u8, StreamEvent)> {
    let mut v = Vec::new();
    while let Some(d) = n.poll_stream(t0 + until) {
        v.push((d.at - t0, d.info.local, d.event));
    }
    v
}

fn data_for(evs: &[(Duration, u8, StreamEvent)], to: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, r, e) in evs {
        if let (true, StreamEvent::Data(b)) = (*r == to, e) {
            out.extend_from_slice(b);
        }
    }
    out
}

fn open(n: &mut Network<u8>, t0: Instant, cfg: StreamConfig) -> StreamId {
    n.open_stream(t0, CLIENT, RELAY, cfg)
}

#[test]
fn opened_reaches_acceptor_after_latency_and_initiator_after_a_round_trip() {
    let (mut n, t0) = net();
    let id = open(&mut n, t0, StreamConfig::new().latency(ms(10)));
    n.stream_write(t0, id, StreamSide::Initiator, &b"hello"[..])
        .expect("write");
    let evs = events(&mut n, t0, secs(1));
    assert_eq!(
        evs,
        vec![
            (ms(10), RELAY, StreamEvent::Opened),
            (ms(20), CLIENT, StreamEvent::Opened),
            // Data leaves after the SYN-ACK: 2 latencies + 1.
            (ms(30), RELAY, StreamEvent::Data(b"hello"[..].into())),
        ]
    );
}

#[test]
fn bytes_arrive_in_order_and_intact_under_bandwidth_cap_and_segmentation() {
    let (mut n, t0) = net();
    // 1 MB/s, 5 ms, 1000-byte segments.
    let cfg = StreamConfig::new()
        .latency(ms(5))
        .bandwidth(1_000_000)
        .max_segment(1000);
    let id = open(&mut n, t0, cfg);
    let mut rng = SimRng::new(99);
    let mut sent = Vec::new();
    let t_write = t0 + ms(10);
    let mut written = 0usize;
    while written < 1 << 20 {
        let len = 1 + rng.below(7000) as usize;
        let mut chunk = vec![0u8; len];
        rng.fill(&mut chunk);
        sent.extend_from_slice(&chunk);
        n.stream_write(t_write, id, StreamSide::Initiator, chunk)
            .expect("write");
        written += len;
    }
    assert_eq!(n.stream_backlog(id, StreamSide::Initiator), written);
    let evs = events(&mut n, t0, secs(100));
    let got = data_for(&evs, RELAY);
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes differ");
    for (_, _, e) in &evs {
        if let StreamEvent::Data(b) = e {
            assert!(b.len() <= 1000, "segment of {}", b.len());
        }
    }
    // Serialisation: `written` bytes at 1 MB/s starting after the handshake
    // (10 ms), plus 5 ms latency. Rounding up per segment adds < 1 us each.
    let last = evs.last().map(|e| e.0).unwrap_or_default();
    let ideal = ms(10) + Duration::from_micros(written as u64) + ms(5);
    assert!(
        last >= ideal && last < ideal + ms(2),
        "last {last:?} ideal {ideal:?}"
    );
    assert_eq!(n.stream_backlog(id, StreamSide::Initiator), 0);
    let st = n.stream_stats(id).expect("stats");
    assert_eq!(st.bytes_delivered[1], written as u64);
}

#[test]
fn close_delivers_closed_after_all_data_and_allows_half_close() {
    let (mut n, t0) = net();
    let id = open(
        &mut n,
        t0,
        StreamConfig::new().latency(ms(1)).bandwidth(10_000),
    );
    let t = t0 + ms(5);
    n.stream_write(t, id, StreamSide::Initiator, vec![7u8; 1000])
        .expect("write");
    n.stream_close(t, id, StreamSide::Initiator).expect("close");
    assert_eq!(
        n.stream_write(t, id, StreamSide::Initiator, vec![1u8]),
        Err(StreamError::Closed(id))
    );
    // The relay still answers (half-close).
    n.stream_write(t + ms(1), id, StreamSide::Acceptor, &b"bye"[..])
        .expect("half-closed peer can write");
    let evs = events(&mut n, t0, secs(10));
    let relay: Vec<_> = evs.iter().filter(|e| e.1 == RELAY).collect();
    assert!(matches!(relay.last(), Some((_, _, StreamEvent::Closed))));
    // 1000 bytes at 10 kB/s take 100 ms; Closed comes after.
    assert_eq!(relay.last().map(|e| e.0), Some(ms(5) + ms(100) + ms(1)));
    assert_eq!(data_for(&evs, RELAY), vec![7u8; 1000]);
    assert_eq!(data_for(&evs, CLIENT), b"bye".to_vec());
}

#[test]
fn reset_reaches_both_sides_after_latency_and_discards_later_data() {
    let (mut n, t0) = net();
    let id = open(
        &mut n,
        t0,
        StreamConfig::new().latency(ms(10)).bandwidth(1_000),
    );
    let t = t0 + ms(20);
    // 100 bytes at 1 kB/s: arrives at 20 + 100 + 10 = 130 ms.
    n.stream_write(t, id, StreamSide::Acceptor, vec![1u8; 100])
        .expect("write");
    // 10 bytes: arrives at 20 + 10 + 10 = 40 ms, before the reset lands.
    n.stream_write(t, id, StreamSide::Initiator, vec![2u8; 10])
        .expect("write");
    n.stream_reset(t0 + ms(50), id).expect("reset");
    // A write before the writer learns of the reset is silently discarded.
    n.stream_write(t0 + ms(55), id, StreamSide::Initiator, vec![3u8; 10])
        .expect("accepted, discarded");
    let evs = events(&mut n, t0, secs(10));
    assert_eq!(
        evs.iter()
            .filter(|e| e.0 >= ms(40))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            (ms(40), RELAY, StreamEvent::Data(vec![2u8; 10].into())),
            (ms(60), CLIENT, StreamEvent::Reset),
            (ms(60), RELAY, StreamEvent::Reset),
        ]
    );
    // Nothing after Reset; writes now fail.
    assert_eq!(
        n.stream_write(t0 + ms(70), id, StreamSide::Acceptor, vec![1u8]),
        Err(StreamError::Reset(id))
    );
    let st = n.stream_stats(id).expect("stats");
    assert_eq!(st.bytes_discarded, [10, 100]);
}

#[test]
fn reset_from_one_side_tells_only_the_peer() {
    let (mut n, t0) = net();
    let id = open(&mut n, t0, StreamConfig::new().latency(ms(10)));
    let _ = events(&mut n, t0, ms(20));
    n.stream_reset_from(t0 + ms(30), id, StreamSide::Acceptor)
        .expect("rst");
    assert_eq!(
        events(&mut n, t0, secs(1)),
        vec![(ms(40), CLIENT, StreamEvent::Reset)]
    );
}

#[test]
fn stall_holds_bytes_silently_then_delivers_them_in_order() {
    let (mut n, t0) = net();
    let id = open(&mut n, t0, StreamConfig::new().latency(ms(10)));
    let _ = events(&mut n, t0, ms(20));
    n.stream_write(t0 + ms(20), id, StreamSide::Initiator, &b"a"[..])
        .expect("write");
    n.stream_stall(t0 + ms(25), id, t0 + secs(2))
        .expect("stall");
    for (k, b) in [b"b", b"c", b"d"].iter().enumerate() {
        let t = t0 + ms(100 + 100 * k as u64);
        n.stream_write(t, id, StreamSide::Initiator, &b[..])
            .expect("write during stall");
    }
    // Nothing at all (no error, no close) during the stall.
    assert_eq!(events(&mut n, t0, ms(1999)), vec![]);
    let evs = events(&mut n, t0, secs(3));
    assert_eq!(data_for(&evs, RELAY), b"abcd".to_vec());
    assert!(evs.iter().all(|e| e.0 == secs(2)), "{evs:?}");
    // After the stall, normal latency again.
    n.stream_write(t0 + secs(3), id, StreamSide::Initiator, &b"e"[..])
        .expect("write");
    assert_eq!(
        events(&mut n, t0, secs(4)),
        vec![(secs(3) + ms(10), RELAY, StreamEvent::Data(b"e"[..].into()))]
    );
}

#[test]
fn black_hole_swallows_everything_silently() {
    let (mut n, t0) = net();
    let id = open(&mut n, t0, StreamConfig::new().latency(ms(10)));
    let _ = events(&mut n, t0, ms(20));
    n.stream_write(t0 + ms(20), id, StreamSide::Initiator, vec![1u8; 50])
        .expect("write");
    n.stream_black_hole(t0 + ms(25), id).expect("black hole");
    n.stream_write(t0 + ms(40), id, StreamSide::Acceptor, vec![2u8; 70])
        .expect("writes still succeed");
    n.stream_close(t0 + ms(50), id, StreamSide::Initiator)
        .expect("close");
    assert_eq!(events(&mut n, t0, secs(60)), vec![]);
    let st = n.stream_stats(id).expect("stats");
    assert_eq!(st.bytes_discarded, [50, 70]);
    assert_eq!(st.bytes_delivered, [0, 0]);
}

#[test]
fn refused_stream_is_reset_after_a_round_trip() {
    let (mut n, t0) = net();
    n.refuse_streams(RELAY, true);
    let id = open(&mut n, t0, StreamConfig::new().latency(ms(10)));
    assert_eq!(
        events(&mut n, t0, secs(1)),
        vec![(ms(20), CLIENT, StreamEvent::Reset)]
    );
    assert_eq!(
        n.stream_write(t0 + secs(1), id, StreamSide::Initiator, vec![1u8]),
        Err(StreamError::Reset(id))
    );
    assert_eq!(
        n.stream_write(t0, StreamId(99), StreamSide::Initiator, vec![1u8]),
        Err(StreamError::Unknown(StreamId(99)))
    );
}
