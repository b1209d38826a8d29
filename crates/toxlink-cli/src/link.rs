//! What `toxlink chat`, `send`, `recv` and `peer` share: the peer flags and
//! TOML config, the keys file, and setting up one friend connection.
//!
//! Both peers know each other's long-term public keys. The connecting side
//! gives `--peer-addr HOST:PORT` and reaches the other side directly over UDP;
//! the other side listens on `--bind`/`--port` and accepts only `--peer`.
//! Nodes run with `NodeConfig::dht_is_real`, so a toxlink peer's DHT key is its
//! long-term key (docs/PROTOCOL.md §1) and `--peer KEY` suffices; `toxlink peer`
//! (a c-toxcore friend) takes the peer's DHT key separately.
//!
//! Relays (`--relay KEY@HOST:PORT`, repeatable) are checked for reachability
//! and handed to the node in [`hand_relays_to_node`]; the node uses them as
//! paths of the connection next to direct UDP. Without `--peer-addr` but with
//! relays, a side both accepts and connects through the relays (the peer must
//! use one of the same relays).
//!
//! Invariants: flags override the config file; every wait on the network is
//! bounded by `--timeout` on the connecting side; every failure is a
//! [`LinkError`] whose text is one line.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toxlink::toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink::toxlink_proto::node::NodeConfig;
use toxlink::{Connection, Friend, FriendConfig, Node};
use toxlink_cli::keys_file::{read_keys, KeysError};

/// Default keys file of the peer commands.
pub const DEFAULT_KEYS_FILE: &str = "toxlink.keys";
/// Default connect timeout, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;

/// Errors of the peer commands (each one line).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A bad flag or config value.
    #[error("{0}")]
    Usage(String),
    /// The config file could not be read or parsed.
    #[error("config {0}: {1}")]
    Config(String, String),
    /// The keys file is missing, corrupt or accessible by others.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// A socket error.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The peer or relay did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The connection ended or the peer misbehaved.
    #[error("{0}")]
    Peer(String),
}

/// A relay as `KEY@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// The relay's public key.
    pub key: PublicKey,
    /// `HOST:PORT` as given (resolved when used).
    pub addr: String,
}

impl std::fmt::Display for RelaySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.key.to_hex(), self.addr)
    }
}

/// Parses `KEY@HOST:PORT`.
pub fn parse_relay(s: &str) -> Result<RelaySpec, String> {
    let bad = |why: &str| format!("relay {s:?}: {why} (expected KEY@HOST:PORT)");
    let (key, addr) = s.split_once('@').ok_or_else(|| bad("no '@'"))?;
    let key = PublicKey::from_hex(key).ok_or_else(|| bad("key is not 64 hex digits"))?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>().map_err(|_| bad("bad port"))?;
    Ok(RelaySpec {
        key,
        addr: addr.to_string(),
    })
}

/// Parses a public key (64 hex digits) or a Tox ID (76 hex digits, whose
/// checksum must hold; the nospam is ignored).
pub fn parse_peer_key(s: &str) -> Result<PublicKey, String> {
    let s = s.trim();
    if s.len() == 76 {
        let id = crate::keygen_cmd::parse_tox_id(s)
            .ok_or_else(|| format!("peer {s:?}: not a valid Tox ID (bad hex or checksum)"))?;
        return Ok(id);
    }
    PublicKey::from_hex(s)
        .ok_or_else(|| format!("peer {s:?}: expected a 64-hex-digit public key or a Tox ID"))
}

