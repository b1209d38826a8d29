//! The STUN client of one local UDP socket: Binding transactions to a few
//! servers and the reflexive addresses they report.
//!
//! Each server has at most one transaction at a time. A transaction sends
//! up to [`StunConfig::max_requests`] requests, the k-th retransmitted
//! after `initial_rto · 2^(k-1)` (capped at `max_rto`): RFC 8489 §6.2.1's
//! schedule, faster and shorter (250 ms doubling, 5 requests: about 7 s
//! rather than 39.5 s), because a node re-checks often anyway. A success
//! ends it with the server's mapping; silence after the last request, an
//! error response or a response without a usable address fail it. Either
//! way the next transaction to that server starts
//! [`StunConfig::recheck_interval`] later, or at once after
//! [`StunClient::recheck`].
//!
//! A mapping is kept until [`StunConfig::expire_after_failures`]
//! transactions in a row to its server failed; a new mapping from the same
//! server replaces it (the NAT rebound).
//!
//! Verbs, in the style of the rest of the crate: [`StunClient::handle_datagram`]
//! for a datagram [`is_stun`](super::is_stun) accepted,
//! [`StunClient::handle_timeout`] when [`StunClient::poll_timeout`] is
//! reached, then [`StunClient::poll_transmit`] until it returns `None`. A
//! new client's first transactions are due at the first `now` it is
//! given. Changes of the reflexive set are reported by the call that made
//! them: `handle_datagram` (a new or moved mapping) and `handle_timeout`
//! (a mapping expired).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;
use stun_codec::rfc5389::attributes::{ErrorCode, MappedAddress, XorMappedAddress};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{MessageClass, TransactionId};

use super::{canonical, decode, encode, is_stun, Msg, StunError, HEADER_LEN};

/// Most servers one client asks.
pub const MAX_SERVERS: usize = 8;

/// Timing of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunConfig {
    /// Wait after the first request of a transaction.
    pub initial_rto: Duration,
    /// Longest wait after any request.
    pub max_rto: Duration,
    /// Requests per transaction (the first and the retransmissions); at
    /// least 1.
    pub max_requests: u32,
    /// Time from the end of a transaction to the next one to that server.
    pub recheck_interval: Duration,
    /// Failed transactions in a row after which a server's mapping is
    /// forgotten; at least 1.
    pub expire_after_failures: u32,
}

impl Default for StunConfig {
    fn default() -> Self {
        StunConfig {
            initial_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(3),
            max_requests: 5,
            recheck_interval: Duration::from_secs(25),
            expire_after_failures: 3,
        }
    }
}

/// What the client did and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StunCounters {
    /// Binding requests handed out by `poll_transmit` (first sends and
    /// retransmissions).
    pub requests_sent: u64,
    /// Of those, retransmissions.
    pub retransmits: u64,
    /// Success responses accepted.
    pub responses: u64,
    /// Error responses to an outstanding transaction (it failed).
    pub error_responses: u64,
    /// Transactions that got no answer after every request.
    pub timeouts: u64,
    /// Datagrams refused as not STUN, undecodable, not a Binding response,
    /// or a success without a usable mapped address.
    pub malformed: u64,
    /// Well-formed responses to no outstanding transaction or from the
    /// wrong address (late duplicates, strays, forgeries).
    pub rejected: u64,
    /// Mappings forgotten after failed transactions.
    pub expired: u64,
}

/// One outstanding Binding transaction.
#[derive(Debug, Clone)]
struct Transaction {
    id: [u8; 12],
    /// Requests sent so far.
    sent: u32,
    /// A request is waiting for `poll_transmit`.
    send_pending: bool,
    /// When the last request sent is given up on.
    deadline: Option<Instant>,
}

/// What the client knows of one server.
#[derive(Debug, Clone)]
struct Server {
    addr: SocketAddr,
    /// When the next transaction starts; `None`: at the first `now` seen.
    next_check: Option<Instant>,
    tx: Option<Transaction>,
    /// The reflexive address it reported last (kept until expired).
    mapped: Option<SocketAddr>,
    /// Failed transactions in a row.
    failures: u32,
    /// Transactions completed (answered or failed).
    completed: u64,
}

