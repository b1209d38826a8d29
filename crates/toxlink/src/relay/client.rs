//! tokio glue of a node's relay links: one sans-IO
//! [`RelaySet`](toxlink_proto::relay_client::RelaySet) behind a mutex, one
//! driver task for timers and connection attempts, one task per relay
//! socket.
//!
//! Events go to the application through a bounded channel; a socket task
//! waits for room before reading more, so a slow consumer slows the relay
//! down (TCP back-pressure) instead of growing memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_client::{
    ClientCounters, LinkSendError, PeerRelayState, RelayLinkState, RelaySet, RelaySetConfig,
    RelaySetEvent, RouteError, SocketId,
};

use super::CLIENT_WRITE_BATCH as WRITE_BATCH;

const EVENT_QUEUE: usize = 4096;

#[derive(Debug, Default)]
struct LinkHandle {
    notify: Notify,
    /// Signalled whenever output was drained (room in the send queue).
    drained: Notify,
    closed: AtomicBool,
}

struct Inner {
    set: RelaySet,
    /// The current socket of each relay and its task's handle.
    links: HashMap<PublicKey, (SocketId, Arc<LinkHandle>)>,
    events: Vec<RelaySetEvent>,
    /// Connection attempts for the driver to start.
    connects: Vec<(SocketId, SocketAddr)>,
}

struct Shared {
    inner: Mutex<Inner>,
    driver: Notify,
    stop: AtomicBool,
    /// Held while a batch of events is taken and sent, so batches reach the
    /// application in the order they were produced.
    flush: tokio::sync::Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Collects events, closes sockets the set dropped, notifies links with
    /// output. Returns whether connection attempts wait for the driver.
    fn dispatch(&mut self) -> bool {
        while let Some(ev) = self.set.poll_event() {
            self.events.push(ev);
        }
        while let Some(socket) = self.set.poll_close() {
            if self
                .links
                .get(&socket.relay)
                .is_some_and(|(s, _)| *s == socket)
            {
                if let Some((_, h)) = self.links.remove(&socket.relay) {
                    h.closed.store(true, Ordering::Release);
                    h.notify.notify_one();
                }
            }
        }
        for (socket, h) in self.links.values() {
            if self.set.has_output(socket) {
                h.notify.notify_one();
            }
        }
        while let Some(c) = self.set.poll_connect() {
            self.connects.push(c);
        }
        !self.connects.is_empty()
    }
}

/// A node's relay links on tokio. Cheap to share behind an `Arc`.
pub struct RelaySetRuntime {
    shared: Arc<Shared>,
    events: tokio::sync::Mutex<mpsc::Receiver<RelaySetEvent>>,
    tx: mpsc::Sender<RelaySetEvent>,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for RelaySetRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySetRuntime").finish_non_exhaustive()
    }
}

