//! The data phase of net_crypto (docs/PROTOCOL.md §4.6–4.9): the data
//! packet (27), the nonce it carries the last two bytes of, its plaintext
//! (`buffer_start`, packet number, padding, data) and the request packet's
//! body (id 1).

use super::*;

/// A data packet (0x1b): `0x1b ‖ BE16(last two nonce bytes) ‖ Box(session
/// key, full nonce, plaintext)`, 28..=1400 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPacket<'a> {
    /// The last two bytes of the full nonce (big-endian).
    pub nonce_low: u16,
    /// The box.
    pub sealed: &'a [u8],
}

impl<'a> DataPacket<'a> {
    /// Parses a data packet and checks its length bounds.
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        let &first = b.first().ok_or(WireError::Empty)?;
        if first != kind::DATA {
            return Err(WireError::BadId {
                kind: "data packet",
                id: first,
            });
        }
        if !(MIN_DATA_PACKET_SIZE..=MAX_CRYPTO_PACKET_SIZE).contains(&b.len()) {
            return Err(bad_len("data packet", b.len()));
        }
        Ok(DataPacket {
            nonce_low: u16::from_be_bytes([b[1], b[2]]),
            sealed: &b[3..],
        })
    }

    /// Seals `plain` with the full `nonce` into `out`; returns the packet
    /// length.
    pub fn seal(
        key: &SharedKey,
        nonce: &Nonce,
        plain: &DataPlaintext<'_>,
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        let total = DATA_HEADER_SIZE + MAC_SIZE + plain.encoded_len();
        let o = out_slice(out, total)?;
        plain.encode(&mut o[DATA_HEADER_SIZE + MAC_SIZE..])?;
        o[0] = kind::DATA;
        o[1..DATA_HEADER_SIZE].copy_from_slice(&nonce.low16().to_be_bytes());
        key.seal_in_place(nonce, &mut o[DATA_HEADER_SIZE..])?;
        Ok(total)
    }

    /// Opens a whole data packet in place with the full `nonce` (see
    /// [`reconstruct_nonce`]) and parses its plaintext:
    /// [`decrypt_in_place`](Self::decrypt_in_place), then
    /// [`plaintext`](Self::plaintext).
    pub fn open_in_place<'b>(
        key: &SharedKey,
        nonce: &Nonce,
        packet: &'b mut [u8],
    ) -> Result<DataPlaintext<'b>, WireError> {
        DataPacket::decrypt_in_place(key, nonce, packet)?;
        DataPacket::plaintext(packet)
    }

    /// Authenticates and decrypts a data packet in place with the full
    /// `nonce`: afterwards [`plaintext`](Self::plaintext) reads it. A packet
    /// that fails is left unchanged (it can be tried with another nonce).
    pub fn decrypt_in_place(
        key: &SharedKey,
        nonce: &Nonce,
        packet: &mut [u8],
    ) -> Result<(), WireError> {
        DataPacket::parse(packet)?;
        let sealed = packet
            .get_mut(DATA_HEADER_SIZE..)
            .ok_or(bad_len("data packet", 0))?;
        key.open_in_place(nonce, sealed)?;
        Ok(())
    }

    /// The plaintext of a data packet decrypted in place by
    /// [`decrypt_in_place`](Self::decrypt_in_place) (it follows the tag).
    pub fn plaintext(packet: &[u8]) -> Result<DataPlaintext<'_>, WireError> {
        DataPacket::parse(packet)?;
        let plain = packet
            .get(DATA_HEADER_SIZE + MAC_SIZE..)
            .ok_or(bad_len("data packet", packet.len()))?;
        DataPlaintext::parse(plain)
    }
}

/// Bytes before the box of a data packet: the id and two nonce bytes.
pub const DATA_HEADER_SIZE: usize = 3;

/// `DATA_NUM_THRESHOLD`: how far the receive nonce moves when a packet more
/// than twice this far ahead authenticates (docs/PROTOCOL.md §4.6).
pub const DATA_NUM_THRESHOLD: u32 = 21845;

