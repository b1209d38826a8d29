//! The reliable layer of a net_crypto connection (docs/PROTOCOL.md §4.6–§4.10):
//! packet numbers, the send and receive buffers, request packets, and the
//! 2-byte data nonce reconstruction with replay protection.
//!
//! Invariants:
//! * Packet numbers are `u32` and wrap; every comparison is done on
//!   `wrapping_sub` distances, never on raw values.
//! * The send buffer holds `[send_start, send_end)`, at most
//!   `capacity ≤ 32768` packets (§4.10); a full buffer refuses new data
//!   (backpressure), it never grows.
//! * The receive buffer holds `[recv_start, recv_end)` with holes; a packet
//!   whose number is `≥ recv_start + 32768` or below `recv_start` is dropped;
//!   a number is stored at most once (duplicate suppression) and delivered in
//!   order exactly once.
//! * Acknowledgement information is monotonic: a packet the peer once said it
//!   received stays received, so stale or reordered request packets can only
//!   cause spurious resends, never a false acknowledgement. Request packets
//!   are decoded (with [`crate::wire::net_crypto::RequestDecoder`]) relative
//!   to *their own* `buffer_start`, not ours.
//! * The RX nonce (§4.6) only moves forward and only after a packet
//!   authenticated; a 65536-bit window additionally rejects any nonce seen
//!   before (a replayed or duplicated datagram is processed once).

use crate::crypto::Nonce;
use std::collections::VecDeque;
use std::time::Instant;

/// `CRYPTO_PACKET_BUFFER_SIZE` (§4.8, §4.10).
pub const PACKET_BUFFER_SIZE: u32 = 32768;
/// `MAX_CRYPTO_DATA_SIZE` (§4.7): data bytes (id included) per packet.
pub use crate::wire::net_crypto::MAX_CRYPTO_DATA_SIZE as MAX_DATA_SIZE;
use crate::wire::net_crypto::{packet_id, DATA_NUM_THRESHOLD};

/// Writes a request packet body (`0x01` and the missing-packet list, §4.9)
/// into `out` and returns its length: the same bytes as
/// [`wire::net_crypto::encode_request`](crate::wire::net_crypto::encode_request)
/// (checked by a property test), but the first `prefix` packets from
/// `recv_start`, known to be present, are skipped in O(prefix / 255) — the
/// receiver calls this for every acknowledgement.
pub fn encode_request_with_prefix(
    recv_start: u32,
    recv_end: u32,
    prefix: u32,
    mut present: impl FnMut(u32) -> bool,
    out: &mut [u8],
) -> usize {
    let Some(first) = out.first_mut() else {
        return 0;
    };
    *first = packet_id::REQUEST;
    let mut len = 1;
    let mut n: u32 = 1;
    let count = recv_end.wrapping_sub(recv_start).min(PACKET_BUFFER_SIZE);
    let mut k = 0u32;
    // Present run: a `0` each time n reaches 255, then n restarts at 1.
    let mut run = prefix.min(count);
    while run > 0 {
        let to_hit = 255 - n; // steps before the one where n == 255
        if run > to_hit {
            if len >= out.len() {
                return len;
            }
            out[len] = 0;
            len += 1;
            run -= to_hit + 1;
            k += to_hit + 1;
            n = 1;
        } else {
            n += run;
            k += run;
            run = 0;
        }
    }
    while k < count {
        let i = recv_start.wrapping_add(k);
        if !present(i) {
            if len >= out.len() {
                break;
            }
            out[len] = n as u8;
            len += 1;
            n = 0;
        } else if n == 255 {
            if len >= out.len() {
                break;
            }
            out[len] = 0;
            len += 1;
            n = 0;
        }
        n += 1;
        k += 1;
    }
    len
}

/// The RX side of the data nonce (§4.6) plus a replay window.
#[derive(Clone)]
pub struct RxNonce {
    rx: Nonce,
    /// Offsets seen, indexed by `offset mod 65536`, relative to the base.
    seen: Box<[u64; 1024]>,
    /// How far `rx` has moved from the base nonce (in packets).
    rx_offset: u64,
}

