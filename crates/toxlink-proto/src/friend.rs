//! Being a good Tox friend over one established net_crypto connection: the
//! friend_connection and Messenger behaviour a c-toxcore 0.2.18 peer expects
//! (docs/PROTOCOL.md §7.3, §7.4), as a sans-IO state machine.
//!
//! A [`FriendLink`] sits on top of one session. The owner feeds it the
//! session's events ([`FriendLink::handle_established`],
//! [`FriendLink::handle_lossless`], [`FriendLink::handle_lossy`],
//! [`FriendLink::handle_closed`]) and the clock
//! ([`FriendLink::handle_timeout`] at [`FriendLink::poll_timeout`]), sends
//! what [`FriendLink::poll_transmit`] returns as lossless / lossy net_crypto
//! data, hands [`FriendLink::poll_event`] to the application, and closes the
//! session when [`FriendLink::wants_close`] says so. Application commands
//! ([`FriendLink::message`], [`FriendLink::custom_lossless`], ...) validate
//! and return the packet bytes for the owner to send itself, so bulk data
//! never queues here and keeps the session's backpressure.
//!
//! Rules kept (docs/PROTOCOL.md section in brackets):
//! * On ESTABLISHED: friend_connection is up; we send ONLINE, ALIVE and, if
//!   we have relays, SHARE_RELAYS (§7.3, §7.4).
//! * The peer is *online* (event [`FriendEvent::Online`]) only after an
//!   ONLINE packet of exactly one byte; receiving it while not online is
//!   answered with ONLINE, then NICKNAME (if set), STATUSMESSAGE, USERSTATUS
//!   and TYPING follow, as c-toxcore does (§7.4).
//! * Before that every Messenger packet (anything but the friend_connection
//!   ids 16–18) is discarded and counted ([`FriendStats::discarded`]).
//! * ALIVE goes out at least every [`FriendConfig::alive_interval`] (8 s,
//!   c-toxcore's `FRIEND_PING_INTERVAL`); only the peer's ALIVE refreshes
//!   liveness; no ALIVE for more than [`FriendConfig::timeout`] (32 s) →
//!   offline and [`FriendLink::wants_close`] (send KILL), as c-toxcore does.
//! * SHARE_RELAYS with our ≤ 3 relays after going up and every 120 s; a
//!   received one is only reported ([`FriendEvent::ShareRelays`]), never
//!   waited for (c-toxcore often never sends it, §7.3), and only while the
//!   peer is online: one that arrives before its ONLINE is held (the latest
//!   one only) and reported right after [`FriendEvent::Online`]. What the
//!   peer says about relays is its word, for its own connection (the relay
//!   pool, `paths::pool`, keeps it apart from ours).
//! * OFFLINE from the peer → [`FriendEvent::Offline`]; the connection stays
//!   and a later ONLINE brings it back.
//!
//! Invariants: nothing here panics on input; malformed packets are dropped
//! and counted; the transmit queue only holds protocol packets (at most a few
//! per received packet, bounded by [`MAX_QUEUED`]) and the event queue is
//! bounded the same way (entries beyond the bound are dropped and counted in
//! [`FriendStats::overflow`], never grown without limit).

use crate::wire::messenger::{
    id, MessengerPacket, RelayList, MAX_MESSAGE_LENGTH, MAX_NAME_LENGTH, MAX_SHARED_RELAYS,
    MAX_STATUSMESSAGE_LENGTH,
};
use crate::wire::packed::PackedNode;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// c-toxcore's `FRIEND_PING_INTERVAL`: ALIVE at least this often.
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(8);
/// c-toxcore's `FRIEND_CONNECTION_TIMEOUT`: no ALIVE for longer → dead.
pub const FRIEND_CONNECTION_TIMEOUT: Duration = Duration::from_secs(32);
/// c-toxcore's `SHARE_RELAYS_INTERVAL` (§9: 120 s in 0.2.18).
pub const SHARE_RELAYS_INTERVAL: Duration = Duration::from_secs(120);
/// Bound on queued outgoing protocol packets and on queued events; beyond it
/// new entries are dropped and counted.
pub const MAX_QUEUED: usize = 4096;
/// Largest net_crypto data (id byte included), docs/PROTOCOL.md §4.7.
pub use crate::wire::net_crypto::MAX_CRYPTO_DATA_SIZE as MAX_DATA_SIZE;

