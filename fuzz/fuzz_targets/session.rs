//! An established net_crypto session fed arbitrary datagrams: it must never
//! panic, and must never deliver anything the peer did not send. Ops mix raw
//! datagrams with genuine packets of the peer (captured, possibly mutated,
//! possibly repeated): only genuine, unmodified lossless data may ever be
//! delivered, in order, once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::session::handshake::{
    open_handshake, CookieKey, CookieResponder, CookieResponderConfig, PACKET_COOKIE_REQUEST,
    PACKET_HANDSHAKE,
};
use toxlink_proto::session::{Event, Identity, PathId, Session, SessionConfig, MAX_PACKET_SIZE};

fn identity(rng: &mut ChaCha20Rng, now: Instant) -> Identity {
    Identity {
        real: KeyPair::generate(rng),
        dht: KeyPair::generate(rng),
        cookie_key: CookieKey::new(rng, now),
    }
}

/// Two sessions driven to ESTABLISHED in memory (no loss).
fn established(now: Instant) -> (Session, Session) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let a_id = identity(&mut rng, now);
    let b_id = identity(&mut rng, now);
    let mut a = Session::connect(
        now,
        &mut rng,
        SessionConfig::default(),
        &a_id,
        b_id.real.public,
        b_id.dht.public,
    );
    let mut b: Option<Session> = None;
    let mut resp = CookieResponder::new(CookieResponderConfig::default());
    let mut buf = [0u8; MAX_PACKET_SIZE];
    for _ in 0..50 {
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let pkt = &mut buf[..t.len];
            match (pkt[0], b.as_mut()) {
                (PACKET_COOKIE_REQUEST, _) => {
                    let mut out = [0u8; MAX_PACKET_SIZE];
                    if let Ok((n, _)) =
                        resp.respond(&mut rng, now, &b_id.dht, &b_id.cookie_key, pkt, &mut out)
                    {
                        let _ = a.handle_packet(now, PathId(0), &mut out[..n]);
                    }
                }
                (PACKET_HANDSHAKE, None) => {
                    let real = b_id.real.clone();
                    if let Ok(hs) =
                        open_handshake(&b_id.cookie_key, now, None, |pk| Some(real.precompute(pk)), pkt)
                    {
                        b = Some(Session::accept(
                            now,
                            &mut rng,
                            SessionConfig::default(),
                            &b_id,
                            &hs,
                        ));
                    }
                }
                (_, Some(b)) => {
                    let _ = b.handle_packet(now, PathId(0), pkt);
                }
                _ => {}
            }
        }
        if let Some(b) = b.as_mut() {
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                let _ = a.handle_packet(now, PathId(0), &mut buf[..t.len]);
            }
            if a.is_established() && b.is_established() {
                break;
            }
        }
    }
    let b = b.expect("responder exists");
    while a.poll_event().is_some() {}
    (a, b)
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (mut a, mut b) = established(now);
    // The peer (a) sends 4 genuine lossless packets; we capture them.
    let mut genuine: Vec<Vec<u8>> = Vec::new();
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; MAX_PACKET_SIZE];
    for k in 0..4u8 {
        let p = vec![160, k, k, k];
        a.send_lossless(now, &p).expect("established");
        payloads.push(p);
    }
    let t = now + Duration::from_millis(1);
    while let Some(tx) = a.poll_transmit(t, &mut buf) {
        genuine.push(buf[..tx.len].to_vec());
    }
    let mut expected = 0usize;
    let mut i = 0;
    let mut step = 0u64;
    while i + 2 <= data.len() {
        let op = data[i];
        let len = usize::from(data[i + 1]) * 6;
        i += 2;
        let now = t + Duration::from_millis(step);
        step += 1;
        let mut pkt = match op % 3 {
            0 => {
                let end = (i + len).min(data.len());
                let v = data[i..end].to_vec();
                i = end;
                v
            }
            _ if genuine.is_empty() => continue,
            1 => {
                let mut v = genuine[usize::from(op / 3) % genuine.len()].clone();
                if let Some(&m) = data.get(i) {
                    let at = usize::from(data.get(i + 1).copied().unwrap_or(0)) % v.len();
                    v[at] ^= m;
                    i += 2;
                }
                v
            }
            _ => genuine[usize::from(op / 3) % genuine.len()].clone(),
        };
        let _ = b.handle_packet(now, PathId(u32::from(op)), &mut pkt);
        b.handle_timeout(now);
        while b.poll_transmit(now, &mut buf).is_some() {}
        while let Some(e) = b.poll_event() {
            match e {
                Event::Lossless(d) => {
                    assert!(
                        expected < payloads.len(),
                        "more deliveries than genuine packets"
                    );
                    assert_eq!(d, payloads[expected], "forged or out-of-order delivery");
                    expected += 1;
                }
                Event::Lossy(_) | Event::Killed => panic!("forged {e:?}"),
                _ => {}
            }
        }
    }
});
