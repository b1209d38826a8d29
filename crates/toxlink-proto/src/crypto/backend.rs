//! The narrow boundary between toxlink and an XSalsa20-Poly1305 / X25519
//! implementation.
//!
//! Everything above this module works with [`SharedKey`](super::SharedKey)
//! and [`Nonce`](super::Nonce); only the four functions of [`Backend`] touch
//! a cryptographic library. Two implementations exist and must agree byte for
//! byte (tests check both against the vectors of docs/PROTOCOL.md §10):
//!
//! * [`RustCrypto`]: pure Rust (`x25519-dalek`, `salsa20`, `xsalsa20poly1305`);
//! * [`Sodium`]: the system libsodium (feature `sodium`, on by default).
//!
//! [`Hot`] names the one used on the hot path. It is libsodium when the
//! `sodium` feature is on, because it measured faster on the target machine
//! (see `benches/crypto.rs` and the project notes).

use super::CryptoError;

/// The four primitives toxlink needs. `buf` is always the plaintext (seal) or
/// ciphertext (open) without the tag; the tag travels separately so callers can
/// lay out `tag ‖ ciphertext` in one buffer with no copy.
pub trait Backend {
    /// Short name for benchmarks and logs.
    const NAME: &'static str;
    /// X25519 public key of a secret key.
    fn public_key(secret: &[u8; 32]) -> [u8; 32];
    /// `crypto_box_beforenm`: HSalsa20 over X25519(secret, public) with a zero
    /// 16-byte input. Refuses a low-order `public` (the X25519 result is all
    /// zeros, so the key would be the same for every secret) with
    /// [`CryptoError::LowOrderKey`], as libsodium's `crypto_box_beforenm`
    /// (which returns -1) and c-toxcore do.
    fn precompute(public: &[u8; 32], secret: &[u8; 32]) -> Result<[u8; 32], CryptoError>;
    /// Encrypts `buf` in place and returns the Poly1305 tag.
    fn seal_detached(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) -> [u8; 16];
    /// Checks `tag` and decrypts `buf` in place. On failure `buf` is left
    /// unspecified (callers drop it).
    fn open_detached(
        key: &[u8; 32],
        nonce: &[u8; 24],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError>;
}

/// Pure-Rust backend (RustCrypto crates).
#[derive(Debug, Clone, Copy)]
pub struct RustCrypto;

impl Backend for RustCrypto {
    const NAME: &'static str = "rustcrypto";

    fn public_key(secret: &[u8; 32]) -> [u8; 32] {
        let sk = x25519_dalek::StaticSecret::from(*secret);
        x25519_dalek::PublicKey::from(&sk).to_bytes()
    }

    fn precompute(public: &[u8; 32], secret: &[u8; 32]) -> Result<[u8; 32], CryptoError> {
        use salsa20::cipher::consts::U10;
        let sk = x25519_dalek::StaticSecret::from(*secret);
        let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
        // All-zero output: `public` has small order (libsodium's check).
        if !shared.was_contributory() {
            return Err(CryptoError::LowOrderKey);
        }
        let key = salsa20::hsalsa::<U10>(shared.as_bytes().into(), &Default::default());
        Ok(key.into())
    }

    fn seal_detached(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) -> [u8; 16] {
        use xsalsa20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = xsalsa20poly1305::XSalsa20Poly1305::new(key.into());
        // encrypt_in_place_detached only fails for messages longer than the
        // cipher's 2^38-byte limit; toxlink never seals more than 64 KiB.
        let tag = cipher
            .encrypt_in_place_detached(nonce.into(), b"", buf)
            .unwrap_or_default();
        tag.into()
    }

    fn open_detached(
        key: &[u8; 32],
        nonce: &[u8; 24],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        use xsalsa20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = xsalsa20poly1305::XSalsa20Poly1305::new(key.into());
        cipher
            .decrypt_in_place_detached(nonce.into(), b"", buf, tag.into())
            .map_err(|_| CryptoError::AuthenticationFailed)
    }
}

/// libsodium backend (the system library, found with pkg-config).
#[cfg(feature = "sodium")]
#[derive(Debug, Clone, Copy)]
pub struct Sodium;

#[cfg(feature = "sodium")]
impl Sodium {
    /// `sodium_init` picks the fastest Salsa20/Poly1305 code for this CPU; it
    /// is idempotent and thread-safe, and we call it once.
    fn init() {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            // SAFETY: sodium_init has no preconditions. It returns -1 only if
            // the library cannot initialise (no entropy source); the functions
            // used here do not read randomness, so that case does not matter.
            unsafe {
                libsodium_sys::sodium_init();
            }
        });
    }
}

#[cfg(feature = "sodium")]
impl Backend for Sodium {
    const NAME: &'static str = "libsodium";

    fn public_key(secret: &[u8; 32]) -> [u8; 32] {
        Self::init();
        let mut pk = [0u8; 32];
        // SAFETY: both pointers are valid for 32 bytes, the sizes
        // crypto_scalarmult_base expects.
        unsafe {
            libsodium_sys::crypto_scalarmult_base(pk.as_mut_ptr(), secret.as_ptr());
        }
        pk
    }

    fn precompute(public: &[u8; 32], secret: &[u8; 32]) -> Result<[u8; 32], CryptoError> {
        Self::init();
        let mut k = [0u8; 32];
        // SAFETY: all three pointers are valid for 32 bytes.
        let rc = unsafe {
            libsodium_sys::crypto_box_beforenm(k.as_mut_ptr(), public.as_ptr(), secret.as_ptr())
        };
        // -1: the X25519 result was all zeros (a low-order public key).
        if rc != 0 {
            return Err(CryptoError::LowOrderKey);
        }
        Ok(k)
    }

    fn seal_detached(key: &[u8; 32], nonce: &[u8; 24], buf: &mut [u8]) -> [u8; 16] {
        Self::init();
        let mut tag = [0u8; 16];
        // SAFETY: c and m may alias in crypto_secretbox_detached (documented
        // by libsodium); buf is valid for buf.len() bytes, tag for 16, nonce
        // for 24, key for 32.
        unsafe {
            libsodium_sys::crypto_secretbox_detached(
                buf.as_mut_ptr(),
                tag.as_mut_ptr(),
                buf.as_ptr(),
                buf.len() as u64,
                nonce.as_ptr(),
                key.as_ptr(),
            );
        }
        tag
    }

    fn open_detached(
        key: &[u8; 32],
        nonce: &[u8; 24],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        Self::init();
        // SAFETY: as in seal_detached; m and c may alias.
        let rc = unsafe {
            libsodium_sys::crypto_secretbox_open_detached(
                buf.as_mut_ptr(),
                buf.as_ptr(),
                tag.as_ptr(),
                buf.len() as u64,
                nonce.as_ptr(),
                key.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }
}

/// The backend used on the hot path.
#[cfg(feature = "sodium")]
pub type Hot = Sodium;
/// The backend used on the hot path.
#[cfg(not(feature = "sodium"))]
pub type Hot = RustCrypto;
