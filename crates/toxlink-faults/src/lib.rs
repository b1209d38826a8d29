//! Fault tools for toxlink's tests and for `toxlink demo`, on loopback
//! (never used by the library, nor by `toxlink relay`): [`UdpForwarder`], a
//! UDP proxy between two endpoints that can black-hole or drop a share of the
//! datagrams, and [`FaultyRelay`], a relay server on `127.0.0.1:0` that can be
//! reset, killed, restarted and made to drop, delay or corrupt forwarded DATA.
//!
//! A [`FaultyRelay`] is the only relay that can take faults: it is started
//! with `RelayServer::bind_with_fault_hook` (toxlink's `fault-injection`
//! feature, which this crate turns on); a relay started with
//! `RelayServer::bind`, as `toxlink relay` does, has no way to get a fault
//! injector.
//!
//! Invariants: every control is synchronous and cheap (atomics or a short
//! mutex), so tests can flip faults from any thread while traffic flows;
//! dropping a tool stops it (the forwarder's task is aborted, the relay's
//! handle stops the server). Drop decisions use a small seeded PRNG (not
//! cryptographic: it only picks victims), so a run is reproducible.

#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand_core::OsRng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use toxlink::relay::{FaultHook, RelayServer, RelayServerConfig, RelayServerHandle};
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_server::{FaultConfig, FaultInjector, ServerConfig};

/// What a [`UdpForwarder`] does with datagrams (both directions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Silently drop everything.
    BlackHole,
    /// Drop this share (`0.0..=1.0`) of datagrams at random, forward the
    /// rest.
    Drop(f64),
}

/// Datagram counts of a [`UdpForwarder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwarderCounters {
    /// Datagrams sent on from A to B.
    pub forwarded_ab: u64,
    /// Datagrams sent on from B to A.
    pub forwarded_ba: u64,
    /// Datagrams dropped (by the mode, or from B before A ever sent).
    pub dropped: u64,
}

/// State shared between the controls and the forwarding task.
struct Ctl {
    mode: Mutex<Mode>,
    rng: Mutex<u64>,
    forwarded_ab: AtomicU64,
    forwarded_ba: AtomicU64,
    dropped: AtomicU64,
}

impl Ctl {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // Plain data: a poisoned lock still holds a valid value.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the next datagram passes under the current mode.
    fn pass(&self) -> bool {
        match *Self::lock(&self.mode) {
            Mode::Pass => true,
            Mode::BlackHole => false,
            Mode::Drop(p) => {
                // xorshift64*, uniform in [0, 1).
                let mut r = Self::lock(&self.rng);
                *r ^= *r >> 12;
                *r ^= *r << 25;
                *r ^= *r >> 27;
                let x = r.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
                // A NaN or non-positive share drops nothing.
                !(p > 0.0 && (x as f64 / (1u64 << 53) as f64) < p)
            }
        }
    }
}

/// A loopback UDP proxy between endpoints A and B (a test/demo tool).
///
/// A sends to [`a_side`](Self::a_side); each datagram is sent on to B from
/// the b-side socket. B's replies arrive at [`b_side`](Self::b_side) and go
/// to the address A last sent from, via the a-side socket (so B sees the
/// forwarder as its peer, and A sees it as B). Datagrams from B before A ever
/// sent are dropped. Stops when dropped.
pub struct UdpForwarder {
    a_side: SocketAddr,
    b_side: SocketAddr,
    ctl: Arc<Ctl>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for UdpForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpForwarder")
            .field("a_side", &self.a_side)
            .field("b_side", &self.b_side)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// Largest datagram forwarded (anything longer is truncated by the kernel).
const MAX_DATAGRAM: usize = 65_536;

impl UdpForwarder {
    /// Binds both sockets on `127.0.0.1:0` and starts forwarding to `b_addr`
    /// in [`Mode::Pass`] (drop decisions seeded with a fixed seed). Needs a
    /// tokio runtime.
    pub async fn start(b_addr: SocketAddr) -> io::Result<UdpForwarder> {
        Self::start_seeded(b_addr, 1).await
    }

