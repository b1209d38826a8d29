//! The relay's STUN service: one UDP socket per STUN listen address, each
//! answering Binding requests with [`toxlink_proto::stun::answer`], so one
//! relay operator gives nodes both a relay and their reflexive address (as
//! Tailscale's DERP servers do).
//!
//! Invariants:
//! * bounded work per datagram: a datagram that fails
//!   [`is_stun`] (O(1)) is dropped before
//!   anything else; the rest is charged to the rate limiter before it is
//!   decoded; an answer is at most
//!   [`MAX_RESPONSE_LEN`] bytes and
//!   is sent without waiting (`try_send_to`: a full socket buffer drops it);
//! * bounded rate: a token bucket per source address (IPv6: per /64) of
//!   [`PER_SOURCE_RATE`] answers a second (bursts of [`PER_SOURCE_BURST`]),
//!   and one global bucket of [`GLOBAL_RATE`] a second for all sources and
//!   sockets together, so a spoofed flood gets a victim at most that many
//!   small answers;
//! * bounded memory: the per-source table holds at most
//!   [`MAX_SOURCES`] entries; when it is full, idle entries (buckets
//!   full again) are dropped, at most once per [`PURGE_INTERVAL`], and a
//!   source that still finds no room shares one overflow bucket;
//! * every datagram is counted once as a request and once as answered or
//!   dropped ([`StunServerCounters`]).
//!
//! [`probe`] is the other side for tools and tests: a one-shot
//! [`StunClient`] over a UDP socket (the node's runtime drives its own
//! client on its own socket).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use toxlink_proto::stun::{
    answer, is_stun, StunClient, StunConfig, StunCounters, MAX_MESSAGE_LEN, MAX_RESPONSE_LEN,
};

/// Answers per second to one source address (IPv6: one /64).
pub const PER_SOURCE_RATE: f64 = 10.0;
/// Answers one source may get at once.
pub const PER_SOURCE_BURST: f64 = 20.0;
/// Answers per second over all sources (and their burst).
pub const GLOBAL_RATE: f64 = 5_000.0;
/// Most source addresses tracked at once.
pub const MAX_SOURCES: usize = 4096;
/// Shortest time between two purges of the full source table.
pub const PURGE_INTERVAL: Duration = Duration::from_millis(100);

/// What the STUN service saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StunServerCounters {
    /// Datagrams received on the STUN sockets.
    pub requests: u64,
    /// Binding success responses sent.
    pub answered: u64,
    /// Datagrams not answered: not STUN, malformed, not a Binding request,
    /// over the rate, or the answer could not be sent.
    pub dropped: u64,
    /// Of the dropped, those over the rate limits.
    pub rate_limited: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    answered: AtomicU64,
    dropped: AtomicU64,
    rate_limited: AtomicU64,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant, burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The rate limits of the STUN service (see the module documentation).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_source: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    global: Bucket,
    last_purge: Option<Instant>,
}

/// The key of a source: the IPv4 address, or the /64 of an IPv6 one.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

impl RateLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        RateLimiter {
            per_source: HashMap::new(),
            overflow: Bucket::full(now, PER_SOURCE_BURST),
            global: Bucket::full(now, GLOBAL_RATE),
            last_purge: None,
        }
    }

    /// Whether a datagram from `ip` may be answered at `now` (charged).
    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = source_key(ip);
        if !self.per_source.contains_key(&key) && self.per_source.len() >= MAX_SOURCES {
            self.purge(now);
        }
        let own = if let Some(b) = self.per_source.get_mut(&key) {
            b.take(now, PER_SOURCE_RATE, PER_SOURCE_BURST)
        } else if self.per_source.len() < MAX_SOURCES {
            let mut b = Bucket::full(now, PER_SOURCE_BURST);
            let ok = b.take(now, PER_SOURCE_RATE, PER_SOURCE_BURST);
            self.per_source.insert(key, b);
            ok
        } else {
            self.overflow.take(now, PER_SOURCE_RATE, PER_SOURCE_BURST)
        };
        own && self.global.take(now, GLOBAL_RATE, GLOBAL_RATE)
    }

    /// Drops the entries whose bucket is full again (idle sources), at
    /// most once per [`PURGE_INTERVAL`].
    fn purge(&mut self, now: Instant) {
        if self
            .last_purge
            .is_some_and(|t| now.saturating_duration_since(t) < PURGE_INTERVAL)
        {
            return;
        }
        self.last_purge = Some(now);
        self.per_source.retain(|_, b| {
            b.refill(now, PER_SOURCE_RATE, PER_SOURCE_BURST);
            b.tokens < PER_SOURCE_BURST
        });
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.per_source.len()
    }
}

/// What the STUN tasks share with the relay's handle.
#[derive(Debug)]
pub(crate) struct StunShared {
    counters: Counters,
    limiter: Mutex<RateLimiter>,
}