/// Peer flags shared by `chat`, `send`, `recv` and `peer`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeerArgs {
    /// TOML config (keys_file, bind, port, peer, peer_addr, peer_dht, relays,
    /// timeout_secs); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Our keys file (create it with `toxlink keygen`). Default: toxlink.keys.
    #[arg(long, value_name = "PATH")]
    pub keys_file: Option<PathBuf>,
    /// Address to bind our UDP socket to. Default: 0.0.0.0.
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// UDP port to listen on. Default: 0 (any).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The peer's long-term public key (64 hex digits) or Tox ID.
    #[arg(long, value_name = "KEY", value_parser = parse_peer_key)]
    pub peer: Option<PublicKey>,
    /// Connect to the peer at this UDP address (otherwise wait for it).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// A Tox TCP relay (repeatable).
    #[arg(long = "relay", value_name = "KEY@HOST:PORT", value_parser = parse_relay)]
    pub relays: Vec<RelaySpec>,
    /// Seconds to wait for the peer (connecting side) or a relay.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// A STUN server to learn our public UDP address from (repeatable).
    /// Default: every `--relay` address (toxlink relays answer STUN on the
    /// same port numbers).
    #[arg(long = "stun", value_name = "HOST:PORT", conflicts_with = "no_stun")]
    pub stun: Vec<String>,
    /// Ask no STUN server (peers still find each other through interface
    /// addresses and roaming).
    #[arg(long)]
    pub no_stun: bool,
    /// Do not look for a direct path: advertise none of our addresses to the
    /// peer and punch none of its (direct UDP only with `--peer-addr`).
    #[arg(long)]
    pub no_discovery: bool,
}

/// The TOML config of the peer commands.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerToml {
    /// Keys file.
    pub keys_file: Option<PathBuf>,
    /// Bind address.
    pub bind: Option<IpAddr>,
    /// UDP port.
    pub port: Option<u16>,
    /// Peer public key or Tox ID.
    pub peer: Option<String>,
    /// Peer UDP address.
    pub peer_addr: Option<String>,
    /// Peer DHT key (`toxlink peer` only).
    pub peer_dht: Option<String>,
    /// Relays as `KEY@HOST:PORT`.
    pub relays: Option<Vec<String>>,
    /// Connect timeout, seconds.
    pub timeout_secs: Option<u64>,
    /// STUN servers as `HOST:PORT` (an empty list: none; absent: the
    /// relays).
    pub stun: Option<Vec<String>>,
    /// Look for a direct path by ourselves (default true).
    pub discovery: Option<bool>,
}

/// Effective settings after merging the config file and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys file.
    pub keys_file: PathBuf,
    /// Local UDP address.
    pub bind: SocketAddr,
    /// The peer.
    pub peer: PublicKey,
    /// The peer's DHT key (its long-term key unless given).
    pub peer_dht: Option<PublicKey>,
    /// Where to connect, if we connect.
    pub peer_addr: Option<String>,
    /// Relays.
    pub relays: Vec<RelaySpec>,
    /// STUN servers as `HOST:PORT`; `None`: the relays' addresses.
    pub stun: Option<Vec<String>>,
    /// Look for a direct path by ourselves (`NodeConfig::discover_direct_paths`).
    pub discovery: bool,
    /// Connect timeout.
    pub timeout: Duration,
    /// Print the `public key`, `tox id` and `listening on` lines on stderr
    /// (stdout is reserved for `--json`).
    pub info_on_stderr: bool,
}

