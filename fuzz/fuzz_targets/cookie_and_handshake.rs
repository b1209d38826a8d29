//! net_crypto cookie request, cookie response, cookie and handshake: parse,
//! re-encode, open with a fixed key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::crypto::SharedKey;
use toxlink_proto::wire::net_crypto::{
    Cookie, CookieRequest, CookieResponse, Handshake, COOKIE_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let key = SharedKey([9; 32]);
    if let Ok(p) = CookieRequest::parse(data) {
        assert_eq!(&p.to_bytes()[..], data);
        let _ = p.open(&key);
    }
    if let Ok(p) = CookieResponse::parse(data) {
        assert_eq!(&p.to_bytes()[..], data);
        let _ = p.open(&key);
    }
    if let Ok(p) = Handshake::parse(data) {
        assert_eq!(&p.to_bytes()[..], data);
        let _ = p.open(&key);
        let _ = Cookie::from_bytes(&p.cookie).open(&key);
    }
    if let Ok(c) = <[u8; COOKIE_SIZE]>::try_from(data) {
        let cookie = Cookie::from_bytes(&c);
        assert_eq!(cookie.to_bytes(), c);
        let _ = cookie.open(&key);
    }
});
