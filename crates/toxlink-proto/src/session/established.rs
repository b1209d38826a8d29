//! The data link of a session (NOT_CONFIRMED and ESTABLISHED; docs/PROTOCOL.md
//! §4.6–§4.10): the session key and data nonces, the reliable send and
//! receive buffers, the lossy queues and the per-path loss evidence. It
//! exists from the moment the peer's handshake is accepted and is kept
//! after a close so that undelivered data can still be read and a local
//! KILL written.

use super::reliable::{RecvBuffer, RxNonce, SendBuffer, Stored, MAX_DATA_SIZE, PACKET_BUFFER_SIZE};
use super::{
    Common, DataKind, DropReason, PathId, SessionConfig, SessionTimer, Transmit, TransmitKind,
};
use crate::crypto::{Nonce, PublicKey, SharedKey};
use crate::error::{Misbehavior, Refusal};
use crate::wire::net_crypto::{DataPacket, DataPlaintext, IdClass, RequestDecoder};
use crate::wire::path_control::PATH_CONTROL;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Send paths tracked at most (the owner's paths of one peer).
const MAX_SEND_PATHS: usize = 16;

/// Most acknowledged numbers kept for an owner that does not drain them
/// (two send buffers' worth); later ones are not recorded.
pub(super) const MAX_ACKED_LOG: usize = 65_536;

/// Loss evidence of one send path (see [`Link::send_paths`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct SendPath {
    path: PathId,
    largest_acked_sent: Option<Instant>,
    srtt: Option<Duration>,
}

/// The data link: everything that exists once a session key does.
pub(super) struct Link {
    /// The data key, `K(our session sk, peer session pk)`.
    pub(super) key: SharedKey,
    /// The peer's session public key (from its handshake).
    pub(super) peer_session_pk: PublicKey,
    /// RX nonce and replay window (§4.6).
    pub(super) rx: RxNonce,
    /// Our next TX nonce (starts at our base nonce).
    pub(super) tx_nonce: Nonce,
    pub(super) send: SendBuffer,
    pub(super) recv: RecvBuffer,
    pub(super) lossy_in: VecDeque<Vec<u8>>,
    /// Path control packets (`wire::path_control`, the node's) and the path
    /// each came on; at most [`MAX_CONTROL_IN`].
    pub(super) control_in: VecDeque<(PathId, Vec<u8>)>,
    pub(super) lossy_out: VecDeque<Vec<u8>>,
    pub(super) last_request_sent: Option<Instant>,
    /// Lossless packets received since our last request packet.
    pub(super) unacked_rx: u32,
    /// Lossless packets the application took since our last request packet
    /// (its window opened: tell the peer).
    pub(super) pops_since_ack: u32,
    pub(super) rto_backoff: u32,
    /// Newest send time of any acknowledged packet.
    pub(super) largest_acked_sent: Option<Instant>,
    /// Per send path (tagged by the owner with `Session::on_sent`): the
    /// newest send time acknowledged and a smoothed RTT, so that loss is
    /// judged against the packet's own path (multipath: a packet overtaken
    /// by one sent later on a *faster* path is not lost).
    pub(super) send_paths: Vec<SendPath>,
    scratch: Vec<u32>,
}

/// Path control packets held for the node at most (it takes them after
/// each datagram).
pub(super) const MAX_CONTROL_IN: usize = 16;

