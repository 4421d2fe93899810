//! Staging fetched bodies and decrypting encrypted files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argus_crypto::attachment::encrypt_attachment;
use argus_domain::Sha256Digest;
use argus_media::{Error, Staging};
use bytes::Bytes;
use futures::StreamExt as _;

use crate::{entries, stage, unique_bytes};

fn staging() -> (tempfile::TempDir, Staging) {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    (dir, staging)
}

#[tokio::test]
async fn a_body_is_hashed_sized_and_sniffed_while_staged() {
    let (_dir, staging) = staging();
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend(unique_bytes(100_000));
    let staged = stage(&staging, &pdf, 999).await;
    assert_eq!(staged.sha256, Sha256Digest::of(&pdf));
    assert_eq!(staged.size, pdf.len() as u64);
    assert_eq!(staged.sniffed_mimetype, "application/pdf");
    assert_eq!(std::fs::read(staged.path()).unwrap(), pdf);
    let path = staged.path().to_path_buf();
    drop(staged);
    assert!(!path.exists(), "a staged file is removed when dropped");
}

#[tokio::test]
async fn a_body_at_the_cap_is_kept_and_one_byte_more_is_too_large() {
    let (dir, staging) = staging();
    let chunks = |n: usize| {
        futures::stream::iter((0..n).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7_u8; 1000]))))
    };
    let kept = staging.stage(chunks(5), 5_000).await.unwrap();
    assert_eq!(kept.size, 5_000);
    drop(kept);
    let error = staging.stage(chunks(6), 5_999).await.unwrap_err();
    assert!(matches!(error, Error::TooLarge { cap: 5_999 }), "{error}");
    assert_eq!(error.code(), "TOO_LARGE");
    assert!(entries(&dir.path().join("staging")).is_empty(), "no temporary file is left");
}

#[tokio::test]
async fn an_endless_body_stops_at_the_cap() {
    let (dir, staging) = staging();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pulled);
    let endless = futures::stream::repeat_with(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok::<_, std::io::Error>(Bytes::from(vec![0_u8; 64 * 1024]))
    });
    let cap = 1024 * 1024;
    let error = staging.stage(endless, cap).await.unwrap_err();
    assert!(matches!(error, Error::TooLarge { .. }));
    assert_eq!(pulled.load(Ordering::Relaxed), cap / (64 * 1024) + 1, "not read past the cap");
    assert!(entries(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn a_failing_body_is_a_body_error_and_leaves_nothing() {
    let (dir, staging) = staging();
    let body = futures::stream::iter([
        Ok(Bytes::from_static(b"first part")),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
    ]);
    let error = staging.stage(body, 1 << 20).await.unwrap_err();
    assert!(matches!(&error, Error::Body(words) if words.contains("connection reset")), "{error}");
    assert!(entries(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn an_encrypted_file_decrypts_as_a_client_encrypted_it() {
    let (dir, staging) = staging();
    let mut plaintext = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    plaintext.extend(unique_bytes(3 * 1024 * 1024 + 17));
    let (ciphertext, file) = encrypt_attachment(&plaintext);
    let staged = stage(&staging, &ciphertext, 65_537).await;
    let decrypted = staging.decrypt(&staged, &file).await.unwrap();
    assert_eq!(decrypted.sha256, Sha256Digest::of(&plaintext));
    assert_eq!(decrypted.size, plaintext.len() as u64);
    assert_eq!(decrypted.sniffed_mimetype, "image/png");
    assert!(std::fs::read(decrypted.path()).unwrap() == plaintext);
    drop((staged, decrypted));
    assert!(entries(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn a_swapped_ciphertext_is_tampered_and_nothing_is_decrypted() {
    let (dir, staging) = staging();
    let (_, file) = encrypt_attachment(b"the real report");
    let (other, _) = encrypt_attachment(b"the real report");
    let staged = stage(&staging, &other, 4).await;
    let error = staging.decrypt(&staged, &file).await.unwrap_err();
    assert!(matches!(error, Error::Tampered), "{error}");
    assert_eq!(error.code(), "TAMPERED");
    assert_eq!(entries(&dir.path().join("staging")).len(), 1, "only the staged ciphertext");
}

#[tokio::test]
async fn malformed_encrypted_files_are_refused_with_their_code() {
    let (_dir, staging) = staging();
    let (ciphertext, good) = encrypt_attachment(b"x");
    let staged = stage(&staging, &ciphertext, 1).await;
    let mut short_key = good.clone();
    short_key.key.k = short_key.key.k[..20].to_owned();
    let v1 = argus_domain::EncryptedFile { v: Some("v1".to_owned()), ..good.clone() };
    let no_v = argus_domain::EncryptedFile { v: None, ..good.clone() };
    for (file, code) in
        [(short_key, "BAD_KEY_LENGTH"), (v1, "UNSUPPORTED_VERSION"), (no_v, "UNSUPPORTED_VERSION")]
    {
        let error = staging.decrypt(&staged, &file).await.unwrap_err();
        assert!(matches!(&error, Error::InvalidEncryptedFile(c) if c == code), "{error}");
        assert!(!error.to_string().contains(&good.key.k));
    }
    staging.decrypt(&staged, &good).await.unwrap();
}

#[tokio::test]
async fn a_staged_file_streams_back_in_chunks() {
    let (_dir, staging) = staging();
    let bytes = unique_bytes(1024 * 1024 + 5);
    let staged = stage(&staging, &bytes, 1 << 16).await;
    let chunks: Vec<Bytes> = staged.stream().await.unwrap().map(Result::unwrap).collect().await;
    assert!(chunks.len() > 1);
    assert!(chunks.concat() == bytes);
}
