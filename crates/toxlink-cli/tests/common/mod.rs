//! Support shared by the CLI's real-process tests.
// Each test binary uses its own part of this.
#![allow(dead_code)]

pub mod netlab;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `toxlink ARGS` (this build's binary) with `RUST_LOG=warn`, not started.
pub fn toxlink(args: &[&str]) -> Command {
    toxlink_at(env!("CARGO_BIN_EXE_toxlink"), args)
}

/// `PROGRAM ARGS` with `RUST_LOG=warn`, not started.
pub fn toxlink_at(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).env("RUST_LOG", "warn");
    c
}

/// Creates a keys file with `PROGRAM keygen` (bounded by 10 s); returns its
/// public key (hex).
pub fn keygen_with(program: &str, path: &Path) -> String {
    let mut c = toxlink_at(
        program,
        &["keygen", "--keys-file", path.to_str().expect("utf-8")],
    );
    let o = netlab::run_bounded(&mut c, Duration::from_secs(10));
    assert!(o.status.success(), "keygen: {o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .expect("public key line")
        .trim()
        .to_string()
}
