//! [`Intercept`]: a node wrapped with fault injection on its inputs and
//! outputs (a relay that corrupts, drops or rewrites what it forwards),
//! without touching the wrapped node's code.

use crate::{Output, SimNode, SimRng, StreamEvent, StreamInfo};
use bytes::Bytes;
use std::time::Instant;

/// Decides, for each input and output of a wrapped node, whether it passes
/// (possibly modified). Return `false` to drop it.
pub type Filter<T> = Box<dyn FnMut(Instant, &mut SimRng, &mut T) -> bool>;

/// A node wrapped with fault injection on its inputs and outputs: a relay
/// that corrupts, drops or rewrites what it forwards, without touching the
/// relay's own code. Each filter draws from its own [`SimRng`].
pub struct Intercept<A, N> {
    /// The wrapped node.
    pub inner: N,
    rng: SimRng,
    on_output: Option<Filter<Output<A>>>,
    on_datagram: Option<Filter<Bytes>>,
    on_stream: Option<Filter<StreamEvent>>,
    /// Outputs dropped by the output filter.
    pub dropped_outputs: u64,
    /// Inputs dropped by the input filters.
    pub dropped_inputs: u64,
}

impl<A, N> Intercept<A, N> {
    /// Wraps `inner`; filters draw from `rng`.
    pub fn new(inner: N, rng: SimRng) -> Self {
        Self {
            inner,
            rng,
            on_output: None,
            on_datagram: None,
            on_stream: None,
            dropped_outputs: 0,
            dropped_inputs: 0,
        }
    }

    /// Filter for everything the node emits.
    pub fn on_output(
        mut self,
        f: impl FnMut(Instant, &mut SimRng, &mut Output<A>) -> bool + 'static,
    ) -> Self {
        self.on_output = Some(Box::new(f));
        self
    }

    /// Filter for datagrams the node receives.
    pub fn on_datagram(
        mut self,
        f: impl FnMut(Instant, &mut SimRng, &mut Bytes) -> bool + 'static,
    ) -> Self {
        self.on_datagram = Some(Box::new(f));
        self
    }

    /// Filter for stream events the node receives.
    pub fn on_stream(
        mut self,
        f: impl FnMut(Instant, &mut SimRng, &mut StreamEvent) -> bool + 'static,
    ) -> Self {
        self.on_stream = Some(Box::new(f));
        self
    }
}

impl<A, N: SimNode<A>> SimNode<A> for Intercept<A, N> {
    fn handle_datagram(&mut self, now: Instant, from: A, to: A, mut data: Bytes) {
        if let Some(f) = &mut self.on_datagram {
            if !f(now, &mut self.rng, &mut data) {
                self.dropped_inputs += 1;
                return;
            }
        }
        self.inner.handle_datagram(now, from, to, data);
    }

    fn handle_stream(&mut self, now: Instant, stream: StreamInfo<A>, mut event: StreamEvent) {
        if let Some(f) = &mut self.on_stream {
            if !f(now, &mut self.rng, &mut event) {
                self.dropped_inputs += 1;
                return;
            }
        }
        self.inner.handle_stream(now, stream, event);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output<A>> {
        loop {
            let mut out = self.inner.poll_output(now)?;
            let keep = match &mut self.on_output {
                Some(f) => f(now, &mut self.rng, &mut out),
                None => true,
            };
            if keep {
                return Some(out);
            }
            self.dropped_outputs += 1;
        }
    }
}
