//! Admission: the stateless cookie responder, the allow-list, handshakes on
//! unknown routes (new sessions, peers that restarted) and the dispatch of
//! every incoming packet to its owner.

use super::*;
use crate::error::{Misbehavior, Overload, Refusal};
use crate::session::handshake::PACKET_DATA;
use crate::wire::WireError;

/// Silence after which an ESTABLISHED session gives way to a new handshake
/// from the same peer (the peer restarted).
pub(super) const RESTART_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// Public-key operations per second (and burst) for handshakes of peers
/// not allowed in advance (accept-all mode).
pub(super) const X25519_PER_SEC: f64 = 200.0;
/// See [`X25519_PER_SEC`].
pub(super) const X25519_BURST: f64 = 50.0;
/// Cookie responses queued before more requests are dropped.
pub(super) const MAX_QUEUED_RESPONSES: usize = 256;

impl<A: Addr> Node<A> {
    /// Allows handshakes from `peer` (a friend).
    pub fn allow(&mut self, peer: PublicKey) {
        self.allow_inner(peer);
    }

    pub(super) fn allow_inner(&mut self, peer: PublicKey) {
        self.allowed.insert(peer);
        let real = &self.id.real;
        self.real_keys
            .entry(peer)
            .or_insert_with(|| real.precompute(&peer));
    }

    pub(super) fn on_packet(
        &mut self,
        now: Instant,
        from: Route<A>,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        match buf.first() {
            Some(&PACKET_COOKIE_REQUEST) => {
                if self.responses.len() >= MAX_QUEUED_RESPONSES {
                    return Err(DropReason::Overloaded(Overload::QueueFull));
                }
                let mut out = [0u8; COOKIE_RESPONSE_SIZE];
                self.responder.respond(
                    &mut self.rng,
                    now,
                    &self.id.dht,
                    &self.id.cookie_key,
                    buf,
                    &mut out,
                )?;
                self.stats.cookies_sent += 1;
                self.responses.push_back((from, out));
                Ok(())
            }
            Some(&PACKET_HANDSHAKE) => self.on_handshake(now, from, buf),
            Some(&first) => {
                let owner = match (self.book.owner(&from), from) {
                    (Some(o), _) => Some(o),
                    // A data packet from an address we do not know: the peer
                    // may have roamed (discovery.rs).
                    (None, Route::Udp(a)) if first == PACKET_DATA => self.roam(now, a, buf),
                    (None, _) => None,
                };
                let Some(peer) = owner else {
                    self.stats.unknown_source += 1;
                    return Err(DropReason::UnknownRoute);
                };
                self.last_now = Some(now);
                let path = self.book.id(from);
                let p = self.peers.get_mut(&peer).ok_or(DropReason::UnknownRoute)?;
                let r = p.session.handle_packet(now, path, buf);
                match (&r, from) {
                    (Ok(()), _) => {
                        if let Some(i) = p.routes.iter().position(|a| *a == from) {
                            p.current = i;
                        }
                        let table = p.paths.table_mut();
                        let key = RouteBook::key_for(&from, path);
                        table.on_received(now, &key);
                        // Acknowledgements carried by this very packet: the
                        // newest acknowledged send time is reverse evidence
                        // for this path, then the acks prove the paths they
                        // went on.
                        let mut newest: Option<Instant> = None;
                        p.session.drain_acked(|n| {
                            if let Some(t) = table.first_sent(n) {
                                newest = Some(newest.map_or(t, |x| x.max(t)));
                            }
                            table.on_acked(now, n);
                        });
                        if let Some(t) = newest {
                            table.on_reverse_proof(now, &key, t);
                        }
                        let cap = p.paths.relay_window();
                        if cap != p.paths.cap_applied {
                            p.paths.cap_applied = cap;
                            p.session.set_inflight_cap(cap);
                        }
                        if let Route::Relay { relay, .. } = from {
                            self.blame.on_auth_success(now, relay, peer);
                        }
                        self.path_changes(now, peer);
                        self.after_receive(now, peer, from);
                    }
                    (
                        Err(DropReason::Misbehaved(Misbehavior::DataAuth)),
                        Route::Relay { relay, .. },
                    ) => {
                        self.on_relay_auth_failure(now, relay, peer, from);
                    }
                    _ => {}
                }
                r
            }
            None => Err(DropReason::Malformed(WireError::Empty)),
        }
    }

