//! `toxlink keygen`: creates a keys file (or reads an existing one) and
//! prints its public key and Tox ID.
//!
//! The keys file is tox-bootstrapd's format: 64 bytes, public key ‖ secret
//! key, created with mode 0600 (atomically: see [`toxlink_cli::keys_file`]);
//! an existing file is never overwritten, and one that group or others may
//! access is refused. The Tox
//! ID is `public key ‖ nospam ‖ checksum` (76 hex digits), the checksum being
//! the XOR of the 36 preceding bytes taken two at a time, as c-toxcore forms it.
//! Our keys file holds no nospam, so the printed ID uses `--nospam` (default
//! 00000000); c-toxcore peers add us by public key (`tox_friend_add_norequest`)
//! anyway.

use std::path::PathBuf;
use toxlink_cli::keys_file::read_or_create_keys;
use toxlink_proto::crypto::PublicKey;

/// Options of `toxlink keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Keys file to create or read (64 bytes: public ‖ secret key).
    #[arg(long, value_name = "PATH", default_value = "toxlink.keys")]
    pub keys_file: PathBuf,
    /// Nospam of the printed Tox ID, 8 hex digits.
    #[arg(long, value_name = "HEX", default_value = "00000000", value_parser = parse_nospam)]
    pub nospam: [u8; 4],
}

fn parse_nospam(s: &str) -> Result<[u8; 4], String> {
    let bad = || format!("nospam must be 8 hex digits, got {s:?}");
    if s.len() != 8 {
        return Err(bad());
    }
    let v = u32::from_str_radix(s, 16).map_err(|_| bad())?;
    Ok(v.to_be_bytes())
}

/// The Tox ID of `pk` with `nospam`, upper-case hex.
pub fn tox_id(pk: &PublicKey, nospam: [u8; 4]) -> String {
    let mut id = [0u8; 38];
    id[..32].copy_from_slice(&pk.0);
    id[32..36].copy_from_slice(&nospam);
    for i in 0..36 {
        id[36 + i % 2] ^= id[i];
    }
    id.iter().map(|b| format!("{b:02X}")).collect()
}

/// The public key of a Tox ID (76 hex digits) whose checksum holds.
pub fn parse_tox_id(s: &str) -> Option<PublicKey> {
    let s = s.trim();
    if s.len() != 76 || !s.is_ascii() {
        return None;
    }
    let pk = PublicKey::from_hex(&s[..64])?;
    let nospam = u32::from_str_radix(&s[64..72], 16).ok()?.to_be_bytes();
    tox_id(&pk, nospam).eq_ignore_ascii_case(s).then_some(pk)
}

/// Runs `toxlink keygen`.
pub fn run(a: KeygenArgs) -> Result<(), String> {
    let (kp, created) = read_or_create_keys(&a.keys_file).map_err(|e| e.to_string())?;
    println!(
        "{} {}",
        if created { "created" } else { "read" },
        a.keys_file.display()
    );
    println!("public key {}", kp.public.to_hex());
    println!("tox id     {}", tox_id(&kp.public, a.nospam));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_the_xor_of_byte_pairs() {
        let id = tox_id(&PublicKey([0; 32]), [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(id.len(), 76);
        assert!(id.ends_with("12345678444C"), "0x12^0x56, 0x34^0x78: {id}");
        let id = tox_id(&PublicKey([1; 32]), [0; 4]);
        assert!(id.ends_with("000000000000"), "16 pairs of 1^1 cancel: {id}");
    }

    #[test]
    fn nospam_parsing() {
        assert_eq!(parse_nospam("0a0B0c0D"), Ok([10, 11, 12, 13]));
        assert!(parse_nospam("123").is_err());
        assert!(parse_nospam("1234567g").is_err());
    }
}
