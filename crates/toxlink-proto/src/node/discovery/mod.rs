//! Direct paths the peers find by themselves (issue #15; docs/DESIGN.md §6,
//! docs/PROTOCOL.md §12): the endpoint exchange, hole punching and roaming.
//!
//! * **Endpoints.** The owner tells the node its candidate UDP endpoints
//!   ([`Input::Endpoints`](super::io::Input::Endpoints): interface
//!   addresses, STUN-reflexive ones). Over every established session the
//!   node sends them (with the address it sees the peer send from) as a
//!   path control packet on up to [`LIST_ROUTES`] live paths (the primary
//!   may be the direct path that just failed), again whenever the list
//!   changes, re-sent with back-off until the peer's own list acknowledges
//!   that generation and at most [`MAX_LIST_SENDS`] times per generation (a
//!   c-toxcore peer drops it silently and never acknowledges). An endpoint
//!   the peer stops listing is left once nothing came from it for
//!   [`WITHDRAWN_QUIET`] (its NAT rebound).
//! * **Hole punching.** Each endpoint a peer advertises that no other peer
//!   owns becomes a *known* UDP route of that peer (its packets reach the
//!   session) but not a path of the table, and a *challenge* is sent to it
//!   on a schedule (every [`PUNCH_FIRST`] doubling to [`PUNCH_MAX`],
//!   [`MAX_PUNCHES`] times, then the route is dropped). Both sides do this,
//!   so both NATs see outbound packets. A challenge is answered on the path
//!   it came on; the answer proves the path both ways, makes it a path of
//!   the table (`PathTable::on_probe_echo`), and the scheduler may then move
//!   traffic onto it with its usual guarantees. An unproven candidate can
//!   never become the primary. A proven path that dies is punched again,
//!   every [`REPUNCH_MAX`] at most.
//! * **Roaming.** A data packet from an address no route names is tried
//!   against the established sessions ([`Session::authenticates`], no state
//!   changes), within a node-wide budget of [`ROAM_PER_SEC`] trial
//!   decryptions a second; the session it authenticates under gains the
//!   address as a route (authenticated, so it may take it from another
//!   peer), which is challenged at once like a new candidate. Once proven,
//!   the peer's other direct routes that carried nothing since it moved are
//!   left ([`Node::migrated`]): a receiver sends too little to find out
//!   by itself that its primary leads nowhere.
//!
//! Invariants: what a peer advertises never takes a route another peer
//! owns and never evicts a route (only roaming, proven by the session key,
//! does); challenges leave at most [`PUNCH_PER_SEC`] a second node-wide;
//! per peer at most [`MAX_CANDIDATES`] candidates, [`MAX_TOKENS`]
//! outstanding challenges and [`MAX_PENDING_RESPONSES`] queued answers; all
//! sends are bounded in count per candidate and per generation.

pub(super) mod state;

use super::routes::MAX_ROUTES_PER_PEER;
use super::*;
use crate::wire::path_control::{Endpoint, EndpointKind, PathControl, MAX_LEN};
use state::*;
pub(super) use state::{Discovery, LocalEndpoints};

impl<A: Addr> Node<A> {
    /// The owner's candidate endpoints changed (see [`Input::Endpoints`]):
    /// every peer is sent the new list.
    pub(super) fn set_endpoints(&mut self, now: Instant, endpoints: &[(EndpointKind, A)]) {
        let mut list: Vec<Endpoint> = Vec::new();
        // Local ones first: a same-LAN peer should find them even when the
        // list is cut.
        let mut sorted: Vec<(EndpointKind, A)> = endpoints.to_vec();
        sorted.sort_by_key(|(k, _)| *k);
        for (kind, a) in sorted {
            if matches!(kind, EndpointKind::Observed) {
                continue;
            }
            let e = Endpoint {
                kind,
                addr: a.to_socket(),
            };
            if list.len() < MAX_LOCAL && !list.iter().any(|x| x.addr == e.addr) {
                list.push(e);
            }
        }
        if list == self.local.list && self.local.generation != 0 {
            return;
        }
        self.local.list = list;
        self.local.generation = self.local.generation.wrapping_add(1).max(1);
        self.stats.endpoint_changes += 1;
        for p in self.peers.values_mut() {
            p.discovery.next_list = Some(now);
        }
        self.control_pending = true;
    }

