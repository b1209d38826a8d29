//! The libconfig syntax of a tox-bootstrapd config: a tokenizer, a
//! recursive-descent parser whose nesting is bounded by [`MAX_NESTING`], and
//! the few settings a relay reads from it ([`parse_bootstrapd`]).

use std::path::PathBuf;

use super::{at, ConfigError, MAX_NESTING};

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
