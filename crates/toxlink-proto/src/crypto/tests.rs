//! Vectors of docs/PROTOCOL.md §10 and cross-backend checks.

use super::backend::{Backend, RustCrypto};
use super::*;
use proptest::prelude::*;

pub(crate) fn h<const N: usize>(s: &str) -> [u8; N] {
    let s: String = s.split_whitespace().collect();
    let v = hex::decode(s).expect("test vector is valid hex");
    v.try_into().expect("test vector has the declared length")
}

pub(crate) fn hv(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("test vector is valid hex")
}

pub(crate) const ALICE_SK: &str =
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
pub(crate) const ALICE_PK: &str =
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
pub(crate) const BOB_SK: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
pub(crate) const BOB_PK: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
pub(crate) const K: &str = "1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389";
pub(crate) const NONCE: &str = "69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37";
const M: &str = "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc
          e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31
          0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde
          048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864
          5e0705";
const BOXED: &str = "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce
          48332ea7164d96a4476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c972
          71d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae
          90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b3
          7973f622a43d14a6599b1f654cb45a74e355a5";

pub(crate) fn alice() -> KeyPair {
    KeyPair::from_secret(SecretKey(h(ALICE_SK)))
}
pub(crate) fn bob() -> KeyPair {
    KeyPair::from_secret(SecretKey(h(BOB_SK)))
}
pub(crate) fn k() -> SharedKey {
    SharedKey(h(K))
}
pub(crate) fn nonce() -> Nonce {
    Nonce(h(NONCE))
}

fn vectors_hold<B: Backend>() {
    assert_eq!(
        B::public_key(&h(ALICE_SK)),
        h::<32>(ALICE_PK),
        "{}",
        B::NAME
    );
    assert_eq!(B::public_key(&h(BOB_SK)), h::<32>(BOB_PK), "{}", B::NAME);
    assert_eq!(B::precompute(&h(BOB_PK), &h(ALICE_SK)), Ok(h::<32>(K)));
    assert_eq!(B::precompute(&h(ALICE_PK), &h(BOB_SK)), Ok(h::<32>(K)));

    let mut buf = vec![0u8; MAC_SIZE];
    buf.extend_from_slice(&hv(M));
    k().seal_in_place_with::<B>(&nonce(), &mut buf).unwrap();
    assert_eq!(buf, hv(BOXED), "{} seal", B::NAME);
    let plain = k().open_in_place_with::<B>(&nonce(), &mut buf).unwrap();
    assert_eq!(plain, &hv(M)[..], "{} open", B::NAME);
}

#[test]
fn rustcrypto_reproduces_nacl_vectors() {
    vectors_hold::<RustCrypto>();
}

#[cfg(feature = "sodium")]
#[test]
fn libsodium_reproduces_nacl_vectors() {
    vectors_hold::<super::backend::Sodium>();
}

