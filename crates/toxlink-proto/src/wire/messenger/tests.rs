//! Layouts of docs/PROTOCOL.md §7.3–7.4, limits, round trips.

use super::*;
use crate::crypto::tests::hv;
use crate::crypto::PublicKey;
use crate::wire::packed::{arb_node, PackedIpPort, Transport};
use proptest::prelude::*;

fn relay(port: u16, key: u8) -> PackedNode {
    PackedNode {
        ip_port: PackedIpPort {
            transport: Transport::Tcp,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        },
        public_key: PublicKey([key; 32]),
    }
}

#[test]
fn fixed_packets() {
    assert_eq!(MessengerPacket::Alive.to_vec().unwrap(), hv("10"));
    assert_eq!(MessengerPacket::Online.to_vec().unwrap(), hv("18"));
    assert_eq!(MessengerPacket::Offline.to_vec().unwrap(), hv("19"));
    assert_eq!(
        MessengerPacket::UserStatus(2).to_vec().unwrap(),
        hv("32 02")
    );
    assert_eq!(MessengerPacket::Typing(true).to_vec().unwrap(), hv("33 01"));
    assert_eq!(
        MessengerPacket::parse(&hv("33 07")).unwrap(),
        MessengerPacket::Typing(true)
    );
    // ONLINE must be exactly one byte (c-toxcore ignores others).
    assert!(MessengerPacket::parse(&hv("18 00")).is_err());
    assert!(MessengerPacket::parse(&hv("10 00")).is_err());
    assert!(MessengerPacket::parse(&[]).is_err());
    assert!(MessengerPacket::parse(&hv("32")).is_err());
    assert_eq!(
        MessengerPacket::Message(b"hi").to_vec().unwrap(),
        hv("40 6869")
    );
    assert!(MessengerPacket::parse(&hv("40")).is_err(), "empty message");
    let long = vec![b'a'; 1373];
    let mut m = vec![64u8];
    m.extend_from_slice(&long[..1372]);
    assert!(MessengerPacket::parse(&m).is_ok());
    m.push(b'a');
    assert!(MessengerPacket::parse(&m).is_err(), "1373-byte message");
    assert!(MessengerPacket::Message(&long).to_vec().is_err());
    let name = vec![b'n'; 129];
    assert!(MessengerPacket::Nickname(&name).to_vec().is_err());
    assert!(MessengerPacket::Nickname(&name[..128]).to_vec().is_ok());
    assert!(MessengerPacket::Nickname(b"").to_vec().is_ok());
}

