//! tokio glue of the relay server: listeners, one small task per
//! connection, one timer task, all around one sans-IO
//! [`Server`](toxlink_proto::relay_server::Server) behind a mutex.
//!
//! Each connection task reads whatever the kernel has into a per-thread
//! 64 KiB buffer (never waiting for a whole frame), hands it to the server
//! under the lock (frames are decrypted in place), then notifies every
//! connection that got output. Output is drained from the server in batches
//! of up to 64 KiB, sealed into the task's own write buffer and written
//! without the lock held; the next batch is drained only once that buffer is
//! written, so a receiver that does not read makes the server's bounded
//! queue fill and drop (counted), never memory grow. Idle connections hold
//! no buffers: the write buffer is freed when empty.
//!
//! Push-back: while the server says a connection's last DATA filled its
//! receiver's queue ([`Server::read_paused`]), its task stops reading it, so
//! a sender flooding receivers that do not read is held back by TCP flow
//! control in its own socket instead of costing the relay a read, a
//! decryption and a drop per frame; the server wakes the task when the
//! receiver has room again (or at the latest after
//! [`MAX_READ_PAUSE`](toxlink_proto::relay_server::MAX_READ_PAUSE)).
//!
//! STUN: the relay also answers STUN Binding requests on UDP at
//! [`RelayServerConfig::stun_listen`] (`super::stun`), rate-limited and
//! counted apart from the TCP relay.
//!
//! Ending a relay, for fault tests: [`RelayServerHandle::reset_all`] drops
//! every client connection at once with a TCP RST (SO_LINGER 0) but keeps
//! listening (a "relay reset"); [`RelayServerHandle::shutdown`], or dropping
//! the handle, stops listening and closes every connection (a "relay
//! killed").

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_server::{ConnId, Counters, Server, ServerConfig, SEND_BUFFER_PROOF};

use super::stun::{StunServerCounters, StunShared, StunSockets};

/// Largest batch drained from the server per write.
const WRITE_BATCH: usize = 64 * 1024;
/// Granularity of the server's timers (handshake, keep-alive, delayed
/// fault-injected packets).
const TIMER_SLACK: Duration = Duration::from_millis(20);
/// Batches written per turn of a connection task.
const WRITE_TURNS: usize = 4;

/// What a relay server listens on and how it behaves.
#[derive(Debug, Clone)]
pub struct RelayServerConfig {
    /// The relay's static key pair (clients are told its public key).
    pub keypair: KeyPair,
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// UDP addresses to answer STUN Binding requests on (port 0 picks a
    /// free port); empty: no STUN. `toxlink relay` defaults to the TCP
    /// listen addresses.
    pub stun_listen: Vec<SocketAddr>,
    /// Limits and timers.
    pub server: ServerConfig,
}

/// Per-connection signals shared with the server side.
#[derive(Debug, Default)]
struct ConnHandle {
    notify: Notify,
    closed: AtomicBool,
    /// Close with RST (SO_LINGER 0) instead of FIN; set before `closed`.
    reset: AtomicBool,
}

struct Inner {
    server: Server<OsRng>,
    conns: HashMap<ConnId, Arc<ConnHandle>>,
}

impl Inner {
    /// Notifies connections with new output and closes what the server
    /// dropped.
    fn dispatch(&mut self) {
        while let Some(id) = self.server.poll_wake() {
            if let Some(h) = self.conns.get(&id) {
                h.notify.notify_one();
            }
        }
        while let Some((id, reason)) = self.server.poll_close() {
            tracing::debug!(?id, ?reason, "relay: closing connection");
            if let Some(h) = self.conns.remove(&id) {
                h.closed.store(true, Ordering::Release);
                h.notify.notify_one();
            }
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    timer: Notify,
    next_id: AtomicU64,
    shutdown: AtomicBool,
    /// Connections whose send buffer grew to the full size (they read).
    grown: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a task panicked mid-update; the state is
        // still structurally valid (every update is a complete call), so keep
        // serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The relay server.
#[derive(Debug)]
pub struct RelayServer;

/// A running relay server. Dropping it stops it as
/// [`shutdown`](Self::shutdown) does (without waiting for the tasks to end);
/// call `shutdown` to know the listeners are closed when it returns.
pub struct RelayServerHandle {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    stun_addrs: Vec<SocketAddr>,
    stun: Arc<StunShared>,
    public_key: PublicKey,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RelayServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServerHandle")
            .field("addrs", &self.addrs)
            .field("stun_addrs", &self.stun_addrs)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl RelayServer {
    /// Binds every listen address (TCP) and STUN address (UDP) and starts
    /// serving; fails if any cannot be bound.
    pub async fn bind(cfg: RelayServerConfig) -> io::Result<RelayServerHandle> {
        let public_key = cfg.keypair.public;
        let mut listeners = Vec::new();
        for addr in &cfg.listen {
            listeners.push(bind_listener(*addr)?);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let stun_sockets = StunSockets::bind(&cfg.stun_listen)?;
        let stun_addrs = stun_sockets.addrs().to_vec();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                server: Server::new(cfg.keypair, OsRng, cfg.server),
                conns: HashMap::new(),
            }),
            timer: Notify::new(),
            next_id: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            grown: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_loop(shared.clone(), l)));
        }
        tasks.push(tokio::spawn(timer_loop(shared.clone())));
        let (stun, stun_tasks) = stun_sockets.serve();
        tasks.extend(stun_tasks);
        Ok(RelayServerHandle {
            shared,
            addrs,
            stun_addrs,
            stun,
            public_key,
            tasks,
        })
    }
}

