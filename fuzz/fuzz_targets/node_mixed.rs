//! Hostile input mixed with a genuine connection. Nodes A and B are
//! established over UDP (addresses 1 and 2) and B streams numbered lossless
//! packets to A; A also holds a relay link whose far end is the fuzzer. The
//! input interleaves: delivering B's genuine datagrams to A (in order, late,
//! twice, from another address), dropping them, flipping bytes in them,
//! arbitrary datagrams from arbitrary addresses, arbitrary bytes on A's
//! relay link, and time. A must never panic, and what A delivers must be
//! exactly a prefix of what B sent: in order, intact, never twice.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, SecretKey};
use toxlink_proto::node::{Input, LinkId, LinkOutput, Node, NodeConfig};
use toxlink_proto::session::{Event, MAX_PACKET_SIZE};

fn payload(k: u32) -> Vec<u8> {
    let mut v = vec![170u8];
    v.extend_from_slice(&k.to_be_bytes());
    v.extend(std::iter::repeat((k % 251) as u8).take((k % 97) as usize));
    v
}

struct World {
    now: Instant,
    a: Node<u8>,
    b: Node<u8>,
    /// B's datagrams to A not yet handled, oldest first.
    to_a: Vec<Vec<u8>>,
    /// Every datagram B sent to A (for replays and mutations), bounded.
    seen: Vec<Vec<u8>>,
    sent: u32,
    delivered: u32,
    link: Option<LinkId>,
}

impl World {
    fn collect(&mut self) {
        let mut buf = [0u8; MAX_PACKET_SIZE];
        while let Some((to, t)) = self.b.poll_transmit(self.now, &mut buf) {
            if to == 1 && self.to_a.len() < 4096 {
                let d = buf[..t.len].to_vec();
                if self.seen.len() < 256 {
                    self.seen.push(d.clone());
                }
                self.to_a.push(d);
            }
        }
        while let Some((to, t)) = self.a.poll_transmit(self.now, &mut buf) {
            if to == 2 {
                let _ = self.b.handle(self.now, Input::Datagram { from: 1, data: &mut buf[..t.len] });
            }
        }
        while let Some(out) = self.a.poll_link() {
            match out {
                LinkOutput::Open { link, .. } if link.probe => {
                    let _ = self.a.handle(self.now, Input::LinkFailed(link));
                }
                LinkOutput::Open { link, .. } => {
                    let _ = self.a.handle(self.now, Input::LinkUp(link));
                    self.link = Some(link);
                }
                LinkOutput::Close(link) => {
                    if Some(link) == self.link {
                        self.link = None;
                    }
                }
                _ => {}
            }
        }
        if let Some(link) = self.link {
            let mut out = Vec::new();
            let _ = self.a.drain_link(&link, &mut out, 1 << 16);
        }
        self.check();
    }

    fn check(&mut self) {
        while let Some(e) = self.a.poll_event(self.now) {
            if let Event::Lossless(d) = e.event {
                assert_eq!(d, payload(self.delivered), "delivery {}", self.delivered);
                self.delivered += 1;
                assert!(self.delivered <= self.sent);
            }
        }
        while self.b.poll_event(self.now).is_some() {}
        while self.a.poll_path_event().is_some() {}
        while self.a.poll_relay_event().is_some() {}
    }

