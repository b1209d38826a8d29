use super::*;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::time::{Duration, Instant};

/// RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY (0x0024, an
/// ICE attribute: comprehension-required, unknown to a plain STUN server),
/// ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: a success response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RFC5769_V4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3: a success response, XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const RFC5769_V6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

/// The transaction id of the RFC 5769 vectors.
const RFC5769_ID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// An RNG that hands out fixed bytes (cycled): to give a transaction the
/// RFC 5769 id.
struct FixedRng(Vec<u8>, usize);

impl rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.0[self.1 % self.0.len()];
            self.1 += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rand_core::CryptoRng for FixedRng {}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

/// Starts `c` at `now` and collects the requests it sends.
fn start(
    c: &mut StunClient,
    now: Instant,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Vec<(SocketAddr, Vec<u8>)> {
    c.handle_timeout(now, rng);
    drain(c, now)
}

fn drain(c: &mut StunClient, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while let Some((to, n)) = c.poll_transmit(now, &mut buf) {
        out.push((to, buf[..n].to_vec()));
    }
    out
}

/// The server's answer to `req` as if it came from `seen_as`.
fn respond(req: &[u8], seen_as: SocketAddr) -> Vec<u8> {
    let mut out = [0u8; MAX_RESPONSE_LEN];
    let n = answer(req, seen_as, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn is_stun_accepts_requests_and_refuses_tox_packets() {
    let mut c = StunClient::new(vec![addr("192.0.2.1:3478")], StunConfig::default());
    let reqs = start(&mut c, Instant::now(), &mut rng());
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0].1;
    assert_eq!(req.len(), REQUEST_LEN);
    assert!(is_stun(req));
    assert!(is_stun(&RFC5769_REQUEST));
    assert!(is_stun(&RFC5769_V4_RESPONSE));
    assert!(is_stun(&RFC5769_V6_RESPONSE));
    // Tox packets: net_crypto kinds and DHT pings with random bodies.
    let mut r = rng();
    for kind in [0x00u8, 0x01, 0x02, 0x04, 0x18, 0x19, 0x1a, 0x1b, 0x20, 0x21] {
        for len in [1usize, 20, 28, 75, 100, 1400] {
            let mut p = vec![0u8; len];
            rand_core::RngCore::fill_bytes(&mut r, &mut p);
            p[0] = kind;
            assert!(!is_stun(&p), "kind {kind:#x} len {len}");
        }
    }
    // Each header rule.
    let mut bad = req.clone();
    bad[0] |= 0x80;
    assert!(!is_stun(&bad), "top bits");
    let mut bad = req.clone();
    bad[5] ^= 1;
    assert!(!is_stun(&bad), "cookie");
    let mut bad = req.clone();
    bad.push(0);
    assert!(!is_stun(&bad), "length field vs datagram");
    let mut bad = req.clone();
    bad.truncate(HEADER_LEN + 2);
    bad[3] = 2;
    assert!(!is_stun(&bad), "length not a multiple of 4");
    assert!(!is_stun(&req[..HEADER_LEN - 1]), "short");
    assert!(!is_stun(&[]));
}

#[test]
fn request_and_answer_round_trip_through_the_codec() {
    let server = addr("192.0.2.1:3478");
    let me = addr("203.0.113.7:40000");
    let mut c = StunClient::new(vec![server], StunConfig::default());
    let now = Instant::now();
    let reqs = start(&mut c, now, &mut rng());
    assert_eq!(reqs[0].0, server);
    // The request decodes as a Binding request with our FINGERPRINT.
    let m = decode(&reqs[0].1).unwrap();
    assert_eq!(m.class(), stun_codec::MessageClass::Request);
    assert_eq!(m.method(), stun_codec::rfc5389::methods::BINDING);
    let resp = respond(&reqs[0].1, me);
    assert!(is_stun(&resp));
    assert_eq!(resp.len(), HEADER_LEN + 12 + 8);
    assert_eq!(c.handle_datagram(now, server, &resp), Ok(true));
    assert_eq!(c.reflexive(), vec![me]);
    assert!(!c.mapping_varies());
    // The same answer again is a late duplicate: refused, nothing changes.
    assert_eq!(
        c.handle_datagram(now, server, &resp),
        Err(StunError::UnknownTransaction)
    );
    let k = c.counters();
    assert_eq!((k.requests_sent, k.responses, k.rejected), (1, 1, 1));
    // Next check in 25 s.
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(25)));

    // IPv6, and an IPv4-mapped IPv6 source answered as the IPv4 address.
    let me6 = addr("[2001:db8::5]:41000");
    let r6 = respond(&reqs[0].1, me6);
    assert_eq!(r6.len(), MAX_RESPONSE_LEN);
    let m6 = decode(&r6).unwrap();
    let x = m6
        .get_attribute::<stun_codec::rfc5389::attributes::XorMappedAddress>()
        .unwrap();
    assert_eq!(x.address(), me6);
    let mapped = respond(&reqs[0].1, addr("[::ffff:203.0.113.7]:40000"));
    let x = decode(&mapped).unwrap();
    let x = x
        .get_attribute::<stun_codec::rfc5389::attributes::XorMappedAddress>()
        .unwrap();
    assert_eq!(x.address(), me);
}