impl RelaySetRuntime {
    /// Starts an empty set announcing `keypair` to relays.
    pub fn new(keypair: KeyPair, cfg: RelaySetConfig) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                set: RelaySet::new(keypair, cfg),
                links: HashMap::new(),
                events: Vec::new(),
                connects: Vec::new(),
            }),
            driver: Notify::new(),
            stop: AtomicBool::new(false),
            flush: tokio::sync::Mutex::new(()),
        });
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let driver = tokio::spawn(driver_loop(shared.clone(), tx.clone()));
        RelaySetRuntime {
            shared,
            events: tokio::sync::Mutex::new(rx),
            tx,
            driver,
        }
    }

    /// Our key as relays and peers see it.
    pub fn public_key(&self) -> PublicKey {
        *self.shared.lock().set.public_key()
    }

    /// Adds a relay; it is connected in the background.
    pub fn add_relay(&self, relay: PublicKey, addr: SocketAddr) {
        self.shared
            .lock()
            .set
            .add_relay(Instant::now(), relay, addr);
        self.shared.driver.notify_one();
    }

    /// Removes a relay and closes its socket.
    pub fn remove_relay(&self, relay: &PublicKey) {
        let mut g = self.shared.lock();
        g.set.remove_relay(relay);
        g.dispatch();
        drop(g);
        self.shared.driver.notify_one();
    }

    /// Ties a peer to a relay (routing request now or on connect).
    pub fn tie(&self, peer: PublicKey, relay: &PublicKey) -> Result<(), RouteError> {
        let mut g = self.shared.lock();
        let r = g.set.tie(peer, relay);
        g.dispatch();
        drop(g);
        self.shared.driver.notify_one();
        r
    }

    /// Unties a peer from a relay.
    pub fn untie(&self, peer: &PublicKey, relay: &PublicKey) {
        let mut g = self.shared.lock();
        g.set.untie(peer, relay);
        g.dispatch();
        drop(g);
        self.shared.driver.notify_one();
    }

    /// DATA through `relay` to an ONLINE peer; refused with
    /// [`LinkSendError::QueueFull`] when the link's queue is full.
    pub fn send_data(
        &self,
        relay: &PublicKey,
        peer: &PublicKey,
        data: &[u8],
    ) -> Result<(), LinkSendError> {
        let mut g = self.shared.lock();
        g.set.send_data(relay, peer, data)?;
        if let Some((_, h)) = g.links.get(relay) {
            h.notify.notify_one();
        }
        Ok(())
    }

    /// Like [`send_data`](Self::send_data) but waits for room while the
    /// queue is full.
    pub async fn send_data_wait(
        &self,
        relay: &PublicKey,
        peer: &PublicKey,
        data: &[u8],
    ) -> Result<(), LinkSendError> {
        loop {
            let handle = {
                let mut g = self.shared.lock();
                match g.set.send_data(relay, peer, data) {
                    Err(LinkSendError::QueueFull) => g.links.get(relay).map(|(_, h)| h.clone()),
                    r => {
                        if let Some((_, h)) = g.links.get(relay) {
                            h.notify.notify_one();
                        }
                        return r;
                    }
                }
            };
            let Some(h) = handle else {
                return Err(LinkSendError::NotConnected);
            };
            let _ = tokio::time::timeout(Duration::from_millis(50), h.drained.notified()).await;
        }
    }

    /// OOB through `relay` to any key.
    pub fn send_oob(
        &self,
        relay: &PublicKey,
        to: &PublicKey,
        data: &[u8],
    ) -> Result<(), LinkSendError> {
        let mut g = self.shared.lock();
        g.set.send_oob(relay, to, data)?;
        if let Some((_, h)) = g.links.get(relay) {
            h.notify.notify_one();
        }
        Ok(())
    }

    /// Closes a relay link (it reconnects like a dead one).
    pub fn disconnect(&self, relay: &PublicKey) {
        let mut g = self.shared.lock();
        g.set.disconnect(Instant::now(), relay);
        g.dispatch();
        drop(g);
        self.shared.driver.notify_one();
    }

    /// A relay's link state.
    pub fn relay_state(&self, relay: &PublicKey) -> Option<RelayLinkState> {
        self.shared.lock().set.relay_state(relay)
    }

    /// A relay's smoothed RTT.
    pub fn relay_rtt(&self, relay: &PublicKey) -> Option<Duration> {
        self.shared.lock().set.relay_rtt(relay)
    }

    /// Why a relay's link last went down.
    pub fn relay_last_down(
        &self,
        relay: &PublicKey,
    ) -> Option<toxlink_proto::relay_client::LinkDownReason> {
        self.shared.lock().set.relay_last_down(relay)
    }

    /// A relay's counters and how often it connected.
    pub fn relay_counters(&self, relay: &PublicKey) -> Option<(ClientCounters, u64)> {
        self.shared.lock().set.relay_counters(relay)
    }

    /// Relays tied to `peer` and the peer's state on each.
    pub fn peer_relays(&self, peer: &PublicKey) -> Vec<(PublicKey, PeerRelayState)> {
        self.shared.lock().set.peer_relays(peer)
    }

    /// The next event (None once stopped).
    pub async fn next_event(&self) -> Option<RelaySetEvent> {
        self.events.lock().await.recv().await
    }

    /// Stops every task and closes every socket.
    pub async fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.driver.abort();
        {
            let mut g = self.shared.lock();
            for (_, (_, h)) in g.links.drain() {
                h.closed.store(true, Ordering::Release);
                h.notify.notify_one();
            }
        }
        let _ = self.driver.await;
        drop(self.tx);
    }
}

