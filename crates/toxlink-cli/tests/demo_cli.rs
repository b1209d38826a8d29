//! `toxlink demo` end to end (a small size): exit 0, one JSON object on
//! stdout with the required fields, equal checksums, nothing lost, at least
//! 4 path events and at least 1 relay blamed; and a bad argument gives a
//! one-line error and a non-zero exit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_with_timeout(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toxlink"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn toxlink");
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("toxlink {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_json_reports_an_intact_transfer_with_faults() {
    let (code, out, err) = run_with_timeout(
        &["demo", "--size", "24MiB", "--seed", "3", "--json"],
        Duration::from_secs(240),
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for k in [
        "bytes",
        "seconds",
        "lost",
        "duplicated",
        "reordered",
        "corrupted",
        "max_gap_ms",
        "path_switches",
        "relays_blamed",
        "sha256_sent",
        "sha256_received",
    ] {
        assert!(v.get(k).is_some(), "field {k} missing in {out}");
    }
    assert_eq!(v["bytes"], 24 << 20);
    for k in ["lost", "duplicated", "reordered", "corrupted"] {
        assert_eq!(v[k], 0, "{k} in {out}");
    }
    assert_eq!(v["sha256_sent"], v["sha256_received"]);
    assert_eq!(v["sha256_sent"].as_str().map(str::len), Some(64));
    assert!(v["path_events"].as_u64().unwrap_or(0) >= 4, "{out}");
    assert!(v["relays_blamed"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(v["path_switches"].as_u64().unwrap_or(0) >= 2, "{out}");
}

#[test]
fn demo_refuses_a_bad_size_with_one_line() {
    let (code, out, err) = run_with_timeout(&["demo", "--size", "12XB"], Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("invalid size unit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
