//! Self-probes (docs/DESIGN.md §3 "Framing"): evidence about a relay that no
//! friend can forge.
//!
//! When a peer's traffic through relay R fails authentication, R may be
//! tampering, or the peer may be sending garbage through a good relay to get
//! it dropped. To tell the two apart the node routes to *itself* through R
//! with a second relay identity (the probe identity: a key pair of its own
//! and [`SelfProber`]'s own [`RelaySet`]) and checks packets sealed between
//! its two identities: only R can have touched them.
//!
//! # Probe traffic a relay cannot tell from real traffic
//!
//! A relay that recognises probes spares them and passes every run, so
//! nothing about a probe or its link may stand out:
//!
//! * **Link and key.** The probe key pair is made at node start (from the
//!   node's seed) and lives as long as the node (as its DHT key does). The
//!   probe identity connects to every relay of the node's relay set as soon
//!   as the main identity does ([`SelfProber::sync`], also run when the node
//!   hands out relay connections), and both identities route to each other
//!   there for as long as the relay is in the set, blame or not. A run opens
//!   and ties nothing: it uses what the relay has seen all along.
//! * **Background traffic.** On every relay, at random times unrelated to
//!   blame (gaps of [`BACKGROUND_MIN`] plus an exponential draw, never over
//!   [`BACKGROUND_MAX`], about 16 s on average), the two identities exchange
//!   one or two probes each way (1.25 on average), spread over
//!   [`BACKGROUND_SPREAD`]. A run after a blame is more of the same between
//!   the same two keys, on the same links. A background probe
//!   that arrives forged is a failed self-probe at once
//!   ([`ProbeOutcome::background`]), so a relay that tampers with everything
//!   a node sends is caught by that node even when no peer blames it.
//! * **Packets.** A probe is a net_crypto data packet: id 27, the two low
//!   bytes of the nonce, a box of random bytes. Each relay and direction has
//!   its own nonce that starts at random and goes up by one per probe, so the
//!   two clear bytes continue like a real session's; the receiver rebuilds
//!   the full nonce from them as net_crypto does. There is no counter or
//!   marker in the clear. Sizes are drawn from what real traffic uses: a
//!   multiple of 8 (every net_crypto data packet is one, by its padding rule)
//!   from 32 to [`MAX_PACKET_SIZE`]; 60 % full-size (1400 bytes, as every
//!   chunk of a file transfer), 25 % 32..=64 bytes (request packets, ALIVE
//!   and other small control packets), 15 % anything between.
//!
//! # Runs
//!
//! A run ([`SelfProber::start`]) sends [`PROBES`] probes each way at random
//! times within [`RUN_SPREAD`]. It fails if any probe that arrives meanwhile
//! (run or background) does not open, or if fewer than half of its probes
//! arrive in either direction within [`ARRIVAL`] of the last one going out or
//! by [`RUN_DEADLINE`]; otherwise it passes. Probes wait while either route
//! is not ONLINE (a link reconnecting); the deadline still holds.
//!
//! # Cost
//!
//! Per relay of the node: one more TCP link (with its keep-alives) and one
//! routing slot on each of the two identities' links. Background: 2.5 probes
//! per exchange, an exchange every 16 s on average, so about 9 packets a
//! minute per relay (both directions together) of 960 bytes on average
//! (the full-size ones dominate): about 9 KB a minute per relay, each
//! crossing the relay once; the node wakes up for them once per exchange. A
//! run adds 2 × [`PROBES`] packets (about 46 KB) within one second.
//!
//! # What a relay can still tell
//!
//! * Both identities connect from the same address at about the same time,
//!   and the probe key routes to the node's DHT key only (nobody else routes
//!   to it): a relay that looks for such a pair finds it and can spare it.
//!   Hiding that needs another address (a second network path, a proxy).
//! * The pair never runs a net_crypto handshake (no cookie or handshake
//!   packets), and its rhythm is not a friend connection's (ALIVE every 8 s):
//!   it is a session that is always idle but for short exchanges.
//! * A run sends more in one second than the background does, and it comes
//!   right after the relay corrupted something: a relay that has already
//!   singled out the pair can see runs coming (it must spare the pair from
//!   the first packet, as it cannot know a run before it starts).
//! * A relay that corrupts a small share p of the packets it picks passes a
//!   run with probability about (1 − p)^n, n the run's probes it would pick.
//! * Faults aimed at what one peer sends us never touch the probe pair; the
//!   per-peer drop ([`crate::paths::blame`]) handles them, as it handles a
//!   peer framing a relay.
//!
//! Invariants: one run per relay at a time, at most [`MAX_RUNS`] at once;
//! every run ends (passed, failed or timed out) by its deadline. Memory: one
//! lane per relay of the node's set (at most [`MAX_LANES`]), at most
//! [`MAX_PENDING`] scheduled probes per lane, at most [`MAX_DONE`] outcomes
//! waiting to be polled.

