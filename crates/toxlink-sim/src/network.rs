//! The simulated network: directed datagram links, TCP-like streams and one
//! time-ordered delivery queue.
//!
//! Datagrams and stream events wait in two binary heaps ordered by
//! `(arrival time, sequence number)`; the sequence number is global and
//! strictly increasing, so equal arrival times pop in the order they were
//! scheduled and a run is fully determined by the seed and the calls made.
//! [`Network::poll`] merges both heaps in that order.
//!
//! Links are created on first use from the default config (or not at all:
//! "no route" drops the datagram). Each link owns a [`SimRng`] forked from the
//! network's seed with a label naming its endpoints, so links do not disturb
//! each other's randomness. Every delivered event is folded into a trace hash
//! ([`Network::trace_hash`]) that tests use to prove determinism.
//!
//! Memory is bounded by what is in flight: a dropped datagram is never
//! stored, a delivered one is handed out by value (`Bytes`, no copy except
//! for a corrupted copy).

use bytes::{Bytes, BytesMut};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::Hasher;
use std::time::{Duration, Instant};

use crate::hash::TraceHasher;
use crate::link::{add, Arrival, DropReason, Fate, Link, LinkConfig, LinkStats};
use crate::rng::SimRng;
use crate::stream::{
    Dir, StreamConfig, StreamDelivery, StreamError, StreamEvent, StreamId, StreamSide, StreamState,
    StreamStats,
};
use crate::Address;

/// A datagram handed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<A> {
    /// Virtual arrival time.
    pub at: Instant,
    /// Source address (as sent; the simulator does not check ownership).
    pub from: A,
    /// Destination address.
    pub to: A,
    /// Payload (possibly corrupted, possibly a duplicate).
    pub data: Bytes,
}

/// Anything the network delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent<A> {
    /// A datagram.
    Datagram(Delivery<A>),
    /// A stream event for one side.
    Stream(StreamDelivery<A>),
}

impl<A> NetEvent<A> {
    /// Arrival time.
    pub fn at(&self) -> Instant {
        match self {
            NetEvent::Datagram(d) => d.at,
            NetEvent::Stream(s) => s.at,
        }
    }
}

/// What [`Network::send`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendResult {
    /// Scheduled for delivery (`copies` is 2 when duplicated). It can still
    /// be dropped if the link is down when it arrives.
    Scheduled {
        /// Number of copies in flight.
        copies: u8,
    },
    /// Dropped at once.
    Dropped(DropReason),
}

/// Network-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent to a pair with no link and no default config.
    pub no_route: u64,
    /// Datagrams delivered.
    pub datagrams_delivered: u64,
    /// Stream events delivered.
    pub stream_events: u64,
    /// Streams opened.
    pub streams_opened: u64,
}

#[derive(Debug)]
struct DgEntry {
    at: Instant,
    seq: u64,
    link: u32,
    data: Bytes,
}

#[derive(Debug)]
enum StreamKind {
    Opened,
    Data(Bytes),
    Closed,
    Reset,
}

#[derive(Debug)]
struct StEntry {
    at: Instant,
    seq: u64,
    stream: u32,
    to: StreamSide,
    kind: StreamKind,
}

macro_rules! min_heap_order {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                self.seq == o.seq
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for $t {
            // Reversed: BinaryHeap is a max-heap, we pop the earliest.
            fn cmp(&self, o: &Self) -> Ordering {
                (o.at, o.seq).cmp(&(self.at, self.seq))
            }
        }
    };
}
min_heap_order!(DgEntry);
min_heap_order!(StEntry);

/// The simulated network. See the module docs.
#[derive(Debug)]
pub struct Network<A: Address> {
    epoch: Instant,
    horizon: Instant,
    rng: SimRng,
    links: Vec<Link<A>>,
    link_index: HashMap<(A, A), u32>,
    default_link: Option<LinkConfig>,
    datagrams: BinaryHeap<DgEntry>,
    stream_events: BinaryHeap<StEntry>,
    seq: u64,
    streams: Vec<StreamState<A>>,
    default_stream: StreamConfig,
    stream_configs: HashMap<(A, A), StreamConfig>,
    refusing: HashSet<A>,
    stats: NetStats,
    trace: TraceHasher,
}