impl Server {
    fn new(addr: SocketAddr) -> Self {
        Server {
            addr,
            next_check: None,
            tx: None,
            mapped: None,
            failures: 0,
            completed: 0,
        }
    }
}

/// The sans-IO STUN client of one local socket; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct StunClient {
    cfg: StunConfig,
    servers: Vec<Server>,
    counters: StunCounters,
    /// A failure found in `handle_datagram` may expire a mapping: the
    /// expiry (and its report) happens at the next `handle_timeout`, due at
    /// this time.
    expire_check: Option<Instant>,
}

impl StunClient {
    /// A client of `servers` (duplicates removed, at most [`MAX_SERVERS`]:
    /// the rest ignored with a warning). Nothing is sent until the client
    /// is given a `now` (any verb); the first transactions are then due at
    /// once.
    pub fn new(servers: Vec<SocketAddr>, cfg: StunConfig) -> Self {
        let cfg = StunConfig {
            max_requests: cfg.max_requests.max(1),
            expire_after_failures: cfg.expire_after_failures.max(1),
            ..cfg
        };
        StunClient {
            cfg,
            servers: dedup_servers(servers)
                .into_iter()
                .map(Server::new)
                .collect(),
            counters: StunCounters::default(),
            expire_check: None,
        }
    }

    /// Replaces the server list. Servers kept keep their state (mapping,
    /// outstanding transaction); new ones are checked at once; removed
    /// ones are forgotten with their mappings. Returns whether the
    /// reflexive set changed.
    pub fn set_servers(&mut self, now: Instant, servers: Vec<SocketAddr>) -> bool {
        let before = self.reflexive();
        let mut old = std::mem::take(&mut self.servers);
        self.servers = dedup_servers(servers)
            .into_iter()
            .map(|a| match old.iter().position(|s| s.addr == a) {
                Some(i) => old.swap_remove(i),
                None => {
                    let mut s = Server::new(a);
                    s.next_check = Some(now);
                    s
                }
            })
            .collect();
        before != self.reflexive()
    }