use crate::crypto::{KeyPair, Nonce, PublicKey, SharedKey, MAC_SIZE};
use crate::relay_client::{
    PeerRelayState, RelayLinkState, RelaySet, RelaySetConfig, RelaySetEvent,
};
use crate::session::handshake::PACKET_DATA;
use crate::session::MAX_PACKET_SIZE;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Probes sent each way in one run.
pub const PROBES: u16 = 24;
/// Runs at once.
pub const MAX_RUNS: usize = 4;
/// A run ends at the latest this long after it started.
pub const RUN_DEADLINE: Duration = Duration::from_secs(6);
/// A run's probes go out at random times within this.
pub const RUN_SPREAD: Duration = Duration::from_secs(1);
/// After a run's last probe went out, the probes have this long to arrive.
pub const ARRIVAL: Duration = Duration::from_secs(2);
/// Background gaps are [`BACKGROUND_MIN`] plus an exponential draw of mean
/// `BACKGROUND_MEAN - BACKGROUND_MIN`; draws past [`BACKGROUND_MAX`] are
/// replaced by a uniform one, so the gaps average about 16 s.
pub const BACKGROUND_MEAN: Duration = Duration::from_secs(20);
/// Shortest gap between two background exchanges.
pub const BACKGROUND_MIN: Duration = Duration::from_secs(2);
/// Longest gap between two background exchanges.
pub const BACKGROUND_MAX: Duration = Duration::from_secs(45);
/// The probes of one background exchange go out within this.
pub const BACKGROUND_SPREAD: Duration = Duration::from_millis(300);
/// Relays with a probe link at most (the node's relay set is bounded by the
/// pool's known relays, 64 by default).
pub const MAX_LANES: usize = 128;
/// Scheduled probes per relay at most (a run's and one exchange's).
pub const MAX_PENDING: usize = 2 * PROBES as usize + 8;
/// Outcomes waiting to be polled at most (the oldest are dropped beyond).
pub const MAX_DONE: usize = 64;
/// Smallest probe: the smallest net_crypto data packet (one data byte and
/// its padding).
const MIN_PROBE: usize = 32;
/// Header of a probe: packet id and the two low bytes of the nonce.
const HEADER: usize = 3;

/// The result of one run, or a background probe that arrived forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The relay.
    pub relay: PublicKey,
    /// Every probe that arrived opened, and at least half of the run's
    /// probes arrived each way.
    pub ok: bool,
    /// Probes that arrived intact.
    pub intact: u32,
    /// Probes that arrived but failed to open.
    pub forged: u32,
    /// Not a run: a background probe arrived forged (always `ok == false`).
    pub background: bool,
}

/// Which way a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Main identity → probe identity.
    ToProbe = 0,
    /// Probe identity → main identity.
    ToMain = 1,
}

const DIRS: [Dir; 2] = [Dir::ToProbe, Dir::ToMain];

/// A probe to send.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: Instant,
    dir: Dir,
    /// Part of the lane's run (waits while the routes are not ONLINE;
    /// background probes due then are skipped).
    run: bool,
}

