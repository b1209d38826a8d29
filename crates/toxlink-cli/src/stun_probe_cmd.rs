//! `toxlink stun-probe`: asks STUN servers (a `toxlink relay`, coturn, any
//! RFC 5389/8489 server) for this host's reflexive UDP address, with the
//! same sans-IO client a node uses ([`toxlink_proto::stun::StunClient`]),
//! from one UDP socket. A diagnostic for operators and the lab tests.
//!
//! Output: one `server ADDR mapped ADDR` (or `server ADDR no answer`) line
//! per server, one `reflexive ADDR` line per distinct address, and
//! `mapping varies` when two servers saw different mappings (a NAT that
//! maps per destination); with `--json`, one JSON object instead. Fails
//! (exit 1) when no server answered.

use clap::Args;
use rand_core::OsRng;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use toxlink::relay::stun::probe;
use toxlink_proto::stun::{StunConfig, MAX_SERVERS};

/// Flags of `toxlink stun-probe`.
#[derive(Debug, Args)]
pub struct StunProbeArgs {
    /// STUN server, `IP:PORT` (repeatable, at most 8, all of one address
    /// family).
    #[arg(long = "server", value_name = "ADDR", required = true)]
    pub servers: Vec<SocketAddr>,
    /// Local address to send from (default: any address of the servers'
    /// family, port 0).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Give up after this many seconds (each server gets up to about 7 s
    /// of retransmissions).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `toxlink stun-probe`.
#[derive(Debug, thiserror::Error)]
pub enum StunProbeError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Usage(String),
    /// The socket could not be bound.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// Nobody answered.
    #[error("no STUN server answered")]
    NoAnswer,
}

/// Runs the probe and prints what it learnt.
pub async fn run(args: StunProbeArgs) -> Result<(), StunProbeError> {
    if args.servers.len() > MAX_SERVERS {
        return Err(StunProbeError::Usage(format!(
            "at most {MAX_SERVERS} servers"
        )));
    }
    let v4 = args.servers.iter().all(SocketAddr::is_ipv4);
    let v6 = args.servers.iter().all(SocketAddr::is_ipv6);
    if !v4 && !v6 {
        return Err(StunProbeError::Usage(
            "servers of both IPv4 and IPv6: probe each family on its own".into(),
        ));
    }
    let bind = args.bind.unwrap_or(if v4 {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    });
    if bind.is_ipv4() != v4 {
        return Err(StunProbeError::Usage(format!(
            "--bind {bind} is not of the servers' address family"
        )));
    }
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| StunProbeError::Bind(bind, e))?;
    let local = socket.local_addr().unwrap_or(bind);
    let rep = probe(
        &socket,
        args.servers.clone(),
        StunConfig::default(),
        Duration::from_secs(args.timeout.max(1)),
        &mut OsRng,
    )
    .await;
    let text = if args.json {
        let servers: Vec<serde_json::Value> = rep
            .mappings
            .iter()
            .map(|(s, m)| {
                serde_json::json!({
                    "server": s.to_string(),
                    "mapped": m.map(|m| m.to_string()),
                })
            })
            .collect();
        let k = rep.counters;
        let v = serde_json::json!({
            "local": local.to_string(),
            "servers": servers,
            "reflexive": rep.reflexive.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mapping_varies": rep.mapping_varies,
            "requests_sent": k.requests_sent,
            "responses": k.responses,
            "timeouts": k.timeouts,
            "error_responses": k.error_responses,
            "refused": k.malformed + k.rejected,
        });
        format!("{v}\n")
    } else {
        let mut t = String::new();
        for (s, m) in &rep.mappings {
            match m {
                Some(m) => t.push_str(&format!("server {s} mapped {m}\n")),
                None => t.push_str(&format!("server {s} no answer\n")),
            }
        }
        for r in &rep.reflexive {
            t.push_str(&format!("reflexive {r}\n"));
        }
        if rep.mapping_varies {
            t.push_str("mapping varies\n");
        }
        t
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if rep.reflexive.is_empty() {
        return Err(StunProbeError::NoAnswer);
    }
    Ok(())
}
