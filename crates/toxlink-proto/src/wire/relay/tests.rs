//! docs/PROTOCOL.md §10 relay vectors, layouts, malformed input, round trips.

use super::*;
use crate::crypto::tests::{alice, bob, h, hv, k, nonce};
use crate::crypto::{KeyPair, SecretKey};
use crate::wire::packed::arb_node;
use proptest::prelude::*;

#[test]
fn ping_and_pong_frames_match_vectors() {
    let mut ch = SecureChannel::new(k(), nonce(), nonce());
    let mut out = [0u8; 64];
    let ping = RelayPacket::Ping {
        ping_id: h("0102030405060708"),
    };
    assert_eq!(ping.to_vec().unwrap(), hv("040102030405060708"));
    let n = ch.seal_packet(&ping, &mut out).unwrap();
    assert_eq!(
        &out[..n],
        &hv("0019355b930bb47b9eadb4fa3d54987d3cfe349f665970ece6a105")[..]
    );
    let pong = RelayPacket::Pong {
        ping_id: h("0102030405060708"),
    };
    let n = ch.seal_packet(&pong, &mut out).unwrap();
    assert_eq!(
        &out[..n],
        &hv("001902f5662e2012b4cc9a68ef3b1602f104e3a416ac8c20a8e5f3")[..]
    );

    // The receiving side opens both in order.
    let mut rx = SecureChannel::new(k(), nonce(), nonce());
    for (frame, want) in [
        (
            "0019355b930bb47b9eadb4fa3d54987d3cfe349f665970ece6a105",
            ping,
        ),
        (
            "001902f5662e2012b4cc9a68ef3b1602f104e3a416ac8c20a8e5f3",
            pong,
        ),
    ] {
        let mut f = hv(frame);
        assert_eq!(split_frame(&f).unwrap(), FrameSplit::Frame { box_len: 25 });
        let plain = rx.open_in_place(&mut f[2..]).unwrap();
        assert_eq!(RelayPacket::parse(plain).unwrap(), want);
    }
}

#[test]
fn routing_request_frame_matches_vector() {
    let mut ch = SecureChannel::new(k(), nonce(), nonce());
    let mut out = [0u8; 64];
    let n = ch
        .seal_packet(
            &RelayPacket::RoutingRequest { peer: bob().public },
            &mut out,
        )
        .unwrap();
    assert_eq!(n, 51);
    assert_eq!(
        &out[..n],
        &hv(
            "00317965d9f6ec3feabaea50e0d1242115bf3040fa8109929d67b95118cd1bfb
             9e802d2468ce9274251741a4c02041eadfbd6a"
        )[..]
    );
}

#[test]
fn client_hello_matches_vector() {
    let temp = KeyPair::from_secret(SecretKey([0x42; 32]));
    assert_eq!(
        temp.public.0,
        h::<32>("132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f472")
    );
    let payload = HandshakePayload {
        temp_pk: temp.public,
        base_nonce: Nonce([0x11; 24]),
    };
    let hello = HandshakeRequest::seal(
        alice().public,
        &alice().precompute(&bob().public),
        nonce(),
        &payload,
    );
    let want = hv(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a
                   69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37
                   b97f0e19ca3c1d12e9f9f899a149070c23b2207194f91b7373f0239ff1bd0c52
                   05d72add60817ce32bd871c2cc16a3e434226ac2ba708c704671c9d4a335b94a
                   0c1fef1fa9b6ff07",
    );
    assert_eq!(want.len(), HANDSHAKE_REQUEST_SIZE);
    assert_eq!(&hello.to_bytes()[..], &want[..]);

    // The server side parses and opens it with its own key.
    let parsed = HandshakeRequest::parse(&want).unwrap();
    assert_eq!(parsed, hello);
    let opened = parsed.open(&bob().precompute(&parsed.client_pk)).unwrap();
    assert_eq!(opened, payload);
    // Another relay key cannot open it.
    let other = KeyPair::from_secret(SecretKey([9; 32]));
    assert!(parsed.open(&other.precompute(&parsed.client_pk)).is_err());
}

#[test]
fn server_reply_round_trip() {
    let payload = HandshakePayload {
        temp_pk: PublicKey([3; 32]),
        base_nonce: Nonce([4; 24]),
    };
    let reply = HandshakeResponse::seal(&k(), nonce(), &payload);
    let bytes = reply.to_bytes();
    assert_eq!(bytes.len(), HANDSHAKE_RESPONSE_SIZE);
    assert_eq!(&bytes[..24], &nonce().0);
    let parsed = HandshakeResponse::parse(&bytes).unwrap();
    assert_eq!(parsed.open(&k()).unwrap(), payload);
    let mut bad = bytes;
    bad[50] ^= 1;
    assert!(HandshakeResponse::parse(&bad).unwrap().open(&k()).is_err());
    assert!(HandshakeResponse::parse(&bytes[..95]).is_err());
    assert!(HandshakeRequest::parse(&[0u8; 127]).is_err());
    assert!(HandshakeRequest::parse(&[0u8; 129]).is_err());
}

