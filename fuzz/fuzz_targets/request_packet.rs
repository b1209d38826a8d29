//! Request packet bodies: decode against a send buffer whose bounds come from
//! the input; numbers must be consecutive and stay inside the buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toxlink_proto::wire::net_crypto::RequestDecoder;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let start = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) % 40_000;
    let body = &data[8..];
    let mut expect = start;
    let mut count = 0u32;
    for item in RequestDecoder::new(body, start, start.wrapping_add(len)) {
        assert_eq!(item.number, expect);
        expect = expect.wrapping_add(1);
        count += 1;
    }
    assert!(count <= len);
});