    /// As [`start`](Self::start), with the seed of the drop decisions.
    pub async fn start_seeded(b_addr: SocketAddr, seed: u64) -> io::Result<UdpForwarder> {
        let a = UdpSocket::bind("127.0.0.1:0").await?;
        let b = UdpSocket::bind("127.0.0.1:0").await?;
        let (a_side, b_side) = (a.local_addr()?, b.local_addr()?);
        let ctl = Arc::new(Ctl {
            mode: Mutex::new(Mode::Pass),
            rng: Mutex::new(seed | 1),
            forwarded_ab: AtomicU64::new(0),
            forwarded_ba: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let task = tokio::spawn(forward(a, b, b_addr, ctl.clone()));
        Ok(UdpForwarder {
            a_side,
            b_side,
            ctl,
            task,
        })
    }

    /// Where A sends (A's view of B).
    pub fn a_side(&self) -> SocketAddr {
        self.a_side
    }

    /// Where B's replies arrive (B's view of A).
    pub fn b_side(&self) -> SocketAddr {
        self.b_side
    }

    /// Changes what happens to the following datagrams, both ways.
    pub fn set_mode(&self, mode: Mode) {
        *Ctl::lock(&self.ctl.mode) = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *Ctl::lock(&self.ctl.mode)
    }

    /// Counts so far.
    pub fn counters(&self) -> ForwarderCounters {
        ForwarderCounters {
            forwarded_ab: self.ctl.forwarded_ab.load(Ordering::Relaxed),
            forwarded_ba: self.ctl.forwarded_ba.load(Ordering::Relaxed),
            dropped: self.ctl.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UdpForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The forwarding loop: one datagram at a time from whichever side is ready.
async fn forward(a: UdpSocket, b: UdpSocket, b_addr: SocketAddr, ctl: Arc<Ctl>) {
    let mut abuf = vec![0u8; MAX_DATAGRAM];
    let mut bbuf = vec![0u8; MAX_DATAGRAM];
    let mut last_a: Option<SocketAddr> = None;
    loop {
        // recv_from is cancel-safe: the losing branch loses no datagram.
        tokio::select! {
            r = a.recv_from(&mut abuf) => {
                let Ok((n, from)) = r else {
                    // E.g. an ICMP error reported on the socket: not fatal.
                    continue;
                };
                last_a = Some(from);
                if !ctl.pass() {
                    ctl.dropped.fetch_add(1, Ordering::Relaxed);
                } else if b.send_to(&abuf[..n], b_addr).await.is_ok() {
                    ctl.forwarded_ab.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = b.recv_from(&mut bbuf) => {
                let Ok((n, _)) = r else {
                    continue;
                };
                match last_a {
                    Some(to) if ctl.pass() => {
                        if a.send_to(&bbuf[..n], to).await.is_ok() {
                            ctl.forwarded_ba.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        ctl.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// A relay server on `127.0.0.1:0` with a fresh key, for fault tests and
/// demos: [`reset`](Self::reset) (RST every connection, keep listening),
/// [`kill`](Self::kill) (stop listening, close every connection),
/// [`restart`](Self::restart) (same key and address again) and
/// [`set_faults`](Self::set_faults) on forwarded DATA. Dropping it kills the
/// relay.
#[derive(Debug)]
pub struct FaultyRelay {
    keypair: KeyPair,
    addr: SocketAddr,
    server: ServerConfig,
    /// The running server and its fault hook, `None` once killed.
    running: Option<(RelayServerHandle, FaultHook)>,
}

impl FaultyRelay {
    /// Starts a relay with a fresh key and default limits.
    pub async fn start() -> io::Result<FaultyRelay> {
        Self::start_with(KeyPair::generate(&mut OsRng), ServerConfig::default()).await
    }

    /// Starts a relay on `127.0.0.1:0` with the given key and limits.
    pub async fn start_with(keypair: KeyPair, server: ServerConfig) -> io::Result<FaultyRelay> {
        let running = RelayServer::bind_with_fault_hook(RelayServerConfig {
            keypair: keypair.clone(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            stun_listen: Vec::new(),
            server: server.clone(),
        })
        .await?;
        let addr = running
            .0
            .local_addrs()
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("relay bound no address"))?;
        Ok(FaultyRelay {
            keypair,
            addr,
            server,
            running: Some(running),
        })
    }

    /// The relay's public key.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public
    }

    /// The relay's TCP address (kept across [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the relay is running (not killed).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running server (counters etc.), `None` once killed.
    pub fn handle(&self) -> Option<&RelayServerHandle> {
        self.running.as_ref().map(|(h, _)| h)
    }

    /// A "relay reset": every client connection is closed with a TCP RST at
    /// once, the relay keeps listening. Returns how many were reset (0 when
    /// killed).
    pub fn reset(&self) -> usize {
        self.handle().map_or(0, RelayServerHandle::reset_all)
    }

    /// A "relay killed": stops listening and closes every connection; the
    /// listening socket is closed when this returns. No-op when killed.
    pub async fn kill(&mut self) {
        if let Some((h, _)) = self.running.take() {
            h.shutdown().await;
        }
    }

    /// Starts the relay again with the same key on the same address (after
    /// [`kill`](Self::kill); kills a running one first). Faults are not
    /// carried over.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill().await;
        let running = RelayServer::bind_with_fault_hook(RelayServerConfig {
            keypair: self.keypair.clone(),
            listen: vec![self.addr],
            stun_listen: Vec::new(),
            server: self.server.clone(),
        })
        .await?;
        self.running = Some(running);
        Ok(())
    }

    /// Installs faults on forwarded DATA (replacing any installed before; use
    /// [`FaultConfig::only_to`] to hit one receiver only). No-op when killed.
    pub fn set_faults(&self, cfg: FaultConfig) {
        if let Some((_, hook)) = &self.running {
            hook.set(FaultInjector::new(cfg));
        }
    }

    /// Removes the faults: forwarded DATA passes untouched again.
    pub fn clear_faults(&self) {
        if let Some((_, hook)) = &self.running {
            hook.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    /// B: a UDP echo server (bounded: stops after `max` datagrams).
    async fn echo(max: usize) -> (SocketAddr, JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let t = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            for _ in 0..max {
                let Ok((n, from)) = s.recv_from(&mut buf).await else {
                    return;
                };
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (addr, t)
    }

    /// Sends `msg` from `a` through the forwarder; the echo if it comes back
    /// within `wait`.
    async fn round_trip(a: &UdpSocket, f: &UdpForwarder, msg: &[u8], wait: u64) -> Option<Vec<u8>> {
        a.send_to(msg, f.a_side()).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = timeout(Duration::from_millis(wait), a.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        assert_eq!(from, f.a_side(), "replies come from the a-side socket");
        Some(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn passes_both_ways_blackholes_and_resumes() {
        let (b, echo_task) = echo(1000).await;
        let f = UdpForwarder::start(b).await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..20u8 {
            let got = round_trip(&a, &f, &[i; 100], 2000).await;
            assert_eq!(got, Some(vec![i; 100]));
        }
        assert_eq!(
            f.counters(),
            ForwarderCounters {
                forwarded_ab: 20,
                forwarded_ba: 20,
                dropped: 0
            }
        );
        f.set_mode(Mode::BlackHole);
        assert_eq!(f.mode(), Mode::BlackHole);
        for i in 0..5u8 {
            assert_eq!(round_trip(&a, &f, &[i; 10], 100).await, None);
        }
        let c = f.counters();
        assert_eq!((c.forwarded_ab, c.forwarded_ba, c.dropped), (20, 20, 5));
        f.set_mode(Mode::Pass);
        assert_eq!(
            round_trip(&a, &f, b"back", 2000).await,
            Some(b"back".to_vec())
        );
        assert_eq!(f.counters().forwarded_ba, 21);
        drop(f);
        echo_task.abort();
    }

    /// Datagrams arriving at `s` until it is quiet for 200 ms (bounded).
    async fn drain(s: &UdpSocket, from: SocketAddr) -> u64 {
        let mut buf = [0u8; 64];
        let mut n = 0;
        for _ in 0..10_000 {
            match timeout(Duration::from_millis(200), s.recv_from(&mut buf)).await {
                Ok(Ok((_, f))) => {
                    assert_eq!(f, from);
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    #[tokio::test]
    async fn blackhole_drops_replies_too_and_drop_share_is_partial() {
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let f = UdpForwarder::start_seeded(b.local_addr().unwrap(), 7)
            .await
            .unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // B's datagram before A ever sent has nowhere to go.
        b.send_to(b"early", f.b_side()).await.unwrap();
        for _ in 0..400 {
            if f.counters().dropped == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(f.counters().dropped, 1, "early datagram from B dropped");
        a.send_to(b"hello", f.a_side()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = timeout(Duration::from_secs(2), b.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], f.b_side()));
        f.set_mode(Mode::BlackHole);
        b.send_to(b"from b", f.b_side()).await.unwrap();
        let r = timeout(Duration::from_millis(100), a.recv_from(&mut buf)).await;
        assert!(r.is_err(), "nothing reaches A while black-holed");
        assert_eq!(f.counters().dropped, 2);
        // Drop(0.5), both ways.
        f.set_mode(Mode::Drop(0.5));
        for i in 0..200u8 {
            a.send_to(&[i; 8], f.a_side()).await.unwrap();
            tokio::task::yield_now().await;
        }
        let ab = drain(&b, f.b_side()).await;
        for i in 0..200u8 {
            b.send_to(&[i; 8], f.b_side()).await.unwrap();
            tokio::task::yield_now().await;
        }
        let ba = drain(&a, f.a_side()).await;
        assert!((60..140).contains(&ab), "{ab} of 200 a->b");
        assert!((60..140).contains(&ba), "{ba} of 200 b->a");
        assert_eq!(
            f.counters(),
            ForwarderCounters {
                forwarded_ab: 1 + ab,
                forwarded_ba: ba,
                dropped: 2 + (400 - ab - ba)
            }
        );
    }

    #[tokio::test]
    async fn dropping_the_forwarder_stops_it() {
        let (b, echo_task) = echo(10).await;
        let f = UdpForwarder::start(b).await.unwrap();
        let a_side = f.a_side();
        drop(f);
        tokio::task::yield_now().await;
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(b"x", a_side).await.unwrap();
        let mut buf = [0u8; 16];
        let r = timeout(Duration::from_millis(200), a.recv_from(&mut buf)).await;
        // Either nothing comes back or the kernel reports the port closed.
        assert!(
            !matches!(r, Ok(Ok(_))),
            "no echo once the forwarder is gone"
        );
        echo_task.abort();
    }
}
