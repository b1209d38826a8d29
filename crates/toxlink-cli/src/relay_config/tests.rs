//! Tests of the relay config readers.

use super::*;
use std::time::Duration;

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
fn stun_keys() {
    let f = parse_relay_config("ports = [1]\n").unwrap();
    assert_eq!((f.stun, f.stun_listen), (None, None));
    let f = parse_relay_config("stun = false\n").unwrap();
    assert_eq!(f.stun, Some(false));
    let f = parse_relay_config("stun_listen = [\"0.0.0.0:3478\", \"[::]:3478\"]\n").unwrap();
    assert_eq!(
        f.stun_listen,
        Some(vec![
            "0.0.0.0:3478".parse().unwrap(),
            "[::]:3478".parse().unwrap()
        ])
    );
    for (text, want) in [
        (
            "stun_listen = []\n",
            "stun_listen: empty (to turn STUN off: stun = false)",
        ),
        (
            "stun = false\nstun_listen = [\"0.0.0.0:1\"]\n",
            "stun_listen given, but stun = false",
        ),
        (
            "stun_listen = [\"0.0.0.0\"]\n",
            "line 1: invalid socket address syntax",
        ),
        (
            "stun = 1\n",
            "line 1: invalid type: integer `1`, expected a boolean",
        ),
    ] {
        assert_eq!(
            parse_relay_config(text).unwrap_err().to_string(),
            want,
            "{text}"
        );
    }
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
    assert_eq!(f.server.socket_send_buffer_initial, 0);
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

#[test]
fn an_initial_send_buffer_above_the_full_one_is_refused() {
    let e = parse_relay_config(
        "[limits]\nsocket_send_buffer = 65536\nsocket_send_buffer_initial = 131072\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("socket_send_buffer_initial"), "{e}");
    let f = parse_relay_config("[limits]\nsocket_send_buffer = 16384\n").unwrap();
    assert_eq!(f.server.socket_send_buffer_initial, 16384);
}