async fn flush_events(shared: &Shared, tx: &mpsc::Sender<RelaySetEvent>) {
    let _order = shared.flush.lock().await;
    let evs = std::mem::take(&mut shared.lock().events);
    for ev in evs {
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

fn spawn_connects(shared: &Arc<Shared>, tx: &mpsc::Sender<RelaySetEvent>) {
    let list = std::mem::take(&mut shared.lock().connects);
    for (socket, addr) in list {
        tokio::spawn(link_task(shared.clone(), tx.clone(), socket, addr));
    }
}

async fn driver_loop(shared: Arc<Shared>, tx: mpsc::Sender<RelaySetEvent>) {
    loop {
        let next = {
            let mut g = shared.lock();
            let now = Instant::now();
            if g.set.poll_timeout().is_some_and(|t| t <= now) {
                g.set.handle_timeout(now);
            }
            g.dispatch();
            g.set.poll_timeout()
        };
        spawn_connects(&shared, &tx);
        flush_events(&shared, &tx).await;
        let cap = Instant::now() + Duration::from_secs(1);
        let at = next.map_or(cap, |t| t.min(cap));
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = shared.driver.notified() => {}
        }
    }
}

async fn link_task(
    shared: Arc<Shared>,
    tx: mpsc::Sender<RelaySetEvent>,
    socket: SocketId,
    addr: SocketAddr,
) {
    let Some(stream) = super::connect(addr).await else {
        fail(&shared, &socket);
        return;
    };
    if shared.stop.load(Ordering::Acquire) {
        return;
    }
    let handle = Arc::new(LinkHandle::default());
    {
        let mut g = shared.lock();
        if let Some((_, old)) = g.links.insert(socket.relay, (socket, handle.clone())) {
            old.closed.store(true, Ordering::Release);
            old.notify.notify_one();
        }
        g.set.handle_connected(Instant::now(), &socket, &mut OsRng);
        g.dispatch();
    }
    shared.driver.notify_one();
    let link = Link {
        shared: &shared,
        tx: &tx,
        socket,
        handle: &handle,
    };
    if super::pump(&stream, &link).await == super::PumpEnd::Closed {
        return;
    }
    {
        let mut g = shared.lock();
        if g.links
            .get(&socket.relay)
            .is_some_and(|(_, h)| Arc::ptr_eq(h, &handle))
        {
            g.links.remove(&socket.relay);
        }
        // Ignored by the set if the socket is no longer current.
        g.set.handle_closed(Instant::now(), &socket);
        g.dispatch();
    }
    flush_events(&shared, &tx).await;
    shared.driver.notify_one();
}

/// One relay socket of the set, as [`super::pump`] serves it.
struct Link<'a> {
    shared: &'a Shared,
    tx: &'a mpsc::Sender<RelaySetEvent>,
    socket: SocketId,
    handle: &'a LinkHandle,
}

impl super::StreamOwner for Link<'_> {
    const WRITE_TURNS: usize = 4;

    fn closed(&self) -> bool {
        self.handle.closed.load(Ordering::Acquire)
    }

    /// The link's next batch; senders waiting for room are woken.
    fn drain(&self, out: &mut Vec<u8>) -> usize {
        let n = self
            .shared
            .lock()
            .set
            .drain_into(&self.socket, out, WRITE_BATCH);
        if n > 0 {
            self.handle.drained.notify_waiters();
        }
        n
    }

    fn feed(&self, bytes: &mut [u8]) -> bool {
        let mut g = self.shared.lock();
        g.set.handle_bytes(Instant::now(), &self.socket, bytes);
        if g.dispatch() {
            self.shared.driver.notify_one();
        }
        false
    }

    fn notify(&self) -> &Notify {
        &self.handle.notify
    }

    /// Back-pressure: the events go to the application before more is read.
    fn after_read(&self) -> impl std::future::Future<Output = ()> + Send {
        flush_events(self.shared, self.tx)
    }
}

fn fail(shared: &Shared, socket: &SocketId) {
    shared
        .lock()
        .set
        .handle_connect_failed(Instant::now(), socket);
    shared.driver.notify_one();
}
