//! Per-path RTT, loss and health: a reducer over timestamped facts, with no
//! timers of its own (model: Tailscale's direct-path health).
//!
//! Facts fed in:
//! * *delivery proofs*: a packet we sent on this path at `sent_at` is known to
//!   have arrived (its number was acknowledged and it went only on this path,
//!   or a probe sent on this path was echoed);
//! * *losses* attributed to this path;
//! * *authenticated receives* on this path;
//! * *closure* by the transport (TCP reset, relay link or route gone).
//!
//! The health at `now` is derived from those facts and from the send time of
//! the oldest packet still unproven on this path that was sent *after* the
//! newest proof (the table knows it). Invariant: only a proof about a packet
//! we sent recently moves a path towards healthy; a packet that merely
//! arrives late (a stalled relay releasing its queue) proves nothing about
//! the present, so it cannot keep a black-holed path alive.

use std::time::{Duration, Instant};

/// Health of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Health {
    /// Nothing proven yet (new path, or not used).
    Unproven,
    /// Recently proven and nothing overdue.
    Healthy,
    /// A packet on it is overdue: do not rely on it alone.
    Suspect,
    /// Closed by the transport, or silent for far longer than its RTT allows.
    Dead,
}

/// Timing parameters of the health reducer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    /// RTO before the first RTT sample.
    pub initial_rto: Duration,
    /// Smallest RTO (guards against timer granularity and jitter).
    pub min_rto: Duration,
    /// Largest RTO.
    pub max_rto: Duration,
    /// Overdue by this many RTOs → suspect.
    pub suspect_rtos: u32,
    /// Overdue by this many RTOs → dead.
    pub dead_rtos: u32,
    /// Never dead sooner than this after the oldest unproven send.
    pub dead_min: Duration,
    /// Always dead this long after the oldest unproven send.
    pub dead_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            initial_rto: Duration::from_millis(1000),
            min_rto: Duration::from_millis(100),
            max_rto: Duration::from_secs(4),
            suspect_rtos: 1,
            dead_rtos: 4,
            dead_min: Duration::from_millis(400),
            dead_max: Duration::from_millis(1000),
        }
    }
}

/// RFC 6298 smoothed RTT and variance, plus the minimum seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Option<Duration>,
    latest: Option<Duration>,
}

impl RttEstimator {
    /// Feeds one sample.
    pub fn update(&mut self, sample: Duration) {
        self.latest = Some(sample);
        self.min = Some(self.min.map_or(sample, |m| m.min(sample)));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// Smoothed RTT, if any sample was taken.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Smallest sample.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }

    /// Latest sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// Retransmission timeout: `srtt + 4·rttvar`, clamped.
    pub fn rto(&self, cfg: &HealthConfig) -> Duration {
        match self.srtt {
            None => cfg.initial_rto,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(cfg.min_rto, cfg.max_rto),
        }
    }
}

/// Exponentially weighted loss rate over delivered/lost packet verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossEstimator {
    rate: f64,
    delivered: u64,
    lost: u64,
}

impl LossEstimator {
    const WEIGHT: f64 = 1.0 / 32.0;

    /// A packet on this path arrived.
    pub fn delivered(&mut self) {
        self.delivered += 1;
        self.rate *= 1.0 - Self::WEIGHT;
    }

    /// A packet on this path was lost.
    pub fn lost(&mut self) {
        self.lost += 1;
        self.rate = self.rate * (1.0 - Self::WEIGHT) + Self::WEIGHT;
    }

    /// Smoothed loss rate in `[0, 1]`.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Totals: (delivered, lost).
    pub fn totals(&self) -> (u64, u64) {
        (self.delivered, self.lost)
    }
}

/// The facts known about one path.
#[derive(Debug, Clone, Default)]
pub struct PathHealth {
    rtt: RttEstimator,
    loss: LossEstimator,
    newest_proof_sent: Option<Instant>,
    newest_proof_at: Option<Instant>,
    last_recv: Option<Instant>,
    closed_at: Option<Instant>,
    /// Declared dead for want of proof of packets sent at or after this
    /// time: dead until a proof about a packet sent later arrives (so a path
    /// whose stranded packets were handed back does not look healthy again
    /// just because nothing is in flight on it any more).
    dead_since_sent: Option<Instant>,
}

