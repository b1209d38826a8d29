//! Seeded randomness.
//!
//! [`SimRng`] is ChaCha8 seeded from a `u64`. Every random decision of the
//! simulator comes from one, so a seed fixes the whole run. [`SimRng::fork`]
//! derives a child stream from the *seed* and a label, not from the parent's
//! position: each link draws from its own fork, so adding a link, or drawing
//! more numbers on one link, never changes another link's randomness.
//!
//! `SimRng` implements `rand_core::RngCore + CryptoRng` (rand_core 0.6) so a
//! test can inject it into the protocol core. It is deterministic and must
//! never be used outside tests.

use rand_chacha::ChaCha8Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use std::time::Duration;

use crate::hash::splitmix64;

/// Deterministic random number generator for the simulator.
#[derive(Debug, Clone)]
pub struct SimRng {
    seed: u64,
    inner: ChaCha8Rng,
}

impl SimRng {
    /// A generator seeded with `seed` (ChaCha8 `seed_from_u64`).
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The seed this generator was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent generator derived from this one's seed and `label`.
    /// The same `(seed, label)` always gives the same stream, whatever has
    /// been drawn from `self`.
    pub fn fork(&self, label: &str) -> SimRng {
        // FNV-1a of the label, then two SplitMix64 rounds with the seed.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in label.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        SimRng::new(splitmix64(self.seed ^ splitmix64(h)))
    }

    /// A uniform `f64` in `[0, 1)` (53 random bits).
    pub fn unit(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (`p <= 0` never draws a number and is
    /// always false; `p >= 1` is always true).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        if p <= 0.0 || p.is_nan() {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.unit() < p
        }
    }

    /// A uniform integer in `[0, n)`; `0` when `n == 0`. (Multiply-shift
    /// reduction: the bias is below 2^-32 for the ranges used here.)
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.inner.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `[lo, hi]` (inclusive); `lo` if `hi <= lo`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.inner.next_u64(),
        }
    }

    /// A uniform duration in `[lo, hi]` with nanosecond resolution.
    pub fn uniform_duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        lo + Duration::from_nanos(self.range_inclusive(0, span))
    }

    /// An approximately standard-normal sample (Irwin–Hall: the sum of 12
    /// uniforms minus 6), always within `[-6, 6]`.
    pub fn normalish(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            s += self.unit();
        }
        s - 6.0
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest);
    }
}

impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.inner.try_fill_bytes(dest)
    }
}

/// Deterministic, but a ChaCha stream: good enough to stand in for the
/// protocol core's CSPRNG in tests.
impl CryptoRng for SimRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        let mut c = SimRng::new(8);
        let xa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn fork_is_independent_of_parent_position() {
        let a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..100 {
            b.next_u64();
        }
        assert_eq!(a.fork("link x").next_u64(), b.fork("link x").next_u64());
        assert_ne!(a.fork("link x").next_u64(), a.fork("link y").next_u64());
        assert_ne!(
            a.fork("link x").seed(),
            SimRng::new(43).fork("link x").seed()
        );
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut r = SimRng::new(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let v = r.range_inclusive(5, 7);
            assert!((5..=7).contains(&v));
            let d = r.uniform_duration(Duration::from_millis(1), Duration::from_millis(2));
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
            let n = r.normalish();
            assert!((-6.0..=6.0).contains(&n));
        }
        assert!(!r.bernoulli(0.0));
        assert!(r.bernoulli(1.0));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn usable_as_crypto_rng() {
        fn takes<R: RngCore + CryptoRng>(r: &mut R) -> [u8; 4] {
            let mut b = [0u8; 4];
            r.fill_bytes(&mut b);
            b
        }
        let mut a = SimRng::new(3);
        let mut b = SimRng::new(3);
        assert_eq!(takes(&mut a), takes(&mut b));
    }
}