#[test]
fn frame_splitting_follows_c_toxcore_limits() {
    assert_eq!(split_frame(&[]).unwrap(), FrameSplit::Incomplete);
    assert_eq!(split_frame(&[0]).unwrap(), FrameSplit::Incomplete);
    assert_eq!(split_frame(&[0, 0]).unwrap(), FrameSplit::Empty);
    assert_eq!(FrameSplit::Empty.consumed(), 2);
    assert_eq!(split_frame(&[0, 20, 1, 2]).unwrap(), FrameSplit::Incomplete);
    let mut max = vec![0u8; 2 + 2048];
    max[..2].copy_from_slice(&2048u16.to_be_bytes());
    assert_eq!(
        split_frame(&max).unwrap(),
        FrameSplit::Frame { box_len: 2048 }
    );
    assert!(split_frame(&2049u16.to_be_bytes()).is_err());
    assert!(split_frame(&[0xff, 0xff]).is_err());
    // L = 16 splits but cannot open (no plaintext): the link closes.
    let mut f = vec![0u8; 18];
    f[1] = 16;
    assert_eq!(split_frame(&f).unwrap(), FrameSplit::Frame { box_len: 16 });
    let mut ch = SecureChannel::new(k(), nonce(), nonce());
    assert!(ch.open_in_place(&mut f[2..]).is_err());
    assert_eq!(
        ch.rx_nonce(),
        &nonce(),
        "failure does not advance the nonce"
    );
}

#[test]
fn largest_frame_seals_and_larger_is_refused() {
    let mut ch = SecureChannel::new(k(), nonce(), nonce());
    let data = vec![7u8; MAX_FRAME_PLAINTEXT - 1];
    let mut out = vec![0u8; MAX_FRAME_SIZE + 10];
    let p = RelayPacket::Data {
        connection_id: 16,
        data: &data,
    };
    assert_eq!(ch.seal_packet(&p, &mut out).unwrap(), MAX_FRAME_SIZE);
    let too_big = vec![7u8; MAX_FRAME_PLAINTEXT];
    assert!(ch
        .seal_packet(
            &RelayPacket::Data {
                connection_id: 16,
                data: &too_big
            },
            &mut out
        )
        .is_err());
}

#[test]
fn fixed_sizes_are_exact() {
    // (id, exact length) for every fixed-size packet.
    for (id, len) in [(0u8, 33usize), (1, 34), (2, 2), (3, 2), (4, 9), (5, 9)] {
        let mut b = vec![id; len];
        b[0] = id;
        assert!(RelayPacket::parse(&b).is_ok(), "id {id} len {len}");
        b.push(0);
        assert!(RelayPacket::parse(&b).is_err(), "id {id} len {}", len + 1);
        b.truncate(len - 1);
        assert!(RelayPacket::parse(&b).is_err(), "id {id} len {}", len - 1);
    }
    assert_eq!(RelayPacket::parse(&[]), Err(WireError::Empty));
    for id in 12..=15u8 {
        assert!(matches!(
            RelayPacket::parse(&[id, 1, 2]),
            Err(WireError::BadId { .. })
        ));
    }
    assert!(RelayPacket::parse(&[16]).is_err(), "DATA needs a byte");
    assert_eq!(
        RelayPacket::parse(&[255, 9]).unwrap(),
        RelayPacket::Data {
            connection_id: 255,
            data: &[9]
        }
    );
}

#[test]
fn oob_bounds() {
    let mut b = vec![6u8; 33];
    assert!(RelayPacket::parse(&b).is_err(), "OOB_SEND needs data");
    b.push(1);
    assert!(RelayPacket::parse(&b).is_ok());
    b.resize(33 + 1024, 0);
    assert!(RelayPacket::parse(&b).is_ok());
    b.push(0);
    assert!(RelayPacket::parse(&b).is_err(), "OOB_SEND over 1024");
    let mut r = vec![7u8; 34];
    assert!(RelayPacket::parse(&r).is_ok());
    r.truncate(33);
    assert!(RelayPacket::parse(&r).is_err());
    let big = [0u8; 1025];
    assert!(RelayPacket::OobSend {
        destination: PublicKey([0; 32]),
        data: &big
    }
    .to_vec()
    .is_err());
}

#[test]
fn forward_request_layout_and_limits() {
    // docs/PROTOCOL.md §10 capture: [10] ‖ 02 7f000001 <port> ‖ "FWDDATA".
    let p = RelayPacket::ForwardRequest {
        address: PackedIpPort {
            transport: Transport::Udp,
            addr: "127.0.0.1:33445".parse().unwrap(),
        },
        data: b"FWDDATA",
    };
    let v = p.to_vec().unwrap();
    assert_eq!(v, hv("0a 02 7f000001 82a5 46574444415441"));
    assert_eq!(RelayPacket::parse(&v).unwrap(), p);
    let mut tcp = v.clone();
    tcp[1] = 130;
    assert!(RelayPacket::parse(&tcp).is_err(), "TCP family refused");
    let mut big = v[..8].to_vec();
    big.extend(std::iter::repeat_n(0, 1793));
    assert!(RelayPacket::parse(&big).is_err(), "data over 1792");
    big.pop();
    assert!(RelayPacket::parse(&big).is_ok());
}