    /// The configuration in force.
    pub fn config(&self) -> &StunConfig {
        &self.cfg
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// The distinct reflexive addresses currently valid, in server order.
    pub fn reflexive(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for a in self.servers.iter().filter_map(|s| s.mapped) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// Each server and the reflexive address it reported (still valid), in
    /// order.
    pub fn mappings(&self) -> Vec<(SocketAddr, Option<SocketAddr>)> {
        self.servers.iter().map(|s| (s.addr, s.mapped)).collect()
    }

    /// Whether every server has completed at least one transaction
    /// (answered or failed): a one-shot probe is done.
    pub fn all_checked(&self) -> bool {
        self.servers.iter().all(|s| s.completed > 0)
    }

    /// Whether two servers report different mappings of the same address
    /// family for this socket: the NAT maps per destination
    /// (endpoint-dependent mapping, a "symmetric" NAT), so a reflexive
    /// address is of no use to others for hole punching. Needs at least
    /// two servers of that family with a valid mapping (and assumes the
    /// servers see the socket through the same NAT).
    pub fn mapping_varies(&self) -> bool {
        let valid: Vec<SocketAddr> = self.servers.iter().filter_map(|s| s.mapped).collect();
        valid.iter().enumerate().any(|(i, a)| {
            valid
                .iter()
                .skip(i + 1)
                .any(|b| a.is_ipv4() == b.is_ipv4() && a != b)
        })
    }

    /// Counters so far.
    pub fn counters(&self) -> StunCounters {
        self.counters
    }

    /// Checks every server again at once (e.g. when a path failed: the
    /// NAT may have rebound). A server with a transaction under way keeps
    /// it. The new transactions start at the next
    /// [`handle_timeout`](Self::handle_timeout), due now.
    pub fn recheck(&mut self, now: Instant) {
        for s in &mut self.servers {
            if s.tx.is_none() {
                s.next_check = Some(now);
            }
        }
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work:
    /// a retransmission, a transaction given up on, a check due or a
    /// mapping to expire. `None` when there is nothing to do, or before
    /// the client was ever given a `now`. Requests already due are not
    /// timers: they are handed out by [`poll_transmit`](Self::poll_transmit).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers
            .iter()
            .filter_map(|s| match &s.tx {
                Some(tx) => tx.deadline.filter(|_| !tx.send_pending),
                None => s.next_check,
            })
            .chain(self.expire_check)
            .min()
    }

    /// Does the work due at `now`: starts the transactions due (random ids
    /// from `rng`), schedules retransmissions, gives up on transactions
    /// whose last request went unanswered and expires mappings. Returns
    /// whether the reflexive set changed (a mapping expired).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl CryptoRngCore) -> bool {
        let before = self.reflexive();
        self.expire_check = None;
        let (max_requests, interval) = (self.cfg.max_requests, self.cfg.recheck_interval);
        let expire_after = self.cfg.expire_after_failures;
        for s in &mut self.servers {
            match &mut s.tx {
                Some(tx) if !tx.send_pending && tx.deadline.is_some_and(|d| d <= now) => {
                    if tx.sent < max_requests {
                        tx.send_pending = true;
                        tx.deadline = None;
                    } else {
                        tracing::debug!(server = %s.addr, "stun: no answer to the binding transaction");
                        self.counters.timeouts += 1;
                        s.tx = None;
                        s.completed += 1;
                        s.failures = s.failures.saturating_add(1);
                        s.next_check = Some(now + interval);
                    }
                }
                Some(_) => {}
                None if s.next_check.is_none_or(|t| t <= now) => {
                    let mut id = [0u8; 12];
                    rng.fill_bytes(&mut id);
                    s.tx = Some(Transaction {
                        id,
                        sent: 0,
                        send_pending: true,
                        deadline: None,
                    });
                    s.next_check = None;
                }
                None => {}
            }
            if s.failures >= expire_after && s.mapped.is_some() {
                tracing::debug!(server = %s.addr, failures = s.failures, "stun: mapping expired");
                s.mapped = None;
                self.counters.expired += 1;
            }
        }
        before != self.reflexive()
    }

    /// The next Binding request to send, written into `buf` (at least
    /// [`REQUEST_LEN`](super::REQUEST_LEN) bytes): its destination and
    /// length. Call until `None` after every other verb.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.note_time(now);
        let (initial, max) = (self.cfg.initial_rto, self.cfg.max_rto);
        for s in &mut self.servers {
            let Some(tx) = s.tx.as_mut().filter(|t| t.send_pending) else {
                continue;
            };
            let msg = Msg::new(MessageClass::Request, BINDING, TransactionId::new(tx.id));
            let n = match encode(msg, buf) {
                Ok(n) => n,
                Err(e) => {
                    // Only a buffer smaller than REQUEST_LEN gets here; the
                    // request stays pending for a larger one.
                    tracing::warn!(error = %e, "stun: cannot write a binding request");
                    return None;
                }
            };
            tx.sent += 1;
            tx.send_pending = false;
            tx.deadline = Some(now + rto(initial, max, tx.sent));
            self.counters.requests_sent += 1;
            if tx.sent > 1 {
                self.counters.retransmits += 1;
            }
            return Some((s.addr, n));
        }
        None
    }

