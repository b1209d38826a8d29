//! One directed datagram link (A→B) and its impairments.
//!
//! A [`Link`] decides, for each datagram sent on it, whether it is dropped
//! (and why) and when each copy arrives. The order of effects, per datagram:
//!
//! 1. link down ([`Link::set_up`]) → dropped, reason [`DropReason::Down`];
//! 2. larger than the MTU → dropped, [`DropReason::Mtu`];
//! 3. bandwidth cap: the datagram joins a FIFO behind the bytes still being
//!    serialised; if that backlog plus the datagram exceeds the queue limit it
//!    is tail-dropped ([`DropReason::Queue`]); otherwise it leaves the link's
//!    sender after its serialisation time `len / bandwidth`;
//! 4. loss: Gilbert–Elliott state step, then loss with the current state's
//!    probability, or the plain random loss probability
//!    ([`DropReason::Loss`]); a lost datagram still used its bandwidth;
//! 5. propagation: base latency plus jitter; with probability `reorder` the
//!    datagram gets an extra delay so that later datagrams overtake it;
//! 6. with probability `duplicate` a second copy is scheduled with its own
//!    delay sample;
//! 7. each copy is independently corrupted with probability `corrupt`.
//!
//! Invariants: all randomness comes from the link's own [`SimRng`] fork; a
//! link with the default config is ideal (zero delay, no loss) and draws no
//! random numbers; the backlog queue holds at most one entry per datagram in
//! flight on the sender side and is trimmed on every send.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rng::SimRng;

/// Jitter added to the base latency of each datagram.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// No jitter.
    #[default]
    None,
    /// Uniform extra delay in `[0, max]`.
    Uniform(Duration),
    /// Normal-ish (Irwin–Hall) deviation with standard deviation `sigma`,
    /// clamped to `[-max, +max]`; the total delay never goes below zero.
    Normal {
        /// Standard deviation.
        sigma: Duration,
        /// Bound on the absolute deviation.
        max: Duration,
    },
}

/// Gilbert–Elliott bursty loss: a two-state Markov chain stepped once per
/// datagram. The mean burst (bad state) length is `1 / p_bad_to_good`
/// datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state per datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability while good.
    pub loss_good: f64,
    /// Loss probability while bad.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Long-run fraction of datagrams lost.
    pub fn stationary_loss(&self) -> f64 {
        let denom = self.p_good_to_bad + self.p_bad_to_good;
        if denom <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p_good_to_bad / denom;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// How a corrupted copy is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Flip between 1 and `max` random bits.
    Bits {
        /// Upper bound on flipped bits (at least 1 is used).
        max: u32,
    },
    /// Replace between 1 and `max` random bytes with different values.
    Bytes {
        /// Upper bound on damaged bytes (at least 1 is used).
        max: u32,
    },
}

impl Default for Corruption {
    fn default() -> Self {
        Corruption::Bits { max: 1 }
    }
}

/// Configuration of one directed link. Built with chained setters starting
/// from [`LinkConfig::new`] (an ideal link: no delay, no loss, no cap).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkConfig {
    /// Base one-way propagation delay.
    pub latency: Duration,
    /// Jitter on top of `latency`.
    pub jitter: Jitter,
    /// If true, jitter never reorders: a datagram never arrives before the
    /// previous (non-reordered) one. Deliberate reordering still happens.
    pub jitter_keeps_order: bool,
    /// Independent random loss probability.
    pub loss: f64,
    /// Bursty loss model, applied in addition to `loss`.
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Probability that a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability of delivering a second copy.
    pub duplicate: f64,
    /// Probability that a copy is corrupted.
    pub corrupt: f64,
    /// How a corrupted copy is damaged.
    pub corruption: Corruption,
    /// Bandwidth cap in bytes per second (`None` = infinite).
    pub bandwidth: Option<u64>,
    /// Sender-side queue limit in bytes, including the datagram being
    /// serialised (tail drop). Only meaningful with a bandwidth cap.
    pub queue_limit: Option<usize>,
    /// Largest datagram carried; larger ones are dropped.
    pub mtu: Option<usize>,
}

impl LinkConfig {
    /// An ideal link: zero delay, no loss, unlimited bandwidth.
    pub fn new() -> Self {
        Self::default()
    }

    /// Base one-way latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Uniform jitter: extra delay in `[0, max]`.
    pub fn jitter_uniform(mut self, max: Duration) -> Self {
        self.jitter = Jitter::Uniform(max);
        self
    }

    /// Normal-ish jitter with deviation `sigma`, bounded by `±max`.
    pub fn jitter_normal(mut self, sigma: Duration, max: Duration) -> Self {
        self.jitter = Jitter::Normal { sigma, max };
        self
    }

    /// Whether jitter may reorder datagrams (default: it may, like netem).
    pub fn jitter_keeps_order(mut self, keep: bool) -> Self {
        self.jitter_keeps_order = keep;
        self
    }

