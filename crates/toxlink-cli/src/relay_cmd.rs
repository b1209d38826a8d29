//! `toxlink relay`: a Tox TCP relay server people can run.
//!
//! * Keys file in tox-bootstrapd's format: 64 raw bytes `pk ‖ sk`
//!   (docs/PROTOCOL.md §2.1), created (mode 0600, atomically) if missing, refused
//!   if group or others may access it ([`toxlink_cli::keys_file`]).
//! * Config: our TOML or a tox-bootstrapd config, read and checked by
//!   [`toxlink_cli::relay_config`] (the code the `relay_config` fuzz target
//!   runs): of a bootstrapd config `keys_file_path`, `tcp_relay_ports`,
//!   `enable_ipv6`, `enable_tcp_relay` and `motd` are used (the MOTD belongs
//!   to the DHT bootstrap-info service, which a bare relay does not run: it
//!   is logged and otherwise unused). Command-line flags override the file.
//! * Answers STUN Binding requests on UDP (issue #15), by default on the
//!   same addresses and port numbers as the TCP listeners; `--stun ADDR`
//!   (or `stun_listen` in the TOML) chooses others, `--no-stun` (`stun =
//!   false`) turns it off. If the default STUN addresses cannot be bound
//!   (a UDP port taken), the relay warns and runs without STUN; addresses
//!   given explicitly must bind.
//! * Prints its public key and listening addresses at start; logs with
//!   `tracing` (RUST_LOG); prints counters on SIGUSR1 and at exit, and serves
//!   them as text on an optional local metrics endpoint; shuts down cleanly on
//!   SIGINT/SIGTERM.
//!
//! There is deliberately no way to turn on fault injection from here.

use clap::Args;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use toxlink::relay::{RelayServer, RelayServerConfig, RelayServerHandle, StunServerCounters};
use toxlink_cli::keys_file::{read_or_create_keys, KeysError};
use toxlink_cli::relay_config::{parse_relay_config, read_config_file, ConfigError};
use toxlink_proto::relay_server::{Counters, ServerConfig};

/// Default relay ports of tox-bootstrapd's sample config.
const DEFAULT_PORTS: [u16; 3] = [443, 3389, 33445];
/// Default keys file.
const DEFAULT_KEYS_FILE: &str = "toxlink-relay.keys";