impl std::fmt::Debug for RxNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxNonce")
            .field("rx", &self.rx)
            .field("rx_offset", &self.rx_offset)
            .finish()
    }
}

/// A reconstructed nonce, to be confirmed with [`RxNonce::accept`] after the
/// packet authenticated.
#[derive(Debug, Clone, Copy)]
pub struct RxCandidate {
    /// The full nonce to decrypt with.
    pub nonce: Nonce,
    diff: u16,
}

impl RxNonce {
    /// Starts at the peer's base nonce.
    pub fn new(base: Nonce) -> Self {
        RxNonce {
            rx: base,
            seen: Box::new([0; 1024]),
            rx_offset: 0,
        }
    }

    /// The nonce for a packet whose header carries `low` (§4.6).
    pub fn candidate(&self, low: u16) -> RxCandidate {
        let (nonce, diff) = crate::wire::net_crypto::reconstruct_nonce(&self.rx, low);
        RxCandidate { nonce, diff }
    }

    /// The nonce a packet carrying `low` had if it was sent one window
    /// *before* the current one (a stale packet, e.g. released by a relay
    /// or a path that was black-holed for a while): `None` when that would
    /// be before the peer's base nonce. Such a packet fails to open with
    /// [`candidate`](Self::candidate)'s nonce through no fault of the path
    /// that carried it.
    pub fn stale(&self, low: u16) -> Option<Nonce> {
        let (n, back) = crate::wire::net_crypto::reconstruct_stale_nonce(&self.rx, low);
        (u64::from(back) <= self.rx_offset).then_some(n)
    }

    /// Whether a packet with `c` would be new (not a duplicate); changes
    /// nothing.
    pub fn is_new(&self, c: &RxCandidate) -> bool {
        let off = self.rx_offset + u64::from(c.diff);
        let idx = (off % 65536) as usize;
        self.seen[idx / 64] & (1 << (idx % 64)) == 0
    }

    /// After a packet with `c` authenticated: returns false if this nonce was
    /// already seen (a duplicate datagram), otherwise records it and moves
    /// the window forward when `diff > 2·21845` (§4.6).
    pub fn accept(&mut self, c: RxCandidate) -> bool {
        let off = self.rx_offset + u64::from(c.diff);
        let idx = (off % 65536) as usize;
        let (word, bit) = (idx / 64, idx % 64);
        if self.seen[word] & (1 << bit) != 0 {
            return false;
        }
        self.seen[word] |= 1 << bit;
        if u32::from(c.diff) > 2 * DATA_NUM_THRESHOLD {
            // Offsets [rx_offset, rx_offset + 21845) become unreachable; the
            // same slots now stand for the offsets 65536 later: clear them.
            for o in self.rx_offset..self.rx_offset + u64::from(DATA_NUM_THRESHOLD) {
                let i = (o % 65536) as usize;
                self.seen[i / 64] &= !(1 << (i % 64));
            }
            crate::wire::net_crypto::advance_rx_nonce(&mut self.rx, c.diff);
            self.rx_offset += u64::from(DATA_NUM_THRESHOLD);
        }
        true
    }
}

/// One lossless packet in the send buffer.
#[derive(Debug)]
pub struct SentPacket {
    /// The data (id byte first).
    pub data: Vec<u8>,
    /// Last transmission time; `None` before the first.
    pub sent_time: Option<Instant>,
    /// Counted in flight (sent, not acknowledged, not declared lost).
    pub in_flight: bool,
    /// Queued for retransmission.
    pub lost: bool,
    /// Acknowledged by a request packet (freed, waits for `buffer_start`).
    pub acked: bool,
    /// Transmitted more than once.
    pub retransmitted: bool,
    /// Congestion-control bookkeeping taken at the last send.
    pub cc: super::congestion::SendStamp,
    /// The path the owner last sent it on, if reported.
    pub path: Option<super::PathId>,
}