/// Settings of a [`FriendLink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FriendConfig {
    /// Send ALIVE at least this often (default 8 s; must stay ≤ 8 s for
    /// c-toxcore).
    pub alive_interval: Duration,
    /// Declare the peer dead after this long without its ALIVE (default
    /// 32 s; the deadline is strictly `last + timeout < now`).
    pub timeout: Duration,
    /// Re-send SHARE_RELAYS this often (default 120 s).
    pub share_relays_interval: Duration,
    /// Our relays to share (at most 3 are sent; TCP families).
    pub relays: Vec<PackedNode>,
    /// Our nickname (≤ 128 bytes, longer is cut).
    pub name: Vec<u8>,
    /// Our status message (≤ 1007 bytes, longer is cut).
    pub status_message: Vec<u8>,
    /// Our user status (0 none, 1 away, 2 busy).
    pub user_status: u8,
}

impl Default for FriendConfig {
    fn default() -> Self {
        FriendConfig {
            alive_interval: ALIVE_INTERVAL,
            timeout: FRIEND_CONNECTION_TIMEOUT,
            share_relays_interval: SHARE_RELAYS_INTERVAL,
            relays: Vec::new(),
            name: Vec::new(),
            status_message: Vec::new(),
            user_status: 0,
        }
    }
}

/// A net_crypto packet the owner must send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outgoing {
    /// Send as lossless data (id byte first).
    Lossless(Vec<u8>),
    /// Send as lossy data (id byte first).
    Lossy(Vec<u8>),
}

/// Why the friend went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflineReason {
    /// The peer sent OFFLINE (it deleted us); the connection stays up.
    PeerOffline,
    /// No ALIVE within the timeout; the connection must be closed.
    Timeout,
    /// The net_crypto connection ended (KILL, local close, handshake loss).
    ConnectionClosed,
}

