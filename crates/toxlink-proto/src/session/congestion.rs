//! Congestion control for lossless packets: a rate-based, BBR-like controller
//! with pacing, and a delay-qualified loss response. Wire-compatible with
//! c-toxcore because the wire carries no congestion signal at all: it only
//! decides *when* our lossless packets leave (docs/PROTOCOL.md §5 describes
//! c-toxcore's own controller, which we do not copy).
//!
//! # Algorithm
//!
//! * **Delivery rate.** Every transmission is stamped with the connection's
//!   `delivered` byte count and time ([`SendStamp`]). When a packet is
//!   acknowledged (by `buffer_start` or a request packet, §4.7/§4.9) the
//!   sample is `Δdelivered / max(Δsend time, Δack time)`, as in BBR. The
//!   bottleneck bandwidth `btl_bw` is the maximum sample over the last 10
//!   rounds (a round ends when a packet sent after the previous round end is
//!   acknowledged). Samples taken while the sender was application-limited
//!   only count when they raise the estimate.
//! * **RTT.** `min_rtt` is the minimum sample over 10 s; `srtt`/`rttvar` are
//!   the usual smoothed values (used for loss timers). The ack interval (how
//!   often the peer acknowledges — c-toxcore only every ≥ 50 ms) is tracked
//!   as an average and added to `min_rtt` for the window, so sparse acks do
//!   not starve the pipe.
//! * **Modes.** *Startup*: pacing gain 2.885 (doubling per round) until the
//!   bandwidth estimate grew < 25 % for 3 rounds, so a clean link is filled
//!   within a few RTTs (no c-toxcore-style 10 s ramp). *Drain*: gain 1/2.885
//!   until in-flight ≤ BDP. *ProbeBw*: gains cycle
//!   `[1.25, 0.75, 1, 1, 1, 1, 1, 1]`, one phase per `max(min_rtt, 1 ms)`,
//!   which probes for more bandwidth and drains the queue it made. The probe
//!   phase also adds 32 packets per `min_rtt` (the same for every flow), and a
//!   round in which even the fastest packet saw a queue (`min RTT of the
//!   round > 1.1 · min_rtt + 1 ms`) scales the bandwidth estimate by 0.9: an
//!   additive-increase / multiplicative-decrease overlay that makes competing
//!   flows converge to equal shares and keeps the standing queue short.
//! * **Window.** `cwnd = 2 · btl_bw · (min_rtt + ack_interval)`, at least 8
//!   packets, and at most `inflight_hi`.
//! * **Loss and queueing.** Random loss on its own does not reduce the rate
//!   (the delivery rate already excludes lost packets). A round whose loss
//!   exceeds 10 % *and* whose RTT rose above `1.25 · min_rtt + 2 ms`
//!   (packets dropped because a queue overflowed) sets
//!   `inflight_hi = 0.85 · in_flight` and cuts `btl_bw` by the same factor; a
//!   clean round raises `inflight_hi` by 1/8 again. In start-up, a round
//!   with more than 2 % loss is enough (start-up overshoot, as in BBRv2).
//! * **Pacing.** Packets leave at `pacing_gain · btl_bw` with a burst credit
//!   of 1 ms worth (at least 4 packets), so timers of 1 ms granularity keep
//!   up.
//! * **Known limits.** A flow that starts while another already saturates a
//!   shallow-buffered bottleneck leaves start-up early (the incumbent's queue
//!   drops its packets) and then converges to its fair share over ~3 s
//!   (Jain ≥ 0.9 from 3 s on at 10 MB/s, 40 ms RTT), while flows starting
//!   together share fairly within the first second (both tested in
//!   `toxlink-sim/tests/session_suite.rs`). Start-up on a shallow buffer
//!   overshoots once (one round of losses) before it settles; the additive
//!   probe makes a small periodic queue on slow links.
//! * **Priority.** Only lossless data is governed. Request, kill and lossy
//!   packets bypass the window and the pacer (they are small or
//!   latency-sensitive) and are sent before queued bulk data, so they never
//!   starve behind it.

