//! Messenger / friend_connection packets: parse; whatever parses re-encodes
//! and parses back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::wire::messenger::MessengerPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = MessengerPacket::parse(data) {
        let v = p.to_vec().expect("a parsed packet re-encodes");
        assert_eq!(MessengerPacket::parse(&v).expect("re-encoding parses"), p);
    }
});
