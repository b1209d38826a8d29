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

/// `toxlink relay` on loopback with a metrics endpoint and the keys file
/// `keys`, its stdout piped; not started.
fn relay_command(keys: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_toxlink"));
    c.args([
        "relay",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics",
        "127.0.0.1:0",
        "--keys-file",
    ])
    .arg(keys)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_process_serves_reports_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut child = Child(relay_command(&keys).spawn().unwrap());
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

/// A relay process on loopback with a metrics endpoint: the child, its
/// relay address and its metrics address.
fn start_relay_with_metrics(dir: &std::path::Path) -> (Child, std::net::SocketAddr, String) {
    let mut child = Child(
        relay_command(&dir.join("keys"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let mut relay = None;
    let mut metrics = None;
    for line in out.lines().take(10) {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            relay = Some(a.parse().unwrap());
        }
        if let Some(m) = line.strip_prefix("metrics on http://") {
            metrics = Some(m.to_string());
            break;
        }
    }
    (
        child,
        relay.expect("listening line"),
        metrics.expect("metrics line"),
    )
}

/// One metrics request; the answer (empty if the connection failed).
fn get_metrics(addr: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// Polls `get_metrics` until it answers 200 (≤ `limit`).
fn metrics_answer_within(addr: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let body = get_metrics(addr);
        if body.starts_with("HTTP/1.0 200 OK") {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics answer within {limit:?}: {body:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    // Bounded: a refused connection holds at most a short 503 answer.
    for _ in 0..16 {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn sixty_four_idle_metrics_connections_hold_at_most_sixteen_and_the_relay_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, relay, metrics) = start_relay_with_metrics(dir.path());
    // 64 connections that never send a request.
    let start = std::time::Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(&metrics).unwrap())
        .collect();
    // Those beyond the 16 served at once are closed at once; the served
    // ones wait for their request up to the 2 s timeout.
    let mut closed = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        closed = idle.iter_mut().map(closed_by_server).filter(|c| *c).count();
        if closed >= 48 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() < Duration::from_secs(2), "too slow to tell");
    assert_eq!(closed, 48, "64 - 16 refused at once");
    // The relay itself still accepts clients meanwhile.
    let client = std::net::TcpStream::connect(relay).unwrap();
    // Once the idle ones are gone, a new request is answered.
    drop(idle);
    let body = metrics_answer_within(&metrics, Duration::from_secs(5));
    assert!(body.contains("toxlink_relay_accepted_total 1\n"), "{body}");
    drop(client);
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz
}

#[test]
fn a_metrics_endpoint_out_of_descriptors_backs_off_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let (child, relay, metrics) = start_relay_with_metrics(dir.path());
    let pid = child.0.id();
    // Leave the relay four descriptors beyond what it has open now.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let lim = libc::rlimit {
        rlim_cur: open + 4,
        rlim_max: open + 4,
    };
    // SAFETY: lowering our own child's limit; both pointers are valid.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    // More idle connections than descriptors left: accept fails (EMFILE)
    // while the connections wait in the backlog.
    let idle: Vec<std::net::TcpStream> = (0..32)
        .map(|_| std::net::TcpStream::connect(&metrics).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_secs(pid) - before;
    assert!(
        used < 0.3,
        "{used:.2} CPU seconds in one second: accept errors spin"
    );
    drop(idle);
    // Out of the squeeze: a new request is answered, and the relay still
    // accepts clients.
    let body = metrics_answer_within(&metrics, Duration::from_secs(15));
    assert!(body.contains("toxlink_relay_clients "), "{body}");
    drop(std::net::TcpStream::connect(relay).unwrap());
}