use std::time::{Duration, Instant};

/// Bytes assumed per full packet (header + 1373 data bytes + tag).
pub const FULL_PACKET: f64 = crate::wire::net_crypto::MAX_CRYPTO_PACKET_SIZE as f64;
const STARTUP_GAIN: f64 = 2.885;
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const BW_ROUNDS: usize = 10;
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
const MIN_CWND: f64 = 8.0 * FULL_PACKET;
const INITIAL_CWND: f64 = 32.0 * FULL_PACKET;

/// What the controller recorded when a packet was sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendStamp {
    /// Connection `delivered` bytes at send.
    pub delivered: u64,
    /// Time of the last delivery before the send.
    pub delivered_time: Option<Instant>,
    /// Send time of the first packet of the current flight.
    pub first_sent_time: Option<Instant>,
    /// Send time.
    pub sent_time: Option<Instant>,
    /// The sender had nothing more to send.
    pub app_limited: bool,
    /// Bytes.
    pub bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
}

/// The controller state of one connection.
#[derive(Debug, Clone)]
pub struct Congestion {
    mode: Mode,
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    bw_rounds: [f64; BW_ROUNDS],
    round: u64,
    next_round_delivered: u64,
    round_lost: u64,
    round_delivered: u64,
    round_max_rtt: Duration,
    round_min_rtt: Option<Duration>,
    full_bw: f64,
    full_bw_count: u32,
    cycle_idx: usize,
    cycle_start: Option<Instant>,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    srtt: Option<Duration>,
    rttvar: Duration,
    ack_interval: Duration,
    last_ack: Option<Instant>,
    inflight_hi: f64,
    /// A cap on the window set by the owner (bytes; `INFINITY` = none).
    cap: f64,
    /// Bytes in flight (sent, not acknowledged, not declared lost).
    pub in_flight: u64,
    pacing_credit: f64,
    pacing_last: Option<Instant>,
    initial_rtt: Duration,
}

impl Congestion {
    /// A controller for a path whose RTT is guessed as `initial_rtt` (e.g.
    /// from the handshake).
    pub fn new(initial_rtt: Duration) -> Self {
        Congestion {
            mode: Mode::Startup,
            delivered: 0,
            delivered_time: None,
            first_sent_time: None,
            bw_rounds: [0.0; BW_ROUNDS],
            round: 0,
            next_round_delivered: 0,
            round_lost: 0,
            round_delivered: 0,
            round_max_rtt: Duration::ZERO,
            round_min_rtt: None,
            full_bw: 0.0,
            full_bw_count: 0,
            cycle_idx: 0,
            cycle_start: None,
            min_rtt: None,
            min_rtt_stamp: None,
            srtt: None,
            rttvar: Duration::ZERO,
            ack_interval: Duration::ZERO,
            last_ack: None,
            inflight_hi: f64::INFINITY,
            cap: f64::INFINITY,
            in_flight: 0,
            pacing_credit: 0.0,
            pacing_last: None,
            initial_rtt: initial_rtt.max(Duration::from_micros(100)),
        }
    }

    /// Feeds an RTT measured outside the data flow (cookie or handshake
    /// round trip), before any data sample exists.
    pub fn seed_rtt(&mut self, now: Instant, rtt: Duration) {
        if self.srtt.is_none() {
            self.initial_rtt = rtt.max(Duration::from_micros(100));
            self.min_rtt = Some(self.initial_rtt);
            self.min_rtt_stamp = Some(now);
        }
    }

    /// Bottleneck bandwidth estimate in bytes/s (0 before any sample).
    pub fn btl_bw(&self) -> f64 {
        self.bw_rounds.iter().copied().fold(0.0, f64::max)
    }

    /// Minimum RTT seen (or the initial guess).
    pub fn min_rtt(&self) -> Duration {
        self.min_rtt.unwrap_or(self.initial_rtt)
    }

