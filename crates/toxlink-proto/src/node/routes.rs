//! Route identity: the [`Route`]s of a peer (a UDP address, or a relay both
//! sides route through) and the node's relay sockets ([`LinkId`]).

use super::*;

/// Routes remembered per peer (UDP addresses and relays).
pub(super) const MAX_ROUTES_PER_PEER: usize = 16;

/// Where a packet of a peer comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Route<A> {
    /// Direct UDP.
    Udp(A),
    /// Through a TCP relay.
    Relay {
        /// The relay's public key.
        relay: PublicKey,
        /// The key the peer uses on relays (its DHT key).
        peer: PublicKey,
    },
}

impl<A> Route<A> {
    /// The relay key of a relay route.
    pub fn relay(&self) -> Option<&PublicKey> {
        match self {
            Route::Relay { relay, .. } => Some(relay),
            Route::Udp(_) => None,
        }
    }
}

/// One relay socket of the node: the main identity's, or the self-prober's,
/// for one connection attempt. A new attempt to the same relay is a new
/// `LinkId`, so a close meant for the old socket never reaches the new one,
/// and reports about a socket that is no longer current are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// The relay.
    pub relay: PublicKey,
    /// A link of the self-probe identity.
    pub probe: bool,
    /// Connection attempt (per relay and identity, increasing).
    pub attempt: u64,
}

impl LinkId {
    pub(super) fn new(socket: SocketId, probe: bool) -> Self {
        LinkId {
            relay: socket.relay,
            probe,
            attempt: socket.attempt,
        }
    }

    pub(super) fn socket(&self) -> SocketId {
        SocketId {
            relay: self.relay,
            attempt: self.attempt,
        }
    }
}

/// The one owner of path identity. Every route a peer has (or had, until
/// forgotten) gets one [`PathId`] here; the path table names a direct path
/// by that id ([`PathKey::Direct`]) and a relay path by its relay key, and
/// the book maps either back to the real [`Route`] (the address a user
/// sees). It also records which peer owns a route, so an incoming packet
/// finds its session.
///
/// Invariants: a route has at most one id and one owner; forgetting a route
/// removes both and its address entry; ids are never reused while the
/// route they name is known (a `u32` counter that would take 2^32 new
/// routes to wrap).
#[derive(Debug)]
pub(super) struct RouteBook<A> {
    owners: HashMap<Route<A>, PublicKey>,
    ids: HashMap<Route<A>, PathId>,
    direct: HashMap<PathId, A>,
    next: u32,
}

impl<A: Copy + Eq + Hash> RouteBook<A> {
    pub(super) fn new() -> Self {
        RouteBook {
            owners: HashMap::new(),
            ids: HashMap::new(),
            direct: HashMap::new(),
            next: 0,
        }
    }

    /// The path id of `route`, given on first use.
    pub(super) fn id(&mut self, route: Route<A>) -> PathId {
        if let Some(id) = self.ids.get(&route) {
            return *id;
        }
        let id = PathId(self.next);
        self.next = self.next.wrapping_add(1);
        self.ids.insert(route, id);
        if let Route::Udp(a) = route {
            self.direct.insert(id, a);
        }
        id
    }

    /// The path-table key of `route` (given an id on first use).
    pub(super) fn key(&mut self, route: Route<A>) -> PathKey {
        let id = self.id(route);
        Self::key_for(&route, id)
    }

    /// The path-table key of `route` if it has an id.
    pub(super) fn known_key(&self, route: &Route<A>) -> Option<PathKey> {
        self.ids.get(route).map(|id| Self::key_for(route, *id))
    }

    pub(super) fn key_for(route: &Route<A>, id: PathId) -> PathKey {
        match route {
            Route::Udp(_) => PathKey::Direct(id),
            Route::Relay { relay, .. } => PathKey::Relay(*relay),
        }
    }

    /// Routes with an id.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The session path id of `route`, if it has one.
    pub(super) fn known_id(&self, route: &Route<A>) -> Option<PathId> {
        self.ids.get(route).copied()
    }

    /// The UDP address of direct path `id`.
    pub(super) fn udp_addr(&self, id: PathId) -> Option<A> {
        self.direct.get(&id).copied()
    }

    /// The peer (real key) owning `route`.
    pub(super) fn owner(&self, route: &Route<A>) -> Option<PublicKey> {
        self.owners.get(route).copied()
    }

    /// Makes `peer` the owner of `route`; returns the previous owner.
    pub(super) fn bind(&mut self, route: Route<A>, peer: PublicKey) -> Option<PublicKey> {
        self.owners.insert(route, peer)
    }

    /// Forgets `route` (owner and id); returns the key its path had.
    pub(super) fn forget(&mut self, route: &Route<A>) -> Option<PathKey> {
        self.owners.remove(route);
        let id = self.ids.remove(route)?;
        self.direct.remove(&id);
        Some(Self::key_for(route, id))
    }

