//! Limits of a relay server, why it closes connections and drops packets,
//! and its counters.

use std::time::Duration;

/// Limits and timers of a relay server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections (any state) at once; further accepts are closed.
    pub max_clients: usize,
    /// Most connections that have not yet sent their first valid frame; a new
    /// one beyond this evicts the oldest (as c-toxcore's 256-entry rings do).
    pub max_unconfirmed: usize,
    /// A connection must complete the handshake *and* send its first frame
    /// within this time of being accepted (c-toxcore has no such timer).
    pub handshake_timeout: Duration,
    /// Interval of the server's keep-alive PING (c-toxcore: 30 s).
    pub ping_interval: Duration,
    /// No matching PONG within this time of a PING closes the link (10 s).
    pub ping_timeout: Duration,
    /// Bound on queued DATA/OOB bytes towards one client; beyond it forwarded
    /// packets to that client are dropped and counted.
    pub queue_bytes: usize,
    /// Bound on queued DATA/OOB bytes over all clients.
    pub total_queue_bytes: usize,
    /// Bound on queued priority bytes towards one client; beyond it the
    /// client (which does not read) is closed. Control frames are never
    /// dropped.
    pub priority_queue_bytes: usize,
    /// Most connections (any state) from one address (IPv6: one /64); further
    /// accepts are closed with [`CloseReason::TooManyFromIp`].
    pub max_conns_per_ip: usize,
    /// Most unconfirmed connections from one address (IPv6: one /64);
    /// further accepts are closed with [`CloseReason::TooManyFromIp`].
    pub max_unconfirmed_per_ip: usize,
    /// A client whose queued data waits this long without any of it being
    /// drained (its socket takes nothing) is closed
    /// ([`CloseReason::SlowConsumer`]).
    pub slow_consumer_timeout: Duration,
    /// OOB bytes one connection may send per second (and at once); past it
    /// its OOB is dropped ([`ForwardDrop::OobRateLimited`]).
    pub oob_bytes_per_sec: usize,
    /// For the runtime: the kernel send buffer (SO_SNDBUF) of each accepted
    /// socket, 0 to leave it to the kernel's autotuning. Without a cap a
    /// client that never reads can park up to `tcp_wmem`'s maximum (4 MiB by
    /// default on Linux, reached at once on loopback) in the kernel, outside
    /// every bound above, and the slow-consumer deadline only starts once
    /// that is full. Linux doubles the value given.
    pub socket_send_buffer: usize,
    /// For the runtime: the send buffer a connection starts with, raised to
    /// [`socket_send_buffer`](Self::socket_send_buffer) once the client has
    /// taken [`SEND_BUFFER_PROOF`] bytes, which no kernel buffers hold: it
    /// reads. A client that never reads parks this much in our kernel, not
    /// the full buffer, and every byte it does park cost the relay a
    /// decryption and an encryption (issue #14 item 8: 2,000 such receivers
    /// took 563 MB of DATA to fill with 128 KiB, 233 MB with 32 KiB). 0:
    /// start at the full size.
    pub socket_send_buffer_initial: usize,
}

/// Bytes a client must have taken before its send buffer grows from
/// [`ServerConfig::socket_send_buffer_initial`] to
/// [`ServerConfig::socket_send_buffer`]: more than the largest receive
/// buffer a client can ask its kernel for without reading (`rmem_max`,
/// 208 KiB by default, doubled) plus our initial buffer, so taking it
/// proves the client reads.
pub const SEND_BUFFER_PROOF: u64 = 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: 100_000,
            max_unconfirmed: 1024,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            queue_bytes: 256 * 1024,
            total_queue_bytes: 512 * 1024 * 1024,
            priority_queue_bytes: 64 * 1024,
            max_conns_per_ip: 32,
            max_unconfirmed_per_ip: 8,
            slow_consumer_timeout: Duration::from_secs(3),
            oob_bytes_per_sec: 128 * 1024,
            socket_send_buffer: 128 * 1024,
            socket_send_buffer_initial: 32 * 1024,
        }
    }
}

/// Why the server closed (or lost) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The runtime reported the TCP connection closed.
    PeerClosed,
    /// `max_clients` reached when it was accepted.
    TooManyClients,
    /// Evicted as the oldest unconfirmed connection.
    Evicted,
    /// Hello not for this relay or not decryptable (no reply is sent).
    BadHandshake,
    /// Handshake or first frame not done within `handshake_timeout`.
    HandshakeTimeout,
    /// A frame with `L > 2048`.
    Oversized,
    /// A frame failed authentication.
    BadTag,
    /// A frame whose plaintext does not parse (bad length, reserved id).
    Malformed,
    /// A well-formed packet that the protocol forbids here (wrong direction,
    /// unallocated slot, PONG 0).
    ProtocolViolation,
    /// No PONG within `ping_timeout`.
    PingTimeout,
    /// It does not read: its priority queue overflowed, or its queued data
    /// made no progress for `slow_consumer_timeout` (or, while the global
    /// budget is full, for [`PRESSURE_STALL`](super::PRESSURE_STALL)).
    SlowConsumer,
    /// A newer link with the same client key was confirmed.
    Replaced,
    /// Its address (IPv6: /64) already had `max_conns_per_ip` connections,
    /// or `max_unconfirmed_per_ip` unconfirmed ones, when it was accepted.
    TooManyFromIp,
}

