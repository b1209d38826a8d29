//! A fixed table of deadlines indexed by a timer enum, for sans-IO state
//! machines (in the spirit of quinn-proto's `TimerTable`).
//!
//! A state machine names its timers with a small `Copy` enum implementing
//! [`Timer`] and keeps one [`TimerTable`] instead of one `Option<Instant>`
//! field per timer: arming, stopping and "what is due next" are then one
//! place, and [`TimerTable::next_timeout`] is what `poll_timeout` reports.
//!
//! Invariants: the table never allocates (a fixed array of `N` slots, `N` the
//! number of timers), every operation is O(N), and an out-of-range index (a
//! [`Timer::index`] ≥ `N`, a programming error) is ignored rather than
//! panicking: such a timer is never set and never fires.

use std::marker::PhantomData;
use std::time::Instant;

/// A timer name: a small enum whose variants index a [`TimerTable`].
pub trait Timer: Copy + Eq + 'static {
    /// Every timer, in index order (`ALL[i].index() == i`).
    const ALL: &'static [Self];
    /// The slot of this timer, `< ALL.len()`.
    fn index(self) -> usize;
}

/// One optional deadline per timer `T`; `N` is `T::ALL.len()` (write it as
/// `TimerTable<MyTimer, { MyTimer::ALL.len() }>`).
#[derive(Clone, PartialEq, Eq)]
pub struct TimerTable<T: Timer, const N: usize> {
    at: [Option<Instant>; N],
    _timer: PhantomData<T>,
}

impl<T: Timer, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable {
            at: [None; N],
            _timer: PhantomData,
        }
    }
}

impl<T: Timer + std::fmt::Debug, const N: usize> std::fmt::Debug for TimerTable<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T: Timer, const N: usize> TimerTable<T, N> {
    /// A table with every timer stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `timer` to fire at `at` (replacing any earlier deadline).
    pub fn set(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Arms `timer` at `at` unless it is already armed earlier.
    pub fn set_earlier(&mut self, timer: T, at: Instant) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = Some(slot.map_or(at, |t| t.min(at)));
        }
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.at.get(timer.index()).copied().flatten()
    }

    /// Whether `timer` is armed.
    pub fn is_set(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed and its deadline is `≤ now`.
    pub fn is_expired(&self, timer: T, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: T) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.at = [None; N];
    }

    /// The armed timers and their deadlines, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (T, Instant)> + '_ {
        T::ALL
            .iter()
            .filter_map(move |&t| self.get(t).map(|at| (t, at)))
    }

    /// The earliest deadline of any armed timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The timers whose deadline is `≤ now`, in index order (they stay armed:
    /// the caller handles and re-arms or stops each).
    pub fn expired(&self, now: Instant) -> impl Iterator<Item = T> + '_ {
        self.iter()
            .filter(move |&(_, at)| at <= now)
            .map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
        C,
    }

    impl Timer for T {
        const ALL: &'static [Self] = &[T::A, T::B, T::C];
        fn index(self) -> usize {
            self as usize
        }
    }

    type Table = TimerTable<T, { T::ALL.len() }>;

    #[test]
    fn set_get_stop_and_next() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Table::new();
        assert_eq!(t.next_timeout(), None);
        assert_eq!(t.expired(now + ms(100)).count(), 0);
        t.set(T::B, now + ms(20));
        t.set(T::C, now + ms(10));
        assert_eq!(t.get(T::A), None);
        assert_eq!(t.get(T::B), Some(now + ms(20)));
        assert_eq!(t.next_timeout(), Some(now + ms(10)));
        // `set` replaces, `set_earlier` only moves earlier.
        t.set(T::C, now + ms(30));
        assert_eq!(t.next_timeout(), Some(now + ms(20)));
        t.set_earlier(T::C, now + ms(40));
        assert_eq!(t.get(T::C), Some(now + ms(30)));
        t.set_earlier(T::C, now + ms(5));
        assert_eq!(t.get(T::C), Some(now + ms(5)));
        t.set_earlier(T::A, now + ms(50));
        assert_eq!(t.get(T::A), Some(now + ms(50)));
        // Expiry is inclusive and reported in index order.
        let due: Vec<T> = t.expired(now + ms(20)).collect();
        assert_eq!(due, vec![T::B, T::C]);
        assert!(t.is_expired(T::C, now + ms(5)));
        assert!(!t.is_expired(T::A, now + ms(49)));
        t.stop(T::C);
        assert!(!t.is_set(T::C));
        assert_eq!(t.next_timeout(), Some(now + ms(20)));
        let all: Vec<(T, Instant)> = t.iter().collect();
        assert_eq!(all, vec![(T::A, now + ms(50)), (T::B, now + ms(20))]);
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
        assert_eq!(t.iter().count(), 0);
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct OutOfRange;

    impl Timer for OutOfRange {
        const ALL: &'static [Self] = &[OutOfRange];
        fn index(self) -> usize {
            7
        }
    }

    #[test]
    fn an_index_past_the_table_is_ignored_not_a_panic() {
        let now = Instant::now();
        let mut t = TimerTable::<OutOfRange, 1>::new();
        t.set(OutOfRange, now);
        t.set_earlier(OutOfRange, now);
        assert_eq!(t.get(OutOfRange), None);
        assert_eq!(t.next_timeout(), None);
        t.stop(OutOfRange);
    }
}
