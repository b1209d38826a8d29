//! Self-probes (DESIGN.md §3 "Framing"): evidence about a relay that no
//! friend can forge.
//!
//! When a peer's traffic through relay R fails authentication, R may be
//! tampering, or the peer may be sending garbage through a good relay to get
//! it dropped. To tell the two apart the node routes to *itself* through R:
//! a second relay identity (a fresh key pair, [`SelfProber`]'s own
//! [`RelaySet`]) connects to R, both identities route to each other, and
//! [`PROBES`] packets go each way. Every probe is sealed with the shared key
//! of the two identities and looks like a net_crypto data packet of a random
//! length (first byte 27, two bytes of nonce, a box), so R cannot tell it
//! from real traffic. A probe that arrives but does not open, or too few
//! probes arriving, fails the run; all probes intact passes it.
//!
//! Invariants: one run per relay at a time, at most [`MAX_RUNS`] at once;
//! every run ends (passed, failed or timed out) by its deadline and then
//! unties both identities and closes the probe link.

use crate::crypto::{KeyPair, Nonce, PublicKey, SharedKey, MAC_SIZE};
use crate::relay_client::{PeerRelayState, RelaySet, RelaySetConfig, RelaySetEvent};
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
const RUN_DEADLINE: Duration = Duration::from_secs(6);
/// After both routes are online, the probes have this long to arrive.
const ARRIVAL: Duration = Duration::from_secs(2);
/// First byte of a probe (as a net_crypto data packet).
const PROBE_ID: u8 = 27;

/// The result of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The relay.
    pub relay: PublicKey,
    /// Every probe that arrived opened, and at least half of them arrived.
    pub ok: bool,
    /// Probes that arrived intact.
    pub intact: u32,
    /// Probes that arrived but failed to open.
    pub forged: u32,
}

#[derive(Debug)]
struct Run {
    started: Instant,
    /// When both routes went online and the probes were sent.
    sent_at: Option<Instant>,
    /// Our main identity is online to the probe key on the relay.
    main_online: bool,
    /// The probe identity is online to our main key.
    probe_online: bool,
    base: Nonce,
    intact: u32,
    forged: u32,
}

/// The self-prober of one node.
pub struct SelfProber {
    /// The probe identity's relay links.
    pub(crate) set: RelaySet,
    probe_pk: PublicKey,
    main_pk: PublicKey,
    shared: SharedKey,
    rng: ChaCha20Rng,
    runs: HashMap<PublicKey, Run>,
    done: Vec<ProbeOutcome>,
}