    pub(super) fn on_handshake(
        &mut self,
        now: Instant,
        from: Route<A>,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        // Known route: the session validates it (§4.4, known connection).
        if let Some(peer) = self.book.owner(&from) {
            let path = self.book.id(from);
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.session.state() != State::Closed && p.session.state() != State::Established {
                    return p.session.handle_packet(now, path, buf);
                }
            }
        }
        // Unknown path (§4.4): validate with our cookie key (symmetric), then
        // look up the peer by the real key in the cookie: an allowed peer's
        // key is precomputed, anybody else is refused before any public-key
        // work (accept-all mode: within a rate-limited budget).
        let (real_keys, budget, accept_all) = (
            &self.real_keys,
            &mut self.x25519_budget,
            self.cfg.accept_all,
        );
        let real = &self.id.real;
        let mut key_ops = 0;
        let hs = open_handshake(
            &self.id.cookie_key,
            now,
            None,
            |pk| match real_keys.get(pk) {
                Some(k) => Some(k.clone()),
                None if accept_all && budget.take(now) => {
                    key_ops += 1;
                    Some(real.precompute(pk))
                }
                None => None,
            },
            buf,
        );
        self.stats.handshake_key_ops += key_ops;
        let hs = hs.inspect_err(|_| self.stats.handshakes_refused += 1)?;
        // A handshake through a relay comes from the peer's DHT key (the
        // relay names the sender of OOB and DATA): a relay replaying it under
        // another sender key is not the peer, and must not become a route.
        if let Route::Relay { peer, .. } = from {
            if !peer.ct_eq(&hs.peer_dht) {
                self.stats.handshakes_refused += 1;
                return Err(DropReason::Refused(Refusal::WrongSender));
            }
        }
        // Only an authenticated handshake from a new route earns a path id
        // (so spoofed junk cannot grow the table).
        let path = self.book.id(from);
        // A handshake that came through a relay: route to the peer there.
        if let Route::Relay { relay, peer } = from {
            let _ = self.relays.tie(peer, &relay);
        }
        if let Some(p) = self.peers.get_mut(&hs.peer_real) {
            let state = p.session.state();
            if !hs.peer_dht.ct_eq(&p.dht) || state == State::Closed {
                // Different DHT key (the peer restarted) or a dead session:
                // start over as new (§4.4).
                if state != State::Closed {
                    self.events.push_back(NodeEvent {
                        peer: hs.peer_real,
                        event: Event::Killed,
                    });
                }
                self.remove_peer(&hs.peer_real);
            } else if matches!(state, State::CookieRequesting | State::HandshakeSent) {
                let r = p.session.handle_packet(now, path, buf);
                self.add_route(hs.peer_real, from, true);
                return r;
            } else {
                // NOT_CONFIRMED / ESTABLISHED on another path: a new path for
                // a live session. Accept it as an address only if the session
                // takes the handshake (NOT_CONFIRMED), else drop (§4.4).
                if state == State::NotConfirmed {
                    let r = p.session.handle_packet(now, path, buf);
                    if r.is_ok() {
                        self.add_route(hs.peer_real, from, true);
                    }
                    return r;
                }
                // ESTABLISHED. A handshake with a new session key, authenticated
                // by the peer's long-term key on a fresh cookie, while the old
                // session has been silent for a while, means the peer started
                // over (restart, or it gave up on us): replace the dead
                // session instead of ignoring the peer forever. A replayed
                // handshake of the current session carries the same key and
                // is dropped.
                let silent = p
                    .session
                    .last_authenticated_any()
                    .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_SILENCE);
                let new_key = p.session.peer_session_pk() != Some(&hs.peer_session_pk);
                if !(silent && new_key) {
                    return Err(DropReason::Refused(Refusal::WrongState(state)));
                }
                tracing::debug!(peer = ?hs.peer_real, "peer restarted the connection");
                self.events.push_back(NodeEvent {
                    peer: hs.peer_real,
                    event: Event::Killed,
                });
                self.remove_peer(&hs.peer_real);
            }
        }
        if !self.cfg.accept_all && !self.allowed.contains(&hs.peer_real) {
            self.stats.handshakes_refused += 1;
            return Err(DropReason::Refused(Refusal::NotAllowed));
        }
        let session = Session::accept(now, &mut self.rng, self.cfg.session.clone(), &self.id, &hs);
        self.insert_peer(
            now,
            hs.peer_real,
            Peer {
                session,
                dht: hs.peer_dht,
                routes: vec![from],
                current: 0,
                initiator: false,
                paths: Paths::new(&self.cfg),
                discovery: Discovery::new(),
            },
        );
        Ok(())
    }
}
