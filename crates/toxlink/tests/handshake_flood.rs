//! A stranger's handshake flood on real sockets: a genuine handshake (a
//! valid cookie from the victim) of a peer the victim does not allow,
//! replayed from 300 UDP sockets, is refused (counted, no public-key work,
//! no session) while a friend connects to the same node at once.

use rand_chacha::rand_core::SeedableRng;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use toxlink::toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink::toxlink_proto::node::{Input, Node as ProtoNode, NodeConfig};
use toxlink::toxlink_proto::session::MAX_PACKET_SIZE;
use toxlink::Node;

/// The stranger's handshake to the victim (real key, DHT key, address): a
/// sans-IO node on a real socket does the cookie exchange, the handshake it
/// then sends is kept.
fn stranger_handshake(victim: (PublicKey, PublicKey, SocketAddr)) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let kp = KeyPair::generate(&mut rng);
    let now = Instant::now();
    let mut s: ProtoNode<SocketAddr> = ProtoNode::new(now, &mut rng, kp, NodeConfig::default());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s.connect(now, victim.0, victim.1, victim.2);
    let mut buf = vec![0u8; MAX_PACKET_SIZE];
    for _ in 0..50 {
        while let Some((to, t)) = s.poll_transmit(Instant::now(), &mut buf) {
            if buf[0] == 26 {
                return buf[..t.len].to_vec();
            }
            sock.send_to(&buf[..t.len], to).expect("send");
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = s.handle(
                Instant::now(),
                Input::Datagram {
                    from,
                    data: &mut buf[..n],
                },
            );
        }
    }
    panic!("the stranger never got to send a handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_300_sockets_is_refused_while_a_friend_connects() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let cfg = NodeConfig::default();
    let victim = Node::bind(any, KeyPair::generate(&mut rng), cfg.clone())
        .await
        .expect("bind");
    let friend = Node::bind(any, KeyPair::generate(&mut rng), cfg)
        .await
        .expect("bind");
    victim.allow(friend.public_key());
    let v = (victim.public_key(), victim.dht_key(), victim.local_addr());
    let hs = tokio::task::spawn_blocking(move || stranger_handshake(v))
        .await
        .expect("stranger");
    let refused = victim.stats().handshakes_refused;
    // 300 sockets, 20 handshakes each, while the friend connects.
    let to = victim.local_addr();
    let flood = tokio::task::spawn_blocking(move || {
        let socks: Vec<UdpSocket> = (0..300)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for _ in 0..20 {
            for s in &socks {
                let _ = s.send_to(&hs, to);
            }
        }
    });
    let t = Instant::now();
    let (a, b) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(10),
            friend.connect(victim.public_key(), victim.dht_key(), victim.local_addr())
        ),
        tokio::time::timeout(Duration::from_secs(10), victim.accept()),
    );
    let took = t.elapsed();
    flood.await.expect("flood");
    let a = a.expect("friend connect in time").expect("friend connect");
    let b = b.expect("accept in time").expect("accepted");
    assert_eq!(a.peer(), victim.public_key());
    assert_eq!(b.peer(), friend.public_key());
    // Some of the flood may still be in the socket buffer: wait (bounded)
    // until it has been handled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while victim.stats().handshakes_refused < refused + 1_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = victim.stats();
    assert!(
        st.handshakes_refused >= refused + 1_000,
        "refused {} of 6,000",
        st.handshakes_refused - refused
    );
    assert_eq!(st.handshake_key_ops, 0);
    let sessions = victim.inspect(|n| n.session(&friend.public_key()).is_some());
    assert!(sessions);
    println!(
        "friend connected in {took:?} during the flood; {} stranger handshakes refused",
        st.handshakes_refused - refused
    );
}
