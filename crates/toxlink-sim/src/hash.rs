//! A stable, fast, non-cryptographic hasher for event traces.
//!
//! `std`'s `DefaultHasher` is randomly keyed per process in spirit (and
//! unspecified across releases), so traces are folded with this fixed
//! word-at-a-time mixer instead: the same sequence of writes gives the same
//! 64-bit value on every run of the same build. It is only used to compare
//! runs ("same seed => same trace"), never for security.

use std::hash::Hasher;

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Deterministic 64-bit hasher (FxHash-style multiply/rotate per word, with a
/// final avalanche).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHasher {
    state: u64,
}

impl Default for TraceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceHasher {
    /// A hasher with a fixed initial state.
    pub const fn new() -> Self {
        Self {
            state: 0x243F_6A88_85A3_08D3,
        }
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.state = (self.state.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

/// SplitMix64 finaliser: a bijective avalanche of one word.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hasher for TraceHasher {
    fn finish(&self) -> u64 {
        splitmix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Four independent lanes over 32-byte blocks (the multiply chains run
        // in parallel), then the tail word by word.
        let mut blocks = bytes.chunks_exact(32);
        if bytes.len() >= 32 {
            let mut lanes = [
                self.state,
                self.state ^ 0x1357_9BDF_2468_ACE0,
                self.state ^ 0x0F1E_2D3C_4B5A_6978,
                self.state ^ 0x7766_5544_3322_1100,
            ];
            for b in &mut blocks {
                for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(w);
                    *lane = (lane.rotate_left(5) ^ u64::from_le_bytes(x)).wrapping_mul(K);
                }
            }
            for lane in lanes {
                self.mix(lane);
            }
        }
        let mut chunks = blocks.remainder().chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
        self.mix(bytes.len() as u64);
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_sensitive() {
        let h = |b: &[u8]| {
            let mut t = TraceHasher::new();
            t.write(b);
            t.finish()
        };
        assert_eq!(h(b"hello world"), h(b"hello world"));
        assert_ne!(h(b"hello world"), h(b"hello worle"));
        assert_ne!(h(b""), h(b"\0"));
        assert_ne!(h(b"\0"), h(b"\0\0"));
        // Every position of a long input matters (lanes and tail).
        let base = vec![7u8; 100];
        for i in 0..100 {
            let mut v = base.clone();
            v[i] ^= 0x10;
            assert_ne!(h(&v), h(&base), "byte {i}");
        }
    }
}
