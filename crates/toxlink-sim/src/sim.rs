//! The driver: nodes, a virtual clock, the network and a script.
//!
//! A [`SimNode`] is a sans-IO endpoint (the quinn-proto shape): it is handed
//! datagrams, stream events and timeouts, and polled for output and for its
//! next timeout. [`Sim`] owns the clock, the [`Network`], the nodes (each
//! owning one or more addresses) and a queue of scripted actions
//! ([`Sim::at`]). One [`Sim::step`]:
//!
//! 1. drains every node's output into the network at the current time;
//! 2. finds the earliest of: next scripted action, next network arrival,
//!    earliest node timeout; if none, the simulation is idle;
//! 3. advances the clock there (never backwards) and, at that instant, runs
//!    due actions, then delivers due network events in `(time, sequence)`
//!    order, then fires due node timeouts (in node order).
//!
//! Every run loop is bounded by a virtual deadline and by
//! [`Limits::max_steps`] and returns a [`SimError`] instead of hanging; a
//! node that keeps asking for a timeout in the past, or produces output
//! forever, is reported, not spun on.

use bytes::Bytes;
use std::any::Any;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hasher;
use std::time::{Duration, Instant};

use crate::clock::SimClock;
use crate::hash::TraceHasher;
use crate::network::{NetEvent, Network};
use crate::rng::SimRng;
use crate::stream::{StreamEvent, StreamId, StreamInfo, StreamSide};
use crate::Address;

/// A sans-IO endpoint driven by [`Sim`].
///
/// Contract (as quinn-proto's `Connection`): after any `handle_*` call the
/// simulator calls `poll_output` until it returns `None`, and `poll_timeout`
/// before choosing the next instant. `handle_timeout(now)` is called when
/// `now >= poll_timeout()`; a node must then move its timeout forward (or
/// clear it) or the run fails with [`SimError::StepLimit`].
pub trait SimNode<A> {
    /// A datagram arrived for one of this node's addresses (`to`).
    fn handle_datagram(&mut self, now: Instant, from: A, to: A, data: Bytes);

    /// A stream event for one of this node's addresses (`stream.local`).
    fn handle_stream(&mut self, now: Instant, stream: StreamInfo<A>, event: StreamEvent) {
        let _ = (now, stream, event);
    }

    /// The timer returned by `poll_timeout` expired.
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// When this node next wants `handle_timeout`.
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// Next thing this node wants done on the network.
    fn poll_output(&mut self, now: Instant) -> Option<Output<A>>;
}

/// Something a node asks the network to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<A> {
    /// Send a datagram (`from` is not checked: spoofing is allowed).
    Datagram {
        /// Source address.
        from: A,
        /// Destination address.
        to: A,
        /// Payload.
        data: Bytes,
    },
    /// Open a stream from `from` to `to` with the pair's stream config. The
    /// node learns the [`StreamId`] from the `Opened` event (or `Reset` if
    /// refused) for `(local, remote) == (from, to)`.
    OpenStream {
        /// Initiator address (one of the node's).
        from: A,
        /// Acceptor address.
        to: A,
    },
    /// Write bytes on a stream.
    StreamWrite {
        /// The stream.
        stream: StreamId,
        /// The writing side.
        side: StreamSide,
        /// Bytes.
        data: Bytes,
    },
    /// Close this side's sending half (FIN).
    CloseStream {
        /// The stream.
        stream: StreamId,
        /// The closing side.
        side: StreamSide,
    },
    /// Reset the stream (RST) from this side.
    ResetStream {
        /// The stream.
        stream: StreamId,
        /// The resetting side.
        side: StreamSide,
    },
}

impl<A> Output<A> {
    /// A datagram output.
    pub fn datagram(from: A, to: A, data: impl Into<Bytes>) -> Self {
        Output::Datagram {
            from,
            to,
            data: data.into(),
        }
    }
}

