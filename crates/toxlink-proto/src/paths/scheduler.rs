//! Which path(s) carry the next packet (docs/DESIGN.md §3, "Scheduler").
//!
//! * The primary is the best usable path: a healthy direct UDP path beats
//!   every relay; otherwise the path with the lowest score, where the score is
//!   the smoothed RTT inflated by the loss rate (an unmeasured path counts as
//!   500 ms, c-toxcore's own guess for relays).
//! * A secondary path carries a copy of every packet while the primary is
//!   not yet proven, is suspect, or has just changed (for one redundancy
//!   window): the receiver drops duplicates, and a switch can then never
//!   lose the packets that were on their way.
//! * Hysteresis: leaving a working primary for a better one needs the other
//!   to be better by a margin for a dwell time, except that a proven direct
//!   UDP path is taken at once and a dead or suspect primary is left at once.
//!
//! The scheduler is a pure function of the table plus the little state it
//! keeps for hysteresis; it never sends anything itself.

use super::health::Health;
use super::table::{PathEntry, PathTable};
use super::PathKey;
use std::time::{Duration, Instant};

/// Scheduler parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Send on two paths for this long after the primary changes.
    pub redundancy_window: Duration,
    /// A challenger must score this much better (fraction) to take over.
    pub hysteresis: f64,
    /// ...for at least this long.
    pub dwell: Duration,
    /// Score of a path without an RTT sample.
    pub unmeasured_rtt: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            redundancy_window: Duration::from_millis(500),
            hysteresis: 0.3,
            dwell: Duration::from_millis(300),
            unmeasured_rtt: Duration::from_millis(500),
        }
    }
}

/// Where the next packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Choice {
    /// The main path (None: no path at all).
    pub primary: Option<PathKey>,
    /// A second path that carries a copy, if redundancy is on.
    pub secondary: Option<PathKey>,
}

impl Choice {
    /// Paths to send on, primary first.
    pub fn iter(&self) -> impl Iterator<Item = PathKey> {
        self.primary.into_iter().chain(self.secondary)
    }
}

/// A primary-path switch, for events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// Previous primary.
    pub from: Option<PathKey>,
    /// New primary.
    pub to: PathKey,
    /// When.
    pub at: Instant,
}

/// The per-connection scheduler state.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    primary: Option<PathKey>,
    switched_at: Option<Instant>,
    challenger: Option<(PathKey, Instant)>,
    switches: Vec<Switch>,
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Unproven => 1,
        Health::Suspect => 2,
        Health::Dead => 3,
    }
}

