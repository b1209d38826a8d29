//! Keys, precomputed shared keys, nonces and authenticated encryption as Tox
//! uses them (docs/PROTOCOL.md §1).
//!
//! * A box is XSalsa20-Poly1305 with the 16-byte tag **first**:
//!   `Box(k, n, p) = tag ‖ ciphertext`, `|p| + 16` bytes (libsodium
//!   `crypto_box_easy_afternm`).
//! * Empty plaintexts are refused and a box must be longer than 16 bytes, as
//!   in c-toxcore: every encrypted unit on the wire carries ≥ 1 plaintext byte.
//! * Nonces are 192-bit big-endian integers; [`Nonce::increment`] and
//!   [`Nonce::add`] carry through all 24 bytes and wrap modulo 2^192.
//!
//! Randomness is always injected (`rand_core::CryptoRngCore`), so tests and the
//! simulator are deterministic. The cipher itself sits behind
//! [`backend::Backend`]; [`backend::Hot`] is the one used here.

pub mod backend;

use backend::{Backend, Hot};
use rand_core::CryptoRngCore;
use std::fmt;

/// Size of a public key.
pub const PUBLIC_KEY_SIZE: usize = 32;
/// Size of a secret key.
pub const SECRET_KEY_SIZE: usize = 32;
/// Size of a precomputed shared key.
pub const SHARED_KEY_SIZE: usize = 32;
/// Size of a nonce.
pub const NONCE_SIZE: usize = 24;
/// Poly1305 tag size: what a box adds to its plaintext.
pub const MAC_SIZE: usize = 16;
/// SHA-512 digest size.
pub const SHA512_SIZE: usize = 64;

/// Domain separator of the stand-in key for a low-order peer key
/// ([`SharedKey::precompute`]).
const LOW_ORDER_DOMAIN: &[u8] = b"toxlink low-order peer";

/// Errors of the crypto layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Tox never encrypts an empty plaintext (docs/PROTOCOL.md §1).
    #[error("refusing to encrypt an empty plaintext")]
    EmptyPlaintext,
    /// A box must be longer than its 16-byte tag.
    #[error("box too short: {0} bytes, need more than 16")]
    BoxTooShort(usize),
    /// The output buffer cannot hold the result.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The tag did not verify: wrong key, wrong nonce or tampered data.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A public key of small order: X25519 with it gives all zeros, whatever
    /// our secret, so a box "to" it is readable by anyone (libsodium's
    /// `crypto_box_beforenm` and c-toxcore refuse it too).
    #[error("low-order public key")]
    LowOrderKey,
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_SIZE]);

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_SIZE] {
        &self.0
    }

    /// Constant-time comparison (c-toxcore uses `crypto_verify_32`).
    pub fn ct_eq(&self, other: &PublicKey) -> bool {
        ct_eq(&self.0, &other.0)
    }

    /// Upper-case hex, as Tox tools print keys.
    pub fn to_hex(&self) -> String {
        to_hex_upper(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; PUBLIC_KEY_SIZE];
        from_hex(s, &mut out).then_some(PublicKey(out))
    }

    /// Whether this is one of the encodings of a small-order X25519 point
    /// (libsodium's `has_small_order` list, bit 255 ignored as X25519 does):
    /// a key with which every shared secret is all zeros. A cheap check for
    /// keys that are not precomputed at once (a peer's session key in a
    /// handshake); [`SharedKey::try_precompute`] is the exact one.
    pub fn is_low_order(&self) -> bool {
        let mut hit = 0u8;
        for bad in &LOW_ORDER_POINTS {
            let mut diff = (self.0[31] & 0x7f) ^ bad[31];
            for (a, b) in self.0[..31].iter().zip(&bad[..31]) {
                diff |= a ^ b;
            }
            hit |= u8::from(diff == 0);
        }
        hit != 0
    }
}

/// Encodings of the points of order 1, 2, 4 and 8 of Curve25519 and its
/// twist, as libsodium lists them (`has_small_order`).
const LOW_ORDER_POINTS: [[u8; PUBLIC_KEY_SIZE]; 7] = {
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[0] = 1;
    // p - 1, p, p + 1 with p = 2^255 - 19.
    let mut p_minus_1 = [0xffu8; 32];
    p_minus_1[0] = 0xec;
    p_minus_1[31] = 0x7f;
    let mut p = p_minus_1;
    p[0] = 0xed;
    let mut p_plus_1 = p_minus_1;
    p_plus_1[0] = 0xee;
    [
        zero,
        one,
        // Order 8.
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ],
        // Order 8.
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
            0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
            0xd0, 0x9f, 0x11, 0x57,
        ],
        p_minus_1,
        p,
        p_plus_1,
    ]
};

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 hex digits are enough to tell keys apart in logs.
        write!(f, "PublicKey({}…)", &self.to_hex()[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An X25519 secret key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; SECRET_KEY_SIZE]);