/// The only way to attach a fault injector to a running relay server (tests
/// and demos): [`RelayServer::bind_with_fault_hook`] hands one out next to
/// the handle; [`RelayServer::bind`], what `toxlink relay` uses, never does,
/// and a [`RelayServerHandle`] has no way to get one. Does nothing once the
/// server is gone.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone)]
pub struct FaultHook {
    shared: std::sync::Weak<Shared>,
}

#[cfg(feature = "fault-injection")]
impl RelayServer {
    /// As [`bind`](Self::bind), plus the [`FaultHook`] of this server.
    pub async fn bind_with_fault_hook(
        cfg: RelayServerConfig,
    ) -> io::Result<(RelayServerHandle, FaultHook)> {
        let handle = Self::bind(cfg).await?;
        let hook = FaultHook {
            shared: Arc::downgrade(&handle.shared),
        };
        Ok((handle, hook))
    }
}

#[cfg(feature = "fault-injection")]
impl FaultHook {
    /// Installs a fault injector on forwarded DATA, replacing any installed
    /// before.
    pub fn set(&self, injector: toxlink_proto::relay_server::FaultInjector) {
        if let Some(shared) = self.shared.upgrade() {
            shared
                .lock()
                .server
                .set_fault_injector(Instant::now(), injector);
        }
    }

    /// Removes the fault injector: forwarded DATA passes untouched again.
    pub fn clear(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().server.clear_fault_injector();
        }
    }
}

impl RelayServerHandle {
    /// Bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Bound STUN addresses (UDP; empty when STUN is off).
    pub fn stun_addrs(&self) -> &[SocketAddr] {
        &self.stun_addrs
    }

    /// Counters of the STUN service.
    pub fn stun_counters(&self) -> StunServerCounters {
        self.stun.counters()
    }

    /// The relay's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Current counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().server.counters()
    }

    /// Connections whose kernel send buffer grew from
    /// `socket_send_buffer_initial` to `socket_send_buffer`: they took
    /// [`SEND_BUFFER_PROOF`] bytes, so they read.
    pub fn send_buffers_grown(&self) -> u64 {
        self.shared.grown.load(Ordering::Relaxed)
    }

    /// A "relay reset": closes every client connection at once with a TCP
    /// RST (SO_LINGER 0), forgetting their state, but keeps listening, so
    /// clients can reconnect. Returns how many connections were reset.
    pub fn reset_all(&self) -> usize {
        let mut g = self.shared.lock();
        let now = Instant::now();
        let ids: Vec<ConnId> = g.conns.keys().copied().collect();
        for id in &ids {
            if let Some(h) = g.conns.remove(id) {
                h.reset.store(true, Ordering::Release);
                h.closed.store(true, Ordering::Release);
                h.notify.notify_one();
            }
            g.server.handle_closed(now, *id);
        }
        g.dispatch();
        tracing::debug!(count = ids.len(), "relay: reset every connection");
        ids.len()
    }

    /// Stops accepting and tells every connection task to close (FIN).
    /// Synchronous: the aborted tasks end at their next poll.
    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        let mut g = self.shared.lock();
        for (_, h) in g.conns.drain() {
            h.closed.store(true, Ordering::Release);
            h.notify.notify_one();
        }
    }

    /// A "relay killed": stops accepting, closes every connection and waits
    /// for the listener, timer and STUN tasks (the listening sockets are
    /// closed when this returns).
    pub async fn shutdown(mut self) {
        self.stop();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for RelayServerHandle {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop();
        }
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        // So that 0.0.0.0:P and [::]:P can both be bound.
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "relay: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let _ = stream.set_nodelay(true);
        let (initial, full) = {
            let g = shared.lock();
            let c = g.server.config();
            (c.socket_send_buffer_initial, c.socket_send_buffer)
        };
        // Bounds what a client that never reads parks in the kernel; the
        // buffer grows once the client proves it reads (`Conn::drain`).
        let sndbuf = if initial > 0 { initial } else { full };
        if sndbuf > 0 {
            set_send_buffer(&stream, sndbuf);
        }
        let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
        let handle = Arc::new(ConnHandle::default());
        {
            let mut g = shared.lock();
            g.conns.insert(id, handle.clone());
            g.server.handle_accept(Instant::now(), id, peer.ip());
            g.dispatch();
        }
        shared.timer.notify_one();
        if handle.closed.load(Ordering::Acquire) {
            tracing::debug!(%peer, "relay: connection refused");
            continue;
        }
        tracing::trace!(%peer, ?id, "relay: accepted");
        tokio::spawn(conn_task(shared.clone(), id, stream, handle));
    }
}