impl Link {
    /// A link for the peer's session key and base nonce; our data nonces
    /// start at `tx_base`.
    pub(super) fn new(
        cfg: &SessionConfig,
        tx_base: Nonce,
        key: SharedKey,
        peer_session_pk: PublicKey,
        peer_base_nonce: Nonce,
    ) -> Self {
        let start = cfg.initial_packet_number;
        Link {
            key,
            peer_session_pk,
            rx: RxNonce::new(peer_base_nonce),
            tx_nonce: tx_base,
            send: SendBuffer::new(start, cfg.send_buffer),
            recv: RecvBuffer::new(start),
            lossy_in: VecDeque::new(),
            control_in: VecDeque::new(),
            lossy_out: VecDeque::new(),
            last_request_sent: None,
            unacked_rx: 0,
            pops_since_ack: 0,
            rto_backoff: 0,
            largest_acked_sent: None,
            send_paths: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The peer started a new session in NOT_CONFIRMED: its key and nonces.
    pub(super) fn rekey(
        &mut self,
        key: SharedKey,
        peer_session_pk: PublicKey,
        peer_base_nonce: Nonce,
    ) {
        self.key = key;
        self.peer_session_pk = peer_session_pk;
        self.rx = RxNonce::new(peer_base_nonce);
    }

    /// Opens a data packet in place (§4.6). `Ok(true)`: authenticated and
    /// fresh; `Ok(false)`: authenticated but a replay of a datagram already
    /// processed.
    pub(super) fn open(&mut self, low: u16, buf: &mut [u8]) -> Result<bool, DropReason> {
        let cand = self.rx.candidate(low);
        if DataPacket::decrypt_in_place(&self.key, &cand.nonce, buf).is_err() {
            // A packet from before the current nonce window (delayed for
            // long on a path that was black-holed, or a relay's stale
            // queue) is old, not forged: dropped without blaming the path.
            // (A failed open leaves the buffer as it was.)
            if let Some(old) = self.rx.stale(low) {
                if DataPacket::decrypt_in_place(&self.key, &old, buf).is_ok() {
                    return Err(DropReason::Refused(Refusal::Duplicate));
                }
            }
            return Err(DropReason::Misbehaved(Misbehavior::DataAuth));
        }
        Ok(self.rx.accept(cand))
    }

    /// The content of an authenticated, fresh data packet other than a KILL
    /// (§4.7 steps 5–): acknowledgements, then the data by its id.
    pub(super) fn on_content(
        &mut self,
        c: &mut Common,
        now: Instant,
        path: PathId,
        buffer_start: u32,
        num: u32,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let Some(&id) = data.first() else {
            return Err(DropReason::Misbehaved(Misbehavior::InvalidContent));
        };
        c.cc.on_ack_event(now);
        self.process_ack(c, now, buffer_start);
        match IdClass::of(id) {
            IdClass::Request => {
                self.process_request(c, now, buffer_start, &data[1..]);
                if self.recv.advance_end(num) {
                    self.want_request(c, now, true);
                }
            }
            IdClass::Lossless => match self.recv.store(num, data) {
                Stored::New { hole } => {
                    self.unacked_rx += 1;
                    self.want_request(c, now, hole);
                }
                Stored::Duplicate => {
                    c.stats.duplicate_lossless += 1;
                    self.unacked_rx += 1;
                    self.want_request(c, now, false);
                }
                Stored::OutOfWindow => {
                    // Below recv_start: already delivered; the peer lacks our ack.
                    c.stats.duplicate_lossless += 1;
                    self.want_request(c, now, false);
                }
            },
            IdClass::Lossy => {
                if self.recv.advance_end(num) {
                    self.want_request(c, now, true);
                }
                if id == PATH_CONTROL {
                    if self.control_in.len() < MAX_CONTROL_IN {
                        self.control_in.push_back((path, data.to_vec()));
                    } else {
                        c.stats.queue_drops += 1;
                    }
                } else if self.lossy_in.len() < c.cfg.max_lossy_in {
                    self.lossy_in.push_back(data.to_vec());
                } else {
                    c.stats.queue_drops += 1;
                }
            }
            // 3..=15 reserved, 255 dropped (§4.8); a KILL was handled
            // before.
            IdClass::Padding | IdClass::Kill | IdClass::Reserved => {
                return Err(DropReason::Misbehaved(Misbehavior::InvalidContent))
            }
        }
        Ok(())
    }

    /// A request packet is wanted: at once for a hole (rate-limited), else
    /// after the ack delay or after `ack_every` packets.
    fn want_request(&mut self, c: &mut Common, now: Instant, urgent: bool) {
        let at = if urgent || self.unacked_rx >= c.cfg.ack_every {
            match self.last_request_sent {
                Some(t) => now.max(t + c.cfg.min_request_gap),
                None => now,
            }
        } else {
            now + c.cfg.ack_delay
        };
        c.timers.set_earlier(SessionTimer::Request, at);
    }

    /// `buffer_start` acknowledges everything below it (§4.7 step 1).
    pub(super) fn process_ack(&mut self, c: &mut Common, now: Instant, buffer_start: u32) {
        let cc = &mut c.cc;
        let mut newest: Option<Instant> = None;
        let mut progressed = false;
        let mut largest = self.largest_acked_sent;
        let log = &mut c.acked_log;
        let send_paths = &mut self.send_paths;
        let mut per_path: [Option<(PathId, Instant)>; 4] = [None; 4];
        self.send.ack_below(buffer_start, |n, p| {
            progressed = true;
            if let Some(l) = log.as_mut().filter(|l| l.len() < MAX_ACKED_LOG) {
                l.push(n);
            }
            cc.on_acked(now, &p.cc, p.in_flight);
            if let Some(t) = p.sent_time {
                largest = Some(largest.map_or(t, |l| l.max(t)));
                if !p.retransmitted {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                    if let Some(id) = p.path {
                        note_path_ack(&mut per_path, send_paths, id, t);
                    }
                }
            }
        });
        self.largest_acked_sent = largest;
        self.path_rtt_samples(now, &per_path);
        if let Some(t) = newest {
            c.cc.on_rtt(now, now.saturating_duration_since(t));
        }
        if progressed {
            self.on_ack_progress(c, now);
        }
    }

    fn on_ack_progress(&mut self, c: &mut Common, now: Instant) {
        self.rto_backoff = 0;
        if c.cc.in_flight > 0 {
            c.timers.set(SessionTimer::Rto, now + self.rto(c));
        } else {
            c.timers.stop(SessionTimer::Rto);
        }
    }

    fn rto(&self, c: &Common) -> Duration {
        let base = c.cc.srtt()
            + (c.cc.rttvar() * 4).max(Duration::from_millis(1))
            + c.cc.ack_interval()
            + c.cfg.ack_delay;
        let base = base.max(Duration::from_millis(20));
        (base * (1u32 << self.rto_backoff.min(6))).min(Duration::from_secs(10))
    }

    /// A request packet from the peer (§4.9), decoded relative to its own
    /// `buffer_start`.
    pub(super) fn process_request(
        &mut self,
        c: &mut Common,
        now: Instant,
        buffer_start: u32,
        list: &[u8],
    ) {
        let (_, sent_end) = self.send.sent_range();
        let mut missing = std::mem::take(&mut self.scratch);
        missing.clear();
        let mut newest: Option<Instant> = None;
        let mut progressed = false;
        let mut per_path: [Option<(PathId, Instant)>; 4] = [None; 4];
        let start = self.send.start();
        // Walk from the peer's buffer_start (it may lag ours after reordering)
        // up to what we ever transmitted.
        let walk_end = if sent_end.wrapping_sub(buffer_start) <= 2 * PACKET_BUFFER_SIZE {
            sent_end
        } else {
            buffer_start
        };
        let mut decoder = RequestDecoder::new(list, buffer_start, walk_end);
        // Numbers below our start are acknowledged already (up to 32,768 of
        // them, the peer's `buffer_start` may lag ours that much): cross them
        // in O(list bytes) rather than one by one, so a request costs
        // O(list + what we transmitted), never a 65,536-number walk.
        let below = start.wrapping_sub(buffer_start);
        if below <= walk_end.wrapping_sub(buffer_start) {
            decoder.skip_numbers(below);
        }
        let mut walked = 0u64;
        for item in decoder {
            walked += 1;
            let i = item.number;
            if i.wrapping_sub(start) >= sent_end.wrapping_sub(start) {
                // Below our start: already acknowledged.
                continue;
            }
            if item.requested {
                missing.push(i);
                continue;
            }
            let Some(p) = self.send.get_mut(i) else {
                continue;
            };
            if p.acked || p.sent_time.is_none() {
                continue;
            }
            let was = p.in_flight;
            p.in_flight = false;
            let stamp = p.cc;
            let t = p.sent_time;
            let rt = p.retransmitted;
            let sent_path = p.path;
            self.send.mark_acked(i);
            if let (Some(id), Some(t), false) = (sent_path, t, rt) {
                note_path_ack(&mut per_path, &mut self.send_paths, id, t);
            }
            c.cc.on_acked(now, &stamp, was);
            progressed = true;
            if let Some(l) = c.acked_log.as_mut().filter(|l| l.len() < MAX_ACKED_LOG) {
                l.push(i);
            }
            if let Some(t) = t {
                self.largest_acked_sent = Some(self.largest_acked_sent.map_or(t, |l| l.max(t)));
                if !rt {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
        c.stats.request_numbers_walked += walked;
        if let Some(t) = newest {
            c.cc.on_rtt(now, now.saturating_duration_since(t));
        }
        self.path_rtt_samples(now, &per_path);
        // Loss: requested and either sent before a packet the peer has, or
        // older than one smoothed RTT. A packet tagged with its send path
        // (multipath owner) is judged by that path's evidence only: overtaken
        // by a later packet *of the same path*, or older than that path's
        // smoothed RTT (a slow relay queue is not loss).
        let loss_delay = (c.cc.srtt() * 5 / 4 + c.cc.rttvar() * 4).max(Duration::from_millis(1));
        let slack = c.cc.min_rtt() / 8;
        for &i in &missing {
            let Some(p) = self.send.get(i) else { continue };
            let Some(sent) = p.sent_time else { continue };
            if p.acked || p.lost {
                continue;
            }
            let (largest, delay) = match p
                .path
                .and_then(|id| self.send_paths.iter().find(|s| s.path == id))
            {
                Some(sp) => (
                    sp.largest_acked_sent,
                    sp.srtt.map_or(loss_delay, |r| loss_delay.max(r * 5 / 4)),
                ),
                None if p.path.is_some() => (None, loss_delay),
                None => (self.largest_acked_sent, loss_delay),
            };
            let reordered_past = largest.is_some_and(|l| sent + slack < l);
            if reordered_past || now.saturating_duration_since(sent) >= delay {
                self.declare_lost(c, i);
            }
        }
        self.scratch = missing;
        if progressed {
            self.on_ack_progress(c, now);
        }
    }

    pub(super) fn declare_lost(&mut self, c: &mut Common, i: u32) {
        if let Some(p) = self.send.get_mut(i) {
            if p.in_flight {
                p.in_flight = false;
                let st = p.cc;
                c.cc.on_lost(&st);
            }
        }
        self.send.mark_lost(i);
    }

    /// The retransmission timer fired (ESTABLISHED): retransmit the oldest
    /// packet in flight and probe with a request packet carrying our
    /// send_end, so the peer reports every hole.
    pub(super) fn on_rto(&mut self, c: &mut Common, now: Instant) {
        c.stats.rtos += 1;
        c.cc.on_rto();
        let (start, end) = self.send.sent_range();
        let mut i = start;
        while i != end {
            if self.send.get(i).is_some_and(|p| p.in_flight && !p.acked) {
                self.declare_lost(c, i);
                break;
            }
            i = i.wrapping_add(1);
        }
        c.timers.set(SessionTimer::Request, now);
        self.rto_backoff += 1;
        if c.cc.in_flight > 0 || self.send.next_resend().is_some() {
            c.timers.set(SessionTimer::Rto, now + self.rto(c));
        } else {
            c.timers.stop(SessionTimer::Rto);
        }
    }

    /// The next data packet: a request packet when due, then (ESTABLISHED)
    /// lossy data, then lossless data as congestion control allows.
    pub(super) fn poll_send(
        &mut self,
        c: &mut Common,
        now: Instant,
        buf: &mut [u8],
        established: bool,
    ) -> Option<Transmit> {
        // Request packet (acks) first: small and time-critical.
        if c.timers.is_expired(SessionTimer::Baseline, now) {
            c.timers.set(SessionTimer::Request, now);
        }
        if self.pops_since_ack > 0
            && !c.timers.is_set(SessionTimer::Request)
            && self
                .last_request_sent
                .is_none_or(|t| now >= t + c.cfg.ack_delay)
        {
            c.timers.set(SessionTimer::Request, now);
        }
        if c.timers.is_expired(SessionTimer::Request, now) {
            return Some(self.write_request(c, now, buf));
        }
        if !established {
            return None;
        }
        if let Some(d) = self.lossy_out.pop_front() {
            let len = self.write_data(buf, self.send.end(), &d);
            return Some(Transmit {
                len,
                kind: TransmitKind::Data(DataKind::Lossy),
            });
        }
        self.lossless_send(c, now, buf)
    }

    pub(super) fn write_request(
        &mut self,
        c: &mut Common,
        now: Instant,
        buf: &mut [u8],
    ) -> Transmit {
        let mut list = [0u8; MAX_DATA_SIZE];
        let n = self.recv.encode_request(&mut list);
        let len = self.write_data(buf, self.send.end(), &list[..n]);
        c.timers.stop(SessionTimer::Request);
        self.last_request_sent = Some(now);
        c.timers
            .set(SessionTimer::Baseline, now + c.cfg.request_interval);
        self.unacked_rx = 0;
        self.pops_since_ack = 0;
        Transmit {
            len,
            kind: TransmitKind::Data(DataKind::Request),
        }
    }

    fn lossless_send(&mut self, c: &mut Common, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (n, retransmission) = match self.send.next_resend() {
            Some(n) => (n, true),
            None => (self.send.next_new()?, false),
        };
        match c.cc.can_send(now) {
            Ok(()) => c.timers.stop(SessionTimer::Pacing),
            Err(t) => {
                match t {
                    Some(t) => c.timers.set(SessionTimer::Pacing, t),
                    None => c.timers.stop(SessionTimer::Pacing),
                }
                return None;
            }
        }
        if retransmission {
            self.send.pop_resend();
            c.stats.retransmissions += 1;
        } else {
            self.send.advance_new();
        }
        // Take the data out of the slot to write it (no copy of the Vec).
        let data = match self.send.get_mut(n) {
            Some(p) => std::mem::take(&mut p.data),
            None => return None,
        };
        let len = self.write_data(buf, n, &data);
        let app_limited = !self.send.has_pending();
        let stamp = c.cc.on_sent(now, len as u32, app_limited);
        if let Some(p) = self.send.get_mut(n) {
            p.data = data;
            if p.sent_time.is_some() {
                p.retransmitted = true;
            }
            p.sent_time = Some(now);
            p.in_flight = true;
            p.lost = false;
            p.cc = stamp;
        }
        if !c.timers.is_set(SessionTimer::Rto) {
            c.timers.set(SessionTimer::Rto, now + self.rto(c));
        }
        Some(Transmit {
            len,
            kind: TransmitKind::Data(DataKind::Lossless {
                number: n,
                retransmission,
            }),
        })
    }

    /// Writes a data packet (§4.6, §4.7) carrying `data` with `num` into
    /// `buf` and returns its length. `data` is 1..=1373 bytes and `buf` holds
    /// 1400 (checked by the callers).
    pub(super) fn write_data(&mut self, buf: &mut [u8], num: u32, data: &[u8]) -> usize {
        let plain = DataPlaintext {
            buffer_start: self.recv.start(),
            packet_number: num,
            data,
        };
        match DataPacket::seal(&self.key, &self.tx_nonce, &plain, buf) {
            Ok(len) => {
                // §4.6: every data packet consumes one nonce.
                self.tx_nonce.increment();
                len
            }
            // Not reached: the callers pass 1..=1373 bytes with a non-zero
            // id and a buffer of `MAX_PACKET_SIZE`; nothing is sent.
            Err(_) => 0,
        }
    }

    /// Per-path RTT samples from the newest packet acknowledged per path.
    fn path_rtt_samples(&mut self, now: Instant, per_path: &[Option<(PathId, Instant)>]) {
        for (id, t) in per_path.iter().flatten() {
            let sample = now.saturating_duration_since(*t);
            if let Some(sp) = self.send_paths.iter_mut().find(|s| s.path == *id) {
                sp.srtt = Some(sp.srtt.map_or(sample, |r| (r * 7 + sample) / 8));
            }
        }
    }

    /// The owner sent lossless packet `number` on `path`.
    pub(super) fn on_sent(&mut self, number: u32, path: PathId) {
        if let Some(p) = self.send.get_mut(number) {
            p.path = Some(path);
        }
        if !self.send_paths.iter().any(|s| s.path == path) {
            if self.send_paths.len() >= MAX_SEND_PATHS {
                self.send_paths.remove(0);
            }
            self.send_paths.push(SendPath {
                path,
                largest_acked_sent: None,
                srtt: None,
            });
        }
    }

    /// Marks every packet in flight whose last path matches `filter` as lost.
    pub(super) fn resend_in_flight(
        &mut self,
        c: &mut Common,
        mut filter: impl FnMut(PathId) -> bool,
    ) -> usize {
        let (start, end) = self.send.sent_range();
        let mut i = start;
        let mut count = 0;
        while i != end {
            let hit = self
                .send
                .get(i)
                .is_some_and(|p| p.in_flight && !p.acked && p.path.is_some_and(&mut filter));
            if hit {
                self.declare_lost(c, i);
                count += 1;
            }
            i = i.wrapping_add(1);
        }
        count
    }

    /// Marks the given lossless packets as lost (retransmitted at once).
    pub(super) fn mark_lost(&mut self, c: &mut Common, numbers: &[u32]) {
        for &n in numbers {
            if self.send.get(n).is_some_and(|p| !p.acked && !p.lost) {
                self.declare_lost(c, n);
            }
        }
    }
}

/// Records that a packet sent at `t` on `id` was acknowledged: the path's
/// newest acknowledged send time, and the newest per path of this batch (at
/// most 4 paths per batch are sampled for RTT).
fn note_path_ack(
    batch: &mut [Option<(PathId, Instant)>; 4],
    paths: &mut [SendPath],
    id: PathId,
    t: Instant,
) {
    if let Some(sp) = paths.iter_mut().find(|s| s.path == id) {
        sp.largest_acked_sent = Some(sp.largest_acked_sent.map_or(t, |l| l.max(t)));
    }
    match batch.iter_mut().find(|e| e.is_some_and(|(p, _)| p == id)) {
        Some(Some((_, newest))) => *newest = (*newest).max(t),
        _ => {
            if let Some(slot) = batch.iter_mut().find(|e| e.is_none()) {
                *slot = Some((id, t));
            }
        }
    }
}
