//! The outgoing side of one relay link, shared by the relay server and the
//! relay client: raw handshake bytes, then priority frames, then data frames
//! (docs/PROTOCOL.md §2.3).
//!
//! Frames are queued **unsealed** as `[BE16 L][16 free bytes][plaintext]` and
//! sealed only when the runtime drains them, so that the nonce order on the
//! wire is the drain order. That is what lets a priority frame (routing,
//! notifications, ping/pong) overtake data queued before it: priority frames
//! are always drained before any data frame not yet handed to the runtime.
//!
//! Invariants: every queued frame has `1 ≤ |plaintext| ≤ 2032`; `data_head`
//! never exceeds `data.len()`; the byte counts reported are what a drain would
//! produce, so callers can bound memory by them. Buffers are freed by
//! [`FrameQueue::shrink_idle`] when empty, so idle links hold no heap memory.

use crate::wire::relay::{RelayPacket, SecureChannel, FRAME_OVERHEAD, MAX_FRAME_PLAINTEXT};
use crate::wire::WireError;

/// Queued output of one link.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    raw: Vec<u8>,
    prio: Vec<u8>,
    data: Vec<u8>,
    data_head: usize,
}

/// Appends `[BE16 L][16 zero bytes]` for a plaintext of `plain_len` bytes and
/// returns the offset of the plaintext.
fn reserve_frame(buf: &mut Vec<u8>, plain_len: usize) -> usize {
    let l = (plain_len + crate::crypto::MAC_SIZE) as u16;
    buf.extend_from_slice(&l.to_be_bytes());
    buf.extend_from_slice(&[0u8; crate::crypto::MAC_SIZE]);
    let at = buf.len();
    buf.resize(at + plain_len, 0);
    at
}

fn push_packet(buf: &mut Vec<u8>, packet: &RelayPacket<'_>) -> Result<(), WireError> {
    let n = packet.encoded_len();
    if n == 0 || n > MAX_FRAME_PLAINTEXT {
        return Err(WireError::BadLength {
            kind: "relay frame plaintext",
            len: n,
        });
    }
    let start = buf.len();
    let at = reserve_frame(buf, n);
    if let Err(e) = packet.encode(&mut buf[at..]) {
        buf.truncate(start);
        return Err(e);
    }
    Ok(())
}

impl FrameQueue {
    /// Queues bytes that go out as they are (the handshake).
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    /// Queues a priority frame.
    pub(crate) fn push_prio(&mut self, packet: &RelayPacket<'_>) -> Result<(), WireError> {
        push_packet(&mut self.prio, packet)
    }

    /// Queues a data (non-priority) frame.
    pub(crate) fn push_data(&mut self, packet: &RelayPacket<'_>) -> Result<(), WireError> {
        push_packet(&mut self.data, packet)
    }

    /// Queues the data frame `[id] ‖ payload` and returns the queued payload
    /// bytes (so a fault injector can alter them before sealing). The caller
    /// guarantees `1 ≤ payload.len() ≤ 2031`.
    pub(crate) fn push_data_bytes(&mut self, id: u8, payload: &[u8]) -> &mut [u8] {
        let at = reserve_frame(&mut self.data, 1 + payload.len());
        self.data[at] = id;
        self.data[at + 1..].copy_from_slice(payload);
        &mut self.data[at + 1..]
    }

    /// Bytes of unsent priority and raw output.
    pub(crate) fn prio_len(&self) -> usize {
        self.raw.len() + self.prio.len()
    }

    /// Bytes of unsent data frames.
    pub(crate) fn data_len(&self) -> usize {
        self.data.len() - self.data_head
    }