/// Reconstructs the full nonce of a data packet from the receive nonce `rx`
/// and the packet's two nonce bytes (docs/PROTOCOL.md §4.6). Returns the nonce and
/// the distance from `rx`. After the packet authenticates, call
/// [`advance_rx_nonce`] with that distance.
pub fn reconstruct_nonce(rx: &Nonce, nonce_low: u16) -> (Nonce, u16) {
    let diff = nonce_low.wrapping_sub(rx.low16());
    (rx.plus(u32::from(diff)), diff)
}

/// The nonce a data packet carrying `nonce_low` had if it was sent in the
/// 65536-nonce window *before* the one [`reconstruct_nonce`] assumes (a
/// packet delayed past a window move), and how many nonces behind `rx` that
/// is (1..=65536).
pub fn reconstruct_stale_nonce(rx: &Nonce, nonce_low: u16) -> (Nonce, u32) {
    let diff = nonce_low.wrapping_sub(rx.low16());
    let back = 65536 - u32::from(diff);
    let mut n = *rx;
    n.sub(back);
    (n, back)
}

/// Moves `rx` forward by [`DATA_NUM_THRESHOLD`] if an authenticated packet was
/// more than twice that far ahead of it.
pub fn advance_rx_nonce(rx: &mut Nonce, diff: u16) {
    if u32::from(diff) > 2 * DATA_NUM_THRESHOLD {
        rx.add(DATA_NUM_THRESHOLD);
    }
}

/// The plaintext of a data packet (docs/PROTOCOL.md §4.7): `BE32 buffer_start ‖
/// BE32 packet number ‖ zero padding ‖ data`, where `data[0]` is the packet id
/// (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaintext<'a> {
    /// The sender's receive-buffer start: the next lossless number it needs.
    pub buffer_start: u32,
    /// The lossless packet number, or the sender's send-buffer end for
    /// lossy, request and kill packets.
    pub packet_number: u32,
    /// The data, id byte first.
    pub data: &'a [u8],
}

impl<'a> DataPlaintext<'a> {
    /// Zero bytes c-toxcore puts before `len` data bytes.
    pub fn padding_for(len: usize) -> usize {
        MAX_CRYPTO_DATA_SIZE.saturating_sub(len) % CRYPTO_MAX_PADDING
    }

    /// Encoded length including padding.
    pub fn encoded_len(&self) -> usize {
        8 + Self::padding_for(self.data.len()) + self.data.len()
    }

    /// Writes header, padding and data into `out`; returns the length.
    /// Refuses empty data, data over [`MAX_CRYPTO_DATA_SIZE`] and a zero id.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        match self.data.first() {
            None => return Err(bad_len("data plaintext", 0)),
            Some(0) => {
                return Err(WireError::BadField {
                    kind: "data plaintext",
                    field: "packet id 0",
                })
            }
            Some(_) if self.data.len() > MAX_CRYPTO_DATA_SIZE => {
                return Err(bad_len("data plaintext", self.data.len()))
            }
            Some(_) => {}
        }
        let pad = Self::padding_for(self.data.len());
        let len = self.encoded_len();
        let o = out_slice(out, len)?;
        o[..4].copy_from_slice(&self.buffer_start.to_be_bytes());
        o[4..8].copy_from_slice(&self.packet_number.to_be_bytes());
        o[8..8 + pad].fill(0);
        o[8 + pad..].copy_from_slice(self.data);
        Ok(len)
    }

    /// Parses a decrypted plaintext: any amount of zero padding is accepted;
    /// a plaintext of 8 bytes or fewer, or with only zeros after the header,
    /// is refused.
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        if b.len() <= 8 {
            return Err(bad_len("data plaintext", b.len()));
        }
        let start = 8 + b[8..]
            .iter()
            .position(|&x| x != 0)
            .ok_or(WireError::BadField {
                kind: "data plaintext",
                field: "only padding",
            })?;
        if b.len() - start > MAX_CRYPTO_DATA_SIZE {
            return Err(bad_len("data plaintext", b.len()));
        }
        Ok(DataPlaintext {
            buffer_start: u32::from_be_bytes(array(b, 0)),
            packet_number: u32::from_be_bytes(array(b, 4)),
            data: &b[start..],
        })
    }
}

