//! net_crypto data packets: parse the outer packet, reconstruct the nonce,
//! try to open; parse the input as a decrypted plaintext and check the
//! re-encoding keeps header and data. These are the functions the session
//! runs on every received data packet (`DataPacket::parse`,
//! `DataPacket::decrypt_in_place` and `DataPacket::plaintext` (together
//! `open_in_place`), `DataPlaintext::parse`, and
//! `reconstruct_nonce`/`reconstruct_stale_nonce`/`advance_rx_nonce` inside
//! its receive-nonce window), and `DataPacket::seal`, which builds every data
//! packet it sends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::crypto::{Nonce, SharedKey};
use toxlink_proto::wire::net_crypto::{
    advance_rx_nonce, reconstruct_nonce, reconstruct_stale_nonce, DataPacket, DataPlaintext,
};

fuzz_target!(|data: &[u8]| {
    let key = SharedKey([4; 32]);
    let mut rx = Nonce([5; 24]);
    if let Ok(p) = DataPacket::parse(data) {
        let (full, diff) = reconstruct_nonce(&rx, p.nonce_low);
        let mut buf = data.to_vec();
        if DataPacket::open_in_place(&key, &full, &mut buf).is_ok() {
            advance_rx_nonce(&mut rx, diff);
        } else {
            // Unchanged by the failed open: the stale-window retry.
            assert_eq!(&buf[..], data);
            let (old, back) = reconstruct_stale_nonce(&rx, p.nonce_low);
            assert!((1..=65536).contains(&back));
            let _ = DataPacket::open_in_place(&key, &old, &mut buf);
        }
    }
    if let Ok(p) = DataPlaintext::parse(data) {
        let mut out = vec![0u8; 1500];
        if let Ok(n) = p.encode(&mut out) {
            let again = DataPlaintext::parse(&out[..n]).expect("encoded plaintext parses");
            assert_eq!(again, p);
            // Sealed as the session sends it, it opens to the same plaintext.
            let mut pkt = vec![0u8; 1500];
            if let Ok(len) = DataPacket::seal(&key, &rx, &p, &mut pkt) {
                let opened = DataPacket::open_in_place(&key, &rx, &mut pkt[..len])
                    .expect("a sealed packet opens");
                assert_eq!(opened, p);
            }
        }
    }
});