impl std::fmt::Debug for SelfProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfProber")
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl SelfProber {
    /// A prober for the node whose relay identity is `main`; `seed` seeds
    /// the probe key and the probe contents.
    pub fn new(main: &KeyPair, seed: [u8; 32], cfg: RelaySetConfig) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let probe = KeyPair::generate(&mut rng);
        SelfProber {
            shared: probe.precompute(&main.public),
            probe_pk: probe.public,
            main_pk: main.public,
            set: RelaySet::new(probe, cfg),
            rng,
            runs: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// The probe identity's public key.
    pub fn probe_key(&self) -> &PublicKey {
        &self.probe_pk
    }

    /// Whether a run through `relay` is going on.
    pub fn is_running(&self, relay: &PublicKey) -> bool {
        self.runs.contains_key(relay)
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
        if self.runs.contains_key(&relay) || self.runs.len() >= MAX_RUNS {
            return false;
        }
        self.set.add_relay(now, relay, addr);
        if self.set.tie(self.main_pk, &relay).is_err() || main.tie(self.probe_pk, &relay).is_err() {
            self.cleanup(&relay, main);
            return false;
        }
        let base = Nonce::random(&mut self.rng);
        self.runs.insert(
            relay,
            Run {
                started: now,
                sent_at: None,
                main_online: main.peer_state(&self.probe_pk, &relay)
                    == Some(PeerRelayState::Online),
                probe_online: false,
                base,
                intact: 0,
                forged: 0,
            },
        );
        true
    }

    /// Whether DATA from `peer` through `relay` on the main set belongs to a
    /// run (it is consumed by [`SelfProber::on_main_data`]).
    pub fn is_probe_peer(&self, peer: &PublicKey) -> bool {
        *peer == self.probe_pk
    }

    /// DATA from the probe key arrived on the main set through `relay`.
    pub fn on_main_data(&mut self, relay: &PublicKey, data: &[u8]) {
        self.check(relay, data);
    }

    /// The main set reports the probe key's state on `relay`.
    pub fn on_main_state(
        &mut self,
        now: Instant,
        relay: &PublicKey,
        state: PeerRelayState,
        main: &mut RelaySet,
    ) {
        if let Some(r) = self.runs.get_mut(relay) {
            r.main_online = state == PeerRelayState::Online;
        }
        self.maybe_send(now, relay, main);
    }

    fn check(&mut self, relay: &PublicKey, data: &[u8]) {
        let Some(run) = self.runs.get_mut(relay) else {
            return;
        };
        let ok = (|| {
            if data.len() < 3 + MAC_SIZE + 1 || data.first() != Some(&PROBE_ID) {
                return false;
            }
            let counter = u16::from_be_bytes([data[1], data[2]]);
            let mut nonce = run.base;
            nonce.add(u32::from(counter));
            self.shared.open(&nonce, &data[3..]).is_ok()
        })();
        if ok {
            run.intact += 1;
        } else {
            run.forged += 1;
        }
    }

    fn maybe_send(&mut self, now: Instant, relay: &PublicKey, main: &mut RelaySet) {
        let Some(run) = self.runs.get_mut(relay) else {
            return;
        };
        if run.sent_at.is_some() || !run.main_online || !run.probe_online {
            return;
        }
        run.sent_at = Some(now);
        let base = run.base;
        let mut buf = [0u8; 1400];
        for i in 0..PROBES * 2 {
            // Even counters go main → probe, odd ones probe → main.
            let len = 64 + (self.rng.next_u32() as usize % (1400 - 64 - 3 - MAC_SIZE));
            let plain = &mut buf[..len];
            self.rng.fill_bytes(plain);
            let mut nonce = base;
            nonce.add(u32::from(i));
            let Ok(sealed) = self.shared.seal(&nonce, plain) else {
                continue;
            };
            let mut pkt = Vec::with_capacity(3 + sealed.len());
            pkt.push(PROBE_ID);
            pkt.extend_from_slice(&i.to_be_bytes());
            pkt.extend_from_slice(&sealed);
            let r = if i % 2 == 0 {
                main.send_data(relay, &self.probe_pk, &pkt)
            } else {
                self.set.send_data(relay, &self.main_pk, &pkt)
            };
            if let Err(e) = r {
                tracing::debug!(?relay, error = ?e, "self-probe not sent");
            }
        }
    }

    /// Processes the probe set's events (after its input or timers).
    pub fn pump(&mut self, now: Instant, main: &mut RelaySet) {
        for _ in 0..4096 {
            let Some(ev) = self.set.poll_event() else {
                break;
            };
            match ev {
                RelaySetEvent::Data { relay, peer, data } if peer == self.main_pk => {
                    self.check(&relay, &data);
                }
                RelaySetEvent::PeerState { peer, relay, state } if peer == self.main_pk => {
                    if let Some(r) = self.runs.get_mut(&relay) {
                        r.probe_online = state == PeerRelayState::Online;
                    }
                    self.maybe_send(now, &relay, main);
                }
                _ => {}
            }
        }
        self.finish(now, main);
    }

    /// Ends runs that are complete or past their deadline.
    pub fn finish(&mut self, now: Instant, main: &mut RelaySet) {
        let total = u32::from(PROBES) * 2;
        let ended: Vec<PublicKey> = self
            .runs
            .iter()
            .filter(|(_, r)| {
                r.intact + r.forged >= total
                    || r.sent_at.is_some_and(|t| now >= t + ARRIVAL)
                    || now >= r.started + RUN_DEADLINE
            })
            .map(|(k, _)| *k)
            .collect();
        for relay in ended {
            if let Some(r) = self.runs.remove(&relay) {
                let ok = r.forged == 0 && r.intact >= total / 2;
                tracing::info!(
                    ?relay,
                    ok,
                    intact = r.intact,
                    forged = r.forged,
                    "self-probe"
                );
                self.done.push(ProbeOutcome {
                    relay,
                    ok,
                    intact: r.intact,
                    forged: r.forged,
                });
            }
            self.cleanup(&relay, main);
        }
    }

    fn cleanup(&mut self, relay: &PublicKey, main: &mut RelaySet) {
        main.untie(&self.probe_pk, relay);
        self.set.untie(&self.main_pk, relay);
        self.set.remove_relay(relay);
    }

    /// A finished run.
    pub fn poll_outcome(&mut self) -> Option<ProbeOutcome> {
        self.done.pop()
    }

    /// Earliest deadline of a run, or of the probe links' timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let runs = self.runs.values().map(|r| match r.sent_at {
            Some(t) => (t + ARRIVAL).min(r.started + RUN_DEADLINE),
            None => r.started + RUN_DEADLINE,
        });
        runs.chain(self.set.poll_timeout()).min()
    }
}
