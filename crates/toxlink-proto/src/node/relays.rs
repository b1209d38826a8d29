//! Relay orchestration: the relay links shared by every peer, the pool that
//! picks relays per peer, blame for tampering and the self-prober, and the
//! glue that turns their decisions into routes and paths.

use super::*;

/// A relay path that has been without proof (suspect, then dead) this long
/// while its relay link is up (the relay answers PINGs but delivers nothing
/// for the peer) loses the relay for that peer, replaced by a spare.
pub(super) const RELAY_DEAD_FOR: Duration = Duration::from_millis(1500);
/// How often relay RTTs are compared to demote slow relays.
pub(super) const SLOW_CHECK: Duration = Duration::from_millis(250);
/// How long the relay routes of a departed peer stay tied (see
/// `forget_peer_routes`).
pub(super) const UNTIE_GRACE: Duration = Duration::from_secs(1);
/// Departed routes waiting to be untied at most (beyond, untied at once).
pub(super) const MAX_PENDING_UNTIE: usize = 4096;
/// Relay events handled per input before the rest waits for the next call
/// (bounds the work of one call).
pub(super) const RELAY_EVENTS_PER_CALL: usize = 8192;

/// Drains a bounded number of events of a relay set.
fn drain_set(set: &mut RelaySet) -> Vec<RelaySetEvent> {
    std::iter::from_fn(|| set.poll_event())
        .take(RELAY_EVENTS_PER_CALL)
        .collect()
}

impl<A: Addr> Node<A> {
    /// A packet of `peer` through `relay` failed authentication (§6: dropped
    /// silently; docs/DESIGN.md §3: counted against the relay for that peer).
    pub(super) fn on_relay_auth_failure(
        &mut self,
        now: Instant,
        relay: PublicKey,
        peer: PublicKey,
        route: Route<A>,
    ) {
        self.stats.relay_auth_failures += 1;
        let verdicts = self.blame.on_auth_failure(now, relay, peer);
        let failures = self.blame.failures(&relay, &peer);
        self.push_path_event(PathEvent {
            peer,
            addr: route,
            at: now,
            kind: PathEventKind::AuthFailure { failures },
        });
        self.apply_verdicts(now, verdicts);
    }

    pub(super) fn apply_verdicts(
        &mut self,
        now: Instant,
        verdicts: impl IntoIterator<Item = Verdict>,
    ) {
        for v in verdicts {
            match v {
                Verdict::Keep => {}
                Verdict::DropForPeer { relay, peer } => {
                    tracing::info!(
                        ?relay,
                        ?peer,
                        "relay tampered with a peer's packets: dropped for that peer"
                    );
                    let evs = self
                        .pool
                        .relay_lost(now, Some(peer), relay, LossReason::Tampering);
                    self.apply_pool(now, evs);
                }
                Verdict::SelfProbe { relay } => self.start_self_probe(now, relay),
                Verdict::Disconnect { relay, reason } => self.disconnect_relay(now, relay, reason),
            }
        }
    }

    /// Self-probes `relay` at our own address for it, or where our link to
    /// it is up — never at an address only a friend named.
    pub(super) fn start_self_probe(&mut self, now: Instant, relay: PublicKey) {
        let Some(addr) = self.pool.probe_addr(&relay) else {
            tracing::debug!(?relay, "no address of our own to self-probe");
            self.blame.probe_not_started(&relay);
            return;
        };
        if !self.relays.relays().any(|r| *r == relay) {
            self.relays.add_relay(now, relay, addr);
        }
        if self.prober.start(now, relay, addr, &mut self.relays) {
            self.stats.self_probes += 1;
            self.push_relay_event(RelayEvent::ProbeStarted { relay });
        } else {
            self.blame.probe_not_started(&relay);
        }
    }

    pub(super) fn disconnect_relay(
        &mut self,
        now: Instant,
        relay: PublicKey,
        reason: DisconnectReason,
    ) {
        tracing::warn!(?relay, ?reason, "relay disconnected for everyone");
        let evs = self
            .pool
            .relay_lost(now, None, relay, LossReason::Disconnected);
        self.apply_pool(now, evs);
        self.relays.remove_relay(&relay);
        self.push_relay_event(RelayEvent::Disconnected { relay, reason });
    }

