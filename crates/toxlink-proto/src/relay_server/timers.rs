//! Timers and closing: handshake and ping timeouts, keep-alive PINGs, the
//! slow-consumer stall clock, and tearing a connection down.

use super::conn::State;
use super::{CloseReason, ConnId, Server};
use crate::wire::relay::RelayPacket;
use rand_core::CryptoRngCore;
use std::time::Instant;

impl<R: CryptoRngCore> Server<R> {
    /// Timers: handshake timeouts, keep-alive pings, ping timeouts, delayed
    /// (fault-injected) packets, freeing idle buffers. Call at
    /// [`poll_timeout`](Self::poll_timeout) or later; calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
        self.release_delayed(now);
        let mut next: Option<Instant> = self.delayed.front().map(|d| d.at);
        let mut to_close = Vec::new();
        let mut to_ping = Vec::new();
        for (&id, c) in self.clients.iter_mut() {
            match c.state {
                State::AwaitHello | State::Unconfirmed => {
                    if now >= c.accepted_at + self.cfg.handshake_timeout {
                        to_close.push((id, CloseReason::HandshakeTimeout));
                        continue;
                    }
                }
                State::Confirmed => match c.ping {
                    Some((_, sent)) if now >= sent + self.cfg.ping_timeout => {
                        to_close.push((id, CloseReason::PingTimeout));
                        continue;
                    }
                    None if now >= c.next_ping => to_ping.push(id),
                    _ => {}
                },
            }
            if c.out.is_empty() {
                c.out.shrink_idle();
            }
            if c.rx.is_empty() && c.rx.capacity() > 0 {
                c.rx = Vec::new();
            }
            let d = c.deadline(&self.cfg);
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        for id in to_ping {
            let mut ping_id = [0u8; 8];
            while ping_id == [0; 8] {
                self.rng.fill_bytes(&mut ping_id);
            }
            if let Some(c) = self.clients.get_mut(&id) {
                c.ping = Some((ping_id, now));
                c.next_ping = now + self.cfg.ping_interval;
                let d = now + self.cfg.ping_timeout;
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            self.counters.pings_sent += 1;
            self.send_prio(id, &RelayPacket::Ping { ping_id });
        }
        for (id, r) in to_close {
            self.close(id, r);
        }
        // Receivers stalled past the deadline (bounded by the set's size).
        while let Some(&(since, id)) = self.stalled.first() {
            let deadline = since + self.cfg.slow_consumer_timeout;
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                break;
            }
            tracing::debug!(?id, "relay: receiver stalled past the deadline");
            if !self.close(id, CloseReason::SlowConsumer) {
                // Not a client any more: a stale entry (cannot happen, the
                // set is kept in step with the table).
                self.stalled.remove(&(since, id));
            }
        }
        // Push-back pauses that lasted MAX_READ_PAUSE.
        if let Some(end) = self.expire_pauses(now) {
            next = Some(next.map_or(end, |n| n.min(end)));
        }
        self.next_timeout = next;
    }

    /// Forgets a connection and asks the runtime to close it. False if it
    /// was not known.
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) -> bool {
        if self.remove(conn, reason) {
            tracing::debug!(?conn, ?reason, "relay closing client");
            self.closes.push_back((conn, reason));
            return true;
        }
        false
    }

    /// Restarts the stall clock of the connections drained since the last
    /// call (each listed once).
    pub(super) fn settle(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.restarted) {
            if let Some(c) = self.clients.get_mut(&conn) {
                c.restart_pending = false;
                if c.out.data_len() > 0 {
                    self.mark_waiting(now, conn);
                }
            }
        }
    }

    /// Starts the stall clock of `conn` at `at` (data now waits for it).
    pub(super) fn mark_waiting(&mut self, at: Instant, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.stalled_since.is_none() {
            c.stalled_since = Some(at);
            self.stalled.insert((at, conn));
            self.arm(at + self.cfg.slow_consumer_timeout);
        }
    }

    /// Removes a connection, tearing down its routes (§2.5: peers get
    /// DISCONNECT_NOTIFICATION and fall back to "requested").
    pub(super) fn remove(&mut self, conn: ConnId, reason: CloseReason) -> bool {
        let Some(c) = self.clients.remove(&conn) else {
            return false;
        };
        self.counters.closes.bump(reason);
        self.forget_pauses(conn, &c);
        self.queued_total = self.queued_total.saturating_sub(c.out.data_len());
        if let Some(since) = c.stalled_since {
            self.stalled.remove(&(since, conn));
        }
        match c.state {
            State::Confirmed => {
                if self.by_key.get(&c.pk) == Some(&conn) {
                    self.by_key.remove(&c.pk);
                }
            }
            State::AwaitHello | State::Unconfirmed => self.forget_unconfirmed(c.ip, c.seq, conn),
        }
        if let Some(st) = self.ips.get_mut(&c.ip) {
            st.conns = st.conns.saturating_sub(1);
            if st.conns == 0 {
                self.ips.remove(&c.ip);
            }
        }
        for s in &c.slots {
            if let Some((other, j)) = s.link {
                self.unlink(other, j);
            }
        }
        true
    }
}