#[derive(Debug)]
struct Run {
    started: Instant,
    /// When the run's last probe went out.
    last_sent: Option<Instant>,
    /// Run probes sent, per direction.
    sent: [u32; 2],
    /// Probes (any) that arrived intact during the run, per direction.
    intact: [u32; 2],
    /// Probes (any) that arrived during the run but did not open.
    forged: u32,
}

impl Run {
    fn arrived(&self, d: Dir) -> u32 {
        // Forged ones count against both directions' completion: they are
        // a failure anyway.
        self.intact[d as usize] + self.forged
    }
}

/// The probe state of one relay.
#[derive(Debug)]
struct Lane {
    /// Next nonce to seal with, per direction.
    tx: [Nonce; 2],
    /// Next nonce expected, per direction.
    rx: [Nonce; 2],
    /// The main identity sees the probe key ONLINE on this relay.
    main_online: bool,
    /// The probe identity sees the main key ONLINE on this relay.
    probe_online: bool,
    next_background: Instant,
    sends: Vec<Pending>,
    run: Option<Run>,
    /// Background probes that arrived forged since the last report.
    forged: u32,
    /// When forged background probes were last reported.
    reported: Option<Instant>,
}

impl Lane {
    fn ready(&self) -> bool {
        self.main_online && self.probe_online
    }

    /// When the run ends at the latest, if one is going on.
    fn run_timeout(&self) -> Option<Instant> {
        let r = self.run.as_ref()?;
        let deadline = r.started + RUN_DEADLINE;
        Some(match r.last_sent {
            Some(t) if !self.sends.iter().any(|p| p.run) => (t + ARRIVAL).min(deadline),
            _ => deadline,
        })
    }
}

/// The self-prober of one node.
pub struct SelfProber {
    /// The probe identity's relay links.
    pub(crate) set: RelaySet,
    probe_pk: PublicKey,
    main_pk: PublicKey,
    shared: SharedKey,
    rng: ChaCha20Rng,
    lanes: HashMap<PublicKey, Lane>,
    done: Vec<ProbeOutcome>,
    /// The main set's generation at the last [`SelfProber::sync`].
    synced: Option<u64>,
}

impl std::fmt::Debug for SelfProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfProber")
            .field("lanes", &self.lanes.len())
            .field("runs", &self.running())
            .finish_non_exhaustive()
    }
}

/// A uniform draw in `0..n` (`n > 0`).
fn below(rng: &mut ChaCha20Rng, n: u32) -> u32 {
    rng.next_u32() % n.max(1)
}

/// A random time within `spread`.
fn within(rng: &mut ChaCha20Rng, spread: Duration) -> Duration {
    let ms = u32::try_from(spread.as_millis()).unwrap_or(u32::MAX);
    Duration::from_millis(u64::from(below(rng, ms.saturating_add(1))))
}

/// Gap to the next background exchange (see [`BACKGROUND_MEAN`]): no
/// pile-up at either bound that a relay could notice.
fn background_gap(rng: &mut ChaCha20Rng) -> Duration {
    let (min, max) = (BACKGROUND_MIN.as_secs_f64(), BACKGROUND_MAX.as_secs_f64());
    // u in (0, 1]: -ln(u) is finite and ≥ 0.
    let u = (f64::from(rng.next_u32()) + 1.0) / (f64::from(u32::MAX) + 1.0);
    let mut gap = min + (BACKGROUND_MEAN.as_secs_f64() - min) * -u.ln();
    if gap > max {
        gap = min + (max - min) * f64::from(rng.next_u32()) / f64::from(u32::MAX);
    }
    Duration::from_secs_f64(gap.clamp(min, max))
}

/// Size of a probe on the wire, drawn from what real traffic uses (see the
/// module documentation): a multiple of 8 in `MIN_PROBE..=MAX_PACKET_SIZE`.
fn probe_size(rng: &mut ChaCha20Rng) -> usize {
    let r = below(rng, 100);
    if r < 60 {
        MAX_PACKET_SIZE
    } else if r < 85 {
        MIN_PROBE + 8 * below(rng, 5) as usize
    } else {
        let steps = (MAX_PACKET_SIZE - 8 - (MIN_PROBE + 40)) / 8 + 1;
        MIN_PROBE + 40 + 8 * below(rng, steps as u32) as usize
    }
}

