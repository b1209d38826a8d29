//! `toxlink relay` as a process: keys file, start-up lines, forwarding,
//! metrics endpoint, SIGUSR1 counters, clean exit on SIGTERM; bad config
//! files end with one `toxlink: ...` line and exit status 1, never a panic.

use rand_chacha::rand_core::SeedableRng;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use toxlink::relay::RelaySetRuntime;
use toxlink_proto::crypto::{KeyPair, PublicKey};
use toxlink_proto::relay_client::{PeerRelayState, RelaySetConfig, RelaySetEvent};

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child by its PID.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_process_serves_reports_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_toxlink"))
            .args([
                "relay",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics",
                "127.0.0.1:0",
                "--keys-file",
            ])
            .arg(&keys)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line from the relay")
    };
    let pk_line = next();
    let pk = PublicKey::from_hex(pk_line.strip_prefix("public key ").unwrap()).unwrap();
    let bytes = std::fs::read(&keys).unwrap();
    assert_eq!(&bytes[..32], &pk.0, "keys file holds pk ‖ sk");
    let addr: std::net::SocketAddr = next()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let metrics = next()
        .strip_prefix("metrics on http://")
        .unwrap()
        .to_string();

    // Two clients through it.
    let kp = |s| KeyPair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(s));
    let a = RelaySetRuntime::new(kp(1), RelaySetConfig::default());
    let b = RelaySetRuntime::new(kp(2), RelaySetConfig::default());
    for (x, y) in [(&a, &b), (&b, &a)] {
        x.add_relay(pk, addr);
        x.tie(y.public_key(), &pk).unwrap();
    }
    for x in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(
                x.next_event().await,
                Some(RelaySetEvent::PeerState {
                    state: PeerRelayState::Online,
                    ..
                })
            ) {}
        })
        .await
        .unwrap();
    }
    for i in 0..100u32 {
        a.send_data_wait(&pk, &b.public_key(), &i.to_be_bytes())
            .await
            .unwrap();
    }
    let mut got = 0u32;
    tokio::time::timeout(Duration::from_secs(10), async {
        while got < 100 {
            if let Some(RelaySetEvent::Data { data, .. }) = b.next_event().await {
                assert_eq!(data, got.to_be_bytes());
                got += 1;
            }
        }
    })
    .await
    .unwrap();

    // Metrics endpoint.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200 OK"));
    assert!(
        body.contains("toxlink_relay_data_packets_total 100\n"),
        "{body}"
    );
    assert!(body.contains("toxlink_relay_confirmed_clients 2\n"));

    // SIGUSR1 prints counters; SIGTERM exits cleanly after printing them.
    kill(pid, libc::SIGUSR1);
    let mut seen = false;
    for _ in 0..40 {
        if next().starts_with("toxlink_relay_routes 1") {
            seen = true;
            break;
        }
    }
    assert!(seen, "counters printed on SIGUSR1");
    a.shutdown().await;
    b.shutdown().await;
    kill(pid, libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || {
        let st = child.0.wait();
        drop(child);
        st
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs `toxlink relay` with `args` (expected to fail before serving) and
/// returns its one stderr line, checking exit status 1 (not a panic's 101).
fn relay_fails(args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_toxlink"))
        .arg("relay")
        .args(args)
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    assert!(lines[0].starts_with("toxlink: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    lines[0].to_string()
}

#[test]
fn a_bootstrapd_config_with_a_trailing_backslash_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tox-bootstrapd.conf");
    let keys = dir.path().join("keys");
    std::fs::write(
        &cfg,
        "port = 33445\ntcp_relay_ports = [443]\nkeys_file_path = \"/var/lib/keys\\",
    )
    .unwrap();
    let e = relay_fails(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--keys-file".as_ref(),
        keys.as_os_str(),
    ]);
    assert_eq!(
        e,
        format!(
            "toxlink: config {}: line 3: unterminated string (it ends in a backslash)",
            cfg.display()
        )
    );
    assert!(!keys.exists(), "nothing is created from a bad config");
}

#[test]
fn zero_timeouts_in_the_relay_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    let keys = dir.path().join("keys");
    for (limits, want) in [
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
        ("max_clients = 0", "max_clients: must be at least 1"),
    ] {
        std::fs::write(&cfg, format!("[limits]\n{limits}\n")).unwrap();
        let e = relay_fails(&[
            "--config".as_ref(),
            cfg.as_os_str(),
            "--keys-file".as_ref(),
            keys.as_os_str(),
        ]);
        assert!(
            e.starts_with(&format!(
                "toxlink: config {}: [limits] {want}",
                cfg.display()
            )),
            "{e}"
        );
    }
    assert!(!keys.exists());
}
