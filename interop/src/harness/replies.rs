//! The harness's reply and event lines, parsed: connection states and
//! events, `STATS` and `SENT`.

use crate::error::{InteropError, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// Connection status of a friend or of the node itself (`Tox_Connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// Not connected.
    None,
    /// Connected directly over UDP.
    Udp,
    /// Connected through a TCP relay.
    Tcp,
}

impl FromStr for ConnKind {
    type Err = InteropError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(ConnKind::None),
            "udp" => Ok(ConnKind::Udp),
            "tcp" => Ok(ConnKind::Tcp),
            other => Err(InteropError::Protocol(format!(
                "unknown connection kind {other:?}"
            ))),
        }
    }
}

impl fmt::Display for ConnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnKind::None => "none",
            ConnKind::Udp => "udp",
            ConnKind::Tcp => "tcp",
        })
    }
}

/// A `CONN` / `SELFCONN` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnEvent {
    /// New status.
    pub kind: ConnKind,
    /// Milliseconds since the harness process started.
    pub ms_since_start: u64,
    /// `CLOCK_MONOTONIC` microseconds at the event.
    pub mono_us: u64,
}

/// Receive statistics of one packet kind from one friend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Packets received (including bad and duplicate ones).
    pub rx: u64,
    /// Packets too short or with a wrong checksum.
    pub bad: u64,
    /// Packets whose sequence number had been seen before.
    pub dup: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers below the highest seen that never arrived.
    pub lost: u64,
    /// Bytes of good, distinct packets (id byte included).
    pub bytes_rx: u64,
    /// Longest time between two consecutive good packets, µs.
    pub max_gap_us: u64,
    /// `CLOCK_MONOTONIC` µs of the last good packet (0 = none yet).
    pub last_rx_us: u64,
    /// Mean one-way latency (send → receive, same host clock), µs.
    pub lat_avg_us: u64,
    /// Largest one-way latency, µs.
    pub lat_max_us: u64,
}

impl StreamStats {
    /// Good, distinct packets.
    pub fn good(&self) -> u64 {
        self.rx.saturating_sub(self.bad).saturating_sub(self.dup)
    }
}

/// A parsed `STATS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Friend number the figures are about.
    pub friend: u32,
    /// Current connection status of that friend.
    pub status: ConnKind,
    /// Custom lossless packets received from the friend.
    pub custom: StreamStats,
    /// Custom lossy packets received from the friend.
    pub lossy: StreamStats,
    /// Messages received from the friend.
    pub msgs_rx: u64,
    /// Custom lossless packets accepted by toxcore for sending to the friend.
    pub custom_tx: u64,
    /// Custom lossy packets accepted for sending.
    pub lossy_tx: u64,
    /// Echoed packets (all friends).
    pub echo_tx: u64,
    /// Packets that could not be echoed (all friends).
    pub echo_dropped: u64,
    /// Every packet the custom lossless packet callback delivered from the
    /// friend, counted by its first byte (the packet id).
    pub custom_ids: BTreeMap<u8, u64>,
    /// The same for the custom lossy packet callback.
    pub lossy_ids: BTreeMap<u8, u64>,
    /// Friend connection status callbacks for the friend, the first
    /// going-online included.
    pub conn_changes: u64,
    /// Those of [`conn_changes`](Self::conn_changes) that reported the
    /// friend offline.
    pub conn_offline: u64,
    /// `CLOCK_MONOTONIC` µs when the reply was written.
    pub now_us: u64,
}

