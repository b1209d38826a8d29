//! Tests of the reply parsers and the command line.

use super::*;

const STATS_LINE: &str = "STATS friend=3 status=udp custom_rx=10 custom_bad=1 custom_dup=2 \
        custom_reordered=0 custom_lost=4 custom_bytes_rx=700 custom_max_gap_ms=1 custom_max_gap_us=1500 \
        custom_last_rx_us=99 custom_lat_avg_us=5 custom_lat_max_us=9 lossy_rx=0 lossy_bad=0 lossy_dup=0 \
        lossy_reordered=0 lossy_lost=0 lossy_bytes_rx=0 lossy_max_gap_ms=0 lossy_max_gap_us=0 \
        lossy_last_rx_us=0 lossy_lat_avg_us=0 lossy_lat_max_us=0 msgs_rx=2 custom_tx=11 lossy_tx=0 \
        echo_tx=0 echo_dropped=0 custom_ids=160:10,191:1 lossy_ids=- conn_changes=2 conn_offline=1 \
        now_us=123";

#[test]
fn parses_stats() {
    let s = Stats::parse(STATS_LINE).unwrap();
    assert_eq!(s.friend, 3);
    assert_eq!(s.status, ConnKind::Udp);
    assert_eq!(s.custom.rx, 10);
    assert_eq!(s.custom.good(), 7);
    assert_eq!(s.custom.lost, 4);
    assert_eq!(s.custom.max_gap_us, 1500);
    assert_eq!(s.msgs_rx, 2);
    assert_eq!(s.custom_tx, 11);
    assert_eq!(s.now_us, 123);
    assert_eq!(
        s.custom_ids.into_iter().collect::<Vec<_>>(),
        [(160, 10), (191, 1)]
    );
    assert!(s.lossy_ids.is_empty());
    assert_eq!((s.conn_changes, s.conn_offline), (2, 1));
}

#[test]
fn rejects_bad_id_counts() {
    for bad in [
        "lossy_ids=",
        "lossy_ids=200",
        "lossy_ids=256:1",
        "lossy_ids=200:x",
        "lossy_ids=1:1,",
    ] {
        let l = STATS_LINE.replace("lossy_ids=-", bad);
        assert!(Stats::parse(&l).is_err(), "{bad}");
    }
}

#[test]
fn parses_packet_id_events() {
    let e = PacketIdEvent::parse("PKTID 2 lossy 200 600 99").unwrap();
    assert_eq!(
        e,
        PacketIdEvent {
            friend: 2,
            lossy: true,
            id: 200,
            len: 600,
            mono_us: 99
        }
    );
    assert!(
        !PacketIdEvent::parse("PKTID 0 lossless 160 17 1")
            .unwrap()
            .lossy
    );
    assert!(PacketIdEvent::parse("PKTID 0 odd 160 17 1").is_err());
    assert!(PacketIdEvent::parse("PKTID 0 lossy 300 17 1").is_err());
    assert!(PacketIdEvent::parse("PKTID 0 lossy 200 17").is_err());
}

#[test]
fn rejects_incomplete_stats() {
    let cut = STATS_LINE.replace(" msgs_rx=2", "");
    assert!(matches!(Stats::parse(&cut), Err(InteropError::Protocol(_))));
    assert!(Stats::parse("STATX friend=1").is_err());
    let bad_num = STATS_LINE.replace("custom_rx=10", "custom_rx=ten");
    assert!(Stats::parse(&bad_num).is_err());
}

#[test]
fn parses_sent() {
    let r = SendReport::parse("SENT 5 12 friend=0 kind=lossless start_us=77 err=none").unwrap();
    assert_eq!(
        (r.accepted, r.ms, r.friend, r.lossy, r.start_us),
        (5, 12, 0, false, 77)
    );
    assert_eq!(r.error, None);
    let r = SendReport::parse("SENT 2 1 friend=1 kind=lossy start_us=7 err=stalled").unwrap();
    assert!(r.lossy);
    assert_eq!(r.error.as_deref(), Some("stalled"));
    assert!(SendReport::parse("SENT x 1 friend=1 kind=lossy start_us=7 err=none").is_err());
    assert!(SendReport::parse("SENT 1 1 friend=1 kind=odd start_us=7 err=none").is_err());
}

#[test]
fn parses_conn_events() {
    let e = parse_conn_event("tcp 1500 42", "CONN 0 tcp 1500 42").unwrap();
    assert_eq!(
        e,
        ConnEvent {
            kind: ConnKind::Tcp,
            ms_since_start: 1500,
            mono_us: 42
        }
    );
    assert!(parse_conn_event("fast 1 2", "").is_err());
    assert!(parse_conn_event("udp", "").is_err());
}

#[test]
fn options_become_arguments() {
    let a = HarnessOptions::new()
        .no_udp()
        .secret_key([0xab; 32])
        .name("alice")
        .echo(true)
        .args()
        .unwrap();
    let joined = a.join(" ");
    assert!(joined.contains("--no-udp"));
    assert!(joined.contains(&format!("--secret-key {}", "AB".repeat(32))));
    assert!(joined.contains("--name alice"));
    assert!(joined.contains("--echo"));
    assert!(joined.contains("--local-discovery 0"));
    assert!(HarnessOptions::new().name("a\nb").args().is_err());
}