#[test]
fn rfc5769_vectors() {
    // §2.2 and §2.3: the client reads the mapped addresses of the vectors
    // (their SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT pass through).
    for (vector, want) in [
        (&RFC5769_V4_RESPONSE[..], addr("192.0.2.1:32853")),
        (
            &RFC5769_V6_RESPONSE[..],
            addr("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
        ),
    ] {
        let server = addr("198.51.100.9:3478");
        let mut c = StunClient::new(vec![server], StunConfig::default());
        let now = Instant::now();
        let reqs = start(&mut c, now, &mut FixedRng(RFC5769_ID.to_vec(), 0));
        assert_eq!(&reqs[0].1[8..20], &RFC5769_ID);
        assert_eq!(c.handle_datagram(now, server, vector), Ok(true));
        assert_eq!(c.reflexive(), vec![want]);
        // A flipped byte breaks the FINGERPRINT (or the attribute): refused.
        let mut c = StunClient::new(vec![server], StunConfig::default());
        start(&mut c, now, &mut FixedRng(RFC5769_ID.to_vec(), 0));
        let mut bad = vector.to_vec();
        bad[30] ^= 0x40;
        assert_eq!(
            c.handle_datagram(now, server, &bad),
            Err(StunError::Malformed)
        );
        assert_eq!(c.counters().malformed, 1);
        assert!(c.reflexive().is_empty());
    }
    // §2.1: PRIORITY is an ICE attribute, comprehension-required and unknown
    // to a plain STUN server: refused (RFC 8489 would answer 420).
    let mut out = [0u8; MAX_RESPONSE_LEN];
    assert_eq!(
        answer(&RFC5769_REQUEST, addr("192.0.2.1:5"), &mut out),
        Err(StunError::UnknownAttribute(0x0024))
    );
    // A response is not a request.
    assert_eq!(
        answer(&RFC5769_V4_RESPONSE, addr("192.0.2.1:5"), &mut out),
        Err(StunError::NotBindingRequest)
    );
}

#[test]
fn answer_refuses_bad_input_and_small_buffers() {
    let mut c = StunClient::new(vec![addr("192.0.2.1:3478")], StunConfig::default());
    let reqs = start(&mut c, Instant::now(), &mut rng());
    let req = &reqs[0].1;
    let from = addr("203.0.113.7:40000");
    let mut out = [0u8; MAX_RESPONSE_LEN];
    assert!(answer(req, from, &mut out[..HEADER_LEN + 19]).is_err());
    assert_eq!(
        answer(req, from, &mut out[..10]),
        Err(StunError::BufferTooSmall { need: 40 })
    );
    assert_eq!(answer(&req[..19], from, &mut out), Err(StunError::NotStun));
    assert_eq!(
        answer(b"\x18hello", from, &mut out),
        Err(StunError::NotStun)
    );
    let long = {
        let mut v = req.clone();
        v.resize(MAX_MESSAGE_LEN + 4, 0);
        let len = (v.len() - HEADER_LEN) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    };
    assert_eq!(
        answer(&long, from, &mut out),
        Err(StunError::TooLong(MAX_MESSAGE_LEN + 4))
    );
    // A bad FINGERPRINT.
    let mut bad = req.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(answer(&bad, from, &mut out), Err(StunError::Malformed));
    // An indication of Binding (class bits 01) is not a request.
    let mut ind = req[..HEADER_LEN].to_vec();
    ind[1] = 0x11;
    ind[3] = 0;
    assert_eq!(
        answer(&ind, from, &mut out),
        Err(StunError::NotBindingRequest)
    );
    // A bare 20-byte Binding request (no attributes) is answered.
    let mut bare = req[..HEADER_LEN].to_vec();
    bare[3] = 0;
    assert_eq!(answer(&bare, from, &mut out), Ok(40));
    // Another method (Allocate, 0x003) is refused.
    let mut alloc = bare.clone();
    alloc[1] = 0x03;
    assert_eq!(
        answer(&alloc, from, &mut out),
        Err(StunError::NotBindingRequest)
    );
}

#[test]
fn retransmit_schedule_is_bounded_and_failures_expire_the_mapping() {
    let server = addr("192.0.2.1:3478");
    let me = addr("203.0.113.7:40000");
    let cfg = StunConfig::default();
    let mut c = StunClient::new(vec![server], cfg.clone());
    let mut r = rng();
    let t0 = Instant::now();
    // Nothing is scheduled before the client has seen a time.
    assert_eq!(c.poll_timeout(), None);
    assert!(drain(&mut c, t0).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0), "first check due at once");
    let reqs = start(&mut c, t0, &mut r);
    assert_eq!(
        c.handle_datagram(t0, server, &respond(&reqs[0].1, me)),
        Ok(true)
    );

    // Three transactions go unanswered: each sends 5 requests at 0, 250,
    // 750, 1750, 3750 ms and gives up at 6750 ms; the next starts 25 s
    // after the last one ended.
    let mut ended = t0;
    for round in 0..3 {
        let mut now = c.poll_timeout().unwrap();
        assert_eq!(now, ended + cfg.recheck_interval, "round {round}");
        let timeouts_before = c.counters().timeouts;
        let mut sends = Vec::new();
        let mut changed = false;
        // Bounded: one step per timer.
        for _ in 0..20 {
            changed |= c.handle_timeout(now, &mut r);
            for (to, req) in drain(&mut c, now) {
                assert_eq!(to, server);
                sends.push((now, req));
            }
            if c.counters().timeouts > timeouts_before {
                break;
            }
            now = c.poll_timeout().unwrap();
        }
        let first = sends[0].0;
        let offsets: Vec<u128> = sends
            .iter()
            .map(|(t, _)| (*t - first).as_millis())
            .collect();
        assert_eq!(offsets, vec![0, 250, 750, 1750, 3750], "round {round}");
        // One transaction id per transaction.
        assert!(sends.iter().all(|(_, q)| q[8..20] == sends[0].1[8..20]));
        assert_eq!(now - first, Duration::from_millis(6750));
        assert_eq!(changed, round == 2, "expired after the third failure");
        assert_eq!(c.reflexive().is_empty(), round == 2);
        ended = now;
    }
    let k = c.counters();
    assert_eq!(k.timeouts, 3);
    assert_eq!(k.requests_sent, 1 + 15);
    assert_eq!(k.retransmits, 12);
    assert_eq!(k.expired, 1);
}

