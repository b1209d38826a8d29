//! Sans-IO Tox TCP relay server (docs/PROTOCOL.md §2.2–§2.5).
//!
//! The runtime owns the sockets and gives each accepted connection a
//! [`ConnId`]. It feeds [`Server::handle_accept`], [`Server::handle_bytes`],
//! [`Server::handle_closed`] and [`Server::handle_timeout`], and after each
//! call polls [`Server::poll_wake`] (connections with new output; drain them
//! with [`Server::drain_into`]), [`Server::poll_close`] (connections the
//! server wants closed) and [`Server::poll_timeout`]. It does not read a
//! connection while [`Server::read_paused`] says so (push-back, below).
//!
//! Invariants kept:
//! * A route exists only after both clients asked for each other (§2.5); the
//!   slot tables of both ends always agree (`a.slot.link = (b, j)` ⇔
//!   `b.slot[j].link = (a, i)`).
//! * At most one confirmed link per client key; a newly confirmed link kills
//!   the old one first (§2.2).
//! * Memory per client is bounded: the input buffer never holds more than one
//!   partial frame (≤ 2050 bytes), priority output is bounded by
//!   [`ServerConfig::priority_queue_bytes`] (past it the client is closed as a
//!   slow consumer: control frames are never dropped), data output by
//!   [`ServerConfig::queue_bytes`] per client and
//!   [`ServerConfig::total_queue_bytes`] overall (past them forwarded DATA and
//!   OOB are dropped and counted). Empty buffers are freed on timer scans.
//! * Malformed input closes only the connection that sent it; nothing panics.
//!
//! Hostile clients (each bound configurable in [`ServerConfig`]):
//! * **Receivers that do not read.** A client is *stalled* while data is
//!   queued for it and none of it has been drained for a while: the clock
//!   starts when data is queued to an empty queue and restarts at every
//!   drain that takes some. (The runtime drains into its own write buffer
//!   whenever that buffer is written out, so data waits here only while the
//!   client's socket takes nothing: a blocked write.) A client stalled for
//!   [`ServerConfig::slow_consumer_timeout`] (3 s, the write deadline of
//!   Tailscale's DERP) is closed as [`CloseReason::SlowConsumer`] — whether
//!   its queue is full or the sender keeps it just below full. When the
//!   global budget (`total_queue_bytes`) is full, the client stalled the
//!   longest — for at least [`PRESSURE_STALL`] — is closed at once to make
//!   room (counted in [`Counters::slow_consumer_evictions`]), so receivers
//!   that never read cannot starve everyone else's DATA.
//! * **Senders flooding receivers that do not read.** A sender whose DATA
//!   fills a receiver's queue is not read (push-back, `pushback`) until that
//!   receiver drained to half its queue or is gone, or for
//!   [`MAX_READ_PAUSE`] at most: TCP flow control holds the flood in the
//!   sender's socket, and the relay's CPU goes to the pairs that flow
//!   instead of to reading, decrypting and dropping the flooders' frames.
//! * **OOB floods.** OOB is charged to its sender: a token bucket of
//!   [`ServerConfig::oob_bytes_per_sec`] bytes a second (one second of
//!   burst) per connection; past it OOB is dropped
//!   ([`ForwardDrop::OobRateLimited`]). And OOB is queued to a receiver only
//!   while its data queue is under half of `queue_bytes`: the other half is
//!   for DATA of the peers it routed.
//! * **Connection floods.** The runtime tells [`Server::handle_accept`] the
//!   peer's address. Connections per address are capped
//!   ([`ServerConfig::max_conns_per_ip`], 32) and so are connections per
//!   address that have not confirmed yet
//!   ([`ServerConfig::max_unconfirmed_per_ip`], 8); further accepts are
//!   closed ([`CloseReason::TooManyFromIp`]). IPv6 addresses count per /64
//!   (one subscriber's prefix), IPv4-mapped IPv6 as IPv4. When the global
//!   unconfirmed bound ([`ServerConfig::max_unconfirmed`]) is reached, the
//!   eviction policy is: the oldest unconfirmed connection *of the address
//!   holding the most unconfirmed connections* is evicted (ties: the address
//!   whose oldest is oldest). A flooder therefore evicts its own handshakes
//!   first; a client's handshake in progress is evicted only when every
//!   address holds as few unconfirmed connections as its own, i.e. by a
//!   flood from at least `max_unconfirmed` distinct addresses (1,024 by
//!   default, 128 /64s or IPv4 addresses at 8 each cannot do it), and then in
//!   age order as c-toxcore does.
//!
//! Differences from c-toxcore 0.2.18, on purpose: a closed TCP connection is
//! noticed at once (the runtime calls [`Server::handle_closed`]); handshakes
//! and unconfirmed links time out ([`ServerConfig::handshake_timeout`]); a
//! well-formed FORWARD_REQUEST (id 10) is dropped and counted instead of
//! closing the link (no forwarding service is attached, and a valid id never
//! disconnects); ONION_REQUEST (id 8) is ignored as c-toxcore does with the
//! onion disabled. Ids 1, 7, 9, 11 sent by a client are server-to-client ids
//! and close the link as in c-toxcore; 12–15 are reserved and close it too.
//!
//! Layout: this file holds [`Server`]'s state and its output side (wakes,
//! closes, draining). The rest is split by job, each an `impl` block of
//! [`Server`] or the types it uses:
//! * `config`: [`ServerConfig`], [`CloseReason`], [`ForwardDrop`],
//!   [`Counters`];
//! * `conn`: one connection's state (slots, buffers, keep-alive, stall
//!   clock, OOB bucket);
//! * `admission`: accepts, the per-address limits and the eviction policy,
//!   the handshake and confirmation;
//! * `input`: bytes to frames to packets;
//! * `routes`: ROUTING_REQUEST pairing and DISCONNECT_NOTIFICATION;
//! * `forward`: DATA and OOB into the bounded queues, closes under
//!   pressure, priority frames, fault-delayed packets;
//! * `pushback`: senders not read while a receiver of theirs is full;
//! * `fault`: the fault injector (tests);
//! * `timers`: timeouts, keep-alive, the slow-consumer deadline, closing
//!   and tearing down a connection.