/// Index of a node in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Bounds that keep every run finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Steps allowed in one `run_*` call.
    pub max_steps: u64,
    /// Outputs one node may produce in one drain.
    pub max_outputs_per_drain: usize,
    /// Scripted actions run at one instant.
    pub max_actions_per_instant: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 50_000_000,
            max_outputs_per_drain: 1_000_000,
            max_actions_per_instant: 100_000,
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// More steps than [`Limits::max_steps`] (a livelock, or a node whose
    /// timeout does not move).
    #[error("step limit of {steps} reached at t={elapsed:?}")]
    StepLimit {
        /// The limit.
        steps: u64,
        /// Virtual time when it was hit.
        elapsed: Duration,
    },
    /// The virtual deadline passed before the run's goal was met.
    #[error("time limit reached at t={elapsed:?} before the goal was met")]
    TimeLimit {
        /// Virtual time (the deadline).
        elapsed: Duration,
    },
    /// A node produced more output in one drain than allowed.
    #[error("node {node:?} produced more than {limit} outputs at t={elapsed:?}")]
    OutputLimit {
        /// The node.
        node: NodeId,
        /// The limit.
        limit: usize,
        /// Virtual time.
        elapsed: Duration,
    },
    /// Scripted actions kept scheduling more actions at the same instant.
    #[error("more than {limit} scripted actions at t={elapsed:?}")]
    ActionLimit {
        /// The limit.
        limit: usize,
        /// Virtual time.
        elapsed: Duration,
    },
    /// Nothing left to happen while the goal was still unmet.
    #[error("simulation idle at t={elapsed:?} before the goal was met")]
    Idle {
        /// Virtual time.
        elapsed: Duration,
    },
}

/// Result of one [`Sim::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Events at this instant were processed.
    Progress(Instant),
    /// Nothing pending: no arrivals, no timeouts, no actions.
    Idle,
    /// The next thing happens after the deadline; the clock was not moved.
    Beyond(Instant),
}

/// Driver counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Steps taken.
    pub steps: u64,
    /// Datagrams handed to nodes.
    pub datagrams: u64,
    /// Stream events handed to nodes.
    pub stream_events: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Deliveries to an address no node owns (dropped).
    pub undeliverable: u64,
    /// Node outputs the network refused (e.g. write after close).
    pub output_errors: u64,
    /// Scripted actions run.
    pub actions: u64,
    /// Scripted stream operations that failed (unknown stream...).
    pub script_errors: u64,
}

