//! The client against the sans-IO server (in memory), and against a scripted
//! fake server for the §2.6 rules the real server never breaks.

use super::*;
use crate::relay_server::{test_ip, ConnId, Server, ServerConfig};
use crate::wire::relay::{split_frame, HandshakeResponse};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Net {
    server: Server<ChaCha20Rng>,
    now: Instant,
    rng: ChaCha20Rng,
}

impl Net {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let kp = KeyPair::generate(&mut rng);
        Net {
            server: Server::new(kp, ChaCha20Rng::seed_from_u64(2), ServerConfig::default()),
            now: Instant::now(),
            rng,
        }
    }

    fn client(&mut self, conn: u64) -> (Client, ConnId) {
        let kp = KeyPair::generate(&mut self.rng);
        let pk = *self.server.public_key();
        let c = Client::new(self.now, kp, pk, &mut self.rng, ClientConfig::default());
        self.server
            .handle_accept(self.now, ConnId(conn), test_ip(ConnId(conn)));
        (c, ConnId(conn))
    }

    /// Moves bytes both ways until nothing moves.
    fn pump(&mut self, clients: &mut [(&mut Client, ConnId)]) {
        for _ in 0..100 {
            let mut moved = false;
            for (c, id) in clients.iter_mut() {
                let mut buf = Vec::new();
                c.drain_into(&mut buf, usize::MAX);
                if !buf.is_empty() {
                    moved = true;
                    self.server.handle_bytes(self.now, *id, &mut buf);
                }
            }
            while self.server.poll_wake().is_some() {}
            for (c, id) in clients.iter_mut() {
                let mut buf = Vec::new();
                self.server.drain_into(*id, &mut buf, usize::MAX);
                if !buf.is_empty() {
                    moved = true;
                    c.handle_bytes(self.now, &mut buf);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn two_clients_route_exchange_data_and_oob_and_measure_rtt() {
    let mut net = Net::new();
    let (mut a, ia) = net.client(1);
    let (mut b, ib) = net.client(2);
    let (pa, pb) = (a.keypair.public, b.keypair.public);
    // Routes requested before the handshake are sent once connected.
    a.route(pb).unwrap();
    assert_eq!(a.send_data(&pb, b"x"), Err(LinkSendError::NotConnected));
    net.pump(&mut [(&mut a, ia), (&mut b, ib)]);
    assert_eq!(a.state(), LinkState::Connected);
    let ev = events(&mut a);
    assert_eq!(ev[0], ClientEvent::Connected);
    assert!(ev.contains(&ClientEvent::RouteResponse { peer: pb, slot: 16 }));
    assert!(ev.iter().any(|e| matches!(e, ClientEvent::Rtt { .. })));
    assert!(a.rtt().is_some());
    assert_eq!(a.send_data(&pb, b"x"), Err(LinkSendError::NotOnline));
    b.route(pa).unwrap();
    net.pump(&mut [(&mut a, ia), (&mut b, ib)]);
    assert!(events(&mut a).contains(&ClientEvent::PeerOnline { peer: pb }));
    assert!(events(&mut b).contains(&ClientEvent::PeerOnline { peer: pa }));
    for i in 0..100u32 {
        a.send_data(&pb, &i.to_be_bytes()).unwrap();
        b.send_data(&pa, &(i + 1000).to_be_bytes()).unwrap();
    }
    a.send_oob(&pb, b"oob!").unwrap();
    net.pump(&mut [(&mut a, ia), (&mut b, ib)]);
    let got_b: Vec<_> = events(&mut b);
    let data_b: Vec<_> = got_b
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Data { peer, data } if *peer == pa => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(data_b.len(), 100);
    for (i, d) in data_b.iter().enumerate() {
        assert_eq!(d[..], (i as u32).to_be_bytes());
    }
    assert!(got_b.contains(&ClientEvent::Oob {
        from: pa,
        data: b"oob!".to_vec()
    }));
    let data_a = events(&mut a)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Data { .. }))
        .count();
    assert_eq!(data_a, 100);
    // b unroutes: a sees the peer go offline, b's slot is free.
    b.unroute(&pa);
    net.pump(&mut [(&mut a, ia), (&mut b, ib)]);
    assert!(events(&mut a).contains(&ClientEvent::PeerOffline { peer: pb }));
    assert_eq!(
        a.route_state(&pb),
        Some(RouteState::Registered { slot: 16 })
    );
    assert_eq!(b.route_state(&pa), None);
}

#[test]
fn pings_every_interval_and_dies_after_silence() {
    let mut net = Net::new();
    let (mut a, ia) = net.client(1);
    net.pump(&mut [(&mut a, ia)]);
    events(&mut a);
    for _ in 0..5 {
        net.now += Duration::from_secs(1);
        a.handle_timeout(net.now);
        net.pump(&mut [(&mut a, ia)]);
        assert!(events(&mut a)
            .iter()
            .any(|e| matches!(e, ClientEvent::Rtt { .. })));
    }
    assert_eq!(a.counters().pongs, 6);
    // Silence (relay black-holed): dead within dead_after.
    let t = a.poll_timeout().unwrap();
    assert!(t <= net.now + Duration::from_secs(3));
    for _ in 0..4 {
        net.now += Duration::from_secs(1);
        a.handle_timeout(net.now);
        let mut sink = Vec::new();
        a.drain_into(&mut sink, usize::MAX);
    }
    assert_eq!(a.state(), LinkState::Disconnected(LinkDownReason::Timeout));
}

#[test]
fn send_queue_is_bounded() {
    let mut net = Net::new();
    let (mut a, ia) = net.client(1);
    let (mut b, ib) = net.client(2);
    let (pa, pb) = (a.keypair.public, b.keypair.public);
    a.route(pb).unwrap();
    b.route(pa).unwrap();
    net.pump(&mut [(&mut a, ia), (&mut b, ib)]);
    let chunk = vec![0u8; 1400];
    let mut sent = 0;
    while a.send_data(&pb, &chunk).is_ok() {
        sent += 1;
        assert!(sent < 10_000);
    }
    assert_eq!(a.send_data(&pb, &chunk), Err(LinkSendError::QueueFull));
    assert!(a.queued_bytes() <= ClientConfig::default().queue_bytes);
    assert_eq!(a.send_data(&pb, &[]), Err(LinkSendError::BadSize(0)));
    assert_eq!(
        a.send_data(&pb, &vec![0; MAX_DATA + 1]),
        Err(LinkSendError::BadSize(MAX_DATA + 1))
    );
}

#[test]
fn handshake_failure_and_timeout() {
    let mut net = Net::new();
    let kp = KeyPair::generate(&mut net.rng);
    // Wrong relay key: the server closes without a reply, the client times out.
    let mut c = Client::new(
        net.now,
        kp,
        PublicKey([9; 32]),
        &mut net.rng,
        ClientConfig::default(),
    );
    net.server
        .handle_accept(net.now, ConnId(5), test_ip(ConnId(5)));
    net.pump(&mut [(&mut c, ConnId(5))]);
    assert!(net.server.poll_close().is_some());
    assert_eq!(c.state(), LinkState::Handshaking);
    net.now += Duration::from_secs(6);
    c.handle_timeout(net.now);
    assert_eq!(
        c.state(),
        LinkState::Disconnected(LinkDownReason::HandshakeTimeout)
    );
    // A garbage reply fails the handshake.
    let kp = KeyPair::generate(&mut net.rng);
    let mut c = Client::new(
        net.now,
        kp,
        PublicKey([9; 32]),
        &mut net.rng,
        ClientConfig::default(),
    );
    c.handle_bytes(net.now, &mut [7u8; 96]);
    assert_eq!(
        c.state(),
        LinkState::Disconnected(LinkDownReason::HandshakeFailed)
    );
}

#[test]
fn a_relay_reply_with_a_low_order_temporary_key_fails_the_handshake() {
    for p in crate::crypto::tests::low_order_points() {
        let (mut rng, server, now, mut c) = client_of_fake(7, ClientConfig::default());
        let mut hello = Vec::new();
        c.drain_into(&mut hello, usize::MAX);
        let req = HandshakeRequest::parse(&hello).unwrap();
        let key = server.precompute(&req.client_pk);
        let ours = HandshakePayload {
            temp_pk: PublicKey(p),
            base_nonce: Nonce::random(&mut rng),
        };
        let mut reply = HandshakeResponse::seal(&key, Nonce::random(&mut rng), &ours)
            .to_bytes()
            .to_vec();
        c.handle_bytes(now, &mut reply);
        assert_eq!(
            c.state(),
            LinkState::Disconnected(LinkDownReason::HandshakeFailed)
        );
    }
}

/// A scripted server: completes the handshake, then sends chosen plaintexts.
struct Fake {
    chan: SecureChannel,
    /// Opens what the client sends.
    rx: SecureChannel,
}

impl Fake {
    fn accept(client: &mut Client, server: &KeyPair, rng: &mut ChaCha20Rng, now: Instant) -> Self {
        let mut hello = Vec::new();
        client.drain_into(&mut hello, usize::MAX);
        let req = HandshakeRequest::parse(&hello).unwrap();
        let key = server.precompute(&req.client_pk);
        let theirs = req.open(&key).unwrap();
        let temp = KeyPair::generate(rng);
        let ours = HandshakePayload {
            temp_pk: temp.public,
            base_nonce: Nonce::random(rng),
        };
        let mut reply = HandshakeResponse::seal(&key, Nonce::random(rng), &ours)
            .to_bytes()
            .to_vec();
        client.handle_bytes(now, &mut reply);
        let key = temp.precompute(&theirs.temp_pk);
        Fake {
            chan: SecureChannel::new(key.clone(), ours.base_nonce, theirs.base_nonce),
            rx: SecureChannel::new(key, ours.base_nonce, theirs.base_nonce),
        }
    }

    fn send(&mut self, client: &mut Client, now: Instant, plain: &[u8]) {
        let mut f = vec![0u8; 18];
        f.extend_from_slice(plain);
        self.chan.seal_in_place(&mut f).unwrap();
        client.handle_bytes(now, &mut f);
    }
}

/// A client (config `cfg`) of a relay we play ourselves (see [`Fake`]),
/// both keys from an RNG seeded with `seed`: that RNG, the relay's keys, the
/// time and the client.
fn client_of_fake(seed: u64, cfg: ClientConfig) -> (ChaCha20Rng, KeyPair, Instant, Client) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let server = KeyPair::generate(&mut rng);
    let now = Instant::now();
    let kp = KeyPair::generate(&mut rng);
    let c = Client::new(now, kp, server.public, &mut rng, cfg);
    (rng, server, now, c)
}

#[test]
fn client_closes_on_frames_a_server_may_not_send() {
    let cases: Vec<Vec<u8>> = vec![
        [&[0u8][..], &[1; 32]].concat(), // routing request
        [&[6u8][..], &[1; 33]].concat(), // OOB send
        vec![8, 1, 2, 3],                // onion request
        vec![12, 0],                     // reserved
        vec![5, 0, 0, 0, 0, 0, 0, 0, 0], // pong 0
        vec![2, 15],                     // connect notification slot < 16
        vec![3, 3],                      // disconnect notification slot < 16
        vec![20],                        // 1-byte plaintext
        [&[7u8][..], &[1; 32]].concat(), // OOB recv without data
    ];
    for plain in cases {
        let (mut rng, server, now, mut c) = client_of_fake(3, ClientConfig::default());
        let mut fake = Fake::accept(&mut c, &server, &mut rng, now);
        assert_eq!(c.state(), LinkState::Connected);
        fake.send(&mut c, now, &plain);
        assert!(
            matches!(c.state(), LinkState::Disconnected(_)),
            "{plain:?} must close"
        );
    }
}

#[test]
fn client_answers_server_pings_ignores_refused_and_unknown_slots() {
    let (mut rng, server, now, mut c) = client_of_fake(4, ClientConfig::default());
    let mut fake = Fake::accept(&mut c, &server, &mut rng, now);
    let peer = PublicKey([4; 32]);
    c.route(peer).unwrap();
    fake.send(&mut c, now, &[4, 9, 9, 9, 9, 9, 9, 9, 9]);
    fake.send(&mut c, now, &[&[1u8, 0][..], &peer.0].concat());
    fake.send(&mut c, now, &[40, 1, 2, 3]); // DATA on an unknown slot
    fake.send(&mut c, now, &[2, 17]); // connect on an unknown slot
    assert_eq!(c.state(), LinkState::Connected);
    let ev = events(&mut c);
    assert!(ev.contains(&ClientEvent::RouteRefused { peer }));
    assert_eq!(c.counters().ignored, 1);
    // Our output: ping (at connect), routing request, then the pong.
    let mut out = Vec::new();
    c.drain_into(&mut out, usize::MAX);
    let rx = &mut fake.rx;
    let mut plains = Vec::new();
    let mut buf = &mut out[..];
    while let Ok(crate::wire::relay::FrameSplit::Frame { box_len }) = split_frame(buf) {
        let (f, rest) = buf.split_at_mut(2 + box_len);
        plains.push(rx.open_in_place(&mut f[2..]).unwrap().to_vec());
        buf = rest;
    }
    assert_eq!(plains.len(), 3);
    assert_eq!(plains[0][0], 4);
    assert_eq!(plains[1][0], 0);
    assert_eq!(plains[2], vec![5, 9, 9, 9, 9, 9, 9, 9, 9]);
}

mod set_tests {
    use super::*;

    /// Connects whatever the set asks for, then moves bytes to quiescence;
    /// returns the socket in use.
    fn drive(
        net: &mut Net,
        set: &mut RelaySet,
        relay: PublicKey,
        conn: &mut u64,
        socket: &mut Option<SocketId>,
    ) {
        while set.poll_close().is_some() {}
        while let Some((k, _)) = set.poll_connect() {
            assert_eq!(k.relay, relay);
            *conn += 1;
            net.server
                .handle_accept(net.now, ConnId(*conn), test_ip(ConnId(*conn)));
            set.handle_connected(net.now, &k, &mut net.rng);
            *socket = Some(k);
        }
        let Some(sock) = *socket else {
            return;
        };
        for _ in 0..50 {
            let mut buf = Vec::new();
            set.drain_into(&sock, &mut buf, usize::MAX);
            let moved_up = !buf.is_empty();
            if moved_up {
                net.server.handle_bytes(net.now, ConnId(*conn), &mut buf);
            }
            while net.server.poll_wake().is_some() {}
            let mut down = Vec::new();
            net.server.drain_into(ConnId(*conn), &mut down, usize::MAX);
            let moved_down = !down.is_empty();
            if moved_down {
                set.handle_bytes(net.now, &sock, &mut down);
            }
            if !moved_up && !moved_down {
                return;
            }
        }
    }

    #[test]
    fn per_peer_states_reconnect_at_once_then_back_off() {
        let mut net = Net::new();
        let relay = *net.server.public_key();
        let kp = KeyPair::generate(&mut net.rng);
        let mut set = RelaySet::new(kp, RelaySetConfig::default());
        let addr = "127.0.0.1:1".parse().unwrap();
        set.add_relay(net.now, relay, addr);
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connecting));
        // A second node on the same relay that routes to us.
        let (mut other, io) = net.client(1000);
        other.route(set.public_key().to_owned()).unwrap();
        net.pump(&mut [(&mut other, io)]);
        let peer = other.keypair.public;
        set.tie(peer, &relay).unwrap();
        assert_eq!(set.peer_state(&peer, &relay), Some(PeerRelayState::None));
        let mut conn = 0;
        let mut sock = None;
        drive(&mut net, &mut set, relay, &mut conn, &mut sock);
        net.pump(&mut [(&mut other, io)]);
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connected));
        assert_eq!(set.peer_state(&peer, &relay), Some(PeerRelayState::Online));
        assert!(set.relay_rtt(&relay).is_some());
        let evs: Vec<_> = std::iter::from_fn(|| set.poll_event()).collect();
        assert!(evs.contains(&RelaySetEvent::RelayUp { relay }));
        assert!(evs.contains(&RelaySetEvent::PeerState {
            peer,
            relay,
            state: PeerRelayState::Online
        }));
        set.send_data(&relay, &peer, b"to other").unwrap();
        drive(&mut net, &mut set, relay, &mut conn, &mut sock);
        net.pump(&mut [(&mut other, io)]);
        assert!(events(&mut other).contains(&ClientEvent::Data {
            peer: *set.public_key(),
            data: b"to other".to_vec()
        }));
        // The relay resets the link: NONE, closed, reconnect asked at once.
        net.server.handle_closed(net.now, ConnId(conn));
        let first = sock.expect("connected");
        set.handle_closed(net.now, &first);
        assert_eq!(set.peer_state(&peer, &relay), Some(PeerRelayState::None));
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connecting));
        assert!(set.poll_close().is_none(), "runtime already saw the close");
        // Reconnect succeeds, routes come back without any call from us.
        drive(&mut net, &mut set, relay, &mut conn, &mut sock);
        net.pump(&mut [(&mut other, io)]);
        assert_eq!(set.peer_state(&peer, &relay), Some(PeerRelayState::Online));
        assert_eq!(set.relay_counters(&relay).unwrap().1, 2);
        let second = sock.expect("reconnected");
        assert_ne!(second, first, "a reconnect is a new socket");
        // Now connection attempts fail: exponential backoff. The link dies
        // (reconnected at once), the new socket closes during the handshake.
        set.handle_closed(net.now, &second);
        let (third, _) = set.poll_connect().expect("reconnect at once");
        set.handle_connected(net.now, &third, &mut net.rng);
        set.handle_closed(net.now, &third); // closed during the handshake
        let Some(RelayLinkState::Backoff { until: u1 }) = set.relay_state(&relay) else {
            panic!("expected backoff");
        };
        assert_eq!(u1 - net.now, Duration::from_millis(250));
        net.now = u1;
        set.handle_timeout(net.now);
        let (fourth, _) = set.poll_connect().expect("retry after the backoff");
        set.handle_connect_failed(net.now, &fourth);
        let Some(RelayLinkState::Backoff { until: u2 }) = set.relay_state(&relay) else {
            panic!("expected backoff");
        };
        assert_eq!(u2 - net.now, Duration::from_millis(500));
        assert_eq!(set.poll_timeout(), Some(u2));
    }

    /// A link that dies of a timeout asks for its socket to be closed and a
    /// new one opened in the same breath. Whatever order the runtime does
    /// that in, and whatever it reports late about the old socket, the new
    /// one is never closed by mistake and the link comes back.
    #[test]
    fn a_close_for_the_old_socket_never_closes_its_replacement() {
        let mut net = Net::new();
        let relay = *net.server.public_key();
        let kp = KeyPair::generate(&mut net.rng);
        let mut set = RelaySet::new(kp, RelaySetConfig::default());
        set.add_relay(net.now, relay, "127.0.0.1:1".parse().unwrap());
        let mut conn = 0;
        let mut sock = None;
        drive(&mut net, &mut set, relay, &mut conn, &mut sock);
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connected));
        let old = sock.expect("connected");
        // Silence: the link times out.
        net.now += Duration::from_secs(10);
        set.handle_timeout(net.now);
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connecting));
        // The runtime opens the new socket first, then closes the old one.
        let (new, _) = set.poll_connect().expect("reconnect at once");
        assert_ne!(new, old);
        assert_eq!(set.poll_close(), Some(old), "only the old socket is closed");
        assert_eq!(set.poll_close(), None);
        conn += 1;
        net.server
            .handle_accept(net.now, ConnId(conn), test_ip(ConnId(conn)));
        set.handle_connected(net.now, &new, &mut net.rng);
        // Late reports about the old socket change nothing.
        set.handle_closed(net.now, &old);
        set.handle_bytes(net.now, &old, &mut [0u8; 40]);
        set.handle_connect_failed(net.now, &old);
        assert_eq!(set.poll_close(), None);
        assert!(!set.has_output(&old));
        sock = Some(new);
        drive(&mut net, &mut set, relay, &mut conn, &mut sock);
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connected));
        // A socket the set no longer wants is closed again at once.
        let stale = SocketId {
            relay,
            attempt: old.attempt,
        };
        set.handle_connected(net.now, &stale, &mut net.rng);
        assert_eq!(set.poll_close(), Some(stale));
        assert_eq!(set.relay_state(&relay), Some(RelayLinkState::Connected));
    }
}

