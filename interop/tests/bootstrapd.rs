//! tox-bootstrapd starts, serves its TCP relay port, reports its key, stops,
//! and several can run at once.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;
use toxlink_interop::{bootstrapd_available, Bootstrapd};

fn pid_alive(pid: u32) -> bool {
    // A stopped and reaped child no longer has a /proc entry.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bootstrapd_starts_serves_and_stops() {
    assert!(
        bootstrapd_available(),
        "tox-bootstrapd missing: install toxcore-utils"
    );
    let b = Bootstrapd::start().expect("start");
    let pid = b.pid();
    assert!(pid > 0 && pid_alive(pid));
    assert_ne!(b.public_key(), [0u8; 32]);
    assert!(b.tcp_addr().ip().is_loopback() && b.udp_addr().ip().is_loopback());

    // Keys file holds pk ‖ sk (PROTOCOL.md §2.1); the log names the same key.
    let keys = std::fs::read(b.dir().join("keys")).unwrap();
    assert_eq!(keys.len(), 64);
    assert_eq!(keys[..32], b.public_key());
    let log = std::fs::read_to_string(b.log_path()).unwrap();
    let logged = format!("Public Key: {}", hex::encode_upper(b.public_key()));
    assert!(log.contains(&logged), "log lacks {logged:?}:\n{log}");

    // The relay accepts a TCP connection; it says nothing before our handshake.
    let mut s = TcpStream::connect_timeout(&b.tcp_addr(), Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "relay sent data before the handshake"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    drop(s);

    let dir = b.dir().to_path_buf();
    b.stop();
    assert!(!pid_alive(pid), "daemon {pid} still alive after stop");
    assert!(!dir.exists(), "temp dir not removed");
}

#[test]
fn two_bootstrapds_in_parallel_get_different_ports_and_keys() {
    let a = Bootstrapd::start().expect("start a");
    let b = Bootstrapd::start().expect("start b");
    assert_ne!(a.tcp_addr(), b.tcp_addr());
    assert_ne!(a.udp_addr(), b.udp_addr());
    assert_ne!(a.public_key(), b.public_key());
    assert_ne!(a.pid(), b.pid());
    for d in [&a, &b] {
        TcpStream::connect_timeout(&d.tcp_addr(), Duration::from_secs(2)).expect("connect");
    }
    let (pa, pb) = (a.pid(), b.pid());
    drop(a);
    assert!(!pid_alive(pa));
    assert!(pid_alive(pb), "dropping one daemon must not stop the other");
    drop(b);
    assert!(!pid_alive(pb));
}

#[test]
fn drop_during_panic_stops_the_daemon() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let b = Bootstrapd::start().expect("start");
        tx.send(b.pid()).unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(r.is_err());
    let pid = rx.recv().unwrap();
    assert!(!pid_alive(pid), "daemon {pid} survived a panicking owner");
}
