//! Test support for toxlink: runs c-toxcore 0.2.18 next to toxlink so that
//! tests and benchmarks of other crates can check wire compatibility against
//! the real thing.
//!
//! * [`bootstrapd`]: a private `tox-bootstrapd` (DHT node + TCP relay) on
//!   free loopback ports.
//! * [`harness`]: a small C program on libtoxcore's public API, driven line
//!   by line over stdin/stdout (docs/PROTOCOL.md §7 explains what such a peer
//!   expects).
//! * [`measure`]: two befriended c-toxcore peers ([`measure::connect_pair`])
//!   and their connection set-up time and throughput
//!   ([`measure::measure_pair`]), the baseline for toxlink's benchmarks.
//!
//! Invariants: every wait is bounded by a timeout; every child process is
//! stopped by its PID when its handle drops (also while a test panics) and is
//! killed by the kernel if the test process dies (`PR_SET_PDEATHSIG`);
//! nothing listens beyond what the daemons themselves bind.

#![warn(missing_docs)]

pub mod bootstrapd;
mod error;
pub mod harness;
pub mod measure;
mod process;

pub use bootstrapd::{bootstrapd_available, require_bootstrapd, Bootstrapd};
pub use error::{InteropError, Result};
pub use harness::{build_harness, require_harness, ConnKind, Harness, HarnessOptions, Stats};
pub use measure::{connect_pair, measure_pair, PairFigures, PairOptions, Transport};