/// The send buffer `[start, end)` (§4.10).
#[derive(Debug)]
pub struct SendBuffer {
    start: u32,
    slots: VecDeque<SentPacket>,
    capacity: u32,
    /// First number never transmitted.
    next_new: u32,
    /// Numbers queued for retransmission (checked against `lost` on use).
    resend: VecDeque<u32>,
    free: Vec<Vec<u8>>,
}

impl SendBuffer {
    /// An empty buffer whose first number is `start`.
    pub fn new(start: u32, capacity: u32) -> Self {
        SendBuffer {
            start,
            slots: VecDeque::new(),
            capacity: capacity.clamp(1, PACKET_BUFFER_SIZE),
            next_new: start,
            resend: VecDeque::new(),
            free: Vec::new(),
        }
    }

    /// `send_start`.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// `send_end`: the next number to assign.
    pub fn end(&self) -> u32 {
        self.start.wrapping_add(self.slots.len() as u32)
    }

    /// Packets held.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Free slots.
    pub fn free_slots(&self) -> u32 {
        self.capacity - self.len()
    }

    /// Appends a packet; `None` when the buffer is full.
    pub fn push(&mut self, data: &[u8]) -> Option<u32> {
        if self.len() >= self.capacity {
            return None;
        }
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        let n = self.end();
        self.slots.push_back(SentPacket {
            data: v,
            sent_time: None,
            in_flight: false,
            lost: false,
            acked: false,
            retransmitted: false,
            cc: Default::default(),
            path: None,
        });
        Some(n)
    }

    /// The packet numbered `n`, if held.
    pub fn get(&self, n: u32) -> Option<&SentPacket> {
        self.slots.get(n.wrapping_sub(self.start) as usize)
    }

    /// The packet numbered `n`, if held.
    pub fn get_mut(&mut self, n: u32) -> Option<&mut SentPacket> {
        self.slots.get_mut(n.wrapping_sub(self.start) as usize)
    }

    /// Whether `n` lies in `[start, end)`.
    pub fn contains(&self, n: u32) -> bool {
        n.wrapping_sub(self.start) < self.len()
    }

    /// Whether `buffer_start` from the peer is acceptable: within
    /// `[start, end]` (a value behind `start`, from a reordered packet, is
    /// acceptable too but acknowledges nothing new).
    pub fn ack_in_range(&self, buffer_start: u32) -> bool {
        buffer_start.wrapping_sub(self.start) <= self.len()
            || self.start.wrapping_sub(buffer_start) <= PACKET_BUFFER_SIZE
    }

    /// Frees every packet below `buffer_start` (§4.7 step 1) and calls `f`
    /// for each one that was not yet acknowledged.
    pub fn ack_below(&mut self, buffer_start: u32, mut f: impl FnMut(u32, &SentPacket)) {
        let k = buffer_start.wrapping_sub(self.start);
        if k == 0 || k > self.len() {
            return;
        }
        for _ in 0..k {
            if let Some(p) = self.slots.pop_front() {
                if !p.acked {
                    f(self.start, &p);
                }
                let mut d = p.data;
                if self.free.len() < 64 {
                    d.clear();
                    self.free.push(d);
                }
            }
            self.start = self.start.wrapping_add(1);
        }
        if self.next_new.wrapping_sub(self.start) > self.len() {
            self.next_new = self.start;
        }
    }

    /// Marks `n` as acknowledged by a request packet; returns true if it was
    /// not before. The data is released.
    pub fn mark_acked(&mut self, n: u32) -> bool {
        match self.get_mut(n) {
            Some(p) if !p.acked && p.sent_time.is_some() => {
                p.acked = true;
                p.lost = false;
                p.data = Vec::new();
                true
            }
            _ => false,
        }
    }

    /// Queues `n` for retransmission (unless already queued or acked).
    pub fn mark_lost(&mut self, n: u32) -> bool {
        match self.get_mut(n) {
            Some(p) if !p.acked && !p.lost && p.sent_time.is_some() => {
                p.lost = true;
                self.resend.push_back(n);
                true
            }
            _ => false,
        }
    }

