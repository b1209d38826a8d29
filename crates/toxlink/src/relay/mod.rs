//! The Tox TCP relay on tokio: [`RelayServer`] (listeners around the sans-IO
//! server) and [`RelaySetRuntime`] (a node's relay links around the sans-IO
//! relay set). Both read TCP into their own buffers as bytes arrive (never
//! waiting for a whole frame in the kernel) and write in batches.

mod client;
mod server;

use tokio::net::TcpStream;

/// Writes the pending part of a batch (`wbuf[*wpos..]`) without blocking;
/// each time a batch is written out completely it is cleared and, up to
/// `turns` batches per call, refilled by `refill` (which returns the bytes
/// it added). Stops at `WouldBlock`, after `turns` batches, or when `refill`
/// has nothing. `Err(())` means the stream failed and the link is gone.
pub(crate) fn write_batches(
    stream: &TcpStream,
    wbuf: &mut Vec<u8>,
    wpos: &mut usize,
    mut turns: usize,
    mut refill: impl FnMut(&mut Vec<u8>) -> usize,
) -> Result<(), ()> {
    loop {
        match stream.try_write(&wbuf[*wpos..]) {
            Ok(n) => *wpos += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(()),
        }
        if *wpos < wbuf.len() {
            continue;
        }
        turns = turns.saturating_sub(1);
        wbuf.clear();
        *wpos = 0;
        if turns == 0 || refill(wbuf) == 0 {
            return Ok(());
        }
    }
}

pub use client::RelaySetRuntime;
pub use server::{RelayServer, RelayServerConfig, RelayServerHandle};
