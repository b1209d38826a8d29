//! STUN against the relay's own server on loopback: a `StunClient` over a
//! real UDP socket learns its address (on loopback the reflexive address
//! is the socket's own), over IPv4 and IPv6; the client driven by hand
//! through the runtime contract (first `now`, timers, a re-check); and
//! hostile input (garbage, malformed STUN, oversized, responses, a flood
//! past the rate limit) dropped and counted while the relay keeps
//! answering.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use toxlink::relay::stun::{probe, PER_SOURCE_BURST};
use toxlink::relay::{RelayServer, RelayServerConfig, RelayServerHandle};
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::relay_server::ServerConfig;
use toxlink_proto::stun::{
    is_stun, StunClient, StunConfig, HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN,
};

async fn relay(stun: Vec<SocketAddr>) -> RelayServerHandle {
    RelayServer::bind(RelayServerConfig {
        keypair: KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1)),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        stun_listen: stun,
        server: ServerConfig::default(),
    })
    .await
    .unwrap()
}

/// Waits (bounded) until the relay's STUN request counter stops moving.
async fn settle(r: &RelayServerHandle) -> toxlink::relay::StunServerCounters {
    let mut last = r.stun_counters();
    let mut stable = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = r.stun_counters();
        if now == last {
            stable += 1;
            if stable >= 4 {
                break;
            }
        } else {
            stable = 0;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn client_learns_its_loopback_address_from_the_relay() {
    let r = relay(vec![
        "127.0.0.1:0".parse().unwrap(),
        "[::1]:0".parse().unwrap(),
    ])
    .await;
    assert_eq!(r.stun_addrs().len(), 2);
    assert!(r.stun_addrs().iter().all(|a| a.port() != 0));
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for (bind, server) in [
        ("127.0.0.1:0", r.stun_addrs()[0]),
        ("[::1]:0", r.stun_addrs()[1]),
    ] {
        let sock = UdpSocket::bind(bind).await.unwrap();
        let me = sock.local_addr().unwrap();
        let rep = probe(
            &sock,
            vec![server],
            StunConfig::default(),
            Duration::from_secs(10),
            &mut rng,
        )
        .await;
        assert_eq!(rep.reflexive, vec![me], "{rep:?}");
        assert_eq!(rep.mappings, vec![(server, Some(me))]);
        assert!(!rep.mapping_varies);
        assert_eq!(rep.counters.responses, 1);
    }
    let c = settle(&r).await;
    assert!(c.answered >= 2, "{c:?}");
    assert_eq!(c.requests, c.answered + c.dropped, "{c:?}");
    r.shutdown().await;
}

/// The runtime contract by hand: a new client, one socket shared with
/// other traffic, the first `now`, timers, a re-check on "path failure".
#[tokio::test]
async fn client_driven_like_the_node_runtime() {
    let r = relay(vec!["127.0.0.1:0".parse().unwrap()]).await;
    let server = r.stun_addrs()[0];
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    // Tox traffic on the same socket: a peer sending net_crypto-like
    // packets to us, which the demultiplexer must leave alone.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = StunConfig {
        recheck_interval: Duration::from_millis(300),
        ..StunConfig::default()
    };
    let mut c = StunClient::new(vec![server], cfg);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut out = [0u8; 64];
    let mut buf = [0u8; 2048];
    let mut changes = 0;
    let mut tox_seen = 0;
    let mut tox_sent = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rechecked = false;
    // Bounded by the deadline.
    while Instant::now() < deadline && c.counters().responses < 4 {
        let now = Instant::now();
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now, &mut rng);
        }
        while let Some((to, n)) = c.poll_transmit(now, &mut out) {
            sock.send_to(&out[..n], to).await.unwrap();
        }
        if tox_sent < 50 {
            peer.send_to(&[0x1b, 1, 2, 3, 4, 5, 6, 7], me)
                .await
                .unwrap();
            tox_sent += 1;
        }
        let wake = c.poll_timeout().unwrap_or(now + Duration::from_millis(50));
        tokio::select! {
            res = sock.recv_from(&mut buf) => {
                let (n, from) = res.unwrap();
                if is_stun(&buf[..n]) {
                    if c.handle_datagram(Instant::now(), from, &buf[..n]).unwrap() {
                        changes += 1;
                    }
                } else {
                    tox_seen += 1;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if c.counters().responses == 2 && !rechecked {
            rechecked = true;
            c.recheck(Instant::now());
            assert!(c.poll_timeout().is_some_and(|t| t <= Instant::now()));
        }
    }
    let k = c.counters();
    assert!(k.responses >= 4, "{k:?}");
    assert_eq!(c.reflexive(), vec![me]);
    assert_eq!(changes, 1, "one change: the first answer");
    assert!(tox_seen > 0);
    assert_eq!(k.malformed, 0, "{k:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn hostile_input_is_dropped_and_counted_and_the_relay_keeps_answering() {
    let r = relay(vec!["127.0.0.1:0".parse().unwrap()]).await;
    let server = r.stun_addrs()[0];
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let bad = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut sent = 0u64;
    let mut stun_looking = 0u64;
    for i in 0..600u32 {
        let mut p = vec![0u8; (rng.next_u32() % 1400) as usize + 1];
        rng.fill_bytes(&mut p);
        match i % 6 {
            // Tox-like packets and random bytes.
            0 | 1 => p[0] = 0x18 + (i % 4) as u8,
            2 => {}
            // A STUN header (Binding request) with random attributes.
            3 | 4 => {
                let len = (p.len().max(HEADER_LEN) - HEADER_LEN) & !3;
                p.resize(HEADER_LEN + len, 0);
                p[0..2].copy_from_slice(&[0x00, 0x01]);
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                p[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                assert!(is_stun(&p));
                stun_looking += 1;
            }
            // Oversized: a consistent header on more than MAX_MESSAGE_LEN.
            _ => {
                let len = (MAX_MESSAGE_LEN + 100) & !3;
                p.resize(HEADER_LEN + len, 0);
                p[0..2].copy_from_slice(&[0x00, 0x01]);
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                p[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                stun_looking += 1;
            }
        }
        bad.send_to(&p, server).await.unwrap();
        sent += 1;
        if i % 20 == 0 {
            // Paced, so the relay's socket buffer does not overflow.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // A success response sent to the server is not a request.
    let resp = [
        0x01, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    bad.send_to(&resp, server).await.unwrap();
    sent += 1;
    let c = settle(&r).await;
    assert_eq!(c.answered, 0, "{c:?}");
    assert_eq!(c.requests, c.dropped, "{c:?}");
    assert!(c.requests > sent * 9 / 10, "{c:?} of {sent}");
    assert!(
        c.rate_limited > 0 && c.rate_limited <= stun_looking,
        "{c:?}"
    );

    // A flood of valid requests from one source: the burst is answered,
    // the rest dropped as over the rate.
    let flood = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let mut req = [0u8; HEADER_LEN];
    req[0..2].copy_from_slice(&[0x00, 0x01]);
    req[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    for i in 0..200u32 {
        req[8..12].copy_from_slice(&i.to_be_bytes());
        flood.send_to(&req, server).await.unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let before = c;
    let c = settle(&r).await;
    let answered = c.answered - before.answered;
    assert!(
        answered >= PER_SOURCE_BURST as u64 && answered < 60,
        "{answered} answered: {c:?}"
    );
    assert!(c.rate_limited > before.rate_limited, "{c:?}");
    // Answers arrived, each a STUN message for one of our transactions.
    let mut buf = [0u8; 256];
    let got = flood.try_recv_from(&mut buf).unwrap();
    assert!(is_stun(&buf[..got.0]));
    assert_eq!(got.1, server);

    // Meanwhile another source is answered.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let rep = probe(
        &sock,
        vec![server],
        StunConfig::default(),
        Duration::from_secs(10),
        &mut rng,
    )
    .await;
    assert_eq!(rep.reflexive, vec![me], "{rep:?}");
    let c = settle(&r).await;
    assert_eq!(c.requests, c.answered + c.dropped, "{c:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn no_stun_addresses_means_no_stun() {
    let r = relay(Vec::new()).await;
    assert!(r.stun_addrs().is_empty());
    assert_eq!(r.stun_counters(), Default::default());
    r.shutdown().await;
}
