//! One peer's multipath state: its routes, path table, scheduler, probes and
//! relay window, and where each of its transmits goes.

use super::*;

/// Probe interval of a path that is unproven, suspect, unmeasured, or a
/// standby that looks better than the primary.
pub(super) const PROBE_UNPROVEN: Duration = Duration::from_millis(200);
/// Probe interval of a dead (not closed) or standby path that does not
/// look better than the primary.
pub(super) const PROBE_STANDBY: Duration = Duration::from_secs(1);
/// Lossless packets in flight while the primary path is a relay: an AIMD
/// window on top of the session's congestion control, from
/// [`RELAY_CAP_MIN`] up to [`RELAY_CAP_MAX`]. A relay's queue towards one
/// client is shallow (ours holds 256 KiB) and drops silently when the client
/// reads slowly (c-toxcore drains its relay socket at a few hundred packets a
/// second), and the loss shows only when the peer's next request packet
/// arrives, up to a second later: an uncapped window overran it and the
/// resends kept it overrun until c-toxcore timed us out. The cap grows by a
/// quarter per two caps' worth of packets delivered on the relay path
/// without a loss while its RTT shows no queue, and halves on a loss there.
pub(super) const RELAY_CAP_MIN: u32 = 64;
/// Largest relay window (see [`RELAY_CAP_MIN`]).
pub(super) const RELAY_CAP_MAX: u32 = 4096;
/// How often a session without any route is looked at again (its timers
/// are due but nothing can be sent).
pub(super) const ROUTELESS_RETRY: Duration = Duration::from_millis(50);

pub(super) struct Peer<A> {
    pub(super) session: Session,
    pub(super) dht: PublicKey,
    pub(super) routes: Vec<Route<A>>,
    /// Index into `routes` of the handshake-phase route.
    pub(super) current: usize,
    /// We initiated (restart on timeout).
    pub(super) initiator: bool,
    /// Path table and scheduler.
    pub(super) paths: Paths,
    /// Endpoint exchange, hole punching (discovery.rs).
    pub(super) discovery: Discovery<A>,
}

/// Multipath state of one session.
pub(super) struct Paths {
    pub(super) table: PathTable,
    pub(super) sched: Scheduler,
    /// Last probe per path key.
    pub(super) probed: Vec<(PathKey, Instant)>,
    pub(super) primary: Option<PathKey>,
    /// The scheduler's choice for one instant: the runtime polls a whole
    /// batch of transmits with the same `now`, and recording a send does not
    /// change any path's health at that instant, so the choice is reused
    /// until `now` moves or the table changes otherwise.
    pub(super) cached: Option<(Instant, Choice)>,
    /// The window cap while on a relay (see [`RELAY_CAP_MIN`]).
    pub(super) relay_cap: u32,
    /// The relay path and its (delivered, lost) totals at the last cap
    /// change.
    pub(super) cap_seen: Option<(PathKey, u64, u64)>,
    /// The cap last given to the session.
    pub(super) cap_applied: Option<u32>,
    /// Relay paths without proof (suspect or dead, not closed) and since
    /// when: a relay whose link stays up but that delivers nothing for the
    /// peer is replaced after [`RELAY_DEAD_FOR`].
    pub(super) dead_relays: Vec<(PublicKey, Instant)>,
}

impl Paths {
    pub(super) fn new(cfg: &NodeConfig) -> Self {
        Paths {
            table: PathTable::new(cfg.health),
            sched: Scheduler::new(cfg.scheduler),
            probed: Vec::new(),
            primary: None,
            cached: None,
            relay_cap: RELAY_CAP_MIN,
            cap_seen: None,
            cap_applied: None,
            dead_relays: Vec::new(),
        }
    }