impl<A: Address> Network<A> {
    /// An empty network. `epoch` is virtual time zero (trace hashes use
    /// offsets from it); `rng` is the root of every link's randomness.
    /// With no default link config, only explicitly configured pairs route.
    pub fn new(epoch: Instant, rng: SimRng) -> Self {
        Self {
            epoch,
            // Far enough for any scenario; `Instant` can always represent a
            // year past now on supported platforms.
            horizon: [100 * 365, 365]
                .iter()
                .find_map(|days| epoch.checked_add(Duration::from_secs(days * 86_400)))
                .unwrap_or(epoch),
            rng,
            links: Vec::new(),
            link_index: HashMap::new(),
            default_link: None,
            datagrams: BinaryHeap::new(),
            stream_events: BinaryHeap::new(),
            seq: 0,
            streams: Vec::new(),
            default_stream: StreamConfig::default(),
            stream_configs: HashMap::new(),
            refusing: HashSet::new(),
            stats: NetStats::default(),
            trace: TraceHasher::new(),
        }
    }

    /// Config used for pairs without an explicit link (`None` = no route).
    pub fn set_default_link(&mut self, config: Option<LinkConfig>) -> &mut Self {
        self.default_link = config;
        self
    }

    /// Sets (or replaces) the config of the directed link `from → to` and
    /// brings it up, creating it if needed. Counters and queue state are kept.
    pub fn set_link(&mut self, from: A, to: A, config: LinkConfig) -> &mut Link<A> {
        let i = self.ensure_link(from, to, Some(config.clone()));
        let link = &mut self.links[i];
        link.set_config(config);
        link.set_up(true);
        link
    }

    /// Sets both directions between `a` and `b` to `config`.
    pub fn connect(&mut self, a: A, b: A, config: LinkConfig) -> &mut Self {
        self.set_link(a, b, config.clone());
        self.set_link(b, a, config);
        self
    }

    /// The link `from → to`, if it exists.
    pub fn link(&self, from: A, to: A) -> Option<&Link<A>> {
        self.link_index
            .get(&(from, to))
            .and_then(|i| self.links.get(*i as usize))
    }

    /// The link `from → to`, created from the default config if missing. If
    /// there is no default (no route) it is created *down* with an ideal
    /// config, so touching it does not open a route by itself.
    pub fn link_mut(&mut self, from: A, to: A) -> &mut Link<A> {
        let i = self.ensure_link(from, to, None);
        &mut self.links[i]
    }

    /// Brings both directions between `a` and `b` up or down.
    pub fn set_path_up(&mut self, a: A, b: A, up: bool) {
        self.link_mut(a, b).set_up(up);
        self.link_mut(b, a).set_up(up);
    }

    /// Counters of `from → to` (zero if the link does not exist).
    pub fn link_stats(&self, from: A, to: A) -> LinkStats {
        self.link(from, to).map(|l| *l.stats()).unwrap_or_default()
    }

    /// Network-wide counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Hash of every event delivered so far (time, endpoints, payload).
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Number of datagrams and stream events in flight.
    pub fn in_flight(&self) -> usize {
        self.datagrams.len() + self.stream_events.len()
    }

