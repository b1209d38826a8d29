//! Fault injection on forwarded DATA, for tests and demos only.
//!
//! A [`FaultConfig`] says which share of forwarded DATA packets the relay
//! drops, delays or corrupts, and after what time it black-holes all of them.
//! Corruption flips bits of the *plaintext payload* before the frame is sealed
//! for the receiver, so the relay framing stays valid and only the end-to-end
//! layer (net_crypto) can notice.
//!
//! Safety against accidental use: a [`FaultInjector`] can only be built with
//! the `fault-injection` cargo feature (or in this crate's tests), and the
//! production config loader never builds a [`FaultConfig`]. Decisions use a
//! small seeded PRNG (not cryptographic: it only picks victims), so a run is
//! reproducible from its seed.
//!
//! Scope: selectors narrow which forwarded DATA is touched (decisions,
//! black-hole included); DATA outside them passes untouched and draws nothing
//! from the PRNG. They combine (all that are set must match):
//! * [`FaultConfig::only_to`]: DATA forwarded *to* that client key;
//! * [`FaultConfig::only_from`]: DATA sent *by* that client key (one
//!   direction of a conversation);
//! * [`FaultConfig::sizes`]: DATA whose payload (the packet the client sent,
//!   e.g. a whole net_crypto packet) has a length in that range;
//! * [`FaultConfig::spare_new_after`]: DATA between two connections both
//!   accepted *before* installation + that delay; anything from or to a
//!   connection accepted later (a new link, hence also any key first seen
//!   later: a key can only arrive on a new connection) is spared.
//!
//! The all-zero [`FaultConfig::default`] is a pass-through. Installing an injector replaces
//! the previous one (its PRNG and black-hole clock restart);
//! `Server::clear_fault_injector` removes it (packets already delayed are
//! still delivered when due).

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::crypto::PublicKey;

/// What to do to forwarded DATA. Shares are probabilities in `0.0..=1.0`,
/// applied in the order black-hole, drop, delay, corrupt.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Share of packets dropped.
    pub drop: f64,
    /// Share of packets delayed by [`delay`](Self::delay).
    pub delay_share: f64,
    /// Delay applied to delayed packets (constant, so order is kept).
    pub delay: Duration,
    /// Share of packets whose payload is corrupted (re-encrypted correctly).
    pub corrupt: f64,
    /// Drop every packet once this long has passed since installation.
    pub blackhole_after: Option<Duration>,
    /// PRNG seed.
    pub seed: u64,
    /// Apply faults only to DATA forwarded to this client key (`None`: to
    /// every client).
    pub only_to: Option<PublicKey>,
    /// Apply faults only to DATA sent by this client key (`None`: by every
    /// client).
    pub only_from: Option<PublicKey>,
    /// Apply faults only to DATA whose payload length is in this range
    /// (`None`: any length).
    pub sizes: Option<RangeInclusive<usize>>,
    /// Spare DATA from or to a connection accepted at or after installation
    /// plus this delay (`None`: spare nothing).
    pub spare_new_after: Option<Duration>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            drop: 0.0,
            delay_share: 0.0,
            delay: Duration::ZERO,
            corrupt: 0.0,
            blackhole_after: None,
            seed: 1,
            only_to: None,
            only_from: None,
            sizes: None,
            spare_new_after: None,
        }
    }
}

/// An armed fault configuration, ready to install with
/// `Server::set_fault_injector`. The type always exists so runtimes can pass
/// it along, but it can only be *built* with the `fault-injection` feature.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    cfg: FaultConfig,
}

impl FaultInjector {
    /// Builds an injector (only with the `fault-injection` feature).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn new(cfg: FaultConfig) -> Self {
        FaultInjector { cfg }
    }

    pub(super) fn start(self, now: Instant) -> FaultState {
        FaultState {
            blackhole_at: self.cfg.blackhole_after.map(|d| now + d),
            new_from: self.cfg.spare_new_after.map(|d| now + d),
            rng: self.cfg.seed | 1,
            cfg: self.cfg,
        }
    }
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultAction {
    Pass,
    Drop,
    Delay(Duration),
    Corrupt,
}

/// An installed injector.
#[derive(Debug)]
pub(super) struct FaultState {
    cfg: FaultConfig,
    blackhole_at: Option<Instant>,
    /// Connections accepted at or after this are spared.
    new_from: Option<Instant>,
    rng: u64,
}

/// What the relay knows about one forwarded DATA packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Forwarded<'a> {
    /// Sender's key and when its connection was accepted.
    pub from: (&'a PublicKey, Instant),
    /// Receiver's key and when its connection was accepted.
    pub to: (&'a PublicKey, Instant),
    /// Payload length.
    pub len: usize,
}

impl FaultState {
    /// xorshift64*: enough to pick victims reproducibly.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Whether this DATA packet is subject to faults (every selector that
    /// is set matches).
    pub(super) fn applies(&self, p: &Forwarded<'_>) -> bool {
        let c = &self.cfg;
        c.only_to.is_none_or(|k| k == *p.to.0)
            && c.only_from.is_none_or(|k| k == *p.from.0)
            && c.sizes.as_ref().is_none_or(|r| r.contains(&p.len))
            && self.new_from.is_none_or(|t| p.from.1 < t && p.to.1 < t)
    }

    pub(super) fn decide(&mut self, now: Instant) -> FaultAction {
        if self.blackhole_at.is_some_and(|t| now >= t) {
            return FaultAction::Drop;
        }
        if self.chance(self.cfg.drop) {
            return FaultAction::Drop;
        }
        if self.chance(self.cfg.delay_share) {
            return FaultAction::Delay(self.cfg.delay);
        }
        if self.chance(self.cfg.corrupt) {
            return FaultAction::Corrupt;
        }
        FaultAction::Pass
    }

    /// Flips bits of one payload byte (never leaves the payload unchanged).
    pub(super) fn corrupt(&mut self, payload: &mut [u8]) {
        if payload.is_empty() {
            return;
        }
        let r = self.next();
        let i = (r % payload.len() as u64) as usize;
        payload[i] ^= ((r >> 32) as u8) | 1;
    }
}
