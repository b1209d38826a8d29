//! A peer's discovery state (candidates being punched or proven, the
//! endpoint lists exchanged, challenges outstanding) and the limits that
//! bound it; the node's behaviour around it is in the parent module.

use super::super::Addr;
use crate::wire::path_control::{Endpoint, MAX_ENDPOINTS};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Candidates of one peer held at most.
pub(in crate::node) const MAX_CANDIDATES: usize = 8;
/// Outstanding challenge tokens per peer.
pub(in crate::node) const MAX_TOKENS: usize = 16;
/// Answers to challenges queued per peer.
pub(in crate::node) const MAX_PENDING_RESPONSES: usize = 8;
/// Sends of one generation of our endpoint list to one peer.
pub(in crate::node) const MAX_LIST_SENDS: u8 = 5;
/// First re-send of an unacknowledged endpoint list (doubling).
pub(in crate::node) const LIST_RESEND: Duration = Duration::from_millis(250);
/// Shortest gap between two endpoint lists to one peer.
pub(in crate::node) const LIST_MIN_GAP: Duration = Duration::from_millis(100);
/// First gap between challenges to a candidate (doubling).
pub(in crate::node) const PUNCH_FIRST: Duration = Duration::from_millis(50);
/// Longest gap between challenges to a candidate.
pub(in crate::node) const PUNCH_MAX: Duration = Duration::from_secs(2);
/// Challenges to a candidate before it is given up (about 20 s).
pub(in crate::node) const MAX_PUNCHES: u8 = 14;
/// Longest gap between challenges to a proven path that died.
pub(in crate::node) const REPUNCH_MAX: Duration = Duration::from_millis(500);
/// Challenges to a proven path that died before it is left to the data
/// probes (about 30 s).
pub(in crate::node) const MAX_REPUNCHES: u8 = 64;
/// A route the peer no longer advertises is left once nothing came from it
/// for this long.
pub(in crate::node) const WITHDRAWN_QUIET: Duration = Duration::from_millis(100);
/// How often a proven candidate's path is looked at (punched again once
/// dead).
pub(in crate::node) const PROOF_CHECK: Duration = Duration::from_secs(1);
/// Challenges the node sends per second (and at once, [`PUNCH_BURST`]):
/// a friend that advertises address after address cannot turn us into a
/// packet cannon.
pub(in crate::node) const PUNCH_PER_SEC: f64 = 100.0;
/// See [`PUNCH_PER_SEC`].
pub(in crate::node) const PUNCH_BURST: f64 = 50.0;
/// Trial decryptions for packets from unknown addresses, per second.
pub(in crate::node) const ROAM_PER_SEC: f64 = 500.0;
/// See [`ROAM_PER_SEC`].
pub(in crate::node) const ROAM_BURST: f64 = 100.0;
/// Paths one endpoint list goes on at once.
pub(in crate::node) const LIST_ROUTES: usize = 3;
/// Our own endpoints advertised at most (the wire's limit, less one for
/// the observed address).
pub(in crate::node) const MAX_LOCAL: usize = MAX_ENDPOINTS - 1;

/// One advertised endpoint of a peer, being punched or proven.
#[derive(Debug, Clone)]
pub(in crate::node) struct Candidate<A> {
    pub(in crate::node) addr: A,
    /// Challenges sent since it was (re)armed.
    pub(in crate::node) tries: u8,
    /// When the next challenge is due (`None`: given up).
    pub(in crate::node) next: Option<Instant>,
    pub(in crate::node) proven: bool,
    /// When the peer's packets started coming from it (roaming).
    pub(in crate::node) roamed_at: Option<Instant>,
    /// When the first authenticated packet came from it, until the
    /// migration check ran (see [`Node::migrated`]).
    pub(in crate::node) first_rx: Option<Instant>,
    /// It was proven and died: punched again every [`REPUNCH_MAX`] at most
    /// (a firewall that opens again, a NAT that forgot us).
    pub(in crate::node) repunch: bool,
}

/// One peer's discovery state.
#[derive(Debug)]
pub(in crate::node) struct Discovery<A> {
    /// The generation of our list last sent, and how often.
    pub(in crate::node) sent: Option<(u16, u8)>,
    pub(in crate::node) next_list: Option<Instant>,
    pub(in crate::node) last_list: Option<Instant>,
    /// The newest generation of our list the peer acknowledged.
    pub(in crate::node) peer_acked: Option<u16>,
    /// The newest generation of the peer's list we hold.
    pub(in crate::node) peer_gen: Option<u16>,
    /// The peer sent a new list: answer with ours (it acknowledges).
    pub(in crate::node) reply: bool,
    pub(in crate::node) candidates: Vec<Candidate<A>>,
    /// Outstanding challenges: token, where it went, when.
    pub(in crate::node) tokens: VecDeque<([u8; 8], A, Instant)>,
    /// Answers to send: where, token.
    pub(in crate::node) responses: VecDeque<(A, [u8; 8])>,
    /// The address the peer's authenticated UDP packets last came from.
    pub(in crate::node) observed: Option<A>,
    /// Direct paths the current endpoint list still has to go on (sealed
    /// as it leaves; at most [`LIST_ROUTES`]).
    pub(in crate::node) list_to: Vec<A>,
    /// The endpoints of the peer's newest list.
    pub(in crate::node) advertised: Vec<A>,
}

impl<A: Addr> Discovery<A> {
    pub(in crate::node) fn new() -> Self {
        Discovery {
            sent: None,
            next_list: None,
            last_list: None,
            peer_acked: None,
            peer_gen: None,
            reply: false,
            candidates: Vec::new(),
            tokens: VecDeque::new(),
            responses: VecDeque::new(),
            observed: None,
            list_to: Vec::new(),
            advertised: Vec::new(),
        }
    }

    /// The earliest instant something is due.
    pub(in crate::node) fn poll_timeout(&self) -> Option<Instant> {
        let cand = self.candidates.iter().filter_map(|c| c.next).min();
        let list = self.next_list;

        match (cand, list) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Candidates being punched, proven or given up (for tests and stats).
    pub(in crate::node) fn candidates(&self) -> impl Iterator<Item = (A, bool)> + '_ {
        self.candidates.iter().map(|c| (c.addr, c.proven))
    }

    /// Punches `addr` (again); returns a candidate it pushed out, whose
    /// route the caller removes.
    #[must_use]
    pub(in crate::node) fn arm(&mut self, now: Instant, addr: A, roamed: bool) -> Option<A> {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            if c.next.is_none() && !c.proven {
                c.tries = 0;
                c.next = Some(now);
            }
            if roamed {
                c.roamed_at = Some(now);
                c.first_rx.get_or_insert(now);
            }
            return None;
        }
        let mut evicted = None;
        if self.candidates.len() >= MAX_CANDIDATES {
            // Forget the oldest one that is not proven, else keep what we
            // have.
            let i = self.candidates.iter().position(|c| !c.proven)?;
            evicted = Some(self.candidates.remove(i).addr);
        }
        self.candidates.push(Candidate {
            addr,
            tries: 0,
            next: Some(now),
            proven: false,
            roamed_at: roamed.then_some(now),
            first_rx: roamed.then_some(now),
            repunch: false,
        });
        evicted
    }
}

/// The node's own endpoints and their generation.
#[derive(Debug, Default)]
pub(in crate::node) struct LocalEndpoints {
    pub(in crate::node) list: Vec<Endpoint>,
    pub(in crate::node) generation: u16,
}