impl SecretKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SECRET_KEY_SIZE] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    /// The public half.
    pub public: PublicKey,
    /// The secret half.
    pub secret: SecretKey,
}

impl KeyPair {
    /// A fresh random key pair (`crypto_box_keypair`).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut sk = [0u8; SECRET_KEY_SIZE];
        rng.fill_bytes(&mut sk);
        Self::from_secret(SecretKey(sk))
    }

    /// The key pair of a given secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        KeyPair {
            public: PublicKey(Hot::public_key(&secret.0)),
            secret,
        }
    }

    /// The shared key with a peer (`K(own sk, peer pk)`); for a low-order
    /// `peer` a key nobody else can compute (see [`SharedKey::precompute`]).
    pub fn precompute(&self, peer: &PublicKey) -> SharedKey {
        SharedKey::precompute(peer, &self.secret)
    }

    /// The shared key with a peer, refusing a low-order `peer` key
    /// ([`CryptoError::LowOrderKey`]): what packet handlers use, so that
    /// such a packet is dropped.
    pub fn try_precompute(&self, peer: &PublicKey) -> Result<SharedKey, CryptoError> {
        SharedKey::try_precompute(peer, &self.secret)
    }
}

/// A 32-byte symmetric key: a precomputed `crypto_box_beforenm` key or any
/// random 32 bytes (the cookie key, docs/PROTOCOL.md §4.2).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey(pub [u8; SHARED_KEY_SIZE]);

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

impl SharedKey {
    /// `K(secret, public)`; symmetric: `K(a, B) = K(b, A)`.
    ///
    /// Infallible form for callers that cannot drop anything: for a
    /// low-order `public` (which [`try_precompute`](Self::try_precompute)
    /// refuses) it returns `SHA-512("toxlink low-order peer" ‖ secret)[..32]`,
    /// a key that depends on our secret alone. Nobody else can compute it, so
    /// every box opened with it fails authentication and nothing sealed with
    /// it can be read — never the all-zero X25519 result anyone can derive.
    pub fn precompute(public: &PublicKey, secret: &SecretKey) -> Self {
        Self::try_precompute(public, secret).unwrap_or_else(|_| {
            tracing::debug!(peer = ?public, "low-order public key refused");
            let mut input = Vec::with_capacity(LOW_ORDER_DOMAIN.len() + SECRET_KEY_SIZE);
            input.extend_from_slice(LOW_ORDER_DOMAIN);
            input.extend_from_slice(&secret.0);
            let digest = sha512(&input);
            let mut k = [0u8; SHARED_KEY_SIZE];
            k.copy_from_slice(&digest[..SHARED_KEY_SIZE]);
            SharedKey(k)
        })
    }

    /// `K(secret, public)`, refusing a low-order `public` with
    /// [`CryptoError::LowOrderKey`] (its X25519 result is all zeros).
    pub fn try_precompute(public: &PublicKey, secret: &SecretKey) -> Result<Self, CryptoError> {
        Hot::precompute(&public.0, &secret.0).map(SharedKey)
    }

