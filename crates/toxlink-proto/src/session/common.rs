//! What every phase of a session shares (see [`Common`]) and the session's
//! timers.

use super::congestion::Congestion;
use super::{Event, PathId, SessionConfig, SessionStats};
use crate::crypto::{Nonce, PublicKey};
use crate::timer::{Timer, TimerTable};
use rand_chacha::ChaCha20Rng;
use std::collections::VecDeque;
use std::time::Instant;

/// The deadlines of a session (one [`TimerTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionTimer {
    /// The next cookie request / handshake (re-)send, or the give-up once
    /// `handshake_tries` went out (§4.5). Handshake phase only.
    Handshake,
    /// A request packet (acknowledgements) is due: at once for a hole, after
    /// the ack delay otherwise.
    Request,
    /// The periodic request packet (`request_interval`, §4.9).
    Baseline,
    /// Retransmission timeout of the oldest lossless packet in flight.
    Rto,
    /// Pacing: when the congestion controller lets the next lossless packet
    /// out (only counted while one is pending).
    Pacing,
}

impl Timer for SessionTimer {
    const ALL: &'static [Self] = &[
        SessionTimer::Handshake,
        SessionTimer::Request,
        SessionTimer::Baseline,
        SessionTimer::Rto,
        SessionTimer::Pacing,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// What every phase shares: the peer, the configuration, congestion control
/// (seeded by the handshake's RTT, capped by the owner at any time), the
/// timers, the event queue and the counters.
pub(super) struct Common {
    pub(super) cfg: SessionConfig,
    pub(super) rng: ChaCha20Rng,
    pub(super) peer_real: PublicKey,
    pub(super) peer_dht: PublicKey,
    pub(super) our_real_pk: PublicKey,
    /// Our TX base nonce (sent in our handshake; the link's first nonce).
    pub(super) tx_base: Nonce,
    pub(super) cc: Congestion,
    pub(super) timers: TimerTable<SessionTimer, { SessionTimer::ALL.len() }>,
    pub(super) events: VecDeque<Event>,
    /// The terminal event, reported after everything else.
    pub(super) terminal: Option<Event>,
    /// The latest `now` seen: "due at once" deadlines are reported as this.
    pub(super) last_now: Instant,
    pub(super) paths: Vec<PathInfo>,
    pub(super) last_authenticated_any: Option<Instant>,
    /// Lossless packet numbers acknowledged since the owner last drained
    /// them (`None`: not recorded; see [`Session::record_acks`]).
    pub(super) acked_log: Option<Vec<u32>>,
    pub(super) stats: SessionStats,
}

impl Common {
    /// An authenticated packet arrived on `path`.
    pub(super) fn note_path(&mut self, now: Instant, path: PathId) {
        match self.paths.iter_mut().find(|p| p.path == path) {
            Some(p) => p.last_auth = now,
            None => {
                if self.paths.len() < MAX_AUTH_PATHS {
                    self.paths.push(PathInfo {
                        path,
                        last_auth: now,
                    });
                }
            }
        }
    }

    /// Queues an informational event (bounded: excess dropped and counted).
    pub(super) fn push_info(&mut self, e: Event) {
        if self.events.len() < self.cfg.max_events {
            self.events.push_back(e);
        } else {
            self.stats.queue_drops += 1;
        }
    }
}

/// Paths whose last authenticated receive is remembered (see
/// [`Session::last_authenticated`]); later ones are not tracked.
const MAX_AUTH_PATHS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub(super) struct PathInfo {
    pub(super) path: PathId,
    pub(super) last_auth: Instant,
}
