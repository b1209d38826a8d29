//! docs/PROTOCOL.md §10 net_crypto vectors, layouts, request packets, round trips.

use super::*;
use crate::crypto::tests::{alice, bob, h, hv, k, nonce};
use crate::crypto::{KeyPair, SecretKey};
use proptest::prelude::*;

fn data_packet(buffer_start: u32, num: u32, data: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_CRYPTO_PACKET_SIZE];
    let n = DataPacket::seal(
        &k(),
        &nonce(),
        &DataPlaintext {
            buffer_start,
            packet_number: num,
            data,
        },
        &mut out,
    )
    .unwrap();
    out[..n].to_vec()
}

#[test]
fn alive_online_and_empty_request_packets_match_vectors() {
    assert_eq!(
        data_packet(0, 0, &[0x10]),
        hv("1b0b3779b49dc0218f94c3af9e0b27db344529309e645a74e9e0a60d8243acc9")
    );
    assert_eq!(
        data_packet(0, 0, &[0x18]),
        hv("1b0b37618728b2e9e0ff4d6f9bb0f26afd07fc309e645a74e9e0a60d8243acc1")
    );
    assert_eq!(
        data_packet(0, 0, &[0x01]),
        hv("1b0b370669b9dbca550ba0c8443689cdfc177e309e645a74e9e0a60d8243acd8")
    );
    // And the plaintext layout itself: header, 4 zero bytes, id.
    let mut out = [0u8; 16];
    let p = DataPlaintext {
        buffer_start: 0,
        packet_number: 0,
        data: &[0x10],
    };
    assert_eq!(p.encode(&mut out).unwrap(), 13);
    assert_eq!(&out[..13], &hv("00000000 00000000 00000000 10")[..]);
}

#[test]
fn data_packet_opens_with_reconstructed_nonce() {
    let mut pkt = data_packet(7, 9, b"\xa0hello");
    let parsed = DataPacket::parse(&pkt).unwrap();
    assert_eq!(parsed.nonce_low, 0x0b37);
    let (full, diff) = reconstruct_nonce(&nonce(), parsed.nonce_low);
    assert_eq!((full, diff), (nonce(), 0));
    let plain = DataPacket::open_in_place(&k(), &full, &mut pkt).unwrap();
    assert_eq!(
        plain,
        DataPlaintext {
            buffer_start: 7,
            packet_number: 9,
            data: b"\xa0hello"
        }
    );
    let mut bad = data_packet(7, 9, b"\xa0hello");
    bad[10] ^= 0x80;
    assert!(DataPacket::open_in_place(&k(), &nonce(), &mut bad).is_err());
}

/// The two steps of `open_in_place` the session uses: a failed decryption
/// leaves the packet as it was (so it can be retried with the previous
/// window's nonce), a good one leaves the plaintext for `plaintext`.
#[test]
fn decrypt_in_place_then_plaintext_and_the_stale_window_nonce() {
    let pkt = data_packet(7, 9, b"\xa0hello");
    let mut buf = pkt.clone();
    let mut wrong = nonce();
    wrong.increment();
    assert!(matches!(
        DataPacket::decrypt_in_place(&k(), &wrong, &mut buf),
        Err(WireError::Crypto(_))
    ));
    assert_eq!(buf, pkt);
    DataPacket::decrypt_in_place(&k(), &nonce(), &mut buf).unwrap();
    let plain = DataPacket::plaintext(&buf).unwrap();
    assert_eq!((plain.buffer_start, plain.packet_number), (7, 9));
    assert_eq!(plain.data, b"\xa0hello");
    // Sent one window (65536 nonces) before `rx`: same two low bytes.
    let mut rx = nonce();
    rx.add(65536);
    let (old, back) = reconstruct_stale_nonce(&rx, nonce().low16());
    assert_eq!((old, back), (nonce(), 65536));
    // 4464 behind `rx` (reconstruct_nonce would put it 61072 ahead).
    let mut rx = nonce();
    rx.add(70_000);
    let (old, back) = reconstruct_stale_nonce(&rx, nonce().low16());
    let mut expect = nonce();
    expect.add(65536);
    assert_eq!((old, back), (expect, 4464));
    assert_eq!(reconstruct_nonce(&rx, nonce().low16()).1, 61072);
}

