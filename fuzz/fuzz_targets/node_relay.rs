//! A node reached through a relay by a hostile peer. Node A (relay identity =
//! its long-term key) and a hostile relay client H meet on an in-memory
//! sans-IO relay server; A "connects" to H through the relay, so both route
//! to each other and H can send DATA as well as OOB. The input then drives
//! H: arbitrary DATA and OOB payloads to A, raw bytes on A's relay link
//! (which may kill it: it must reconnect), UDP datagrams, and time. A must
//! never panic, never deliver data (H cannot complete a handshake without
//! A's cookie key), and keep its queues bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, SecretKey};
use toxlink_proto::node::{Input, LinkOutput, Node, NodeConfig};
use toxlink_proto::relay_client::{Client, ClientConfig};
use toxlink_proto::relay_server::{ConnId, Server, ServerConfig};
use toxlink_proto::session::{Event, MAX_PACKET_SIZE};

struct World {
    now: Instant,
    server: Server<ChaCha20Rng>,
    a: Node<u8>,
    h: Client,
    /// A's relay link is open (server conn 1).
    a_open: bool,
    a_link: Option<toxlink_proto::node::LinkId>,
    conns: u64,
    a_conn: ConnId,
}

const H_CONN: ConnId = ConnId(1_000_000);
/// Both ends connect from loopback (two connections: well within the
/// per-address limits).
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

impl World {
    /// Moves bytes both ways until quiet (bounded).
    fn pump(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..32 {
            let mut moved = false;
            // Connections A asks for.
            while let Some(out) = self.a.poll_link() {
                match out {
                    LinkOutput::Open { link, .. } if link.probe => {
                        // Self-probe links: refuse (keeps the world small).
                        let _ = self.a.handle(self.now, Input::LinkFailed(link));
                    }
                    LinkOutput::Open { link, .. } => {
                        self.conns += 1;
                        self.a_conn = ConnId(self.conns);
                        self.server.handle_accept(self.now, self.a_conn, LOOPBACK);
                        let _ = self.a.handle(self.now, Input::LinkUp(link));
                        self.a_link = Some(link);
                        self.a_open = true;
                        moved = true;
                    }
                    LinkOutput::Close(link) => {
                        if Some(link) == self.a_link && self.a_open {
                            self.a_open = false;
                            self.server.handle_closed(self.now, self.a_conn);
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(link), true) = (self.a_link, self.a_open) {
                buf.clear();
                if self.a.drain_link(&link, &mut buf, 1 << 16) > 0 {
                    self.server.handle_bytes(self.now, self.a_conn, &mut buf);
                    moved = true;
                }
                buf.clear();
                if self.server.drain_into(self.a_conn, &mut buf, 1 << 16) > 0 {
                    let _ = self.a.handle(self.now, Input::LinkBytes(link, &mut buf));
                    moved = true;
                }
            }
            buf.clear();
            if self.h.drain_into(&mut buf, 1 << 16) > 0 {
                self.server.handle_bytes(self.now, H_CONN, &mut buf);
                moved = true;
            }
            buf.clear();
            if self.server.drain_into(H_CONN, &mut buf, 1 << 16) > 0 {
                self.h.handle_bytes(self.now, &mut buf);
                moved = true;
            }
            while self.h.poll_event().is_some() {}
            while let Some((c, _)) = self.server.poll_close() {
                if c == self.a_conn && self.a_open {
                    self.a_open = false;
                    if let Some(link) = self.a_link {
                        let _ = self.a.handle(self.now, Input::LinkClosed(link));
                    }
                }
            }
            let mut out = [0u8; MAX_PACKET_SIZE];
            while self.a.poll_transmit(self.now, &mut out).is_some() {}
            if !moved {
                break;
            }
        }
        while let Some(e) = self.a.poll_event(self.now) {
            assert!(
                !matches!(e.event, Event::Lossless(_) | Event::Lossy(_) | Event::Established),
                "a hostile peer without A's keys got data through: {e:?}"
            );
        }
        while self.a.poll_path_event().is_some() {}
        while self.a.poll_relay_event().is_some() {}
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        let _ = self.a.handle(self.now, Input::Timeout);
        self.server.handle_timeout(self.now);
        self.h.handle_timeout(self.now);
        self.pump();
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let relay_key = KeyPair::from_secret(SecretKey([9; 32]));
    let a_key = KeyPair::from_secret(SecretKey([10; 32]));
    let h_key = KeyPair::from_secret(SecretKey([11; 32]));
    let mut server = Server::new(
        relay_key.clone(),
        ChaCha20Rng::seed_from_u64(2),
        ServerConfig::default(),
    );
    server.handle_accept(now, H_CONN, LOOPBACK);
    let mut a = Node::new(
        now,
        &mut rng,
        a_key,
        NodeConfig {
            dht_is_real: true,
            ..NodeConfig::default()
        },
    );
    let relay_addr: SocketAddr = "10.0.0.1:33445".parse().expect("literal");
    a.add_relay(now, relay_key.public, relay_addr);
    let mut h = Client::new(now, h_key.clone(), relay_key.public, &mut rng, ClientConfig::default());
    let _ = h.route(a.dht_pk());
    let mut w = World {
        now,
        server,
        a,
        h,
        a_open: false,
        a_link: None,
        conns: 0,
        a_conn: ConnId(0),
    };
    w.pump();
    // A routes to H too, so H's DATA reaches A's node as a relay route.
    w.a.connect_via_relays(now, h_key.public, h_key.public);
    w.pump();
    // The set-up must have reached the interesting state: H is ONLINE for A
    // on the relay (DATA from H arrives as a relay route of A's session).
    assert_eq!(
        w.a.relay_set().peer_state(&h_key.public, &relay_key.public),
        Some(toxlink_proto::relay_client::PeerRelayState::Online)
    );
    let a_pk = w.a.dht_pk();
    let mut rest = data;
    let mut ops = 0;
    while rest.len() >= 2 && ops < 64 {
        ops += 1;
        let op = rest[0] % 5;
        let len = (rest[1] as usize).min(rest.len() - 2);
        let mut body = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        match op {
            0 if !body.is_empty() => {
                let _ = w.h.send_data(&a_pk, &body);
            }
            1 if !body.is_empty() => {
                let _ = w.h.send_oob(&a_pk, &body);
            }
            2 => w.tick(Duration::from_millis(u64::from(body.first().copied().unwrap_or(1)) * 20)),
            3 => {
                if let (Some(link), true) = (w.a_link, w.a_open) {
                    let _ = w.a.handle(w.now, Input::LinkBytes(link, &mut body));
                }
            }
            _ => {
                let _ = w.a.handle(w.now, Input::Datagram { from: body.first().copied().unwrap_or(0), data: &mut body });
            }
        }
        w.pump();
    }
    // Bounded: the core's own caps hold (no queue grows with the input).
    assert!(w.a.stats().relay_sent < 1_000_000);
});
