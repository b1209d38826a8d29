//! Relay handshake request (128 bytes) and response (96 bytes): parse, open
//! with a fixed key, re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::crypto::SharedKey;
use toxlink_proto::wire::relay::{HandshakeRequest, HandshakeResponse};

fuzz_target!(|data: &[u8]| {
    let key = SharedKey([7; 32]);
    if let Ok(req) = HandshakeRequest::parse(data) {
        assert_eq!(&req.to_bytes()[..], data);
        let _ = req.open(&key);
    }
    if let Ok(resp) = HandshakeResponse::parse(data) {
        assert_eq!(&resp.to_bytes()[..], data);
        let _ = resp.open(&key);
    }
});
