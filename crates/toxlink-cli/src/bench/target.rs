//! The relays under test: a toxlink relay child process (this binary's
//! `relay` subcommand), killed on drop, and its RSS.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use toxlink_proto::crypto::PublicKey;

/// A relay under test.
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) pid: u32,
    pub(super) addr: SocketAddr,
    pub(super) pk: PublicKey,
}

pub(super) fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

/// A toxlink relay child process; killed on drop.
pub(super) struct ToxlinkRelay {
    pub(super) child: tokio::process::Child,
    /// The last lines it printed (its counters, on SIGUSR1).
    pub(super) lines: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    pub(super) _dir: tempfile_dir::Dir,
}

pub(super) mod tempfile_dir {
    //! A temporary directory removed on drop (std only).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for ToxlinkRelay {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub(super) async fn start_toxlink() -> Result<(ToxlinkRelay, Target), String> {
    start_toxlink_with(None).await
}

/// A toxlink relay child process, with a TOML config if given.
pub(super) async fn start_toxlink_with(
    config: Option<&str>,
) -> Result<(ToxlinkRelay, Target), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("toxlink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = tempfile_dir::Dir(dir);
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        "relay",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--threads",
        "1",
        "--keys-file",
    ])
    .arg(dir.0.join("keys"));
    if let Some(text) = config {
        let path = dir.0.join("relay.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().ok_or("relay exited")?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let pk_line = next_line(&mut lines).await?;
    let pk = pk_line
        .strip_prefix("public key ")
        .and_then(PublicKey::from_hex)
        .ok_or("bad public key line")?;
    let addr_line = next_line(&mut lines).await?;
    let addr = addr_line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or("bad address line")?;
    // Keep draining stdout so the child never blocks on it.
    let kept = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let keep = kept.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
            if k.len() >= 256 {
                k.pop_front();
            }
            k.push_back(l);
        }
    });
    Ok((
        ToxlinkRelay {
            child,
            lines: kept,
            _dir: dir,
        },
        Target {
            name: "toxlink relay",
            pid,
            addr,
            pk,
        },
    ))
}

pub(super) async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<String, String> {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "relay start timed out".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "relay exited".to_string())
}