    /// Smoothed RTT (or the initial guess).
    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial_rtt)
    }

    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        if self.srtt.is_some() {
            self.rttvar
        } else {
            self.initial_rtt / 2
        }
    }

    /// Average interval between acknowledgements.
    pub fn ack_interval(&self) -> Duration {
        self.ack_interval
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain => 1.0 / STARTUP_GAIN,
            Mode::ProbeBw => CYCLE[self.cycle_idx],
        }
    }

    /// Current pacing rate in bytes/s.
    pub fn pacing_rate(&self) -> f64 {
        let bw = self.btl_bw();
        if bw <= 0.0 {
            return STARTUP_GAIN * INITIAL_CWND / self.initial_rtt.as_secs_f64();
        }
        // In startup, never pace below what the initial window allows.
        let floor = if self.mode == Mode::Startup {
            STARTUP_GAIN * INITIAL_CWND / self.min_rtt().as_secs_f64().max(1e-4)
        } else {
            0.0
        };
        // Additive part of the probe: 32 packets per min_rtt, the same for
        // every flow whatever its share.
        let additive = if self.mode == Mode::ProbeBw && self.cycle_idx == 0 {
            32.0 * FULL_PACKET / self.min_rtt().as_secs_f64().max(1e-3)
        } else {
            0.0
        };
        (self.pacing_gain() * bw + additive)
            .max(floor)
            .max(4.0 * FULL_PACKET)
    }

    fn bdp(&self) -> f64 {
        let rtt = self.min_rtt() + self.ack_interval;
        self.btl_bw() * rtt.as_secs_f64()
    }

    /// Congestion window in bytes.
    pub fn cwnd(&self) -> f64 {
        if self.btl_bw() <= 0.0 {
            return INITIAL_CWND
                .min(self.inflight_hi)
                .min(self.cap)
                .max(MIN_CWND);
        }
        (2.0 * self.bdp() + 4.0 * FULL_PACKET)
            .max(INITIAL_CWND.min(self.inflight_hi))
            .min(self.inflight_hi)
            .min(self.cap)
            .max(MIN_CWND)
    }

    /// Caps the window at `bytes` (`None`: no cap). The multipath owner caps
    /// it while the connection runs on a relay, whose per-client queue is
    /// shallow and drops silently.
    pub fn set_cap(&mut self, bytes: Option<f64>) {
        self.cap = bytes.unwrap_or(f64::INFINITY);
    }

    /// Whether the window has room for another packet.
    pub fn window_open(&self) -> bool {
        self.in_flight as f64 + FULL_PACKET / 2.0 <= self.cwnd()
    }

    /// Whether a lossless packet may leave now; `Err(Some(t))` = paced until
    /// `t`, `Err(None)` = window full (wait for an acknowledgement).
    pub fn can_send(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        if !self.window_open() {
            return Err(None);
        }
        let rate = self.pacing_rate();
        let max_credit = (rate * 0.001).max(4.0 * FULL_PACKET);
        if let Some(last) = self.pacing_last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.pacing_credit = (self.pacing_credit + dt * rate).min(max_credit);
        } else {
            self.pacing_credit = max_credit;
        }
        self.pacing_last = Some(now);
        if self.pacing_credit >= -1.0 {
            Ok(())
        } else {
            // Round up so that the credit is non-negative when the timer fires.
            let wait = (-self.pacing_credit / rate).min(1.0);
            Err(Some(
                now + Duration::from_nanos((wait * 1e9).ceil() as u64 + 1),
            ))
        }
    }

    /// Records a lossless transmission of `bytes`; `app_limited` = nothing
    /// else waits to be sent.
    pub fn on_sent(&mut self, now: Instant, bytes: u32, app_limited: bool) -> SendStamp {
        if self.in_flight == 0 {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        self.in_flight += u64::from(bytes);
        self.pacing_credit -= f64::from(bytes);
        SendStamp {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            sent_time: Some(now),
            app_limited,
            bytes,
        }
    }

    /// A packet left the flight without acknowledgement (declared lost).
    pub fn on_lost(&mut self, stamp: &SendStamp) {
        self.in_flight = self.in_flight.saturating_sub(u64::from(stamp.bytes));
        self.round_lost += u64::from(stamp.bytes);
    }

    /// An RTT sample from a packet sent once (Karn).
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        let rtt = rtt.max(Duration::from_micros(1));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let d = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + d) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        let expired = self
            .min_rtt_stamp
            .is_none_or(|t| now.saturating_duration_since(t) > MIN_RTT_WINDOW);
        if expired || self.min_rtt.is_none_or(|m| rtt <= m) {
            self.min_rtt = Some(rtt);
            self.min_rtt_stamp = Some(now);
        }
        self.round_max_rtt = self.round_max_rtt.max(rtt);
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// Start of an acknowledgement batch (one incoming packet).
    pub fn on_ack_event(&mut self, now: Instant) {
        if let Some(last) = self.last_ack {
            let gap = now
                .saturating_duration_since(last)
                .min(Duration::from_millis(200));
            self.ack_interval = (self.ack_interval * 7 + gap) / 8;
        }
        self.last_ack = Some(now);
    }

    /// A packet was acknowledged.
    pub fn on_acked(&mut self, now: Instant, stamp: &SendStamp, was_in_flight: bool) {
        if was_in_flight {
            self.in_flight = self.in_flight.saturating_sub(u64::from(stamp.bytes));
        }
        self.delivered += u64::from(stamp.bytes);
        self.round_delivered += u64::from(stamp.bytes);
        self.delivered_time = Some(now);
        // Round accounting.
        let mut round_start = false;
        if stamp.delivered >= self.next_round_delivered {
            self.next_round_delivered = self.delivered;
            self.round += 1;
            round_start = true;
        }
        // Delivery rate sample.
        if let (Some(sent), Some(first), Some(dtime)) =
            (stamp.sent_time, stamp.first_sent_time, stamp.delivered_time)
        {
            self.first_sent_time = Some(sent);
            let send_elapsed = sent.saturating_duration_since(first);
            let ack_elapsed = now.saturating_duration_since(dtime);
            let interval = send_elapsed.max(ack_elapsed);
            if interval > Duration::from_micros(1) && interval >= self.min_rtt() / 2 {
                let rate = (self.delivered - stamp.delivered) as f64 / interval.as_secs_f64();
                let slot = (self.round % BW_ROUNDS as u64) as usize;
                if round_start {
                    self.bw_rounds[slot] = 0.0;
                }
                if !stamp.app_limited || rate > self.btl_bw() {
                    self.bw_rounds[slot] = self.bw_rounds[slot].max(rate);
                }
            }
        }
        if round_start {
            self.on_round_end();
        }
        self.update_mode(now);
    }

    fn on_round_end(&mut self) {
        let total = self.round_lost + self.round_delivered;
        let loss = if total > 0 {
            self.round_lost as f64 / total as f64
        } else {
            0.0
        };
        let queueing =
            self.round_max_rtt.as_secs_f64() > self.min_rtt().as_secs_f64() * 1.25 + 0.002;
        // Start-up overshoot (BBRv2's rule): any real loss ends start-up.
        let startup_loss = self.mode == Mode::Startup && loss > 0.02;
        if (loss > 0.10 && queueing) || startup_loss {
            let cap = (self.in_flight as f64 * 0.85).max(MIN_CWND);
            self.inflight_hi = self.inflight_hi.min(cap.max(self.cwnd() * 0.85));
            for b in &mut self.bw_rounds {
                *b *= 0.85;
            }
            if self.mode == Mode::Startup {
                self.mode = Mode::Drain;
            }
        } else if self.inflight_hi.is_finite() {
            self.inflight_hi *= 1.125;
            if self.inflight_hi > 4.0 * self.bdp() + INITIAL_CWND {
                self.inflight_hi = f64::INFINITY;
            }
        }
        // Persistent queue: even the fastest packet of the round waited. Every
        // flow on the bottleneck sees it and backs off multiplicatively, while
        // probing adds the same amount to every flow (additive increase), so
        // competing flows converge to equal shares (Chiu–Jain).
        let persistent = self
            .round_min_rtt
            .is_some_and(|r| r.as_secs_f64() > self.min_rtt().as_secs_f64() * 1.1 + 0.001);
        if self.mode == Mode::ProbeBw && persistent {
            for b in &mut self.bw_rounds {
                *b *= 0.9;
            }
        }
        self.round_lost = 0;
        self.round_delivered = 0;
        self.round_max_rtt = Duration::ZERO;
        self.round_min_rtt = None;
        if self.mode == Mode::Startup {
            let bw = self.btl_bw();
            if bw >= self.full_bw * 1.25 {
                self.full_bw = bw;
                self.full_bw_count = 0;
            } else {
                self.full_bw_count += 1;
                if self.full_bw_count >= 3 {
                    self.mode = Mode::Drain;
                }
            }
        }
    }

    fn update_mode(&mut self, now: Instant) {
        if self.mode == Mode::Drain && self.in_flight as f64 <= self.bdp() {
            self.mode = Mode::ProbeBw;
            self.cycle_idx = 2;
            self.cycle_start = Some(now);
        }
        if self.mode == Mode::ProbeBw {
            let phase = self.min_rtt().max(Duration::from_millis(1));
            let start = *self.cycle_start.get_or_insert(now);
            if now.saturating_duration_since(start) >= phase {
                self.cycle_idx = (self.cycle_idx + 1) % CYCLE.len();
                self.cycle_start = Some(now);
            }
        }
    }

    /// A retransmission timeout fired: the flight is presumed gone.
    pub fn on_rto(&mut self) {
        self.pacing_credit = self.pacing_credit.max(0.0);
    }

    /// Whether the controller is still in its start-up phase.
    pub fn in_startup(&self) -> bool {
        self.mode == Mode::Startup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fluid model of one bottleneck: the controller must reach most of the
    /// link rate within a few RTTs and keep the queue bounded.
    #[test]
    fn fills_a_clean_link_quickly() {
        let t0 = Instant::now();
        let mut cc = Congestion::new(Duration::from_millis(20));
        let link = 10e6; // bytes/s
        let rtt = Duration::from_millis(20);
        let mut now = t0;
        let mut queue: std::collections::VecDeque<(Instant, SendStamp)> = Default::default();
        let mut link_free = t0;
        let mut delivered_bytes = 0u64;
        let step = Duration::from_micros(100);
        let mut in_net: std::collections::VecDeque<(Instant, SendStamp)> = Default::default();
        for _ in 0..(2_000_000 / 100) {
            now += step;
            while cc.can_send(now).is_ok() {
                let st = cc.on_sent(now, 1400, false);
                queue.push_back((now, st));
            }
            // serialise through the link
            while let Some((_, st)) = queue.front().copied() {
                let start = link_free.max(st.sent_time.unwrap_or(now));
                if start > now {
                    break;
                }
                link_free = start + Duration::from_secs_f64(1400.0 / link);
                in_net.push_back((link_free + rtt, st));
                queue.pop_front();
            }
            while let Some(&(at, st)) = in_net.front() {
                if at > now {
                    break;
                }
                in_net.pop_front();
                cc.on_ack_event(now);
                cc.on_rtt(now, now - st.sent_time.unwrap_or(now));
                cc.on_acked(now, &st, true);
                if now - t0 > Duration::from_millis(1000) {
                    delivered_bytes += 1400;
                }
            }
        }
        let rate = delivered_bytes as f64 / 1.0;
        assert!(rate > 0.8 * link, "rate {rate} of {link}");
        assert!(!cc.in_startup());
        // queue bounded: at most ~2 BDP worth queued at the end
        assert!(queue.len() < 400, "queue {}", queue.len());
    }
}