    fn deliver(&mut self, from: u8, mut d: Vec<u8>) {
        let _ = self.a.handle(self.now, Input::Datagram { from, data: &mut d });
        self.collect();
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a_key = KeyPair::from_secret(SecretKey([10; 32]));
    let b_key = KeyPair::from_secret(SecretKey([11; 32]));
    let relay_key = KeyPair::from_secret(SecretKey([9; 32]));
    let mut a = Node::new(now, &mut rng, a_key, NodeConfig::default());
    let mut b = Node::new(now, &mut rng, b_key, NodeConfig::default());
    a.allow(b.real_pk());
    let relay_addr: SocketAddr = "192.0.2.1:33445".parse().expect("literal");
    a.add_relay(now, relay_key.public, relay_addr);
    b.connect(now, a.real_pk(), a.dht_pk(), 1);
    let mut w = World {
        now,
        a,
        b,
        to_a: Vec::new(),
        seen: Vec::new(),
        sent: 0,
        delivered: 0,
        link: None,
    };
    // Handshake: everything delivered, in order.
    for _ in 0..8 {
        w.collect();
        for d in std::mem::take(&mut w.to_a) {
            w.deliver(2, d);
        }
    }
    let bk = w.b.real_pk();
    assert!(w.a.session(&bk).is_some_and(|s| s.is_established()));
    w.seen.clear();
    let mut rest = data;
    let mut ops = 0;
    while rest.len() >= 2 && ops < 128 {
        ops += 1;
        let (op, arg) = (rest[0] % 9, rest[1]);
        rest = &rest[2..];
        match op {
            // B sends a few more packets.
            0 => {
                for _ in 0..=(arg % 8) {
                    if w.b.send_lossless(w.now, &w.a.real_pk(), &payload(w.sent)).is_ok() {
                        w.sent += 1;
                    }
                }
                w.collect();
            }
            // Deliver the oldest pending genuine datagrams.
            1 => {
                let n = (usize::from(arg % 16) + 1).min(w.to_a.len());
                for d in w.to_a.drain(..n).collect::<Vec<_>>() {
                    w.deliver(2, d);
                }
            }
            // Drop one.
            2 => {
                if !w.to_a.is_empty() {
                    w.to_a.remove(usize::from(arg) % w.to_a.len());
                }
            }
            // Deliver one out of order.
            3 => {
                if !w.to_a.is_empty() {
                    let d = w.to_a.remove(usize::from(arg) % w.to_a.len());
                    w.deliver(2, d);
                }
            }
            // Replay an old genuine datagram, from B's address or another.
            4 => {
                if !w.seen.is_empty() {
                    let d = w.seen[usize::from(arg) % w.seen.len()].clone();
                    w.deliver(if arg & 1 == 0 { 2 } else { arg }, d);
                }
            }
            // Flip a byte of a pending genuine datagram and deliver it.
            5 => {
                if !w.to_a.is_empty() {
                    let i = usize::from(arg) % w.to_a.len();
                    let mut d = w.to_a[i].clone();
                    if rest.len() >= 2 {
                        let at = usize::from(rest[0]) % d.len();
                        d[at] ^= rest[1] | 1;
                        rest = &rest[2..];
                    }
                    w.deliver(2, d);
                }
            }
            // Arbitrary bytes as a datagram.
            6 => {
                let len = usize::from(arg).min(rest.len());
                let d = rest[..len].to_vec();
                rest = &rest[len..];
                w.deliver(arg.rotate_left(3), d);
            }
            // Arbitrary bytes on A's relay link.
            7 => {
                let len = usize::from(arg).min(rest.len());
                let mut d = rest[..len].to_vec();
                rest = &rest[len..];
                if let Some(link) = w.link {
                    let _ = w.a.handle(w.now, Input::LinkBytes(link, &mut d));
                }
                w.collect();
            }
            // Time.
            _ => {
                w.now += Duration::from_millis(u64::from(arg) * 4);
                let _ = w.a.handle(w.now, Input::Timeout);
                let _ = w.b.handle(w.now, Input::Timeout);
                w.collect();
            }
        }
    }
    // Everything B sent arrives once the rest is delivered in order (lost
    // packets are resent; after a long silence that takes a few seconds).
    let mut waited = 0;
    for _ in 0..400 {
        if w.delivered == w.sent {
            break;
        }
        w.now += Duration::from_millis(50);
        waited += 50;
        let _ = w.a.handle(w.now, Input::Timeout);
        let _ = w.b.handle(w.now, Input::Timeout);
        w.collect();
        for d in std::mem::take(&mut w.to_a) {
            w.deliver(2, d);
        }
    }
    let st = w.a.session(&bk).map(|s| format!("{:?}", s.state()));
    assert_eq!(w.delivered, w.sent, "A got everything B sent within {waited} ms; pending {}, A session {st:?}, b stats {:?}", w.to_a.len(), w.b.stats());

});
