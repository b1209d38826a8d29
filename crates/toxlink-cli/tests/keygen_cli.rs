//! `toxlink keygen` as a process: creates a 0600 keys file, reads it back
//! unchanged, refuses corrupt files and bad arguments with a one-line error
//! and a non-zero exit; and our Tox ID checksum equals c-toxcore's. Keys
//! file rules of every command: one accessible by group or others is
//! refused; concurrent creators end with one identity; only `keygen` and
//! `relay` create a missing file.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

mod common;

fn toxlink(args: &[&str]) -> Output {
    common::toxlink(args).output().expect("run toxlink")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes a keys file with mode 0600 (as keygen makes them).
fn write_keys(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(!lines.is_empty(), "no error message");
    lines.join("\n")
}

#[test]
fn keygen_creates_then_reads_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.keys");
    let p = path.to_str().unwrap();
    let first = toxlink(&["keygen", "--keys-file", p]);
    assert!(first.status.success(), "{first:?}");
    let out1 = stdout(&first);
    assert!(out1.starts_with("created "), "{out1}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let second = toxlink(&["keygen", "--keys-file", p, "--nospam", "01020304"]);
    assert!(second.status.success());
    let out2 = stdout(&second);
    assert!(out2.starts_with("read "), "{out2}");
    let key = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("public key "))
            .map(str::to_owned)
            .expect("public key line")
    };
    assert_eq!(key(&out1), key(&out2), "the file is not overwritten");
    let bytes = std::fs::read(&path).unwrap();
    let hex: String = bytes[..32].iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(key(&out1), hex);
    let id = out2
        .lines()
        .find_map(|l| l.strip_prefix("tox id "))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(id.len(), 76);
    assert!(id.starts_with(&hex) && id[64..72].eq("01020304"), "{id}");
}

#[test]
fn corrupt_keys_file_and_bad_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.keys");
    write_keys(&short, &[7u8; 63]);
    let e = one_line_error(&toxlink(&[
        "keygen",
        "--keys-file",
        short.to_str().unwrap(),
    ]));
    assert!(e.contains("63 bytes"), "{e}");

    let mismatched = dir.path().join("bad.keys");
    write_keys(&mismatched, &[7u8; 64]);
    let e = one_line_error(&toxlink(&[
        "keygen",
        "--keys-file",
        mismatched.to_str().unwrap(),
    ]));
    assert!(e.contains("does not match"), "{e}");

    let e = one_line_error(&toxlink(&["keygen", "--nospam", "xyz"]));
    assert!(e.contains("nospam"), "{e}");
    let missing_dir = dir.path().join("no/such/dir/k");
    let e = one_line_error(&toxlink(&[
        "keygen",
        "--keys-file",
        missing_dir.to_str().unwrap(),
    ]));
    assert!(e.contains("No such file"), "{e}");
    one_line_error(&toxlink(&["no-such-command"]));
}

#[test]
fn our_tox_id_equals_c_toxcore_for_the_same_key() {
    use toxlink_interop::{Harness, HarnessOptions};
    use toxlink_proto::crypto::{KeyPair, SecretKey};
    // One secret key, given to c-toxcore and written into our keys file.
    let sk = [0x5a; 32];
    let kp = KeyPair::from_secret(SecretKey(sk));
    let h = Harness::start(&HarnessOptions::new().secret_key(sk)).expect("c-toxcore harness");
    let theirs = h.tox_id().to_uppercase();
    assert_eq!(h.public_key(), kp.public.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let mut bytes = kp.public.0.to_vec();
    bytes.extend_from_slice(&sk);
    write_keys(&path, &bytes);
    let out = toxlink(&[
        "keygen",
        "--keys-file",
        path.to_str().unwrap(),
        "--nospam",
        &theirs[64..72],
    ]);
    assert!(out.status.success(), "{out:?}");
    let ours = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("tox id "))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(ours, theirs);
}

/// `chat`, `recv .`, `send SEND_FILE` and `peer` with the keys file `keys`,
/// each naming `peer` as the peer.
fn peer_commands<'a>(keys: &'a str, peer: &'a str, send_file: &'a str) -> Vec<Vec<&'a str>> {
    vec![
        vec!["chat", "--keys-file", keys, "--peer", peer],
        vec!["recv", ".", "--keys-file", keys, "--peer", peer],
        vec!["send", send_file, "--keys-file", keys, "--peer", peer],
        vec![
            "peer",
            "--keys-file",
            keys,
            "--peer",
            peer,
            "--peer-dht",
            peer,
            "--peer-addr",
            "127.0.0.1:9",
        ],
    ]
}

#[test]
fn a_keys_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.keys");
    let p = path.to_str().unwrap();
    assert!(toxlink(&["keygen", "--keys-file", p]).status.success());
    let before = std::fs::read(&path).unwrap();
    let peer = "AB".repeat(32);
    for mode in [0o644, 0o660, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let want = format!(
            "toxlink: keys file {p} is accessible by group or others (mode {mode:04o}); \
             run `chmod 600 {p}`"
        );
        let keygen = vec!["keygen", "--keys-file", p];
        let relay = vec![
            "relay",
            "--keys-file",
            p,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
        ];
        for args in std::iter::once(keygen)
            .chain(peer_commands(p, &peer, p))
            .chain([relay])
        {
            let o = toxlink(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
            assert_eq!(one_line_error(&o), want, "{args:?}");
            assert!(o.stdout.is_empty(), "{args:?}: nothing used the keys");
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(toxlink(&["keygen", "--keys-file", p]).status.success());
}

#[test]
fn concurrent_keygens_create_one_identity_and_no_stray_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.keys");
    for round in 0..3 {
        let _ = std::fs::remove_file(&path);
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_toxlink"))
                    .args(["keygen", "--keys-file"])
                    .arg(&path)
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn keygen")
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("keygen output"))
            .collect();
        for o in &outs {
            assert!(o.status.success(), "round {round}: {o:?}");
        }
        let created = outs
            .iter()
            .filter(|o| stdout(o).starts_with("created "))
            .count();
        assert_eq!(
            created, 1,
            "round {round}: exactly one run creates the file"
        );
        let keys: std::collections::BTreeSet<String> = outs
            .iter()
            .map(|o| {
                stdout(o)
                    .lines()
                    .find_map(|l| l.strip_prefix("public key "))
                    .expect("public key line")
                    .to_string()
            })
            .collect();
        assert_eq!(keys.len(), 1, "round {round}: one identity: {keys:?}");
        let bytes = std::fs::read(&path).unwrap();
        let hex: String = bytes[..32].iter().map(|b| format!("{b:02X}")).collect();
        assert!(keys.contains(&hex));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["shared.keys".to_string()],
            "no temporary file left"
        );
    }
}

#[test]
fn only_keygen_and_relay_create_a_missing_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.keys");
    let p = path.to_str().unwrap();
    let peer = "AB".repeat(32);
    for args in peer_commands(p, &peer, "Cargo.toml") {
        let e = one_line_error(&toxlink(&args));
        assert_eq!(
            e,
            format!("toxlink: keys file {p}: not found (create it with `toxlink keygen --keys-file {p}`)"),
            "{args:?}"
        );
        assert!(!path.exists(), "{args:?} created it");
    }
    let o = toxlink(&["keygen", "--keys-file", p]);
    assert!(
        o.status.success() && stdout(&o).starts_with("created "),
        "{o:?}"
    );
}
