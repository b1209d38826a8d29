//! The Tox TCP relay on tokio: [`RelayServer`] (listeners around the sans-IO
//! server) and [`RelaySetRuntime`] (a node's relay links around the sans-IO
//! relay set). Both read TCP into their own buffers as bytes arrive (never
//! waiting for a whole frame in the kernel) and write in batches.

mod client;
mod server;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Bytes per write of a relay *client* link (our relay set's and the node's).
/// Small, frame-aligned writes: with 64 KiB writes, tox-bootstrapd (c-toxcore
/// 0.2.18) stalled reading our stream for seconds in about one run in five of
/// the interop test (it reads a frame only once it is wholly buffered;
/// docs/DESIGN.md §4 notes the same stall); with 8 KiB writes 20 runs out of 20
/// passed.
pub(crate) const CLIENT_WRITE_BATCH: usize = 8 * 1024;
/// Bytes read from a relay socket at once.
const READ_BUF: usize = 64 * 1024;
/// How long a client waits for a relay's TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_BUF]);
}

/// What one [`read_available`] found.
pub(crate) enum ReadOutcome {
    /// The buffer filled up: more may be waiting.
    More,
    /// Nothing more for now.
    WouldBlock,
    /// The stream ended or failed.
    Eof,
}

/// Reads what the socket has (one read, into the thread's buffer, so a
/// frame never has to be whole in the kernel) and hands the bytes to `feed`.
pub(crate) fn read_available(stream: &TcpStream, feed: impl FnOnce(&mut [u8])) -> ReadOutcome {
    READ_BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        match stream.try_read(&mut buf) {
            Ok(0) => ReadOutcome::Eof,
            Ok(n) => {
                feed(&mut buf[..n]);
                if n == buf.len() {
                    ReadOutcome::More
                } else {
                    ReadOutcome::WouldBlock
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Err(_) => ReadOutcome::Eof,
        }
    })
}

/// Opens a client connection to a relay (bounded by [`CONNECT_TIMEOUT`],
/// Nagle off); `None` if it failed.
pub(crate) async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "relay connect failed");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "relay connect timed out");
            None
        }
    }
}

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
#[cfg(feature = "fault-injection")]
pub use server::FaultHook;
pub use server::{RelayServer, RelayServerConfig, RelayServerHandle};