/// What the application learns about the friend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FriendEvent {
    /// The peer is online (its ONLINE arrived).
    Online,
    /// The peer went offline.
    Offline(OfflineReason),
    /// A chat message (1..=1372 bytes, UTF-8 by convention, not checked).
    Message(Vec<u8>),
    /// A chat action ("/me").
    Action(Vec<u8>),
    /// The peer's nickname.
    Nickname(Vec<u8>),
    /// The peer's status message.
    StatusMessage(Vec<u8>),
    /// The peer's user status (0 none, 1 away, 2 busy; others are ignored).
    UserStatus(u8),
    /// The peer is typing or stopped.
    Typing(bool),
    /// A custom lossless packet (ids 160..=191), id byte included.
    CustomLossless(Vec<u8>),
    /// A custom lossy packet (ids 200..=254), id byte included.
    CustomLossy(Vec<u8>),
    /// The peer's relays (input for the multipath layer).
    ShareRelays(Vec<PackedNode>),
    /// Any other packet while online (files, conferences, A/V): raw data,
    /// id byte first.
    Other(Vec<u8>),
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FriendError {
    /// The peer is not online (its ONLINE has not arrived, or it went away).
    #[error("friend not online")]
    NotOnline,
    /// Text or data length out of range.
    #[error("bad length {0}")]
    BadLength(usize),
    /// The first byte is not a custom id of the right kind.
    #[error("packet id {0} not allowed here")]
    BadId(u8),
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FriendStats {
    /// Messenger packets discarded because the peer was not online yet.
    pub discarded: u64,
    /// Packets that did not parse (dropped).
    pub malformed: u64,
    /// ALIVE packets received.
    pub alive_rx: u64,
    /// ALIVE packets queued for sending.
    pub alive_tx: u64,
    /// SHARE_RELAYS packets queued for sending.
    pub share_relays_tx: u64,
    /// Queue entries dropped because a queue held [`MAX_QUEUED`] entries.
    pub overflow: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The session is not established yet.
    Waiting,
    /// friend_connection up, the peer's ONLINE not seen yet.
    Connected,
    /// The peer is online.
    Online,
    /// Terminal: timed out or the session ended.
    Dead,
}

/// friend_connection + Messenger over one session (see the module docs).
#[derive(Debug)]
pub struct FriendLink {
    cfg: FriendConfig,
    state: State,
    last_alive_rx: Option<Instant>,
    next_alive_tx: Option<Instant>,
    next_share: Option<Instant>,
    close: bool,
    out: VecDeque<Outgoing>,
    events: VecDeque<FriendEvent>,
    /// The latest SHARE_RELAYS received before the peer's ONLINE (≤ 3
    /// entries), reported once it is online.
    early_relays: Option<Vec<PackedNode>>,
    stats: FriendStats,
}

fn cut(mut v: Vec<u8>, max: usize) -> Vec<u8> {
    v.truncate(max);
    v
}

impl FriendLink {
    /// A link waiting for its session to be established.
    pub fn new(mut cfg: FriendConfig) -> Self {
        cfg.name = cut(cfg.name, MAX_NAME_LENGTH);
        cfg.status_message = cut(cfg.status_message, MAX_STATUSMESSAGE_LENGTH);
        FriendLink {
            cfg,
            state: State::Waiting,
            last_alive_rx: None,
            next_alive_tx: None,
            next_share: None,
            close: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            early_relays: None,
            stats: FriendStats::default(),
        }
    }

    /// Whether the peer is online (its ONLINE arrived and nothing ended it).
    pub fn is_online(&self) -> bool {
        self.state == State::Online
    }

    /// Whether the link is finished (timed out or the session closed).
    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Counters.
    pub fn stats(&self) -> FriendStats {
        self.stats
    }

    /// True once the owner must close the session (send KILL): the peer's
    /// ALIVE timed out (§7.3).
    pub fn wants_close(&self) -> bool {
        self.close
    }

    fn push_out(&mut self, o: Outgoing) {
        if self.out.len() >= MAX_QUEUED {
            self.stats.overflow += 1;
            tracing::debug!("friend transmit queue full, dropping");
            return;
        }
        self.out.push_back(o);
    }

    fn push_event(&mut self, e: FriendEvent) {
        if self.events.len() >= MAX_QUEUED {
            self.stats.overflow += 1;
            tracing::debug!("friend event queue full, dropping");
            return;
        }
        self.events.push_back(e);
    }

    fn push_packet(&mut self, p: MessengerPacket<'_>) {
        match p.to_vec() {
            Ok(v) => self.push_out(Outgoing::Lossless(v)),
            // Only values we built ourselves arrive here, all within the
            // limits `new`/setters enforce; log rather than panic.
            Err(e) => tracing::warn!(error = %e, "friend: unencodable packet"),
        }
    }

    fn send_alive(&mut self, now: Instant) {
        self.push_packet(MessengerPacket::Alive);
        self.stats.alive_tx += 1;
        self.next_alive_tx = Some(now + self.cfg.alive_interval);
    }

    fn send_relays(&mut self, now: Instant) {
        self.next_share = Some(now + self.cfg.share_relays_interval);
        if self.cfg.relays.is_empty() {
            return;
        }
        let n = self.cfg.relays.len().min(MAX_SHARED_RELAYS);
        let list = RelayList::new(&self.cfg.relays[..n]);
        self.push_packet(MessengerPacket::ShareRelays(list));
        self.stats.share_relays_tx += 1;
    }

    /// The session became established (§4.5): friend_connection is up; send
    /// ONLINE, ALIVE and our relays; start the liveness timer (§7.3, §7.4).
    pub fn handle_established(&mut self, now: Instant) {
        if self.state != State::Waiting {
            return;
        }
        self.state = State::Connected;
        self.last_alive_rx = Some(now);
        self.push_packet(MessengerPacket::Online);
        self.send_alive(now);
        self.send_relays(now);
    }

    /// The session ended (KILL received, closed, or lost). Terminal.
    pub fn handle_closed(&mut self, _now: Instant) {
        if self.state == State::Online {
            self.push_event(FriendEvent::Offline(OfflineReason::ConnectionClosed));
        }
        self.state = State::Dead;
        self.out.clear();
        self.early_relays = None;
        self.next_alive_tx = None;
        self.next_share = None;
    }

    fn go_online(&mut self) {
        self.state = State::Online;
        self.push_event(FriendEvent::Online);
        if let Some(list) = self.early_relays.take() {
            self.push_event(FriendEvent::ShareRelays(list));
        }
        // Reply ONLINE (§7.4), then our profile as c-toxcore does.
        self.push_packet(MessengerPacket::Online);
        if !self.cfg.name.is_empty() {
            let name = self.cfg.name.clone();
            self.push_packet(MessengerPacket::Nickname(&name));
        }
        let sm = self.cfg.status_message.clone();
        self.push_packet(MessengerPacket::StatusMessage(&sm));
        self.push_packet(MessengerPacket::UserStatus(self.cfg.user_status));
        self.push_packet(MessengerPacket::Typing(false));
    }

    /// A lossless packet from the session, in order (id byte first).
    pub fn handle_lossless(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.state, State::Waiting | State::Dead) {
            // Data before ESTABLISHED cannot happen with a correct session;
            // after Dead it is late. Either way: not ours to interpret.
            self.stats.discarded += 1;
            return;
        }
        let pkt = match MessengerPacket::parse(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                tracing::debug!(error = %e, "friend: malformed packet dropped");
                return;
            }
        };
        // friend_connection level (§7.3): handled whatever Messenger thinks.
        match pkt {
            MessengerPacket::Alive => {
                self.stats.alive_rx += 1;
                self.last_alive_rx = Some(now);
                return;
            }
            MessengerPacket::ShareRelays(list) => {
                let list: Vec<PackedNode> = list.iter().copied().collect();
                if self.state == State::Online {
                    self.push_event(FriendEvent::ShareRelays(list));
                } else {
                    // Not online yet: held (bounded: the latest list only).
                    self.early_relays = Some(list);
                }
                return;
            }
            MessengerPacket::FriendRequest { .. } => {
                // Only for connected non-friends; we only talk to friends.
                self.stats.discarded += 1;
                return;
            }
            _ => {}
        }
        // Messenger level (§7.4).
        if self.state != State::Online {
            if pkt == MessengerPacket::Online {
                self.go_online();
            } else {
                self.stats.discarded += 1;
            }
            return;
        }
        let ev = match pkt {
            MessengerPacket::Online => return,
            MessengerPacket::Offline => {
                self.state = State::Connected;
                FriendEvent::Offline(OfflineReason::PeerOffline)
            }
            MessengerPacket::Nickname(t) => FriendEvent::Nickname(t.to_vec()),
            MessengerPacket::StatusMessage(t) => FriendEvent::StatusMessage(t.to_vec()),
            MessengerPacket::UserStatus(s) if s <= 2 => FriendEvent::UserStatus(s),
            MessengerPacket::UserStatus(_) => return,
            MessengerPacket::Typing(t) => FriendEvent::Typing(t),
            MessengerPacket::Message(t) => FriendEvent::Message(t.to_vec()),
            MessengerPacket::Action(t) => FriendEvent::Action(t.to_vec()),
            MessengerPacket::CustomLossless(d) => FriendEvent::CustomLossless(d.to_vec()),
            _ => FriendEvent::Other(data.to_vec()),
        };
        self.push_event(ev);
    }

    /// A lossy packet from the session (id byte first).
    pub fn handle_lossy(&mut self, _now: Instant, data: &[u8]) {
        if self.state != State::Online {
            self.stats.discarded += 1;
            return;
        }
        match data.first() {
            Some(&b) if (id::CUSTOM_LOSSY_FIRST..=id::CUSTOM_LOSSY_LAST).contains(&b) => {
                self.push_event(FriendEvent::CustomLossy(data.to_vec()))
            }
            Some(_) => self.push_event(FriendEvent::Other(data.to_vec())),
            None => self.stats.malformed += 1,
        }
    }

    /// Runs the timers: ALIVE due, SHARE_RELAYS due, the peer's ALIVE
    /// timeout (§7.3). Harmless to call early.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Connected | State::Online) {
            return;
        }
        if let Some(last) = self.last_alive_rx {
            // Strictly `last + timeout < now`, as c-toxcore.
            if last + self.cfg.timeout < now {
                tracing::debug!("friend: no ALIVE for {:?}, closing", self.cfg.timeout);
                let was_online = self.state == State::Online;
                self.state = State::Dead;
                self.close = true;
                self.out.clear();
                self.early_relays = None;
                self.next_alive_tx = None;
                self.next_share = None;
                if was_online {
                    self.push_event(FriendEvent::Offline(OfflineReason::Timeout));
                }
                return;
            }
        }
        if self.next_alive_tx.is_some_and(|t| t <= now) {
            self.send_alive(now);
        }
        if self.next_share.is_some_and(|t| t <= now) {
            self.send_relays(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.state, State::Connected | State::Online) {
            return None;
        }
        // One millisecond past the deadline so that `last + timeout < now`.
        let dead = self
            .last_alive_rx
            .map(|l| l + self.cfg.timeout + Duration::from_millis(1));
        [dead, self.next_alive_tx, self.next_share]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next protocol packet to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<FriendEvent> {
        self.events.pop_front()
    }

    fn online(&self) -> Result<(), FriendError> {
        if self.state == State::Online {
            Ok(())
        } else {
            Err(FriendError::NotOnline)
        }
    }

    fn text(&self, pid: u8, text: &[u8]) -> Result<Vec<u8>, FriendError> {
        self.online()?;
        if text.is_empty() || text.len() > MAX_MESSAGE_LENGTH {
            return Err(FriendError::BadLength(text.len()));
        }
        let mut v = Vec::with_capacity(1 + text.len());
        v.push(pid);
        v.extend_from_slice(text);
        Ok(v)
    }

    /// A MESSAGE packet (§7.4) to send losslessly; the peer must be online.
    /// Its net_crypto packet number is the read-receipt handle.
    pub fn message(&self, text: &[u8]) -> Result<Vec<u8>, FriendError> {
        self.text(id::MESSAGE, text)
    }

    /// An ACTION packet to send losslessly.
    pub fn action(&self, text: &[u8]) -> Result<Vec<u8>, FriendError> {
        self.text(id::ACTION, text)
    }

    /// Checks a custom lossless packet (id 160..=191 first, ≤ 1373 bytes) for
    /// sending; the peer must be online (c-toxcore discards it otherwise).
    pub fn custom_lossless<'a>(&self, data: &'a [u8]) -> Result<&'a [u8], FriendError> {
        self.custom(data, id::CUSTOM_LOSSLESS_FIRST..=id::CUSTOM_LOSSLESS_LAST)
    }

    /// Checks a custom lossy packet (id 200..=254 first, ≤ 1373 bytes).
    pub fn custom_lossy<'a>(&self, data: &'a [u8]) -> Result<&'a [u8], FriendError> {
        self.custom(data, id::CUSTOM_LOSSY_FIRST..=id::CUSTOM_LOSSY_LAST)
    }

    fn custom<'a>(
        &self,
        data: &'a [u8],
        ids: std::ops::RangeInclusive<u8>,
    ) -> Result<&'a [u8], FriendError> {
        self.online()?;
        let &first = data.first().ok_or(FriendError::BadLength(0))?;
        if !ids.contains(&first) {
            return Err(FriendError::BadId(first));
        }
        if data.len() > MAX_DATA_SIZE {
            return Err(FriendError::BadLength(data.len()));
        }
        Ok(data)
    }

    /// Sets our nickname (≤ 128 bytes); queued for the peer if online.
    pub fn set_name(&mut self, name: &[u8]) -> Result<(), FriendError> {
        if name.len() > MAX_NAME_LENGTH {
            return Err(FriendError::BadLength(name.len()));
        }
        self.cfg.name = name.to_vec();
        if self.state == State::Online {
            self.push_packet(MessengerPacket::Nickname(name));
        }
        Ok(())
    }

    /// Sets our status message (≤ 1007 bytes); queued if online.
    pub fn set_status_message(&mut self, text: &[u8]) -> Result<(), FriendError> {
        if text.len() > MAX_STATUSMESSAGE_LENGTH {
            return Err(FriendError::BadLength(text.len()));
        }
        self.cfg.status_message = text.to_vec();
        if self.state == State::Online {
            self.push_packet(MessengerPacket::StatusMessage(text));
        }
        Ok(())
    }

    /// Sets our user status (0 none, 1 away, 2 busy); queued if online.
    pub fn set_user_status(&mut self, status: u8) -> Result<(), FriendError> {
        if status > 2 {
            return Err(FriendError::BadId(status));
        }
        self.cfg.user_status = status;
        if self.state == State::Online {
            self.push_packet(MessengerPacket::UserStatus(status));
        }
        Ok(())
    }

    /// Tells the peer whether we are typing.
    pub fn set_typing(&mut self, typing: bool) -> Result<(), FriendError> {
        self.online()?;
        self.push_packet(MessengerPacket::Typing(typing));
        Ok(())
    }

    /// Replaces our relays; if the connection is up they are shared at once
    /// (and then every 120 s).
    pub fn set_relays(&mut self, now: Instant, relays: Vec<PackedNode>) {
        self.cfg.relays = relays;
        if matches!(self.state, State::Connected | State::Online) {
            self.send_relays(now);
        }
    }
}

#[cfg(test)]
mod tests;