/// Object-safe node plus downcasting, implemented for every `SimNode`.
trait ErasedNode<A>: SimNode<A> {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<A, T: SimNode<A> + Any> ErasedNode<A> for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

type ActionFn<A> = Box<dyn FnOnce(&mut Sim<A>)>;

struct Action<A: Address> {
    at: Instant,
    seq: u64,
    f: ActionFn<A>,
}

impl<A: Address> PartialEq for Action<A> {
    fn eq(&self, o: &Self) -> bool {
        self.seq == o.seq
    }
}
impl<A: Address> Eq for Action<A> {}
impl<A: Address> PartialOrd for Action<A> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<A: Address> Ord for Action<A> {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A deterministic simulation: clock, network, nodes and a script.
pub struct Sim<A: Address> {
    /// Virtual clock (read it; the driver moves it).
    pub clock: SimClock,
    /// The network: configure links and streams here.
    pub network: Network<A>,
    /// Randomness for the scenario itself (forked from the seed, independent
    /// of the network's).
    pub rng: SimRng,
    /// Run bounds.
    pub limits: Limits,
    seed: u64,
    nodes: Vec<Box<dyn ErasedNode<A>>>,
    owners: HashMap<A, NodeId>,
    actions: BinaryHeap<Action<A>>,
    action_seq: u64,
    stats: SimStats,
}

impl<A: Address> std::fmt::Debug for Sim<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("elapsed", &self.clock.elapsed())
            .field("nodes", &self.nodes.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<A: Address> Sim<A> {
    /// A simulation seeded with `seed`, at virtual time zero, with an empty
    /// network (no default route).
    pub fn new(seed: u64) -> Self {
        Self::with_clock(seed, SimClock::new())
    }

    /// Same, with a given clock (e.g. a shared base).
    pub fn with_clock(seed: u64, clock: SimClock) -> Self {
        let root = SimRng::new(seed);
        Self {
            network: Network::new(clock.base(), root.fork("network")),
            rng: root.fork("scenario"),
            clock,
            limits: Limits::default(),
            seed,
            nodes: Vec::new(),
            owners: HashMap::new(),
            actions: BinaryHeap::new(),
            action_seq: 0,
            stats: SimStats::default(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// The instant at `offset` from the start.
    pub fn time(&self, offset: Duration) -> Instant {
        self.clock.at(offset)
    }

    /// An independent RNG for a node, derived from the seed and `label`
    /// (inject it as the node's `CryptoRng`).
    pub fn rng_for(&self, label: &str) -> SimRng {
        SimRng::new(self.seed).fork(label)
    }

    /// Driver counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Hash of everything observable so far: every delivery (network trace),
    /// the number of timeouts fired and the current time.
    pub fn trace_hash(&self) -> u64 {
        let mut h = TraceHasher::new();
        h.write_u64(self.network.trace_hash());
        h.write_u64(self.stats.timeouts);
        h.write_u64(self.clock.elapsed().as_nanos() as u64);
        h.finish()
    }

    /// Adds a node owning `addrs`. An address belongs to one node; giving it
    /// to another moves it (NAT rebinding, a relay's address taken over).
    pub fn add_node<N: SimNode<A> + 'static>(
        &mut self,
        node: N,
        addrs: impl IntoIterator<Item = A>,
    ) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Box::new(node));
        for a in addrs {
            self.add_address(id, a);
        }
        id
    }

    /// Gives `addr` to `node` (taking it from its previous owner).
    pub fn add_address(&mut self, node: NodeId, addr: A) {
        if let Some(prev) = self.owners.insert(addr, node) {
            if prev != node {
                tracing::debug!(?addr, ?prev, ?node, "address moved");
            }
        }
    }

    /// Removes `addr` from whoever owns it: deliveries to it are dropped.
    pub fn remove_address(&mut self, addr: A) {
        self.owners.remove(&addr);
    }

    /// Who owns `addr`.
    pub fn owner(&self, addr: A) -> Option<NodeId> {
        self.owners.get(&addr).copied()
    }

    /// The node `id` as its concrete type.
    pub fn node<N: SimNode<A> + 'static>(&self, id: NodeId) -> Option<&N> {
        self.nodes.get(id.0)?.as_any().downcast_ref()
    }

    /// The node `id` as its concrete type, mutably.
    pub fn node_mut<N: SimNode<A> + 'static>(&mut self, id: NodeId) -> Option<&mut N> {
        self.nodes.get_mut(id.0)?.as_any_mut().downcast_mut()
    }

    // ---- the script ------------------------------------------------------

    /// Runs `f` when virtual time reaches `offset` from the start (at once,
    /// on the next step, if that is already past). Actions at the same
    /// instant run in the order they were scheduled, before deliveries.
    pub fn at(&mut self, offset: Duration, f: impl FnOnce(&mut Sim<A>) + 'static) {
        let t = self.clock.at(offset);
        self.at_instant(t, f);
    }

    /// Runs `f` at instant `t`.
    pub fn at_instant(&mut self, t: Instant, f: impl FnOnce(&mut Sim<A>) + 'static) {
        self.action_seq += 1;
        self.actions.push(Action {
            at: t,
            seq: self.action_seq,
            f: Box::new(f),
        });
    }

    /// Runs `f` after `d` from now.
    pub fn after(&mut self, d: Duration, f: impl FnOnce(&mut Sim<A>) + 'static) {
        let t = self.clock.now() + d;
        self.at_instant(t, f);
    }

    /// Script helper: resets a stream from the middle (both sides get
    /// `Reset`). Failures are counted in [`SimStats::script_errors`].
    pub fn reset_stream(&mut self, id: StreamId) {
        let now = self.now();
        let r = self.network.stream_reset(now, id);
        self.script_result(r);
    }

    /// Script helper: stalls a stream for `d` from now.
    pub fn stall_stream(&mut self, id: StreamId, d: Duration) {
        let now = self.now();
        let r = self.network.stream_stall(now, id, now + d);
        self.script_result(r);
    }

