//! Real sockets on loopback: two nodes connect and stream.

use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Two nodes bound on `addr`, keys from `seed`; neither allows the other.
async fn two_nodes(addr: &str, seed: u64) -> (Node, Node) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let addr = addr.parse().expect("addr");
    let mut bind = || Node::bind(addr, KeyPair::generate(&mut rng), NodeConfig::default());
    let a = bind().await.expect("bind a");
    let b = bind().await.expect("bind b");
    (a, b)
}

/// [`two_nodes`], b allowing a.
async fn pair(addr: &str, seed: u64) -> (Node, Node) {
    let (a, b) = two_nodes(addr, seed).await;
    b.allow(a.public_key());
    (a, b)
}

async fn connect(a: &Node, b: &Node) -> (Connection, Connection) {
    let (ca, cb) = tokio::join!(
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
        b.accept()
    );
    (ca.expect("connect"), cb.expect("accept"))
}

/// Deterministic content: chunk `k` of the stream (id 160 first).
fn chunk(k: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(160);
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < 1373 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(1373);
}

async fn stream(bytes: u64, a: &Connection, b: &Connection) -> (Vec<u8>, Vec<u8>, Duration) {
    let n = bytes.div_ceil(1372);
    let start = std::time::Instant::now();
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut h = Sha256::new();
            let mut buf = Vec::with_capacity(1373);
            for k in 0..n {
                chunk(k, &mut buf);
                h.update(&buf[1..]);
                a.send_lossless(&buf).await.expect("send");
            }
            h.finalize().to_vec()
        })
    };
    let mut h = Sha256::new();
    let mut got = 0u64;
    while got < n {
        match b.recv().await {
            Some(Received::Lossless(d)) => {
                assert_eq!(d[0], 160);
                h.update(&d[1..]);
                got += 1;
            }
            Some(Received::Lossy(_)) => {}
            None => panic!("closed after {got} packets"),
        }
    }
    let sent = sender.await.expect("sender");
    (sent, h.finalize().to_vec(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_over_ipv4_loopback_sha256_equal() {
    let (a, b) = pair("127.0.0.1:0", 1).await;
    let r = tokio::time::timeout(Duration::from_secs(240), async {
        let (ca, cb) = connect(&a, &b).await;
        stream(64 << 20, &ca, &cb).await
    })
    .await
    .expect("64 MiB within the time bound");
    assert_eq!(r.0, r.1, "SHA-256 of sent and received streams");
    eprintln!(
        "64 MiB over UDP loopback in {:?} ({:.1} MB/s)",
        r.2,
        (64u64 << 20) as f64 / r.2.as_secs_f64() / 1e6
    );
}

#[tokio::test]
async fn ipv6_loopback_lossless_lossy_and_close() {
    let (a, b) = pair("[::1]:0", 2).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let (ca, cb) = connect(&a, &b).await;
        let (sent, got, _) = stream(1 << 20, &ca, &cb).await;
        assert_eq!(sent, got);
        // Lossy both ways (loopback does not drop here).
        ca.send_lossy(&[200, 1, 2, 3]).expect("lossy");
        match cb.recv().await {
            Some(Received::Lossy(d)) => assert_eq!(d, [200, 1, 2, 3]),
            other => panic!("expected the lossy packet, got {other:?}"),
        }
        assert!(matches!(ca.send_lossy(&[100]), Err(Error::Send(_))));
        // Closing one side ends the other.
        ca.close();
        assert_eq!(cb.recv().await, None);
        assert!(matches!(cb.send_lossless(&[160]).await, Err(Error::Closed)));
    })
    .await
    .expect("within bound");
}

#[tokio::test]
async fn unknown_peer_is_not_accepted() {
    let (a, b) = two_nodes("127.0.0.1:0", 3).await;
    // b does not allow a.
    let r = tokio::time::timeout(
        Duration::from_millis(1500),
        a.connect(b.public_key(), b.dht_key(), b.local_addr()),
    )
    .await;
    assert!(r.is_err(), "must not connect");
}
