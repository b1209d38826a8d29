//! Push-back onto senders (issue #14 item 8): a sender whose DATA goes to a
//! receiver that cannot take more is not read for a while, so that TCP flow
//! control holds its bytes in its own socket instead of the relay reading,
//! decrypting and dropping them while honest pairs wait for the CPU.
//!
//! A sender is *paused* when a DATA frame it sent leaves the receiver
//! without room for another frame of that size: the receiver's queue is
//! full, or the global budget is and the receiver already has data waiting
//! (a receiver with nothing queued drains nothing, so it never pauses
//! anyone). While paused, [`Server::read_paused`] is true and the runtime
//! does not read from the sender; bytes fed anyway are handled as usual. The
//! sender resumes, and is woken ([`Server::poll_wake`]) so that the runtime
//! notices, when that receiver has drained to half of
//! [`ServerConfig::queue_bytes`](super::ServerConfig::queue_bytes), when
//! either end is gone (a receiver that never reads is closed after
//! `slow_consumer_timeout`), or after [`MAX_READ_PAUSE`] at most: a
//! receiver that reads slowly holds up its senders' other routes no longer
//! than that, and a flooder is read for one buffer per pause. A paused
//! sender is sent a PING at every pause: its own PINGs wait behind its flood,
//! and without a frame from the relay its client would declare the link
//! dead.
//!
//! The price, as with any TCP push-back: a link carries all its sender's
//! routes, so while it is paused its DATA to other peers and its PINGs wait
//! too. A sender under congestion control (net_crypto) slows down towards a
//! peer that acknowledges nothing long before that peer's queue is full; a
//! raw flood is what gets paused.
//!
//! Each sender waits on one receiver at a time; a receiver lists the
//! senders waiting on it, each once, so the lists are bounded by the
//! number of connections.

use super::conn::{Conn, State};
use super::{ConnId, Server};
use crate::wire::relay::RelayPacket;
use rand_core::CryptoRngCore;
use std::time::{Duration, Instant};

/// The longest a sender is not read for one full receiver. Short: a sender
/// sharing its link between a receiver that stopped reading and other peers
/// has those peers' DATA (and its PINGs) wait behind the flood in its own
/// socket, read one buffer per pause, until that receiver drains or is
/// closed as a slow consumer.
pub const MAX_READ_PAUSE: Duration = Duration::from_millis(250);

impl<R: CryptoRngCore> Server<R> {
    /// Whether the runtime should not read from `conn` for now: DATA it
    /// sent filled a receiver's queue (see the module documentation). The
    /// server wakes it ([`poll_wake`](Self::poll_wake)) when this ends.
    pub fn read_paused(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| c.paused.is_some())
    }

    /// After a DATA frame of `frame` bytes went from `from` to `to`: pauses
    /// `from` if `to` has no room for another one.
    pub(super) fn push_back(&mut self, now: Instant, from: ConnId, to: ConnId, frame: usize) {
        let Some(r) = self.clients.get(&to) else {
            return;
        };
        let queued = r.out.data_len();
        let full = queued + frame > self.cfg.queue_bytes
            || (queued > 0 && self.queued_total + frame > self.cfg.total_queue_bytes);
        if !full || from == to {
            return;
        }
        let Some(c) = self.clients.get_mut(&from) else {
            return;
        };
        if c.paused.is_some() {
            return;
        }
        c.paused = Some((now, to));
        self.paused.insert((now, from));
        if let Some(r) = self.clients.get_mut(&to) {
            r.blocked.push(from);
        }
        self.counters.read_pauses += 1;
        tracing::trace!(?from, ?to, "relay: receiver full, not reading its sender");
        self.arm(now + MAX_READ_PAUSE);
        self.keep_alive(now, from);
    }

    /// A paused sender's own PINGs wait unread behind its flood, so its
    /// client hears nothing from us and would declare the link dead: a PING
    /// of ours (renewing any outstanding one, so the PONG deadline runs from
    /// now) tells it the relay is there.
    fn keep_alive(&mut self, now: Instant, conn: ConnId) {
        let mut ping_id = [0u8; 8];
        // Bounded: four zero ids in a row from a CSPRNG do not happen.
        for _ in 0..4 {
            self.rng.fill_bytes(&mut ping_id);
            if ping_id != [0; 8] {
                break;
            }
        }
        if ping_id == [0; 8] {
            ping_id = [1; 8];
        }
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.state != State::Confirmed {
            return;
        }
        c.ping = Some((ping_id, now));
        c.next_ping = now + self.cfg.ping_interval;
        self.counters.pings_sent += 1;
        self.arm(now + self.cfg.ping_timeout);
        self.send_prio(conn, &RelayPacket::Ping { ping_id });
    }

    /// Reads from `conn` again (woken, so the runtime notices).
    fn resume(&mut self, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let Some((since, to)) = c.paused.take() else {
            return;
        };
        self.paused.remove(&(since, conn));
        if let Some(r) = self.clients.get_mut(&to) {
            // At most one entry per sender.
            if let Some(i) = r.blocked.iter().position(|&s| s == conn) {
                r.blocked.swap_remove(i);
            }
        }
        self.wake(conn);
    }

    /// `conn` drained some of its data: the senders waiting on it resume
    /// once it is down to half its queue.
    pub(super) fn resume_blocked(&mut self, conn: ConnId) {
        let half = self.cfg.queue_bytes / 2;
        let Some(r) = self.clients.get_mut(&conn) else {
            return;
        };
        if r.blocked.is_empty() || r.out.data_len() > half {
            return;
        }
        for s in std::mem::take(&mut r.blocked) {
            self.resume(s);
        }
    }

    /// Ends the pauses older than [`MAX_READ_PAUSE`]; returns when the next
    /// one ends.
    pub(super) fn expire_pauses(&mut self, now: Instant) -> Option<Instant> {
        // Bounded: every round takes the first entry out of the set.
        while let Some(&(since, id)) = self.paused.first() {
            let end = since + MAX_READ_PAUSE;
            if end > now {
                return Some(end);
            }
            self.resume(id);
            // A stale entry (cannot happen, the set is kept in step with the
            // table) goes too.
            self.paused.remove(&(since, id));
        }
        None
    }

    /// `c`, just taken out of the table, leaves the pause bookkeeping: it no
    /// longer waits, and whoever waited on it resumes.
    pub(super) fn forget_pauses(&mut self, conn: ConnId, c: &Conn) {
        if let Some((since, to)) = c.paused {
            self.paused.remove(&(since, conn));
            if let Some(r) = self.clients.get_mut(&to) {
                if let Some(i) = r.blocked.iter().position(|&s| s == conn) {
                    r.blocked.swap_remove(i);
                }
            }
        }
        for &s in &c.blocked {
            self.resume(s);
        }
    }
}
