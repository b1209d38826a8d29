//! `toxlink relay` config files (tox-bootstrapd's libconfig and toxlink's
//! TOML) and keys files, through the functions the binary uses: any input is
//! a config or a one-line error, never a panic; an accepted config has the
//! bounds the relay relies on. The input as peer text, escaped for the
//! terminal, has no control character left.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use toxlink_cli::keys_file::parse_keys;
use toxlink_cli::relay_config::{parse_bootstrapd, parse_relay_config, MAX_TIMER_SECS};
use toxlink_cli::text::escape_controls;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_relay_config(&text) {
        Ok(f) => {
            let s = &f.server;
            for t in [s.handshake_timeout, s.ping_interval, s.ping_timeout] {
                assert!(t >= Duration::from_secs(1) && t <= Duration::from_secs(MAX_TIMER_SECS));
            }
            assert!(s.max_clients >= 1 && s.max_unconfirmed >= 1);
            assert!(s.queue_bytes <= s.total_queue_bytes);
            assert!(f.ports.as_ref().map_or(true, |p| !p.is_empty()));
            assert!(f.bind.as_ref().map_or(true, |b| !b.is_empty()));
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
    // The libconfig reader also when the text does not look like bootstrapd's.
    if let Err(e) = parse_bootstrapd(&text) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    if let Ok(kp) = parse_keys(data) {
        assert_eq!(&kp.public.0[..], &data[..32]);
    }
    let shown = escape_controls(&text);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
});
