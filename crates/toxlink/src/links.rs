//! The node's relay links on tokio: one task per [`LinkId`] the sans-IO node
//! asks for ([`LinkOutput::Open`] from
//! [`toxlink_proto::node::Node::poll_link`]). A task connects, then moves
//! bytes between its TCP socket and the node under the node's lock: what it
//! reads goes in as [`Input::LinkBytes`] (read into our own buffer as it
//! arrives, never waiting for a whole frame in the kernel), what
//! `drain_link` gives is written in small frame-aligned batches. Whenever a
//! task changed the node it dispatches connection events and wakes the UDP
//! driver and the other links, since relay input can produce output anywhere.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use toxlink_proto::node::{Input, LinkId, LinkOutput};

use crate::{dispatch, Shared, State};

use crate::relay::{PumpEnd, StreamOwner, CLIENT_WRITE_BATCH as WRITE_BATCH};

/// The driver's handle on one link task.
#[derive(Debug, Default)]
pub(crate) struct LinkHandle {
    notify: Notify,
    closed: AtomicBool,
}

impl LinkHandle {
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Starts the connections the node asks for, closes the ones it names and
/// wakes links that have output. Call with the lock held after any change.
pub(crate) fn service(st: &mut State, shared: &Arc<Shared>) {
    while let Some(out) = st.node.poll_link() {
        match out {
            LinkOutput::Close(link) => {
                if let Some(h) = st.links.remove(&link) {
                    h.close();
                }
            }
            LinkOutput::Open { link, addr } => {
                let handle = Arc::new(LinkHandle::default());
                if let Some(old) = st.links.insert(link, handle.clone()) {
                    old.close();
                }
                tokio::spawn(link_task(shared.clone(), link, addr, handle));
            }
            _ => {}
        }
    }
    for (link, h) in &st.links {
        if st.node.link_has_output(link) {
            h.wake();
        }
    }
}

/// After relay input: connection events, and wake-ups for the driver (UDP
/// output, timers) and for the links.
fn after_input(st: &mut State, shared: &Arc<Shared>, now: Instant) {
    dispatch(st, shared, now);
    crate::notify_writable(st);
    service(st, shared);
}

/// One relay link of the node, as [`crate::relay::pump`] serves it.
struct Link<'a> {
    shared: &'a Arc<Shared>,
    link: LinkId,
    handle: &'a LinkHandle,
}

impl StreamOwner for Link<'_> {
    const WRITE_TURNS: usize = 4;

    fn closed(&self) -> bool {
        self.handle.closed.load(Ordering::Acquire)
    }

    fn drain(&self, out: &mut Vec<u8>) -> usize {
        self.shared
            .lock()
            .node
            .drain_link(&self.link, out, WRITE_BATCH)
    }

    /// Relay input can produce output anywhere: events are dispatched and
    /// the UDP driver and the other links are woken.
    fn feed(&self, bytes: &mut [u8]) -> bool {
        let mut st = self.shared.lock();
        let now = Instant::now();
        let _ = st.node.handle(now, Input::LinkBytes(self.link, bytes));
        after_input(&mut st, self.shared, now);
        drop(st);
        self.shared.wake.notify_one();
        false
    }

    fn notify(&self) -> &Notify {
        &self.handle.notify
    }
}

async fn link_task(shared: Arc<Shared>, link: LinkId, addr: SocketAddr, handle: Arc<LinkHandle>) {
    let stream = crate::relay::connect(addr).await;
    let Some(stream) = stream.filter(|_| !handle.closed.load(Ordering::Acquire)) else {
        let mut st = shared.lock();
        if st.links.get(&link).is_some_and(|h| Arc::ptr_eq(h, &handle)) {
            st.links.remove(&link);
            let now = Instant::now();
            let _ = st.node.handle(now, Input::LinkFailed(link));
            after_input(&mut st, &shared, now);
        }
        drop(st);
        shared.wake.notify_one();
        return;
    };
    {
        let mut st = shared.lock();
        let now = Instant::now();
        let _ = st.node.handle(now, Input::LinkUp(link));
        after_input(&mut st, &shared, now);
    }
    shared.wake.notify_one();
    let owner = Link {
        shared: &shared,
        link,
        handle: &handle,
    };
    if crate::relay::pump(&stream, &owner).await == PumpEnd::Closed {
        // The node closed this link: it already knows.
        return;
    }
    {
        let mut st = shared.lock();
        if st.links.get(&link).is_some_and(|h| Arc::ptr_eq(h, &handle)) {
            st.links.remove(&link);
            let now = Instant::now();
            let _ = st.node.handle(now, Input::LinkClosed(link));
            after_input(&mut st, &shared, now);
        }
    }
    shared.wake.notify_one();
}
