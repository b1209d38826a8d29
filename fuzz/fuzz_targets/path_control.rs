//! toxlink's path control packets (lossy id 199: endpoint lists, challenges,
//! responses), as `node::discovery` parses them from a peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::wire::path_control::{PathControl, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = PathControl::parse(data) {
        // What parses re-encodes to the same bytes.
        let mut out = [0u8; MAX_LEN];
        let n = p.encode(&mut out).expect("a parsed packet fits");
        assert_eq!(&out[..n], data);
    }
});
