//! The packets of a transfer (module documentation of [`super`]): ids,
//! OFFER, REPLY and the file name rule.

use std::time::Duration;

/// OFFER packet id.
pub const OFFER: u8 = 160;
/// CHUNK packet id.
pub const CHUNK: u8 = 161;
/// END packet id.
pub const END: u8 = 162;
/// REPLY packet id.
pub const REPLY: u8 = 163;
/// Most data bytes in one CHUNK (custom lossless packets hold 1373 bytes,
/// id included).
pub const CHUNK_DATA: usize = 1372;
/// Longest file name in an OFFER.
pub const MAX_NAME: usize = 255;
/// Longest reason in a REPLY.
pub(super) const MAX_REASON: usize = 1000;
/// How long the sender waits for the receiver's answer to OFFER or END.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// REPLY codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// The offer is accepted: send the chunks.
    Accept = 0,
    /// The offer is refused.
    Refuse = 1,
    /// The file was verified and saved.
    Saved = 2,
    /// Verification or writing failed; nothing was kept.
    Failed = 3,
}

/// A file offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// File name (not yet validated for the local file system).
    pub name: String,
}

impl Offer {
    /// Encodes OFFER (id first).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41 + self.name.len());
        v.push(OFFER);
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.sha256);
        v.extend_from_slice(self.name.as_bytes());
        v
    }

    /// Parses OFFER (id first); `None` if malformed.
    pub fn parse(p: &[u8]) -> Option<Offer> {
        let (&id, rest) = p.split_first()?;
        if id != OFFER || rest.len() < 8 + 32 + 1 || rest.len() > 8 + 32 + MAX_NAME {
            return None;
        }
        let (size, rest) = rest.split_at(8);
        let (sha, name) = rest.split_at(32);
        Some(Offer {
            size: u64::from_be_bytes(size.try_into().ok()?),
            sha256: sha.try_into().ok()?,
            name: String::from_utf8(name.to_vec()).ok()?,
        })
    }
}

/// Encodes REPLY.
pub fn encode_reply(code: ReplyCode, reason: &str) -> Vec<u8> {
    let mut v = vec![REPLY, code as u8];
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    v.extend_from_slice(&reason.as_bytes()[..end]);
    v
}

/// Parses REPLY; `None` if malformed.
pub fn parse_reply(p: &[u8]) -> Option<(ReplyCode, String)> {
    let (&id, rest) = p.split_first()?;
    let (&code, reason) = rest.split_first()?;
    if id != REPLY {
        return None;
    }
    let code = match code {
        0 => ReplyCode::Accept,
        1 => ReplyCode::Refuse,
        2 => ReplyCode::Saved,
        3 => ReplyCode::Failed,
        _ => return None,
    };
    Some((code, String::from_utf8_lossy(reason).into_owned()))
}

/// Checks a received file name: refuses empty names, `/`, `..`, NUL and
/// names longer than [`MAX_NAME`] bytes.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty file name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("file name longer than {MAX_NAME} bytes"));
    }
    if name.contains('/') {
        return Err(format!("file name {name:?} contains '/'"));
    }
    if name.contains("..") || name == "." {
        return Err(format!("file name {name:?} contains '..'"));
    }
    if name.contains('\0') {
        return Err(format!("file name {name:?} contains NUL"));
    }
    Ok(())
}