/// Writes a request packet (`[1] ‖ b1 … bk`, docs/PROTOCOL.md §4.9) into `out`
/// for the receive buffer `[recv_start, recv_end)`: `is_received(i)` tells
/// whether lossless packet `i` is stored. Returns the length written (at
/// least 1, at most `min(out.len(), MAX_CRYPTO_DATA_SIZE)`); when the buffer
/// fills up the list simply stops early, as in c-toxcore.
pub fn encode_request(
    recv_start: u32,
    recv_end: u32,
    mut is_received: impl FnMut(u32) -> bool,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let limit = out.len().min(MAX_CRYPTO_DATA_SIZE);
    let o = out_slice(out, 1)?;
    o[0] = packet_id::REQUEST;
    let mut len = 1;
    let mut n: u32 = 1;
    let count = recv_end.wrapping_sub(recv_start);
    for k in 0..count {
        if len >= limit {
            break;
        }
        let i = recv_start.wrapping_add(k);
        if !is_received(i) {
            out[len] = n as u8;
            len += 1;
            n = 0;
        } else if n == 255 {
            out[len] = 0;
            len += 1;
            n = 0;
        }
        n += 1;
    }
    Ok(len)
}

/// One verdict of a request packet about a sent lossless packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestItem {
    /// The packet number.
    pub number: u32,
    /// `true`: the peer asks for it again; `false`: the peer has it.
    pub requested: bool,
}

/// Reads a request packet body (the bytes after the id) against our send
/// buffer `[send_start, send_end)`, yielding one [`RequestItem`] per packet
/// number it speaks about, in order. Packets after the point where the bytes
/// run out (or past `send_end`) are not mentioned (docs/PROTOCOL.md §4.9).
///
/// The rule "after a run of 255 unrequested packets the next byte must be 0"
/// cannot be broken by any byte string: a non-zero byte `b` always matches
/// the distance counter when it reaches `b ≤ 255`, so only a 0 byte can still
/// be at the head when the counter reaches 255. Every body is therefore
/// valid, and the decoder has no error case.
#[derive(Debug, Clone)]
pub struct RequestDecoder<'a> {
    body: &'a [u8],
    next: u32,
    remaining: u32,
    n: u32,
}

impl<'a> RequestDecoder<'a> {
    /// `body` is the request data after its id byte.
    pub fn new(body: &'a [u8], send_start: u32, send_end: u32) -> Self {
        RequestDecoder {
            body,
            next: send_start,
            remaining: send_end.wrapping_sub(send_start),
            n: 1,
        }
    }
}

impl RequestDecoder<'_> {
    /// Passes over the next `k` packet numbers as [`Iterator::nth`] would,
    /// but in O(body bytes consumed) rather than O(k): a run of unrequested
    /// numbers is crossed in one step per byte. Returns how many numbers were
    /// passed (less than `k` when the body or the range ends first).
    pub fn skip_numbers(&mut self, k: u32) -> u32 {
        let mut left = k.min(self.remaining);
        let mut passed = 0;
        while left > 0 {
            let Some((&head, rest)) = self.body.split_first() else {
                break;
            };
            // Numbers up to and including the one this byte settles: the
            // requested one (head = distance), or the 255th after a request
            // for a 0 byte (the skip marker).
            let span = if head == 0 {
                256 - self.n
            } else {
                u32::from(head).saturating_sub(self.n) + 1
            };
            if left < span {
                // Stops inside the run: no byte consumed.
                self.n += left;
                self.next = self.next.wrapping_add(left);
                self.remaining -= left;
                passed += left;
                break;
            }
            self.body = rest;
            self.n = 1;
            self.next = self.next.wrapping_add(span);
            self.remaining -= span;
            passed += span;
            left -= span;
        }
        passed
    }
}

impl Iterator for RequestDecoder<'_> {
    type Item = RequestItem;

    fn next(&mut self) -> Option<RequestItem> {
        let (&head, rest) = self.body.split_first()?;
        if self.remaining == 0 {
            return None;
        }
        let number = self.next;
        let requested = u32::from(head) == self.n;
        if requested {
            self.body = rest;
            self.n = 0;
        }
        if self.n == 255 {
            // Here the head byte is 0 (see the type's doc): a skip marker.
            self.n = 1;
            if let Some((_, rest)) = self.body.split_first() {
                self.body = rest;
            }
        } else {
            self.n += 1;
        }
        self.next = self.next.wrapping_add(1);
        self.remaining -= 1;
        Some(RequestItem { number, requested })
    }
}
