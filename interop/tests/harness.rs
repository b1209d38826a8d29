//! The harness process on its own: start-up lines, key handling, command
//! errors, clean exit on QUIT and on stdin EOF. No network peers involved.

use std::time::Duration;
use toxlink_interop::{Harness, HarnessOptions, InteropError};
use toxlink_proto::crypto::{KeyPair, SecretKey};

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn fixed_secret_key_gives_the_matching_public_key_and_tox_id() {
    let sk = [0x42u8; 32];
    let h = Harness::start(&HarnessOptions::new().secret_key(sk).name("fixed")).expect("start");
    let expected = KeyPair::from_secret(SecretKey(sk)).public.0;
    assert_eq!(
        h.public_key(),
        expected,
        "libtoxcore and toxlink-proto disagree on pk(sk)"
    );
    assert_eq!(h.tox_id().len(), 76);
    assert_eq!(&h.tox_id()[..64], hex::encode_upper(expected));
    assert_ne!(
        h.dht_key(),
        h.public_key(),
        "DHT key is a separate, random key"
    );
    assert_ne!(h.udp_port(), 0);
    h.quit().expect("quit");
}

#[test]
fn no_udp_reports_port_zero_and_random_keys_differ() {
    let a = Harness::start(&HarnessOptions::new().no_udp()).expect("start a");
    let b = Harness::start(&HarnessOptions::new()).expect("start b");
    assert_eq!(a.udp_port(), 0);
    assert_ne!(b.udp_port(), 0);
    assert_ne!(a.public_key(), b.public_key());
}

#[test]
fn bad_commands_are_refused_and_the_harness_keeps_working() {
    let mut h = Harness::start(&HarnessOptions::new()).expect("start");
    let e = h
        .command("BOGUS 1", "OK", Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(e, InteropError::Refused { .. }), "{e}");
    let e = h.add_friend(&h.public_key()).unwrap_err();
    assert!(
        matches!(e, InteropError::Refused { .. }),
        "adding oneself: {e}"
    );
    // No friend 0 yet: the run ends at once and says why.
    let r = h
        .send_custom(0, 10, 100, 160, Duration::from_secs(5))
        .expect("runs");
    assert_eq!(r.accepted, 0);
    assert_eq!(r.error.as_deref(), Some("friend_not_found"));
    let e = h.start_custom(0, 1, 5000, 160).unwrap_err();
    assert!(matches!(e, InteropError::InvalidArgument(_)), "{e}");
    let e = h
        .command(
            "SENDCUSTOM 0 1 100 200",
            "OK SENDCUSTOM",
            Duration::from_secs(5),
        )
        .unwrap_err();
    assert!(
        matches!(e, InteropError::Refused { .. }),
        "lossy id for lossless: {e}"
    );
    let f = h.add_friend(&[7u8; 32]).expect("add a stranger");
    assert_eq!(f, 0);
    let r = h
        .send_custom(f, 10, 100, 160, Duration::from_secs(5))
        .expect("runs");
    assert_eq!(r.accepted, 0);
    assert_eq!(r.error.as_deref(), Some("friend_not_connected"));
    let s = h.stats(f).expect("stats");
    assert_eq!(s.status, toxlink_interop::ConnKind::None);
    assert_eq!(s.custom_tx, 0);
}

#[test]
fn stdin_eof_and_drop_end_the_process() {
    let h = Harness::start(&HarnessOptions::new()).expect("start");
    let pid = h.pid();
    assert!(pid_alive(pid));
    drop(h);
    assert!(!pid_alive(pid), "harness {pid} survived its handle");
}