impl Stats {
    /// Parses a `STATS friend=... ...` line.
    pub fn parse(line: &str) -> Result<Stats> {
        let rest = line
            .strip_prefix("STATS ")
            .ok_or_else(|| InteropError::Protocol(format!("not a STATS line: {line:?}")))?;
        let map: HashMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| -> Result<&str> {
            map.get(k)
                .copied()
                .ok_or_else(|| InteropError::Protocol(format!("STATS lacks {k}: {line:?}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| InteropError::Protocol(format!("STATS {k} not a number: {line:?}")))
        };
        let stream = |p: &str| -> Result<StreamStats> {
            Ok(StreamStats {
                rx: num(&format!("{p}rx"))?,
                bad: num(&format!("{p}bad"))?,
                dup: num(&format!("{p}dup"))?,
                reordered: num(&format!("{p}reordered"))?,
                lost: num(&format!("{p}lost"))?,
                bytes_rx: num(&format!("{p}bytes_rx"))?,
                max_gap_us: num(&format!("{p}max_gap_us"))?,
                last_rx_us: num(&format!("{p}last_rx_us"))?,
                lat_avg_us: num(&format!("{p}lat_avg_us"))?,
                lat_max_us: num(&format!("{p}lat_max_us"))?,
            })
        };
        Ok(Stats {
            friend: u32::try_from(num("friend")?)
                .map_err(|_| InteropError::Protocol(format!("bad friend: {line:?}")))?,
            status: get("status")?.parse()?,
            custom: stream("custom_")?,
            lossy: stream("lossy_")?,
            msgs_rx: num("msgs_rx")?,
            custom_tx: num("custom_tx")?,
            lossy_tx: num("lossy_tx")?,
            echo_tx: num("echo_tx")?,
            echo_dropped: num("echo_dropped")?,
            custom_ids: parse_id_counts(get("custom_ids")?, line)?,
            lossy_ids: parse_id_counts(get("lossy_ids")?, line)?,
            conn_changes: num("conn_changes")?,
            conn_offline: num("conn_offline")?,
            now_us: num("now_us")?,
        })
    }
}

/// `<id>:<n>,<id>:<n>` (or `-` for none) of `STATS custom_ids=` / `lossy_ids=`.
fn parse_id_counts(s: &str, line: &str) -> Result<BTreeMap<u8, u64>> {
    let bad = || InteropError::Protocol(format!("bad packet id counts {s:?}: {line:?}"));
    if s == "-" {
        return Ok(BTreeMap::new());
    }
    s.split(',')
        .map(|kv| {
            let (id, n) = kv.split_once(':').ok_or_else(bad)?;
            Ok((
                id.parse().map_err(|_| bad())?,
                n.parse().map_err(|_| bad())?,
            ))
        })
        .collect()
}

/// A `PKTID <friend> <lossless|lossy> <id> <len> <mono_us>` event: the
/// first packet with this id that a custom packet callback delivered from
/// the friend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketIdEvent {
    /// Friend number.
    pub friend: u32,
    /// Delivered by the lossy (else the lossless) custom packet callback.
    pub lossy: bool,
    /// The packet's first byte.
    pub id: u8,
    /// The packet's length, id byte included.
    pub len: usize,
    /// `CLOCK_MONOTONIC` µs at delivery.
    pub mono_us: u64,
}

impl PacketIdEvent {
    /// Parses a `PKTID ...` line.
    pub fn parse(line: &str) -> Result<PacketIdEvent> {
        let bad = || InteropError::Protocol(format!("bad PKTID line: {line:?}"));
        let mut it = line.split_whitespace();
        if it.next() != Some("PKTID") {
            return Err(bad());
        }
        let friend = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let lossy = match it.next() {
            Some("lossy") => true,
            Some("lossless") => false,
            _ => return Err(bad()),
        };
        let id = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let len = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let mono_us = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(PacketIdEvent {
            friend,
            lossy,
            id,
            len,
            mono_us,
        })
    }
}

/// Outcome of a `SENDCUSTOM` / `SENDLOSSY` run (the `SENT` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Packets libtoxcore accepted.
    pub accepted: u32,
    /// Milliseconds from the command to the last accepted packet.
    pub ms: u64,
    /// Friend number.
    pub friend: u32,
    /// Whether these were lossy packets.
    pub lossy: bool,
    /// `CLOCK_MONOTONIC` µs when sending started.
    pub start_us: u64,
    /// Why the run ended early (`None` = all accepted).
    pub error: Option<String>,
}

impl SendReport {
    /// Parses a `SENT <n> <ms> friend=.. kind=.. start_us=.. err=..` line.
    pub fn parse(line: &str) -> Result<SendReport> {
        let bad = || InteropError::Protocol(format!("bad SENT line: {line:?}"));
        let mut it = line.split_whitespace();
        if it.next() != Some("SENT") {
            return Err(bad());
        }
        let accepted = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let ms = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let map: HashMap<&str, &str> = it.filter_map(|kv| kv.split_once('=')).collect();
        let friend = map
            .get("friend")
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let start_us = map
            .get("start_us")
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let lossy = match map.get("kind") {
            Some(&"lossy") => true,
            Some(&"lossless") => false,
            _ => return Err(bad()),
        };
        let error = match map.get("err") {
            Some(&"none") => None,
            Some(e) => Some((*e).to_owned()),
            None => return Err(bad()),
        };
        Ok(SendReport {
            accepted,
            ms,
            friend,
            lossy,
            start_us,
            error,
        })
    }
}

pub(super) fn parse_key(s: &str) -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut k)
        .map_err(|_| InteropError::Protocol(format!("bad key {s:?}")))?;
    Ok(k)
}

/// Parses `<kind> <ms> <mono_us>` of a CONN/SELFCONN line.
pub(super) fn parse_conn_event(rest: &str, line: &str) -> Result<ConnEvent> {
    let bad = || InteropError::Protocol(format!("bad event {line:?}"));
    let mut it = rest.split_whitespace();
    let kind = it.next().ok_or_else(bad)?.parse()?;
    let ms_since_start = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mono_us = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(ConnEvent {
        kind,
        ms_since_start,
        mono_us,
    })
}