    /// Adjusts the relay window from the primary path's delivered and lost
    /// totals; returns the cap the session should have (None: not on a
    /// relay).
    pub(super) fn relay_window(&mut self) -> Option<u32> {
        let key = self.primary.filter(|k| !k.is_direct())?;
        let entry = self.table.path(&key);
        let (d, l) = entry.map_or((0, 0), |e| e.health().loss().totals());
        // Grow only while the relay path shows no queue: its latest RTT
        // sample within twice its minimum plus 10 ms. A relay in front of a
        // slow reader (c-toxcore) queues long before it drops, and its
        // drops are reported a second late.
        let no_queue = entry.is_some_and(|e| {
            let r = e.health().rtt();
            match (r.latest(), r.srtt(), r.min()) {
                (Some(x), Some(sr), Some(m)) => x.max(sr) <= m * 2 + Duration::from_millis(10),
                _ => false,
            }
        });
        match self.cap_seen {
            Some((k, d0, l0)) if k == key => {
                if l > l0 {
                    self.relay_cap = (self.relay_cap / 2).max(RELAY_CAP_MIN);
                    self.cap_seen = Some((key, d, l));
                } else if no_queue && d >= d0 + 2 * u64::from(self.relay_cap) {
                    self.relay_cap = (self.relay_cap + self.relay_cap / 4).min(RELAY_CAP_MAX);
                    self.cap_seen = Some((key, d, l));
                }
            }
            _ => self.cap_seen = Some((key, d, l)),
        }
        Some(self.relay_cap)
    }

    /// The table, for any change other than recording a send: forgets the
    /// cached choice.
    pub(super) fn table_mut(&mut self) -> &mut PathTable {
        self.cached = None;
        &mut self.table
    }

    /// The scheduler's choice at `now` (cached per instant).
    pub(super) fn choose(&mut self, now: Instant) -> Choice {
        match self.cached {
            Some((t, c)) if t == now => c,
            _ => {
                let c = self.sched.choose(&self.table, now);
                self.cached = Some((now, c));
                c
            }
        }
    }

    /// A path (other than a healthy primary) due for a probe at `now`.
    pub(super) fn probe_due(&self, now: Instant) -> Option<PathKey> {
        let primary_score = self
            .primary
            .and_then(|k| self.table.path(&k))
            .map(|p| self.sched.score(p));
        self.table.paths().map(|p| p.key()).find(|k| {
            let Some(entry) = self.table.path(k) else {
                return false;
            };
            if entry.health().is_closed() {
                return false;
            }
            let h = self.table.health(now, k).unwrap_or(Health::Dead);
            let every = match h {
                Health::Healthy if Some(*k) == self.primary => return false,
                // Proven (by reverse evidence) but not measured yet, or
                // looking better than the primary but not by the switching
                // margin yet: measure it more often.
                Health::Healthy
                    if entry.health().rtt().srtt().is_none()
                        || primary_score.is_some_and(|s| self.sched.score(entry) < s) =>
                {
                    PROBE_UNPROVEN
                }
                Health::Unproven | Health::Suspect => PROBE_UNPROVEN,
                Health::Healthy | Health::Dead => PROBE_STANDBY,
            };
            self.probed
                .iter()
                .find(|(pk, _)| pk == k)
                .is_none_or(|(_, t)| now.saturating_duration_since(*t) >= every)
        })
    }

    pub(super) fn probed_at(&mut self, key: PathKey, now: Instant) {
        if let Some(e) = self.probed.iter_mut().find(|(k, _)| *k == key) {
            e.1 = now;
        } else {
            self.probed.push((key, now));
        }
    }
}