#[test]
fn nonce_window_vector() {
    // rx low bytes 0x0000, header 0xaaab: diff 43691 > 43690, so after
    // success rx moves by 21845 and its low bytes become 0x5555.
    let mut rx = Nonce([0; 24]);
    let (full, diff) = reconstruct_nonce(&rx, 0xaaab);
    assert_eq!(diff, 43691);
    assert_eq!(full.low16(), 0xaaab);
    advance_rx_nonce(&mut rx, diff);
    assert_eq!(rx.low16(), 0x5555);
    // 43690 does not move it.
    let mut rx2 = Nonce([0; 24]);
    advance_rx_nonce(&mut rx2, 43690);
    assert_eq!(rx2.low16(), 0);
    // Carry into byte 21 when the low bytes wrap.
    let mut rx3 = Nonce([0; 24]);
    rx3.0[22] = 0xff;
    rx3.0[23] = 0xf0;
    let (full, diff) = reconstruct_nonce(&rx3, 0x0010);
    assert_eq!(diff, 0x20);
    assert_eq!(&full.0[21..], &[1, 0, 0x10]);
}

#[test]
fn cookie_request_matches_vector() {
    let temp = KeyPair::from_secret(SecretKey([0x42; 32]));
    let req = CookieRequest::seal(
        alice().public,
        &alice().precompute(&bob().public),
        nonce(),
        &CookieRequestPayload {
            sender_real_pk: temp.public,
            echo_id: h("0102030405060708"),
        },
    );
    let want = hv(
        "188520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e
         6a69696ee955b62b73cd62bda875fc73d68219e0036b7a0b3737abf7f2ebcc60
         069324cf4fa34cb8da23b2207194f91b7373f0239ff1bd0c5205d72add60817c
         e32bd871c2cc16a3e425337bd3ab619d615760d8c5b224a85b1d0efe0eb8a7ee
         163abb0376529fcc09bbb705c21de73bef",
    );
    assert_eq!(want.len(), COOKIE_REQUEST_SIZE);
    assert_eq!(&req.to_bytes()[..], &want[..]);
    let parsed = CookieRequest::parse(&want).unwrap();
    let payload = parsed
        .open(&bob().precompute(&parsed.sender_dht_pk))
        .unwrap();
    assert_eq!(payload.sender_real_pk, temp.public);
    assert_eq!(payload.echo_id, h::<8>("0102030405060708"));
}

#[test]
fn cookie_response_and_handshake_round_trip() {
    let cookie_key = SharedKey([5; 32]);
    let cp = CookiePayload {
        timestamp: 1234,
        real_pk: alice().public,
        dht_pk: bob().public,
    };
    let cookie = Cookie::seal(&cookie_key, nonce(), &cp);
    let cookie_bytes = cookie.to_bytes();
    assert_eq!(cookie_bytes.len(), COOKIE_SIZE);
    assert_eq!(
        Cookie::from_bytes(&cookie_bytes).open(&cookie_key).unwrap(),
        cp
    );
    assert!(cookie.open(&SharedKey([6; 32])).is_err());

    let resp = CookieResponse::seal(
        &k(),
        nonce(),
        &CookieResponsePayload {
            cookie: cookie_bytes,
            echo_id: [9; 8],
        },
    );
    let rb = resp.to_bytes();
    assert_eq!(rb.len(), COOKIE_RESPONSE_SIZE);
    assert_eq!(rb[0], 0x19);
    let opened = CookieResponse::parse(&rb).unwrap().open(&k()).unwrap();
    assert_eq!(opened.cookie, cookie_bytes);
    assert_eq!(opened.echo_id, [9; 8]);

    let hs = Handshake::build(
        cookie_bytes,
        &k(),
        nonce(),
        Nonce([1; 24]),
        PublicKey([2; 32]),
        [3; COOKIE_SIZE],
    );
    let hb = hs.to_bytes();
    assert_eq!(hb.len(), HANDSHAKE_SIZE);
    assert_eq!(hb[0], 0x1a);
    assert_eq!(&hb[1..113], &cookie_bytes[..]);
    let p = Handshake::parse(&hb).unwrap().open(&k()).unwrap();
    assert_eq!(p.base_nonce, Nonce([1; 24]));
    assert_eq!(p.session_pk, PublicKey([2; 32]));
    assert_eq!(p.other_cookie, [3; COOKIE_SIZE]);
    assert_eq!(p.cookie_hash, sha512(&cookie_bytes));

    // A handshake whose outer cookie was swapped fails the hash check.
    let mut swapped = hb;
    swapped[1] ^= 1;
    assert!(matches!(
        Handshake::parse(&swapped).unwrap().open(&k()),
        Err(WireError::BadField { .. })
    ));
}