    /// Script helper: black-holes a stream for good.
    pub fn black_hole_stream(&mut self, id: StreamId) {
        let now = self.now();
        let r = self.network.stream_black_hole(now, id);
        self.script_result(r);
    }

    /// Script helper: sends a datagram at the current time (an attacker, a
    /// stray packet).
    pub fn inject(&mut self, from: A, to: A, data: impl Into<Bytes>) {
        let now = self.now();
        self.network.send(now, from, to, data);
    }

    fn script_result(&mut self, r: Result<(), crate::StreamError>) {
        if let Err(e) = r {
            tracing::warn!(%e, "scripted stream operation failed");
            self.stats.script_errors += 1;
        }
    }

    // ---- driving -----------------------------------------------------------

    fn drain_outputs(&mut self) -> Result<(), SimError> {
        let now = self.clock.now();
        let limit = self.limits.max_outputs_per_drain;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let mut n = 0usize;
            while let Some(out) = node.poll_output(now) {
                n += 1;
                if n > limit {
                    return Err(SimError::OutputLimit {
                        node: NodeId(i),
                        limit,
                        elapsed: self.clock.elapsed(),
                    });
                }
                let net = &mut self.network;
                let r = match out {
                    Output::Datagram { from, to, data } => {
                        net.send(now, from, to, data);
                        Ok(())
                    }
                    Output::OpenStream { from, to } => {
                        net.open_stream_default(now, from, to);
                        Ok(())
                    }
                    Output::StreamWrite { stream, side, data } => {
                        net.stream_write(now, stream, side, data)
                    }
                    Output::CloseStream { stream, side } => net.stream_close(now, stream, side),
                    Output::ResetStream { stream, side } => {
                        net.stream_reset_from(now, stream, side)
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(node = i, %e, "node output refused");
                    self.stats.output_errors += 1;
                }
            }
        }
        Ok(())
    }

    /// Earliest instant at which something is due (may be in the past for a
    /// node timeout).
    pub fn next_event_time(&mut self) -> Option<Instant> {
        let mut next = self.network.next_event_time();
        if let Some(a) = self.actions.peek() {
            next = Some(next.map_or(a.at, |n| n.min(a.at)));
        }
        for node in &mut self.nodes {
            if let Some(t) = node.poll_timeout() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    fn step_to(&mut self, deadline: Option<Instant>) -> Result<StepOutcome, SimError> {
        self.drain_outputs()?;
        let Some(next) = self.next_event_time() else {
            return Ok(StepOutcome::Idle);
        };
        if deadline.is_some_and(|d| next > d) {
            return Ok(StepOutcome::Beyond(next));
        }
        let now = self.clock.advance_to(next);
        self.stats.steps += 1;

        let mut n = 0usize;
        while self.actions.peek().is_some_and(|a| a.at <= now) {
            n += 1;
            if n > self.limits.max_actions_per_instant {
                return Err(SimError::ActionLimit {
                    limit: self.limits.max_actions_per_instant,
                    elapsed: self.clock.elapsed(),
                });
            }
            if let Some(a) = self.actions.pop() {
                self.stats.actions += 1;
                (a.f)(self);
            }
        }
        // The clock is public, so an action may have advanced it: deliver
        // at its current reading.
        let now = self.clock.now();
        while let Some(ev) = self.network.poll(now) {
            match ev {
                NetEvent::Datagram(d) => match self.owners.get(&d.to) {
                    Some(id) => {
                        tracing::trace!(
                            t = ?self.clock.elapsed(),
                            from = ?d.from,
                            to = ?d.to,
                            len = d.data.len(),
                            "deliver datagram"
                        );
                        self.stats.datagrams += 1;
                        if let Some(node) = self.nodes.get_mut(id.0) {
                            node.handle_datagram(now, d.from, d.to, d.data);
                        }
                    }
                    None => self.stats.undeliverable += 1,
                },
                NetEvent::Stream(s) => match self.owners.get(&s.info.local) {
                    Some(id) => {
                        tracing::trace!(
                            t = ?self.clock.elapsed(),
                            stream = ?s.info.id,
                            to = ?s.info.local,
                            event = ?s.event,
                            "deliver stream event"
                        );
                        self.stats.stream_events += 1;
                        if let Some(node) = self.nodes.get_mut(id.0) {
                            node.handle_stream(now, s.info, s.event);
                        }
                    }
                    None => self.stats.undeliverable += 1,
                },
            }
        }
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                self.stats.timeouts += 1;
                node.handle_timeout(now);
            }
        }
        Ok(StepOutcome::Progress(now))
    }

