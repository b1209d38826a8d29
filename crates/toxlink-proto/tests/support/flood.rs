//! Shared by the handshake flood test and benchmark: nodes on numbered
//! addresses and a datagram exchange between them.
#![allow(dead_code)]

use std::time::Instant;
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::node::{Input, Node, NodeConfig};
use toxlink_proto::session::MAX_PACKET_SIZE;

pub const VICTIM: u32 = 1;
pub const FRIEND: u32 = 2;
pub const STRANGER: u32 = 3;

pub fn node(seed: u64, now: Instant) -> Node<u32> {
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let kp = KeyPair::generate(&mut rng);
    Node::new(now, &mut rng, kp, NodeConfig::default())
}

/// Moves datagrams between `nodes` (numbered by address) until quiet;
/// returns the handshakes (first byte 26) `from` sent.
pub fn exchange(nodes: &mut [(u32, &mut Node<u32>)], now: Instant, keep_from: u32) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; MAX_PACKET_SIZE];
    let mut kept = Vec::new();
    for _ in 0..20 {
        let mut moved = Vec::new();
        for (addr, n) in nodes.iter_mut() {
            while let Some((to, t)) = n.poll_transmit(now, &mut buf) {
                if *addr == keep_from && buf[0] == 26 {
                    kept.push(buf[..t.len].to_vec());
                }
                moved.push((*addr, to, buf[..t.len].to_vec()));
            }
        }
        if moved.is_empty() {
            break;
        }
        for (from, to, mut d) in moved {
            if let Some((_, n)) = nodes.iter_mut().find(|(a, _)| *a == to) {
                let _ = n.handle(now, Input::Datagram { from, data: &mut d });
            }
        }
    }
    kept
}

/// A victim node, a stranger's genuine handshake to it (a valid cookie for
/// a peer the victim does not allow), and the victim's start time.
pub fn stranger_handshake() -> (Node<u32>, Vec<u8>, Instant) {
    let now = Instant::now();
    let mut victim = node(1, now);
    let mut stranger = node(3, now);
    stranger.connect(now, victim.real_pk(), victim.dht_pk(), VICTIM);
    let hs = exchange(
        &mut [(VICTIM, &mut victim), (STRANGER, &mut stranger)],
        now,
        STRANGER,
    );
    let hs = hs.into_iter().next().unwrap_or_default();
    (victim, hs, now)
}
