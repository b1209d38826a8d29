//! The Tox TCP relay on tokio: [`RelayServer`] (listeners around the sans-IO
//! server, and its STUN service on UDP: [`stun`]) and [`RelaySetRuntime`] (a set of relay links around the sans-IO
//! relay set, for tools and tests). Every TCP socket of toxlink — these two's
//! and the node's relay links (`links.rs`) — is served by the one loop
//! `pump` for a `StreamOwner`: it reads into our own buffer as bytes
//! arrive (never waiting for a whole frame in the kernel) and writes in
//! batches.

mod client;
mod server;
pub mod stun;

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

/// The sans-IO side one TCP socket serves: a relay link of the node
/// (`links.rs`), a link of a [`RelaySetRuntime`] (`client.rs`) or a
/// connection of the [`RelayServer`] (`server.rs`). [`pump`] is the one loop
/// that moves bytes between the socket and it; every method takes the
/// owner's lock for a moment and never holds it across an await.
pub(crate) trait StreamOwner {
    /// Write batches per writable turn.
    const WRITE_TURNS: usize;
    /// The owner gave up on this socket: stop at once.
    fn closed(&self) -> bool;
    /// Appends the next batch of output to `out`; returns its length.
    fn drain(&self, out: &mut Vec<u8>) -> usize;
    /// Feeds bytes as they were read; returns whether reading must pause
    /// (push-back) until a wake-up says otherwise.
    fn feed(&self, bytes: &mut [u8]) -> bool;
    /// After a wake-up during a pause: whether reading may resume.
    fn resume(&self) -> bool {
        true
    }
    /// Woken when the owner has output for this socket, closed it, or a
    /// pause may have ended.
    fn notify(&self) -> &tokio::sync::Notify;
    /// After each read turn (e.g. events handed to the application, waiting
    /// for room there: back-pressure onto the socket).
    fn after_read(&self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// How [`pump`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The owner closed the socket ([`StreamOwner::closed`]): it knows.
    Closed,
    /// The socket ended (EOF, reset, error): the owner must be told.
    Ended,
}

/// Moves bytes between `stream` and `owner` until one of them ends: reads
/// what is there (one buffer per turn, then lets other tasks run, so a fast
/// sender cannot starve the receivers it sends to), writes in batches of
/// what the owner drains, sleeps until the socket or the owner has
/// something. Buffers are freed while idle.
pub(crate) async fn pump<O: StreamOwner>(stream: &TcpStream, owner: &O) -> PumpEnd {
    let mut wbuf: Vec<u8> = Vec::new();
    let mut wpos = 0;
    let mut eof = false;
    let mut paused = false;
    loop {
        if owner.closed() {
            return PumpEnd::Closed;
        }
        if wpos == wbuf.len() {
            wbuf.clear();
            wpos = 0;
            if owner.drain(&mut wbuf) == 0 && wbuf.capacity() > 0 {
                wbuf = Vec::new();
            }
        }
        if eof {
            return PumpEnd::Ended;
        }
        let want_write = wpos < wbuf.len();
        tokio::select! {
            r = stream.readable(), if !paused => {
                if r.is_err() {
                    return PumpEnd::Ended;
                }
                let outcome = read_available(stream, |bytes| paused = owner.feed(bytes));
                if matches!(outcome, ReadOutcome::Eof) {
                    eof = true;
                }
                owner.after_read().await;
                tokio::task::yield_now().await;
            }
            r = stream.writable(), if want_write => {
                if r.is_err() {
                    return PumpEnd::Ended;
                }
                let refill = |b: &mut Vec<u8>| owner.drain(b);
                if write_batches(stream, &mut wbuf, &mut wpos, O::WRITE_TURNS, refill).is_err() {
                    eof = true;
                }
            }
            _ = owner.notify().notified() => {
                if paused {
                    paused = !owner.resume();
                }
            }
        }
    }
}

pub use client::RelaySetRuntime;
#[cfg(feature = "fault-injection")]
pub use server::FaultHook;
pub use server::{RelayServer, RelayServerConfig, RelayServerHandle};
pub use stun::StunServerCounters;
