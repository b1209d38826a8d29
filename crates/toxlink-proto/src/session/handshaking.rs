//! The handshake phase of a session (COOKIE_REQUESTING, HANDSHAKE_SENT and,
//! alongside the data link, NOT_CONFIRMED; docs/PROTOCOL.md §4.3–§4.5): the
//! handshake material and the re-send schedule, dropped as a whole when the
//! connection is established or closed.

use super::handshake::{
    build_cookie_request, build_handshake, open_cookie_response, open_handshake, Cookie, CookieKey,
    EchoId, HandshakeParams, ValidHandshake, COOKIE_REQUEST_SIZE, HANDSHAKE_SIZE,
};
use super::{Common, DropReason, Identity, SessionTimer, Transmit, TransmitKind};
use crate::crypto::{KeyPair, SharedKey};
use std::time::Instant;

/// The packet the handshake phase (re-)sends.
pub(super) enum Ours {
    /// COOKIE_REQUESTING: our cookie request.
    CookieRequest(Box<[u8; COOKIE_REQUEST_SIZE]>),
    /// HANDSHAKE_SENT / NOT_CONFIRMED: our handshake.
    Handshake(Box<[u8; HANDSHAKE_SIZE]>),
}

/// Handshake-phase state: keys only the cookie exchange and the handshake
/// use, our current packet and how often it went out.
pub(super) struct Handshaking {
    /// `K(our real sk, peer real pk)`: seals our handshake, opens the peer's.
    pub(super) real_shared: SharedKey,
    /// `K(our DHT sk, peer DHT pk)`: opens the cookie response.
    dht_shared: SharedKey,
    /// The node's cookie key (checks the cookies we issued).
    cookie_key: CookieKey,
    /// This connection's session key pair; the data key is derived from it.
    pub(super) session_kp: KeyPair,
    echo_id: EchoId,
    /// What is (re-)sent.
    pub(super) ours: Ours,
    /// Sends of `ours` so far (§4.5); the next is due at
    /// [`SessionTimer::Handshake`].
    pub(super) sends: u32,
    /// When `ours` last went out (an RTT seed once the answer arrives).
    pub(super) last_sent: Option<Instant>,
}

impl Handshaking {
    /// Fresh handshake material with our cookie request (built with
    /// `c.rng` after the session key pair and echo id were drawn, in the
    /// order the wire vectors expect).
    pub(super) fn new(c: &mut Common, id: &Identity, session_kp: KeyPair, echo_id: EchoId) -> Self {
        let dht_shared = id.dht.precompute(&c.peer_dht);
        let cookie_request = Box::new(build_cookie_request(
            &mut c.rng,
            &id.dht.public,
            &dht_shared,
            &id.real.public,
            &echo_id,
        ));
        Handshaking {
            real_shared: id.real.precompute(&c.peer_real),
            dht_shared,
            cookie_key: id.cookie_key.clone(),
            session_kp,
            echo_id,
            ours: Ours::CookieRequest(cookie_request),
            sends: 0,
            last_sent: None,
        }
    }

    /// Builds our handshake on `peer_cookie` and makes it the packet to
    /// send (due at once, nothing sent yet).
    pub(super) fn build_our_handshake(
        &mut self,
        c: &mut Common,
        now: Instant,
        peer_cookie: &Cookie,
    ) {
        let other = self
            .cookie_key
            .make_cookie(&mut c.rng, now, &c.peer_real, &c.peer_dht);
        let hs = build_handshake(
            &mut c.rng,
            &HandshakeParams {
                real_shared: &self.real_shared,
                peer_cookie,
                base_nonce: &c.tx_base,
                session_pk: &self.session_kp.public,
                other_cookie: &other,
            },
        );
        self.ours = Ours::Handshake(Box::new(hs));
    }

    /// A new packet to send: due at once, nothing sent yet.
    pub(super) fn restart_sends(&mut self, c: &mut Common, now: Instant) {
        self.sends = 0;
        c.timers.set(SessionTimer::Handshake, now);
    }

    /// COOKIE_REQUESTING: opens the cookie response and moves on to our
    /// handshake (the caller checked the phase).
    pub(super) fn on_cookie_response(
        &mut self,
        c: &mut Common,
        now: Instant,
        buf: &[u8],
    ) -> Result<(), DropReason> {
        let cookie = open_cookie_response(&self.dht_shared, &self.echo_id, buf)?;
        if let Some(t) = self.last_sent {
            c.cc.seed_rtt(now, now.saturating_duration_since(t));
        }
        self.build_our_handshake(c, now, &cookie);
        self.restart_sends(c, now);
        Ok(())
    }

    /// Validates a handshake of the expected peer (§4.4, known connection).
    pub(super) fn open_peer_handshake(
        &self,
        c: &Common,
        now: Instant,
        buf: &[u8],
    ) -> Result<ValidHandshake, DropReason> {
        let real_shared = self.real_shared.clone();
        Ok(open_handshake(
            &self.cookie_key,
            now,
            Some(&c.peer_real),
            |_| Some(real_shared),
            buf,
        )?)
    }

    /// The packet to (re-)send now, if due and tries are left.
    pub(super) fn poll_send(
        &mut self,
        c: &mut Common,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if !c.timers.is_expired(SessionTimer::Handshake, now) || self.sends >= c.cfg.handshake_tries
        {
            return None;
        }
        let (len, kind) = match &self.ours {
            Ours::CookieRequest(p) => {
                buf.get_mut(..COOKIE_REQUEST_SIZE)?.copy_from_slice(&p[..]);
                (COOKIE_REQUEST_SIZE, TransmitKind::CookieRequest)
            }
            Ours::Handshake(p) => {
                buf.get_mut(..HANDSHAKE_SIZE)?.copy_from_slice(&p[..]);
                (HANDSHAKE_SIZE, TransmitKind::Handshake)
            }
        };
        self.sends += 1;
        c.timers
            .set(SessionTimer::Handshake, now + c.cfg.handshake_interval);
        self.last_sent = Some(now);
        Some(Transmit { len, kind })
    }

    /// Whether the attempt is over: every try went out and the last one
    /// went unanswered for a whole interval.
    pub(super) fn timed_out(&self, c: &Common, now: Instant) -> bool {
        self.sends >= c.cfg.handshake_tries && c.timers.is_expired(SessionTimer::Handshake, now)
    }

    /// The packet sent so far, `None` before the first send.
    pub(super) fn packet(&self) -> Option<&[u8]> {
        if self.sends == 0 {
            return None;
        }
        Some(match &self.ours {
            Ours::CookieRequest(p) => &p[..],
            Ours::Handshake(p) => &p[..],
        })
    }
}
