//! Child-process plumbing shared by [`crate::bootstrapd`] and [`crate::harness`].
//!
//! Invariants:
//! * Every child is spawned with `PR_SET_PDEATHSIG = SIGKILL`, so it dies even
//!   if the test process is killed without running destructors. Linux sends
//!   that signal when the *thread* that forked the child exits, so all spawns
//!   go through one spawner thread that lives as long as the process
//!   ([`spawn`]); children therefore never die just because the test thread
//!   that asked for them ended, and never outlive the process.
//! * Children are stopped only by their own PID ([`terminate`]): SIGTERM, a
//!   bounded grace period, then SIGKILL, and always reaped with `wait`.
//! * Free ports are found by binding port 0 and releasing it ([`free_port`]);
//!   callers retry when the port got taken in between.

use crate::error::{InteropError, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A spawn request: the command and where to send the result.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The process-lifetime spawner thread's inbox.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> Result<mpsc::Sender<SpawnRequest>> {
    if let Some(tx) = SPAWNER.get() {
        return Ok(lock(tx).clone());
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("toxlink-interop-spawner".into())
        .spawn(move || {
            // Ends only when every sender is gone, i.e. never: the static keeps one.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        })
        .map_err(|e| InteropError::io("starting the spawner thread", e))?;
    // If another thread won the race, its spawner is used and ours idles out
    // (its only sender is dropped here, so the thread ends).
    let stored = SPAWNER.get_or_init(|| Mutex::new(tx));
    Ok(lock(stored).clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned sender is still a valid sender.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `cmd` so that the child gets SIGKILL when this process dies.
///
/// `what` names the child in errors.
pub(crate) fn spawn(mut cmd: Command, what: &str) -> Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // the async-signal-safe functions prctl(2), getppid(2) and kill(2).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()?
        .send((cmd, tx))
        .map_err(|_| InteropError::Protocol("spawner thread is gone".into()))?;
    rx.recv()
        .map_err(|_| InteropError::Protocol("spawner thread is gone".into()))?
        .map_err(|e| InteropError::io(format!("spawning {what}"), e))
}

/// Stops `child` by its PID: SIGTERM, up to `grace` for it to exit, then
/// SIGKILL; always reaps it. Returns its exit status as text.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return status.to_string();
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain kill(2) on the PID of our own, not yet reaped child
        // (so the PID cannot have been reused).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    // `Child::kill` sends SIGKILL to this child's PID.
    let _ = child.kill();
    match child.wait() {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Transport of a port probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// A port that was free on all IPv4 interfaces a moment ago (bind port 0,
/// read it, release it). The daemons bind the wildcard address, so the probe
/// does too; nothing is sent.
pub(crate) fn free_port(proto: Proto) -> Result<u16> {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let port = match proto {
        Proto::Tcp => TcpListener::bind(any).and_then(|l| l.local_addr()),
        Proto::Udp => UdpSocket::bind(any).and_then(|s| s.local_addr()),
    }
    .map_err(|e| InteropError::io(format!("probing a free {proto:?} port"), e))?
    .port();
    Ok(port)
}

/// The last `max_lines` lines of the file at `path` (best effort).
pub(crate) fn log_tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines.get(start..).unwrap_or_default().join("\n")
        }
        Err(e) => format!("(cannot read {path:?}: {e})"),
    }
}

/// `CLOCK_MONOTONIC` in microseconds: the clock the harness stamps its
/// events and packets with, so figures from both sides can be subtracted.
pub(crate) fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let micros = u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000;
    secs.saturating_mul(1_000_000).saturating_add(micros)
}