    fn ensure_link(&mut self, from: A, to: A, explicit: Option<LinkConfig>) -> usize {
        if let Some(i) = self.link_index.get(&(from, to)) {
            return *i as usize;
        }
        let (config, up) = match (explicit, &self.default_link) {
            (Some(c), _) => (c, true),
            (None, Some(d)) => (d.clone(), true),
            (None, None) => (LinkConfig::default(), false),
        };
        let rng = self.rng.fork(&format!("link {from:?} -> {to:?}"));
        let i = self.links.len();
        self.links.push(Link::new(from, to, config, up, rng));
        self.link_index.insert((from, to), i as u32);
        i
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Sends a datagram at `now`. Returns what happened to it; a scheduled
    /// datagram comes out of [`Network::poll_delivery`] at its arrival time.
    pub fn send(&mut self, now: Instant, from: A, to: A, data: impl Into<Bytes>) -> SendResult {
        let data: Bytes = data.into();
        let i = match self.link_index.get(&(from, to)) {
            Some(i) => *i as usize,
            None if self.default_link.is_some() => self.ensure_link(from, to, None),
            None => {
                self.stats.no_route += 1;
                tracing::trace!(?from, ?to, "no route");
                return SendResult::Dropped(DropReason::NoRoute);
            }
        };
        let horizon = self.horizon;
        let link = &mut self.links[i];
        match link.transmit(now, data.len(), horizon) {
            Fate::Dropped(reason) => {
                tracing::trace!(?from, ?to, ?reason, len = data.len(), "datagram dropped");
                SendResult::Dropped(reason)
            }
            Fate::Arrives(first, dup) => {
                let copies = 1 + u8::from(dup.is_some());
                if let Some(d) = dup {
                    let bytes = self.copy_for(i, &data, d);
                    self.push_datagram(i, d.at, bytes);
                }
                let bytes = self.copy_for(i, &data, first);
                self.push_datagram(i, first.at, bytes);
                SendResult::Scheduled { copies }
            }
        }
    }

    fn copy_for(&mut self, link: usize, data: &Bytes, arrival: Arrival) -> Bytes {
        if !arrival.corrupt || data.is_empty() {
            return data.clone();
        }
        let l = &mut self.links[link];
        let mut buf = BytesMut::from(&data[..]);
        if l.corrupt_in_place(&mut buf) && buf[..] == data[..] {
            l.force_change(&mut buf);
        }
        buf.freeze()
    }

    fn push_datagram(&mut self, link: usize, at: Instant, data: Bytes) {
        let seq = self.next_seq();
        self.datagrams.push(DgEntry {
            at,
            seq,
            link: link as u32,
            data,
        });
    }

    /// Earliest pending arrival (datagram or stream event), if any.
    pub fn next_event_time(&self) -> Option<Instant> {
        match (self.datagrams.peek(), self.stream_events.peek()) {
            (Some(d), Some(s)) => Some(d.at.min(s.at)),
            (Some(d), None) => Some(d.at),
            (None, Some(s)) => Some(s.at),
            (None, None) => None,
        }
    }

    /// The next datagram due at or before `now`, skipping those whose link
    /// went down meanwhile. Stream events are left queued (use
    /// [`Network::poll`] when both kinds are in use).
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery<A>> {
        while self.datagrams.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = self.pop_datagram() {
                return Some(d);
            }
        }
        None
    }