/// Reads the config (if any) and merges the flags over it.
pub fn settings(a: &PeerArgs, peer_dht_flag: Option<PublicKey>) -> Result<Settings, LinkError> {
    let file = match &a.config {
        Some(p) => {
            let name = p.display().to_string();
            let text = toxlink_cli::relay_config::read_config_file(p)
                .map_err(|e| LinkError::Config(name.clone(), e.to_string()))?;
            toml::from_str::<PeerToml>(&text).map_err(|e| {
                // toml's messages span several lines; keep the first.
                let msg = e
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("parse error")
                    .to_string();
                LinkError::Config(name, msg)
            })?
        }
        None => PeerToml::default(),
    };
    let cfg_err = |m: String| {
        LinkError::Config(
            a.config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            m,
        )
    };
    let peer = match a.peer {
        Some(p) => p,
        None => match &file.peer {
            Some(s) => parse_peer_key(s).map_err(cfg_err)?,
            None => {
                return Err(LinkError::Usage(
                    "no peer: give --peer KEY (or `peer` in the config)".into(),
                ))
            }
        },
    };
    let peer_dht = match (peer_dht_flag, &file.peer_dht) {
        (Some(k), _) => Some(k),
        (None, Some(s)) => Some(
            PublicKey::from_hex(s)
                .ok_or_else(|| cfg_err(format!("peer_dht {s:?} is not 64 hex digits")))?,
        ),
        (None, None) => None,
    };
    let relays = if a.relays.is_empty() {
        file.relays
            .unwrap_or_default()
            .iter()
            .map(|s| parse_relay(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(cfg_err)?
    } else {
        a.relays.clone()
    };
    let ip = a
        .bind
        .or(file.bind)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port = a.port.or(file.port).unwrap_or(0);
    Ok(Settings {
        keys_file: a
            .keys_file
            .clone()
            .or(file.keys_file)
            .unwrap_or_else(|| DEFAULT_KEYS_FILE.into()),
        bind: SocketAddr::new(ip, port),
        peer,
        peer_dht,
        peer_addr: a.peer_addr.clone().or(file.peer_addr),
        relays,
        discovery: !a.no_discovery && file.discovery.unwrap_or(true),
        stun: if a.no_stun {
            Some(Vec::new())
        } else if !a.stun.is_empty() {
            Some(a.stun.clone())
        } else {
            file.stun
        },
        timeout: Duration::from_secs(
            a.timeout
                .or(file.timeout_secs)
                .unwrap_or(DEFAULT_TIMEOUT_SECS)
                .max(1),
        ),
        info_on_stderr: false,
    })
}

/// Reads an existing keys file (never creates one here: a typo in the path
/// must not silently give us a new identity).
pub fn load_keys(path: &Path) -> Result<KeyPair, LinkError> {
    Ok(read_keys(path)?)
}

/// Resolves `HOST:PORT` to one address within `timeout`.
pub async fn resolve(what: &str, addr: &str, timeout: Duration) -> Result<SocketAddr, LinkError> {
    let r = tokio::time::timeout(timeout, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| LinkError::Unreachable(format!("{what} {addr}: name lookup timed out")))?
        .map_err(|e| LinkError::Usage(format!("{what} {addr}: {e}")))?
        .next();
    r.ok_or_else(|| LinkError::Usage(format!("{what} {addr}: no address")))
}

/// Hands the relays to the node (`Node::add_relay`), each first checked for
/// reachability (a TCP connect within `timeout`): an error if none answers,
/// so a typo does not go unnoticed; unreachable ones are still given to the
/// node, which keeps retrying them.
pub async fn hand_relays_to_node(
    node: &Node,
    relays: &[RelaySpec],
    timeout: Duration,
) -> Result<HandedRelays, LinkError> {
    let mut ok = Vec::new();
    let mut known = Vec::new();
    let mut last_err = None;
    for r in relays {
        let addr = match resolve("relay", &r.addr, timeout).await {
            Ok(a) => a,
            Err(e) => {
                last_err = Some(e.to_string());
                continue;
            }
        };
        node.add_relay(r.key, addr);
        known.push((r.key, addr));
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                tracing::debug!(relay = %r, "relay reachable");
                ok.push(addr);
            }
            Ok(Err(e)) => last_err = Some(format!("relay {r} unreachable: {e}")),
            Err(_) => {
                last_err = Some(format!(
                    "relay {r} unreachable: no answer within {} s",
                    timeout.as_secs()
                ))
            }
        }
    }
    match last_err {
        Some(e) if ok.is_empty() => Err(LinkError::Unreachable(e)),
        _ => Ok(HandedRelays {
            reachable: ok,
            known,
        }),
    }
}

/// The relays [`hand_relays_to_node`] gave the node.
#[derive(Debug, Clone, Default)]
pub struct HandedRelays {
    /// Addresses that accepted a TCP connection.
    pub reachable: Vec<SocketAddr>,
    /// Every relay handed to the node: its key and resolved address.
    pub known: Vec<(PublicKey, SocketAddr)>,
}

