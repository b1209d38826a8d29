//! The relay client state machine after a valid handshake with a scripted
//! server: the input is cut into frame plaintexts (each sealed correctly) and
//! raw byte runs, with routes, sends and timers in between. The client must
//! not panic, and a dead link must stay dead.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, Nonce, PublicKey, SecretKey};
use toxlink_proto::relay_client::{Client, ClientConfig, LinkState};
use toxlink_proto::wire::relay::{HandshakePayload, HandshakeRequest, HandshakeResponse, SecureChannel};

#[path = "counter_rng.rs"]
mod counter_rng;
use counter_rng::Counter;

fuzz_target!(|data: &[u8]| {
    let server = KeyPair::from_secret(SecretKey([5; 32]));
    let mut now = Instant::now();
    let mut rng = Counter(3);
    let me = KeyPair::from_secret(SecretKey([6; 32]));
    let mut c = Client::new(now, me, server.public, &mut rng, ClientConfig::default());
    // Scripted server handshake.
    let mut hello = Vec::new();
    c.drain_into(&mut hello, usize::MAX);
    let Ok(req) = HandshakeRequest::parse(&hello) else {
        return;
    };
    let key = server.precompute(&req.client_pk);
    let Ok(theirs) = req.open(&key) else {
        return;
    };
    let temp = KeyPair::from_secret(SecretKey([8; 32]));
    let ours = HandshakePayload {
        temp_pk: temp.public,
        base_nonce: Nonce([4; 24]),
    };
    let mut reply = HandshakeResponse::seal(&key, Nonce([2; 24]), &ours).to_bytes();
    c.handle_bytes(now, &mut reply);
    assert_eq!(c.state(), LinkState::Connected);
    let mut tx = SecureChannel::new(temp.precompute(&theirs.temp_pk), ours.base_nonce, theirs.base_nonce);
    let mut at = 0;
    let mut dead = false;
    while at + 2 <= data.len() {
        let op = data[at];
        let len = usize::from(data[at + 1]) * 8;
        at += 2;
        let arg = &data[at..(at + len).min(data.len())];
        at += len;
        let peer = PublicKey([op & 3; 32]);
        match op % 6 {
            0 | 1 if !arg.is_empty() => {
                let mut f = vec![0u8; 18];
                f.extend_from_slice(&arg[..arg.len().min(2032)]);
                if tx.seal_in_place(&mut f).is_ok() {
                    c.handle_bytes(now, &mut f);
                }
            }
            2 => c.handle_bytes(now, &mut arg.to_vec()),
            3 => {
                let _ = c.route(peer);
                let _ = c.send_data(&peer, arg);
                let _ = c.send_oob(&peer, arg);
            }
            4 => c.unroute(&peer),
            _ => {
                now += Duration::from_millis(u64::from(op) * 20);
                c.handle_timeout(now);
            }
        }
        while c.poll_event().is_some() {}
        let mut out = Vec::new();
        c.drain_into(&mut out, 1 << 16);
        let is_dead = matches!(c.state(), LinkState::Disconnected(_));
        assert!(!(dead && !is_dead), "a dead link came back");
        dead = is_dead;
        assert!(c.queued_bytes() <= ClientConfig::default().queue_bytes);
    }
});
