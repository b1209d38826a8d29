//! Deterministic network simulator for toxlink.
//!
//! Everything here runs on virtual time ([`SimClock`]) and seeded randomness
//! ([`SimRng`]): the same seed gives the same event trace, bit for bit, on
//! every run. Nothing reads the real clock (except the one base `Instant`
//! taken when a clock is built) and nothing sleeps, so hours of simulated
//! traffic run in milliseconds.
//!
//! The pieces, bottom-up:
//!
//! * [`SimClock`]: virtual `Instant`s (a fixed base plus a virtual offset).
//! * [`SimRng`]: ChaCha8 seeded from a `u64`, with `fork(label)` to derive
//!   independent streams, usable as the protocol core's `CryptoRng`.
//! * [`LinkConfig`] / [`Link`]: one directed datagram link with latency,
//!   jitter, random and Gilbert–Elliott loss, reordering, duplication,
//!   corruption, a bandwidth cap with a byte-limited FIFO queue and an MTU.
//! * [`StreamConfig`] and the stream half of [`Network`]: reliable, ordered
//!   byte streams modelling TCP connections (relay links) that can be closed,
//!   reset, stalled or black-holed.
//! * [`Network`]: the links, the streams and one time-ordered delivery queue.
//! * [`Sim`] and [`SimNode`]: the driver. Nodes are sans-IO endpoints that
//!   own addresses; `Sim` moves their output into the network, advances the
//!   clock to the next delivery or timeout, and runs scripted actions
//!   ([`Sim::at`]) so that scenario tests read like a story. [`Intercept`]
//!   wraps a node with fault injection (a relay that corrupts or drops what
//!   it forwards).
//! * [`run_seeds`]: runs a scenario for many seeds and, on failure, panics
//!   with the one command that replays the failing seed.
//!
//! The simulator knows nothing about Tox: it moves opaque bytes between
//! addresses of any type `A` ([`Address`]). A protocol state machine plugs
//! in by implementing [`SimNode`] (usually a thin adapter that forwards to
//! the sans-IO core and maps its transmits to [`Output`]s); inject a
//! [`Sim::rng_for`] fork as its `CryptoRng` so that the whole run, keys
//! included, is fixed by the seed.
//!
//! A story, end to end:
//!
//! ```
//! use bytes::Bytes;
//! use std::time::Instant;
//! use toxlink_sim::{ms, secs, LinkConfig, Output, Sim, SimNode};
//!
//! /// Answers "ping" with "pong"; counts pongs it receives.
//! #[derive(Default)]
//! struct Peer { out: Vec<Output<u8>>, pongs: u32 }
//!
//! impl SimNode<u8> for Peer {
//!     fn handle_datagram(&mut self, _now: Instant, from: u8, to: u8, data: Bytes) {
//!         match &data[..] {
//!             b"ping" => self.out.push(Output::datagram(to, from, &b"pong"[..])),
//!             b"pong" => self.pongs += 1,
//!             _ => {}
//!         }
//!     }
//!     fn poll_output(&mut self, _now: Instant) -> Option<Output<u8>> {
//!         self.out.pop()
//!     }
//! }
//!
//! let story = |seed| {
//!     let mut sim = Sim::new(seed);
//!     sim.network.connect(1, 2, LinkConfig::new().latency(ms(20)));
//!     let alice = sim.add_node(Peer::default(), [1]);
//!     sim.add_node(Peer::default(), [2]);
//!     // Alice pings every 100 ms for 1 s; between 0.5 s and 0.8 s the
//!     // path is a black hole.
//!     for i in 0..10 {
//!         sim.at(ms(100 * i), |s| s.inject(1, 2, &b"ping"[..]));
//!     }
//!     sim.at(ms(500), |s| s.network.set_path_up(1, 2, false));
//!     sim.at(ms(800), |s| s.network.set_path_up(1, 2, true));
//!     sim.run_until(secs(2)).unwrap();
//!     (sim.node::<Peer>(alice).unwrap().pongs, sim.trace_hash())
//! };
//! let (pongs, trace) = story(7);
//! // Pings sent at 0.5, 0.6, 0.7 and 0.8 s were lost: same-instant actions
//! // run in the order they were scheduled, and the path came back at 0.8 s
//! // after that ping.
//! assert_eq!(pongs, 6);
//! assert_eq!(story(7).1, trace); // same seed, same run
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod hash;
mod intercept;
mod link;
mod network;
mod replay;
mod rng;
mod sim;
mod stream;

pub use clock::SimClock;
pub use hash::TraceHasher;
pub use intercept::{Filter, Intercept};
pub use link::{Corruption, DropReason, GilbertElliott, Jitter, Link, LinkConfig, LinkStats};
pub use network::{Delivery, NetEvent, NetStats, Network, SendResult};
pub use replay::{replay_command, run_seeds, seeds_from_env};
pub use rng::SimRng;
pub use sim::{Limits, NodeId, Output, Sim, SimError, SimNode, SimStats, StepOutcome};
pub use stream::{
    StreamConfig, StreamDelivery, StreamError, StreamEvent, StreamId, StreamInfo, StreamSide,
    StreamStats,
};

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

/// What the simulator needs from an address type: a small copyable key
/// (`SocketAddr`, a `u32` id, an enum of named hosts...).
pub trait Address: Copy + Eq + Hash + Ord + Debug + 'static {}
impl<T: Copy + Eq + Hash + Ord + Debug + 'static> Address for T {}

/// `secs(2)` reads better than `Duration::from_secs(2)` in a scenario.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Milliseconds as a `Duration` (`ms(150)`).
pub const fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Microseconds as a `Duration` (`us(50)`).
pub const fn us(u: u64) -> Duration {
    Duration::from_micros(u)
}