/// The attack: a relay that sends PINGs (or routing responses for slots we
/// never asked for, which we must give back) and never reads our output.
/// Before the bound, 400,000 PINGs queued 10.8 MB of PONGs.
#[test]
fn a_relay_that_pings_and_never_reads_cannot_grow_the_client_queue_past_32_kib() {
    let bound = ClientConfig::default().priority_queue_bytes;
    assert_eq!(bound, 32 * 1024);
    for unasked_routes in [false, true] {
        let (mut rng, server, mut now, mut c) = client_of_fake(11, ClientConfig::default());
        let mut fake = Fake::accept(&mut c, &server, &mut rng, now);
        assert_eq!(c.state(), LinkState::Connected);
        let mut sent = 0u32;
        // Never drained: the relay does not read. Bounded loop: 400,000
        // frames, the attack's size; the link must die long before.
        while sent < 400_000 && c.state() == LinkState::Connected {
            let plain = if unasked_routes {
                let slot = 16 + (sent % 240) as u8;
                let mut p = vec![1u8, slot];
                p.extend_from_slice(&(sent + 1).to_be_bytes());
                p.resize(34, 0xaa);
                p
            } else {
                let mut p = vec![4u8];
                p.extend_from_slice(&u64::from(sent + 1).to_be_bytes());
                p
            };
            fake.send(&mut c, now, &plain);
            sent += 1;
            assert!(c.priority_queued_bytes() <= bound);
            now += Duration::from_micros(10);
        }
        assert_eq!(
            c.state(),
            LinkState::Disconnected(LinkDownReason::NotReading),
            "unasked routes: {unasked_routes}"
        );
        // 27-byte PONG frames: about 1,200 of them fill 32 KiB.
        assert!(sent < 2_000, "died after {sent} frames");
        let ev = events(&mut c);
        assert!(ev.contains(&ClientEvent::Disconnected {
            reason: LinkDownReason::NotReading
        }));
        assert!(!c.has_output());
    }
}

