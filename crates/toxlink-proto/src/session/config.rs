//! The configuration, identity and counters of a session.

use super::handshake::CookieKey;
use super::reliable::PACKET_BUFFER_SIZE;
use crate::crypto::KeyPair;
use std::time::Duration;

/// Tunables of a session. Defaults follow c-toxcore where the wire or the
/// peer depends on them.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Re-send interval of cookie requests and handshakes (1 s, §4.5).
    pub handshake_interval: Duration,
    /// Sends of one handshake-phase packet before giving up (8, §4.5).
    pub handshake_tries: u32,
    /// Send buffer capacity in packets (≤ 32768).
    pub send_buffer: u32,
    /// Longest interval between request packets (1 s, §4.9).
    pub request_interval: Duration,
    /// Longest delay before acknowledging received lossless data.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many lossless packets.
    pub ack_every: u32,
    /// Smallest gap between request packets triggered by holes.
    pub min_request_gap: Duration,
    /// Queued outgoing lossy packets.
    pub max_lossy_out: usize,
    /// Queued incoming lossy packets.
    pub max_lossy_in: usize,
    /// Queued informational events.
    pub max_events: usize,
    /// First lossless packet number in both directions. c-toxcore uses 0; both
    /// ends must agree (tests start near `u32::MAX` to exercise wrap).
    pub initial_packet_number: u32,
    /// RTT assumed before any measurement.
    pub initial_rtt: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_interval: Duration::from_secs(1),
            handshake_tries: 8,
            send_buffer: PACKET_BUFFER_SIZE,
            request_interval: Duration::from_secs(1),
            ack_delay: Duration::from_millis(5),
            ack_every: 32,
            min_request_gap: Duration::from_millis(1),
            max_lossy_out: 256,
            max_lossy_in: 1024,
            max_events: 4096,
            initial_packet_number: 0,
            initial_rtt: Duration::from_millis(100),
        }
    }
}

/// Our keys as a node: real (long-term) pair, DHT pair, cookie key (§1, §4.2).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Long-term key pair (the Tox ID key).
    pub real: KeyPair,
    /// DHT key pair (per process).
    pub dht: KeyPair,
    /// The node's cookie key and clock.
    pub cookie_key: CookieKey,
}

/// Counters of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Datagrams written.
    pub packets_sent: u64,
    /// Lossless retransmissions.
    pub retransmissions: u64,
    /// Datagrams handled.
    pub packets_received: u64,
    /// Data packets that failed authentication.
    pub auth_failures: u64,
    /// Duplicate datagrams (same nonce).
    pub duplicate_datagrams: u64,
    /// Lossless packets received twice (same number).
    pub duplicate_lossless: u64,
    /// Other drops.
    pub dropped: u64,
    /// Events or lossy packets dropped because a queue was full.
    pub queue_drops: u64,
    /// Retransmission timeouts.
    pub rtos: u64,
    /// Packet numbers that request packets were walked over (per packet at
    /// most what we transmitted and still hold, plus nothing for the
    /// numbers below our buffer, which are crossed per list byte).
    pub request_numbers_walked: u64,
}