#[test]
fn priority_classes() {
    assert!(RelayPacket::Ping { ping_id: [1; 8] }.is_priority());
    assert!(RelayPacket::ConnectNotification { connection_id: 16 }.is_priority());
    assert!(!RelayPacket::Data {
        connection_id: 16,
        data: b"x"
    }
    .is_priority());
    assert!(!RelayPacket::OobSend {
        destination: PublicKey([0; 32]),
        data: b"x"
    }
    .is_priority());
}

fn arb_packet() -> impl Strategy<Value = (u8, Vec<u8>, [u8; 32], [u8; 8], u8)> {
    (
        0u8..=255,
        proptest::collection::vec(any::<u8>(), 1..1024),
        any::<[u8; 32]>(),
        any::<[u8; 8]>(),
        any::<u8>(),
    )
}

fn build<'a>(
    kind: u8,
    data: &'a [u8],
    pk: [u8; 32],
    ping: [u8; 8],
    cid: u8,
    addr: PackedIpPort,
) -> RelayPacket<'a> {
    match kind {
        0 => RelayPacket::RoutingRequest {
            peer: PublicKey(pk),
        },
        1 => RelayPacket::RoutingResponse {
            connection_id: cid,
            peer: PublicKey(pk),
        },
        2 => RelayPacket::ConnectNotification { connection_id: cid },
        3 => RelayPacket::DisconnectNotification { connection_id: cid },
        4 => RelayPacket::Ping { ping_id: ping },
        5 => RelayPacket::Pong { ping_id: ping },
        6 => RelayPacket::OobSend {
            destination: PublicKey(pk),
            data,
        },
        7 => RelayPacket::OobRecv {
            sender: PublicKey(pk),
            data,
        },
        8 => RelayPacket::OnionRequest { data },
        9 => RelayPacket::OnionResponse { data },
        10 => RelayPacket::ForwardRequest {
            address: PackedIpPort {
                transport: Transport::Udp,
                ..addr
            },
            data,
        },
        11 => RelayPacket::Forwarding { data },
        _ => RelayPacket::Data {
            connection_id: cid.max(16),
            data,
        },
    }
}

proptest! {
    #[test]
    fn every_packet_round_trips_through_a_frame(
        (kind, data, pk, ping, cid) in arb_packet(), node in arb_node(),
        tx in any::<[u8; 24]>(),
    ) {
        let p = build(kind % 13, &data, pk, ping, cid, node.ip_port);
        let mut a = SecureChannel::new(k(), Nonce(tx), nonce());
        let mut b = SecureChannel::new(k(), nonce(), Nonce(tx));
        let mut out = vec![0u8; MAX_FRAME_SIZE];
        let n = a.seal_packet(&p, &mut out).unwrap();
        prop_assert_eq!(n, p.encoded_len() + FRAME_OVERHEAD);
        let split = split_frame(&out[..n]).unwrap();
        prop_assert_eq!(split.consumed(), n);
        let plain = b.open_in_place(&mut out[2..n]).unwrap().to_vec();
        prop_assert_eq!(RelayPacket::parse(&plain).unwrap(), p);
        prop_assert_eq!(a.tx_nonce(), b.rx_nonce());
    }

    #[test]
    fn parse_never_panics_and_reencodes_identically(b in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(p) = RelayPacket::parse(&b) {
            // Anything that parses encodes back to the same bytes, except
            // values the encoder refuses to produce.
            if let Ok(v) = p.to_vec() {
                prop_assert_eq!(v, b);
            }
        }
    }
}

#[test]
fn a_handshake_in_pieces_is_collected_and_the_rest_is_left() {
    let mut acc = Vec::new();
    let mut a = [1u8; 50];
    let (m, rest) = take_handshake(&mut acc, &mut a, HANDSHAKE_REQUEST_SIZE);
    assert!(m.is_none() && rest.is_empty());
    let mut b = [2u8; 50];
    let (m, _) = take_handshake(&mut acc, &mut b, HANDSHAKE_REQUEST_SIZE);
    assert!(m.is_none());
    let mut c = [3u8; 30];
    let (m, rest) = take_handshake(&mut acc, &mut c, HANDSHAKE_REQUEST_SIZE);
    let m = m.expect("128 bytes arrived");
    assert_eq!((m.len(), m[0], m[50], m[127]), (128, 1, 2, 3));
    assert_eq!(rest.len(), 2);
    assert!(acc.is_empty());
}
