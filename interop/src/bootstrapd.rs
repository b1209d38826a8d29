//! A private c-toxcore DHT bootstrap node with a TCP relay: Debian's
//! `tox-bootstrapd` (package toxcore-utils) run in the foreground.
//!
//! [`Bootstrapd::start`] writes a libconfig file into a fresh temporary
//! directory (keys file, log file and the unused PID file live there too),
//! picks free ports for the DHT (UDP) and one TCP relay port, and waits until
//! the daemon has written its 64-byte keys file (`pk ‖ sk`, docs/PROTOCOL.md §2.1)
//! and accepts TCP connections on the relay port.
//!
//! Settings: IPv4 only (`enable_ipv6 = false`, `enable_ipv4_fallback = true`),
//! no LAN discovery, TCP relay on, no MOTD, no bootstrap nodes. The daemon
//! binds the wildcard address (it has no option to bind loopback only); use
//! [`Bootstrapd::udp_addr`] / [`Bootstrapd::tcp_addr`], which are loopback.
//! It runs the same as root and as an ordinary user: in the foreground it
//! does not write its PID file, and everything it writes is in the temporary
//! directory.
//!
//! Invariant: the daemon never outlives its [`Bootstrapd`]. Dropping (also
//! during a panic) sends SIGTERM to its PID, SIGKILL after 2 s, and reaps it;
//! if the test process dies without unwinding, `PR_SET_PDEATHSIG` kills it.

use crate::error::{InteropError, Result};
use crate::process::{self, Proto};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Default location of the daemon (Debian package toxcore-utils).
pub const DEFAULT_BOOTSTRAPD_PATH: &str = "/usr/bin/tox-bootstrapd";

/// Environment variable that overrides [`DEFAULT_BOOTSTRAPD_PATH`].
pub const BOOTSTRAPD_PATH_ENV: &str = "TOXLINK_TOX_BOOTSTRAPD";

/// How long [`Bootstrapd::start`] waits for the daemon to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Grace period between SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Attempts with fresh ports when the daemon exits during start-up (a probed
/// port may be taken by someone else before the daemon binds it).
const START_ATTEMPTS: usize = 3;

/// Size of the keys file: public key ‖ secret key.
const KEYS_FILE_SIZE: usize = 64;

/// Path of the `tox-bootstrapd` binary to run.
pub fn bootstrapd_path() -> PathBuf {
    std::env::var_os(BOOTSTRAPD_PATH_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BOOTSTRAPD_PATH))
}

/// Whether `tox-bootstrapd` is installed (an executable file at
/// [`bootstrapd_path`]).
pub fn bootstrapd_available() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(bootstrapd_path())
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// For tests: fails the test (never skips it) when `tox-bootstrapd` is not
/// installed, naming the package to install.
///
/// # Panics
/// When [`bootstrapd_available`] is false.
pub fn require_bootstrapd() {
    assert!(
        bootstrapd_available(),
        "{:?} is missing (run ./scripts/test.sh, which installs toxcore-utils, or apt-get install toxcore-utils)",
        bootstrapd_path()
    );
}

/// A running `tox-bootstrapd`. See the module documentation.
#[derive(Debug)]
pub struct Bootstrapd {
    /// `None` only after the child was stopped (in `stop`/`drop`).
    child: Option<Child>,
    udp_port: u16,
    tcp_port: u16,
    public_key: [u8; 32],
    log_path: PathBuf,
    /// Keeps the directory (config, keys, log) alive; removed on drop.
    dir: tempfile::TempDir,
}

impl Bootstrapd {
    /// Starts a daemon on free ports and waits (≤ [`START_TIMEOUT`]) until it
    /// is ready. Retries with new ports if it exits during start-up.
    pub fn start() -> Result<Bootstrapd> {
        if !bootstrapd_available() {
            return Err(InteropError::Unavailable(format!(
                "{:?} (install toxcore-utils or set {BOOTSTRAPD_PATH_ENV})",
                bootstrapd_path()
            )));
        }
        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::start_once() {
                Ok(b) => return Ok(b),
                Err(e @ InteropError::ChildExited { .. }) => {
                    warn!(attempt, error = %e, "tox-bootstrapd failed to start, retrying");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| InteropError::Protocol("no start attempt made".into())))
    }