mod admission;
mod config;
mod conn;
mod fault;
mod forward;
mod input;
#[cfg(test)]
mod invariants;
mod pushback;
mod routes;
#[cfg(test)]
mod tests;
mod timers;

pub use admission::ip_key;
#[cfg(test)]
pub(crate) use admission::test_ip;
pub use config::{
    CloseCounters, CloseReason, Counters, ForwardDrop, ServerConfig, SEND_BUFFER_PROOF,
};
pub use fault::{FaultConfig, FaultInjector};
pub use forward::PRESSURE_STALL;
pub use pushback::MAX_READ_PAUSE;

use admission::IpState;
use conn::{Conn, IdMap};
use forward::Delayed;

use crate::crypto::{KeyPair, PublicKey};
use rand_core::CryptoRngCore;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// A connection, named by the runtime. Ids must not be reused while the
/// server still knows the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The relay server state machine. See the module documentation for the
/// calling protocol.
pub struct Server<R> {
    keypair: KeyPair,
    rng: R,
    cfg: ServerConfig,
    clients: IdMap<Conn>,
    by_key: HashMap<PublicKey, ConnId>,
    /// Per-address counts and unconfirmed connections.
    ips: HashMap<IpAddr, IpState>,
    /// Addresses with unconfirmed connections in eviction order (last first).
    unconfirmed_rank: BTreeSet<(usize, Reverse<u64>, IpAddr)>,
    unconfirmed_count: usize,
    /// Stalled receivers, longest stalled first.
    stalled: BTreeSet<(Instant, ConnId)>,
    /// Senders not read for now (push-back), oldest pause first.
    paused: BTreeSet<(Instant, ConnId)>,
    /// Drained since the last call that tells the time, data left: their
    /// stall clock restarts then.
    restarted: Vec<ConnId>,
    next_seq: u64,
    closes: VecDeque<(ConnId, CloseReason)>,
    wakes: Vec<ConnId>,
    next_timeout: Option<Instant>,
    counters: Counters,
    queued_total: usize,
    fault: Option<Box<fault::FaultState>>,
    delayed: VecDeque<Delayed>,
}

