//! A relay receive buffer: split frames, open each (most fail), and parse the
//! input itself as a frame plaintext; whatever parses must re-encode to the
//! same bytes or be refused by the encoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::crypto::{Nonce, SharedKey};
use toxlink_proto::wire::relay::{split_frame, FrameSplit, RelayPacket, SecureChannel};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut ch = SecureChannel::new(SharedKey([1; 32]), Nonce([2; 24]), Nonce([3; 24]));
    let mut at = 0;
    while at < buf.len() {
        match split_frame(&buf[at..]) {
            Ok(FrameSplit::Incomplete) | Err(_) => break,
            Ok(FrameSplit::Empty) => at += 2,
            Ok(FrameSplit::Frame { box_len }) => {
                let frame = &mut buf[at + 2..at + 2 + box_len];
                if let Ok(plain) = ch.open_in_place(frame) {
                    let _ = RelayPacket::parse(plain);
                }
                at += 2 + box_len;
            }
            // `FrameSplit` is non-exhaustive: a kind unknown here stops.
            Ok(_) => break,
        }
    }
    if let Ok(p) = RelayPacket::parse(data) {
        assert_eq!(p.encoded_len(), data.len());
        if let Ok(v) = p.to_vec() {
            assert_eq!(v, data);
        }
        let mut out = vec![0u8; data.len() + 18];
        let _ = ch.seal_packet(&p, &mut out);
    }
});
