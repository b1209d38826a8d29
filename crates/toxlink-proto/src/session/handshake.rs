//! Cookie exchange and handshake of a net_crypto connection (docs/PROTOCOL.md
//! §4.2–§4.4): builders and validators of the four handshake-phase packets,
//! the node's cookie key, and the stateless, rate-limited cookie responder.
//!
//! Invariants:
//! * Every validator checks the exact length first and returns a typed
//!   [`HandshakeError`]; nothing here panics on input or allocates.
//! * Cookie timestamps are whole seconds since a node-local epoch (an
//!   `Instant` given at start-up), so they are 8 opaque bytes that only this
//!   node reads back (§4.2); a cookie is fresh iff `ts ≤ now ≤ ts + 15` (§4.3).
//! * The responder answers anybody but spends at most `rate` X25519
//!   computations per second (token bucket checked *before* any crypto), so a
//!   flood of cookie requests cannot exhaust the CPU.

use crate::crypto::{CryptoError, KeyPair, Nonce, PublicKey, SharedKey};
use crate::wire::net_crypto as wire;
use crate::wire::WireError;
use rand_core::CryptoRngCore;
use std::time::Instant;

/// First byte of a cookie request (§4.1).
pub const PACKET_COOKIE_REQUEST: u8 = wire::kind::COOKIE_REQUEST;
/// First byte of a cookie response (§4.1).
pub const PACKET_COOKIE_RESPONSE: u8 = wire::kind::COOKIE_RESPONSE;
/// First byte of a handshake (§4.1).
pub const PACKET_HANDSHAKE: u8 = wire::kind::HANDSHAKE;
/// First byte of a data packet (§4.1).
pub const PACKET_DATA: u8 = wire::kind::DATA;

/// Size of a cookie request (§4.2).
pub const COOKIE_REQUEST_SIZE: usize = wire::COOKIE_REQUEST_SIZE;
/// Size of a cookie (§4.2).
pub const COOKIE_SIZE: usize = wire::COOKIE_SIZE;
/// Size of a cookie response (§4.2).
pub const COOKIE_RESPONSE_SIZE: usize = wire::COOKIE_RESPONSE_SIZE;
/// Size of a handshake (§4.2).
pub const HANDSHAKE_SIZE: usize = wire::HANDSHAKE_SIZE;
/// `COOKIE_TIMEOUT` in seconds (§4.3).
pub const COOKIE_TIMEOUT_SECS: u64 = 15;

/// An echo id: 8 opaque bytes only read back by their creator (§4.2).
pub type EchoId = [u8; 8];
/// A cookie as it travels: nonce ‖ box (§4.2).
pub type Cookie = [u8; COOKIE_SIZE];

