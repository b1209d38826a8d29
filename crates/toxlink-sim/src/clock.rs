//! Virtual time.
//!
//! A [`SimClock`] is a fixed base `Instant` (read from the real clock exactly
//! once, at construction) plus a virtual `Duration` offset. Time only moves
//! when the simulator calls [`SimClock::advance_to`] and never moves
//! backwards. Every `Instant` the simulator hands out is `base + offset`, so
//! protocol code that takes `now: Instant` runs unchanged on virtual time.

use std::time::{Duration, Instant};

/// Virtual clock: `now() == base + offset`, with `offset` advanced explicitly.
#[derive(Debug, Clone)]
pub struct SimClock {
    base: Instant,
    offset: Duration,
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    /// A clock at virtual time zero. Reads the real clock once for the base;
    /// never again.
    pub fn new() -> Self {
        Self::with_base(Instant::now())
    }

    /// A clock at virtual time zero with an explicit base (lets several
    /// simulations share one base).
    pub fn with_base(base: Instant) -> Self {
        Self {
            base,
            offset: Duration::ZERO,
        }
    }

    /// The fixed base `Instant` (virtual time zero).
    pub fn base(&self) -> Instant {
        self.base
    }

    /// The current virtual `Instant`.
    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    /// Virtual time elapsed since the base.
    pub fn elapsed(&self) -> Duration {
        self.offset
    }

    /// The `Instant` at virtual offset `offset` from the base (`clock.at(secs(2))`).
    pub fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    /// The virtual offset of `t` from the base (zero if `t` is before it).
    pub fn offset_of(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }

    /// Moves the clock forward to `t`. A `t` in the past is ignored: the clock
    /// is monotonic. Returns the (possibly unchanged) current time.
    pub fn advance_to(&mut self, t: Instant) -> Instant {
        let off = self.offset_of(t);
        if off > self.offset {
            self.offset = off;
        }
        self.now()
    }

    /// Moves the clock forward by `d`.
    pub fn advance_by(&mut self, d: Duration) -> Instant {
        self.offset = self.offset.saturating_add(d);
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_monotonically() {
        let mut c = SimClock::new();
        let t0 = c.now();
        assert_eq!(c.elapsed(), Duration::ZERO);
        c.advance_to(t0 + Duration::from_millis(5));
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        // Going back is ignored.
        c.advance_to(t0 + Duration::from_millis(1));
        assert_eq!(c.elapsed(), Duration::from_millis(5));
        c.advance_by(Duration::from_secs(1));
        assert_eq!(c.elapsed(), Duration::from_millis(1005));
        assert_eq!(
            c.at(Duration::from_secs(3)) - c.base(),
            Duration::from_secs(3)
        );
    }
}