impl Scheduler {
    /// A scheduler with these parameters.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Scheduler {
            cfg,
            ..Default::default()
        }
    }

    /// Score of a path: lower is better.
    pub fn score(&self, p: &PathEntry) -> f64 {
        let rtt = p
            .health()
            .rtt()
            .srtt()
            .unwrap_or(self.cfg.unmeasured_rtt)
            .as_secs_f64();
        rtt * (1.0 + 10.0 * p.health().loss().rate())
    }

    /// Orders candidates: health class, then proven UDP first, then score.
    fn better(&self, a: (&PathEntry, Health), b: (&PathEntry, Health)) -> bool {
        let (ra, rb) = (rank(a.1), rank(b.1));
        if ra != rb {
            return ra < rb;
        }
        let (ua, ub) = (
            a.0.key().is_direct() && a.1 == Health::Healthy,
            b.0.key().is_direct() && b.1 == Health::Healthy,
        );
        if ua != ub {
            return ua;
        }
        self.score(a.0) < self.score(b.0)
    }

    fn best(
        &self,
        table: &PathTable,
        now: Instant,
        except: Option<PathKey>,
    ) -> Option<(PathKey, Health)> {
        let mut best: Option<(&PathEntry, Health)> = None;
        for p in table.paths() {
            if Some(p.key()) == except {
                continue;
            }
            let h = table.health(now, &p.key()).unwrap_or(Health::Dead);
            if best.is_none_or(|b| self.better((p, h), b)) {
                best = Some((p, h));
            }
        }
        best.map(|(p, h)| (p.key(), h))
    }

    /// The current primary.
    pub fn primary(&self) -> Option<PathKey> {
        self.primary
    }

    /// Every primary switch so far.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }

    fn switch(&mut self, now: Instant, to: PathKey) {
        self.switches.push(Switch {
            from: self.primary,
            to,
            at: now,
        });
        self.primary = Some(to);
        self.switched_at = Some(now);
        self.challenger = None;
    }

    /// Chooses the path(s) for packets sent at `now`, updating the primary.
    pub fn choose(&mut self, table: &PathTable, now: Instant) -> Choice {
        let Some((best, best_h)) = self.best(table, now, None) else {
            self.primary = None;
            return Choice::default();
        };
        let current = self
            .primary
            .and_then(|k| table.path(&k).map(|p| (p, table.health(now, &k))));
        match current {
            None => self.switch(now, best),
            Some((_, Some(h))) if h == Health::Dead || h == Health::Suspect => {
                if Some(best) != self.primary && rank(best_h) < rank(h) {
                    self.switch(now, best);
                }
            }
            Some((cur, h)) => {
                let h = h.unwrap_or(Health::Dead);
                if best != cur.key() {
                    let best_entry = table.path(&best);
                    let udp_upgrade =
                        best.is_direct() && best_h == Health::Healthy && !cur.key().is_direct();
                    let clearly_better = best_entry.is_some_and(|b| {
                        rank(best_h) < rank(h)
                            || self.score(b) < self.score(cur) * (1.0 - self.cfg.hysteresis)
                    });
                    if udp_upgrade {
                        self.switch(now, best);
                    } else if clearly_better {
                        match self.challenger {
                            Some((k, since)) if k == best => {
                                if now.saturating_duration_since(since) >= self.cfg.dwell {
                                    self.switch(now, best);
                                }
                            }
                            _ => self.challenger = Some((best, now)),
                        }
                    } else {
                        self.challenger = None;
                    }
                } else {
                    self.challenger = None;
                }
            }
        }
        let primary = self.primary;
        let primary_h = primary.and_then(|k| table.health(now, &k));
        let recently_switched = self
            .switched_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.redundancy_window);
        let redundant = recently_switched || primary_h != Some(Health::Healthy);
        let secondary = if redundant {
            self.best(table, now, primary)
                .filter(|(_, h)| *h != Health::Dead)
                .map(|(k, _)| k)
        } else {
            None
        };
        Choice { primary, secondary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::health::HealthConfig;
    use crate::paths::test_util::{ms, relay, table_with, udp};

    /// Proves `path` with an RTT of `rtt` using packet `n`.
    fn prove(tab: &mut PathTable, t: Instant, path: PathKey, n: u32, rtt: u64) {
        tab.on_sent(t, &path, n, 100);
        tab.on_acked(t + ms(rtt), n);
    }

    /// Relays 1, 2, .. proven at `t` with the RTTs `rtts` (packets 0, 1, ..).
    fn proven_relays(t: Instant, rtts: &[u64]) -> PathTable {
        let keys: Vec<PathKey> = (1..=rtts.len())
            .map(|b| relay(u8::try_from(b).expect("a few relays")))
            .collect();
        let mut tab = table_with(&keys);
        for (n, (&path, &rtt)) in (0u32..).zip(keys.iter().zip(rtts)) {
            prove(&mut tab, t, path, n, rtt);
        }
        tab
    }

    #[test]
    fn no_paths_no_choice() {
        let mut s = Scheduler::default();
        let tab = PathTable::new(HealthConfig::default());
        assert_eq!(s.choose(&tab, Instant::now()), Choice::default());
    }

    #[test]
    fn unproven_primary_sends_on_two_paths() {
        let t = Instant::now();
        let tab = table_with(&[relay(1), relay(2)]);
        let mut s = Scheduler::default();
        let c = s.choose(&tab, t);
        assert!(c.primary.is_some() && c.secondary.is_some());
        assert_ne!(c.primary, c.secondary);
    }

    #[test]
    fn lowest_rtt_relay_wins_and_redundancy_ends_after_the_window() {
        let t = Instant::now();
        let tab = proven_relays(t, &[80, 20]);
        let mut s = Scheduler::default();
        let now = t + ms(100);
        let c = s.choose(&tab, now);
        assert_eq!(c.primary, Some(relay(2)));
        assert_eq!(c.secondary, Some(relay(1)), "just switched: redundant");
        let c = s.choose(&tab, now + ms(600));
        assert_eq!(
            c,
            Choice {
                primary: Some(relay(2)),
                secondary: None
            }
        );
    }

    #[test]
    fn proven_udp_beats_a_faster_relay_at_once() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1)]);
        prove(&mut tab, t, relay(1), 0, 5);
        let mut s = Scheduler::default();
        assert_eq!(s.choose(&tab, t + ms(10)).primary, Some(relay(1)));
        tab.add_path(udp());
        // Unproven UDP does not take over.
        assert_eq!(s.choose(&tab, t + ms(20)).primary, Some(relay(1)));
        prove(&mut tab, t + ms(20), udp(), 1, 30);
        let c = s.choose(&tab, t + ms(50));
        assert_eq!(c.primary, Some(udp()));
        assert_eq!(c.secondary, Some(relay(1)));
        assert_eq!(s.switches().len(), 2);
    }

    #[test]
    fn hysteresis_needs_margin_and_dwell() {
        let t = Instant::now();
        let mut tab = table_with(&[relay(1), relay(2)]);
        prove(&mut tab, t, relay(1), 0, 50);
        let mut s = Scheduler::default();
        assert_eq!(s.choose(&tab, t + ms(60)).primary, Some(relay(1)));
        // Relay 2 is a bit better (40 vs 50 ms): not enough margin.
        prove(&mut tab, t + ms(60), relay(2), 1, 40);
        for i in 0..10 {
            assert_eq!(
                s.choose(&tab, t + ms(100 + i * 100)).primary,
                Some(relay(1))
            );
        }
        // Much better (5 ms samples pull its srtt down): switches only after
        // the dwell time.
        for n in 2..40 {
            prove(&mut tab, t + ms(1100), relay(2), n, 5);
        }
        let first = t + ms(1200);
        assert_eq!(s.choose(&tab, first).primary, Some(relay(1)));
        assert_eq!(s.choose(&tab, first + ms(299)).primary, Some(relay(1)));
        assert_eq!(s.choose(&tab, first + ms(300)).primary, Some(relay(2)));
    }

    #[test]
    fn a_dead_primary_is_left_at_once() {
        let t = Instant::now();
        let mut tab = proven_relays(t, &[5, 50]);
        let mut s = Scheduler::default();
        assert_eq!(s.choose(&tab, t + ms(100)).primary, Some(relay(1)));
        tab.on_closed(t + ms(200), &relay(1));
        let c = s.choose(&tab, t + ms(200));
        assert_eq!(c.primary, Some(relay(2)));
        assert_eq!(c.secondary, None, "the only other path is dead");
    }

    #[test]
    fn a_suspect_primary_gets_a_copy_on_the_next_best() {
        let t = Instant::now();
        let mut tab = proven_relays(t, &[5, 50]);
        let mut s = Scheduler::default();
        s.choose(&tab, t + ms(100));
        // Relay 1 stops delivering: overdue by > 1 RTO → suspect.
        tab.on_sent(t + ms(1000), &relay(1), 2, 100);
        let c = s.choose(&tab, t + ms(1150));
        assert_eq!(c.primary, Some(relay(2)), "healthy beats suspect");
        assert_eq!(c.secondary, Some(relay(1)));
    }
}