    /// Independent random loss probability.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Gilbert–Elliott bursty loss.
    pub fn gilbert_elliott(
        mut self,
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_good: f64,
        loss_bad: f64,
    ) -> Self {
        self.gilbert_elliott = Some(GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good,
            loss_bad,
        });
        self
    }

    /// Reorder: with probability `p` a datagram is delayed by `extra`.
    pub fn reorder(mut self, p: f64, extra: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = extra;
        self
    }

    /// Duplicate a datagram with probability `p`.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Corrupt a copy with probability `p` by flipping 1..=`max_bits` bits.
    pub fn corrupt_bits(mut self, p: f64, max_bits: u32) -> Self {
        self.corrupt = p;
        self.corruption = Corruption::Bits { max: max_bits };
        self
    }

    /// Corrupt a copy with probability `p` by changing 1..=`max_bytes` bytes.
    pub fn corrupt_bytes(mut self, p: f64, max_bytes: u32) -> Self {
        self.corrupt = p;
        self.corruption = Corruption::Bytes { max: max_bytes };
        self
    }

    /// Bandwidth cap in bytes per second.
    pub fn bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bandwidth = Some(bytes_per_sec);
        self
    }

    /// Queue limit in bytes (tail drop); needs a bandwidth cap to matter.
    pub fn queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = Some(bytes);
        self
    }

    /// Maximum datagram size.
    pub fn mtu(mut self, bytes: usize) -> Self {
        self.mtu = Some(bytes);
        self
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Random or bursty loss.
    Loss,
    /// Tail drop: the sender queue was full.
    Queue,
    /// Larger than the MTU.
    Mtu,
    /// The link was down when it was sent or when it arrived.
    Down,
    /// No link exists for the pair and there is no default config.
    NoRoute,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Bytes handed to the link.
    pub bytes_sent: u64,
    /// Copies delivered (duplicates count).
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes_delivered: u64,
    /// Dropped by random or bursty loss.
    pub dropped_loss: u64,
    /// Dropped by the queue limit.
    pub dropped_queue: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped because the link was down.
    pub dropped_down: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Copies corrupted.
    pub corrupted: u64,
    /// Datagrams given the reorder delay.
    pub reordered: u64,
}

impl LinkStats {
    /// All drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_mtu + self.dropped_down
    }
}

/// One scheduled copy of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub at: Instant,
    pub corrupt: bool,
}

/// What a link decided for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Dropped(DropReason),
    Arrives(Arrival, Option<Arrival>),
}

/// A directed link with its config, runtime state and counters.
#[derive(Debug, Clone)]
pub struct Link<A> {
    from: A,
    to: A,
    config: LinkConfig,
    up: bool,
    ge_bad: bool,
    rng: SimRng,
    /// (serialisation end, len) of datagrams still in the sender queue.
    backlog: VecDeque<(Instant, usize)>,
    backlog_bytes: usize,
    busy_until: Option<Instant>,
    last_arrival: Option<Instant>,
    pub(crate) stats: LinkStats,
}

impl<A: Copy> Link<A> {
    pub(crate) fn new(from: A, to: A, config: LinkConfig, up: bool, rng: SimRng) -> Self {
        Self {
            from,
            to,
            config,
            up,
            ge_bad: false,
            rng,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            busy_until: None,
            last_arrival: None,
            stats: LinkStats::default(),
        }
    }

    /// Source address.
    pub fn from(&self) -> A {
        self.from
    }

    /// Destination address.
    pub fn to(&self) -> A {
        self.to
    }

    /// Brings the link up or down. A down link is a black hole: datagrams
    /// sent on it, and datagrams in flight that would arrive while it is down,
    /// are silently dropped (counted as [`DropReason::Down`]).
    pub fn set_up(&mut self, up: bool) {
        self.up = up;
    }

