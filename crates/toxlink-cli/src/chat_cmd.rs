//! `toxlink chat` (with another toxlink peer) and `toxlink peer` (with a
//! c-toxcore peer): lines read from stdin go out as Tox MESSAGE packets
//! (docs/PROTOCOL.md §7.4), received messages are printed on stdout as
//! `SHORTID: text` (the peer key's first 8 hex digits; actions as
//! `* SHORTID text`; control characters such as terminal escapes shown
//! escaped, e.g. `\x1b`), and a status line goes to stderr whenever the
//! connection, the online state or the primary path (UDP or which relay)
//! changes.
//!
//! Stdin is only read while the peer is online, so lines typed before it
//! is stay in the pipe and go out in order once it is. Lines longer than one
//! message (1372 bytes) are split; empty lines are skipped. At the end of
//! stdin we wait briefly for the last messages to go out, close the
//! connection (one KILL) and exit 0; when the peer closes the connection we
//! exit 0 too.

use crate::link::{establish, settings, short_id, LinkError, PeerArgs};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use toxlink::toxlink_proto::crypto::PublicKey;
use toxlink::FriendEvent;
use toxlink_cli::text::escape_bytes;

/// Longest chat message (bytes).
pub const MAX_MESSAGE: usize = 1372;
/// How long we wait after the end of stdin before closing, so the last
/// messages are acknowledged (the runtime has no "all sent" signal yet).
const LINGER: Duration = Duration::from_millis(500);

/// Options of `toxlink chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Our nickname as the peer sees it.
    #[arg(long, default_value = "toxlink")]
    pub name: String,
    /// Keys, peer, transport and config flags.
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// Options of `toxlink peer`.
#[derive(Debug, clap::Args)]
pub struct PeerCmdArgs {
    /// The c-toxcore peer's DHT public key (64 hex digits); its UDP address
    /// is `--peer-addr`, its long-term key or Tox ID `--peer`.
    #[arg(long, value_name = "KEY", value_parser = parse_dht)]
    pub peer_dht: Option<PublicKey>,
    /// Our nickname as the peer sees it.
    #[arg(long, default_value = "toxlink")]
    pub name: String,
    /// Keys, peer, transport and config flags.
    #[command(flatten)]
    pub peer: PeerArgs,
}

fn parse_dht(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s).ok_or_else(|| format!("peer DHT key {s:?}: expected 64 hex digits"))
}

/// Splits a line into messages of at most [`MAX_MESSAGE`] bytes, on UTF-8
/// character boundaries; an empty line gives none.
pub fn split_message(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let mut end = rest.len().min(MAX_MESSAGE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

/// Runs `toxlink chat`.
pub async fn chat(a: ChatArgs) -> Result<(), LinkError> {
    let s = settings(&a.peer, None)?;
    run(s, true, &a.name).await
}

/// Runs `toxlink peer`.
pub async fn peer(a: PeerCmdArgs) -> Result<(), LinkError> {
    let s = settings(&a.peer, a.peer_dht)?;
    if s.peer_addr.is_none() {
        return Err(LinkError::Usage(
            "peer: give the c-toxcore peer's UDP address with --peer-addr HOST:PORT".into(),
        ));
    }
    if s.peer_dht.is_none() {
        return Err(LinkError::Usage(
            "peer: give the c-toxcore peer's DHT key with --peer-dht KEY".into(),
        ));
    }
    // Its DHT key differs from its long-term key: a fresh DHT key for us too,
    // as any c-toxcore client has.
    run(s, false, &a.name).await
}

async fn run(s: crate::link::Settings, dht_is_real: bool, name: &str) -> Result<(), LinkError> {
    let linked = establish(&s, dht_is_real, name).await?;
    let who = short_id(&s.peer);
    eprintln!("* connected to {who} via {}", linked.via);
    let f = &linked.friend;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut online = false;
    let mut path = linked.path();
    let result = loop {
        tokio::select! {
            // Path changes (UDP <-> relay, relay switches): one status line.
            _ = async {
                match linked.node() {
                    Some(n) => n.wait_event(Duration::from_secs(3600)).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(n) = linked.node() {
                    while n.poll_path_event().is_some() || n.poll_relay_event().is_some() {}
                }
                let now = linked.path();
                if now != path && now.is_some() {
                    eprintln!("* {who} now via {}", now.as_deref().unwrap_or("?"));
                }
                path = now;
            },
            ev = f.next_event() => match ev {
                None => {
                    eprintln!("* connection to {who} closed");
                    break Ok(());
                }
                Some(FriendEvent::Online) => {
                    online = true;
                    let via = linked.path().unwrap_or_else(|| linked.via.clone());
                    eprintln!("* {who} online via {via}");
                }
                Some(FriendEvent::Offline(r)) => {
                    online = false;
                    eprintln!("* {who} offline ({r:?})");
                }
                Some(FriendEvent::Message(m)) => println!("{who}: {}", escape_bytes(&m)),
                Some(FriendEvent::Action(m)) => println!("* {who} {}", escape_bytes(&m)),
                Some(FriendEvent::Nickname(n)) => {
                    eprintln!("* {who} is called {}", escape_bytes(&n));
                }
                Some(other) => tracing::debug!(?other, "friend event"),
            },
            line = stdin.next_line(), if online => match line {
                Ok(Some(l)) => {
                    for m in split_message(l.trim_end_matches('\r')) {
                        if let Err(e) = f.send_message(m.as_bytes()).await {
                            eprintln!("* message not sent: {e}");
                        }
                    }
                }
                Ok(None) => {
                    tokio::time::sleep(LINGER).await;
                    break Ok(());
                }
                Err(e) => break Err(LinkError::Io("stdin".into(), e)),
            },
        }
    };
    linked.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_split_on_char_boundaries() {
        assert!(split_message("").is_empty());
        assert_eq!(split_message("hi"), vec!["hi"]);
        let long = "é".repeat(1000); // 2000 bytes
        let parts = split_message(&long);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= MAX_MESSAGE));
        assert_eq!(parts.concat(), long);
        assert_eq!(parts[0].len(), 1372);
    }

    #[test]
    fn dht_keys_parse() {
        assert_eq!(parse_dht(&"01".repeat(32)), Ok(PublicKey([1; 32])));
        assert!(parse_dht("01").is_err());
    }
}