/// Why a handshake-phase packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Wrong length or first byte.
    #[error("{kind}: malformed (length {len})")]
    Malformed {
        /// Which packet.
        kind: &'static str,
        /// The length seen.
        len: usize,
    },
    /// A box did not open.
    #[error("{0}: authentication failed")]
    Auth(&'static str),
    /// The cookie is older than 15 s or from the future.
    #[error("stale cookie")]
    StaleCookie,
    /// The cookie names another peer than the one expected.
    #[error("cookie for an unexpected peer")]
    UnexpectedPeer,
    /// The cookie names a peer we do not accept (refused before any
    /// public-key work).
    #[error("handshake from a peer not allowed")]
    NotAllowed,
    /// The hash of the outer cookie does not match the inner one.
    #[error("cookie hash mismatch")]
    BadHash,
    /// The echo id of a cookie response is not the one we sent.
    #[error("echo id mismatch")]
    EchoMismatch,
    /// The cookie responder's token bucket is empty.
    #[error("cookie requests rate limited")]
    RateLimited,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A key of the packet is a low-order X25519 point (libsodium and
    /// c-toxcore refuse those): the packet is dropped.
    #[error("{0}: low-order public key")]
    LowOrderKey(&'static str),
}

fn malformed(kind: &'static str, len: usize) -> HandshakeError {
    HandshakeError::Malformed { kind, len }
}

/// The node's cookie key and clock (§4.2): 32 random bytes made at start-up
/// plus the epoch the cookie timestamps count from. Cloned into each session
/// so a session can check cookies it issued.
#[derive(Clone, Debug)]
pub struct CookieKey {
    key: SharedKey,
    epoch: Instant,
}

impl CookieKey {
    /// A fresh random cookie key; timestamps count whole seconds from `epoch`.
    pub fn new(rng: &mut impl CryptoRngCore, epoch: Instant) -> Self {
        CookieKey {
            key: SharedKey::random(rng),
            epoch,
        }
    }

    /// Seconds since the epoch (the cookie clock).
    pub fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Makes a cookie over `(now, real pk, DHT pk)` (§4.2).
    pub fn make_cookie(
        &self,
        rng: &mut impl CryptoRngCore,
        now: Instant,
        real: &PublicKey,
        dht: &PublicKey,
    ) -> Cookie {
        let payload = wire::CookiePayload {
            timestamp: self.secs(now),
            real_pk: *real,
            dht_pk: *dht,
        };
        wire::Cookie::seal(&self.key, Nonce::random(rng), &payload).to_bytes()
    }

    /// Opens a cookie we issued and checks it is fresh (§4.3); returns the
    /// (real pk, DHT pk) it names.
    pub fn open_cookie(
        &self,
        now: Instant,
        cookie: &Cookie,
    ) -> Result<(PublicKey, PublicKey), HandshakeError> {
        let p = wire::Cookie::from_bytes(cookie)
            .open(&self.key)
            .map_err(|_| HandshakeError::Auth("cookie"))?;
        let now_s = self.secs(now);
        if p.timestamp > now_s || now_s > p.timestamp.saturating_add(COOKIE_TIMEOUT_SECS) {
            return Err(HandshakeError::StaleCookie);
        }
        Ok((p.real_pk, p.dht_pk))
    }
}

/// Builds a cookie request (§4.2) into a fixed array: `dht_shared` is
/// `K(our DHT sk, peer DHT pk)`.
pub fn build_cookie_request(
    rng: &mut impl CryptoRngCore,
    our_dht_pk: &PublicKey,
    dht_shared: &SharedKey,
    our_real_pk: &PublicKey,
    echo_id: &EchoId,
) -> [u8; COOKIE_REQUEST_SIZE] {
    let payload = wire::CookieRequestPayload {
        sender_real_pk: *our_real_pk,
        echo_id: *echo_id,
    };
    wire::CookieRequest::seal(*our_dht_pk, dht_shared, Nonce::random(rng), &payload).to_bytes()
}

/// A cookie request that opened (§4.3).
#[derive(Clone, Debug)]
pub struct CookieRequestInfo {
    /// The requester's DHT public key (from the header).
    pub sender_dht: PublicKey,
    /// The requester's real public key (from the box).
    pub sender_real: PublicKey,
    /// The echo id to copy into the response.
    pub echo_id: EchoId,
    /// `K(our DHT sk, sender DHT pk)`, used again for the response.
    pub shared: SharedKey,
}

/// Opens a cookie request addressed to our DHT key (§4.3). Costs one X25519.
pub fn open_cookie_request(
    our_dht: &KeyPair,
    packet: &[u8],
) -> Result<CookieRequestInfo, HandshakeError> {
    const KIND: &str = "cookie request";
    let req = wire::CookieRequest::parse(packet).map_err(|_| malformed(KIND, packet.len()))?;
    let shared = our_dht
        .try_precompute(&req.sender_dht_pk)
        .map_err(|_| HandshakeError::LowOrderKey(KIND))?;
    let p = req.open(&shared).map_err(|_| HandshakeError::Auth(KIND))?;
    if p.sender_real_pk.is_low_order() {
        return Err(HandshakeError::LowOrderKey(KIND));
    }
    Ok(CookieRequestInfo {
        sender_dht: req.sender_dht_pk,
        sender_real: p.sender_real_pk,
        echo_id: p.echo_id,
        shared,
    })
}

/// Writes the cookie response to `req` into `out` (161 bytes, §4.2/§4.3).
pub fn build_cookie_response(
    rng: &mut impl CryptoRngCore,
    now: Instant,
    cookie_key: &CookieKey,
    req: &CookieRequestInfo,
    out: &mut [u8],
) -> Result<usize, HandshakeError> {
    let out = out
        .get_mut(..COOKIE_RESPONSE_SIZE)
        .ok_or(HandshakeError::BufferTooSmall)?;
    let cookie = cookie_key.make_cookie(rng, now, &req.sender_real, &req.sender_dht);
    let payload = wire::CookieResponsePayload {
        cookie,
        echo_id: req.echo_id,
    };
    out.copy_from_slice(
        &wire::CookieResponse::seal(&req.shared, Nonce::random(rng), &payload).to_bytes(),
    );
    Ok(COOKIE_RESPONSE_SIZE)
}

/// Opens a cookie response with the DHT shared key we used for the request and
/// checks its echo id (§4.3); returns the peer's cookie.
pub fn open_cookie_response(
    dht_shared: &SharedKey,
    echo_id: &EchoId,
    packet: &[u8],
) -> Result<Cookie, HandshakeError> {
    const KIND: &str = "cookie response";
    let p = wire::CookieResponse::parse(packet)
        .map_err(|_| malformed(KIND, packet.len()))?
        .open(dht_shared)
        .map_err(|_| HandshakeError::Auth(KIND))?;
    if !crate::crypto::ct_eq(&p.echo_id, echo_id) {
        return Err(HandshakeError::EchoMismatch);
    }
    Ok(p.cookie)
}

/// What we put in our handshake (§4.4).
#[derive(Clone, Debug)]
pub struct HandshakeParams<'a> {
    /// `K(our real sk, peer real pk)`.
    pub real_shared: &'a SharedKey,
    /// A cookie the peer issued (outer cookie).
    pub peer_cookie: &'a Cookie,
    /// Our own TX base nonce for data packets.
    pub base_nonce: &'a Nonce,
    /// Our per-connection session public key.
    pub session_pk: &'a PublicKey,
    /// A fresh cookie we made over (peer real pk, peer DHT pk).
    pub other_cookie: &'a Cookie,
}

/// Builds a handshake (385 bytes, §4.2/§4.4).
pub fn build_handshake(
    rng: &mut impl CryptoRngCore,
    p: &HandshakeParams<'_>,
) -> [u8; HANDSHAKE_SIZE] {
    wire::Handshake::build(
        *p.peer_cookie,
        p.real_shared,
        Nonce::random(rng),
        *p.base_nonce,
        *p.session_pk,
        *p.other_cookie,
    )
    .to_bytes()
}

/// A handshake that passed every check of §4.4.
#[derive(Clone, Debug)]
pub struct ValidHandshake {
    /// The peer's real (long-term) public key, from the cookie we issued.
    pub peer_real: PublicKey,
    /// The peer's DHT public key, from the cookie we issued.
    pub peer_dht: PublicKey,
    /// The peer's TX base nonce (our RX nonce start).
    pub peer_base_nonce: Nonce,
    /// The peer's session public key.
    pub peer_session_pk: PublicKey,
    /// A cookie the peer issued for us (to build our handshake on).
    pub other_cookie: Cookie,
}

/// Validates a handshake in the order of §4.4. `expected_peer` restricts the
/// real key in the cookie; `real_shared` returns `K(our real sk, pk)` for the
/// peer named in the cookie (a session passes its cached key, the node
/// computes one).
pub fn open_handshake(
    cookie_key: &CookieKey,
    now: Instant,
    expected_peer: Option<&PublicKey>,
    real_shared: impl FnOnce(&PublicKey) -> Option<SharedKey>,
    packet: &[u8],
) -> Result<ValidHandshake, HandshakeError> {
    const KIND: &str = "handshake";
    let hs = wire::Handshake::parse(packet).map_err(|_| malformed(KIND, packet.len()))?;
    let (peer_real, peer_dht) = cookie_key.open_cookie(now, &hs.cookie)?;
    if peer_real.is_low_order() {
        return Err(HandshakeError::LowOrderKey(KIND));
    }
    if let Some(exp) = expected_peer {
        if !exp.ct_eq(&peer_real) {
            return Err(HandshakeError::UnexpectedPeer);
        }
    }
    // The caller decides from the cookie's (authenticated, cheap) peer key
    // whether the public-key work is worth doing at all.
    let shared = real_shared(&peer_real).ok_or(HandshakeError::NotAllowed)?;
    let p = hs.open(&shared).map_err(|e| match e {
        WireError::BadField { .. } => HandshakeError::BadHash,
        _ => HandshakeError::Auth(KIND),
    })?;
    // A session key of small order would make the session key all-zero
    // X25519 output: drop the handshake.
    if p.session_pk.is_low_order() {
        return Err(HandshakeError::LowOrderKey(KIND));
    }
    Ok(ValidHandshake {
        peer_real,
        peer_dht,
        peer_base_nonce: p.base_nonce,
        peer_session_pk: p.session_pk,
        other_cookie: p.other_cookie,
    })
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Configuration of the [`CookieResponder`].
#[derive(Clone, Copy, Debug)]
pub struct CookieResponderConfig {
    /// Cookie requests answered per second (each costs one X25519).
    pub rate: f64,
    /// Requests answered in a burst.
    pub burst: f64,
}

impl Default for CookieResponderConfig {
    fn default() -> Self {
        CookieResponderConfig {
            rate: 2000.0,
            burst: 200.0,
        }
    }
}

/// The node's stateless cookie responder (§4.3): answers any valid cookie
/// request, from anybody, storing nothing, within a global rate limit.
#[derive(Debug)]
pub struct CookieResponder {
    bucket: TokenBucket,
    /// Requests refused by the rate limit.
    pub rate_limited: u64,
    /// Requests that were malformed or did not open.
    pub invalid: u64,
}

impl CookieResponder {
    /// A responder with a full bucket.
    pub fn new(cfg: CookieResponderConfig) -> Self {
        CookieResponder {
            bucket: TokenBucket::new(cfg.rate, cfg.burst),
            rate_limited: 0,
            invalid: 0,
        }
    }

    /// Answers `request` into `out`; returns the response length and the
    /// request's content. The length is checked before spending a token, the
    /// token before spending any crypto.
    pub fn respond(
        &mut self,
        rng: &mut impl CryptoRngCore,
        now: Instant,
        our_dht: &KeyPair,
        cookie_key: &CookieKey,
        request: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, CookieRequestInfo), HandshakeError> {
        if request.len() != COOKIE_REQUEST_SIZE || request[0] != PACKET_COOKIE_REQUEST {
            self.invalid += 1;
            return Err(malformed("cookie request", request.len()));
        }
        if !self.bucket.take(now) {
            self.rate_limited += 1;
            return Err(HandshakeError::RateLimited);
        }
        let info = open_cookie_request(our_dht, request).inspect_err(|_| self.invalid += 1)?;
        let n = build_cookie_response(rng, now, cookie_key, &info, out)?;
        Ok((n, info))
    }
}

/// Maps a crypto error of a box we built ourselves (cannot happen with our
/// fixed sizes) to a handshake error.
impl From<CryptoError> for HandshakeError {
    fn from(_: CryptoError) -> Self {
        HandshakeError::BufferTooSmall
    }
}