/// Why a forwarded packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardDrop {
    /// DATA on a slot that is allocated but not connected.
    NotConnected,
    /// Receiver's data queue is over `queue_bytes`.
    QueueFull,
    /// All queues together are over `total_queue_bytes`.
    TotalQueueFull,
    /// OOB for a key with no confirmed link here.
    OobNoDestination,
    /// OOB past its sender's `oob_bytes_per_sec`.
    OobRateLimited,
    /// ONION_REQUEST: no onion service attached.
    OnionIgnored,
    /// FORWARD_REQUEST: no forwarding service attached.
    ForwardIgnored,
    /// Dropped by the fault injector.
    Fault,
}

/// Statistics of a server. Gauges are current values, the rest totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Gauge: connections known (any state).
    pub clients: u64,
    /// Gauge: confirmed connections.
    pub confirmed: u64,
    /// Gauge: connected route pairs.
    pub routes: u64,
    /// Gauge: queued output bytes over all clients (data).
    pub queued_bytes: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes answered.
    pub handshakes: u64,
    /// DATA packets forwarded.
    pub data_packets: u64,
    /// DATA payload bytes forwarded.
    pub data_bytes: u64,
    /// OOB packets delivered.
    pub oob_packets: u64,
    /// OOB payload bytes delivered.
    pub oob_bytes: u64,
    /// PINGs answered.
    pub pongs_sent: u64,
    /// Keep-alive PINGs the server sent (§2.5).
    pub pings_sent: u64,
    /// PONGs that matched the server's outstanding PING.
    pub pongs_received: u64,
    /// Drops: not connected.
    pub drop_not_connected: u64,
    /// Drops: receiver queue full.
    pub drop_queue_full: u64,
    /// Drops: global queue bound.
    pub drop_total_queue_full: u64,
    /// Drops: OOB without destination.
    pub drop_oob_no_destination: u64,
    /// Drops: OOB over its sender's rate.
    pub drop_oob_rate_limited: u64,
    /// Stalled receivers closed early because the global queue budget was
    /// full (also counted in `closes.slow_consumer`).
    pub slow_consumer_evictions: u64,
    /// Senders not read for a while because a receiver of theirs was full
    /// (push-back, [`Server::read_paused`](super::Server::read_paused)).
    pub read_pauses: u64,
    /// Ignored onion requests.
    pub drop_onion: u64,
    /// Ignored forward requests.
    pub drop_forward: u64,
    /// Drops by the fault injector.
    pub drop_fault: u64,
    /// Packets corrupted by the fault injector.
    pub fault_corrupted: u64,
    /// Packets delayed by the fault injector.
    pub fault_delayed: u64,
    /// Closes by reason (indexed as listed in [`CloseReason`]).
    pub closes: CloseCounters,
}

/// Closes per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseCounters {
    /// [`CloseReason::PeerClosed`]
    pub peer_closed: u64,
    /// [`CloseReason::TooManyClients`]
    pub too_many_clients: u64,
    /// [`CloseReason::Evicted`]
    pub evicted: u64,
    /// [`CloseReason::BadHandshake`]
    pub bad_handshake: u64,
    /// [`CloseReason::HandshakeTimeout`]
    pub handshake_timeout: u64,
    /// [`CloseReason::Oversized`]
    pub oversized: u64,
    /// [`CloseReason::BadTag`]
    pub bad_tag: u64,
    /// [`CloseReason::Malformed`]
    pub malformed: u64,
    /// [`CloseReason::ProtocolViolation`]
    pub protocol_violation: u64,
    /// [`CloseReason::PingTimeout`]
    pub ping_timeout: u64,
    /// [`CloseReason::SlowConsumer`]
    pub slow_consumer: u64,
    /// [`CloseReason::Replaced`]
    pub replaced: u64,
    /// [`CloseReason::TooManyFromIp`]
    pub too_many_from_ip: u64,
}

impl CloseCounters {
    pub(super) fn bump(&mut self, r: CloseReason) {
        let c = match r {
            CloseReason::PeerClosed => &mut self.peer_closed,
            CloseReason::TooManyClients => &mut self.too_many_clients,
            CloseReason::Evicted => &mut self.evicted,
            CloseReason::BadHandshake => &mut self.bad_handshake,
            CloseReason::HandshakeTimeout => &mut self.handshake_timeout,
            CloseReason::Oversized => &mut self.oversized,
            CloseReason::BadTag => &mut self.bad_tag,
            CloseReason::Malformed => &mut self.malformed,
            CloseReason::ProtocolViolation => &mut self.protocol_violation,
            CloseReason::PingTimeout => &mut self.ping_timeout,
            CloseReason::SlowConsumer => &mut self.slow_consumer,
            CloseReason::Replaced => &mut self.replaced,
            CloseReason::TooManyFromIp => &mut self.too_many_from_ip,
        };
        *c += 1;
    }
}

impl Counters {
    pub(super) fn drop(&mut self, r: ForwardDrop) {
        let c = match r {
            ForwardDrop::NotConnected => &mut self.drop_not_connected,
            ForwardDrop::QueueFull => &mut self.drop_queue_full,
            ForwardDrop::TotalQueueFull => &mut self.drop_total_queue_full,
            ForwardDrop::OobNoDestination => &mut self.drop_oob_no_destination,
            ForwardDrop::OobRateLimited => &mut self.drop_oob_rate_limited,
            ForwardDrop::OnionIgnored => &mut self.drop_onion,
            ForwardDrop::ForwardIgnored => &mut self.drop_forward,
            ForwardDrop::Fault => &mut self.drop_fault,
        };
        *c += 1;
    }
}