impl StunShared {
    pub(crate) fn counters(&self) -> StunServerCounters {
        let c = &self.counters;
        StunServerCounters {
            requests: c.requests.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }

    fn allow(&self, ip: IpAddr) -> bool {
        // A poisoned lock: a task panicked mid-update of a token count;
        // the table is still valid.
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(Instant::now(), ip)
    }
}

/// The bound STUN sockets, not yet served.
pub(crate) struct StunSockets {
    sockets: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
}

impl StunSockets {
    /// Binds every address (port 0 picks a free port); an error names the
    /// address.
    pub(crate) fn bind(listen: &[SocketAddr]) -> io::Result<Self> {
        let sockets = listen
            .iter()
            .map(|a| {
                bind_udp(*a).map_err(|e| io::Error::new(e.kind(), format!("STUN on udp {a}: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let addrs = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(StunSockets { sockets, addrs })
    }

    /// The bound addresses.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Starts one task per socket.
    pub(crate) fn serve(self) -> (Arc<StunShared>, Vec<JoinHandle<()>>) {
        let shared = Arc::new(StunShared {
            counters: Counters::default(),
            limiter: Mutex::new(RateLimiter::new(Instant::now())),
        });
        let tasks = self
            .sockets
            .into_iter()
            .map(|s| {
                tracing::debug!(addr = ?s.local_addr().ok(), "relay: answering STUN");
                tokio::spawn(serve(s, shared.clone()))
            })
            .collect();
        (shared, tasks)
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // So that 0.0.0.0:P and [::]:P can both be bound.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Pause after a failed receive, so a persistent error cannot spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

async fn serve(socket: UdpSocket, shared: Arc<StunShared>) {
    let c = &shared.counters;
    // One byte more than the longest message decoded, so a longer datagram
    // is seen as too long rather than cut to fit.
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    let mut out = [0u8; MAX_RESPONSE_LEN];
    // Runs until the relay's handle aborts the task.
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "relay: STUN receive failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
                continue;
            }
        };
        c.requests.fetch_add(1, Ordering::Relaxed);
        let data = buf.get(..n).unwrap_or_default();
        if !is_stun(data) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !shared.allow(from.ip()) {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            c.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let len = match answer(data, from, &mut out) {
            Ok(len) => len,
            Err(e) => {
                tracing::trace!(%from, error = %e, "relay: STUN datagram dropped");
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match socket.try_send_to(out.get(..len).unwrap_or_default(), from) {
            Ok(_) => {
                c.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "relay: STUN answer not sent");
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What [`probe`] learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Each server and the reflexive address it reported (`None`: no
    /// usable answer in time).
    pub mappings: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// The distinct reflexive addresses.
    pub reflexive: Vec<SocketAddr>,
    /// Two servers saw different mappings of the same family
    /// ([`StunClient::mapping_varies`]).
    pub mapping_varies: bool,
    /// The client's counters.
    pub counters: StunCounters,
}

/// Asks every server in `servers` once (with retransmissions as `cfg`
/// says) from `socket`, until each has answered or failed, or `limit`
/// has passed. Datagrams that are not STUN are ignored; send and receive
/// errors are logged and retried (never returned).
pub async fn probe(
    socket: &UdpSocket,
    servers: Vec<SocketAddr>,
    cfg: StunConfig,
    limit: Duration,
    rng: &mut impl CryptoRngCore,
) -> ProbeReport {
    let mut c = StunClient::new(servers, cfg);
    let deadline = Instant::now() + limit;
    let mut out = [0u8; 64];
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    // Bounded by `deadline`: every turn ends at a timer, a datagram or it.
    while !c.all_checked() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now, rng);
        }
        while let Some((to, n)) = c.poll_transmit(now, &mut out) {
            if let Err(e) = socket.send_to(out.get(..n).unwrap_or_default(), to).await {
                // Unreachable for now (no route, ICMP): the retransmission
                // schedule tries again.
                tracing::debug!(%to, error = %e, "stun probe: send failed");
            }
        }
        let wake = c.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if is_stun(data) {
                        if let Err(e) = c.handle_datagram(Instant::now(), from, data) {
                            tracing::debug!(%from, error = %e, "stun probe: datagram refused");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stun probe: receive failed");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    ProbeReport {
        mappings: c.mappings(),
        reflexive: c.reflexive(),
        mapping_varies: c.mapping_varies(),
        counters: c.counters(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_and_global_buckets() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = (0..100).filter(|_| l.allow(t0, a)).count();
        assert_eq!(n, PER_SOURCE_BURST as usize);
        // Another source is not held back by the first.
        assert!(l.allow(t0, b));
        // One second later: PER_SOURCE_RATE more.
        let t1 = t0 + Duration::from_secs(1);
        let n = (0..100).filter(|_| l.allow(t1, a)).count();
        assert_eq!(n, PER_SOURCE_RATE as usize);
        // An IPv6 /64 is one source; IPv4-mapped is the IPv4 source.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let n = (0..100)
            .filter(|i| l.allow(t0, v6(&format!("2001:db8::{:x}", i + 1))))
            .count();
        assert_eq!(n, PER_SOURCE_BURST as usize);
        assert!(!l.allow(t1, v6("::ffff:192.0.2.1")));
    }

    #[test]
    fn the_source_table_is_bounded_and_idle_entries_are_purged() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(t0);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MAX_SOURCES as u32 {
            assert!(l.allow(t0, ip(i)));
        }
        assert_eq!(l.sources(), MAX_SOURCES);
        // Full: newcomers share the overflow bucket.
        let n = (0..100)
            .filter(|i| l.allow(t0, ip(MAX_SOURCES as u32 + i)))
            .count();
        assert_eq!(n, PER_SOURCE_BURST as usize);
        assert_eq!(l.sources(), MAX_SOURCES);
        // Once the old entries are idle (full again), they make room.
        let later = t0 + Duration::from_secs(5);
        assert!(l.allow(later, ip(999_999)));
        assert_eq!(l.sources(), 1);
    }

    #[test]
    fn the_global_budget_caps_a_spoofed_flood() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(t0);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        // Two requests from each of the most sources tracked: more than
        // the global budget.
        let n = (0..2 * MAX_SOURCES as u32)
            .filter(|i| l.allow(t0, ip(i % MAX_SOURCES as u32)))
            .count();
        assert_eq!(n, GLOBAL_RATE as usize);
    }
}
