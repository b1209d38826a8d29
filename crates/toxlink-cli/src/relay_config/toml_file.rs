//! toxlink's TOML config of `toxlink relay` ([`TomlConfig`]) and its
//! `[limits]` over the server defaults ([`Limits`]).

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use toxlink_proto::relay_server::ServerConfig;
use toxlink_proto::wire::relay::MAX_FRAME_SIZE;

use super::{at, ConfigError, MAX_TIMER_SECS};

/// The TOML config of `toxlink relay`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TomlConfig {
    /// Keys file path.
    pub keys_file: Option<PathBuf>,
    /// Ports.
    pub ports: Option<Vec<u16>>,
    /// Bind addresses.
    pub bind: Option<Vec<IpAddr>>,
    /// Listen on IPv6 too (default true).
    pub enable_ipv6: Option<bool>,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// Answer STUN on UDP (default true: on `stun_listen`, else on the
    /// TCP listen addresses).
    pub stun: Option<bool>,
    /// UDP addresses to answer STUN on.
    pub stun_listen: Option<Vec<SocketAddr>>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// `[limits]` of the TOML config.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most connections.
    pub max_clients: Option<usize>,
    /// Most unconfirmed connections.
    pub max_unconfirmed: Option<usize>,
    /// Handshake + first frame deadline, seconds.
    pub handshake_timeout_secs: Option<u64>,
    /// Keep-alive interval, seconds.
    pub ping_interval_secs: Option<u64>,
    /// Keep-alive timeout, seconds.
    pub ping_timeout_secs: Option<u64>,
    /// Queued data bytes per client.
    pub queue_bytes: Option<usize>,
    /// Queued data bytes overall.
    pub total_queue_bytes: Option<usize>,
    /// Connections per address (IPv6: per /64).
    pub max_conns_per_ip: Option<usize>,
    /// Unconfirmed connections per address (IPv6: per /64).
    pub max_unconfirmed_per_ip: Option<usize>,
    /// A receiver whose queue stays full without progress this long is
    /// closed, seconds.
    pub slow_consumer_timeout_secs: Option<u64>,
    /// OOB bytes one connection may send per second.
    pub oob_bytes_per_sec: Option<usize>,
    /// SO_SNDBUF of each client socket (0: the kernel's autotuning).
    pub socket_send_buffer: Option<usize>,
    /// SO_SNDBUF a client socket starts with, until the client has shown
    /// that it reads (0: start at `socket_send_buffer`).
    pub socket_send_buffer_initial: Option<usize>,
}

impl Limits {
    /// The server limits: the defaults overridden by the given values, each
    /// checked (counts at least 1, timers 1..=[`MAX_TIMER_SECS`] seconds,
    /// queues at least one frame and the total at least one client's, the
    /// unconfirmed connections per address at most the connections per
    /// address, the OOB rate at least one frame a second).
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::default();
        let bad = |k: &str, why: String| ConfigError::Invalid(format!("[limits] {k}: {why}"));
        let count = |k: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(bad(k, "must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let secs = |k: &str, v: Option<u64>, default: Duration| match v {
            Some(s) if (1..=MAX_TIMER_SECS).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(bad(
                k,
                format!("{s} is out of range (1..={MAX_TIMER_SECS} seconds)"),
            )),
            None => Ok(default),
        };
        let queue_bytes = match self.queue_bytes {
            Some(q) if q < MAX_FRAME_SIZE => {
                return Err(bad(
                    "queue_bytes",
                    format!("{q} is less than one frame ({MAX_FRAME_SIZE} bytes)"),
                ))
            }
            q => q.unwrap_or(d.queue_bytes),
        };
        let total_queue_bytes = match self.total_queue_bytes {
            Some(t) if t < queue_bytes => {
                return Err(bad(
                    "total_queue_bytes",
                    format!("{t} is less than queue_bytes ({queue_bytes})"),
                ))
            }
            t => t.unwrap_or(d.total_queue_bytes.max(queue_bytes)),
        };
        let max_conns_per_ip = count(
            "max_conns_per_ip",
            self.max_conns_per_ip,
            d.max_conns_per_ip,
        )?;
        let max_unconfirmed_per_ip = match self.max_unconfirmed_per_ip {
            Some(u) if u > max_conns_per_ip => {
                return Err(bad(
                    "max_unconfirmed_per_ip",
                    format!("{u} is more than max_conns_per_ip ({max_conns_per_ip})"),
                ))
            }
            u => count(
                "max_unconfirmed_per_ip",
                u,
                d.max_unconfirmed_per_ip.min(max_conns_per_ip),
            )?,
        };
        let oob_bytes_per_sec = match self.oob_bytes_per_sec {
            Some(r) if r < MAX_FRAME_SIZE => {
                return Err(bad(
                    "oob_bytes_per_sec",
                    format!("{r} is less than one frame ({MAX_FRAME_SIZE} bytes)"),
                ))
            }
            r => r.unwrap_or(d.oob_bytes_per_sec),
        };
        let socket_send_buffer = self.socket_send_buffer.unwrap_or(d.socket_send_buffer);
        let socket_send_buffer_initial = match self.socket_send_buffer_initial {
            Some(i) if socket_send_buffer == 0 && i > 0 => {
                return Err(bad(
                    "socket_send_buffer_initial",
                    "needs a socket_send_buffer to grow to (kernel autotuning cannot be restored once a size is set)".into(),
                ))
            }
            Some(i) if socket_send_buffer > 0 && i > socket_send_buffer => {
                return Err(bad(
                    "socket_send_buffer_initial",
                    format!("{i} is more than socket_send_buffer ({socket_send_buffer})"),
                ))
            }
            i => i.unwrap_or(if socket_send_buffer == 0 {
                0
            } else {
                d.socket_send_buffer_initial.min(socket_send_buffer)
            }),
        };
        Ok(ServerConfig {
            max_clients: count("max_clients", self.max_clients, d.max_clients)?,
            max_unconfirmed: count("max_unconfirmed", self.max_unconfirmed, d.max_unconfirmed)?,
            handshake_timeout: secs(
                "handshake_timeout_secs",
                self.handshake_timeout_secs,
                d.handshake_timeout,
            )?,
            ping_interval: secs(
                "ping_interval_secs",
                self.ping_interval_secs,
                d.ping_interval,
            )?,
            ping_timeout: secs("ping_timeout_secs", self.ping_timeout_secs, d.ping_timeout)?,
            queue_bytes,
            total_queue_bytes,
            priority_queue_bytes: d.priority_queue_bytes,
            max_conns_per_ip,
            max_unconfirmed_per_ip,
            slow_consumer_timeout: secs(
                "slow_consumer_timeout_secs",
                self.slow_consumer_timeout_secs,
                d.slow_consumer_timeout,
            )?,
            oob_bytes_per_sec,
            socket_send_buffer,
            socket_send_buffer_initial,
        })
    }
}

/// Parses the TOML config (one-line errors with the line number).
pub fn parse_toml(text: &str) -> Result<TomlConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let msg = e
            .message()
            .lines()
            .next()
            .unwrap_or("parse error")
            .to_string();
        match e.span() {
            Some(span) => at(
                1 + text
                    .get(..span.start)
                    .map_or(0, |t| t.matches('\n').count()),
                msg,
            ),
            None => ConfigError::Invalid(msg),
        }
    })
}
