//! tox-bootstrapd starts, serves its TCP relay port, reports its key, stops,
//! and several can run at once.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;
use toxlink_interop::{require_bootstrapd, Bootstrapd};

fn pid_alive(pid: u32) -> bool {
    // A stopped and reaped child no longer has a /proc entry.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bootstrapd_starts_serves_and_stops() {
    require_bootstrapd();
    let b = Bootstrapd::start().expect("start");
    let pid = b.pid();
    assert!(pid > 0 && pid_alive(pid));
    assert_ne!(b.public_key(), [0u8; 32]);
    assert!(b.tcp_addr().ip().is_loopback() && b.udp_addr().ip().is_loopback());

    // Keys file holds pk ‖ sk (docs/PROTOCOL.md §2.1); the log names the same key.
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

#[test]
fn daemon_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; spawning goes
    // through a process-lifetime thread, so this must not kill the daemon.
    let b = std::thread::spawn(|| Bootstrapd::start().expect("start"))
        .join()
        .expect("thread");
    std::thread::sleep(Duration::from_millis(300));
    let pid = b.pid();
    assert!(pid_alive(pid), "daemon died with its starting thread");
    TcpStream::connect_timeout(&b.tcp_addr(), Duration::from_secs(2)).expect("still serving");
    drop(b);
    assert!(!pid_alive(pid));
}

/// Environment variable that turns this test binary into the victim process.
const VICTIM_ENV: &str = "TOXLINK_INTEROP_VICTIM";

#[test]
fn daemon_dies_when_the_test_process_is_killed() {
    if std::env::var_os(VICTIM_ENV).is_some() {
        // Victim: start a daemon, report its PID, wait to be SIGKILLed
        // (bounded, in case the parent is gone).
        let b = Bootstrapd::start().expect("start");
        println!("DAEMON_DIR {}", b.dir().display());
        println!("DAEMON_PID {}", b.pid());
        std::thread::sleep(Duration::from_secs(20));
        return;
    }
    use std::io::BufRead;
    let mut victim = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon_dies_when_the_test_process_is_killed",
            "--nocapture",
        ])
        .env(VICTIM_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn victim");
    let out = victim.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(d) = line.strip_prefix("DAEMON_DIR ") {
                let _ = tx.send(Err(std::path::PathBuf::from(d.trim())));
            }
            if let Some(p) = line.strip_prefix("DAEMON_PID ") {
                let _ = tx.send(Ok(p.trim().parse::<u32>().unwrap()));
            }
        }
    });
    // The victim prints its temp dir (Err) first, then the daemon PID (Ok).
    let dir = rx.recv_timeout(Duration::from_secs(15));
    let daemon = rx.recv_timeout(Duration::from_secs(15));
    victim.kill().unwrap(); // SIGKILL: no destructors run in the victim
    victim.wait().unwrap();
    if let Ok(Err(dir)) = dir {
        // Its TempDir never dropped; tidy up after it.
        let _ = std::fs::remove_dir_all(dir);
    }
    let daemon = match daemon {
        Ok(Ok(pid)) => pid,
        other => panic!("victim did not report its daemon: {other:?}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while pid_alive(daemon) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon was reparented (to init or a subreaper) and, once dead, reaped
    // there; a zombie would still have a /proc entry, so check its state too.
    let state = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "daemon {daemon} survived the death of its test process: {state}"
    );
}