#[test]
fn wrong_source_unknown_transaction_and_error_responses() {
    let s1 = addr("192.0.2.1:3478");
    let s2 = addr("192.0.2.2:3478");
    let me = addr("203.0.113.7:40000");
    let mut c = StunClient::new(vec![s1, s2], StunConfig::default());
    let now = Instant::now();
    let reqs = start(&mut c, now, &mut rng());
    assert_eq!(reqs.len(), 2);
    let (r1, r2) = (&reqs[0].1, &reqs[1].1);
    // s1's answer arriving from s2, or from s1's IP on another port.
    for from in [s2, addr("192.0.2.1:3479")] {
        assert_eq!(
            c.handle_datagram(now, from, &respond(r1, me)),
            Err(StunError::WrongSource { expected: s1, from })
        );
    }
    // An answer to a transaction never sent.
    let mut forged = respond(r1, me);
    forged[8] ^= 1;
    assert_eq!(
        c.handle_datagram(now, s1, &forged),
        Err(StunError::UnknownTransaction)
    );
    // A request (someone probing us) is not a response.
    assert_eq!(
        c.handle_datagram(now, s1, r1),
        Err(StunError::NotBindingResponse)
    );
    assert!(c.reflexive().is_empty());
    let k = c.counters();
    assert_eq!((k.rejected, k.malformed, k.responses), (3, 1, 0));
    // IPv4-mapped source of the right server is the right server.
    assert_eq!(
        c.handle_datagram(now, addr("[::ffff:192.0.2.1]:3478"), &respond(r1, me)),
        Ok(true)
    );
    // An error response (400) fails s2's transaction.
    let mut err = stun_codec::Message::<stun_codec::rfc5389::Attribute>::new(
        stun_codec::MessageClass::ErrorResponse,
        stun_codec::rfc5389::methods::BINDING,
        stun_codec::TransactionId::new(r2[8..20].try_into().unwrap()),
    );
    err.add_attribute(
        stun_codec::rfc5389::attributes::ErrorCode::new(400, "Bad Request".into()).unwrap(),
    );
    let mut buf = [0u8; 128];
    let n = encode(err, &mut buf).unwrap();
    assert_eq!(
        c.handle_datagram(now, s2, &buf[..n]),
        Err(StunError::ErrorResponse(400))
    );
    assert_eq!(c.counters().error_responses, 1);
    // A success without any mapped address fails too.
    let c2_reqs = {
        let mut c2 = StunClient::new(vec![s1], StunConfig::default());
        let q = start(&mut c2, now, &mut rng());
        let empty = stun_codec::Message::<stun_codec::rfc5389::Attribute>::new(
            stun_codec::MessageClass::SuccessResponse,
            stun_codec::rfc5389::methods::BINDING,
            stun_codec::TransactionId::new(q[0].1[8..20].try_into().unwrap()),
        );
        let n = encode(empty, &mut buf).unwrap();
        assert_eq!(
            c2.handle_datagram(now, s1, &buf[..n]),
            Err(StunError::NoMappedAddress)
        );
        assert_eq!(c2.counters().malformed, 1);
        q
    };
    assert_eq!(c2_reqs.len(), 1);
}

