//! Tests of the transfer protocol and the part file.

use super::part_file::part_file_name;
use super::protocol::MAX_REASON;
use super::*;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use std::path::Path;

fn rng() -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(1)
}

fn offer_for(data: &[u8], name: &str) -> Offer {
    Offer {
        size: data.len() as u64,
        sha256: Sha256::digest(data).into(),
        name: name.into(),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn packets_round_trip_and_malformed_ones_are_refused() {
    let o = offer_for(b"abc", "x.bin");
    let enc = o.encode();
    assert_eq!(enc[0], OFFER);
    assert_eq!(Offer::parse(&enc), Some(o));
    assert_eq!(Offer::parse(&enc[..41]), None, "empty name");
    assert_eq!(Offer::parse(&[OFFER]), None);
    let mut bad = enc.clone();
    bad.push(0xff);
    assert_eq!(Offer::parse(&bad), None, "not UTF-8");
    let r = encode_reply(ReplyCode::Failed, "why");
    assert_eq!(parse_reply(&r), Some((ReplyCode::Failed, "why".into())));
    assert_eq!(parse_reply(&[REPLY, 9]), None);
    assert_eq!(parse_reply(&[REPLY]), None);
    let long = "é".repeat(600);
    assert!(encode_reply(ReplyCode::Refuse, &long).len() <= 2 + MAX_REASON);
}

#[test]
fn names_are_validated() {
    assert!(validate_name("report.pdf").is_ok());
    assert!(validate_name(".hidden").is_ok());
    for bad in ["", "a/b", "/etc", "..", "../x", "a..b", "nul\0", "."] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
    assert!(validate_name(&"x".repeat(256)).is_err());
}

#[test]
fn a_verified_file_is_moved_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
    let part = p.part_path().to_path_buf();
    assert!(part
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(".f.part-"));
    for c in data.chunks(CHUNK_DATA) {
        p.write(c).unwrap();
    }
    assert_eq!(entries(dir.path()).len(), 1, "only the part file so far");
    let path = p.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(entries(dir.path()), vec!["f".to_string()], "part file gone");
}

#[test]
fn a_corrupt_short_or_long_file_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![1u8; 3000];
    // Wrong content.
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
    let mut tampered = data.clone();
    tampered[100] ^= 1;
    p.write(&tampered).unwrap();
    let e = p.finish().unwrap_err().to_string();
    assert!(e.contains("SHA-256"), "{e}");
    assert!(entries(dir.path()).is_empty());
    // Short.
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
    p.write(&data[..10]).unwrap();
    let e = p.finish().unwrap_err().to_string();
    assert!(e.contains("got 10 of 3000"), "{e}");
    assert!(entries(dir.path()).is_empty());
    // Too long.
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
    p.write(&data).unwrap();
    assert!(p.write(&[0]).is_err());
    drop(p);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn existing_files_need_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"old").unwrap();
    let data = b"new".to_vec();
    let e = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    // The name appears while receiving: still not overwritten.
    std::fs::remove_file(dir.path().join("f")).unwrap();
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), false, &mut rng()).unwrap();
    p.write(&data).unwrap();
    std::fs::write(dir.path().join("f"), b"old").unwrap();
    assert!(p.finish().unwrap_err().to_string().contains("exists"));
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
    assert_eq!(entries(dir.path()), vec!["f".to_string()]);
    // With overwrite.
    let mut p = PartFile::create(dir.path(), offer_for(&data, "f"), true, &mut rng()).unwrap();
    p.write(&data).unwrap();
    p.finish().unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    let e = PartFile::create(dir.path(), offer_for(&data, "../f"), true, &mut rng()).unwrap_err();
    assert!(e.to_string().contains("'/'"), "{e}");
}

#[test]
fn a_file_name_of_255_bytes_gets_a_part_file_name_of_at_most_255_bytes() {
    let names = [
        "a".to_string(),
        "x".repeat(240),
        "x".repeat(241),
        "x".repeat(255),
        format!("x{}", "ü".repeat(127)), // 255 bytes, 240 falls inside a ü
        "日".repeat(85),                 // 255 bytes of 3-byte characters
        format!("abc{}", "😀".repeat(63)), // 255 bytes of 4-byte characters
    ];
    for name in &names {
        assert!(name.len() <= MAX_NAME);
        let part = part_file_name(name, 0xdead_beef);
        assert!(
            part.len() <= 255,
            "{} bytes for a {}-byte name",
            part.len(),
            name.len()
        );
        let kept = part
            .strip_prefix('.')
            .and_then(|p| p.strip_suffix(".part-deadbeef"))
            .unwrap();
        assert!(name.starts_with(kept), "{kept:?}");
        assert!(
            kept.len() + 4 > name.len().min(240),
            "shortened no more than needed"
        );
        if name.len() <= 240 {
            assert_eq!(kept, name);
        }
    }
    // Received for real: the part file can be created, the file gets
    // its full 255-byte name.
    let dir = tempfile::tempdir().unwrap();
    for name in &names[3..] {
        let data = name.as_bytes().to_vec();
        let mut p =
            PartFile::create(dir.path(), offer_for(&data, name), false, &mut rng()).unwrap();
        p.write(&data).unwrap();
        let path = p.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(path.file_name().unwrap().len(), name.len());
    }
    assert_eq!(entries(dir.path()).len(), 4, "no part file left");
}

#[test]
fn an_offer_over_max_size_or_the_free_space_is_refused_before_any_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let e = check_room(dir.path(), 2000, Some(1999)).unwrap_err();
    assert!(matches!(e, TransferError::Refused(_)));
    assert_eq!(
        e.to_string(),
        "refused file of 2000 bytes is larger than the receiver's --max-size of 1999 bytes"
    );
    let e = check_room(dir.path(), u64::MAX / 2, None).unwrap_err();
    assert!(matches!(e, TransferError::Refused(_)));
    assert!(e.to_string().contains("does not fit"), "{e}");
    check_room(dir.path(), 2000, Some(2000)).unwrap();
    check_room(dir.path(), 0, Some(0)).unwrap();
    assert!(entries(dir.path()).is_empty());
    assert!(check_room(&dir.path().join("missing"), 1, None).is_err());
}
