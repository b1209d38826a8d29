//! `toxlink send FILE`: offer, stream, wait for the receiver's verdict.

use super::protocol::REPLY_TIMEOUT;
use super::report::{unacknowledged, AckTracker, Report};
use super::*;
use crate::link::{establish, settings, LinkError, Linked};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Instant;
use tokio::time::Interval;
use toxlink::toxlink_proto::crypto::PublicKey;
use toxlink::{Friend, FriendEvent, Node};
use toxlink_cli::text::{escape_controls, hex};

/// Waits for the peer's REPLY.
async fn wait_reply(f: &Friend, what: &str) -> Result<(ReplyCode, String), LinkError> {
    loop {
        if let FriendEvent::CustomLossless(p) = next_event(f, REPLY_TIMEOUT, what).await? {
            if let Some(r) = parse_reply(&p) {
                return Ok(r);
            }
            tracing::debug!(id = p.first().copied(), "ignored custom packet");
        }
    }
}

/// [`wait_reply`] while sampling acknowledgements.
async fn wait_reply_sampling(
    f: &Friend,
    what: &str,
    prog: &mut SendProgress<'_>,
) -> Result<(ReplyCode, String), LinkError> {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            biased;
            _ = prog.tick.tick() => prog.sample(),
            ev = next_event(f, left, what) => {
                if let FriendEvent::CustomLossless(p) = ev? {
                    if let Some(r) = parse_reply(&p) {
                        prog.sample();
                        return Ok(r);
                    }
                    tracing::debug!(id = p.first().copied(), "ignored custom packet");
                }
            }
        }
    }
}

/// Hashes a file: (size, SHA-256).
fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), TransferError> {
    let io = |e| TransferError::Io(path.display().to_string(), e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((size, h.finalize().into()))
}

/// The sender's view of acknowledgements, sampled on a ticker.
struct SendProgress<'a> {
    node: Option<&'a Node>,
    peer: PublicKey,
    acks: AckTracker,
    report: &'a Report,
    tick: Interval,
}

impl SendProgress<'_> {
    /// Drains path events and records acknowledgement progress.
    fn sample(&mut self) {
        let Some(node) = self.node else { return };
        self.report.observe(node);
        if let Some(total) = unacknowledged(node, &self.peer).and_then(|u| self.acks.sample(u)) {
            self.report.delivered(Instant::now(), total);
        }
    }
}

/// Runs `toxlink send`; `report` gets its figures.
pub async fn send(a: SendArgs, report: &Report) -> Result<(), TransferError> {
    let mut s = settings(&a.flags.peer, None)?;
    s.info_on_stderr = a.flags.json;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                TransferError::Refused(format!("{}: no usable file name", a.file.display()))
            })?,
    };
    validate_name(&name).map_err(TransferError::Refused)?;
    if a.file.is_dir() {
        return Err(TransferError::Refused(format!(
            "{}: is a directory",
            a.file.display()
        )));
    }
    let (size, sha256) = hash_file(&a.file)?;
    let linked = establish(&s, true, "toxlink send").await?;
    report.connected();
    report.relays(&linked.relays);
    let r = send_body(&linked, &a, &s, name, size, sha256, report).await;
    if let Some(n) = linked.node() {
        report.observe(n);
    }
    linked.close().await;
    r
}

/// The sender's side once connected.
async fn send_body(
    linked: &Linked,
    a: &SendArgs,
    s: &crate::link::Settings,
    name: String,
    size: u64,
    sha256: [u8; 32],
    report: &Report,
) -> Result<(), TransferError> {
    let f = &linked.friend;
    loop {
        match next_event(f, s.timeout, "ONLINE").await? {
            FriendEvent::Online => break,
            other => tracing::debug!(?other, "event before ONLINE"),
        }
    }
    let offer = Offer {
        size,
        sha256,
        name: name.clone(),
    };
    send_packet(f, &offer.encode()).await?;
    report.offer(&name, size, sha256);
    match wait_reply(f, "an answer to the offer").await? {
        (ReplyCode::Accept, _) => {}
        (_, reason) => {
            return Err(TransferError::Refused(format!(
                "by the peer: {}",
                escape_controls(&reason)
            )))
        }
    }
    let pb = progress(size, a.flags.quiet, &name);
    let io = |e| TransferError::Io(a.file.display().to_string(), e);
    let mut file = std::fs::File::open(&a.file).map_err(io)?;
    // [CHUNK id][up to CHUNK_DATA bytes]; `read` fills at most the data
    // part, so `..1 + n` stays inside the buffer.
    let mut pkt = vec![CHUNK; 1 + CHUNK_DATA];
    let mut sent = 0u64;
    let mut prog = SendProgress {
        node: linked.node(),
        peer: f.connection().peer(),
        acks: AckTracker::default(),
        report,
        tick: ticker(),
    };
    while sent < size {
        let n = file.read(&mut pkt[1..]).map_err(io)?;
        if n == 0 {
            return Err(TransferError::Verify(format!(
                "{} shrank while sending ({sent} of {size} bytes)",
                a.file.display()
            )));
        }
        let n = n.min((size - sent) as usize);
        let chunk = &pkt[..1 + n];
        // Send, but notice a FAILED reply or a closed connection meanwhile.
        loop {
            tokio::select! {
                biased;
                _ = prog.tick.tick() => prog.sample(),
                r = f.send_custom_lossless(chunk) => {
                    let number = r.map_err(|e| {
                        LinkError::Peer(format!("connection closed after {sent} of {size} bytes ({e})"))
                    })?;
                    prog.acks.queued(number, sent + n as u64);
                    break;
                }
                ev = f.next_event() => match ev {
                    Some(FriendEvent::CustomLossless(p)) => {
                        if let Some((_, reason)) = parse_reply(&p) {
                            let reason = escape_controls(&reason);
                            return Err(TransferError::Verify(format!("at the peer: {reason}")));
                        }
                    }
                    None | Some(FriendEvent::Offline(_)) => {
                        return Err(LinkError::Peer(format!(
                            "connection closed after {sent} of {size} bytes"
                        ))
                        .into())
                    }
                    Some(_) => {}
                }
            }
        }
        sent += n as u64;
        report.queued(sent);
        pb.set_position(sent);
    }
    send_packet(f, &[END]).await?;
    let result = wait_reply_sampling(f, "the verification result", &mut prog).await?;
    pb.finish_and_clear();
    match result {
        (ReplyCode::Saved, _) => {
            // The receiver has verified every byte.
            report.set_bytes(size);
            say(
                a.flags.json,
                format!("sent {name} ({size} bytes, sha256 {})", hex(&sha256)),
            );
            Ok(())
        }
        (_, reason) => Err(TransferError::Verify(format!(
            "at the peer: {}",
            escape_controls(&reason)
        ))),
    }
}