    fn start_once() -> Result<Bootstrapd> {
        let dir = tempfile::Builder::new()
            .prefix("toxlink-bootstrapd-")
            .tempdir()
            .map_err(|e| InteropError::io("creating a temp dir", e))?;
        let udp_port = process::free_port(Proto::Udp)?;
        let mut tcp_port = process::free_port(Proto::Tcp)?;
        // Two different ports keep the picture simple (the daemon would not mind).
        for _ in 0..8 {
            if tcp_port != udp_port {
                break;
            }
            tcp_port = process::free_port(Proto::Tcp)?;
        }
        let keys_path = dir.path().join("keys");
        let config_path = dir.path().join("tox-bootstrapd.conf");
        let log_path = dir.path().join("tox-bootstrapd.log");
        let config = config_text(
            udp_port,
            tcp_port,
            &keys_path,
            &dir.path().join("tox-bootstrapd.pid"),
        );
        std::fs::write(&config_path, config)
            .map_err(|e| InteropError::io(format!("writing {config_path:?}"), e))?;

        let log = File::create(&log_path)
            .map_err(|e| InteropError::io(format!("creating {log_path:?}"), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| InteropError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(bootstrapd_path());
        cmd.arg("--foreground")
            .arg("--log-backend")
            .arg("stdout")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = process::spawn(cmd, "tox-bootstrapd")?;
        debug!(
            pid = child.id(),
            udp_port, tcp_port, "tox-bootstrapd spawned"
        );
        let mut b = Bootstrapd {
            child: Some(child),
            udp_port,
            tcp_port,
            public_key: [0; 32],
            log_path,
            dir,
        };
        // On error `b` is dropped, which stops the child.
        b.public_key = b.wait_ready(&keys_path, START_TIMEOUT)?;
        debug!(pid = b.pid(), pk = %hex::encode_upper(b.public_key), "tox-bootstrapd ready");
        Ok(b)
    }

    /// Waits until the keys file is complete and the relay port accepts a
    /// connection; returns the public key.
    fn wait_ready(&mut self, keys_path: &Path, timeout: Duration) -> Result<[u8; 32]> {
        let deadline = Instant::now() + timeout;
        let mut key = None;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(InteropError::ChildExited {
                        what: "tox-bootstrapd".into(),
                        status: status.to_string(),
                        log_tail: process::log_tail(&self.log_path, 20),
                    });
                }
            }
            if key.is_none() {
                key = read_public_key(keys_path);
            }
            if let Some(pk) = key {
                let probe =
                    TcpStream::connect_timeout(&self.tcp_addr(), Duration::from_millis(200));
                if probe.is_ok() {
                    return Ok(pk);
                }
            }
            if Instant::now() >= deadline {
                return Err(InteropError::Timeout {
                    what: format!(
                        "tox-bootstrapd readiness (keys file and TCP port {}); log tail:\n{}",
                        self.tcp_port,
                        process::log_tail(&self.log_path, 20)
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address of the TCP relay: `127.0.0.1:port`.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.tcp_port))
    }

    /// Address of the DHT node (UDP): `127.0.0.1:port`.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.udp_port))
    }

    /// The daemon's DHT public key, which is also its TCP relay key
    /// (docs/PROTOCOL.md §2.1).
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// PID of the daemon process (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's combined stdout/stderr log (in the temporary directory,
    /// which is deleted on drop).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temporary directory holding config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 2 s) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let status = process::terminate(&mut child, STOP_GRACE);
            debug!(pid, %status, "tox-bootstrapd stopped");
        }
    }
}

impl Drop for Bootstrapd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The daemon's config in libconfig syntax.
fn config_text(udp_port: u16, tcp_port: u16, keys: &Path, pid: &Path) -> String {
    // Paths come from tempfile and contain no quotes or backslashes; escape anyway.
    let quote = |p: &Path| {
        p.to_string_lossy()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    };
    let mut s = String::new();
    s.push_str("// Written by toxlink-interop for one test run.\n");
    s.push_str(&format!("port = {udp_port}\n"));
    s.push_str(&format!("keys_file_path = \"{}\"\n", quote(keys)));
    s.push_str(&format!("pid_file_path = \"{}\"\n", quote(pid)));
    s.push_str("enable_ipv6 = false\n");
    s.push_str("enable_ipv4_fallback = true\n");
    s.push_str("enable_lan_discovery = false\n");
    s.push_str("enable_tcp_relay = true\n");
    s.push_str(&format!("tcp_relay_ports = [{tcp_port}]\n"));
    s.push_str("enable_motd = false\n");
    s.push_str("motd = \"toxlink-interop\"\n");
    s
}

/// The public key from a complete keys file, `None` while it is missing or
/// still being written.
fn read_public_key(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != KEYS_FILE_SIZE {
        return None;
    }
    let pk: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    Some(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_all_keys() {
        let c = config_text(1234, 5678, Path::new("/t/keys"), Path::new("/t/pid"));
        for needle in [
            "port = 1234\n",
            "keys_file_path = \"/t/keys\"\n",
            "pid_file_path = \"/t/pid\"\n",
            "enable_ipv6 = false\n",
            "enable_ipv4_fallback = true\n",
            "enable_lan_discovery = false\n",
            "enable_tcp_relay = true\n",
            "tcp_relay_ports = [5678]\n",
            "enable_motd = false\n",
        ] {
            assert!(c.contains(needle), "missing {needle:?} in\n{c}");
        }
        assert!(!c.contains("bootstrap_nodes"));
    }

    #[test]
    fn keys_file_must_be_complete() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        assert_eq!(read_public_key(&p), None);
        std::fs::write(&p, [7u8; 40]).unwrap();
        assert_eq!(read_public_key(&p), None);
        let mut full = [9u8; 64];
        full[0] = 1;
        std::fs::write(&p, full).unwrap();
        let pk = read_public_key(&p).unwrap();
        assert_eq!(pk[0], 1);
        assert_eq!(pk[1..], [9u8; 31]);
    }
}
