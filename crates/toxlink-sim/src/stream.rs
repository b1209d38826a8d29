//! Reliable byte streams modelling TCP connections (relay links).
//!
//! A stream joins two addresses, the *initiator* (who opened it) and the
//! *acceptor*. Each direction delivers the written bytes in order and intact
//! after the latency plus the serialisation time of its bandwidth cap: TCP is
//! reliable, so there is no loss or corruption at byte level. What can go
//! wrong is what goes wrong with real relay connections:
//!
//! * `close` (FIN): the peer gets [`StreamEvent::Closed`] after all data
//!   written before it; the peer may still write (half-close).
//! * `reset` (RST): the side(s) told get [`StreamEvent::Reset`] after the
//!   latency; data that had not arrived by then is discarded; nothing more is
//!   delivered to a side after its `Reset`.
//! * `stall` until a time: bytes stop flowing and nothing is signalled; held
//!   bytes are delivered in order when the stall ends.
//! * `black_hole`: bytes stop flowing forever, nothing is signalled, held and
//!   future bytes are discarded (counted).
//!
//! Opening: the acceptor gets [`StreamEvent::Opened`] one latency after
//! `open_stream`, the initiator one round trip after it (SYN, SYN-ACK); the
//! initiator's data leaves no earlier than its `Opened`. If the acceptor
//! address refuses connections the initiator gets `Reset` after a round trip.
//!
//! Invariants: per direction, arrival times are non-decreasing and the heap
//! breaks ties by a sequence number, so events for one receiver pop in the
//! order they were produced; `Opened` precedes any `Data`, `Data` precedes
//! `Closed`, and nothing follows `Reset`.

use bytes::Bytes;
use std::time::{Duration, Instant};

/// Identifies a stream in a [`crate::Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// One end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamSide {
    /// The side that opened the stream (the TCP client).
    Initiator,
    /// The side that accepted it (the TCP server, e.g. a relay).
    Acceptor,
}

impl StreamSide {
    /// The other side.
    pub fn peer(self) -> StreamSide {
        match self {
            StreamSide::Initiator => StreamSide::Acceptor,
            StreamSide::Acceptor => StreamSide::Initiator,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            StreamSide::Initiator => 0,
            StreamSide::Acceptor => 1,
        }
    }
}

/// What a side of a stream observes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The connection is established (accepted, or connected).
    Opened,
    /// Bytes from the peer, in order. Boundaries are arbitrary: with a
    /// `max_segment` a write arrives in several pieces.
    Data(Bytes),
    /// The peer closed its sending half (FIN) after all its data.
    Closed,
    /// The connection was reset; nothing more will arrive.
    Reset,
}

/// How one side sees a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamInfo<A> {
    /// The stream.
    pub id: StreamId,
    /// Which end this is.
    pub side: StreamSide,
    /// This end's address.
    pub local: A,
    /// The other end's address.
    pub remote: A,
}

/// An event delivered to one side of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDelivery<A> {
    /// Virtual arrival time.
    pub at: Instant,
    /// The receiving side's view of the stream.
    pub info: StreamInfo<A>,
    /// What happened.
    pub event: StreamEvent,
}

/// Parameters of a stream (both directions alike).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamConfig {
    /// One-way latency.
    pub latency: Duration,
    /// Bandwidth cap per direction in bytes per second (`None` = infinite).
    pub bandwidth: Option<u64>,
    /// Split writes into segments of at most this many bytes (exercises
    /// framing code against arbitrary read boundaries).
    pub max_segment: Option<usize>,
}

impl StreamConfig {
    /// Zero latency, unlimited bandwidth, write boundaries kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// One-way latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Bandwidth cap per direction in bytes per second.
    pub fn bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bandwidth = Some(bytes_per_sec);
        self
    }

    /// Maximum segment size.
    pub fn max_segment(mut self, bytes: usize) -> Self {
        self.max_segment = Some(bytes);
        self
    }
}

/// Why a stream operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No such stream.
    #[error("unknown stream {0:?}")]
    Unknown(StreamId),
    /// This side already closed its sending half.
    #[error("stream {0:?}: write after close")]
    Closed(StreamId),
    /// This side has seen the stream reset.
    #[error("stream {0:?} was reset")]
    Reset(StreamId),
}

/// Counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes accepted by `stream_write`, per writing side (initiator, acceptor).
    pub bytes_written: [u64; 2],
    /// Bytes delivered, per receiving side.
    pub bytes_delivered: [u64; 2],
    /// Bytes discarded (reset, black hole), per writing side.
    pub bytes_discarded: [u64; 2],
}

/// One direction, from side `i` to side `1 - i`.
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    /// Earliest departure of the next byte.
    pub busy_until: Instant,
    /// Latest scheduled arrival (keeps order across config changes).
    pub last_arrival: Instant,
    pub stalled_until: Option<Instant>,
    pub black_hole: bool,
    /// The writer sent FIN.
    pub fin: bool,
    /// Bytes written and not yet delivered or discarded.
    pub in_flight: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct StreamState<A> {
    /// Addresses of (initiator, acceptor).
    pub ends: [A; 2],
    pub config: StreamConfig,
    pub dirs: [Dir; 2],
    /// The stream has been reset (writes are discarded until the writer
    /// learns it).
    pub reset: bool,
    /// Side `i` has received (or sent) a Reset: nothing more for it.
    pub done: [bool; 2],
    pub stats: StreamStats,
}

impl<A: Copy> StreamState<A> {
    pub fn info(&self, id: StreamId, side: StreamSide) -> StreamInfo<A> {
        let i = side.index();
        StreamInfo {
            id,
            side,
            local: self.ends[i],
            remote: self.ends[1 - i],
        }
    }
}
