//! STUN: arbitrary bytes to the demultiplexing test, to a client with a
//! transaction outstanding (half the inputs get its transaction id, the
//! magic cookie and a consistent length patched in, so the response path
//! is reached), and to the server's answer. Nothing may panic; whatever
//! the server answers must itself be STUN.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use std::net::SocketAddr;
use std::time::Instant;
use toxlink_proto::stun::{
    answer, is_stun, StunClient, StunConfig, HEADER_LEN, MAGIC_COOKIE, MAX_RESPONSE_LEN,
};

fuzz_target!(|data: &[u8]| {
    let server: SocketAddr = ([192, 0, 2, 1], 3478).into();
    let mut c = StunClient::new(vec![server], StunConfig::default());
    let now = Instant::now();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    c.handle_timeout(now, &mut rng);
    let mut req = [0u8; 64];
    let Some((_, n)) = c.poll_transmit(now, &mut req) else {
        return;
    };
    if n < HEADER_LEN {
        return;
    }
    let _ = is_stun(data);
    let _ = c.handle_datagram(now, server, data);
    // The same bytes as a response to the outstanding transaction.
    if let Some((&flag, rest)) = data.split_first() {
        if flag & 1 == 1 && rest.len() >= HEADER_LEN {
            let len = (rest.len() - HEADER_LEN) & !3;
            let mut m = rest[..HEADER_LEN + len].to_vec();
            m[0] &= 0x3f;
            m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            m[8..20].copy_from_slice(&req[8..HEADER_LEN]);
            assert!(is_stun(&m));
            let _ = c.handle_datagram(now, server, &m);
            let _ = c.reflexive();
            let _ = c.mapping_varies();
        }
    }
    let mut out = [0u8; MAX_RESPONSE_LEN];
    for from in [
        server,
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9)),
    ] {
        if let Ok(n) = answer(data, from, &mut out) {
            assert!(is_stun(data));
            assert!(is_stun(&out[..n]));
        }
    }
});