impl SelfProber {
    /// A prober for the node whose relay identity is `main`; `seed` seeds
    /// the probe key, the nonces, the probe contents and the timing.
    pub fn new(main: &KeyPair, seed: [u8; 32], cfg: RelaySetConfig) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let probe = KeyPair::generate(&mut rng);
        SelfProber {
            shared: probe.precompute(&main.public),
            probe_pk: probe.public,
            main_pk: main.public,
            set: RelaySet::new(probe, cfg),
            rng,
            lanes: HashMap::new(),
            done: Vec::new(),
            synced: None,
        }
    }

    /// The probe identity's public key.
    pub fn probe_key(&self) -> &PublicKey {
        &self.probe_pk
    }

    /// Whether a run through `relay` is going on.
    pub fn is_running(&self, relay: &PublicKey) -> bool {
        self.lanes.get(relay).is_some_and(|l| l.run.is_some())
    }

    fn running(&self) -> usize {
        self.lanes.values().filter(|l| l.run.is_some()).count()
    }

    /// Whether the probe identity has a lane (link and routes) on `relay`.
    pub fn has_lane(&self, relay: &PublicKey) -> bool {
        self.lanes.contains_key(relay)
    }

    /// Makes the probe identity follow the node's relay set `main`: a lane
    /// (link, routes both ways, background schedule) for every relay of
    /// `main` whose main link has come up, none for relays `main` no longer
    /// has. Cheap when `main` has
    /// not changed since the last call (the routes' states then follow the
    /// sets' events).
    pub fn sync(&mut self, now: Instant, main: &mut RelaySet) {
        if self.synced == Some(main.generation()) {
            return;
        }
        self.synced = Some(main.generation());
        let gone: Vec<PublicKey> = self
            .lanes
            .keys()
            .filter(|k| main.relay_addr(k).is_none())
            .copied()
            .collect();
        for relay in gone {
            self.remove_lane(&relay, main);
        }
        // Only relays our main link has reached: a relay at an address that
        // never answers (a friend's word) is not dialled by the probe too.
        let new: Vec<(PublicKey, SocketAddr)> = main
            .relays()
            .filter(|r| !self.lanes.contains_key(*r))
            .filter(|r| main.relay_state(r) == Some(RelayLinkState::Connected))
            .filter_map(|r| Some((*r, main.relay_addr(r)?)))
            .collect();
        for (relay, addr) in new {
            if self.lanes.len() >= MAX_LANES {
                tracing::debug!(?relay, "no probe lane: too many relays");
                break;
            }
            self.add_lane(now, relay, addr);
        }
        // A relay removed and added again between two calls lost its ties.
        for (relay, lane) in &mut self.lanes {
            Self::tie(
                &self.probe_pk,
                &self.main_pk,
                &mut self.set,
                main,
                relay,
                lane,
            );
        }
    }

    /// Ties both routes of `relay` where they are missing and reads their
    /// states.
    fn tie(
        probe_pk: &PublicKey,
        main_pk: &PublicKey,
        set: &mut RelaySet,
        main: &mut RelaySet,
        relay: &PublicKey,
        lane: &mut Lane,
    ) {
        if main.peer_state(probe_pk, relay).is_none() {
            if let Err(e) = main.tie(*probe_pk, relay) {
                tracing::debug!(?relay, error = ?e, "cannot route to the probe key");
            }
        }
        if set.peer_state(main_pk, relay).is_none() {
            if let Err(e) = set.tie(*main_pk, relay) {
                tracing::debug!(?relay, error = ?e, "probe key cannot route to us");
            }
        }
        lane.main_online = main.peer_state(probe_pk, relay) == Some(PeerRelayState::Online);
        lane.probe_online = set.peer_state(main_pk, relay) == Some(PeerRelayState::Online);
    }

    fn add_lane(&mut self, now: Instant, relay: PublicKey, addr: SocketAddr) {
        self.set.add_relay(now, relay, addr);
        let tx = [Nonce::random(&mut self.rng), Nonce::random(&mut self.rng)];
        let next_background = now + background_gap(&mut self.rng);
        self.lanes.insert(
            relay,
            Lane {
                tx,
                rx: tx,
                main_online: false,
                probe_online: false,
                next_background,
                sends: Vec::new(),
                run: None,
                forged: 0,
                reported: None,
            },
        );
    }

    fn remove_lane(&mut self, relay: &PublicKey, main: &mut RelaySet) {
        if let Some(mut lane) = self.lanes.remove(relay) {
            if let Some(run) = lane.run.take() {
                let o = Self::outcome(*relay, &run);
                tracing::info!(?relay, ok = o.ok, "self-probe ended with its relay");
                self.push(o);
            }
        }
        main.untie(&self.probe_pk, relay);
        self.set.remove_relay(relay);
    }

    /// Starts a run through `relay` at `addr`; `main` is the node's relay
    /// set (it must know `relay`). Returns false if one is running already
    /// or too many are.
    pub fn start(
        &mut self,
        now: Instant,
        relay: PublicKey,
        addr: SocketAddr,
        main: &mut RelaySet,
    ) -> bool {
        if self.is_running(&relay) || self.running() >= MAX_RUNS {
            return false;
        }
        self.sync(now, main);
        if !self.lanes.contains_key(&relay) {
            if self.lanes.len() >= MAX_LANES {
                return false;
            }
            self.add_lane(now, relay, addr);
        }
        let Some(lane) = self.lanes.get_mut(&relay) else {
            return false;
        };
        Self::tie(
            &self.probe_pk,
            &self.main_pk,
            &mut self.set,
            main,
            &relay,
            lane,
        );
        // A run's probes replace whatever was scheduled (bounded).
        lane.sends.clear();
        for dir in DIRS {
            for _ in 0..PROBES {
                let at = now + within(&mut self.rng, RUN_SPREAD);
                lane.sends.push(Pending { at, dir, run: true });
            }
        }
        lane.run = Some(Run {
            started: now,
            last_sent: None,
            sent: [0; 2],
            intact: [0; 2],
            forged: 0,
        });
        true
    }

    /// Whether DATA from `peer` on the main set is probe traffic (it is
    /// consumed by [`SelfProber::on_main_data`]), and `peer`'s states on
    /// the main set belong to [`SelfProber::on_main_state`].
    pub fn is_probe_peer(&self, peer: &PublicKey) -> bool {
        *peer == self.probe_pk
    }

    /// DATA from the probe key arrived on the main set through `relay`.
    pub fn on_main_data(&mut self, relay: &PublicKey, data: &[u8]) {
        self.check(relay, Dir::ToMain, data);
    }

    /// The main set reports the probe key's state on `relay`.
    pub fn on_main_state(
        &mut self,
        now: Instant,
        relay: &PublicKey,
        state: PeerRelayState,
        main: &mut RelaySet,
    ) {
        if let Some(l) = self.lanes.get_mut(relay) {
            l.main_online = state == PeerRelayState::Online;
        }
        self.send_due(now, main);
    }

    /// A probe arrived going `dir` through `relay`.
    fn check(&mut self, relay: &PublicKey, dir: Dir, data: &[u8]) {
        let Some(lane) = self.lanes.get_mut(relay) else {
            return;
        };
        let d = dir as usize;
        let opened = match (data.first(), data.get(1..HEADER), data.get(HEADER..)) {
            (Some(&PACKET_DATA), Some(&[hi, lo]), Some(boxed)) if boxed.len() > MAC_SIZE => {
                // As net_crypto: the full nonce is the expected one moved
                // forward to the two bytes received.
                let mut nonce = lane.rx[d];
                nonce.add(u32::from(
                    u16::from_be_bytes([hi, lo]).wrapping_sub(nonce.low16()),
                ));
                let ok = self.shared.open(&nonce, boxed).is_ok();
                if ok {
                    nonce.increment();
                    lane.rx[d] = nonce;
                }
                ok
            }
            _ => false,
        };
        match (&mut lane.run, opened) {
            (Some(r), true) => r.intact[d] += 1,
            (Some(r), false) => r.forged += 1,
            (None, true) => {}
            (None, false) => lane.forged += 1,
        }
    }

    /// Seals the next probe going `dir` on `lane` into `pkt`; returns its
    /// length.
    fn seal_probe(
        rng: &mut ChaCha20Rng,
        shared: &SharedKey,
        lane: &mut Lane,
        dir: Dir,
        pkt: &mut [u8; MAX_PACKET_SIZE],
    ) -> Option<usize> {
        let d = dir as usize;
        let size = probe_size(rng);
        let nonce = lane.tx[d];
        lane.tx[d].increment();
        pkt[0] = PACKET_DATA;
        pkt[1..HEADER].copy_from_slice(&nonce.low16().to_be_bytes());
        let body = pkt.get_mut(HEADER..size)?;
        rng.fill_bytes(body.get_mut(MAC_SIZE..)?);
        match shared.seal_in_place(&nonce, body) {
            Ok(()) => Some(size),
            Err(e) => {
                tracing::debug!(error = ?e, "self-probe not sealed");
                None
            }
        }
    }

    /// Sends one probe going `dir` through `relay`.
    #[allow(clippy::too_many_arguments)]
    fn send_one(
        rng: &mut ChaCha20Rng,
        shared: &SharedKey,
        set: &mut RelaySet,
        main: &mut RelaySet,
        keys: (&PublicKey, &PublicKey),
        relay: &PublicKey,
        lane: &mut Lane,
        dir: Dir,
    ) {
        let (main_pk, probe_pk) = keys;
        let mut pkt = [0u8; MAX_PACKET_SIZE];
        let Some(size) = Self::seal_probe(rng, shared, lane, dir, &mut pkt) else {
            return;
        };
        let pkt = &pkt[..size];
        let r = match dir {
            Dir::ToProbe => main.send_data(relay, probe_pk, pkt),
            Dir::ToMain => set.send_data(relay, main_pk, pkt),
        };
        if let Err(e) = r {
            tracing::debug!(?relay, error = ?e, "self-probe not sent");
        }
    }

    /// Schedules background exchanges that are due and sends the probes
    /// that are due on lanes whose routes are ONLINE (due background probes
    /// of other lanes are skipped; run probes wait).
    fn send_due(&mut self, now: Instant, main: &mut RelaySet) {
        let keys = (&self.main_pk, &self.probe_pk);
        for (relay, lane) in &mut self.lanes {
            if lane.next_background <= now {
                lane.next_background = now + background_gap(&mut self.rng);
                // A route refused for lack of a slot is asked for again.
                Self::tie(
                    &self.probe_pk,
                    &self.main_pk,
                    &mut self.set,
                    main,
                    relay,
                    lane,
                );
                for dir in DIRS {
                    let n = if below(&mut self.rng, 4) == 0 { 2 } else { 1 };
                    for _ in 0..n {
                        if lane.sends.len() < MAX_PENDING {
                            let at = now + within(&mut self.rng, BACKGROUND_SPREAD);
                            lane.sends.push(Pending {
                                at,
                                dir,
                                run: false,
                            });
                        }
                    }
                }
            }
            if !lane.sends.iter().any(|p| p.at <= now) {
                continue;
            }
            let ready = lane.ready();
            let mut due: Vec<Pending> = Vec::new();
            lane.sends.retain(|p| {
                if p.at > now || (!ready && p.run) {
                    return true;
                }
                if ready {
                    due.push(*p);
                }
                false
            });
            due.sort_by_key(|p| p.at);
            for p in due {
                Self::send_one(
                    &mut self.rng,
                    &self.shared,
                    &mut self.set,
                    main,
                    keys,
                    relay,
                    lane,
                    p.dir,
                );
                if p.run {
                    if let Some(r) = lane.run.as_mut() {
                        r.sent[p.dir as usize] += 1;
                        r.last_sent = Some(now);
                    }
                }
            }
        }
    }

    /// Processes the probe set's events (after its input or timers), follows
    /// the node's relay set, sends what is due and ends runs.
    pub fn pump(&mut self, now: Instant, main: &mut RelaySet) {
        for _ in 0..4096 {
            let Some(ev) = self.set.poll_event() else {
                break;
            };
            match ev {
                RelaySetEvent::Data { relay, peer, data } if peer == self.main_pk => {
                    self.check(&relay, Dir::ToProbe, &data);
                }
                RelaySetEvent::PeerState { peer, relay, state } if peer == self.main_pk => {
                    if let Some(l) = self.lanes.get_mut(&relay) {
                        l.probe_online = state == PeerRelayState::Online;
                    }
                }
                _ => {}
            }
        }
        self.sync(now, main);
        self.send_due(now, main);
        self.finish(now, main);
    }

    /// Ends runs that are complete or past their deadline, and reports
    /// forged background probes.
    pub fn finish(&mut self, now: Instant, _main: &mut RelaySet) {
        let mut ended = Vec::new();
        for (relay, lane) in &mut self.lanes {
            if lane.forged > 0 && lane.run.is_none() {
                // At most one report per run's length: the ledger answers it
                // with a run, which is the next evidence.
                if lane.reported.is_none_or(|t| now >= t + RUN_DEADLINE) {
                    let forged = std::mem::take(&mut lane.forged);
                    lane.reported = Some(now);
                    tracing::info!(?relay, forged, "self-probe: background probe forged");
                    ended.push((
                        *relay,
                        ProbeOutcome {
                            relay: *relay,
                            ok: false,
                            intact: 0,
                            forged,
                            background: true,
                        },
                    ));
                } else {
                    lane.forged = 0;
                }
            }
            let complete = lane.run.as_ref().is_some_and(|r| {
                !lane.sends.iter().any(|p| p.run)
                    && DIRS.iter().all(|&d| r.arrived(d) >= r.sent[d as usize])
            });
            if complete || lane.run_timeout().is_some_and(|t| now >= t) {
                if let Some(run) = lane.run.take() {
                    lane.sends.retain(|p| !p.run);
                    ended.push((*relay, Self::outcome(*relay, &run)));
                }
            }
        }
        for (relay, o) in ended {
            if !o.background {
                tracing::info!(
                    ?relay,
                    ok = o.ok,
                    intact = o.intact,
                    forged = o.forged,
                    "self-probe"
                );
            }
            self.push(o);
        }
    }

    fn outcome(relay: PublicKey, r: &Run) -> ProbeOutcome {
        let half = u32::from(PROBES) / 2;
        ProbeOutcome {
            relay,
            ok: r.forged == 0 && r.intact.iter().all(|&n| n >= half),
            intact: r.intact[0] + r.intact[1],
            forged: r.forged,
            background: false,
        }
    }

    fn push(&mut self, o: ProbeOutcome) {
        if self.done.len() >= MAX_DONE {
            self.done.remove(0);
        }
        self.done.push(o);
    }

    /// A finished run (or a forged background probe).
    pub fn poll_outcome(&mut self) -> Option<ProbeOutcome> {
        if self.done.is_empty() {
            None
        } else {
            Some(self.done.remove(0))
        }
    }

    /// Earliest deadline of a run, a probe or a background exchange to
    /// send, or of the probe links' timers. Run probes of a lane whose
    /// routes are not ONLINE are not timers: the routes coming up is an
    /// input of its own.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lanes = self.lanes.values().flat_map(|l| {
            let ready = l.ready();
            let sends = l
                .sends
                .iter()
                .filter(move |p| ready || !p.run)
                .map(|p| p.at)
                .min();
            [Some(l.next_background), sends, l.run_timeout()]
        });
        lanes.flatten().chain(self.set.poll_timeout()).min()
    }
}

#[cfg(test)]
mod tests;
