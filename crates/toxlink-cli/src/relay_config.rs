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
//! Of a tox-bootstrapd config, `keys_file_path`, `tcp_relay_ports`,
//! `enable_ipv6`, `enable_tcp_relay` and `motd` are read; the rest must be
//! well-formed libconfig and is otherwise ignored. `@include` is refused.

use serde::Deserialize;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toxlink_proto::relay_server::ServerConfig;
use toxlink_proto::wire::relay::MAX_FRAME_SIZE;

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

// ---------------------------------------------------------------------------
// libconfig

/// A libconfig token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Punct(char),
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Name(n) => write!(f, "name {n:?}"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Int(_) | Tok::Float(_) => f.write_str("a number"),
            Tok::Bool(_) => f.write_str("a boolean"),
            Tok::Punct(c) => write!(f, "'{c}'"),
        }
    }
}

/// Splits libconfig text into tokens with their line numbers (comments
/// `#`, `//` and `/* */` dropped).
fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ConfigError> {
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut chars = text.chars().peekable();
    // Every iteration consumes at least one character.
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'*') => {
                let start = line;
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                    }
                    if prev == '*' && n == '/' {
                        closed = true;
                        break;
                    }
                    prev = n;
                }
                if !closed {
                    return Err(at(start, "unterminated /* comment"));
                }
            }
            '"' => {
                let start = line;
                let s = string_body(&mut chars, &mut line).map_err(|m| at(start, m))?;
                out.push((Tok::Str(s), start));
            }
            '@' => return Err(at(line, "@include and other directives are not supported")),
            c if c.is_ascii_alphabetic() || c == '*' => {
                let mut name = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || matches!(n, '_' | '-' | '*') {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let tok = if name.eq_ignore_ascii_case("true") {
                    Tok::Bool(true)
                } else if name.eq_ignore_ascii_case("false") {
                    Tok::Bool(false)
                } else {
                    Tok::Name(name)
                };
                out.push((tok, line));
            }
            c if c.is_ascii_digit() || matches!(c, '+' | '-' | '.') => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    let exponent_sign = matches!(n, '+' | '-')
                        && s.ends_with(['e', 'E'])
                        && !s.trim_start_matches(['+', '-']).starts_with("0x")
                        && !s.trim_start_matches(['+', '-']).starts_with("0X");
                    if n.is_ascii_alphanumeric() || n == '.' || exponent_sign {
                        s.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((number(&s).map_err(|m| at(line, m))?, line));
            }
            '=' | ':' | ';' | ',' | '{' | '}' | '(' | ')' | '[' | ']' => {
                out.push((Tok::Punct(c), line));
            }
            other => return Err(at(line, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, line: &mut usize) {
    for n in chars.by_ref() {
        if n == '\n' {
            *line += 1;
            return;
        }
    }
}

/// The rest of a string after its opening quote, escapes resolved.
fn string_body(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4];
    loop {
        let c = chars.next().ok_or("unterminated string")?;
        match c {
            '"' => break,
            '\\' => {
                let e = chars
                    .next()
                    .ok_or("unterminated string (it ends in a backslash)")?;
                match e {
                    'n' => bytes.push(b'\n'),
                    'r' => bytes.push(b'\r'),
                    't' => bytes.push(b'\t'),
                    'f' => bytes.push(0x0c),
                    '\\' => bytes.push(b'\\'),
                    '"' => bytes.push(b'"'),
                    'x' => {
                        let hi = chars.next().and_then(|h| h.to_digit(16));
                        let lo = chars.next().and_then(|l| l.to_digit(16));
                        match (hi, lo) {
                            // Two hex digits: at most 0xff.
                            (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                            _ => return Err("\\x needs two hex digits".into()),
                        }
                    }
                    other => return Err(format!("unknown escape \\{}", other.escape_debug())),
                }
            }
            c => {
                if c == '\n' {
                    *line += 1;
                }
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| "string is not UTF-8".into())
}

/// A libconfig number: decimal, `0x` hex, `0b` binary or `0o` octal
/// integer (optionally with an `L`/`LL` suffix), or a finite float.
fn number(s: &str) -> Result<Tok, String> {
    let bad = || format!("bad number {s:?}");
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let int_body = body
        .strip_suffix("LL")
        .or_else(|| body.strip_suffix('L'))
        .unwrap_or(body);
    let radix = |p: &[&str]| p.iter().find_map(|p| int_body.strip_prefix(p));
    let parsed = if let Some(h) = radix(&["0x", "0X"]) {
        Some(u64::from_str_radix(h, 16))
    } else if let Some(b) = radix(&["0b", "0B"]) {
        Some(u64::from_str_radix(b, 2))
    } else if let Some(o) = radix(&["0o", "0O"]) {
        Some(u64::from_str_radix(o, 8))
    } else if !int_body.is_empty() && int_body.bytes().all(|b| b.is_ascii_digit()) {
        Some(int_body.parse::<u64>())
    } else {
        None
    };
    match parsed {
        Some(Ok(v)) => {
            let v = i128::from(v);
            let v = if neg { -v } else { v };
            i64::try_from(v)
                .map(Tok::Int)
                .map_err(|_| format!("integer {s} out of range"))
        }
        Some(Err(e)) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("integer {s} out of range"))
        }
        Some(Err(_)) => Err(bad()),
        None => match body.parse::<f64>() {
            Ok(f) if f.is_finite() && body.bytes().any(|b| b.is_ascii_digit()) => {
                Ok(Tok::Float(if neg { -f } else { f }))
            }
            _ => Err(bad()),
        },
    }
}

/// A libconfig value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    List(Vec<Value>),
    Group(Vec<Setting>),
}

/// `name = value` with the line of its name.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    name: String,
    value: Value,
    line: usize,
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    last_line: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.toks.get(self.at).map_or(self.last_line, |(_, l)| *l)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|(t, _)| t.clone());
        if t.is_some() {
            self.at += 1;
        }
        t
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end of the file".into(), Tok::to_string)
    }

    /// Settings until `close` (or the end of the file when `None`).
    fn settings(&mut self, depth: usize, close: Option<char>) -> Result<Vec<Setting>, ConfigError> {
        let mut out: Vec<Setting> = Vec::new();
        // Every iteration consumes a token or returns.
        loop {
            let line = self.line();
            let name = match (self.next(), close) {
                (None, None) => return Ok(out),
                (None, Some(c)) => return Err(at(line, format!("missing '{c}'"))),
                (Some(Tok::Punct(p)), Some(c)) if p == c => return Ok(out),
                (Some(Tok::Name(n)), _) => n,
                (Some(t), _) => {
                    return Err(at(line, format!("expected a setting name, found {t}")))
                }
            };
            match self.next() {
                Some(Tok::Punct('=' | ':')) => {}
                _ => return Err(at(line, format!("expected '=' or ':' after {name}"))),
            }
            let value = self.value(depth)?;
            if matches!(self.peek(), Some(Tok::Punct(';' | ','))) {
                self.next();
            }
            if out.iter().any(|s| s.name == name) {
                return Err(at(line, format!("duplicate setting {name}")));
            }
            out.push(Setting { name, value, line });
        }
    }

    /// Values separated by commas until `close` (a trailing comma is fine).
    fn values(
        &mut self,
        depth: usize,
        close: char,
        scalars_only: bool,
    ) -> Result<Vec<Value>, ConfigError> {
        let mut out = Vec::new();
        // Every iteration consumes a token or returns.
        loop {
            if self.peek() == Some(&Tok::Punct(close)) {
                self.next();
                return Ok(out);
            }
            let line = self.line();
            let v = self.value(depth)?;
            if scalars_only && matches!(v, Value::Array(_) | Value::List(_) | Value::Group(_)) {
                return Err(at(line, "an array holds only scalar values"));
            }
            out.push(v);
            match self.next() {
                Some(Tok::Punct(',')) => {}
                Some(Tok::Punct(c)) if c == close => return Ok(out),
                _ => return Err(at(line, format!("expected ',' or '{close}'"))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ConfigError> {
        let line = self.line();
        if depth >= MAX_NESTING {
            return Err(at(line, format!("nested deeper than {MAX_NESTING} levels")));
        }
        let found = self.found();
        Ok(match self.next() {
            Some(Tok::Bool(b)) => Value::Bool(b),
            Some(Tok::Int(i)) => Value::Int(i),
            Some(Tok::Float(f)) => Value::Float(f),
            Some(Tok::Str(mut s)) => {
                // Adjacent strings are one string.
                while let Some(Tok::Str(more)) = self.peek() {
                    s.push_str(more);
                    self.next();
                }
                Value::Str(s)
            }
            Some(Tok::Punct('[')) => Value::Array(self.values(depth + 1, ']', true)?),
            Some(Tok::Punct('(')) => Value::List(self.values(depth + 1, ')', false)?),
            Some(Tok::Punct('{')) => Value::Group(self.settings(depth + 1, Some('}'))?),
            _ => return Err(at(line, format!("expected a value, found {found}"))),
        })
    }
}

/// The top-level settings of a libconfig file.
fn parse_libconfig(text: &str) -> Result<Vec<Setting>, ConfigError> {
    let toks = tokenize(text)?;
    let last_line = toks.last().map_or(1, |(_, l)| *l);
    let mut p = Parser {
        toks,
        at: 0,
        last_line,
    };
    p.settings(0, None)
}

/// What a tox-bootstrapd config tells a relay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootstrapdConfig {
    /// `keys_file_path`.
    pub keys_file_path: Option<PathBuf>,
    /// `tcp_relay_ports`.
    pub tcp_relay_ports: Option<Vec<u16>>,
    /// `enable_ipv6`.
    pub enable_ipv6: Option<bool>,
    /// `enable_tcp_relay`.
    pub enable_tcp_relay: Option<bool>,
    /// `motd`.
    pub motd: Option<String>,
}

/// Reads the relay-relevant settings of a tox-bootstrapd (libconfig) file.
pub fn parse_bootstrapd(text: &str) -> Result<BootstrapdConfig, ConfigError> {
    let mut c = BootstrapdConfig::default();
    for s in parse_libconfig(text)? {
        let line = s.line;
        let name = s.name.as_str();
        let string = |v: Value| match v {
            Value::Str(s) => Ok(s),
            _ => Err(at(line, format!("{name}: expected a string"))),
        };
        let boolean = |v: Value| match v {
            Value::Bool(b) => Ok(b),
            _ => Err(at(line, format!("{name}: expected true or false"))),
        };
        match name {
            "keys_file_path" => {
                let p = string(s.value)?;
                if p.is_empty() {
                    return Err(at(line, "keys_file_path: empty"));
                }
                c.keys_file_path = Some(p.into());
            }
            "tcp_relay_ports" => {
                let Value::Array(items) = s.value else {
                    return Err(at(line, "tcp_relay_ports: expected an array [PORT, ...]"));
                };
                let ports = items
                    .into_iter()
                    .map(|v| match v {
                        Value::Int(i) => u16::try_from(i)
                            .map_err(|_| at(line, format!("tcp_relay_ports: {i} is not a port"))),
                        _ => Err(at(line, "tcp_relay_ports: expected port numbers")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if ports.is_empty() {
                    return Err(at(line, "tcp_relay_ports: empty"));
                }
                c.tcp_relay_ports = Some(ports);
            }
            "enable_ipv6" => c.enable_ipv6 = Some(boolean(s.value)?),
            "enable_tcp_relay" => c.enable_tcp_relay = Some(boolean(s.value)?),
            "motd" => c.motd = Some(string(s.value)?),
            _ => {}
        }
    }
    Ok(c)
}

/// Names only a tox-bootstrapd config has.
const BOOTSTRAPD_KEYS: [&str; 5] = [
    "keys_file_path",
    "tcp_relay_ports",
    "enable_tcp_relay",
    "pid_file_path",
    "bootstrap_nodes",
];

/// Whether a config file is tox-bootstrapd's: a line that sets one of its
/// own names (our TOML has none of them).
pub fn looks_like_bootstrapd(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        BOOTSTRAPD_KEYS.iter().any(|k| {
            l.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
        })
    })
}

// ---------------------------------------------------------------------------
// TOML

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
            socket_send_buffer: self.socket_send_buffer.unwrap_or(d.socket_send_buffer),
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
        server,
        motd: None,
        enable_tcp_relay: None,
    })
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
enable_lan_discovery = TRUE
enable_tcp_relay = true
tcp_relay_ports = [443, 3389, 33445]
enable_motd = true
motd = "tox-bootstrapd // not a comment" " \"joined\""
bootstrap_nodes = (
  { // Node 1
    address = "127.0.0.1"
    port = 1
    public_key = "AA"
  },
  { address = "::1"; port = 0x21; ratio = -1.5e3 }
)
"#;

    #[test]
    fn reads_bootstrapd_config_keys() {
        let c = parse_bootstrapd(BOOTSTRAPD).unwrap();
        assert_eq!(
            c,
            BootstrapdConfig {
                keys_file_path: Some("/var/lib/tox-bootstrapd/keys".into()),
                tcp_relay_ports: Some(vec![443, 3389, 33445]),
                enable_ipv6: Some(false),
                enable_tcp_relay: Some(true),
                motd: Some("tox-bootstrapd // not a comment \"joined\"".into()),
            }
        );
        assert!(looks_like_bootstrapd(BOOTSTRAPD));
        let e = parse_bootstrapd("enable_ipv6 = maybe").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: expected a value, found name \"maybe\""
        );
        let e = parse_bootstrapd("\n\nenable_ipv6 = 1").unwrap_err();
        assert_eq!(e.to_string(), "line 3: enable_ipv6: expected true or false");
    }

    #[test]
    fn a_bootstrapd_config_with_a_trailing_backslash_is_an_error_not_a_panic() {
        for text in [
            "keys_file_path = \"abc\\",
            "keys_file_path = \"\\",
            "motd = \"x\"\nkeys_file_path = \"é\\",
            "tcp_relay_ports = [1, 2\nkeys_file_path = \"",
        ] {
            let e = parse_relay_config(text).unwrap_err().to_string();
            assert!(e.starts_with("line "), "{text:?}: {e}");
            assert!(e.contains("unterminated string"), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
        let e = parse_bootstrapd("keys_file_path = \"abc\\").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: unterminated string (it ends in a backslash)"
        );
    }

    #[test]
    fn malformed_bootstrapd_configs_are_errors_with_a_line() {
        let cases: &[(&str, &str)] = &[
            (
                "keys_file_path = \"k\"\n/* open",
                "line 2: unterminated /* comment",
            ),
            ("keys_file_path = \"k\"\n@include \"x\"", "line 2: @include"),
            (
                "keys_file_path = \"k\" x",
                "line 1: expected '=' or ':' after x",
            ),
            (
                "keys_file_path = \"k\"\nport 1",
                "line 2: expected '=' or ':' after port",
            ),
            ("tcp_relay_ports = [1, 70000]", "70000 is not a port"),
            ("tcp_relay_ports = [1, \"a\"]", "expected port numbers"),
            ("tcp_relay_ports = []", "tcp_relay_ports: empty"),
            ("tcp_relay_ports = 443", "expected an array"),
            ("tcp_relay_ports = [[1]]", "only scalar values"),
            ("tcp_relay_ports = [1 2]", "expected ',' or ']'"),
            ("keys_file_path = \"\"", "keys_file_path: empty"),
            ("keys_file_path = \"a\\q\"", "unknown escape \\q"),
            ("keys_file_path = \"a\\x4\"", "two hex digits"),
            ("keys_file_path = \"a\\xff\"", "not UTF-8"),
            (
                "keys_file_path = \"k\"\nkeys_file_path = \"j\"",
                "line 2: duplicate",
            ),
            (
                "keys_file_path = \"k\"\nport = 99999999999999999999",
                "out of range",
            ),
            ("keys_file_path = \"k\"\nport = 1.2.3", "bad number"),
            ("keys_file_path = \"k\"\nport = +inf", "bad number"),
            ("keys_file_path = \"k\"\nx = { y = 1", "missing '}'"),
            (
                "keys_file_path = \"k\"\nx = ( 1,",
                "expected a value, found the end",
            ),
            (
                "keys_file_path = \"k\"\n}",
                "expected a setting name, found '}'",
            ),
            ("keys_file_path = \"k\" $", "unexpected character '$'"),
        ];
        for (text, want) in cases {
            let e = parse_relay_config(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let deep = format!(
            "bootstrap_nodes = {}{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        let e = parse_relay_config(&deep).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 32"), "{e}");
        // Numbers of every form libconfig has.
        let ok = "keys_file_path = \"k\"; a = 0x7fffffffffffffffL; b = -0b101; c = 0o17;\
                  d = 1e-3; e = .5; f = -9223372036854775808LL; g = [1, 2,];";
        parse_relay_config(ok).unwrap();
    }

    #[test]
    fn toml_config_and_unknown_keys_rejected() {
        let f = parse_relay_config(
            "keys_file = \"k\"\nports = [1, 2]\nbind = [\"::1\", \"127.0.0.1\"]\nmetrics = \"127.0.0.1:9\"\n[limits]\nmax_clients = 7\nping_interval_secs = 5\n",
        )
        .unwrap();
        assert_eq!(f.format, Format::Toml);
        assert_eq!(f.ports, Some(vec![1, 2]));
        assert_eq!(f.server.max_clients, 7);
        assert_eq!(f.server.ping_interval, Duration::from_secs(5));
        assert_eq!(f.metrics, Some("127.0.0.1:9".parse().unwrap()));
        // A fault-injection key (or any unknown key) is an error.
        let e = parse_relay_config("ports = [1]\nfault_drop = 0.5\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 2: unknown field `fault_drop`"),
            "{e}"
        );
        assert!(parse_relay_config("[limits]\ncorrupt = 0.5\n").is_err());
    }

    #[test]
    fn zero_timeouts_and_other_nonsensical_limits_are_refused() {
        let cases = [
            (
                "handshake_timeout_secs = 0",
                "handshake_timeout_secs: 0 is out of range",
            ),
            (
                "ping_interval_secs = 0",
                "ping_interval_secs: 0 is out of range",
            ),
            (
                "ping_timeout_secs = 0",
                "ping_timeout_secs: 0 is out of range",
            ),
            (
                "ping_timeout_secs = 9223372036854775807",
                "ping_timeout_secs: 9223372036854775807 is out of range",
            ),
            (
                "handshake_timeout_secs = 86401",
                "handshake_timeout_secs: 86401 is out of range (1..=86400 seconds)",
            ),
            ("max_clients = 0", "max_clients: must be at least 1"),
            ("max_unconfirmed = 0", "max_unconfirmed: must be at least 1"),
            ("queue_bytes = 0", "queue_bytes: 0 is less than one frame"),
            (
                "queue_bytes = 2049",
                "queue_bytes: 2049 is less than one frame",
            ),
            (
                "total_queue_bytes = 0",
                "total_queue_bytes: 0 is less than queue_bytes",
            ),
            (
                "queue_bytes = 10000\ntotal_queue_bytes = 9999",
                "total_queue_bytes: 9999 is less than queue_bytes (10000)",
            ),
            (
                "max_conns_per_ip = 0",
                "max_conns_per_ip: must be at least 1",
            ),
            (
                "max_unconfirmed_per_ip = 0",
                "max_unconfirmed_per_ip: must be at least 1",
            ),
            (
                "max_conns_per_ip = 4\nmax_unconfirmed_per_ip = 5",
                "max_unconfirmed_per_ip: 5 is more than max_conns_per_ip (4)",
            ),
            (
                "slow_consumer_timeout_secs = 0",
                "slow_consumer_timeout_secs: 0 is out of range",
            ),
            (
                "oob_bytes_per_sec = 2049",
                "oob_bytes_per_sec: 2049 is less than one frame",
            ),
        ];
        for (limits, want) in cases {
            let e = parse_relay_config(&format!("[limits]\n{limits}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("[limits] {want}")), "{limits}: {e}");
        }
        for bad in ["ports = []", "bind = []", "keys_file = \"\""] {
            assert!(parse_relay_config(bad).is_err(), "{bad}");
        }
        // The bounds themselves are fine.
        let f = parse_relay_config(
            "[limits]\nhandshake_timeout_secs = 1\nping_interval_secs = 86400\nmax_clients = 1\nqueue_bytes = 2050\ntotal_queue_bytes = 2050\n",
        )
        .unwrap();
        assert_eq!(f.server.handshake_timeout, Duration::from_secs(1));
        assert_eq!(f.server.total_queue_bytes, 2050);
        // A large per-client queue raises the default total to match.
        let f = parse_relay_config("[limits]\nqueue_bytes = 1073741824\n").unwrap();
        assert_eq!(f.server.total_queue_bytes, 1 << 30);
    }

    #[test]
    fn per_address_limits_slow_consumer_deadline_and_oob_rate_are_read() {
        let d = ServerConfig::default();
        let f = parse_relay_config("").unwrap();
        assert_eq!(
            (f.server.max_conns_per_ip, f.server.max_unconfirmed_per_ip),
            (32, 8)
        );
        assert_eq!(f.server.slow_consumer_timeout, d.slow_consumer_timeout);
        assert_eq!(f.server.oob_bytes_per_sec, d.oob_bytes_per_sec);
        let f = parse_relay_config(
            "[limits]\nmax_conns_per_ip = 256\nmax_unconfirmed_per_ip = 64\nslow_consumer_timeout_secs = 5\noob_bytes_per_sec = 2050\n",
        )
        .unwrap();
        assert_eq!(f.server.max_conns_per_ip, 256);
        assert_eq!(f.server.max_unconfirmed_per_ip, 64);
        assert_eq!(f.server.slow_consumer_timeout, Duration::from_secs(5));
        assert_eq!(f.server.oob_bytes_per_sec, 2050);
        let f = parse_relay_config("[limits]\nsocket_send_buffer = 0\n").unwrap();
        assert_eq!(f.server.socket_send_buffer, 0);
        // Fewer connections per address than the default unconfirmed bound:
        // the unconfirmed bound follows.
        let f = parse_relay_config("[limits]\nmax_conns_per_ip = 2\n").unwrap();
        assert_eq!(f.server.max_unconfirmed_per_ip, 2);
    }

    #[test]
    fn config_files_are_read_bounded_and_as_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        std::fs::write(&p, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = read_config_file(&p).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        std::fs::write(&p, b"a = 1\n\xff\n").unwrap();
        assert_eq!(
            read_config_file(&p).unwrap_err().to_string(),
            "line 2: not UTF-8"
        );
        assert!(read_config_file(&dir.path().join("none")).is_err());
    }
}