    /// Whether the link carries traffic.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The current config.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Replaces the config from now on (datagrams in flight keep their
    /// arrival times; the queue backlog is kept).
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// Edits the config in place (`link.config_mut().loss = 0.3`).
    pub fn config_mut(&mut self) -> &mut LinkConfig {
        &mut self.config
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Bytes waiting in (or being serialised from) the sender queue at `now`.
    pub fn backlog_bytes(&mut self, now: Instant) -> usize {
        self.trim_backlog(now);
        self.backlog_bytes
    }

    fn trim_backlog(&mut self, now: Instant) {
        while let Some(&(end, len)) = self.backlog.front() {
            if end > now {
                break;
            }
            self.backlog.pop_front();
            self.backlog_bytes -= len;
        }
    }

    /// Decides the fate of one datagram of `len` bytes sent at `now`.
    /// `horizon` bounds every computed instant (no overflow).
    pub(crate) fn transmit(&mut self, now: Instant, len: usize, horizon: Instant) -> Fate {
        self.stats.sent += 1;
        self.stats.bytes_sent += len as u64;
        if !self.up {
            self.stats.dropped_down += 1;
            return Fate::Dropped(DropReason::Down);
        }
        if self.config.mtu.is_some_and(|m| len > m) {
            self.stats.dropped_mtu += 1;
            return Fate::Dropped(DropReason::Mtu);
        }
        // 3. Bandwidth and queue.
        let mut depart = now;
        if let Some(bw) = self.config.bandwidth.filter(|b| *b > 0) {
            self.trim_backlog(now);
            if let Some(limit) = self.config.queue_limit {
                if self.backlog_bytes + len > limit {
                    self.stats.dropped_queue += 1;
                    return Fate::Dropped(DropReason::Queue);
                }
            }
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let ser_ns = (len as u128 * 1_000_000_000).div_ceil(u128::from(bw));
            let ser = Duration::from_nanos(u64::try_from(ser_ns).unwrap_or(u64::MAX));
            depart = add(start, ser, horizon);
            self.busy_until = Some(depart);
            self.backlog.push_back((depart, len));
            self.backlog_bytes += len;
        }
        // 4. Loss.
        let mut lost = false;
        if let Some(ge) = self.config.gilbert_elliott {
            let flip = if self.ge_bad {
                ge.p_bad_to_good
            } else {
                ge.p_good_to_bad
            };
            if self.rng.bernoulli(flip) {
                self.ge_bad = !self.ge_bad;
            }
            let p = if self.ge_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
            lost = self.rng.bernoulli(p);
        }
        if !lost && self.config.loss > 0.0 {
            lost = self.rng.bernoulli(self.config.loss);
        }
        if lost {
            self.stats.dropped_loss += 1;
            return Fate::Dropped(DropReason::Loss);
        }
        // 5. Propagation, jitter and reordering.
        let mut at = add(depart, self.delay_sample(), horizon);
        if self.rng.bernoulli(self.config.reorder) {
            self.stats.reordered += 1;
            at = add(at, self.config.reorder_delay, horizon);
        } else {
            if self.config.jitter_keeps_order {
                if let Some(last) = self.last_arrival {
                    at = at.max(last);
                }
            }
            self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        }
        let first = Arrival {
            at,
            corrupt: self.rng.bernoulli(self.config.corrupt),
        };
        // 6. Duplication.
        let dup = if self.rng.bernoulli(self.config.duplicate) {
            self.stats.duplicated += 1;
            let at = add(depart, self.delay_sample(), horizon);
            Some(Arrival {
                at,
                corrupt: self.rng.bernoulli(self.config.corrupt),
            })
        } else {
            None
        };
        Fate::Arrives(first, dup)
    }

    fn delay_sample(&mut self) -> Duration {
        let base = self.config.latency;
        match self.config.jitter {
            Jitter::None => base,
            Jitter::Uniform(max) => base + self.rng.uniform_duration(Duration::ZERO, max),
            Jitter::Normal { sigma, max } => {
                let dev = (self.rng.normalish() * sigma.as_secs_f64())
                    .clamp(-max.as_secs_f64(), max.as_secs_f64());
                if dev >= 0.0 {
                    base + Duration::from_secs_f64(dev)
                } else {
                    base.saturating_sub(Duration::from_secs_f64(-dev))
                }
            }
        }
    }

    /// Damages `data` in place according to the corruption mode. Returns
    /// false (and counts nothing) for an empty datagram.
    pub(crate) fn corrupt_in_place(&mut self, data: &mut [u8]) -> bool {
        if data.is_empty() {
            return false;
        }
        let len = data.len() as u64;
        match self.config.corruption {
            Corruption::Bits { max } => {
                let n = self.rng.range_inclusive(1, u64::from(max.max(1)));
                for _ in 0..n {
                    let bit = self.rng.below(len * 8);
                    // below(len*8) < len*8, so the index is < len.
                    if let Some(b) = data.get_mut((bit / 8) as usize) {
                        *b ^= 1 << (bit % 8);
                    }
                }
            }
            Corruption::Bytes { max } => {
                let n = self.rng.range_inclusive(1, u64::from(max.max(1)));
                for _ in 0..n {
                    let i = self.rng.below(len);
                    let x = self.rng.range_inclusive(1, 255) as u8;
                    if let Some(b) = data.get_mut(i as usize) {
                        *b ^= x;
                    }
                }
            }
        }
        // Flips can cancel each other (same bit twice): the caller compares
        // with the original and calls `force_change` if nothing changed.
        self.stats.corrupted += 1;
        true
    }

    /// Flips one random bit: used when earlier flips cancelled out.
    pub(crate) fn force_change(&mut self, data: &mut [u8]) {
        let len = data.len() as u64;
        let bit = self.rng.below(len * 8);
        if let Some(b) = data.get_mut((bit / 8) as usize) {
            *b ^= 1 << (bit % 8);
        }
    }
}

/// `t + d`, saturating at `horizon`.
pub(crate) fn add(t: Instant, d: Duration, horizon: Instant) -> Instant {
    t.checked_add(d).map_or(horizon, |x| x.min(horizon))
}
