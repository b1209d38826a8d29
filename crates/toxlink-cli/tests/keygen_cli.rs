//! `toxlink keygen` as a process: creates a 0600 keys file, reads it back
//! unchanged, refuses corrupt files and bad arguments with a one-line error
//! and a non-zero exit; and our Tox ID checksum equals c-toxcore's.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn toxlink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toxlink"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run toxlink")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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
    std::fs::write(&short, [7u8; 63]).unwrap();
    let e = one_line_error(&toxlink(&[
        "keygen",
        "--keys-file",
        short.to_str().unwrap(),
    ]));
    assert!(e.contains("63 bytes"), "{e}");

    let mismatched = dir.path().join("bad.keys");
    std::fs::write(&mismatched, [7u8; 64]).unwrap();
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
    std::fs::write(&path, bytes).unwrap();
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
