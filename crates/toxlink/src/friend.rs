//! [`Friend`]: a [`Connection`] that behaves as a Tox friend towards a
//! c-toxcore peer (docs/PROTOCOL.md §7), driving the sans-IO
//! [`toxlink_proto::friend::FriendLink`].
//!
//! One task per friend owns the connection's receive side: it feeds received
//! packets and timers to the link, sends the link's protocol packets (ONLINE,
//! ALIVE, SHARE_RELAYS, profile) and forwards [`FriendEvent`]s to
//! [`Friend::next_event`] through a bounded channel. Application data
//! (messages, custom packets) is validated by the link and sent directly on
//! the connection by the calling task, so it keeps the session's
//! backpressure. Application sends wait until the protocol packets queued
//! before them (ONLINE first of all) are handed to the connection, so data
//! never overtakes ONLINE: a peer drops Messenger packets that arrive before
//! it (§7.4). If the application stops reading events the channel fills,
//! the task stops reading the connection and the peer is slowed down; if it
//! stops for more than 32 s the peer times the friend out.

use crate::{Connection, Error, Received};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use toxlink_proto::friend::{FriendError as LinkError, FriendLink, Outgoing};
use toxlink_proto::wire::packed::PackedNode;

pub use toxlink_proto::friend::{FriendConfig, FriendEvent, FriendStats, OfflineReason};

/// Events queued for the application before the friend task waits.
pub const EVENT_QUEUE: usize = 1024;
/// Protocol packets queued for the sender task before new ones are dropped
/// (they are a few per 8 s in normal operation).
const CONTROL_QUEUE: usize = 256;