/// The first 8 hex digits of a key (how peers are shown in chat).
pub fn short_id(pk: &PublicKey) -> String {
    pk.to_hex().chars().take(8).collect()
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be set up).
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// How long a closed connection's node is kept so its KILL goes out.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// An established friend connection and what it runs on. Dropped (also when
/// its command is interrupted), it closes the connection and keeps the node
/// for [`CLOSE_GRACE`] so the KILL reaches the peer.
pub struct Linked {
    /// The node (kept alive as long as the friend; `None` only in drop).
    node: Option<Node>,
    /// The friend protocol on the connection.
    pub friend: Friend,
    /// How we reached the peer, for status lines.
    pub via: String,
    /// The relays given to the node (key, resolved address): path events
    /// name a relay by its key only.
    pub relays: Vec<(PublicKey, SocketAddr)>,
}

impl Drop for Linked {
    fn drop(&mut self) {
        self.friend.close();
        if let Some(node) = self.node.take() {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    tokio::time::sleep(CLOSE_GRACE).await;
                    drop(node);
                });
            }
        }
    }
}

impl Linked {
    /// The node (always there outside of drop).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The connection's current primary path, for status lines.
    pub fn path(&self) -> Option<String> {
        use toxlink::toxlink_proto::node::Route;
        let peer = self.friend.connection().peer();
        Some(match self.node.as_ref()?.primary(&peer)? {
            Route::Udp(a) => format!("udp {a}"),
            Route::Relay { relay, .. } => format!("relay {}", short_id(&relay)),
            other => format!("{other:?}"),
        })
    }

    /// Closes the connection and gives the node a moment to send the KILL.
    pub async fn close(self) {
        self.friend.close();
        tokio::time::sleep(CLOSE_GRACE).await;
    }
}