    /// A datagram from `from` that [`is_stun`](super::is_stun) accepted
    /// (anything else is refused as [`StunError::NotStun`]). Only a success
    /// response to an outstanding transaction, from the server it was sent
    /// to, with a usable XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) is
    /// accepted; returns whether the reflexive set changed. An error
    /// response, or a success without a usable address, fails the
    /// transaction (and is returned as an error). Every refusal is counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<bool, StunError> {
        self.note_time(now);
        let r = self.on_datagram(now, from, data);
        match &r {
            Ok(_) => {}
            Err(StunError::UnknownTransaction | StunError::WrongSource { .. }) => {
                self.counters.rejected += 1;
            }
            Err(StunError::ErrorResponse(_)) => self.counters.error_responses += 1,
            Err(_) => self.counters.malformed += 1,
        }
        r
    }

    fn on_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<bool, StunError> {
        if !is_stun(data) {
            return Err(StunError::NotStun);
        }
        // Cheap checks on the header before decoding: the transaction must
        // be outstanding and the datagram from its server.
        let id = data.get(8..HEADER_LEN).ok_or(StunError::NotStun)?;
        let i = self
            .servers
            .iter()
            .position(|s| s.tx.as_ref().is_some_and(|t| t.sent > 0 && t.id == id))
            .ok_or(StunError::UnknownTransaction)?;
        let expected = self.servers[i].addr;
        if canonical(from) != canonical(expected) {
            return Err(StunError::WrongSource { expected, from });
        }
        let m = decode(data)?;
        if m.method() != BINDING {
            return Err(StunError::NotBindingResponse);
        }
        match m.class() {
            MessageClass::SuccessResponse => {}
            MessageClass::ErrorResponse => {
                let code = m.get_attribute::<ErrorCode>().map_or(0, ErrorCode::code);
                tracing::debug!(server = %expected, code, "stun: error response");
                self.fail(i, now);
                return Err(StunError::ErrorResponse(code));
            }
            _ => return Err(StunError::NotBindingResponse),
        }
        let mapped = m
            .get_attribute::<XorMappedAddress>()
            .map(XorMappedAddress::address)
            .or_else(|| {
                m.get_attribute::<MappedAddress>()
                    .map(MappedAddress::address)
            })
            .map(canonical)
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0);
        let Some(mapped) = mapped else {
            self.fail(i, now);
            return Err(StunError::NoMappedAddress);
        };
        let before = self.reflexive();
        let interval = self.cfg.recheck_interval;
        let s = &mut self.servers[i];
        s.tx = None;
        s.completed += 1;
        s.failures = 0;
        s.next_check = Some(now + interval);
        if s.mapped != Some(mapped) {
            tracing::debug!(server = %s.addr, %mapped, old = ?s.mapped, "stun: reflexive address");
        }
        s.mapped = Some(mapped);
        self.counters.responses += 1;
        Ok(before != self.reflexive())
    }

    /// Ends server `i`'s transaction as failed; an expiry it causes is
    /// done (and reported) by the next `handle_timeout`, due now.
    fn fail(&mut self, i: usize, now: Instant) {
        let interval = self.cfg.recheck_interval;
        let expire_after = self.cfg.expire_after_failures;
        let Some(s) = self.servers.get_mut(i) else {
            return;
        };
        s.tx = None;
        s.completed += 1;
        s.failures = s.failures.saturating_add(1);
        s.next_check = Some(now + interval);
        if s.failures >= expire_after && s.mapped.is_some() {
            self.expire_check = Some(now);
        }
    }

    /// Servers never checked are due at the first time seen.
    fn note_time(&mut self, now: Instant) {
        for s in &mut self.servers {
            if s.tx.is_none() && s.next_check.is_none() {
                s.next_check = Some(now);
            }
        }
    }
}

/// The wait after the `sent`-th request: `initial · 2^(sent-1)`, at most
/// `max`.
fn rto(initial: Duration, max: Duration, sent: u32) -> Duration {
    let shift = sent.saturating_sub(1).min(20);
    initial.saturating_mul(1 << shift).min(max)
}

fn dedup_servers(servers: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = Vec::new();
    for a in servers.into_iter().map(canonical) {
        if v.contains(&a) {
            continue;
        }
        if v.len() == MAX_SERVERS {
            tracing::warn!(server = %a, "stun: more than {MAX_SERVERS} servers; ignoring the rest");
            break;
        }
        v.push(a);
    }
    v
}