#[test]
fn an_error_response_that_expires_a_mapping_is_reported_by_handle_timeout() {
    let s = addr("192.0.2.1:3478");
    let me = addr("203.0.113.7:40000");
    let cfg = StunConfig {
        expire_after_failures: 1,
        ..StunConfig::default()
    };
    let mut c = StunClient::new(vec![s], cfg);
    let mut r = rng();
    let now = Instant::now();
    let q = start(&mut c, now, &mut r);
    assert_eq!(c.handle_datagram(now, s, &respond(&q[0].1, me)), Ok(true));
    c.recheck(now);
    let q = start(&mut c, now, &mut r);
    let err = stun_codec::Message::<stun_codec::rfc5389::Attribute>::new(
        stun_codec::MessageClass::ErrorResponse,
        stun_codec::rfc5389::methods::BINDING,
        stun_codec::TransactionId::new(q[0].1[8..20].try_into().unwrap()),
    );
    let mut buf = [0u8; 64];
    let n = encode(err, &mut buf).unwrap();
    assert_eq!(
        c.handle_datagram(now, s, &buf[..n]),
        Err(StunError::ErrorResponse(0))
    );
    assert_eq!(c.poll_timeout(), Some(now));
    assert!(c.handle_timeout(now, &mut r));
    assert!(c.reflexive().is_empty());
}

