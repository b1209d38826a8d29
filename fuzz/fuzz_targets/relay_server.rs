//! The relay server state machine driven by a script of operations on up to
//! four connections: accept, raw bytes, a valid hello, a valid frame with a
//! fuzzer-chosen plaintext, time passing, close (peers 0 and 1 connect from
//! the same address). Whatever happens, the server must not panic, and its
//! output must stay within its queue bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use toxlink_proto::crypto::{KeyPair, Nonce, SecretKey};
use toxlink_proto::relay_server::{ConnId, Server, ServerConfig};
use toxlink_proto::wire::relay::{HandshakePayload, HandshakeRequest, HandshakeResponse, SecureChannel};

#[path = "counter_rng.rs"]
mod counter_rng;
use counter_rng::Counter;

struct Peer {
    kp: KeyPair,
    temp: KeyPair,
    base: Nonce,
    chan: Option<SecureChannel>,
}

fuzz_target!(|data: &[u8]| {
    let server_kp = KeyPair::from_secret(SecretKey([7; 32]));
    let cfg = ServerConfig {
        queue_bytes: 8192,
        priority_queue_bytes: 2048,
        max_unconfirmed: 3,
        // Peers 0 and 1 share an address: the per-address limits and the
        // eviction order are exercised too.
        max_conns_per_ip: 1,
        max_unconfirmed_per_ip: 1,
        oob_bytes_per_sec: 4096,
        slow_consumer_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut s = Server::new(server_kp.clone(), Counter(1), cfg);
    let mut now = Instant::now();
    let mut peers: Vec<Peer> = (0..4u8)
        .map(|i| Peer {
            kp: KeyPair::from_secret(SecretKey([i + 1; 32])),
            temp: KeyPair::from_secret(SecretKey([i + 100; 32])),
            base: Nonce([i; 24]),
            chan: None,
        })
        .collect();
    let mut gen = [0u64; 4];
    let mut at = 0;
    while at + 2 <= data.len() {
        let op = data[at];
        let k = usize::from(data[at + 1] % 4);
        at += 2;
        let len = usize::from(*data.get(at).unwrap_or(&0));
        at += 1;
        let arg = &data[at.min(data.len())..(at + len).min(data.len())];
        at += len;
        let conn = ConnId(k as u64 + 10 * gen[k]);
        match op % 6 {
            0 => {
                gen[k] += 1;
                peers[k].chan = None;
                let ip = std::net::IpAddr::from([127, 0, 0, (k as u8).max(1)]);
                s.handle_accept(now, ConnId(k as u64 + 10 * gen[k]), ip);
            }
            1 => s.handle_bytes(now, conn, &mut arg.to_vec()),
            2 => {
                let p = &peers[k];
                let key = p.kp.precompute(&server_kp.public);
                let hello = HandshakeRequest::seal(
                    p.kp.public,
                    &key,
                    Nonce([9; 24]),
                    &HandshakePayload {
                        temp_pk: p.temp.public,
                        base_nonce: p.base,
                    },
                );
                s.handle_bytes(now, conn, &mut hello.to_bytes());
                let mut out = Vec::new();
                s.drain_into(conn, &mut out, usize::MAX);
                if let Ok(r) = HandshakeResponse::parse(&out) {
                    if let Ok(theirs) = r.open(&key) {
                        peers[k].chan = Some(SecureChannel::new(
                            peers[k].temp.precompute(&theirs.temp_pk),
                            peers[k].base,
                            theirs.base_nonce,
                        ));
                    }
                }
            }
            3 => {
                if let (Some(ch), false) = (peers[k].chan.as_mut(), arg.is_empty()) {
                    let mut f = vec![0u8; 18];
                    f.extend_from_slice(&arg[..arg.len().min(2032)]);
                    if ch.seal_in_place(&mut f).is_ok() {
                        s.handle_bytes(now, conn, &mut f);
                    }
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(arg.first().copied().unwrap_or(1)) * 100);
                s.handle_timeout(now);
            }
            _ => s.handle_closed(now, conn),
        }
        while s.poll_wake().is_some() {}
        while s.poll_close().is_some() {}
        // Every connection's output stays bounded.
        for i in 0..4u64 {
            let c = ConnId(i + 10 * gen[i as usize]);
            let mut out = Vec::new();
            if op % 2 == 0 {
                s.drain_into(c, &mut out, usize::MAX);
            }
            assert!(s.conn_buffer_bytes(c) < 64 * 1024);
        }
        assert!(s.counters().queued_bytes <= 4 * 8192 + 4096);
    }
});