    /// Nothing to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.prio_len() == 0 && self.data_len() == 0
    }

    /// Heap bytes held.
    pub(crate) fn capacity(&self) -> usize {
        self.raw.capacity() + self.prio.capacity() + self.data.capacity()
    }

    /// Appends raw bytes, all priority frames and then whole data frames (at
    /// least one if any, then as long as `out` stays within `limit` bytes of
    /// new output) to `out`, sealing each frame in place there with `chan`.
    /// Without a channel only raw bytes are drained. Returns bytes appended.
    pub(crate) fn drain_into(
        &mut self,
        chan: Option<&mut SecureChannel>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> usize {
        let start = out.len();
        out.extend_from_slice(&self.raw);
        self.raw.clear();
        let Some(chan) = chan else {
            return out.len() - start;
        };
        if !self.prio.is_empty() {
            let at = out.len();
            out.extend_from_slice(&self.prio);
            self.prio.clear();
            seal_frames(chan, &mut out[at..]);
        }
        let budget = limit.saturating_sub(out.len() - start);
        let avail = &self.data[self.data_head..];
        // Take whole frames up to the budget (at least one).
        let mut take = 0;
        while take + 2 <= avail.len() {
            let l = usize::from(u16::from_be_bytes([avail[take], avail[take + 1]]));
            let next = take + 2 + l;
            if next > avail.len() || (take > 0 && next > budget) {
                break;
            }
            take = next;
        }
        if take > 0 {
            let at = out.len();
            out.extend_from_slice(&avail[..take]);
            seal_frames(chan, &mut out[at..]);
            self.data_head += take;
            if self.data_head == self.data.len() {
                self.data.clear();
                self.data_head = 0;
            } else if self.data_head > 64 * 1024 {
                self.data.drain(..self.data_head);
                self.data_head = 0;
            }
        }
        out.len() - start
    }

    /// Drops all queued data frames (not priority ones); returns bytes dropped.
    pub(crate) fn clear_data(&mut self) -> usize {
        let n = self.data_len();
        self.data.clear();
        self.data_head = 0;
        n
    }

    /// Frees buffers that are empty, so an idle link holds no heap memory.
    pub(crate) fn shrink_idle(&mut self) {
        if self.raw.is_empty() {
            self.raw = Vec::new();
        }
        if self.prio.is_empty() {
            self.prio = Vec::new();
        }
        if self.data_len() == 0 {
            self.data = Vec::new();
            self.data_head = 0;
        }
    }
}

/// Seals every frame of a buffer laid out by [`reserve_frame`].
fn seal_frames(chan: &mut SecureChannel, buf: &mut [u8]) {
    let mut at = 0;
    while at + FRAME_OVERHEAD < buf.len() {
        let l = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
        let end = at + 2 + l;
        let Some(frame) = buf.get_mut(at..end) else {
            break;
        };
        // Queued frames have 1..=2032 plaintext bytes (checked on push), so
        // sealing cannot fail; a failure would only leave the frame unsealed.
        if chan.seal_in_place(frame).is_err() {
            tracing::error!("relay frame could not be sealed");
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Nonce, SharedKey};
    use crate::wire::relay::split_frame;

    #[test]
    fn priority_frames_overtake_queued_data_and_decrypt_in_order() {
        let key = SharedKey([7; 32]);
        let mut tx = SecureChannel::new(key.clone(), Nonce([1; 24]), Nonce([2; 24]));
        let mut rx = SecureChannel::new(key, Nonce([2; 24]), Nonce([1; 24]));
        let mut q = FrameQueue::default();
        q.push_data_bytes(16, b"first data");
        q.push_data_bytes(17, b"second data");
        q.push_prio(&RelayPacket::Pong { ping_id: [9; 8] }).unwrap();
        let mut out = Vec::new();
        q.drain_into(Some(&mut tx), &mut out, 1);
        // One data frame fits the budget after the pong; the second stays.
        assert!(q.data_len() > 0);
        q.drain_into(Some(&mut tx), &mut out, 1 << 20);
        assert!(q.is_empty());
        let mut got = Vec::new();
        let mut buf = &mut out[..];
        while let Ok(crate::wire::relay::FrameSplit::Frame { box_len }) = split_frame(buf) {
            let (frame, rest) = buf.split_at_mut(2 + box_len);
            got.push(rx.open_in_place(&mut frame[2..]).unwrap().to_vec());
            buf = rest;
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0][0], 5);
        assert_eq!(&got[1][1..], b"first data");
        assert_eq!(&got[2][1..], b"second data");
        q.shrink_idle();
        assert_eq!(q.capacity(), 0);
    }
}
