//! The config files of `toxlink relay`: toxlink's TOML ([`TomlConfig`]) or a
//! tox-bootstrapd config (libconfig syntax, [`parse_bootstrapd`]), read into
//! one validated [`RelayFile`] by [`parse_relay_config`].
//!
//! Any input gives a value or a [`ConfigError`] of one line (with the line
//! number where there is one), never a panic: the libconfig reader is a
//! tokenizer plus a recursive-descent parser whose nesting is bounded by
//! [`MAX_NESTING`], and every loop consumes input. The `relay_config` fuzz
//! target (fuzz/) runs [`parse_relay_config`] on arbitrary bytes.
//!
//! toxlink's TOML may also say where the relay answers STUN on UDP
//! (`stun = false`, `stun_listen = [...]`).
//!
//! Of a tox-bootstrapd config, `keys_file_path`, `tcp_relay_ports`,
//! `enable_ipv6`, `enable_tcp_relay` and `motd` are read; the rest must be
//! well-formed libconfig and is otherwise ignored. `@include` is refused.
//!
//! Layout: `libconfig` (the tox-bootstrapd syntax), `toml_file`
//! (toxlink's TOML and its `[limits]`), this module (errors, reading a file,
//! either syntax into one [`RelayFile`]).

mod libconfig;
#[cfg(test)]
mod tests;
mod toml_file;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toxlink_proto::relay_server::ServerConfig;

pub use libconfig::{looks_like_bootstrapd, parse_bootstrapd, BootstrapdConfig};
pub use toml_file::{parse_toml, Limits, TomlConfig};

/// Largest config file read (bytes); a larger one is an error.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Deepest nesting of groups, lists and arrays in a libconfig file.
pub const MAX_NESTING: usize = 32;
/// Longest timeout or interval accepted in `[limits]` (one day).
pub const MAX_TIMER_SECS: u64 = 86_400;

/// An error in a config file (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A syntax or value error at a line.
    #[error("line {line}: {msg}")]
    At {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A value that is well-formed but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
}

fn at(line: usize, msg: impl Into<String>) -> ConfigError {
    ConfigError::At {
        line,
        msg: msg.into(),
    }
}

/// Reads a config file of at most [`MAX_CONFIG_BYTES`] bytes of UTF-8.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let f = std::fs::File::open(path).map_err(|e| ConfigError::Read(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Read(format!(
            "larger than {} KiB",
            MAX_CONFIG_BYTES >> 10
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.as_bytes().get(..e.utf8_error().valid_up_to());
        let line = 1 + valid
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        at(line, "not UTF-8")
    })
}

/// Which syntax a config file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// toxlink's TOML.
    Toml,
    /// tox-bootstrapd's libconfig.
    Bootstrapd,
}

/// What a config file (either syntax) sets, validated.
#[derive(Debug, Clone)]
pub struct RelayFile {
    /// The syntax it was read in.
    pub format: Format,
    /// Keys file.
    pub keys_file: Option<PathBuf>,
    /// Ports (never empty when given).
    pub ports: Option<Vec<u16>>,
    /// Bind addresses (never empty when given; TOML only).
    pub bind: Option<Vec<IpAddr>>,
    /// Listen on IPv6 too.
    pub enable_ipv6: Option<bool>,
    /// Metrics endpoint (TOML only).
    pub metrics: Option<SocketAddr>,
    /// Answer STUN on UDP (TOML only; `None`: the default, on).
    pub stun: Option<bool>,
    /// UDP addresses to answer STUN on (TOML only; never empty when
    /// given, and never with `stun = false`).
    pub stun_listen: Option<Vec<SocketAddr>>,
    /// Server limits (TOML `[limits]` over the defaults).
    pub server: ServerConfig,
    /// `motd` (bootstrapd only).
    pub motd: Option<String>,
    /// `enable_tcp_relay` (bootstrapd only).
    pub enable_tcp_relay: Option<bool>,
}

/// Parses a relay config in either syntax and checks its values.
pub fn parse_relay_config(text: &str) -> Result<RelayFile, ConfigError> {
    if looks_like_bootstrapd(text) {
        let b = parse_bootstrapd(text)?;
        return Ok(RelayFile {
            format: Format::Bootstrapd,
            keys_file: b.keys_file_path,
            ports: b.tcp_relay_ports,
            bind: None,
            enable_ipv6: b.enable_ipv6,
            metrics: None,
            stun: None,
            stun_listen: None,
            server: ServerConfig::default(),
            motd: b.motd,
            enable_tcp_relay: b.enable_tcp_relay,
        });
    }
    let t = parse_toml(text)?;
    let server = t.limits.server_config()?;
    if t.ports.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::Invalid("ports: empty".into()));
    }
    if t.bind.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::Invalid("bind: empty".into()));
    }
    if t.stun_listen.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::Invalid(
            "stun_listen: empty (to turn STUN off: stun = false)".into(),
        ));
    }
    if t.stun == Some(false) && t.stun_listen.is_some() {
        return Err(ConfigError::Invalid(
            "stun_listen given, but stun = false".into(),
        ));
    }
    if t.keys_file
        .as_ref()
        .is_some_and(|k| k.as_os_str().is_empty())
    {
        return Err(ConfigError::Invalid("keys_file: empty".into()));
    }
    Ok(RelayFile {
        format: Format::Toml,
        keys_file: t.keys_file,
        ports: t.ports,
        bind: t.bind,
        enable_ipv6: t.enable_ipv6,
        metrics: t.metrics,
        stun: t.stun,
        stun_listen: t.stun_listen,
        server,
        motd: None,
        enable_tcp_relay: None,
    })
}