    /// One step with no deadline (see the module docs).
    pub fn step(&mut self) -> Result<StepOutcome, SimError> {
        self.step_to(None)
    }

    fn check_steps(&self, steps: u64) -> Result<(), SimError> {
        if steps > self.limits.max_steps {
            Err(SimError::StepLimit {
                steps: self.limits.max_steps,
                elapsed: self.clock.elapsed(),
            })
        } else {
            Ok(())
        }
    }

    /// Runs everything due up to `offset` from the start, then leaves the
    /// clock at exactly that time (node output produced at the last step is
    /// drained into the network).
    pub fn run_until(&mut self, offset: Duration) -> Result<(), SimError> {
        let deadline = self.clock.at(offset);
        self.run_until_instant(deadline)
    }

    /// Runs for `d` of virtual time from now.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let deadline = self.clock.now() + d;
        self.run_until_instant(deadline)
    }

    /// [`Sim::run_until`] with an `Instant`.
    pub fn run_until_instant(&mut self, deadline: Instant) -> Result<(), SimError> {
        let mut steps = 0u64;
        loop {
            steps += 1;
            self.check_steps(steps)?;
            match self.step_to(Some(deadline))? {
                StepOutcome::Progress(_) => {}
                StepOutcome::Idle | StepOutcome::Beyond(_) => break,
            }
        }
        self.clock.advance_to(deadline);
        self.drain_outputs()
    }

    /// Runs until nothing is pending at all (no arrivals, timeouts or
    /// actions). Fails with [`SimError::TimeLimit`] if that takes more than
    /// `max_time` of virtual time (nodes with periodic timers never idle).
    pub fn run_until_idle(&mut self, max_time: Duration) -> Result<(), SimError> {
        let deadline = self.clock.now() + max_time;
        let mut steps = 0u64;
        loop {
            steps += 1;
            self.check_steps(steps)?;
            match self.step_to(Some(deadline))? {
                StepOutcome::Progress(_) => {}
                StepOutcome::Idle => return Ok(()),
                StepOutcome::Beyond(_) => {
                    self.clock.advance_to(deadline);
                    return Err(SimError::TimeLimit {
                        elapsed: self.clock.elapsed(),
                    });
                }
            }
        }
    }

    /// Runs while `pred(self)` holds (checked before every step). Returns
    /// `Ok` as soon as it is false; [`SimError::TimeLimit`] if `max_time` of
    /// virtual time passes first; [`SimError::Idle`] if nothing is left to
    /// happen while it still holds.
    pub fn run_while(
        &mut self,
        mut pred: impl FnMut(&mut Sim<A>) -> bool,
        max_time: Duration,
    ) -> Result<(), SimError> {
        let deadline = self.clock.now() + max_time;
        let mut steps = 0u64;
        loop {
            if !pred(self) {
                return Ok(());
            }
            steps += 1;
            self.check_steps(steps)?;
            match self.step_to(Some(deadline))? {
                StepOutcome::Progress(_) => {}
                StepOutcome::Idle => {
                    return Err(SimError::Idle {
                        elapsed: self.clock.elapsed(),
                    })
                }
                StepOutcome::Beyond(_) => {
                    self.clock.advance_to(deadline);
                    // One last look: output drained at the deadline may not
                    // change `pred`, but state after the last step might.
                    if !pred(self) {
                        return Ok(());
                    }
                    return Err(SimError::TimeLimit {
                        elapsed: self.clock.elapsed(),
                    });
                }
            }
        }
    }
}