    /// After an authenticated datagram from `from` for `peer`: the path
    /// control packets it carried, and the observed address.
    pub(super) fn after_receive(&mut self, now: Instant, peer: PublicKey, from: Route<A>) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Route::Udp(a) = from {
            p.discovery.observed = Some(a);
            if let Some(c) = p.discovery.candidates.iter_mut().find(|c| c.addr == a) {
                c.first_rx.get_or_insert(now);
            }
        }
        if p.discovery.sent.is_none() && p.session.is_established() {
            self.control_pending = true;
        }
        // Bounded: the session holds at most MAX_CONTROL_IN of them.
        let mut controls = Vec::new();
        while let Some(c) = p.session.poll_control() {
            controls.push(c);
        }
        for (path, data) in controls {
            self.on_control(now, peer, path, &data);
        }
    }

    fn on_control(&mut self, now: Instant, peer: PublicKey, path: PathId, data: &[u8]) {
        let Ok(pc) = PathControl::parse(data) else {
            self.stats.control_malformed += 1;
            return;
        };
        let from = self.book.udp_addr(path);
        match pc {
            PathControl::Endpoints {
                generation,
                acked,
                endpoints,
            } => {
                self.stats.endpoint_lists_received += 1;
                let mut fresh = Vec::new();
                let mut withdrawn = Vec::new();
                {
                    let Some(p) = self.peers.get_mut(&peer) else {
                        return;
                    };
                    let d = &mut p.discovery;
                    d.peer_acked = Some(acked);
                    let new_list = d.peer_gen != Some(generation);
                    if new_list {
                        d.peer_gen = Some(generation);
                        d.reply = true;
                        self.control_pending = true;
                        d.next_list = Some(d.last_list.map_or(now, |t| now.max(t + LIST_MIN_GAP)));
                    } else if d.sent.is_some_and(|(g, _)| g == acked) {
                        d.next_list = None;
                    }
                    for e in endpoints {
                        if matches!(e.kind, EndpointKind::Observed) {
                            continue;
                        }
                        if let Some(a) = A::from_socket(e.addr) {
                            fresh.push(a);
                        }
                    }
                    if new_list {
                        withdrawn = d
                            .advertised
                            .iter()
                            .copied()
                            .filter(|a| !fresh.contains(a))
                            .collect();
                        d.advertised = fresh.clone();
                    }
                }
                for a in withdrawn {
                    self.withdrawn(now, peer, a);
                }
                if self.cfg.discover_direct_paths {
                    for a in fresh {
                        self.add_candidate(now, peer, a);
                    }
                }
            }
            PathControl::Challenge(token) => {
                self.stats.challenges_received += 1;
                let (Some(a), Some(p)) = (from, self.peers.get_mut(&peer)) else {
                    return;
                };
                let q = &mut p.discovery.responses;
                if q.len() < MAX_PENDING_RESPONSES {
                    q.push_back((a, token));
                    self.control_pending = true;
                }
            }
            PathControl::Response(token) => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                let Some(i) = p.discovery.tokens.iter().position(|t| t.0 == token) else {
                    return;
                };
                let Some((_, addr, sent_at)) = p.discovery.tokens.remove(i) else {
                    return;
                };
                self.stats.responses_received += 1;
                let mut roamed_at = None;
                if let Some(c) = p.discovery.candidates.iter_mut().find(|c| c.addr == addr) {
                    c.proven = true;
                    c.repunch = false;
                    c.next = Some(now + PROOF_CHECK);
                    roamed_at = c.roamed_at.take();
                    if roamed_at.is_some() {
                        // Checked now, not again at the next tick.
                        c.first_rx = None;
                    }
                }
                if let Some(key) = self.book.known_key(&Route::Udp(addr)) {
                    let table = p.paths.table_mut();
                    table.add_path(key);
                    table.on_probe_echo(now, &key, sent_at);
                }
                if let Some(t) = roamed_at {
                    self.migrated(now, peer, addr, t);
                }
                self.path_changes(now, peer);
            }
        }
    }

    /// A peer advertised `addr`: a route (unless another peer owns it, or
    /// the route table is full) and a candidate to punch (once the owner
    /// unblocks it, if it is blocked).
    fn add_candidate(&mut self, now: Instant, peer: PublicKey, addr: A) {
        let route = Route::Udp(addr);
        match self.book.owner(&route) {
            Some(o) if o != peer => return,
            _ => {}
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if !p.routes.contains(&route) {
            if p.routes.len() >= MAX_ROUTES_PER_PEER {
                return;
            }
            // Known, but not a path of the table until a challenge proves
            // it: an unproven candidate must never become the primary.
            self.add_route_listed(peer, route, false, false);
        }
        let evicted = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.discovery.arm(now, addr, false));
        self.control_pending = true;
        self.drop_candidate_route(now, peer, evicted);
    }

    /// The peer moved to `to` at `since` (proven: at once after roaming,
    /// else [`PROOF_CHECK`] after its first packet on `to`): its other
    /// direct routes that have carried nothing from it since are left (a
    /// NAT that rebinds keeps the old mapping nowhere). A receiver sends
    /// too little lossless data to find out by itself that its primary
    /// leads nowhere now.
    fn migrated(&mut self, now: Instant, peer: PublicKey, to: A, since: Instant) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let stale: Vec<Route<A>> = p
            .routes
            .iter()
            .copied()
            .filter(|r| match r {
                Route::Udp(a) if *a != to => self
                    .book
                    .known_id(r)
                    .and_then(|id| p.session.last_authenticated(id))
                    .is_none_or(|t| t < since),
                _ => false,
            })
            .collect();
        for r in stale {
            self.stats.routes_left_after_roaming += 1;
            tracing::debug!(?peer, route = ?r, "left after the peer roamed");
            self.remove_route(now, peer, r);
            if let (Route::Udp(a), Some(p)) = (r, self.peers.get_mut(&peer)) {
                p.discovery.candidates.retain(|c| c.addr != a);
            }
        }
    }

    /// The peer no longer lists `a` (its NAT rebound, an interface went):
    /// the route is left if nothing came from it for [`WITHDRAWN_QUIET`]
    /// (a route still carrying its packets stays, whatever the list says).
    fn withdrawn(&mut self, now: Instant, peer: PublicKey, a: A) {
        let route = Route::Udp(a);
        if self.book.owner(&route) != Some(peer) {
            return;
        }
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let quiet = self
            .book
            .known_id(&route)
            .and_then(|id| p.session.last_authenticated(id))
            .is_none_or(|t| now.saturating_duration_since(t) >= WITHDRAWN_QUIET);
        if !quiet {
            return;
        }
        self.stats.routes_withdrawn += 1;
        tracing::debug!(?peer, ?route, "endpoint withdrawn by the peer");
        self.remove_route(now, peer, route);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.discovery.candidates.retain(|c| c.addr != a);
        }
    }

    /// The route of a candidate pushed out of `peer`'s list or given up, if
    /// it is still that peer's and never became a path of the table (a
    /// route the application gave, or one proven once, stays).
    fn drop_candidate_route(&mut self, now: Instant, peer: PublicKey, addr: Option<A>) {
        let Some(a) = addr else {
            return;
        };
        let route = Route::Udp(a);
        let listed = self.book.known_key(&route).is_some_and(|key| {
            self.peers
                .get(&peer)
                .is_some_and(|p| p.paths.table.path(&key).is_some())
        });
        if self.book.owner(&route) == Some(peer) && !listed {
            self.remove_route(now, peer, route);
        }
    }

    /// A data packet from `from`, which no route names: the peer whose
    /// session it authenticates under, within the roaming budget. That peer
    /// gains the route, and it is challenged.
    pub(super) fn roam(&mut self, now: Instant, from: A, buf: &[u8]) -> Option<PublicKey> {
        if !self.cfg.discover_direct_paths {
            return None;
        }
        let mut found = None;
        for k in &self.order {
            let Some(p) = self.peers.get(k) else {
                continue;
            };
            if !p.session.is_established() {
                continue;
            }
            if !self.roam_budget.take(now) {
                self.stats.roam_budget_exhausted += 1;
                return None;
            }
            self.stats.roam_trials += 1;
            if p.session.authenticates(buf) {
                found = Some(*k);
                break;
            }
        }
        let peer = found?;
        self.stats.roamed += 1;
        tracing::debug!(?peer, ?from, "peer roamed to a new address");
        let route = Route::Udp(from);
        // Proven by the session key: it may take the route from whoever
        // had it, and evict an old one; a path of the table once a
        // challenge proves it answers (a replayed packet from a spoofed
        // address must not divert our traffic).
        let listed = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.routes.contains(&route));
        if !listed {
            self.add_route_listed(peer, route, false, false);
        }
        let evicted = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.discovery.arm(now, from, true));
        self.control_pending = true;
        self.drop_candidate_route(now, peer, evicted);
        Some(peer)
    }

    /// The next path control datagram to send (an answer, then a due
    /// challenge), sealed into `buf`; due endpoint lists are queued on
    /// their sessions as lossy packets on the way. Cheap when nothing is
    /// due: the earliest deadline is kept between calls.
    pub(super) fn next_control(&mut self, now: Instant, buf: &mut [u8]) -> Option<(A, Transmit)> {
        if !self.cfg.discover_direct_paths
            || !self.control_pending && self.control_at.is_none_or(|t| t > now)
        {
            return None;
        }
        self.control_pending = false;
        let mut at: Option<Instant> = None;
        let mut pkt = [0u8; MAX_LEN];
        for i in 0..self.order.len() {
            let k = self.order[i];
            if let Some(x) = self.peer_control(now, k, buf, &mut pkt) {
                // More may be due: look again at the next call.
                self.control_pending = true;
                return Some(x);
            }
            if let Some(t) = self
                .peers
                .get(&k)
                .filter(|p| p.session.is_established())
                .and_then(|p| p.discovery.poll_timeout())
            {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        }
        self.control_at = at;
        None
    }

    /// One peer's share of [`next_control`](Self::next_control).
    fn peer_control(
        &mut self,
        now: Instant,
        k: PublicKey,
        buf: &mut [u8],
        pkt: &mut [u8; MAX_LEN],
    ) -> Option<(A, Transmit)> {
        let local = &self.local;
        let p = self.peers.get_mut(&k)?;
        if !p.session.is_established() {
            return None;
        }
        // The endpoint list, on up to LIST_ROUTES live paths.
        let d = &mut p.discovery;
        let due = match d.next_list {
            Some(t) => t <= now,
            None => d.sent.is_none(),
        };
        if due {
            let gen = local.generation;
            let want = d.reply
                || match d.sent {
                    None => true,
                    Some((g, n)) => g != gen || (d.peer_acked != Some(g) && n < MAX_LIST_SENDS),
                };
            d.next_list = None;
            if want {
                let msg = list_message(local, d);
                let d = &mut p.discovery;
                let sends = match d.sent {
                    Some((g, n)) if g == gen => n.saturating_add(1),
                    _ => 1,
                };
                d.sent = Some((gen, sends));
                d.reply = false;
                d.last_list = Some(now);
                if sends < MAX_LIST_SENDS && d.peer_acked != Some(gen) {
                    d.next_list = Some(now + LIST_RESEND * (1u32 << (sends - 1)));
                }
                if let Ok(n) = msg.encode(pkt) {
                    self.send_list(now, k, &pkt[..n]);
                }
            }
        }
        let p = self.peers.get_mut(&k)?;
        // The list on a direct path (sealed now, as it leaves).
        if let Some(to) = p.discovery.list_to.pop() {
            let n = list_message(&self.local, &p.discovery).encode(pkt).ok()?;
            let len = p.session.seal_lossy(now, &pkt[..n], buf)?;
            self.stats.endpoint_msgs_sent += 1;
            return Some((to, control_transmit(len)));
        }
        // An answer to a challenge, on the path it came on.
        if let Some((to, token)) = p.discovery.responses.pop_front() {
            let n = PathControl::Response(token).encode(pkt).ok()?;
            let len = p.session.seal_lossy(now, &pkt[..n], buf)?;
            self.stats.responses_sent += 1;
            return Some((to, control_transmit(len)));
        }
        // A due challenge.
        let mut give_up = Vec::new();
        let mut migrate: Vec<(A, Instant)> = Vec::new();
        let mut due_addr = None;
        let (book, table, blocked) = (&self.book, &p.paths.table, &self.blocked);
        let budget = &mut self.punch_budget;
        let stats = &mut self.stats;
        for c in p.discovery.candidates.iter_mut() {
            if blocked.contains(&c.addr) {
                // Not punched, and not counted, while the owner blocks it.
                if c.next.is_some_and(|t| t <= now) {
                    c.next = Some(now + PUNCH_MAX);
                }
                continue;
            }
            let h = book
                .known_key(&Route::Udp(c.addr))
                .and_then(|key| table.health(now, &key));
            if due_addr.is_some() || c.next.is_none_or(|t| t > now) {
                continue;
            }
            if c.proven {
                if h != Some(Health::Dead) {
                    c.next = Some(now + PROOF_CHECK);
                    // The peer has been sending on this proven path for a
                    // while: direct routes silent since are stale.
                    if let Some(t) = c.first_rx.take() {
                        migrate.push((c.addr, t));
                    }
                    continue;
                }
                // A proven path died (NAT rebinding, a firewall): punch it
                // again, often: it worked a moment ago.
                c.proven = false;
                c.tries = 0;
                c.repunch = true;
            }
            let (max_tries, max_gap) = if c.repunch {
                (MAX_REPUNCHES, REPUNCH_MAX)
            } else {
                (MAX_PUNCHES, PUNCH_MAX)
            };
            if c.tries >= max_tries {
                c.next = None;
                if h != Some(Health::Healthy) {
                    give_up.push(c.addr);
                }
                continue;
            }
            if !budget.take(now) {
                // Over the node's budget (a friend advertising address
                // after address): later, not counted.
                stats.punch_budget_exhausted += 1;
                c.next = Some(now + PUNCH_FIRST);
                continue;
            }
            c.tries += 1;
            let gap = PUNCH_FIRST
                .saturating_mul(1u32 << (c.tries - 1).min(15))
                .min(max_gap);
            c.next = Some(now + gap);
            due_addr = Some(c.addr);
        }
        for (a, since) in migrate {
            self.migrated(now, k, a, since);
        }
        for a in give_up {
            self.stats.candidates_given_up += 1;
            self.drop_candidate_route(now, k, Some(a));
            if let Some(p) = self.peers.get_mut(&k) {
                p.discovery.candidates.retain(|c| c.addr != a);
            }
        }
        let to = due_addr?;
        let p = self.peers.get_mut(&k)?;
        let mut token = [0u8; 8];
        self.rng.fill_bytes(&mut token);
        let n = PathControl::Challenge(token).encode(pkt).ok()?;
        let len = p.session.seal_lossy(now, &pkt[..n], buf)?;
        if p.discovery.tokens.len() >= MAX_TOKENS {
            p.discovery.tokens.pop_front();
        }
        p.discovery.tokens.push_back((token, to, now));
        self.stats.challenges_sent += 1;
        Some((to, control_transmit(len)))
    }

    /// Sends an endpoint list to `peer` on its primary path and on up to
    /// [`LIST_ROUTES`]` - 1` other live ones (relays first): a list must get
    /// through when the primary is the direct path that just failed (a NAT
    /// rebinding is what makes a new list).
    fn send_list(&mut self, now: Instant, peer: PublicKey, msg: &[u8]) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let mut targets: Vec<Route<A>> = Vec::new();
        let primary = p.paths.primary.and_then(|k| self.route_of(p, k));
        targets.extend(primary);
        let table = &p.paths.table;
        let mut others: Vec<(bool, Route<A>)> = table
            .paths()
            .filter(|e| !e.health().is_closed())
            .filter(|e| table.health(now, &e.key()) != Some(Health::Dead))
            .filter_map(|e| self.route_of(p, e.key()))
            .filter(|r| Some(*r) != primary)
            .map(|r| (matches!(r, Route::Udp(_)), r))
            .collect();
        others.sort_by_key(|(udp, _)| *udp);
        targets.extend(others.into_iter().map(|(_, r)| r));
        if targets.is_empty() {
            targets.extend(p.routes.get(p.current).copied());
        }
        targets.truncate(LIST_ROUTES);
        let mut buf = [0u8; MAX_PACKET_SIZE];
        for to in targets {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            match to {
                Route::Udp(a) => {
                    // Sealed when it leaves (peer_control): a packet of
                    // this session never waits in a queue the session
                    // could outlive.
                    let l = &mut p.discovery.list_to;
                    if !l.contains(&a) && l.len() < LIST_ROUTES {
                        l.push(a);
                    }
                }
                Route::Relay { relay, peer } => {
                    let Some(len) = p.session.seal_lossy(now, msg, &mut buf) else {
                        return;
                    };
                    self.stats.endpoint_msgs_sent += 1;
                    self.relay_send(relay, peer, &buf[..len]);
                }
            }
        }
    }

    /// The earliest discovery deadline (see
    /// [`next_control`](Self::next_control)).
    pub(super) fn discovery_timeout(&self) -> Option<Instant> {
        if self.control_pending {
            return self.last_now;
        }
        self.control_at
    }

    /// `peer`'s advertised candidates and whether each is proven.
    pub fn candidates(&self, peer: &PublicKey) -> Vec<(A, bool)> {
        self.peers
            .get(peer)
            .map(|p| p.discovery.candidates().collect())
            .unwrap_or_default()
    }
}

/// Our endpoint list for the peer of `d` (with the address we see it at).
fn list_message<A: Addr>(local: &LocalEndpoints, d: &Discovery<A>) -> PathControl {
    let mut endpoints = local.list.clone();
    if let Some(o) = d.observed {
        endpoints.push(Endpoint {
            kind: EndpointKind::Observed,
            addr: o.to_socket(),
        });
    }
    PathControl::Endpoints {
        generation: local.generation,
        acked: d.peer_gen.unwrap_or(0),
        endpoints,
    }
}

fn control_transmit(len: usize) -> Transmit {
    Transmit {
        len,
        kind: TransmitKind::Data(DataKind::Lossy),
    }
}
