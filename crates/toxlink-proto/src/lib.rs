//! Sans-IO core of toxlink: the Tox middle level network protocol
//! (c-toxcore's net_crypto) and the Tox TCP relay, wire-compatible with
//! c-toxcore 0.2.18.
//!
//! Nothing here opens a socket or reads a clock: state machines are fed
//! `(now, input)` and polled for output, so the same code runs under the tokio
//! runtime (`toxlink`), the deterministic simulator (`toxlink-sim`) and the
//! fuzzers.
//!
//! * [`crypto`]: keys, nonces, XSalsa20-Poly1305 boxes (docs/PROTOCOL.md §1).
//! * [`wire`]: byte layouts of every packet, parse and encode, no behaviour.
//! * [`error`]: why a packet was dropped or a send refused (one taxonomy).
//! * [`relay_server`]: the TCP relay server state machine (§2.5).
//! * [`relay_client`]: one relay link and a node's set of relays (§2.6, §3).
//! * [`session`]: one net_crypto connection (docs/PROTOCOL.md §4–§6).
//! * [`node`]: the sans-IO endpoint owning the sessions by peer.
//! * [`friend`]: friend_connection + Messenger over a session (docs/PROTOCOL.md §7).
//! * [`paths`]: multipath health, scheduling, relay blame and pool (docs/DESIGN.md §3).
//! * [`stun`]: STUN Binding (RFC 8489): the client that learns a socket's
//!   reflexive addresses, and the relay's stateless answer.
//! * [`timer`]: a fixed table of deadlines indexed by a timer enum.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod crypto;
pub mod error;
pub mod friend;
pub mod node;
pub mod paths;
pub mod relay_client;
mod relay_queue;
pub mod relay_server;
pub mod session;
pub mod stun;
pub mod timer;
pub mod wire;
