//! Packed IP_Port and packed nodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::wire::packed::{PackedIpPort, PackedNode};

fuzz_target!(|data: &[u8]| {
    if let Ok((a, n)) = PackedIpPort::parse(data) {
        let mut out = [0u8; 19];
        assert_eq!(a.encode(&mut out).expect("fits"), n);
        assert_eq!(&out[..n], &data[..n]);
    }
    if let Ok((node, n)) = PackedNode::parse(data) {
        let mut out = [0u8; 51];
        assert_eq!(node.encode(&mut out).expect("fits"), n);
        assert_eq!(&out[..n], &data[..n]);
    }
});
