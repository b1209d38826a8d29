//! Forwarding and queues: DATA and OOB to their receivers within the
//! per-client and global bounds, pressure closes, the fault hook's delayed
//! packets, priority frames.

use super::fault::{self, FaultAction};
use super::{CloseReason, ConnId, ForwardDrop, Server};
use crate::crypto::PublicKey;
use crate::wire::relay::{RelayPacket, NUM_RESERVED_PORTS};
use rand_core::CryptoRngCore;
use std::time::{Duration, Instant};

/// How long a receiver must have been stalled (data queue full, nothing
/// drained) before it is closed to make room when the global queue budget
/// is full. Long enough that a receiver which reads is never picked (its
/// runtime drains a batch every few milliseconds), short enough that honest
/// traffic barely notices a flood of receivers that do not read.
pub const PRESSURE_STALL: Duration = Duration::from_millis(250);

/// Closes at most this many stalled receivers to make room for one packet.
const MAX_PRESSURE_CLOSES: usize = 4;

/// A packet held back by the fault injector.
#[derive(Debug)]
pub(super) struct Delayed {
    pub(super) at: Instant,
    pub(super) to: ConnId,
    pub(super) slot_id: u8,
    pub(super) payload: Vec<u8>,
}

impl<R: CryptoRngCore> Server<R> {
    /// §2.5 DATA. False if the sender was closed.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        conn: ConnId,
        connection_id: u8,
        data: &[u8],
    ) -> bool {
        let Some(c) = self.clients.get(&conn) else {
            return false;
        };
        let pos = connection_id
            .checked_sub(NUM_RESERVED_PORTS)
            .and_then(|i| c.slot_pos(i).ok());
        let Some(pos) = pos else {
            self.close(conn, CloseReason::ProtocolViolation);
            return false;
        };
        let Some((to, j)) = c.slots[pos].link else {
            self.counters.drop(ForwardDrop::NotConnected);
            return true;
        };
        let slot_id = NUM_RESERVED_PORTS + j;
        let from = (c.pk, c.accepted_at);
        let to_end = self.clients.get(&to).map(|r| (r.pk, r.accepted_at));
        let action = match (self.fault.as_mut(), to_end) {
            (Some(f), Some((to_pk, to_at)))
                if f.applies(&fault::Forwarded {
                    from: (&from.0, from.1),
                    to: (&to_pk, to_at),
                    len: data.len(),
                }) =>
            {
                f.decide(now)
            }
            _ => FaultAction::Pass,
        };
        match action {
            FaultAction::Pass | FaultAction::Corrupt => {
                self.push_data(now, to, slot_id, data, action == FaultAction::Corrupt);
                let frame = data.len() + 1 + crate::wire::relay::FRAME_OVERHEAD;
                self.push_back(now, conn, to, frame);
            }
            FaultAction::Drop => self.counters.drop(ForwardDrop::Fault),
            FaultAction::Delay(d) => {
                self.counters.fault_delayed += 1;
                if self.delayed.len() >= 1 << 16 {
                    self.counters.drop(ForwardDrop::Fault);
                } else {
                    let at = now + d;
                    self.delayed.push_back(Delayed {
                        at,
                        to,
                        slot_id,
                        payload: data.to_vec(),
                    });
                    self.arm(at);
                }
            }
        }
        // The sender itself may have been closed to make room (it was
        // stalled under pressure).
        self.clients.contains_key(&conn)
    }

    pub(super) fn release_delayed(&mut self, now: Instant) {
        while self.delayed.front().is_some_and(|d| d.at <= now) {
            let Some(d) = self.delayed.pop_front() else {
                break;
            };
            // Deliver only if the receiver still holds that connected slot.
            let live = self.clients.get(&d.to).is_some_and(|c| {
                c.slot_pos(d.slot_id - NUM_RESERVED_PORTS)
                    .is_ok_and(|p| c.slots[p].link.is_some())
            });
            if live {
                self.push_data(now, d.to, d.slot_id, &d.payload, false);
            }
        }
    }

    /// Queues a forwarded DATA frame for `to`, or drops it (counted).
    pub(super) fn push_data(
        &mut self,
        now: Instant,
        to: ConnId,
        slot_id: u8,
        data: &[u8],
        corrupt: bool,
    ) {
        let frame = data.len() + 1 + crate::wire::relay::FRAME_OVERHEAD;
        if !self.room_for(now, to, frame, self.cfg.queue_bytes) {
            return;
        }
        let Some(r) = self.clients.get_mut(&to) else {
            return;
        };
        let was_empty = r.out.data_len() == 0;
        let queued = r.out.push_data_bytes(slot_id, data);
        if corrupt {
            if let Some(f) = self.fault.as_mut() {
                f.corrupt(queued);
            }
            self.counters.fault_corrupted += 1;
        }
        self.queued_total += frame;
        self.counters.data_packets += 1;
        self.counters.data_bytes += data.len() as u64;
        if was_empty {
            self.mark_waiting(now, to);
        }
        self.wake(to);
    }

    /// Whether a data frame of `frame` bytes may be queued to `to`, whose
    /// queue may hold `bound` bytes: drops (counted) otherwise. A receiver
    /// whose own queue is full becomes stalled; a full global budget closes
    /// receivers stalled for [`PRESSURE_STALL`] (longest first) to make room.
    pub(super) fn room_for(
        &mut self,
        now: Instant,
        to: ConnId,
        frame: usize,
        bound: usize,
    ) -> bool {
        let Some(r) = self.clients.get_mut(&to) else {
            return false;
        };
        if r.out.data_len() + frame > bound {
            self.counters.drop(ForwardDrop::QueueFull);
            return false;
        }
        for _ in 0..MAX_PRESSURE_CLOSES {
            if self.queued_total + frame <= self.cfg.total_queue_bytes {
                return true;
            }
            let victim = self
                .stalled
                .iter()
                .take(2)
                .find(|&&(since, id)| id != to && now >= since + PRESSURE_STALL)
                .copied();
            let Some((_, id)) = victim else {
                break;
            };
            tracing::debug!(
                ?id,
                "relay: closing a stalled receiver, the queue budget is full"
            );
            self.counters.slow_consumer_evictions += 1;
            self.close(id, CloseReason::SlowConsumer);
        }
        if self.queued_total + frame > self.cfg.total_queue_bytes {
            self.counters.drop(ForwardDrop::TotalQueueFull);
            return false;
        }
        true
    }

    /// §2.5 OOB_SEND: delivered to a confirmed link only, no feedback;
    /// charged to the sender's OOB budget, queued only while the receiver's
    /// queue is under half full.
    pub(super) fn oob(&mut self, now: Instant, conn: ConnId, destination: PublicKey, data: &[u8]) {
        let Some(sender) = self.clients.get(&conn).map(|c| c.pk) else {
            return;
        };
        tracing::trace!(?conn, ?sender, ?destination, len = data.len(), "relay: OOB");
        let Some(&to) = self.by_key.get(&destination) else {
            self.counters.drop(ForwardDrop::OobNoDestination);
            return;
        };
        let packet = RelayPacket::OobRecv { sender, data };
        let frame = packet.encoded_len() + crate::wire::relay::FRAME_OVERHEAD;
        let rate = self.cfg.oob_bytes_per_sec;
        let charged = self
            .clients
            .get_mut(&conn)
            .is_some_and(|c| c.take_oob(now, rate, frame));
        if !charged {
            self.counters.drop(ForwardDrop::OobRateLimited);
            return;
        }
        if !self.room_for(now, to, frame, self.cfg.queue_bytes / 2) {
            return;
        }
        let Some(r) = self.clients.get_mut(&to) else {
            return;
        };
        let was_empty = r.out.data_len() == 0;
        if r.out.push_data(&packet).is_ok() {
            self.queued_total += frame;
            self.counters.oob_packets += 1;
            self.counters.oob_bytes += data.len() as u64;
            if was_empty {
                self.mark_waiting(now, to);
            }
            self.wake(to);
        }
    }

    /// Queues a priority frame; closes a receiver whose priority backlog is
    /// over its bound (control frames are never dropped).
    pub(super) fn send_prio(&mut self, conn: ConnId, packet: &RelayPacket<'_>) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.out.prio_len() + packet.encoded_len() > self.cfg.priority_queue_bytes {
            self.close(conn, CloseReason::SlowConsumer);
            return;
        }
        if c.out.push_prio(packet).is_ok() {
            self.wake(conn);
        }
    }
}