#[test]
fn mapping_varies_and_recheck() {
    let s1 = addr("192.0.2.1:3478");
    let s2 = addr("192.0.2.2:3478");
    let s6 = addr("[2001:db8::1]:3478");
    let mut c = StunClient::new(vec![s1, s2, s6], StunConfig::default());
    let mut r = rng();
    let now = Instant::now();
    let q = start(&mut c, now, &mut r);
    assert_eq!(q.len(), 3);
    let a = addr("203.0.113.7:40000");
    let b = addr("203.0.113.7:40001");
    assert_eq!(c.handle_datagram(now, s1, &respond(&q[0].1, a)), Ok(true));
    // IPv6 mapping: another family, no variance.
    assert_eq!(
        c.handle_datagram(now, s6, &respond(&q[2].1, addr("[2001:db8::7]:40000"))),
        Ok(true)
    );
    assert!(!c.mapping_varies());
    // Same mapping from s2: nothing changes, no variance.
    assert_eq!(c.handle_datagram(now, s2, &respond(&q[1].1, a)), Ok(false));
    assert!(!c.mapping_varies());
    assert_eq!(c.reflexive().len(), 2);
    // Recheck at once: all three ask again; s2 now sees another port.
    let later = now + Duration::from_secs(3);
    c.recheck(later);
    assert_eq!(c.poll_timeout(), Some(later));
    let q = start(&mut c, later, &mut r);
    assert_eq!(q.len(), 3);
    assert_eq!(c.handle_datagram(later, s2, &respond(&q[1].1, b)), Ok(true));
    assert!(c.mapping_varies());
    assert_eq!(c.reflexive(), vec![a, b, addr("[2001:db8::7]:40000")]);
    // The NAT rebinding seen by s1 too: no variance, one address left.
    assert_eq!(c.handle_datagram(later, s1, &respond(&q[0].1, b)), Ok(true));
    assert!(!c.mapping_varies());
    assert_eq!(c.reflexive(), vec![b, addr("[2001:db8::7]:40000")]);
    // A recheck while transactions are under way keeps them.
    c.recheck(later);
    assert!(drain(&mut c, later).is_empty());
}

#[test]
fn servers_are_bounded_and_deduplicated() {
    let many: Vec<SocketAddr> = (0..20)
        .map(|i| SocketAddr::from(([192, 0, 2, 1 + (i % 12) as u8], 3478)))
        .collect();
    let mut c = StunClient::new(many, StunConfig::default());
    assert_eq!(c.servers().len(), MAX_SERVERS);
    let now = Instant::now();
    let q = start(&mut c, now, &mut rng());
    assert_eq!(q.len(), MAX_SERVERS, "one transaction per server");
    // Nothing more until a timer.
    c.handle_timeout(now, &mut rng());
    assert!(drain(&mut c, now).is_empty());
    // A buffer too small for a request: nothing sent, nothing lost.
    let mut c = StunClient::new(vec![addr("192.0.2.1:1")], StunConfig::default());
    c.handle_timeout(now, &mut rng());
    assert_eq!(c.poll_transmit(now, &mut [0u8; 10]), None);
    assert!(c.poll_transmit(now, &mut [0u8; REQUEST_LEN]).is_some());
    // set_servers keeps state of servers kept.
    let s = addr("192.0.2.1:1");
    let mut c = StunClient::new(vec![s], StunConfig::default());
    let q = start(&mut c, now, &mut rng());
    let me = addr("203.0.113.7:4");
    assert_eq!(c.handle_datagram(now, s, &respond(&q[0].1, me)), Ok(true));
    assert!(!c.set_servers(now, vec![s, addr("192.0.2.2:1")]));
    assert_eq!(c.reflexive(), vec![me]);
    let q = start(&mut c, now, &mut rng());
    assert_eq!(q.len(), 1, "only the new server is asked");
    assert!(c.set_servers(now, vec![addr("192.0.2.2:1")]));
    assert!(c.reflexive().is_empty());
}

proptest! {
    /// No input panics the client (with a transaction outstanding, and the
    /// input given its transaction id so the response path is reached) or
    /// the server; whatever `answer` accepts passes `is_stun`.
    #[test]
    fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..200), patch in any::<bool>()) {
        let server = addr("192.0.2.1:3478");
        let mut c = StunClient::new(vec![server], StunConfig::default());
        let now = Instant::now();
        let q = start(&mut c, now, &mut rng());
        if patch && data.len() >= HEADER_LEN {
            data[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            data[8..20].copy_from_slice(&q[0].1[8..20]);
            let len = ((data.len() - HEADER_LEN) & !3) as u16;
            data.truncate(HEADER_LEN + len as usize);
            data[2..4].copy_from_slice(&len.to_be_bytes());
            data[0] &= 0x3f;
        }
        let _ = is_stun(&data);
        let _ = c.handle_datagram(now, server, &data);
        let mut out = [0u8; MAX_RESPONSE_LEN];
        if let Ok(n) = answer(&data, server, &mut out) {
            prop_assert!(is_stun(&data));
            prop_assert!(is_stun(&out[..n]));
        }
    }
}
