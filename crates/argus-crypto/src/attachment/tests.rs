use std::collections::BTreeMap;

use argus_domain::{AttachmentJwk, EncryptedFile};
use sha2::Digest as _;

use super::{AttachmentKey, encrypt_attachment};
use crate::Error;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// The published example of matrix-rust-sdk's attachment tests (`file_encryption/attachments.rs`,
/// Apache-2.0): an `EncryptedFile` and the ciphertext of "It's a secret to everybody".
fn known_answer() -> (Vec<u8>, EncryptedFile) {
    let ciphertext = vec![
        179, 154, 118, 127, 186, 127, 110, 33, 203, 33, 33, 134, 67, 100, 173, 46, 235, 27, 215, 172, 36, 26,
        75, 47, 33, 160,
    ];
    let file = EncryptedFile {
        url: String::new(),
        key: AttachmentJwk {
            kty: "oct".to_owned(),
            key_ops: vec!["encrypt".to_owned(), "decrypt".to_owned()],
            alg: "A256CTR".to_owned(),
            k: "Voq2nkPme_x8no5-Tjq_laDAdxE6iDbxnlQXxwFPgE4".to_owned(),
            ext: true,
        },
        iv: "i0DovxYdJEcAAAAAAAAAAA".to_owned(),
        hashes: BTreeMap::from([(
            "sha256".to_owned(),
            "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU".to_owned(),
        )]),
        v: Some("v2".to_owned()),
    };
    (ciphertext, file)
}

#[test]
fn the_published_example_verifies_and_decrypts() {
    let (mut bytes, file) = known_answer();
    let key = AttachmentKey::from_file(&file).unwrap();
    key.verify_ciphertext(&sha256(&bytes)).unwrap();
    key.cipher().apply(&mut bytes);
    assert_eq!(bytes, b"It's a secret to everybody");
}

#[test]
fn a_padded_iv_and_hash_are_accepted() {
    let (bytes, mut file) = known_answer();
    file.iv.push_str("==");
    file.hashes.insert("sha256".to_owned(), "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU=".to_owned());
    let key = AttachmentKey::from_file(&file).unwrap();
    key.verify_ciphertext(&sha256(&bytes)).unwrap();
}

#[test]
fn round_trip_as_a_client_makes_it() {
    let plaintext: Vec<u8> = (0..10_000_u32).map(|i| (i * 7 % 251) as u8).collect();
    let (ciphertext, file) = encrypt_attachment(&plaintext);
    assert_ne!(ciphertext, plaintext);
    assert_eq!(file.v.as_deref(), Some("v2"));
    assert!(file.url.is_empty());
    assert_eq!(file.key.k.len(), 43, "unpadded base64url of 32 bytes");
    assert!(!file.key.k.contains(['+', '/', '=']));
    let iv = base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, &file.iv).unwrap();
    assert_eq!(iv[8..], [0; 8], "the low 64 bits of the counter block start at zero");
    let key = AttachmentKey::from_file(&file).unwrap();
    key.verify_ciphertext(&sha256(&ciphertext)).unwrap();
    let mut bytes = ciphertext;
    key.cipher().apply(&mut bytes);
    assert_eq!(bytes, plaintext);
    // Two encryptions of the same bytes use different keys.
    assert_ne!(encrypt_attachment(&plaintext).1.key.k, file.key.k);
}

#[test]
fn streaming_in_odd_chunks_equals_one_shot() {
    let plaintext: Vec<u8> = (0..5_003_u32).map(|i| (i % 256) as u8).collect();
    let (ciphertext, file) = encrypt_attachment(&plaintext);
    let key = AttachmentKey::from_file(&file).unwrap();
    for sizes in [&[1_usize, 15, 16, 17, 3][..], &[7], &[4096, 1], &[33, 64, 1000]] {
        let mut bytes = ciphertext.clone();
        let mut cipher = key.cipher();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + size).min(bytes.len());
            cipher.apply(&mut bytes[at..end]);
            at = end;
        }
        assert_eq!(bytes, plaintext, "chunk sizes {sizes:?}");
    }
}

#[test]
fn a_swapped_ciphertext_is_tampered() {
    let (ciphertext, file) = encrypt_attachment(b"original");
    let key = AttachmentKey::from_file(&file).unwrap();
    let (other, _) = encrypt_attachment(b"original");
    let error = key.verify_ciphertext(&sha256(&other)).unwrap_err();
    assert!(matches!(error, Error::AttachmentTampered));
    assert_eq!(error.code(), "TAMPERED");
    let mut flipped = ciphertext.clone();
    flipped[0] ^= 1;
    assert!(key.verify_ciphertext(&sha256(&flipped)).is_err());
    key.verify_ciphertext(&sha256(&ciphertext)).unwrap();
}

/// A change made to a well-formed `EncryptedFile`.
type Change = Box<dyn FnOnce(&mut EncryptedFile)>;

fn refusal(change: impl FnOnce(&mut EncryptedFile)) -> Error {
    let (_, mut file) = encrypt_attachment(b"x");
    change(&mut file);
    AttachmentKey::from_file(&file).unwrap_err()
}

#[test]
fn every_malformed_file_is_refused_with_its_reason() {
    let cases: [(&str, Change); 13] = [
        ("UNSUPPORTED_VERSION", Box::new(|f| f.v = Some("v1".to_owned()))),
        ("UNSUPPORTED_VERSION", Box::new(|f| f.v = None)),
        ("UNSUPPORTED_KEY", Box::new(|f| f.key.kty = "RSA".to_owned())),
        ("UNSUPPORTED_KEY", Box::new(|f| f.key.alg = "A128CTR".to_owned())),
        ("UNSUPPORTED_KEY", Box::new(|f| f.key.key_ops = vec!["encrypt".to_owned()])),
        ("BAD_KEY_LENGTH", Box::new(|f| f.key.k = "AAAAAAAAAAAAAAAAAAAAAA".to_owned())),
        ("BAD_KEY_LENGTH", Box::new(|f| f.key.k = "not base64url!".to_owned())),
        ("BAD_KEY_LENGTH", Box::new(|f| f.key.k = format!("{}AAAA", f.key.k))),
        ("BAD_IV", Box::new(|f| f.iv = "AAAAAAAAAAAAAAAAAAAA".to_owned())),
        ("BAD_IV", Box::new(|f| f.iv = "%%%".to_owned())),
        ("NO_HASH", Box::new(|f| f.hashes.clear())),
        ("NO_HASH", Box::new(|f| _ = f.hashes.insert("sha256".to_owned(), "AAAA".to_owned()))),
        ("NO_HASH", Box::new(|f| _ = f.hashes.insert("sha256".to_owned(), "*".to_owned()))),
    ];
    for (code, change) in cases {
        let (_, mut file) = encrypt_attachment(b"x");
        let k = file.key.k.clone();
        change(&mut file);
        let error = AttachmentKey::from_file(&file).unwrap_err();
        assert_eq!(error.code(), code, "{error}");
        assert!(!error.to_string().contains(&k), "the message never carries the key");
    }
    assert!(matches!(refusal(|f| f.v = Some("v3".to_owned())), Error::UnsupportedAttachmentVersion));
}

#[test]
fn debug_never_shows_the_key() {
    let (_, file) = encrypt_attachment(b"x");
    let key = AttachmentKey::from_file(&file).unwrap();
    assert!(!format!("{key:?}").contains(&file.key.k));
    assert!(!format!("{:?}", key.cipher()).contains(&file.key.k));
}
