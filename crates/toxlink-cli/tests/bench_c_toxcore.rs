//! The c-toxcore rows of `toxlink bench` (the `c-toxcore-bench` feature):
//! `bench udp` measures two c-toxcore 0.2.18 peers next to toxlink, and
//! `bench relay` measures tox-bootstrapd next to the toxlink relay. Each
//! row must be a real measurement: a c-toxcore part that cannot run (no
//! libtoxcore-dev, no tox-bootstrapd) fails the test.

use std::process::Output;

mod common;

fn toxlink(args: &[&str]) -> Output {
    common::toxlink(args).output().expect("run toxlink")
}

/// The number after `label` on `line` (e.g. `"lossless"` -> MB/s).
fn figure_after(line: &str, label: &str) -> f64 {
    let rest = line
        .split_once(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
        .1;
    rest.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn bench_udp_measures_a_c_toxcore_pair() {
    let o = toxlink(&[
        "bench",
        "udp",
        "--mib",
        "4",
        "--runs",
        "1",
        "--ctoxcore-packets",
        "2000",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    let row = out
        .lines()
        .find(|l| l.starts_with("c-toxcore "))
        .unwrap_or_else(|| panic!("no c-toxcore row in:\n{out}"));
    assert!(!row.contains("FAILED"), "{row}");
    assert!(figure_after(row, "lossless") > 0.0, "{row}");
    assert!(figure_after(row, "set-up") > 0.0, "{row}");
    assert!(
        out.lines().any(|l| l.starts_with("ratio ")),
        "no ratio row in:\n{out}"
    );
}

#[test]
fn bench_relay_measures_tox_bootstrapd() {
    // A 64 KiB window in 8 KiB writes: with the default 512 KiB window
    // tox-bootstrapd 0.2.18 forwarded nothing at all in the measured seconds
    // on loopback (0.0 MB/s, three runs out of three), with 64 KiB about
    // 2 MB/s every time.
    let o = toxlink(&[
        "bench",
        "relay",
        "--seconds",
        "2",
        "--idle",
        "50",
        "--window",
        "65536",
        "--write-chunk",
        "8192",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("tox-bootstrapd "))
        .collect();
    let fwd = rows
        .iter()
        .find(|l| l.contains("forwarding"))
        .unwrap_or_else(|| panic!("no tox-bootstrapd forwarding row in:\n{out}"));
    assert!(figure_after(fwd, "forwarding") > 0.0, "{fwd}");
    assert!(
        rows.iter().any(|l| l.contains("50 idle clients")),
        "no tox-bootstrapd memory row in:\n{out}"
    );
}