impl<R> std::fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &self.keypair.public)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl<R: CryptoRngCore> Server<R> {
    /// A relay with static key pair `keypair` (its DHT key pair, §2.1).
    pub fn new(keypair: KeyPair, rng: R, cfg: ServerConfig) -> Self {
        Server {
            keypair,
            rng,
            cfg,
            clients: IdMap::default(),
            by_key: HashMap::new(),
            ips: HashMap::new(),
            unconfirmed_rank: BTreeSet::new(),
            unconfirmed_count: 0,
            stalled: BTreeSet::new(),
            paused: BTreeSet::new(),
            restarted: Vec::new(),
            next_seq: 0,
            closes: VecDeque::new(),
            wakes: Vec::new(),
            next_timeout: None,
            counters: Counters::default(),
            queued_total: 0,
            fault: None,
            delayed: VecDeque::new(),
        }
    }

    /// The relay's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.keypair.public
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Current statistics.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.clients = self.clients.len() as u64;
        c.confirmed = self.by_key.len() as u64;
        c.queued_bytes = self.queued_total as u64;
        c
    }

    /// Installs a fault injector for forwarded DATA (tests only: a
    /// [`FaultInjector`] can only be built with the `fault-injection`
    /// feature).
    /// A new injector replaces the previous one (fresh PRNG and black-hole
    /// clock).
    pub fn set_fault_injector(&mut self, now: Instant, injector: FaultInjector) {
        self.fault = Some(Box::new(injector.start(now)));
    }

    /// Removes the fault injector: forwarded DATA passes untouched again.
    /// Packets it already delayed are still delivered when due.
    pub fn clear_fault_injector(&mut self) {
        self.fault = None;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// A connection with new output since the last call (drain it), or
    /// whose push-back pause ended (read it again: [`read_paused`](Self::read_paused)).
    pub fn poll_wake(&mut self) -> Option<ConnId> {
        while let Some(id) = self.wakes.pop() {
            if let Some(c) = self.clients.get_mut(&id) {
                c.woken = false;
                return Some(id);
            }
        }
        None
    }

    /// A connection the server wants closed, and why. The server has already
    /// forgotten it; the runtime closes the socket and must not report it
    /// again.
    pub fn poll_close(&mut self) -> Option<(ConnId, CloseReason)> {
        self.closes.pop_front()
    }

    /// Appends the connection's pending output to `out`: raw handshake bytes,
    /// then every priority frame, then whole data frames while the appended
    /// output stays within `limit` (at least one). Returns bytes appended.
    pub fn drain_into(&mut self, conn: ConnId, out: &mut Vec<u8>, limit: usize) -> usize {
        let Some(c) = self.clients.get_mut(&conn) else {
            return 0;
        };
        let before = c.out.data_len();
        let n = c.out.drain_into(c.chan.as_mut(), out, limit);
        let drained = before.saturating_sub(c.out.data_len());
        self.queued_total = self.queued_total.saturating_sub(drained);
        if drained > 0 {
            // Progress: the clock restarts, or stops if nothing is left.
            if let Some(since) = c.stalled_since.take() {
                self.stalled.remove(&(since, conn));
            }
            // Still data left: the clock restarts at the next call that
            // tells the time (drains do not).
            if c.out.data_len() > 0 && !c.restart_pending {
                c.restart_pending = true;
                self.restarted.push(conn);
            }
            // Push-back: the senders waiting for room here may be read again.
            self.resume_blocked(conn);
        }
        n
    }

    /// Whether the connection has output waiting.
    pub fn has_output(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| !c.out.is_empty())
    }

    /// Heap bytes held by one connection's input and output buffers (not
    /// its slot table), for tests and metrics.
    pub fn conn_buffer_bytes(&self, conn: ConnId) -> usize {
        self.clients
            .get(&conn)
            .map_or(0, |c| c.rx.capacity() + c.out.capacity())
    }

    fn arm(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |n| n.min(at)));
    }

    fn wake(&mut self, conn: ConnId) {
        if let Some(c) = self.clients.get_mut(&conn) {
            if !c.woken {
                c.woken = true;
                self.wakes.push(conn);
            }
        }
    }
}