/// Errors of the [`Friend`] API.
#[derive(Debug, thiserror::Error)]
pub enum FriendError {
    /// The connection refused or is closed.
    #[error(transparent)]
    Connection(#[from] Error),
    /// The friend layer refused the command (not online, bad length or id).
    #[error("friend: {0}")]
    Refused(#[from] LinkError),
}

struct Inner {
    link: Mutex<FriendLink>,
    /// Woken when a command changed the link's timers or queue.
    wake: Notify,
    /// Protocol packets queued for the sender task and not yet handed to
    /// the connection.
    control_pending: AtomicUsize,
    /// Woken when `control_pending` drops to zero.
    control_idle: Notify,
}

impl Inner {
    fn link(&self) -> MutexGuard<'_, FriendLink> {
        // A panic while holding the lock is a bug; keep serving anyway.
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every protocol packet queued so far went to the
    /// connection (or was given up on), so application data sent next
    /// cannot overtake it.
    async fn control_flushed(&self) {
        loop {
            let idle = self.control_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.control_pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// One queued protocol packet was handled.
    fn control_done(&self) {
        if self.control_pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control_idle.notify_waiters();
        }
    }
}

/// A Tox friend on an established [`Connection`].
pub struct Friend {
    conn: Connection,
    inner: Arc<Inner>,
    events: tokio::sync::Mutex<mpsc::Receiver<FriendEvent>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for Friend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Friend")
            .field("peer", &self.conn.peer())
            .field("online", &self.is_online())
            .finish()
    }
}

impl Drop for Friend {
    /// Dropping a friend closes its connection (one KILL to the peer).
    fn drop(&mut self) {
        self.conn.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Friend {
    /// Starts the friend protocol on an established connection (from
    /// [`Node::connect`](crate::Node::connect) or
    /// [`Node::accept`](crate::Node::accept)): sends ONLINE, ALIVE and our
    /// relays at once. Must be called inside a tokio runtime. From now on
    /// read the connection only through [`next_event`](Self::next_event).
    pub fn start(conn: Connection, mut cfg: FriendConfig) -> Friend {
        // Unless told otherwise, share the node's relays (≤ 3 go out,
        // docs/PROTOCOL.md §7.3).
        if cfg.relays.is_empty() {
            cfg.relays = conn.known_relays();
        }
        let mut link = FriendLink::new(cfg);
        link.handle_established(Instant::now());
        let inner = Arc::new(Inner {
            link: Mutex::new(link),
            wake: Notify::new(),
            control_pending: AtomicUsize::new(0),
            control_idle: Notify::new(),
        });
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
        let driver = tokio::spawn(drive(conn.clone(), inner.clone(), ev_tx, ctl_tx));
        let sender = tokio::spawn(send_control(conn.clone(), inner.clone(), ctl_rx));
        Friend {
            conn,
            inner,
            events: tokio::sync::Mutex::new(ev_rx),
            tasks: [driver, sender],
        }
    }

    /// The underlying connection (for its peer key; do not `recv` on it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether the peer is online (its ONLINE arrived).
    pub fn is_online(&self) -> bool {
        self.inner.link().is_online()
    }

    /// Counters of the friend layer.
    pub fn stats(&self) -> FriendStats {
        self.inner.link().stats()
    }

    /// The next event; `None` once the connection is closed and every event
    /// was read.
    pub async fn next_event(&self) -> Option<FriendEvent> {
        self.events.lock().await.recv().await
    }

    /// Sends a chat message (1..=1372 bytes); returns its net_crypto packet
    /// number (delivered once the peer acknowledges it, docs/PROTOCOL.md §7.4).
    pub async fn send_message(&self, text: &[u8]) -> Result<u32, FriendError> {
        let pkt = self.inner.link().message(text)?;
        self.inner.control_flushed().await;
        Ok(self.conn.send_lossless(&pkt).await?)
    }

    /// Sends a chat action ("/me", 1..=1372 bytes).
    pub async fn send_action(&self, text: &[u8]) -> Result<u32, FriendError> {
        let pkt = self.inner.link().action(text)?;
        self.inner.control_flushed().await;
        Ok(self.conn.send_lossless(&pkt).await?)
    }

    /// Sends a custom lossless packet (id 160..=191 first, ≤ 1373 bytes);
    /// waits while the send buffer is full.
    pub async fn send_custom_lossless(&self, data: &[u8]) -> Result<u32, FriendError> {
        self.inner.link().custom_lossless(data)?;
        self.inner.control_flushed().await;
        Ok(self.conn.send_lossless(data).await?)
    }

    /// Sends a custom lossy packet (id 200..=254 first, ≤ 1373 bytes).
    pub fn send_custom_lossy(&self, data: &[u8]) -> Result<(), FriendError> {
        self.inner.link().custom_lossy(data)?;
        Ok(self.conn.send_lossy(data)?)
    }

    /// Sets our nickname (≤ 128 bytes), sent now if online and on every
    /// going-online.
    pub fn set_name(&self, name: &[u8]) -> Result<(), FriendError> {
        self.inner.link().set_name(name)?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Sets our status message (≤ 1007 bytes).
    pub fn set_status_message(&self, text: &[u8]) -> Result<(), FriendError> {
        self.inner.link().set_status_message(text)?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Sets our user status (0 none, 1 away, 2 busy).
    pub fn set_user_status(&self, status: u8) -> Result<(), FriendError> {
        self.inner.link().set_user_status(status)?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Tells the peer whether we are typing (must be online).
    pub fn set_typing(&self, typing: bool) -> Result<(), FriendError> {
        self.inner.link().set_typing(typing)?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Replaces the relays we share (≤ 3 are sent), shared at once.
    pub fn set_relays(&self, relays: Vec<PackedNode>) {
        self.inner.link().set_relays(Instant::now(), relays);
        self.inner.wake.notify_one();
    }

    /// Closes the connection (one KILL goes to the peer).
    pub fn close(&self) {
        self.conn.close();
    }
}

/// Sends the link's protocol packets in order; a full send buffer only
/// delays this task, never the receive side. Once the connection is closed
/// the rest is only counted off (so application sends never wait on it).
async fn send_control(conn: Connection, inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut closed = false;
    while let Some(o) = rx.recv().await {
        if !closed {
            let r = match &o {
                Outgoing::Lossless(d) => conn.send_lossless(d).await.map(drop),
                Outgoing::Lossy(d) => conn.send_lossy(d),
                // A kind this runtime does not know yet: nothing to send.
                _ => Ok(()),
            };
            match r {
                Ok(()) => {}
                Err(Error::Closed) => closed = true,
                Err(e) => tracing::debug!(error = %e, "friend: control packet refused"),
            }
        }
        inner.control_done();
    }
}

/// Moves the link's output to the sender and the application; returns false
/// once the application or the sender is gone.
async fn flush(
    conn: &Connection,
    inner: &Inner,
    events: &mpsc::Sender<FriendEvent>,
    control: &mpsc::Sender<Outgoing>,
) -> bool {
    loop {
        let (out, ev, close) = {
            let mut l = inner.link();
            let mut out = Vec::new();
            while let Some(o) = l.poll_transmit() {
                out.push(o);
            }
            (out, l.poll_event(), l.wants_close())
        };
        for o in out {
            inner.control_pending.fetch_add(1, Ordering::AcqRel);
            if control.try_send(o).is_err() {
                inner.control_done();
                tracing::debug!("friend: control queue full, packet dropped");
            }
        }
        if close {
            conn.close();
        }
        match ev {
            Some(e) => {
                if let FriendEvent::ShareRelays(list) = &e {
                    // Relays the friend is on, as its word (the link reports
                    // them only while the friend is online): for this
                    // friend's connection (docs/DESIGN.md §3, "Framing").
                    conn.learn_friend_relays(list);
                }
                if events.send(e).await.is_err() {
                    return false;
                }
            }
            None => return true,
        }
    }
}

async fn drive(
    conn: Connection,
    inner: Arc<Inner>,
    events: mpsc::Sender<FriendEvent>,
    control: mpsc::Sender<Outgoing>,
) {
    loop {
        if !flush(&conn, &inner, &events, &control).await {
            return;
        }
        let deadline = inner.link().poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = conn.recv() => {
                let now = Instant::now();
                match r {
                    Some(Received::Lossless(d)) => inner.link().handle_lossless(now, &d),
                    Some(Received::Lossy(d)) => inner.link().handle_lossy(now, &d),
                    None => {
                        inner.link().handle_closed(now);
                        flush(&conn, &inner, &events, &control).await;
                        return;
                    }
                }
            }
            _ = sleep => inner.link().handle_timeout(Instant::now()),
            _ = inner.wake.notified() => {}
        }
    }
}