#[test]
fn share_relays_layout() {
    let p = MessengerPacket::ShareRelays(RelayList::new(&[relay(33445, 7), relay(443, 8)]));
    let v = p.to_vec().unwrap();
    assert_eq!(v.len(), 1 + 39 * 2);
    assert_eq!(&v[..8], &hv("11 82 7f000001 82a5")[..]);
    assert_eq!(MessengerPacket::parse(&v).unwrap(), p);
    // A malformed node makes the whole packet invalid.
    let mut bad = v.clone();
    bad[40] = 99;
    assert!(MessengerPacket::parse(&bad).is_err());
    // At most three nodes are read; extra bytes are ignored.
    let four = RelayList::new(&[relay(1, 1), relay(2, 2), relay(3, 3), relay(4, 4)]);
    assert_eq!(four.len(), 3);
    let mut v3 = MessengerPacket::ShareRelays(four).to_vec().unwrap();
    let mut extra = [0u8; 39];
    relay(4, 4).encode(&mut extra).unwrap();
    v3.extend_from_slice(&extra);
    match MessengerPacket::parse(&v3).unwrap() {
        MessengerPacket::ShareRelays(l) => assert_eq!(l.len(), 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        MessengerPacket::parse(&hv("11")).unwrap(),
        MessengerPacket::ShareRelays(RelayList::default())
    );
}

#[test]
fn file_packets_layout() {
    let p = MessengerPacket::FileSendRequest {
        file_number: 3,
        file_type: 0,
        size: u64::MAX,
        file_id: [0xab; 32],
        name: b"a.txt",
    };
    let v = p.to_vec().unwrap();
    assert_eq!(v.len(), 1 + 45 + 5);
    assert_eq!(&v[..14], &hv("50 03 00000000 ffffffffffffffff")[..]);
    assert_eq!(MessengerPacket::parse(&v).unwrap(), p);

    let accept = MessengerPacket::FileControl {
        send_receive: 1,
        file_number: 3,
        control: FileControlKind::Accept,
    };
    assert_eq!(accept.to_vec().unwrap(), hv("51 01 03 00"));
    let seek = MessengerPacket::FileControl {
        send_receive: 1,
        file_number: 0,
        control: FileControlKind::Seek(0x0102),
    };
    assert_eq!(seek.to_vec().unwrap(), hv("51 01 00 03 0000000000000102"));
    assert!(MessengerPacket::parse(&hv("51 01 00 03 00")).is_err());
    assert!(MessengerPacket::parse(&hv("51 01 00 04")).is_err());
    assert!(MessengerPacket::parse(&hv("51 02 00 00")).is_err());
    assert!(MessengerPacket::parse(&hv("51 01 00 00 00")).is_err());

    let chunk = vec![1u8; MAX_FILE_DATA];
    let d = MessengerPacket::FileData {
        file_number: 0,
        data: &chunk,
    };
    assert_eq!(d.to_vec().unwrap().len(), 1373);
    let big = vec![1u8; MAX_FILE_DATA + 1];
    assert!(MessengerPacket::FileData {
        file_number: 0,
        data: &big
    }
    .to_vec()
    .is_err());
    assert_eq!(
        MessengerPacket::parse(&hv("52 05")).unwrap(),
        MessengerPacket::FileData {
            file_number: 5,
            data: &[]
        }
    );
}

#[test]
fn custom_and_other_ids() {
    let c = hv("a0 000102");
    assert_eq!(
        MessengerPacket::parse(&c).unwrap(),
        MessengerPacket::CustomLossless(&c)
    );
    assert_eq!(MessengerPacket::CustomLossless(&c).to_vec().unwrap(), c);
    assert!(MessengerPacket::CustomLossless(&c).is_lossless());
    let l = hv("c8 ff");
    assert_eq!(
        MessengerPacket::parse(&l).unwrap(),
        MessengerPacket::CustomLossy(&l)
    );
    assert!(!MessengerPacket::CustomLossy(&l).is_lossless());
    // An id outside its range cannot be encoded as custom.
    assert!(MessengerPacket::CustomLossless(&hv("c8 00"))
        .to_vec()
        .is_err());
    assert!(MessengerPacket::CustomLossless(&[]).to_vec().is_err());
    let conf = hv("60 01 02");
    assert_eq!(
        MessengerPacket::parse(&conf).unwrap(),
        MessengerPacket::Other {
            id: 96,
            body: &[1, 2]
        }
    );
    let fr = hv("12 01020304 41");
    assert_eq!(
        MessengerPacket::parse(&fr).unwrap(),
        MessengerPacket::FriendRequest {
            nospam: [1, 2, 3, 4],
            message: b"A"
        }
    );
    assert!(MessengerPacket::parse(&hv("12 01020304")).is_err());
}

proptest! {
    #[test]
    fn parse_encode_is_identity(b in proptest::collection::vec(any::<u8>(), 1..1400)) {
        if let Ok(p) = MessengerPacket::parse(&b) {
            let v = p.to_vec();
            // ShareRelays ignores trailing bytes after three nodes; everything
            // else re-encodes byte for byte.
            if let (Ok(v), false) = (v, matches!(p, MessengerPacket::ShareRelays(_))) {
                prop_assert_eq!(v, b);
            }
        }
    }

    #[test]
    fn share_relays_round_trip(nodes in proptest::collection::vec(arb_node(), 0..=3)) {
        let p = MessengerPacket::ShareRelays(RelayList::new(&nodes));
        let v = p.to_vec().unwrap();
        prop_assert_eq!(MessengerPacket::parse(&v).unwrap(), p);
    }
}