fn set_send_buffer(stream: &TcpStream, bytes: usize) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(bytes) {
        tracing::debug!(error = %e, "relay: SO_SNDBUF failed");
    }
}

async fn timer_loop(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut g = shared.lock();
            let now = Instant::now();
            if g.server.poll_timeout().is_some_and(|t| t <= now) {
                g.server.handle_timeout(now);
                g.dispatch();
            }
            g.server.poll_timeout()
        };
        // A timer scan visits every client: at most one per TIMER_SLACK
        // (deadlines are honoured within it), at least one a second.
        let now = Instant::now();
        let cap = now + Duration::from_secs(1);
        let at = next.map_or(cap, |t| t.min(cap)).max(now + TIMER_SLACK);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = shared.timer.notified() => {
                tokio::time::sleep(TIMER_SLACK).await;
            }
        }
    }
}

/// One connection of the server, as [`super::pump`] serves it.
struct Conn<'a> {
    shared: &'a Shared,
    id: ConnId,
    handle: &'a ConnHandle,
    stream: &'a TcpStream,
    /// Bytes drained for this connection so far (all but the last batch
    /// written), until the send buffer grew; then `u64::MAX`.
    drained: AtomicU64,
}

impl super::StreamOwner for Conn<'_> {
    const WRITE_TURNS: usize = WRITE_TURNS;

    fn closed(&self) -> bool {
        self.handle.closed.load(Ordering::Acquire)
    }

    /// The connection's next batch; senders waiting for room there are
    /// woken.
    /// Once the client has taken [`SEND_BUFFER_PROOF`] bytes (a batch is
    /// drained only when the previous one was written), its send buffer
    /// grows to the full size.
    fn drain(&self, out: &mut Vec<u8>) -> usize {
        let mut g = self.shared.lock();
        let n = g.server.drain_into(self.id, out, WRITE_BATCH);
        g.dispatch();
        let full = g.server.config().socket_send_buffer;
        drop(g);
        let before = self.drained.load(Ordering::Relaxed);
        if before != u64::MAX {
            let now = before + n as u64;
            if now > SEND_BUFFER_PROOF + WRITE_BATCH as u64 {
                self.drained.store(u64::MAX, Ordering::Relaxed);
                self.shared.grown.fetch_add(1, Ordering::Relaxed);
                if full > 0 {
                    set_send_buffer(self.stream, full);
                }
            } else {
                self.drained.store(now, Ordering::Relaxed);
            }
        }
        n
    }

    /// Feeds the server; says whether it now wants this connection not read
    /// (push-back). A pause ends at the latest at a timer the timer task
    /// may be sleeping past: it is woken.
    fn feed(&self, bytes: &mut [u8]) -> bool {
        let mut g = self.shared.lock();
        g.server.handle_bytes(Instant::now(), self.id, bytes);
        let paused = g.server.read_paused(self.id);
        g.dispatch();
        drop(g);
        if paused {
            self.shared.timer.notify_one();
        }
        paused
    }

    fn resume(&self) -> bool {
        !self.shared.lock().server.read_paused(self.id)
    }

    fn notify(&self) -> &Notify {
        &self.handle.notify
    }
}

async fn conn_task(shared: Arc<Shared>, id: ConnId, stream: TcpStream, handle: Arc<ConnHandle>) {
    let conn = Conn {
        shared: &shared,
        id,
        handle: &handle,
        stream: &stream,
        drained: AtomicU64::new(0),
    };
    if super::pump(&stream, &conn).await == super::PumpEnd::Closed {
        // Closed by the server (or reset): already forgotten there.
        if handle.reset.load(Ordering::Acquire) {
            // SO_LINGER 0: the close below sends RST, not FIN.
            if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
                tracing::debug!(error = %e, "relay: SO_LINGER 0 failed");
            }
        }
        return;
    }
    let mut g = shared.lock();
    if g.conns.remove(&id).is_some() {
        g.server.handle_closed(Instant::now(), id);
        g.dispatch();
    }
}