/// Flags of `toxlink relay`.
#[derive(Debug, Args, Default)]
pub struct RelayArgs {
    /// Keys file (64 bytes pk‖sk, tox-bootstrapd format, mode 0600); created
    /// if missing.
    #[arg(long, value_name = "PATH")]
    pub keys_file: Option<PathBuf>,
    /// TCP port to listen on (repeatable). Default: 443, 3389, 33445.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Address to bind (repeatable). Default: `0.0.0.0` and `[::]`.
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Vec<IpAddr>,
    /// Config file: toxlink TOML or a tox-bootstrapd config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve counters as text on this (local) address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Do not listen on IPv6.
    #[arg(long)]
    pub no_ipv6: bool,
    /// UDP address to answer STUN on (repeatable). Default: the TCP listen
    /// addresses (same IPs, same port numbers).
    #[arg(long = "stun", value_name = "ADDR", conflicts_with = "no_stun")]
    pub stun: Vec<SocketAddr>,
    /// Do not answer STUN.
    #[arg(long)]
    pub no_stun: bool,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Errors of `toxlink relay`.
#[derive(Debug, thiserror::Error)]
pub enum RelayCmdError {
    /// I/O on a file or socket.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A config file that does not parse.
    #[error("config {0}: {1}")]
    Config(String, String),
    /// An unusable keys file.
    #[error(transparent)]
    Keys(#[from] KeysError),
}

/// The effective settings after merging file and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys file.
    pub keys_file: PathBuf,
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// STUN addresses (UDP; empty: no STUN).
    pub stun: Vec<SocketAddr>,
    /// The STUN addresses are the defaults (the TCP listen addresses): a
    /// failure to bind them is not fatal.
    pub default_stun: bool,
    /// Server limits.
    pub server: ServerConfig,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// MOTD read from a bootstrapd config (unused by a bare relay).
    pub motd: Option<String>,
    /// The bind addresses are the defaults (IPv6 may be dropped if the host
    /// has none).
    pub default_bind: bool,
}

/// Merges a config file (if any) and the flags.
pub fn settings(args: &RelayArgs) -> Result<Settings, RelayCmdError> {
    let mut keys_file = None;
    let mut ports = None;
    let mut bind = None;
    let mut ipv6 = true;
    let mut metrics = None;
    let mut motd = None;
    let mut stun_on = true;
    let mut stun_listen = None;
    let mut server = ServerConfig::default();
    if let Some(path) = &args.config {
        let name = path.display().to_string();
        let cfg_err = |e: ConfigError| RelayCmdError::Config(name.clone(), e.to_string());
        let text = read_config_file(path).map_err(cfg_err)?;
        let f = parse_relay_config(&text).map_err(cfg_err)?;
        if f.enable_tcp_relay == Some(false) {
            tracing::warn!("{name}: enable_tcp_relay = false, but this program only is a TCP relay; relaying anyway");
        }
        keys_file = f.keys_file;
        ports = f.ports;
        bind = f.bind;
        ipv6 = f.enable_ipv6.unwrap_or(true);
        metrics = f.metrics;
        motd = f.motd;
        stun_on = f.stun.unwrap_or(true);
        stun_listen = f.stun_listen;
        server = f.server;
    }
    if let Some(k) = &args.keys_file {
        keys_file = Some(k.clone());
    }
    if !args.ports.is_empty() {
        ports = Some(args.ports.clone());
    }
    if !args.bind.is_empty() {
        bind = Some(args.bind.clone());
    }
    if args.no_ipv6 {
        ipv6 = false;
    }
    if args.metrics.is_some() {
        metrics = args.metrics;
    }
    if args.no_stun {
        stun_on = false;
        stun_listen = None;
    }
    if !args.stun.is_empty() {
        stun_on = true;
        stun_listen = Some(args.stun.clone());
    }
    let ports = ports.unwrap_or_else(|| DEFAULT_PORTS.to_vec());
    let default_bind = bind.is_none();
    let bind = bind.unwrap_or_else(|| {
        let mut v = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        if ipv6 {
            v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        v
    });
    let listen: Vec<SocketAddr> = bind
        .iter()
        .filter(|ip| ipv6 || ip.is_ipv4())
        .flat_map(|ip| ports.iter().map(move |p| SocketAddr::new(*ip, *p)))
        .collect();
    let default_stun = stun_on && stun_listen.is_none();
    let stun = match (stun_on, stun_listen) {
        (false, _) => Vec::new(),
        (true, Some(v)) => v.into_iter().filter(|a| ipv6 || a.is_ipv4()).collect(),
        (true, None) => listen.clone(),
    };
    Ok(Settings {
        keys_file: keys_file.unwrap_or_else(|| DEFAULT_KEYS_FILE.into()),
        listen,
        stun,
        default_stun,
        server,
        metrics,
        motd,
        default_bind,
    })
}

/// Counters of the relay and of its STUN service as `name value` lines
/// (Prometheus text format).
pub fn format_counters(c: &Counters, stun: &StunServerCounters) -> String {
    let d = &c.closes;
    let rows = [
        ("toxlink_relay_clients", c.clients),
        ("toxlink_relay_confirmed_clients", c.confirmed),
        ("toxlink_relay_routes", c.routes),
        ("toxlink_relay_queued_bytes", c.queued_bytes),
        ("toxlink_relay_accepted_total", c.accepted),
        ("toxlink_relay_handshakes_total", c.handshakes),
        ("toxlink_relay_data_packets_total", c.data_packets),
        ("toxlink_relay_data_bytes_total", c.data_bytes),
        ("toxlink_relay_oob_packets_total", c.oob_packets),
        ("toxlink_relay_oob_bytes_total", c.oob_bytes),
        ("toxlink_relay_pongs_total", c.pongs_sent),
        ("toxlink_relay_pings_sent_total", c.pings_sent),
        ("toxlink_relay_pongs_received_total", c.pongs_received),
        (
            "toxlink_relay_drops_not_connected_total",
            c.drop_not_connected,
        ),
        ("toxlink_relay_drops_queue_full_total", c.drop_queue_full),
        (
            "toxlink_relay_drops_total_queue_full_total",
            c.drop_total_queue_full,
        ),
        (
            "toxlink_relay_drops_oob_no_destination_total",
            c.drop_oob_no_destination,
        ),
        (
            "toxlink_relay_drops_oob_rate_limited_total",
            c.drop_oob_rate_limited,
        ),
        (
            "toxlink_relay_slow_consumer_evictions_total",
            c.slow_consumer_evictions,
        ),
        ("toxlink_relay_read_pauses_total", c.read_pauses),
        ("toxlink_relay_drops_onion_total", c.drop_onion),
        ("toxlink_relay_drops_forward_total", c.drop_forward),
        ("toxlink_relay_drops_fault_total", c.drop_fault),
        ("toxlink_relay_fault_corrupted_total", c.fault_corrupted),
        ("toxlink_relay_fault_delayed_total", c.fault_delayed),
        ("toxlink_relay_closes_peer_closed_total", d.peer_closed),
        (
            "toxlink_relay_closes_too_many_clients_total",
            d.too_many_clients,
        ),
        ("toxlink_relay_closes_evicted_total", d.evicted),
        ("toxlink_relay_closes_bad_handshake_total", d.bad_handshake),
        (
            "toxlink_relay_closes_handshake_timeout_total",
            d.handshake_timeout,
        ),
        ("toxlink_relay_closes_oversized_total", d.oversized),
        ("toxlink_relay_closes_bad_tag_total", d.bad_tag),
        ("toxlink_relay_closes_malformed_total", d.malformed),
        (
            "toxlink_relay_closes_protocol_violation_total",
            d.protocol_violation,
        ),
        ("toxlink_relay_closes_ping_timeout_total", d.ping_timeout),
        ("toxlink_relay_closes_slow_consumer_total", d.slow_consumer),
        ("toxlink_relay_closes_replaced_total", d.replaced),
        (
            "toxlink_relay_closes_too_many_from_ip_total",
            d.too_many_from_ip,
        ),
        ("toxlink_relay_stun_requests_total", stun.requests),
        ("toxlink_relay_stun_answered_total", stun.answered),
        ("toxlink_relay_stun_dropped_total", stun.dropped),
        ("toxlink_relay_stun_rate_limited_total", stun.rate_limited),
        ("toxlink_relay_rss_kib", rss_kib()),
    ];
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{k} {v}\n"));
    }
    s
}

/// Resident set size of this process in KiB (0 if unknown).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Most metrics connections served at once; further ones are answered 503
/// (if the socket takes it at once) and closed.
pub const METRICS_MAX_CONNECTIONS: usize = 16;
/// Deadline for reading a metrics request head, and again for writing the
/// answer.
pub const METRICS_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept on the metrics endpoint: out of descriptors
/// (EMFILE/ENFILE) the pending connection stays queued and accept would fail
/// again at once.
pub const METRICS_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest metrics request head read.
const METRICS_MAX_REQUEST: usize = 8192;

/// Serves the counters as text on `addr` (HTTP/1.0, any path), at most
/// [`METRICS_MAX_CONNECTIONS`] connections at a time.
async fn serve_metrics(addr: SocketAddr, relay: std::sync::Arc<RelayServerHandle>) {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint is not on a loopback address");
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot bind the metrics endpoint");
            return;
        }
    };
    println!(
        "metrics on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    let _ = std::io::stdout().flush();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    let mut failing = false;
    // Runs until the task is aborted at shutdown; each turn accepts one
    // connection or sleeps after an error.
    loop {
        let s = match listener.accept().await {
            Ok((s, _)) => {
                failing = false;
                s
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying every {} ms", METRICS_ACCEPT_BACKOFF.as_millis());
                }
                failing = true;
                tokio::time::sleep(METRICS_ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint busy; connection refused");
            let _ = s.try_write(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            answer_metrics(s, &relay).await;
            drop(permit);
        });
    }
}

/// Reads one request head (closing with unread input would reset the
/// connection) and writes the counters, each within [`METRICS_IO_TIMEOUT`].
async fn answer_metrics(mut s: tokio::net::TcpStream, relay: &RelayServerHandle) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read_head = async {
        let mut req = Vec::new();
        let mut buf = [0u8; 512];
        // Bounded: at most METRICS_MAX_REQUEST bytes are read.
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < METRICS_MAX_REQUEST {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => req.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(METRICS_IO_TIMEOUT, read_head).await,
        Ok(true)
    ) {
        return;
    }
    let body = format_counters(&relay.counters(), &relay.stun_counters());
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(METRICS_IO_TIMEOUT, async {
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
}

/// Raises the open-files soft limit to the hard limit (10,000 clients need
/// 10,000 descriptors).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit on a local, fully initialised struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Binds the relay. When the defaults cannot all be bound, falls back: to
/// IPv4 only when the bind addresses are the defaults (the host may have
/// no IPv6), and without STUN when the STUN addresses are the defaults (a
/// UDP port may be taken); explicit addresses must bind. The error
/// reported is the first attempt's.
async fn bind_relay(
    s: &Settings,
    keypair: &toxlink_proto::crypto::KeyPair,
) -> Result<RelayServerHandle, RelayCmdError> {
    let v4 = |v: &[SocketAddr]| -> Vec<SocketAddr> {
        v.iter().copied().filter(SocketAddr::is_ipv4).collect()
    };
    let mut attempts = vec![(s.listen.clone(), s.stun.clone())];
    if s.default_bind && s.listen.iter().any(SocketAddr::is_ipv6) {
        let stun = if s.default_stun {
            v4(&s.stun)
        } else {
            s.stun.clone()
        };
        attempts.push((v4(&s.listen), stun));
    }
    if s.default_stun && !s.stun.is_empty() {
        let without: Vec<_> = attempts
            .iter()
            .map(|(l, _)| (l.clone(), Vec::new()))
            .collect();
        attempts.extend(without);
    }
    let mut first: Option<RelayCmdError> = None;
    for (listen, stun) in attempts {
        if let Some(e) = &first {
            tracing::warn!(error = %e, tcp = ?listen, stun = ?stun, "trying again with fewer addresses");
        }
        let cfg = RelayServerConfig {
            keypair: keypair.clone(),
            listen: listen.clone(),
            stun_listen: stun.clone(),
            server: s.server.clone(),
        };
        match RelayServer::bind(cfg).await {
            Ok(r) => {
                if first.is_some() && stun.is_empty() && !s.stun.is_empty() {
                    tracing::warn!("not answering STUN: its default addresses cannot be bound (--stun to choose others, --no-stun to silence this)");
                }
                return Ok(r);
            }
            Err(e) => {
                let what = if stun.is_empty() {
                    format!("listening on {listen:?}")
                } else {
                    format!("listening on {listen:?} (STUN on udp {stun:?})")
                };
                first.get_or_insert(RelayCmdError::Io(what, e));
            }
        }
    }
    Err(first.unwrap_or_else(|| {
        RelayCmdError::Io(
            "listening".into(),
            std::io::Error::other("no address to listen on"),
        )
    }))
}

/// Runs the relay until SIGINT/SIGTERM.
pub async fn run(args: RelayArgs) -> Result<(), RelayCmdError> {
    use tokio::signal::unix::{signal, SignalKind};
    raise_nofile_limit();
    let s = settings(&args)?;
    // Like tox-bootstrapd, the relay creates its keys file when missing.
    let (keypair, _) = read_or_create_keys(&s.keys_file)?;
    if let Some(m) = &s.motd {
        tracing::info!(motd = %m, "motd read from the bootstrapd config (a bare relay has no DHT bootstrap-info service to show it)");
    }
    let sig = |k| signal(k).map_err(|e| RelayCmdError::Io("signal handler".into(), e));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut usr1 = sig(SignalKind::user_defined1())?;
    let relay = bind_relay(&s, &keypair).await?;
    println!("public key {}", relay.public_key());
    for a in relay.local_addrs() {
        println!("listening on {a}");
    }
    let _ = std::io::stdout().flush();
    if relay.stun_addrs().is_empty() {
        tracing::info!("not answering STUN");
    } else {
        tracing::info!(addrs = ?relay.stun_addrs(), "answering STUN on udp");
    }
    tracing::info!(public_key = %relay.public_key(), addrs = ?relay.local_addrs(), stun = ?relay.stun_addrs(), "relay started");
    let relay = std::sync::Arc::new(relay);
    let metrics = s
        .metrics
        .map(|addr| tokio::spawn(serve_metrics(addr, relay.clone())));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                print!("{}", format_counters(&relay.counters(), &relay.stun_counters()));
                let _ = std::io::stdout().flush();
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(m) = metrics {
        m.abort();
        let _ = m.await;
    }
    print!(
        "{}",
        format_counters(&relay.counters(), &relay.stun_counters())
    );
    let _ = std::io::stdout().flush();
    match std::sync::Arc::try_unwrap(relay) {
        Ok(r) => r.shutdown().await,
        Err(_) => tracing::warn!("relay still referenced at shutdown"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAPD: &str = r#"
// Listening port (UDP).
port = 33445
keys_file_path = "/var/lib/tox-bootstrapd/keys"; /* inline */
pid_file_path = "/var/run/tox-bootstrapd/tox-bootstrapd.pid"
enable_ipv6 = false
enable_ipv4_fallback = true
enable_tcp_relay = true
tcp_relay_ports = [443, 3389, 33445]
enable_motd = true
motd = "tox-bootstrapd // not a comment"
bootstrap_nodes = (
  { // Node 1
    address = "127.0.0.1"
    port = 1
    public_key = "AA"
  }
)
"#;

    #[test]
    fn bootstrapd_file_gives_listen_addresses_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.conf");
        std::fs::write(&p, BOOTSTRAPD).unwrap();
        let mut args = RelayArgs {
            config: Some(p),
            ..RelayArgs::default()
        };
        let s = settings(&args).unwrap();
        assert_eq!(s.keys_file, PathBuf::from("/var/lib/tox-bootstrapd/keys"));
        assert_eq!(s.listen.len(), 3, "IPv4 only: {:?}", s.listen);
        assert!(s.listen.iter().all(SocketAddr::is_ipv4));
        args.ports = vec![7000];
        args.bind = vec!["127.0.0.1".parse().unwrap()];
        let s = settings(&args).unwrap();
        assert_eq!(s.listen, vec!["127.0.0.1:7000".parse().unwrap()]);
    }

    #[test]
    fn toml_config_and_unknown_keys_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "keys_file = \"k\"\nports = [1, 2]\nbind = [\"::1\", \"127.0.0.1\"]\nmetrics = \"127.0.0.1:9\"\n[limits]\nmax_clients = 7\nping_interval_secs = 5\n",
        )
        .unwrap();
        let args = RelayArgs {
            config: Some(p.clone()),
            ..RelayArgs::default()
        };
        let s = settings(&args).unwrap();
        assert_eq!(s.listen.len(), 4);
        assert_eq!(s.server.max_clients, 7);
        assert_eq!(s.server.ping_interval, Duration::from_secs(5));
        assert_eq!(s.metrics, Some("127.0.0.1:9".parse().unwrap()));
        // A fault-injection key (or any unknown key) is an error.
        std::fs::write(&p, "fault_drop = 0.5\n").unwrap();
        let e = settings(&args).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config {}: line 1: unknown field `fault_drop`, expected one of \
                 `keys_file`, `ports`, `bind`, `enable_ipv6`, `metrics`, `stun`, \
                 `stun_listen`, `limits`",
                p.display()
            )
        );
        std::fs::write(&p, "[limits]\ncorrupt = 0.5\n").unwrap();
        assert!(matches!(settings(&args), Err(RelayCmdError::Config(..))));
    }

    #[test]
    fn stun_addresses_default_to_the_tcp_ones_and_flags_override_the_file() {
        let mut args = RelayArgs {
            ports: vec![7000, 7001],
            bind: vec!["127.0.0.1".parse().unwrap()],
            ..RelayArgs::default()
        };
        let s = settings(&args).unwrap();
        assert_eq!(s.stun, s.listen);
        assert!(s.default_stun);
        // The default binds: IPv4 and IPv6, STUN on both.
        let d = settings(&RelayArgs::default()).unwrap();
        assert_eq!(d.stun, d.listen);
        assert_eq!(d.stun.len(), 6);
        args.no_stun = true;
        let s = settings(&args).unwrap();
        assert!(s.stun.is_empty() && !s.default_stun);
        args.no_stun = false;
        args.stun = vec!["127.0.0.1:3478".parse().unwrap()];
        let s = settings(&args).unwrap();
        assert_eq!(s.stun, args.stun);
        assert!(!s.default_stun);
        // From the file, and the flags over it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "stun = false\n").unwrap();
        let mut args = RelayArgs {
            config: Some(p.clone()),
            ..RelayArgs::default()
        };
        assert!(settings(&args).unwrap().stun.is_empty());
        args.stun = vec!["127.0.0.1:9".parse().unwrap()];
        assert_eq!(settings(&args).unwrap().stun, args.stun);
        std::fs::write(
            &p,
            "stun_listen = [\"127.0.0.1:5\", \"[::1]:5\"]\nenable_ipv6 = false\n",
        )
        .unwrap();
        args.stun.clear();
        assert_eq!(
            settings(&args).unwrap().stun,
            vec!["127.0.0.1:5".parse().unwrap()]
        );
        args.no_stun = true;
        assert!(settings(&args).unwrap().stun.is_empty());
    }

    #[test]
    fn counters_are_formatted() {
        let mut c = Counters {
            data_packets: 42,
            pings_sent: 7,
            pongs_received: 6,
            drop_oob_rate_limited: 5,
            slow_consumer_evictions: 4,
            read_pauses: 2,
            ..Counters::default()
        };
        c.closes.too_many_from_ip = 3;
        let stun = StunServerCounters {
            requests: 10,
            answered: 7,
            dropped: 3,
            rate_limited: 1,
        };
        let s = format_counters(&c, &stun);
        for line in [
            "toxlink_relay_data_packets_total 42\n",
            "toxlink_relay_pings_sent_total 7\n",
            "toxlink_relay_pongs_received_total 6\n",
            "toxlink_relay_drops_oob_rate_limited_total 5\n",
            "toxlink_relay_slow_consumer_evictions_total 4\n",
            "toxlink_relay_read_pauses_total 2\n",
            "toxlink_relay_closes_too_many_from_ip_total 3\n",
            "toxlink_relay_stun_requests_total 10\n",
            "toxlink_relay_stun_answered_total 7\n",
            "toxlink_relay_stun_dropped_total 3\n",
            "toxlink_relay_stun_rate_limited_total 1\n",
        ] {
            assert!(s.contains(line), "{line} in {s}");
        }
        assert_eq!(s.lines().count(), 43);
    }
}
