//! tokio runtime for toxlink: sockets and timers around the sans-IO state
//! machines of `toxlink-proto`.
//!
//! * [`relay`]: the TCP relay server ([`relay::RelayServer`]) and a node's
//!   relay client links ([`relay::RelaySetRuntime`]).

#![warn(missing_docs)]

pub mod relay;