/// The small-order points: all zeros (order 4), 1 (order 1), the two order-8
/// points, p - 1 (order 2), p and p + 1 (non-canonical 0 and 1), and each
/// with bit 255 set (X25519 ignores it).
pub(crate) fn low_order_points() -> Vec<[u8; 32]> {
    let mut v = vec![
        [0u8; 32],
        h("0100000000000000000000000000000000000000000000000000000000000000"),
        h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        h("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        h("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        h("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        h("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ];
    let high: Vec<[u8; 32]> = v
        .iter()
        .map(|p| {
            let mut q = *p;
            q[31] |= 0x80;
            q
        })
        .collect();
    v.extend(high);
    v
}

/// The key an attacker derives for a low-order point: HSalsa20 over the
/// all-zero X25519 output.
pub(crate) fn zero_shared_key() -> SharedKey {
    use salsa20::cipher::consts::U10;
    let k = salsa20::hsalsa::<U10>(&[0u8; 32].into(), &Default::default());
    SharedKey(k.into())
}

fn low_order_keys_are_refused<B: Backend>() {
    for sk in [h::<32>(ALICE_SK), h(BOB_SK), [0xff; 32]] {
        for p in low_order_points() {
            assert_eq!(
                B::precompute(&p, &sk),
                Err(CryptoError::LowOrderKey),
                "{} accepted {}",
                B::NAME,
                hex::encode(p)
            );
        }
    }
}

#[test]
fn rustcrypto_refuses_low_order_public_keys_as_libsodium_does() {
    low_order_keys_are_refused::<RustCrypto>();
}

#[cfg(feature = "sodium")]
#[test]
fn libsodium_refuses_low_order_public_keys() {
    low_order_keys_are_refused::<super::backend::Sodium>();
}

#[test]
fn a_low_order_peer_key_never_yields_a_key_anyone_can_compute() {
    for p in low_order_points() {
        let pk = PublicKey(p);
        assert!(pk.is_low_order(), "{}", hex::encode(p));
        assert_eq!(alice().try_precompute(&pk), Err(CryptoError::LowOrderKey));
        // The infallible form gives a key of our secret alone: not the
        // all-zero X25519 result everyone can derive, and not one a
        // different secret would give.
        let ka = alice().precompute(&pk);
        let kb = bob().precompute(&pk);
        assert_ne!(ka, kb);
        assert_ne!(
            ka.0,
            RustCrypto::precompute(&h(ALICE_PK), &h(BOB_SK)).unwrap()
        );
        assert_ne!(ka, zero_shared_key());
    }
    assert!(!alice().public.is_low_order());
    assert!(!bob().public.is_low_order());
}

#[test]
fn hot_path_api_reproduces_box_vector() {
    assert_eq!(alice().precompute(&bob().public), k());
    assert_eq!(k().seal(&nonce(), &hv(M)).unwrap(), hv(BOXED));
    assert_eq!(k().open(&nonce(), &hv(BOXED)).unwrap(), hv(M));
    let mut out = [0u8; 200];
    let n = k().seal_into(&nonce(), &hv(M), &mut out).unwrap();
    assert_eq!(&out[..n], &hv(BOXED)[..]);
}

#[test]
fn every_flipped_byte_of_the_box_fails() {
    let boxed = hv(BOXED);
    for i in 0..boxed.len() {
        let mut b = boxed.clone();
        b[i] ^= 0x01;
        assert_eq!(
            k().open(&nonce(), &b),
            Err(CryptoError::AuthenticationFailed),
            "byte {i}"
        );
    }
}

#[test]
fn length_rules() {
    assert_eq!(k().seal(&nonce(), b""), Err(CryptoError::EmptyPlaintext));
    assert_eq!(
        k().open(&nonce(), &[0u8; 16]),
        Err(CryptoError::BoxTooShort(16))
    );
    assert_eq!(k().open(&nonce(), &[]), Err(CryptoError::BoxTooShort(0)));
    let mut small = [0u8; 10];
    assert_eq!(
        k().seal_into(&nonce(), b"hello", &mut small),
        Err(CryptoError::BufferTooSmall { need: 21, have: 10 })
    );
}

#[test]
fn nonce_vectors() {
    let mut n = nonce();
    n.increment();
    assert_eq!(
        n.0,
        h::<24>("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b38")
    );

    let mut n = Nonce([0; 24]);
    n.0[23] = 0xff;
    n.increment();
    assert_eq!(
        n.0,
        h::<24>("000000000000000000000000000000000000000000000100")
    );

    let mut n = Nonce([0xff; 24]);
    n.increment();
    assert_eq!(n.0, [0u8; 24], "wraps at 2^192");

    assert_eq!(
        nonce().plus(0x10000).0,
        h::<24>("69696ee955b62b73cd62bda875fc73d68219e0036b7b0b37")
    );
    assert_eq!(
        nonce().plus(21845).0,
        h::<24>("69696ee955b62b73cd62bda875fc73d68219e0036b7a608c")
    );
    assert_eq!(nonce().low16(), 0x0b37);
    let mut n = Nonce([0xff; 24]);
    n.add(u32::MAX);
    let mut expect = [0u8; 24];
    expect[20..].copy_from_slice(&(u32::MAX - 1).to_be_bytes());
    assert_eq!(n.0, expect, "full carry of a 32-bit add");
}

#[test]
fn hex_round_trip_and_debug_hides_secrets() {
    let pk = alice().public;
    assert_eq!(PublicKey::from_hex(&pk.to_hex()), Some(pk));
    assert_eq!(PublicKey::from_hex(ALICE_PK), Some(pk));
    assert_eq!(PublicKey::from_hex("zz"), None);
    assert_eq!(format!("{:?}", alice().secret), "SecretKey(..)");
    assert_eq!(format!("{:?}", k()), "SharedKey(..)");
}

#[test]
fn injected_rng_is_deterministic() {
    use rand_chacha::rand_core::SeedableRng;
    let mut a = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let mut b = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    assert_eq!(KeyPair::generate(&mut a), KeyPair::generate(&mut b));
    assert_eq!(Nonce::random(&mut a), Nonce::random(&mut b));
    assert_ne!(KeyPair::generate(&mut a), KeyPair::generate(&mut a));
}

/// Our boxes opened by libsodium's own `crypto_box_open_easy` (not the
/// afternm path we use) and libsodium's `crypto_box_easy` opened by us, with
/// both backends.
#[cfg(feature = "sodium")]
#[test]
fn cross_checked_with_libsodium_crypto_box_easy() {
    let a = alice();
    let b = bob();
    for len in [1usize, 16, 17, 100, 1373, 4096] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let n = nonce().plus(len as u32);

        // ours -> libsodium
        let ours = a.precompute(&b.public).seal(&n, &msg).unwrap();
        let mut opened = vec![0u8; len];
        // SAFETY: pointers valid for the given lengths.
        let rc = unsafe {
            libsodium_sys::crypto_box_open_easy(
                opened.as_mut_ptr(),
                ours.as_ptr(),
                ours.len() as u64,
                n.0.as_ptr(),
                a.public.0.as_ptr(),
                b.secret.0.as_ptr(),
            )
        };
        assert_eq!(rc, 0, "libsodium opens our box of {len}");
        assert_eq!(opened, msg);

        // libsodium -> ours (both backends)
        let mut theirs = vec![0u8; len + MAC_SIZE];
        // SAFETY: pointers valid for the given lengths.
        let rc = unsafe {
            libsodium_sys::crypto_box_easy(
                theirs.as_mut_ptr(),
                msg.as_ptr(),
                len as u64,
                n.0.as_ptr(),
                b.public.0.as_ptr(),
                a.secret.0.as_ptr(),
            )
        };
        assert_eq!(rc, 0);
        let key = b.precompute(&a.public);
        assert_eq!(key.open(&n, &theirs).unwrap(), msg);
        let mut buf = theirs.clone();
        assert_eq!(
            key.open_in_place_with::<RustCrypto>(&n, &mut buf).unwrap(),
            &msg[..]
        );
    }
}

proptest! {
    #[test]
    fn backends_agree(sk_a in any::<[u8; 32]>(), sk_b in any::<[u8; 32]>(),
                      n in any::<[u8; 24]>(), msg in proptest::collection::vec(any::<u8>(), 1..2100)) {
        let a = KeyPair::from_secret(SecretKey(sk_a));
        let b = KeyPair::from_secret(SecretKey(sk_b));
        prop_assert_eq!(a.public.0, RustCrypto::public_key(&sk_a));
        let key = a.precompute(&b.public);
        prop_assert_eq!(Ok(key.0), RustCrypto::precompute(&b.public.0, &sk_a));
        prop_assert_eq!(&key, &b.precompute(&a.public));
        prop_assert!(!b.public.is_low_order());
        let boxed = key.seal(&Nonce(n), &msg).unwrap();
        let mut buf = boxed.clone();
        let plain = key.open_in_place_with::<RustCrypto>(&Nonce(n), &mut buf).unwrap();
        prop_assert_eq!(&plain[..], &msg[..]);
        let mut buf2 = vec![0u8; MAC_SIZE];
        buf2.extend_from_slice(&msg);
        key.seal_in_place_with::<RustCrypto>(&Nonce(n), &mut buf2).unwrap();
        prop_assert_eq!(buf2, boxed);
    }

    #[test]
    fn nonce_add_is_integer_addition(hi in any::<u64>(), lo in any::<u128>(), x in any::<u32>()) {
        // Model the 192-bit nonce as (hi: u64, lo: u128) and compare.
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        let mut n = Nonce(bytes);
        n.add(x);
        let (lo2, carry) = lo.overflowing_add(u128::from(x));
        let hi2 = hi.wrapping_add(u64::from(carry));
        let mut expect = [0u8; 24];
        expect[..8].copy_from_slice(&hi2.to_be_bytes());
        expect[8..].copy_from_slice(&lo2.to_be_bytes());
        prop_assert_eq!(n.0, expect);
    }
}
