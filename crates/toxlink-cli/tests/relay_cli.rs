//! `toxlink relay` as a process: keys file, start-up lines, forwarding,
//! metrics endpoint, SIGUSR1 counters, clean exit on SIGTERM.

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