    /// The next number to retransmit, if any.
    pub fn next_resend(&mut self) -> Option<u32> {
        while let Some(&n) = self.resend.front() {
            match self.get(n) {
                Some(p) if p.lost && !p.acked => return Some(n),
                _ => {
                    self.resend.pop_front();
                }
            }
        }
        None
    }

    /// Removes the head of the resend queue (after [`next_resend`](Self::next_resend)).
    pub fn pop_resend(&mut self) {
        self.resend.pop_front();
    }

    /// The next never-sent number, if any.
    pub fn next_new(&self) -> Option<u32> {
        self.contains(self.next_new).then_some(self.next_new)
    }

    /// Advances past the never-sent head.
    pub fn advance_new(&mut self) {
        self.next_new = self.next_new.wrapping_add(1);
    }

    /// Whether retransmissions or new packets wait.
    pub fn has_pending(&mut self) -> bool {
        self.next_resend().is_some() || self.next_new().is_some()
    }

    /// Numbers `[start, next_new)` (everything transmitted at least once).
    pub fn sent_range(&self) -> (u32, u32) {
        (self.start, self.next_new)
    }
}

/// The receive buffer `[start, end)` with holes (§4.10).
#[derive(Debug)]
pub struct RecvBuffer {
    start: u32,
    end: u32,
    slots: VecDeque<Option<Vec<u8>>>,
    /// First number ≥ start that is missing (everything before is present).
    contig: u32,
}

/// What storing a lossless packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// New packet stored.
    New {
        /// It arrived beyond the previous end, leaving a hole.
        hole: bool,
    },
    /// Already held or already delivered.
    Duplicate,
    /// Outside the 32768-packet window.
    OutOfWindow,
}

impl RecvBuffer {
    /// An empty buffer expecting `start` next.
    pub fn new(start: u32) -> Self {
        RecvBuffer {
            start,
            end: start,
            slots: VecDeque::new(),
            contig: start,
        }
    }

    /// `recv_start`: next number to deliver.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// `recv_end`.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// First missing number.
    pub fn contig(&self) -> u32 {
        self.contig
    }

    /// Whether packet `n` is held.
    pub fn present(&self, n: u32) -> bool {
        matches!(
            self.slots.get(n.wrapping_sub(self.start) as usize),
            Some(Some(_))
        )
    }

    /// Moves `end` forward to `num` if that stays within the window (a lossy,
    /// request or kill header carries the peer's `send_end`, §4.8/§4.9).
    /// Returns true if a hole appeared.
    pub fn advance_end(&mut self, num: u32) -> bool {
        let d = num.wrapping_sub(self.start);
        if d <= PACKET_BUFFER_SIZE && d > self.end.wrapping_sub(self.start) {
            self.end = num;
            return true;
        }
        false
    }

    /// Stores lossless packet `num` (§4.8).
    pub fn store(&mut self, num: u32, data: &[u8]) -> Stored {
        let off = num.wrapping_sub(self.start);
        if off >= PACKET_BUFFER_SIZE {
            return Stored::OutOfWindow;
        }
        let off = off as usize;
        if self.slots.len() <= off {
            self.slots.resize(off + 1, None);
        }
        let slot = &mut self.slots[off];
        if slot.is_some() {
            return Stored::Duplicate;
        }
        *slot = Some(data.to_vec());
        let hole = num.wrapping_sub(self.start) > self.end.wrapping_sub(self.start);
        if num.wrapping_add(1).wrapping_sub(self.start) > self.end.wrapping_sub(self.start) {
            self.end = num.wrapping_add(1);
        }
        while self.present(self.contig) {
            self.contig = self.contig.wrapping_add(1);
        }
        Stored::New { hole }
    }