#[test]
fn sizes_and_ids_are_exact() {
    assert_eq!(MAX_CRYPTO_DATA_SIZE, 1373);
    assert_eq!(MIN_DATA_PACKET_SIZE, 28);
    for (size, id, parse) in [
        (
            COOKIE_REQUEST_SIZE,
            0x18u8,
            (|b| CookieRequest::parse(b).is_ok()) as fn(&[u8]) -> bool,
        ),
        (COOKIE_RESPONSE_SIZE, 0x19, |b| {
            CookieResponse::parse(b).is_ok()
        }),
        (HANDSHAKE_SIZE, 0x1a, |b| Handshake::parse(b).is_ok()),
    ] {
        let mut b = vec![0u8; size];
        b[0] = id;
        assert!(parse(&b), "{id:#x} ok at {size}");
        assert!(!parse(&b[..size - 1]), "{id:#x} short");
        b.push(0);
        assert!(!parse(&b), "{id:#x} long");
        let mut wrong = vec![0u8; size];
        wrong[0] = id.wrapping_add(1);
        assert!(!parse(&wrong), "{id:#x} wrong id");
        assert!(!parse(&[]));
    }
    let mut d = vec![0x1bu8; 28];
    assert!(DataPacket::parse(&d).is_ok());
    d.truncate(27);
    assert!(DataPacket::parse(&d).is_err());
    d.resize(1400, 0);
    assert!(DataPacket::parse(&d).is_ok());
    d.push(0);
    assert!(DataPacket::parse(&d).is_err());
    // 1373 data bytes fit a 1400-byte packet; 1374 do not.
    assert_eq!(data_packet(0, 0, &[0x10; 1373]).len(), 1400);
    let mut out = [0u8; 1500];
    assert!(DataPacket::seal(
        &k(),
        &nonce(),
        &DataPlaintext {
            buffer_start: 0,
            packet_number: 0,
            data: &[0x10; 1374]
        },
        &mut out
    )
    .is_err());
}

#[test]
fn plaintext_padding_rules() {
    // Any amount of zero padding is accepted.
    let mut b = vec![0, 0, 0, 1, 0, 0, 0, 2];
    b.extend(std::iter::repeat_n(0, 100));
    b.extend_from_slice(&[0x40, 0, 7]);
    let p = DataPlaintext::parse(&b).unwrap();
    assert_eq!((p.buffer_start, p.packet_number), (1, 2));
    assert_eq!(p.data, &[0x40, 0, 7]);
    // Only zeros, or nothing after the header: refused.
    assert!(DataPlaintext::parse(&[0u8; 20]).is_err());
    assert!(DataPlaintext::parse(&[0u8; 8]).is_err());
    assert!(DataPlaintext::parse(&[]).is_err());
    // An id 0 cannot be encoded.
    let mut out = [0u8; 32];
    assert!(DataPlaintext {
        buffer_start: 0,
        packet_number: 0,
        data: &[0, 1]
    }
    .encode(&mut out)
    .is_err());
    for len in 1..=16usize {
        assert_eq!((len + DataPlaintext::padding_for(len)) % 8, 1373 % 8);
    }
}

#[test]
fn id_classes() {
    assert_eq!(IdClass::of(0), IdClass::Padding);
    assert_eq!(IdClass::of(1), IdClass::Request);
    assert_eq!(IdClass::of(2), IdClass::Kill);
    for id in 3..=15 {
        assert_eq!(IdClass::of(id), IdClass::Reserved);
    }
    assert_eq!(IdClass::of(16), IdClass::Lossless);
    assert_eq!(IdClass::of(191), IdClass::Lossless);
    assert_eq!(IdClass::of(192), IdClass::Lossy);
    assert_eq!(IdClass::of(254), IdClass::Lossy);
    assert_eq!(IdClass::of(255), IdClass::Reserved);
}