    /// Carries out what the relay pool decided.
    pub(super) fn apply_pool(&mut self, now: Instant, evs: Vec<PoolEvent>) {
        for ev in evs {
            match ev {
                PoolEvent::Use { peer, relay } => {
                    let Some(dht) = self.peers.get(&peer).map(|p| p.dht) else {
                        continue;
                    };
                    // Adds the link, or sets the address its next attempt
                    // dials (the pool's: ours, or the friend's whose set
                    // this is, never moved while the link is open).
                    self.relays.add_relay(now, relay.public_key, relay.addr);
                    if let Err(e) = self.relays.tie(dht, &relay.public_key) {
                        tracing::debug!(relay = ?relay.public_key, error = ?e, "cannot route to the peer yet");
                    }
                    let route = Route::Relay {
                        relay: relay.public_key,
                        peer: dht,
                    };
                    self.add_route(peer, route, false);
                    self.push_path_event(PathEvent {
                        peer,
                        addr: route,
                        at: now,
                        kind: PathEventKind::RelayAdded,
                    });
                }
                PoolEvent::Drop {
                    peer,
                    relay,
                    reason,
                } => {
                    self.stats.relays_dropped += 1;
                    let Some(dht) = self.peers.get(&peer).map(|p| p.dht) else {
                        continue;
                    };
                    self.relays.untie(&dht, &relay);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.paths.dead_relays.retain(|(r, _)| *r != relay);
                    }
                    let route = Route::Relay { relay, peer: dht };
                    self.remove_route(now, peer, route);
                    self.push_path_event(PathEvent {
                        peer,
                        addr: route,
                        at: now,
                        kind: PathEventKind::RelayDropped { reason },
                    });
                }
                PoolEvent::Relink { relay } => {
                    if self.relays.relays().any(|r| *r == relay.public_key) {
                        self.relays.add_relay(now, relay.public_key, relay.addr);
                    }
                }
                PoolEvent::Close { relay } => {
                    // A running self-probe keeps the link until it ends
                    // (closed then, see `pump_relays`).
                    if !self.prober.is_running(&relay) {
                        self.relays.remove_relay(&relay);
                    }
                }
            }
        }
    }

    /// Learns a relay of our own (configuration, the application): peers
    /// with fewer relays than the target start using it. This address is
    /// the one we reach the relay at; only our own word changes it (a
    /// friend's goes through [`Node::add_friend_relay`]).
    pub fn add_relay(&mut self, now: Instant, relay: PublicKey, addr: SocketAddr) {
        self.last_now = Some(now);
        let info = RelayInfo {
            addr,
            public_key: relay,
        };
        match self.pool.learn(now, info, Source::Own) {
            Ok(evs) => self.apply_pool(now, evs),
            Err(e) => {
                tracing::debug!(?relay, %addr, error = %e, "relay not learnt");
                return;
            }
        }
        // Connected at once, so that peers on it can reach us (OOB).
        if !self.relays.relays().any(|r| *r == relay) {
            self.relays.add_relay(now, relay, addr);
        }
        for i in 0..self.order.len() {
            let peer = self.order[i];
            let evs = self.pool.refill(now, peer);
            self.apply_pool(now, evs);
        }
    }

    /// Learns a relay `friend` (its real key) named in SHARE_RELAYS: kept as
    /// that friend's word, used for that friend's connection only (until our
    /// own link to it has worked for a while), never changing how we reach a
    /// relay we know otherwise nor where a self-probe goes (see
    /// [`RelayPool`]). Only a friend that is online should be heard.
    pub fn add_friend_relay(
        &mut self,
        now: Instant,
        friend: PublicKey,
        relay: PublicKey,
        addr: SocketAddr,
    ) -> Result<(), LearnError> {
        self.last_now = Some(now);
        let info = RelayInfo {
            addr,
            public_key: relay,
        };
        let evs = self.pool.learn(now, info, Source::Friend(friend))?;
        self.apply_pool(now, evs);
        let evs = self.pool.refill(now, friend);
        self.apply_pool(now, evs);
        Ok(())
    }

    /// The friend layer's SHARE_RELAYS from `friend` (its real key): each
    /// TCP entry is learnt as that friend's word ([`Node::add_friend_relay`]);
    /// UDP entries and refused ones are skipped (refusals are logged).
    /// Returns how many were kept. Only a friend that is online should be
    /// heard (the friend layer gives the list only then).
    pub fn learn_shared_relays(
        &mut self,
        now: Instant,
        friend: PublicKey,
        list: &[crate::wire::packed::PackedNode],
    ) -> usize {
        use crate::wire::packed::Transport;
        let mut kept = 0;
        for n in list {
            if n.ip_port.transport != Transport::Tcp {
                continue;
            }
            match self.add_friend_relay(now, friend, n.public_key, n.ip_port.addr) {
                Ok(()) => kept += 1,
                Err(e) => {
                    tracing::debug!(?friend, relay = ?n.public_key, error = %e, "shared relay not kept");
                }
            }
        }
        kept
    }

    /// The relays we know on our own (configuration, or our own link that
    /// worked), as the friend layer's SHARE_RELAYS entries: a friend's word
    /// is never passed on.
    pub fn shareable_relays(&self) -> Vec<crate::wire::packed::PackedNode> {
        use crate::wire::packed::{PackedIpPort, PackedNode, Transport};
        self.pool
            .own_relays()
            .map(|r| PackedNode {
                ip_port: PackedIpPort {
                    transport: Transport::Tcp,
                    addr: r.addr,
                },
                public_key: r.public_key,
            })
            .collect()
    }

    /// Sends `data` to `peer` (DHT key) through `relay`: DATA when the peer
    /// is ONLINE there, else OOB if it fits (§3).
    pub(super) fn relay_send(&mut self, relay: PublicKey, peer: PublicKey, data: &[u8]) -> bool {
        let r = if self.relays.peer_state(&peer, &relay) == Some(PeerRelayState::Online) {
            self.relays.send_data(&relay, &peer, data)
        } else if data.len() <= MAX_OOB_DATA {
            self.relays.send_oob(&relay, &peer, data)
        } else {
            self.stats.relay_refused += 1;
            return false;
        };
        match r {
            Ok(()) => {
                self.stats.relay_sent += 1;
                true
            }
            Err(e) => {
                tracing::trace!(?relay, error = ?e, "relay refused a packet");
                self.stats.relay_refused += 1;
                false
            }
        }
    }

    /// Handles the relay sets' events: packets to the sessions, route and
    /// link changes to the path tables and the pool, self-probe results.
    pub(super) fn pump_relays(&mut self, now: Instant) {
        // Handling events can cause more (ties, drops); a few rounds settle.
        for _ in 0..4 {
            let evs = drain_set(&mut self.relays);
            if evs.is_empty() {
                break;
            }
            self.handle_relay_events(now, evs);
        }
        self.prober.pump(now, &mut self.relays);
        while let Some(o) = self.prober.poll_outcome() {
            self.push_relay_event(RelayEvent::Probed(o));
            let v = self.blame.on_self_probe(now, o.relay, o.ok);
            if o.ok {
                // Proven good: other peers may use it again at once.
                self.pool.relay_back(&o.relay);
            }
            self.apply_verdicts(now, [v]);
            if !self.pool.is_linked(&o.relay) {
                // Closed by the pool while the probe ran.
                self.relays.remove_relay(&o.relay);
            }
        }
    }

    pub(super) fn handle_relay_events(&mut self, now: Instant, evs: Vec<RelaySetEvent>) {
        for ev in evs {
            match ev {
                RelaySetEvent::Data {
                    relay,
                    peer,
                    mut data,
                } => {
                    if self.prober.is_probe_peer(&peer) {
                        self.prober.on_main_data(&relay, &data);
                    } else {
                        let _ = self.on_packet(now, Route::Relay { relay, peer }, &mut data);
                    }
                }
                RelaySetEvent::Oob {
                    relay,
                    from,
                    mut data,
                } => {
                    let _ = self.on_packet(now, Route::Relay { relay, peer: from }, &mut data);
                }
                RelaySetEvent::PeerState { peer, relay, state } => {
                    if self.prober.is_probe_peer(&peer) {
                        self.prober
                            .on_main_state(now, &relay, state, &mut self.relays);
                        continue;
                    }
                    self.on_peer_relay_state(now, relay, peer, state);
                    if state != PeerRelayState::None {
                        self.resend_handshakes_on(relay, Some(peer));
                    }
                }
                RelaySetEvent::RelayUp { relay } => {
                    self.pool.link_up(now, &relay);
                    self.push_relay_event(RelayEvent::Up { relay });
                    self.resend_handshakes_on(relay, None);
                    for i in 0..self.order.len() {
                        let peer = self.order[i];
                        let evs = self.pool.refill(now, peer);
                        self.apply_pool(now, evs);
                    }
                }
                RelaySetEvent::RelayDown { relay, .. } => {
                    self.push_relay_event(RelayEvent::Down { relay });
                    let evs = self.pool.relay_lost(now, None, relay, LossReason::Offline);
                    self.apply_pool(now, evs);
                }
                RelaySetEvent::RouteRefused { peer, relay } => {
                    let route = Route::Relay { relay, peer };
                    if let Some(real) = self.book.owner(&route) {
                        let evs = self
                            .pool
                            .relay_lost(now, Some(real), relay, LossReason::Offline);
                        self.apply_pool(now, evs);
                    }
                }
                RelaySetEvent::Rtt { .. } => {}
            }
        }
    }

    /// The peer's state on a relay changed: ONLINE makes the route a path
    /// (re-opened if it was closed), anything else closes it.
    pub(super) fn on_peer_relay_state(
        &mut self,
        now: Instant,
        relay: PublicKey,
        peer_dht: PublicKey,
        state: PeerRelayState,
    ) {
        let route = Route::Relay {
            relay,
            peer: peer_dht,
        };
        let Some(real) = self.book.owner(&route) else {
            return;
        };
        let key = PathKey::Relay(relay);
        let mut left = false;
        if let Some(p) = self.peers.get_mut(&real) {
            if state == PeerRelayState::Online {
                p.paths.table_mut().add_path(key);
            } else {
                left = state == PeerRelayState::Registered
                    && p.paths
                        .table
                        .path(&key)
                        .is_some_and(|e| !e.health().is_closed());
                p.paths.table_mut().on_closed(now, &key);
            }
        }
        self.path_changes(now, real);
        if state == PeerRelayState::Online {
            self.pool.peer_returned(&real, &relay);
        } else if left {
            // The peer left a relay that is still up for us (its link broke,
            // e.g. a NAT rebinding, or it dropped the relay): the route stays
            // tied, so the path comes back the moment the peer does (a
            // c-toxcore peer re-routes now and then too), and a spare relay,
            // if one is known, keeps the peer's redundancy meanwhile.
            let evs = self.pool.peer_left(now, real, relay);
            self.apply_pool(now, evs);
        }
    }

    /// Demotes relays far slower than the peer's best one, and relays that
    /// deliver nothing for the peer while their link stays up (through the
    /// pool's one replacement path).
    pub(super) fn check_slow_relays(&mut self, now: Instant) {
        if self
            .timers
            .get(NodeTimer::SlowCheck)
            .is_some_and(|t| now < t)
        {
            return;
        }
        self.timers.set(NodeTimer::SlowCheck, now + SLOW_CHECK);
        for i in 0..self.order.len() {
            let peer = self.order[i];
            self.check_dead_relays(now, peer);
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let rtts: Vec<(PublicKey, Duration)> = p
                .paths
                .table
                .paths()
                .filter(|e| !e.health().is_closed())
                .filter_map(|e| Some((*e.key().relay()?, e.health().rtt().srtt()?)))
                .collect();
            if rtts.len() < 2 {
                continue;
            }
            let evs = self.pool.observe_rtts(now, peer, &rtts);
            self.apply_pool(now, evs);
        }
    }

    /// A relay path without proof for [`RELAY_DEAD_FOR`] while its relay link is up
    /// and not being verified (so the relay answers PINGs but delivers
    /// nothing for this peer — data was outstanding, or the path would not
    /// be dead) loses the relay for the peer, when a spare can replace it.
    pub(super) fn check_dead_relays(&mut self, now: Instant, peer: PublicKey) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if !self.pool.has_spare(now, &peer) {
            return;
        }
        let gone: Vec<PublicKey> = p
            .paths
            .dead_relays
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(*since) >= RELAY_DEAD_FOR)
            .map(|(r, _)| *r)
            .filter(|r| {
                self.relays.relay_state(r) == Some(RelayLinkState::Connected)
                    && !self.relays.verifying(r)
            })
            .collect();
        for relay in gone {
            tracing::debug!(
                ?peer,
                ?relay,
                "relay delivers nothing for the peer: replaced"
            );
            if let Some(p) = self.peers.get_mut(&peer) {
                p.paths.dead_relays.retain(|(r, _)| *r != relay);
            }
            let evs = self
                .pool
                .relay_lost(now, Some(peer), relay, LossReason::Slow);
            self.apply_pool(now, evs);
        }
    }

    /// Unties a departing peer from its relays and forgets its routes.
    pub(super) fn forget_peer_routes(&mut self, real: &PublicKey, p: Peer<A>) {
        let mut untie = Vec::new();
        for r in p.routes {
            if let Route::Relay { relay, peer } = r {
                untie.push((peer, relay));
            }
            if self.book.owner(&r) == Some(*real) {
                self.book.forget(&r);
            }
        }
        // The pool's drops are carried out here (the peer entry is gone).
        for relay in self.pool.active(real).to_vec() {
            untie.push((p.dht, relay));
        }
        let _ = self.pool.remove_peer(real);
        // Untied a little later: our last packets (a KILL) may still be on
        // their way through the relay, and the relay would tell the peer
        // that we left ahead of the data it still holds for it.
        for (peer, relay) in untie {
            if self.pending_untie.len() < MAX_PENDING_UNTIE {
                self.pending_untie.push((self.last_now, peer, relay));
                if let Some(t) = self.last_now {
                    self.timers.set_earlier(NodeTimer::Untie, t + UNTIE_GRACE);
                }
            } else {
                self.relays.untie(&peer, &relay);
            }
        }
    }

    /// Unties routes of departed peers once their grace has passed (unless
    /// the peer is back on that relay).
    pub(super) fn untie_departed(&mut self, now: Instant) {
        let mut keep = Vec::new();
        for (since, peer, relay) in std::mem::take(&mut self.pending_untie) {
            if since.is_some_and(|t| now.saturating_duration_since(t) < UNTIE_GRACE) {
                keep.push((since, peer, relay));
                continue;
            }
            if self.book.owner(&Route::Relay { relay, peer }).is_none() {
                self.relays.untie(&peer, &relay);
            }
        }
        match keep.iter().filter_map(|(since, _, _)| *since).min() {
            Some(t) => self.timers.set(NodeTimer::Untie, t + UNTIE_GRACE),
            None => self.timers.stop(NodeTimer::Untie),
        }
        self.pending_untie = keep;
    }

    /// Sends the current cookie request or handshake of every peer still
    /// handshaking that has a route through `relay` (the link just came up,
    /// or the peer appeared on it), instead of waiting for the session's 1 s
    /// re-send.
    pub(super) fn resend_handshakes_on(&mut self, relay: PublicKey, only: Option<PublicKey>) {
        let out: Vec<(PublicKey, Vec<u8>)> = self
            .peers
            .values()
            .filter(|p| only.is_none_or(|o| o == p.dht))
            .filter(|p| p.routes.iter().any(|r| r.relay() == Some(&relay)))
            .filter_map(|p| Some((p.dht, p.session.handshake_packet()?.to_vec())))
            .collect();
        for (dht, pkt) in out {
            self.relay_send(relay, dht, &pkt);
        }
    }
}
