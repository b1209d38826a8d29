//! Text helpers: showing peer-supplied strings safely on a terminal, byte
//! sizes on the command line, and digests as hex.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown escaped: control characters (C0, DEL, C1) and the
/// bidirectional formatting characters that reorder what a terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A peer-supplied string as it may be printed: control and bidirectional
/// formatting characters escaped (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`,
/// `\u{202e}`), everything else (ordinary Unicode included) unchanged. The
/// result has no control characters and is one line.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Peer-supplied bytes as text to print: UTF-8 (invalid sequences as
/// U+FFFD), escaped as by [`escape_controls`].
pub fn escape_bytes(b: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(b)).into_owned()
}

/// Parses a byte size: a number with an optional unit `B`, `K`/`KB`,
/// `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000) or `KiB`, `MiB`, `GiB`,
/// `TiB` (powers of 1024), case-insensitive: `10GiB`, `64M`, `1_000`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 256MiB, 64M or 1000000"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        u => return Err(format!("invalid size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Lower-case hex (the SHA-256 digests of transfers and of the demo).
pub fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_from_a_peer_are_shown_escaped() {
        assert!(matches!(escape_controls("plain"), Cow::Borrowed("plain")));
        assert_eq!(escape_controls("héllo wörld ✓ 日本"), "héllo wörld ✓ 日本");
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07\x1b[2Jx"),
            "\\x1b]0;pwned\\x07\\x1b[2Jx"
        );
        assert_eq!(escape_controls("a\nb\r\tc\0\x7f"), "a\\nb\\r\\tc\\x00\\x7f");
        assert_eq!(escape_controls("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
        assert_eq!(escape_controls("txt.\u{202e}fdp"), "txt.\\u{202e}fdp");
        assert_eq!(escape_bytes(b"\xff\x1b"), "\u{fffd}\\x1b");
        // Every char below U+00A0: nothing a terminal acts on survives.
        let all: String = (0u32..0xa0).filter_map(char::from_u32).collect();
        let shown = escape_controls(&all);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("10GiB"), Ok(10 << 30));
        assert_eq!(parse_bytes("64M"), Ok(64_000_000));
        assert_eq!(parse_bytes("2 tib"), Ok(2 << 40));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
