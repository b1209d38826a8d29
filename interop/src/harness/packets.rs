//! The custom packets the harness sends and checks: id, sequence number,
//! FNV-1a checksum, send time (`CLOCK_MONOTONIC` microseconds).

use crate::process;

/// `CLOCK_MONOTONIC` in microseconds: the clock the harness stamps its
/// events and packets with.
pub fn mono_us() -> u64 {
    process::mono_us()
}

/// FNV-1a of a packet in the harness's custom layout, with the checksum
/// field (bytes 5..9) counted as zero.
pub fn custom_checksum(p: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, &b) in p.iter().enumerate() {
        let b = if (5..9).contains(&i) { 0 } else { b };
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A packet in the harness's custom layout: id ‖ seq BE32 ‖ FNV-1a BE32
/// ([`custom_checksum`]) ‖ send time BE64 (`sent_us`, [`mono_us`] or 0) ‖
/// filler. `size` is at least 17.
pub fn custom_packet(id: u8, seq: u32, size: usize, sent_us: u64) -> Vec<u8> {
    let mut p = vec![0u8; size.max(17)];
    p[0] = id;
    p[1..5].copy_from_slice(&seq.to_be_bytes());
    p[9..17].copy_from_slice(&sent_us.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(17) {
        *b = (seq as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    let h = custom_checksum(&p);
    p[5..9].copy_from_slice(&h.to_be_bytes());
    p
}