    /// The route a path key of the peer with DHT key `peer_dht` stands for.
    pub(super) fn route(&self, key: PathKey, peer_dht: PublicKey) -> Option<Route<A>> {
        match key {
            PathKey::Direct(id) => self.direct.get(&id).map(|a| Route::Udp(*a)),
            PathKey::Relay(relay) => Some(Route::Relay {
                relay,
                peer: peer_dht,
            }),
        }
    }
}

impl<A: Addr> Node<A> {
    /// Adds `route` to `peer`'s routes (it becomes the handshake-phase route
    /// if `current`). A UDP route becomes a path at once; a relay route when
    /// the peer is ONLINE on the relay.
    pub(super) fn add_route(&mut self, peer: PublicKey, route: Route<A>, current: bool) {
        self.add_route_listed(peer, route, current, true);
    }

    /// [`add_route`](Self::add_route); with `listed` false the route is
    /// known (packets from it reach the session) but is not a path of the
    /// table yet: a candidate until proven (discovery.rs).
    pub(super) fn add_route_listed(
        &mut self,
        peer: PublicKey,
        route: Route<A>,
        current: bool,
        listed: bool,
    ) {
        let key = self.book.key(route);
        if let Some(prev) = self.book.bind(route, peer) {
            if prev != peer {
                if let Some(p) = self.peers.get_mut(&prev) {
                    p.routes.retain(|a| *a != route);
                    p.current = p.current.min(p.routes.len().saturating_sub(1));
                    p.paths.table_mut().remove_path(&key);
                }
            }
        }
        let online = match route {
            // A new path to a blocked address stays closed until unblocked.
            Route::Udp(a) => !self.blocked.contains(&a),
            Route::Relay { relay, peer } => {
                self.relays.peer_state(&peer, &relay) == Some(PeerRelayState::Online)
            }
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(i) = p.routes.iter().position(|a| *a == route) {
            if current {
                p.current = i;
            }
        } else {
            if p.routes.len() >= MAX_ROUTES_PER_PEER {
                // Forget the oldest UDP address to make room for a newer
                // one. A relay route never evicts a direct one (relays
                // leave through the pool): past the cap it is not added.
                if matches!(route, Route::Relay { .. }) {
                    return;
                }
                if let Some(i) = p.routes.iter().position(|r| matches!(r, Route::Udp(_))) {
                    let old = p.routes.remove(i);
                    if let Some(old_key) = self.book.forget(&old) {
                        p.paths.table_mut().remove_path(&old_key);
                    }
                } else {
                    return;
                }
            }
            p.routes.push(route);
            if current || p.routes.len() == 1 {
                p.current = p.routes.len() - 1;
            }
        }
        if online && listed {
            p.paths.table_mut().add_path(key);
        }
    }

    /// Removes a route of `peer`: its path is closed (stranded packets are
    /// resent at once) and packets from it are no longer accepted.
    pub(super) fn remove_route(&mut self, now: Instant, peer: PublicKey, route: Route<A>) {
        let Some(key) = self.book.known_key(&route) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().on_closed(now, &key);
        }
        self.path_changes(now, peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            let cur = p.routes.get(p.current).copied();
            p.routes.retain(|r| *r != route);
            p.current = cur
                .and_then(|c| p.routes.iter().position(|r| *r == c))
                .unwrap_or(0);
        }
        if self.book.owner(&route) == Some(peer) {
            self.book.forget(&route);
        }
    }

    /// Adds `addr` as another direct path to `peer` (which must have a
    /// session): data from it is accepted once authenticated, and the
    /// scheduler may send on it. Returns false if there is no session.
    pub fn add_path(&mut self, now: Instant, peer: &PublicKey, addr: A) -> bool {
        self.last_now = Some(now);
        if !self.peers.contains_key(peer) {
            return false;
        }
        self.add_route(*peer, Route::Udp(addr), false);
        true
    }

    /// The transport reports `addr` unusable (interface down, route gone):
    /// the path is dead at once and its packets in flight are resent.
    pub fn path_closed(&mut self, now: Instant, addr: A) {
        self.last_now = Some(now);
        let Some((peer, key)) = self.udp_path(addr) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().on_closed(now, &key);
        }
        self.path_changes(now, peer);
    }

    /// A UDP path that was reported closed works again: it is probed and may
    /// carry data once proven.
    pub fn path_reopened(&mut self, now: Instant, addr: A) {
        self.last_now = Some(now);
        let Some((peer, key)) = self.udp_path(addr) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.paths.table_mut().add_path(key);
        }
    }

    /// The peer and table key of the UDP path to `addr`, if it is one.
    pub(super) fn udp_path(&self, addr: A) -> Option<(PublicKey, PathKey)> {
        let route = Route::Udp(addr);
        Some((self.book.owner(&route)?, self.book.known_key(&route)?))
    }

    /// The route of path `key` of `peer`.
    pub(super) fn route_of(&self, peer: &Peer<A>, key: PathKey) -> Option<Route<A>> {
        let route = self.book.route(key, peer.dht)?;
        (key.is_relay() || peer.routes.contains(&route)).then_some(route)
    }
}
