//! Per-connection state: the link's handshake state, its slots, buffers,
//! keep-alive, stall clock and OOB budget.

use super::{ConnId, ServerConfig};
use crate::crypto::PublicKey;
use crate::relay_queue::FrameQueue;
use crate::wire::relay::SecureChannel;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Hasher for [`ConnId`] keys: ids are runtime counters, a multiplicative
/// mix is enough and much cheaper than SipHash on the forwarding path.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

pub(super) type IdMap<V> = HashMap<ConnId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for the 128-byte hello (bytes gathered in `rx`).
    AwaitHello,
    /// Replied; waiting for the first valid frame.
    Unconfirmed,
    /// Confirmed (§2.2): reachable by routes and OOB.
    Confirmed,
}

/// One slot of a link (§2.4): index 0..240 (wire id 16 + index).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) index: u8,
    pub(super) peer: PublicKey,
    /// The other end when connected: its connection and slot index.
    pub(super) link: Option<(ConnId, u8)>,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) state: State,
    pub(super) pk: PublicKey,
    pub(super) chan: Option<SecureChannel>,
    /// Partial input: the hello, or one incomplete frame.
    pub(super) rx: Vec<u8>,
    pub(super) out: FrameQueue,
    /// Sorted by index.
    pub(super) slots: Vec<Slot>,
    pub(super) accepted_at: Instant,
    pub(super) next_ping: Instant,
    /// Outstanding PING: its id and when it was sent.
    pub(super) ping: Option<([u8; 8], Instant)>,
    /// Already listed in `wakes`.
    pub(super) woken: bool,
    /// The peer's address as counted for the per-address limits.
    pub(super) ip: IpAddr,
    /// Accept order (for the eviction policy).
    pub(super) seq: u64,
    /// Since when its queued data has waited with nothing drained (None
    /// while its data queue is empty).
    pub(super) stalled_since: Option<Instant>,
    /// Listed in `restarted`.
    pub(super) restart_pending: bool,
    /// OOB token bucket: bytes it may still send, refilled at `oob_at`.
    pub(super) oob_tokens: u64,
    pub(super) oob_at: Instant,
    /// Not read (push-back) since then, for this full receiver.
    pub(super) paused: Option<(Instant, ConnId)>,
    /// Senders paused for this receiver (each once).
    pub(super) blocked: Vec<ConnId>,
}

impl Conn {
    pub(super) fn slot_by_peer(&self, pk: &PublicKey) -> Option<usize> {
        self.slots.iter().position(|s| s.peer == *pk)
    }

    pub(super) fn slot_pos(&self, index: u8) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&index, |s| s.index)
    }

    pub(super) fn deadline(&self, cfg: &ServerConfig) -> Instant {
        match self.state {
            State::AwaitHello | State::Unconfirmed => self.accepted_at + cfg.handshake_timeout,
            State::Confirmed => match self.ping {
                Some((_, sent)) => sent + cfg.ping_timeout,
                None => self.next_ping,
            },
        }
    }

    /// Refills the OOB bucket and takes `cost` bytes if there are enough.
    pub(super) fn take_oob(&mut self, now: Instant, rate: usize, cost: usize) -> bool {
        let rate = rate as u64;
        let dt = now.saturating_duration_since(self.oob_at);
        let add = (dt.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000)
            .min(u128::from(rate)) as u64;
        if add > 0 {
            self.oob_tokens = (self.oob_tokens + add).min(rate);
            self.oob_at = now;
        }
        let cost = cost as u64;
        if self.oob_tokens < cost {
            return false;
        }
        self.oob_tokens -= cost;
        true
    }
}