    /// The next stream event due at or before `now`.
    pub fn poll_stream(&mut self, now: Instant) -> Option<StreamDelivery<A>> {
        while self.stream_events.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = self.pop_stream() {
                return Some(d);
            }
        }
        None
    }

    /// The next event of either kind due at or before `now`, in global
    /// `(time, sequence)` order.
    pub fn poll(&mut self, now: Instant) -> Option<NetEvent<A>> {
        loop {
            let d = self.datagrams.peek().map(|e| (e.at, e.seq));
            let s = self.stream_events.peek().map(|e| (e.at, e.seq));
            let take_dg = match (d, s) {
                (Some(d), Some(s)) => d < s,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if take_dg {
                if d.is_some_and(|(at, _)| at > now) {
                    return None;
                }
                if let Some(ev) = self.pop_datagram() {
                    return Some(NetEvent::Datagram(ev));
                }
            } else {
                if s.is_some_and(|(at, _)| at > now) {
                    return None;
                }
                if let Some(ev) = self.pop_stream() {
                    return Some(NetEvent::Stream(ev));
                }
            }
        }
    }

    fn pop_datagram(&mut self) -> Option<Delivery<A>> {
        let e = self.datagrams.pop()?;
        let link = self.links.get_mut(e.link as usize)?;
        if !link.is_up() {
            link.stats.dropped_down += 1;
            return None;
        }
        link.stats.delivered += 1;
        link.stats.bytes_delivered += e.data.len() as u64;
        self.stats.datagrams_delivered += 1;
        let (from, to) = (link.from(), link.to());
        let t = &mut self.trace;
        t.write_u8(1);
        t.write_u64(e.at.saturating_duration_since(self.epoch).as_nanos() as u64);
        from.hash(t);
        to.hash(t);
        t.write(&e.data);
        Some(Delivery {
            at: e.at,
            from,
            to,
            data: e.data,
        })
    }

    // ---- streams -------------------------------------------------------

    /// Stream parameters for connections between `a` and `b` (either
    /// direction) opened from now on.
    pub fn set_stream_config(&mut self, a: A, b: A, config: StreamConfig) -> &mut Self {
        self.stream_configs.insert((a.min(b), a.max(b)), config);
        self
    }

    /// Stream parameters for pairs without their own.
    pub fn set_default_stream_config(&mut self, config: StreamConfig) -> &mut Self {
        self.default_stream = config;
        self
    }

    /// The stream config that `open_stream_default(a, b)` would use.
    pub fn stream_config_for(&self, a: A, b: A) -> StreamConfig {
        self.stream_configs
            .get(&(a.min(b), a.max(b)))
            .cloned()
            .unwrap_or_else(|| self.default_stream.clone())
    }

    /// Makes `addr` refuse (or accept again) new streams: the initiator gets
    /// `Reset` after a round trip, the acceptor hears nothing.
    pub fn refuse_streams(&mut self, addr: A, refuse: bool) -> &mut Self {
        if refuse {
            self.refusing.insert(addr);
        } else {
            self.refusing.remove(&addr);
        }
        self
    }

    /// Opens a stream from `initiator` to `acceptor` with the configured
    /// parameters for that pair.
    pub fn open_stream_default(&mut self, now: Instant, initiator: A, acceptor: A) -> StreamId {
        let config = self.stream_config_for(initiator, acceptor);
        self.open_stream(now, initiator, acceptor, config)
    }

    /// Opens a stream. See the `stream` module docs for the timing.
    pub fn open_stream(
        &mut self,
        now: Instant,
        initiator: A,
        acceptor: A,
        config: StreamConfig,
    ) -> StreamId {
        let idx = self.streams.len();
        let id = StreamId(idx as u64);
        let l = config.latency;
        let one = add(now, l, self.horizon);
        let two = add(one, l, self.horizon);
        let dir = |busy: Instant, last: Instant| Dir {
            busy_until: busy,
            last_arrival: last,
            stalled_until: None,
            black_hole: false,
            fin: false,
            in_flight: 0,
        };
        let refused = self.refusing.contains(&acceptor);
        self.streams.push(StreamState {
            ends: [initiator, acceptor],
            config,
            // Initiator data leaves after SYN-ACK; acceptor data after SYN.
            dirs: [dir(two, one), dir(one, two)],
            reset: refused,
            done: [false, refused],
            stats: StreamStats::default(),
        });
        self.stats.streams_opened += 1;
        if refused {
            self.push_stream(two, idx, StreamSide::Initiator, StreamKind::Reset);
        } else {
            self.push_stream(one, idx, StreamSide::Acceptor, StreamKind::Opened);
            self.push_stream(two, idx, StreamSide::Initiator, StreamKind::Opened);
        }
        tracing::trace!(?id, ?initiator, ?acceptor, refused, "stream opened");
        id
    }

    fn push_stream(&mut self, at: Instant, stream: usize, to: StreamSide, kind: StreamKind) {
        let seq = self.next_seq();
        self.stream_events.push(StEntry {
            at,
            seq,
            stream: stream as u32,
            to,
            kind,
        });
    }

    fn stream_state(&mut self, id: StreamId) -> Result<&mut StreamState<A>, StreamError> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.streams.get_mut(i))
            .ok_or(StreamError::Unknown(id))
    }

    /// Writes `data` from `side` at `now`; it arrives at the peer in order
    /// after serialisation and latency. Writes on a stream that was reset but
    /// whose `Reset` has not yet reached `side` are accepted and discarded.
    pub fn stream_write(
        &mut self,
        now: Instant,
        id: StreamId,
        side: StreamSide,
        data: impl Into<Bytes>,
    ) -> Result<(), StreamError> {
        let mut data: Bytes = data.into();
        let horizon = self.horizon;
        let idx = usize::try_from(id.0)
            .ok()
            .filter(|i| *i < self.streams.len())
            .ok_or(StreamError::Unknown(id))?;
        // Disjoint field borrows: the stream, the sequence counter and the
        // heap (no per-write allocation).
        let st = &mut self.streams[idx];
        let w = side.index();
        if st.done[w] {
            return Err(StreamError::Reset(id));
        }
        if st.dirs[w].fin {
            return Err(StreamError::Closed(id));
        }
        if data.is_empty() {
            return Ok(());
        }
        st.stats.bytes_written[w] += data.len() as u64;
        if st.reset || st.dirs[w].black_hole {
            st.stats.bytes_discarded[w] += data.len() as u64;
            return Ok(());
        }
        let seg = st
            .config
            .max_segment
            .filter(|s| *s > 0)
            .unwrap_or(usize::MAX);
        let bw = st.config.bandwidth.filter(|b| *b > 0);
        let latency = st.config.latency;
        let dir = &mut st.dirs[w];
        dir.in_flight += data.len();
        while !data.is_empty() {
            let chunk = data.split_to(seg.min(data.len()));
            let start = dir.busy_until.max(now);
            let depart = match bw {
                Some(bw) => {
                    let ns = (chunk.len() as u128 * 1_000_000_000).div_ceil(u128::from(bw));
                    add(
                        start,
                        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)),
                        horizon,
                    )
                }
                None => start,
            };
            dir.busy_until = depart;
            let at = add(depart, latency, horizon).max(dir.last_arrival);
            dir.last_arrival = at;
            self.seq += 1;
            self.stream_events.push(StEntry {
                at,
                seq: self.seq,
                stream: idx as u32,
                to: side.peer(),
                kind: StreamKind::Data(chunk),
            });
        }
        Ok(())
    }

    /// Closes `side`'s sending half (FIN): the peer gets `Closed` after all
    /// data written before. Closing twice is a no-op.
    pub fn stream_close(
        &mut self,
        now: Instant,
        id: StreamId,
        side: StreamSide,
    ) -> Result<(), StreamError> {
        let horizon = self.horizon;
        let st = self.stream_state(id)?;
        let w = side.index();
        if st.done[w] {
            return Err(StreamError::Reset(id));
        }
        if st.dirs[w].fin || st.reset {
            st.dirs[w].fin = true;
            return Ok(());
        }
        let latency = st.config.latency;
        let dir = &mut st.dirs[w];
        dir.fin = true;
        let at = add(dir.busy_until.max(now), latency, horizon).max(dir.last_arrival);
        dir.last_arrival = at;
        self.push_stream(at, id.0 as usize, side.peer(), StreamKind::Closed);
        Ok(())
    }

    /// Resets the stream from the middle (a relay killed, a middlebox RST):
    /// both sides get `Reset` one latency from now; data that has not
    /// arrived by then is discarded.
    pub fn stream_reset(&mut self, now: Instant, id: StreamId) -> Result<(), StreamError> {
        let horizon = self.horizon;
        let st = self.stream_state(id)?;
        let at = add(now, st.config.latency, horizon);
        st.reset = true;
        let done = st.done;
        for side in [StreamSide::Initiator, StreamSide::Acceptor] {
            if !done[side.index()] {
                self.push_stream(at, id.0 as usize, side, StreamKind::Reset);
            }
        }
        Ok(())
    }

    /// `side` resets the stream (RST): it is done at once, the peer gets
    /// `Reset` one latency from now.
    pub fn stream_reset_from(
        &mut self,
        now: Instant,
        id: StreamId,
        side: StreamSide,
    ) -> Result<(), StreamError> {
        let horizon = self.horizon;
        let st = self.stream_state(id)?;
        let at = add(now, st.config.latency, horizon);
        st.reset = true;
        st.done[side.index()] = true;
        if !st.done[side.peer().index()] {
            self.push_stream(at, id.0 as usize, side.peer(), StreamKind::Reset);
        }
        Ok(())
    }

    /// Stalls both directions until `until`: nothing arrives before then,
    /// nothing is signalled, held bytes arrive in order when it ends.
    pub fn stream_stall(
        &mut self,
        now: Instant,
        id: StreamId,
        until: Instant,
    ) -> Result<(), StreamError> {
        self.stream_stall_direction(now, id, StreamSide::Initiator, until)?;
        self.stream_stall_direction(now, id, StreamSide::Acceptor, until)
    }

    /// Stalls only the bytes written by `from` until `until`.
    pub fn stream_stall_direction(
        &mut self,
        _now: Instant,
        id: StreamId,
        from: StreamSide,
        until: Instant,
    ) -> Result<(), StreamError> {
        let st = self.stream_state(id)?;
        let dir = &mut st.dirs[from.index()];
        dir.stalled_until = Some(dir.stalled_until.map_or(until, |u| u.max(until)));
        Ok(())
    }

    /// Black-holes both directions for good: bytes in flight and written
    /// later are silently discarded; no event is ever signalled (a later
    /// [`Network::stream_reset`] still is).
    pub fn stream_black_hole(&mut self, _now: Instant, id: StreamId) -> Result<(), StreamError> {
        let st = self.stream_state(id)?;
        for d in &mut st.dirs {
            d.black_hole = true;
        }
        Ok(())
    }

    /// Counters of a stream.
    pub fn stream_stats(&self, id: StreamId) -> Option<StreamStats> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.streams.get(i))
            .map(|s| s.stats)
    }

    /// Bytes written by `side` that have not yet been delivered or discarded
    /// (a node can treat a large value as a full TCP send buffer).
    pub fn stream_backlog(&self, id: StreamId, side: StreamSide) -> usize {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.streams.get(i))
            .map_or(0, |s| s.dirs[side.index()].in_flight)
    }

    fn pop_stream(&mut self) -> Option<StreamDelivery<A>> {
        let e = self.stream_events.pop()?;
        let idx = e.stream as usize;
        let r = e.to.index();
        let w = 1 - r;
        let st = self.streams.get_mut(idx)?;
        let id = StreamId(idx as u64);
        let event = match e.kind {
            StreamKind::Opened => {
                if st.done[r] {
                    return None;
                }
                StreamEvent::Opened
            }
            StreamKind::Reset => {
                if st.done[r] {
                    return None;
                }
                st.done[r] = true;
                StreamEvent::Reset
            }
            kind @ (StreamKind::Data(_) | StreamKind::Closed) => {
                let len = match &kind {
                    StreamKind::Data(b) => b.len(),
                    _ => 0,
                };
                let dir = &mut st.dirs[w];
                if st.done[r] || dir.black_hole {
                    dir.in_flight = dir.in_flight.saturating_sub(len);
                    st.stats.bytes_discarded[w] += len as u64;
                    return None;
                }
                if let Some(until) = dir.stalled_until {
                    if until > e.at {
                        // Hold it: re-queue at the end of the stall. Popped in
                        // (at, seq) order and re-pushed with rising seq, so
                        // the direction's order is kept.
                        let seq = self.next_seq();
                        self.stream_events.push(StEntry {
                            at: until,
                            seq,
                            kind,
                            ..e
                        });
                        return None;
                    }
                }
                dir.in_flight = dir.in_flight.saturating_sub(len);
                st.stats.bytes_delivered[r] += len as u64;
                match kind {
                    StreamKind::Data(b) => StreamEvent::Data(b),
                    _ => StreamEvent::Closed,
                }
            }
        };
        let info = st.info(id, e.to);
        self.stats.stream_events += 1;
        let t = &mut self.trace;
        t.write_u8(2);
        t.write_u64(e.at.saturating_duration_since(self.epoch).as_nanos() as u64);
        t.write_u64(id.0);
        t.write_u8(r as u8);
        match &event {
            StreamEvent::Opened => t.write_u8(0),
            StreamEvent::Data(b) => {
                t.write_u8(1);
                t.write(b);
            }
            StreamEvent::Closed => t.write_u8(2),
            StreamEvent::Reset => t.write_u8(3),
        }
        Some(StreamDelivery {
            at: e.at,
            info,
            event,
        })
    }
}