    /// Pops the next in-order packet, if it is here.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        match self.slots.front() {
            Some(Some(_)) => {}
            _ => return None,
        }
        let d = self.slots.pop_front().flatten();
        self.start = self.start.wrapping_add(1);
        d
    }

    /// Whether a packet is ready for delivery.
    pub fn ready(&self) -> bool {
        matches!(self.slots.front(), Some(Some(_)))
    }

    /// Writes a request packet body for the current state (§4.9).
    pub fn encode_request(&self, out: &mut [u8]) -> usize {
        let prefix = self.contig.wrapping_sub(self.start);
        encode_request_with_prefix(self.start, self.end, prefix, |i| self.present(i), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::net_crypto::{encode_request as wire_encode, RequestDecoder};

    fn enc(recv_start: u32, recv_end: u32, missing: &[u32]) -> Vec<u8> {
        let mut out = [0u8; MAX_DATA_SIZE];
        let n = encode_request_with_prefix(
            recv_start,
            recv_end,
            0,
            |i| !missing.contains(&i),
            &mut out,
        );
        out[..n].to_vec()
    }

    #[test]
    fn request_vectors_from_protocol_section_10() {
        assert_eq!(enc(1, 5, &[1, 4]), [1, 1, 3]);
        assert_eq!(enc(1, 1025, &[3, 6, 1024]), [1, 3, 3, 0, 0, 0, 0xfd]);
        assert_eq!(enc(1, 1, &[]), [1]);
    }

    #[test]
    fn request_observed_from_c_toxcore() {
        // §4.9: k..k+4 numbered, only k+1, k+3, k+4 sent → `01 01 02`.
        let k = 1000;
        assert_eq!(enc(k, k + 5, &[k, k + 2]), [1, 1, 2]);
        assert_eq!(enc(k, k + 5, &[k]), [1, 1]);
    }

    #[test]
    fn prefix_shortcut_across_255_runs() {
        // 600 present packets then a hole: zeros at the 255th and 510th.
        let mut out = [0u8; MAX_DATA_SIZE];
        let n = encode_request_with_prefix(0, 601, 600, |i| i != 600, &mut out);
        assert_eq!(out[..n], enc(0, 601, &[600])[..]);
        assert_eq!(out[..n], [1, 0, 0, 91]);
    }

    proptest::proptest! {
        #[test]
        fn request_roundtrip(start in proptest::prelude::any::<u32>(),
                             len in 0u32..3000,
                             holes in proptest::collection::vec(0u32..3000, 0..200)) {
            let missing: Vec<u32> = holes.iter().filter(|&&h| h < len)
                .map(|h| start.wrapping_add(*h)).collect();
            let end = start.wrapping_add(len);
            let mut out = [0u8; MAX_DATA_SIZE];
            let n = encode_request_with_prefix(start, end, 0, |i| !missing.contains(&i), &mut out);
            // Same bytes as the wire module's encoder.
            let mut w = [0u8; MAX_DATA_SIZE];
            let wn = wire_encode(start, end, |i| !missing.contains(&i), &mut w).expect("fits");
            proptest::prop_assert_eq!(&out[..n], &w[..wn]);
            // The prefix shortcut encodes the same bytes.
            let first_missing = (0..len)
                .find(|k| missing.contains(&start.wrapping_add(*k)))
                .unwrap_or(len);
            let mut out2 = [0u8; MAX_DATA_SIZE];
            let n2 = encode_request_with_prefix(start, end, first_missing,
                |i| !missing.contains(&i), &mut out2);
            proptest::prop_assert_eq!(&out[..n], &out2[..n2]);
            // Decoding reports exactly the missing packets, in order.
            let mut last_missing = None;
            for item in RequestDecoder::new(&out[1..n], start, end) {
                if item.requested {
                    proptest::prop_assert!(missing.contains(&item.number));
                    last_missing = Some(item.number);
                } else {
                    proptest::prop_assert!(!missing.contains(&item.number));
                }
            }
            let want = missing.iter().max_by_key(|m| m.wrapping_sub(start)).copied();
            proptest::prop_assert_eq!(last_missing, want);
        }
    }

    #[test]
    fn nonce_window_vector() {
        // §10: rx low bytes 0x0000, header 0xaaab → diff 43691 → rx += 21845.
        let base = Nonce([0; 24]);
        let mut rx = RxNonce::new(base);
        let c = rx.candidate(0xaaab);
        assert_eq!(c.nonce.low16(), 0xaaab);
        assert!(rx.accept(c));
        assert_eq!(rx.rx.low16(), 0x5555);
        // The same nonce again is a replay.
        let c2 = rx.candidate(0xaaab);
        assert_eq!(c2.nonce, c.nonce);
        assert!(!rx.accept(c2));
        // A new one is fine.
        assert!(rx.accept(rx.candidate(0xaaac)));
    }

    #[test]
    fn replay_window_across_many_moves() {
        let mut rx = RxNonce::new(Nonce([0xff; 24]));
        let mut tx = Nonce([0xff; 24]);
        let mut old = tx;
        for i in 0..300_000u32 {
            let c = rx.candidate(tx.low16());
            assert_eq!(c.nonce, tx);
            assert!(rx.accept(c));
            if i == 299_000 {
                old = tx;
            }
            tx.increment();
        }
        // A packet 1000 behind the newest is still in the window but seen.
        let c = rx.candidate(old.low16());
        assert_eq!(c.nonce, old);
        assert!(!rx.accept(c));
    }

    #[test]
    fn recv_buffer_order_and_dups() {
        let mut r = RecvBuffer::new(u32::MAX - 2);
        assert_eq!(r.store(u32::MAX, b"c"), Stored::New { hole: true });
        assert_eq!(r.store(u32::MAX, b"c"), Stored::Duplicate);
        assert_eq!(r.pop(), None);
        assert_eq!(r.store(u32::MAX - 2, b"a"), Stored::New { hole: false });
        assert_eq!(r.store(u32::MAX - 1, b"b"), Stored::New { hole: false });
        assert_eq!(r.store(0, b"d"), Stored::New { hole: false });
        assert_eq!(r.contig(), 1);
        let got: Vec<_> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(
            got,
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(r.store(u32::MAX, b"c"), Stored::OutOfWindow);
        assert_eq!(r.store(PACKET_BUFFER_SIZE + 1, b"x"), Stored::OutOfWindow);
        assert_eq!(r.start(), 1);
    }

    #[test]
    fn send_buffer_backpressure_and_ack() {
        let mut s = SendBuffer::new(u32::MAX - 1, 4);
        for i in 0..4u32 {
            assert_eq!(s.push(&[16, i as u8]), Some((u32::MAX - 1).wrapping_add(i)));
        }
        assert_eq!(s.push(&[16]), None);
        assert_eq!(s.free_slots(), 0);
        assert!(s.ack_in_range(1));
        assert!(s.ack_in_range(2));
        assert!(!s.ack_in_range(3));
        let mut freed = vec![];
        s.ack_below(1, |n, _| freed.push(n));
        assert_eq!(freed, [u32::MAX - 1, u32::MAX, 0]);
        assert_eq!(s.start(), 1);
        assert_eq!(s.push(&[16]), Some(2));
    }

    #[test]
    fn a_nonce_one_window_back_is_found_only_past_the_base() {
        let base = Nonce([0xab; 24]);
        let mut rx = RxNonce::new(base);
        // At the base nothing is older.
        assert_eq!(rx.stale(0xabab), None);
        // Move the window forward three steps (each accepts a packet far
        // ahead).
        for _ in 0..3 {
            let c = rx.candidate(rx.rx.low16().wrapping_add(50_000));
            assert!(rx.accept(c));
        }
        // A packet sent right after the base: its true nonce is base + 5.
        let true_nonce = base.plus(5);
        let low = true_nonce.low16();
        // The current window reads it as far ahead (wrong)...
        assert_ne!(rx.candidate(low).nonce, true_nonce);
        // ...the window before finds it.
        assert_eq!(rx.stale(low), Some(true_nonce));
        let mut n = base.plus(70_000);
        n.sub(70_000);
        assert_eq!(n, base);
    }
}