#[test]
fn routing_240_peers_at_connect_fits_the_smallest_priority_bound() {
    let cfg = ClientConfig {
        priority_queue_bytes: 0,
        ..ClientConfig::default()
    };
    let (mut rng, server, now, mut c) = client_of_fake(12, cfg);
    for i in 0..NUM_CLIENT_CONNECTIONS {
        let mut pk = [0u8; 32];
        pk[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        c.route(PublicKey(pk)).unwrap();
    }
    let _fake = Fake::accept(&mut c, &server, &mut rng, now);
    assert_eq!(c.state(), LinkState::Connected);
    assert!(c.priority_queued_bytes() > 240 * 51);
    assert!(c.priority_queued_bytes() <= MIN_PRIORITY_QUEUE_BYTES);
    c.handle_timeout(now);
    assert_eq!(c.state(), LinkState::Connected);
}

/// A relay that reads only our control frames, never what is queued behind
/// data, while we unroute: the notifications queued behind data stop at
/// `queue_bytes` plus the priority bound, then the link is dropped at the
/// next timer.
#[test]
fn unroute_notifications_to_a_relay_that_never_reads_are_bounded() {
    let cfg = ClientConfig {
        queue_bytes: 0,
        priority_queue_bytes: 0,
        ..ClientConfig::default()
    };
    let (mut rng, server, now, mut c) = client_of_fake(13, cfg);
    let mut fake = Fake::accept(&mut c, &server, &mut rng, now);
    let mut cycles = 0u32;
    let mut refused = false;
    // Route two peers, get slots from the relay, unroute both: two
    // notifications a cycle, of which a drain takes only one.
    while cycles < 10_000 {
        let peers: Vec<PublicKey> = (0..2u32)
            .map(|k| {
                let mut pk = [0u8; 32];
                pk[..4].copy_from_slice(&(2 * cycles + k + 1).to_be_bytes());
                PublicKey(pk)
            })
            .collect();
        if peers.iter().any(|p| c.route(*p).is_err()) {
            refused = true;
            break;
        }
        for (slot, p) in [16u8, 17].iter().zip(&peers) {
            fake.send(&mut c, now, &[&[1u8, *slot][..], &p.0].concat());
        }
        for p in &peers {
            c.unroute(p);
        }
        let mut out = Vec::new();
        c.drain_into(&mut out, 0);
        assert_eq!(c.priority_queued_bytes(), 0);
        assert!(c.queued_bytes() <= MIN_PRIORITY_QUEUE_BYTES);
        cycles += 1;
    }
    assert!(refused, "still accepting after {cycles} cycles");
    assert!(c.queued_bytes() > MIN_PRIORITY_QUEUE_BYTES - 40);
    c.handle_timeout(now);
    assert_eq!(
        c.state(),
        LinkState::Disconnected(LinkDownReason::NotReading)
    );
}