impl PathHealth {
    /// A packet sent on this path at `sent_at` is proven delivered at `now`.
    /// `rtt_sample` is false when the packet also went on another path (the
    /// proof then says nothing about this path's delay).
    pub fn on_delivered(&mut self, now: Instant, sent_at: Instant, rtt_sample: bool) {
        if rtt_sample {
            self.rtt.update(now.saturating_duration_since(sent_at));
        }
        self.loss.delivered();
        if self.newest_proof_sent.is_none_or(|t| sent_at > t) {
            self.newest_proof_sent = Some(sent_at);
            self.newest_proof_at = Some(now);
        }
    }

    /// A packet sent on this path was lost.
    pub fn on_lost(&mut self) {
        self.loss.lost();
    }

    /// An authenticated packet arrived on this path.
    pub fn on_received(&mut self, now: Instant) {
        self.last_recv = Some(now);
    }

    /// The path was declared dead because nothing sent on it at or after
    /// `sent` was proven in time; it stays dead until a later packet is.
    pub fn on_declared_dead(&mut self, sent: Instant) {
        self.dead_since_sent = Some(self.dead_since_sent.map_or(sent, |t| t.max(sent)));
    }

    /// The transport closed this path (TCP reset, relay route gone).
    pub fn on_closed(&mut self, now: Instant) {
        self.closed_at.get_or_insert(now);
    }

    /// The transport re-opened this path: forget closure and the old proofs.
    pub fn on_reopened(&mut self) {
        self.closed_at = None;
        self.dead_since_sent = None;
        self.newest_proof_sent = None;
        self.newest_proof_at = None;
    }

    /// RTT estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// Loss estimator.
    pub fn loss(&self) -> &LossEstimator {
        &self.loss
    }

    /// Send time of the newest packet proven delivered on this path.
    pub fn newest_proof_sent(&self) -> Option<Instant> {
        self.newest_proof_sent
    }

    /// When the newest proof arrived.
    pub fn newest_proof_at(&self) -> Option<Instant> {
        self.newest_proof_at
    }

    /// Last authenticated receive.
    pub fn last_recv(&self) -> Option<Instant> {
        self.last_recv
    }

    /// Whether the transport closed it.
    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    /// How long the oldest unproven send may wait before the path is suspect,
    /// and before it is dead.
    pub fn timeouts(&self, cfg: &HealthConfig) -> (Duration, Duration) {
        let rto = self.rtt.rto(cfg);
        let dead = (rto * cfg.dead_rtos).clamp(cfg.dead_min, cfg.dead_max);
        let suspect = (rto * cfg.suspect_rtos).min(dead);
        (suspect, dead)
    }

    /// Health at `now`. `oldest_unproven` is the send time of the oldest
    /// packet still in flight on this path that was sent after the newest
    /// proof (the table tracks it); `None` if there is none.
    pub fn health(
        &self,
        now: Instant,
        oldest_unproven: Option<Instant>,
        cfg: &HealthConfig,
    ) -> Health {
        if self.closed_at.is_some() {
            return Health::Dead;
        }
        if let Some(d) = self.dead_since_sent {
            if self.newest_proof_sent.is_none_or(|p| p < d) {
                return Health::Dead;
            }
        }
        if let Some(t0) = oldest_unproven {
            let waited = now.saturating_duration_since(t0);
            let (suspect, dead) = self.timeouts(cfg);
            if waited >= dead {
                return Health::Dead;
            }
            if waited >= suspect {
                return Health::Suspect;
            }
        }
        if self.newest_proof_sent.is_some() {
            Health::Healthy
        } else {
            Health::Unproven
        }
    }