fn request(start: u32, end: u32, missing: &[u32]) -> Vec<u8> {
    let mut out = [0u8; MAX_CRYPTO_DATA_SIZE];
    let n = encode_request(start, end, |i| !missing.contains(&i), &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn request_packet_vectors() {
    assert_eq!(request(1, 5, &[1, 4]), hv("01 01 03"));
    assert_eq!(request(1, 1025, &[3, 6, 1024]), hv("01 03 03 00 00 00 fd"));
    assert_eq!(request(1, 1, &[]), hv("01"));
    assert_eq!(request(1, 50, &[]), hv("01"), "nothing missing");
    // Observed from c-toxcore: k..k+4 numbered, k+1, k+3, k+4 sent.
    assert_eq!(request(100, 105, &[100, 102]), hv("01 01 02"));
    assert_eq!(request(100, 105, &[100]), hv("01 01"));
}

#[test]
fn request_decoding_vectors() {
    let items: Vec<_> = RequestDecoder::new(&hv("01 03"), 1, 10).collect();
    // 1 requested, 2 and 3 received, 4 requested; nothing said about 5..10.
    assert_eq!(
        items,
        vec![
            RequestItem {
                number: 1,
                requested: true
            },
            RequestItem {
                number: 2,
                requested: false
            },
            RequestItem {
                number: 3,
                requested: false
            },
            RequestItem {
                number: 4,
                requested: true
            },
        ]
    );
    let requested: Vec<u32> = RequestDecoder::new(&hv("03 03 00 00 00 fd"), 1, 2000)
        .filter(|i| i.requested)
        .map(|i| i.number)
        .collect();
    assert_eq!(requested, vec![3, 6, 1024]);
    // A leading 0 skips a run of 255 received packets.
    let requested: Vec<u32> = RequestDecoder::new(&hv("00 01"), 1, 2000)
        .filter(|i| i.requested)
        .map(|i| i.number)
        .collect();
    assert_eq!(requested, vec![256]);
    // Never walks past send_end.
    assert_eq!(RequestDecoder::new(&hv("05"), 1, 3).count(), 2);
    // Wraps around u32.
    let items: Vec<_> = RequestDecoder::new(&hv("02"), u32::MAX, 5).collect();
    assert_eq!(
        items[1],
        RequestItem {
            number: 0,
            requested: true
        }
    );
}

proptest! {
    #[test]
    fn request_round_trip(start in any::<u32>(), len in 0u32..3000,
                          missing in proptest::collection::btree_set(0u32..3000, 0..60)) {
        let missing: Vec<u32> = missing.into_iter().filter(|m| *m < len)
            .map(|m| start.wrapping_add(m)).collect();
        let end = start.wrapping_add(len);
        let body = request(start, end, &missing);
        let mut seen_missing = vec![];
        let mut count = 0u32;
        for item in RequestDecoder::new(&body[1..], start, end) {
            prop_assert_eq!(item.number, start.wrapping_add(count));
            count += 1;
            if item.requested { seen_missing.push(item.number); }
        }
        // Every missing packet is requested and nothing else is; decoding
        // reaches at least the last requested one (runs of 255 received
        // packets after it are encoded as 0 bytes) and never passes the end.
        prop_assert_eq!(&seen_missing, &missing);
        if let Some(&last) = missing.last() {
            prop_assert!(count > last.wrapping_sub(start));
        }
        prop_assert!(count <= len);
    }

    #[test]
    fn skipping_numbers_matches_iterating_over_them(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        start in any::<u32>(), len in 0u32..70_000, k in 0u32..70_000,
    ) {
        let end = start.wrapping_add(len);
        let all: Vec<RequestItem> = RequestDecoder::new(&body, start, end).collect();
        let mut d = RequestDecoder::new(&body, start, end);
        let passed = d.skip_numbers(k);
        prop_assert_eq!(passed as usize, (k as usize).min(all.len()));
        let rest: Vec<RequestItem> = d.collect();
        prop_assert_eq!(&rest[..], &all[passed as usize..]);
    }

    #[test]
    fn data_round_trip(bs in any::<u32>(), num in any::<u32>(), id in 1u8..=255,
                       rest in proptest::collection::vec(any::<u8>(), 0..1372),
                       n in any::<[u8; 24]>()) {
        let mut data = vec![id];
        data.extend_from_slice(&rest);
        let mut out = [0u8; MAX_CRYPTO_PACKET_SIZE];
        let p = DataPlaintext { buffer_start: bs, packet_number: num, data: &data };
        let len = DataPacket::seal(&k(), &Nonce(n), &p, &mut out).unwrap();
        prop_assert!((MIN_DATA_PACKET_SIZE..=MAX_CRYPTO_PACKET_SIZE).contains(&len));
        let low = DataPacket::parse(&out[..len]).unwrap().nonce_low;
        prop_assert_eq!(low, Nonce(n).low16());
        let opened = DataPacket::open_in_place(&k(), &Nonce(n), &mut out[..len]).unwrap();
        prop_assert_eq!(opened, p);
    }

    #[test]
    fn handshake_family_round_trips(a in any::<[u8; 24]>(), b in any::<[u8; 32]>(),
                                    c in any::<[u8; 8]>(), ts in any::<u64>()) {
        let cr = CookieRequest::seal(PublicKey(b), &k(), Nonce(a),
            &CookieRequestPayload { sender_real_pk: PublicKey(b), echo_id: c });
        let parsed = CookieRequest::parse(&cr.to_bytes()).unwrap();
        prop_assert_eq!(parsed, cr);
        prop_assert_eq!(parsed.open(&k()).unwrap().echo_id, c);
        let cookie = Cookie::seal(&k(), Nonce(a), &CookiePayload { timestamp: ts, real_pk: PublicKey(b), dht_pk: PublicKey(b) });
        prop_assert_eq!(Cookie::from_bytes(&cookie.to_bytes()).open(&k()).unwrap().timestamp, ts);
    }

    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = CookieRequest::parse(&b);
        let _ = CookieResponse::parse(&b);
        let _ = Handshake::parse(&b);
        let _ = DataPacket::parse(&b);
        let _ = DataPlaintext::parse(&b);
        prop_assert!(RequestDecoder::new(&b, 0, 70000).count() <= 255 * b.len());
    }
}