    /// 32 random bytes.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = [0u8; SHARED_KEY_SIZE];
        rng.fill_bytes(&mut k);
        SharedKey(k)
    }

    /// Encrypts `buf[MAC_SIZE..]` in place and writes the tag into
    /// `buf[..MAC_SIZE]`: the zero-copy form of [`seal`](Self::seal) used on
    /// the hot path.
    pub fn seal_in_place(&self, nonce: &Nonce, buf: &mut [u8]) -> Result<(), CryptoError> {
        self.seal_in_place_with::<Hot>(nonce, buf)
    }

    /// [`seal_in_place`](Self::seal_in_place) with a chosen backend.
    pub fn seal_in_place_with<B: Backend>(
        &self,
        nonce: &Nonce,
        buf: &mut [u8],
    ) -> Result<(), CryptoError> {
        if buf.len() <= MAC_SIZE {
            return Err(CryptoError::EmptyPlaintext);
        }
        let (tag, body) = buf.split_at_mut(MAC_SIZE);
        tag.copy_from_slice(&B::seal_detached(&self.0, &nonce.0, body));
        Ok(())
    }

    /// Checks and decrypts `buf` (`tag ‖ ciphertext`) in place and returns the
    /// plaintext, which is `buf[MAC_SIZE..]`.
    pub fn open_in_place<'a>(
        &self,
        nonce: &Nonce,
        buf: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        self.open_in_place_with::<Hot>(nonce, buf)
    }

    /// [`open_in_place`](Self::open_in_place) with a chosen backend.
    pub fn open_in_place_with<'a, B: Backend>(
        &self,
        nonce: &Nonce,
        buf: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        if buf.len() <= MAC_SIZE {
            return Err(CryptoError::BoxTooShort(buf.len()));
        }
        let (tag, body) = buf.split_at_mut(MAC_SIZE);
        let mut t = [0u8; MAC_SIZE];
        t.copy_from_slice(tag);
        B::open_detached(&self.0, &nonce.0, body, &t)?;
        Ok(body)
    }

    /// Writes `Box(self, nonce, plaintext)` into `out` and returns its length
    /// (`plaintext.len() + MAC_SIZE`).
    pub fn seal_into(
        &self,
        nonce: &Nonce,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if plaintext.is_empty() {
            return Err(CryptoError::EmptyPlaintext);
        }
        let need = plaintext.len() + MAC_SIZE;
        let have = out.len();
        let out = out
            .get_mut(..need)
            .ok_or(CryptoError::BufferTooSmall { need, have })?;
        out[MAC_SIZE..].copy_from_slice(plaintext);
        self.seal_in_place(nonce, out)?;
        Ok(need)
    }

    /// Opens `boxed` into `out` and returns the plaintext length
    /// (`boxed.len() - MAC_SIZE`). `out` is unspecified on failure.
    pub fn open_into(
        &self,
        nonce: &Nonce,
        boxed: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if boxed.len() <= MAC_SIZE {
            return Err(CryptoError::BoxTooShort(boxed.len()));
        }
        let n = boxed.len() - MAC_SIZE;
        let have = out.len();
        let out = out
            .get_mut(..n)
            .ok_or(CryptoError::BufferTooSmall { need: n, have })?;
        out.copy_from_slice(&boxed[MAC_SIZE..]);
        let mut tag = [0u8; MAC_SIZE];
        tag.copy_from_slice(&boxed[..MAC_SIZE]);
        Hot::open_detached(&self.0, &nonce.0, out, &tag)?;
        Ok(n)
    }

    /// `Box(self, nonce, plaintext)` as a new vector.
    pub fn seal(&self, nonce: &Nonce, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; plaintext.len() + MAC_SIZE];
        self.seal_into(nonce, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens a box into a new vector.
    pub fn open(&self, nonce: &Nonce, boxed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; boxed.len().saturating_sub(MAC_SIZE)];
        self.open_into(nonce, boxed, &mut out)?;
        Ok(out)
    }
}

/// A 24-byte nonce, read as a 192-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Nonce(pub [u8; NONCE_SIZE]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", to_hex_upper(&self.0))
    }
}

impl Nonce {
    /// 24 random bytes.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut n = [0u8; NONCE_SIZE];
        rng.fill_bytes(&mut n);
        Nonce(n)
    }

    /// Adds 1 (big-endian, carry through all bytes, wraps at 2^192).
    pub fn increment(&mut self) {
        self.add(1);
    }

    /// Adds a 32-bit number as if written big-endian into bytes 20..24, with
    /// full carry through all 24 bytes (c-toxcore `increment_nonce_number`).
    pub fn add(&mut self, x: u32) {
        let mut carry = u64::from(x);
        for byte in self.0.iter_mut().rev() {
            if carry == 0 {
                break;
            }
            let sum = u64::from(*byte) + (carry & 0xff);
            *byte = sum as u8;
            carry = (carry >> 8) + (sum >> 8);
        }
    }

    /// Subtracts a 32-bit number (big-endian, full borrow through all 24
    /// bytes): the inverse of [`add`](Self::add).
    pub fn sub(&mut self, x: u32) {
        let mut borrow = i64::from(x);
        for byte in self.0.iter_mut().rev() {
            if borrow == 0 {
                break;
            }
            let d = i64::from(*byte) - (borrow & 0xff);
            borrow >>= 8;
            if d < 0 {
                *byte = (d + 256) as u8;
                borrow += 1;
            } else {
                *byte = d as u8;
            }
        }
    }

    /// The nonce plus `x`, leaving `self` unchanged.
    pub fn plus(mut self, x: u32) -> Self {
        self.add(x);
        self
    }

    /// The last two bytes as a big-endian `u16` (the data packet header,
    /// docs/PROTOCOL.md §4.6).
    pub fn low16(&self) -> u16 {
        u16::from_be_bytes([self.0[22], self.0[23]])
    }
}

/// SHA-512 (used for the cookie hash in the net_crypto handshake).
pub fn sha512(data: &[u8]) -> [u8; SHA512_SIZE] {
    use sha2::Digest;
    sha2::Sha512::digest(data).into()
}

/// Constant-time equality of two equal-length byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hex_upper(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Decodes hex (either case) into `out`; false on a wrong length or digit.
pub(crate) fn from_hex(s: &str, out: &mut [u8]) -> bool {
    let s = s.trim().as_bytes();
    if s.len() != out.len() * 2 {
        return false;
    }
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        match (digit(s[2 * i]), digit(s[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests;
