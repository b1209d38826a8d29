//! `toxlink recv DIR`: accept one offer, write the part file, verify it and
//! give it its final name.

use super::report::Report;
use super::*;
use crate::link::{establish, settings, short_id, LinkError};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use toxlink::{Friend, FriendEvent};
use toxlink_cli::text::{escape_controls, hex};

/// Runs `toxlink recv`; `report` gets its figures.
pub async fn recv(a: RecvArgs, report: &Report) -> Result<(), TransferError> {
    let mut s = settings(&a.flags.peer, None)?;
    s.info_on_stderr = a.flags.json;
    if !a.dir.is_dir() {
        return Err(TransferError::Io(
            a.dir.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let linked = establish(&s, true, "toxlink recv").await?;
    report.connected();
    report.relays(&linked.relays);
    let f = &linked.friend;
    let who = short_id(&linked.friend.connection().peer());
    // The offer: no deadline (the sender sends it as soon as it is online),
    // but the connection must stay up.
    let offer = loop {
        if let FriendEvent::CustomLossless(p) =
            next_event(f, Duration::from_secs(24 * 3600), "an offer").await?
        {
            match Offer::parse(&p) {
                Some(o) => break o,
                None => tracing::debug!(id = p.first().copied(), "ignored custom packet"),
            }
        }
    };
    report.offer(&offer.name, offer.size, offer.sha256);
    let created = check_room(&a.dir, offer.size, a.max_size)
        .and_then(|()| PartFile::create(&a.dir, offer.clone(), a.overwrite, &mut rand_core::OsRng));
    let mut part = match created {
        Ok(p) => p,
        Err(e) => {
            let _ = send_packet(f, &encode_reply(ReplyCode::Refuse, &e.to_string())).await;
            linger(&linked.friend).await;
            linked.close().await;
            return Err(e);
        }
    };
    tracing::debug!(part = %part.part_path().display(), size = offer.size, "receiving");
    send_packet(f, &encode_reply(ReplyCode::Accept, "")).await?;
    let pb = progress(offer.size, a.flags.quiet, &escape_controls(&offer.name));
    let mut tick = ticker();
    let outcome: Result<PathBuf, TransferError> = async {
        loop {
            let ev = tokio::select! {
                biased;
                _ = tick.tick() => {
                    if let Some(n) = linked.node() {
                        report.observe(n);
                    }
                    continue;
                }
                ev = next_event(f, Duration::from_secs(24 * 3600), "data") => ev,
            };
            let p = match ev {
                Ok(FriendEvent::CustomLossless(p)) => p,
                Ok(_) => continue,
                Err(_) => {
                    return Err(LinkError::Peer(format!(
                        "connection closed after {} of {} bytes",
                        part.written(),
                        offer.size
                    ))
                    .into())
                }
            };
            match p.split_first() {
                Some((&CHUNK, data)) if !data.is_empty() => {
                    part.write(data)?;
                    report.delivered(Instant::now(), part.written());
                    pb.set_position(part.written());
                }
                Some((&END, [])) => {
                    report.delivered(Instant::now(), part.written());
                    return part.finish();
                }
                _ => tracing::debug!(id = p.first().copied(), "ignored custom packet"),
            }
        }
    }
    .await;
    pb.finish_and_clear();
    let reply = match &outcome {
        Ok(_) => encode_reply(ReplyCode::Saved, ""),
        Err(e) => encode_reply(ReplyCode::Failed, &e.to_string()),
    };
    let _ = send_packet(f, &reply).await;
    linger(&linked.friend).await;
    if let Some(n) = linked.node() {
        report.observe(n);
    }
    linked.close().await;
    let path = outcome?;
    say(
        a.flags.json,
        format!(
            "received {} from {who} ({} bytes, sha256 {}) -> {}",
            escape_controls(&offer.name),
            offer.size,
            hex(&offer.sha256),
            escape_controls(&path.display().to_string())
        ),
    );
    Ok(())
}

/// Gives our last packet time to arrive: waits (≤ 5 s) for the peer to close
/// the connection, which it does once it has our reply.
async fn linger(f: &Friend) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = f.next_event().await {
            if matches!(e, FriendEvent::Offline(_)) {
                return;
            }
        }
    })
    .await;
}
