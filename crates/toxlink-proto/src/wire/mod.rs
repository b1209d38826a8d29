//! Byte layouts of the Tox TCP relay, net_crypto and the Messenger packets
//! carried inside net_crypto: typed parse and encode, no behaviour.
//!
//! Every parser takes a byte slice, bounds every length before using it,
//! returns a [`WireError`] on malformed input, never panics and never
//! allocates: parsed packets borrow from the input. Every encoder writes into
//! a caller's buffer and returns the length written.

pub mod messenger;
pub mod net_crypto;
pub mod packed;
pub mod path_control;
pub mod relay;

/// Why a packet could not be parsed or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input is empty.
    #[error("empty packet")]
    Empty,
    /// A packet has a length its kind does not allow.
    #[error("{kind}: bad length {len}")]
    BadLength {
        /// Which packet.
        kind: &'static str,
        /// The length seen.
        len: usize,
    },
    /// The first byte names no packet this parser knows, or one that is
    /// reserved.
    #[error("{kind}: unknown or reserved id {id}")]
    BadId {
        /// Which layer.
        kind: &'static str,
        /// The id seen.
        id: u8,
    },
    /// A field holds a value its layout forbids.
    #[error("{kind}: invalid field {field}")]
    BadField {
        /// Which packet.
        kind: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// The caller's output buffer is too small.
    #[error("output buffer too small: need {need}, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Authenticated decryption failed.
    #[error("authentication failed")]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// Returns `out[..need]` or a [`WireError::BufferTooSmall`].
pub(crate) fn out_slice(out: &mut [u8], need: usize) -> Result<&mut [u8], WireError> {
    let have = out.len();
    out.get_mut(..need)
        .ok_or(WireError::BufferTooSmall { need, have })
}

/// Reads a fixed-size array at `at`; the caller has checked the length.
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}
