//! The Tox TCP relay on tokio: [`RelayServer`] (listeners around the sans-IO
//! server) and [`RelaySetRuntime`] (a node's relay links around the sans-IO
//! relay set). Both read TCP into their own buffers as bytes arrive (never
//! waiting for a whole frame in the kernel) and write in batches.

mod client;
mod server;

pub use client::RelaySetRuntime;
pub use server::{RelayServer, RelayServerConfig, RelayServerHandle};