    /// When [`health`](Self::health) will next change on its own, given the
    /// same `oldest_unproven`: the caller's next timer for this path.
    pub fn next_change(
        &self,
        now: Instant,
        oldest_unproven: Option<Instant>,
        cfg: &HealthConfig,
    ) -> Option<Instant> {
        let t0 = oldest_unproven?;
        if self.closed_at.is_some() {
            return None;
        }
        let (suspect, dead) = self.timeouts(cfg);
        [t0 + suspect, t0 + dead].into_iter().find(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::test_util::ms;

    #[test]
    fn rtt_estimator_follows_rfc6298() {
        let mut r = RttEstimator::default();
        let cfg = HealthConfig::default();
        assert_eq!(r.rto(&cfg), cfg.initial_rto);
        r.update(ms(100));
        assert_eq!(r.srtt(), Some(ms(100)));
        assert_eq!(r.rto(&cfg), ms(300));
        r.update(ms(200));
        // rttvar = (50*3 + 100)/4 = 62.5; srtt = (700 + 200)/8 = 112.5
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(r.min(), Some(ms(100)));
        assert_eq!(r.latest(), Some(ms(200)));
        let mut tiny = RttEstimator::default();
        tiny.update(Duration::from_micros(50));
        assert_eq!(tiny.rto(&cfg), cfg.min_rto, "clamped to min_rto");
    }

    #[test]
    fn loss_estimator_moves_both_ways() {
        let mut l = LossEstimator::default();
        for _ in 0..100 {
            l.lost();
        }
        assert!(l.rate() > 0.9);
        for _ in 0..300 {
            l.delivered();
        }
        assert!(l.rate() < 0.01);
        assert_eq!(l.totals(), (300, 100));
    }

    #[test]
    fn unproven_then_healthy_then_suspect_then_dead() {
        let cfg = HealthConfig::default();
        let t = Instant::now();
        let mut h = PathHealth::default();
        assert_eq!(h.health(t, None, &cfg), Health::Unproven);
        h.on_delivered(t + ms(20), t, true);
        assert_eq!(h.health(t + ms(20), None, &cfg), Health::Healthy);
        // rto = max(20 + 4*10, 100) = 100 ms; dead = clamp(400, 400, 1000).
        let sent = t + ms(30);
        assert_eq!(h.health(t + ms(100), Some(sent), &cfg), Health::Healthy);
        assert_eq!(h.health(t + ms(130), Some(sent), &cfg), Health::Suspect);
        assert_eq!(h.health(t + ms(429), Some(sent), &cfg), Health::Suspect);
        assert_eq!(h.health(t + ms(430), Some(sent), &cfg), Health::Dead);
        assert_eq!(
            h.next_change(t + ms(31), Some(sent), &cfg),
            Some(t + ms(130))
        );
        assert_eq!(
            h.next_change(t + ms(200), Some(sent), &cfg),
            Some(t + ms(430))
        );
        assert_eq!(h.next_change(t + ms(500), Some(sent), &cfg), None);
    }

    #[test]
    fn a_stale_packet_cannot_keep_a_black_holed_path_alive() {
        let cfg = HealthConfig::default();
        let t = Instant::now();
        let mut h = PathHealth::default();
        h.on_delivered(t + ms(10), t, true);
        // The path black-holes at t+20: everything sent since is unproven.
        let first_unproven = t + ms(20);
        // Packets keep arriving on it (a relay releasing an old queue)...
        for i in 0..50 {
            h.on_received(t + ms(100 + i * 20));
        }
        // ...and even a late proof about a packet sent *before* the black
        // hole does not reset the clock for packets sent after it.
        h.on_delivered(t + ms(900), t + ms(15), false);
        assert_eq!(h.newest_proof_sent(), Some(t + ms(15)));
        assert_eq!(
            h.health(t + ms(1100), Some(first_unproven), &cfg),
            Health::Dead
        );
    }

    #[test]
    fn closure_is_dead_at_once_and_reopen_forgets() {
        let cfg = HealthConfig::default();
        let t = Instant::now();
        let mut h = PathHealth::default();
        h.on_delivered(t, t, true);
        h.on_closed(t);
        assert_eq!(h.health(t, None, &cfg), Health::Dead);
        h.on_reopened();
        assert_eq!(h.health(t, None, &cfg), Health::Unproven);
    }

    #[test]
    fn slow_paths_get_longer_but_bounded_timeouts() {
        let cfg = HealthConfig::default();
        let mut h = PathHealth::default();
        let t = Instant::now();
        h.on_delivered(t + ms(2000), t, true);
        let (suspect, dead) = h.timeouts(&cfg);
        assert_eq!(dead, cfg.dead_max);
        assert!(suspect <= dead);
    }
}