impl<A: Addr> Node<A> {
    /// Applies path health changes of `peer`: stranded packets are resent at
    /// once, every change becomes a [`PathEvent`].
    pub(super) fn path_changes(&mut self, now: Instant, peer: PublicKey) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let changes = p.paths.table_mut().poll_changes(now);
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            if !c.resend.is_empty() {
                p.session.mark_lost(&c.resend);
            }
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let mut out = Vec::with_capacity(changes.len());
        let mut doubted = Vec::new();
        let mut dead = Vec::new();
        for c in changes {
            let Some(addr) = self.route_of(p, c.key) else {
                continue;
            };
            let closed = p
                .paths
                .table
                .path(&c.key)
                .is_some_and(|e| e.health().is_closed());
            if let Route::Relay { relay, .. } = addr {
                // A relay path that stopped delivering: make its link prove
                // it is alive (a NAT or firewall may have cut it silently),
                // and time how long it goes without proof.
                let no_proof = matches!(c.new, Health::Suspect | Health::Dead);
                if no_proof {
                    doubted.push(relay);
                }
                dead.push((relay, no_proof && !closed));
            }
            let reason = match c.new {
                Health::Dead if closed => PathReason::Closed,
                Health::Dead | Health::Suspect => PathReason::NoProof,
                Health::Healthy | Health::Unproven => PathReason::Proven,
            };
            out.push(PathEvent {
                peer,
                addr,
                at: now,
                kind: PathEventKind::Health {
                    old: c.old,
                    new: c.new,
                    reason,
                    resent: c.resend.len(),
                },
            });
        }
        for e in out {
            self.push_path_event(e);
        }
        for relay in doubted {
            self.relays.verify(now, &relay);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            let d = &mut p.paths.dead_relays;
            for (relay, is_dead) in dead {
                let known = d.iter().position(|(r, _)| *r == relay);
                match (is_dead, known) {
                    (true, None) => d.push((relay, now)),
                    (false, Some(i)) => {
                        d.swap_remove(i);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Where one transmit of `peer` goes: the scheduler's primary (and a copy
    /// on its secondary) for data, a probe path alone for some new lossless
    /// packets, the handshake-phase route otherwise. Records lossless
    /// copies in the path table.
    pub(super) fn schedule(
        &mut self,
        now: Instant,
        peer: PublicKey,
        fallback: Route<A>,
        t: Transmit,
    ) -> (Route<A>, Option<Route<A>>) {
        let TransmitKind::Data(kind) = t.kind else {
            return (fallback, None);
        };
        let last_key = self.book.known_key(&fallback);
        let Some(p) = self.peers.get_mut(&peer) else {
            return (fallback, None);
        };
        let choice = p.paths.choose(now);
        let switched = choice.primary.filter(|k| Some(*k) != p.paths.primary);
        let old_primary = p.paths.primary;
        p.paths.primary = choice.primary;
        if switched.is_some() {
            let cap = p.paths.relay_window();
            if cap != p.paths.cap_applied {
                p.paths.cap_applied = cap;
                p.session.set_inflight_cap(cap);
            }
        }
        let (first, second) = match kind {
            DataKind::Lossless {
                number,
                retransmission,
            } => {
                let probe = if retransmission {
                    None
                } else {
                    p.paths.probe_due(now)
                };
                let (first, second) = match probe {
                    Some(k) => {
                        p.paths.probed_at(k, now);
                        self.stats.probes_sent += 1;
                        (Some(k), None)
                    }
                    None => (choice.primary, choice.secondary),
                };
                for k in first.iter().chain(second.iter()) {
                    p.paths.table.on_sent(now, k, number, t.len);
                }
                (first, second)
            }
            // Acknowledgements (request packets) and KILL also go back the
            // way the peer's last authenticated packet came, when that is
            // not the primary: a path that died in our direction only is
            // noticed through lossless traffic, and a side that sends
            // little of it (a receiver) would otherwise acknowledge into
            // the void while the peer's data reaches it on another path.
            DataKind::Request | DataKind::Kill => (
                choice.primary,
                choice
                    .secondary
                    .or(last_key.filter(|k| Some(*k) != choice.primary)),
            ),
            DataKind::Lossy => (choice.primary, None),
        };
        let Some(p) = self.peers.get(&peer) else {
            return (fallback, None);
        };
        let to = first.and_then(|k| self.route_of(p, k)).unwrap_or(fallback);
        let second = second
            .and_then(|k| self.route_of(p, k))
            .filter(|a| *a != to);
        if let DataKind::Lossless { number, .. } = kind {
            // A packet is judged lost by the evidence of the path it went on
            // only: one overtaken by a later packet on a faster path (a UDP
            // path, a probe on another relay) is merely queued (a relay in
            // front of a slow reader queues for seconds).
            if let (Some(id), Some(p)) = (self.book.known_id(&to), self.peers.get_mut(&peer)) {
                p.session.on_sent(number, id);
            }
        }
        let Some(p) = self.peers.get(&peer) else {
            return (fallback, None);
        };
        if second.is_some() {
            self.stats.copies_sent += 1;
            self.stats.copy_bytes += t.len as u64;
        }
        if let Some(k) = switched {
            let from = old_primary.and_then(|k| self.route_of(p, k));
            if let Some(addr) = self.route_of(p, k) {
                self.push_path_event(PathEvent {
                    peer,
                    addr,
                    at: now,
                    kind: PathEventKind::Primary { from },
                });
            }
        }
        (to, second)
    }

    /// The next datagram of any session (see [`Node::poll_transmit`]).
    pub(super) fn next_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(A, Transmit)> {
        if buf.len() < MAX_PACKET_SIZE {
            return None;
        }
        self.last_now = Some(now);
        if let Some((to, t, data)) = self.copy.take() {
            buf[..t.len].copy_from_slice(&data[..t.len]);
            return Some((to, t));
        }
        while let Some((to, r)) = self.responses.pop_front() {
            let t = Transmit {
                len: COOKIE_RESPONSE_SIZE,
                kind: TransmitKind::CookieResponse,
            };
            match to {
                Route::Udp(a) => {
                    buf[..COOKIE_RESPONSE_SIZE].copy_from_slice(&r);
                    return Some((a, t));
                }
                Route::Relay { relay, peer } => {
                    self.relay_send(relay, peer, &r);
                }
            }
        }
        if let Some(x) = self.next_control(now, buf) {
            return Some(x);
        }
        // Each round either returns a UDP datagram or hands one packet to a
        // relay; bounded so one call cannot spin.
        for _ in 0..4096 {
            let n = self.order.len();
            let mut sent = false;
            for k in 0..n {
                let idx = (self.rr + k) % n;
                let key = self.order[idx];
                let Some(p) = self.peers.get_mut(&key) else {
                    continue;
                };
                let Some(&fallback) = p.routes.get(p.current) else {
                    continue;
                };
                let Some(t) = p.session.poll_transmit(now, buf) else {
                    continue;
                };
                self.rr = (idx + 1) % n.max(1);
                sent = true;
                let (to, second) = self.schedule(now, key, fallback, t);
                if matches!(
                    t.kind,
                    TransmitKind::CookieRequest | TransmitKind::Handshake
                ) {
                    self.handshake_on_relays(key, to, &buf[..t.len]);
                }
                let mut udp_second = None;
                match second {
                    Some(Route::Relay { relay, peer }) => {
                        self.relay_send(relay, peer, &buf[..t.len]);
                    }
                    Some(Route::Udp(a)) => udp_second = Some(a),
                    None => {}
                }
                match to {
                    Route::Udp(a) => {
                        if let Some(s) = udp_second {
                            let mut data = Box::new([0u8; MAX_PACKET_SIZE]);
                            data[..t.len].copy_from_slice(&buf[..t.len]);
                            self.copy = Some((s, t, data));
                        }
                        return Some((a, t));
                    }
                    Route::Relay { relay, peer } => {
                        self.relay_send(relay, peer, &buf[..t.len]);
                        if let Some(s) = udp_second {
                            return Some((s, t));
                        }
                    }
                }
                break;
            }
            if !sent {
                return None;
            }
        }
        None
    }

    /// Cookie requests and handshakes also go through every relay of the
    /// peer other than `to` (as OOB until the peer routes to us, §3, §6).
    pub(super) fn handshake_on_relays(&mut self, peer: PublicKey, to: Route<A>, pkt: &[u8]) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let relays: Vec<Route<A>> = p
            .routes
            .iter()
            .copied()
            .filter(|r| *r != to && matches!(r, Route::Relay { .. }))
            .collect();
        for r in relays {
            if let Route::Relay { relay, peer } = r {
                self.relay_send(relay, peer, pkt);
            }
        }
    }
}