/// Binds the node, prints `public key`, `tox id` and `listening on` lines on
/// stdout (stderr with [`Settings::info_on_stderr`]), then connects (with `peer_addr`) or accepts the peer, and starts
/// the friend protocol. `dht_is_real`: see [`NodeConfig::dht_is_real`].
pub async fn establish(s: &Settings, dht_is_real: bool, name: &str) -> Result<Linked, LinkError> {
    let keys = load_keys(&s.keys_file)?;
    let node = Node::bind(
        s.bind,
        keys.clone(),
        NodeConfig {
            dht_is_real,
            discover_direct_paths: s.discovery,
            ..NodeConfig::default()
        },
    )
    .await
    .map_err(|e| LinkError::Usage(format!("cannot bind {}: {e}", s.bind)))?;
    let info = [
        format!("public key {}", keys.public.to_hex()),
        format!(
            "tox id     {}",
            crate::keygen_cmd::tox_id(&keys.public, [0; 4])
        ),
        format!("listening on {}", node.local_addr()),
    ];
    for line in info {
        if s.info_on_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    let handed = hand_relays_to_node(&node, &s.relays, s.timeout).await?;
    let relays = &handed.reachable;
    let stun = match &s.stun {
        Some(list) => {
            let mut out = Vec::new();
            for h in list {
                out.push(resolve("STUN server", h, s.timeout).await?);
            }
            out
        }
        None => handed.known.iter().map(|(_, a)| *a).collect(),
    };
    node.set_stun_servers(stun);
    let conn: Connection = match &s.peer_addr {
        Some(a) => {
            let addr = resolve("peer", a, s.timeout).await?;
            let dht = s.peer_dht.unwrap_or(s.peer);
            let unreachable = |why: String| {
                LinkError::Unreachable(format!(
                    "peer {} at {addr} unreachable: {why}",
                    short_id(&s.peer)
                ))
            };
            tokio::time::timeout(s.timeout, node.connect(s.peer, dht, addr))
                .await
                .map_err(|_| unreachable(format!("no answer within {} s", s.timeout.as_secs())))?
                .map_err(|e| unreachable(e.to_string()))?
        }
        None if !relays.is_empty() => {
            // Whoever reaches the other first: accept or connect, both
            // through the shared relays.
            node.allow(s.peer);
            let dht = s.peer_dht.unwrap_or(s.peer);
            tokio::select! {
                c = node.accept() => c.ok_or_else(|| LinkError::Peer("node stopped".into()))?,
                c = node.connect_via_relays(s.peer, dht) => c.map_err(|e| {
                    LinkError::Unreachable(format!(
                        "peer {} unreachable through the relays: {e}",
                        short_id(&s.peer)
                    ))
                })?,
            }
        }
        None => {
            node.allow(s.peer);
            node.accept()
                .await
                .ok_or_else(|| LinkError::Peer("node stopped".into()))?
        }
    };
    let via = match (&s.peer_addr, relays.len()) {
        (Some(a), 0) => format!("udp {a}"),
        (Some(a), n) => format!("udp {a} + {n} relay(s)"),
        (None, 0) => "udp (incoming)".to_string(),
        (None, n) => format!("{n} relay(s)"),
    };
    let friend = Friend::start(
        conn,
        FriendConfig {
            name: name.as_bytes().to_vec(),
            ..FriendConfig::default()
        },
    );
    Ok(Linked {
        node: Some(node),
        friend,
        via,
        relays: handed.known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_specs() {
        let k = "AB".repeat(32);
        let r = parse_relay(&format!("{k}@127.0.0.1:33445")).unwrap();
        assert_eq!(r.key.0, [0xAB; 32]);
        assert_eq!(r.addr, "127.0.0.1:33445");
        let r = parse_relay(&format!("{k}@[::1]:443")).unwrap();
        assert_eq!(r.addr, "[::1]:443");
        assert!(parse_relay(&format!("{k}127.0.0.1:1"))
            .unwrap_err()
            .contains("'@'"));
        assert!(parse_relay("zz@h:1").unwrap_err().contains("hex"));
        assert!(parse_relay(&format!("{k}@host"))
            .unwrap_err()
            .contains("port"));
        assert!(parse_relay(&format!("{k}@h:99999"))
            .unwrap_err()
            .contains("port"));
    }

    #[test]
    fn peer_keys_and_tox_ids() {
        let pk = PublicKey([7; 32]);
        assert_eq!(parse_peer_key(&pk.to_hex()), Ok(pk));
        let id = crate::keygen_cmd::tox_id(&pk, [1, 2, 3, 4]);
        assert_eq!(parse_peer_key(&id), Ok(pk));
        let mut bad = id.clone();
        bad.replace_range(75.., if id.ends_with('0') { "1" } else { "0" });
        assert!(parse_peer_key(&bad).unwrap_err().contains("checksum"));
        assert!(parse_peer_key("123").is_err());
    }

    #[test]
    fn config_merges_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let k = "CD".repeat(32);
        std::fs::write(
            &cfg,
            format!(
                "keys_file = \"x.keys\"\nport = 5000\npeer = \"{k}\"\npeer_addr = \"h:1\"\n\
                 relays = [\"{k}@r:2\"]\ntimeout_secs = 3\n"
            ),
        )
        .unwrap();
        let mut a = PeerArgs {
            config: Some(cfg.clone()),
            ..PeerArgs::default()
        };
        let s = settings(&a, None).unwrap();
        assert_eq!(s.keys_file, PathBuf::from("x.keys"));
        assert_eq!(s.bind.port(), 5000);
        assert_eq!(s.peer.0, [0xCD; 32]);
        assert_eq!(s.peer_addr.as_deref(), Some("h:1"));
        assert_eq!(s.relays.len(), 1);
        assert_eq!(s.timeout, Duration::from_secs(3));
        a.port = Some(6000);
        a.peer = Some(PublicKey([1; 32]));
        let s = settings(&a, None).unwrap();
        assert_eq!(s.bind.port(), 6000);
        assert_eq!(s.peer.0, [1; 32]);

        std::fs::write(&cfg, "bogus = 1\n").unwrap();
        let e = settings(&a, None).unwrap_err().to_string();
        assert!(e.starts_with("config ") && e.contains("bogus"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
