//! Encrypted attachments (spec "Sending encrypted attachments"): checking an `EncryptedFile`
//! before its ciphertext is trusted, the constant-time check of the ciphertext's SHA-256, and
//! AES-256-CTR decryption that streams across calls. No I/O: the caller reads and writes the
//! bytes (`argus-media` stages them in files).
//!
//! ```
//! use argus_crypto::attachment::{AttachmentKey, encrypt_attachment};
//! use sha2::Digest as _;
//!
//! let (ciphertext, file) = encrypt_attachment(b"situation report");
//! let key = AttachmentKey::from_file(&file)?;
//! key.verify_ciphertext(&sha2::Sha256::digest(&ciphertext).into())?;
//! let mut bytes = ciphertext;
//! key.cipher().apply(&mut bytes);
//! assert_eq!(bytes, b"situation report");
//! # Ok::<(), argus_crypto::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use aes::Aes256;
use argus_domain::{AttachmentJwk, EncryptedFile};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

use crate::{Error, Result};

/// AES-256 in counter mode with a 128-bit big-endian counter, as the spec's `A256CTR`.
type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// The only `EncryptedFile` version accepted.
const VERSION: &str = "v2";

/// The checked key material of one encrypted file: its AES key, initial counter block and the
/// SHA-256 its ciphertext must have. The key is zeroised on drop and never printed.
pub struct AttachmentKey {
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
    sha256: [u8; 32],
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentKey").field("key", &"[redacted]").finish_non_exhaustive()
    }
}

impl AttachmentKey {
    /// Checks an `EncryptedFile` as its message carried it: version `v2`, an `oct` `A256CTR`
    /// key allowed to encrypt and decrypt, a 32-byte key, a 16-byte counter block and a
    /// 32-byte SHA-256 of the ciphertext. Each refusal is its own [`Error`] (see
    /// [`Error::code`]); none carries the key.
    pub fn from_file(file: &EncryptedFile) -> Result<Self> {
        if file.v.as_deref() != Some(VERSION) {
            return Err(Error::UnsupportedAttachmentVersion);
        }
        check_jwk(&file.key)?;
        let key = decode_key(&file.key.k)?;
        let iv = decode_b64(&file.iv)
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
            .ok_or(Error::BadAttachmentIv)?;
        let digest = file.hashes.get("sha256").ok_or(Error::NoAttachmentHash)?;
        let sha256 = decode_b64(digest)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(Error::NoAttachmentHash)?;
        Ok(Self { key, iv, sha256 })
    }

    /// The SHA-256 the ciphertext must have, as the message declared it.
    pub fn expected_sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Compares the ciphertext's computed SHA-256 with the declared one in constant time;
    /// a mismatch is [`Error::AttachmentTampered`]. Call it before decrypting a byte.
    pub fn verify_ciphertext(&self, computed_sha256: &[u8; 32]) -> Result<()> {
        if bool::from(self.sha256.ct_eq(computed_sha256)) { Ok(()) } else { Err(Error::AttachmentTampered) }
    }

    /// A fresh cipher positioned at the file's first byte.
    pub fn cipher(&self) -> AttachmentCipher {
        AttachmentCipher { inner: Aes256Ctr::new((&*self.key).into(), (&self.iv).into()) }
    }
}

/// AES-256-CTR over one file, streaming: successive [`AttachmentCipher::apply`] calls continue
/// where the previous one stopped, whatever the chunk sizes. Encrypting and decrypting are the
/// same operation. Its key schedule is zeroised on drop.
pub struct AttachmentCipher {
    inner: Aes256Ctr,
}

impl fmt::Debug for AttachmentCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentCipher").finish_non_exhaustive()
    }
}

impl AttachmentCipher {
    /// Applies the keystream to `buf` in place, continuing from the previous call.
    ///
    /// A file so long that the 128-bit counter would wrap cannot exist; should it, the
    /// remaining bytes are left unchanged rather than panicking.
    pub fn apply(&mut self, buf: &mut [u8]) {
        let _ = self.inner.try_apply_keystream(buf);
    }
}

/// Encrypts `plaintext` as a client does: a random 32-byte key, a random counter block whose
/// low 64 bits are zero, version `v2` and the SHA-256 of the ciphertext. The `url` is left
/// empty for the caller to fill once the ciphertext is uploaded.
pub fn encrypt_attachment(plaintext: &[u8]) -> (Vec<u8>, EncryptedFile) {
    let mut rng = rand::thread_rng();
    let mut key = Zeroizing::new([0_u8; 32]);
    rng.fill_bytes(key.as_mut_slice());
    let mut iv = [0_u8; 16];
    rng.fill_bytes(&mut iv[..8]);
    let mut ciphertext = plaintext.to_vec();
    Aes256Ctr::new((&*key).into(), (&iv).into()).apply_keystream(&mut ciphertext);
    let digest = sha2::Sha256::digest(&ciphertext);
    let mut k = URL_SAFE_NO_PAD.encode(key.as_slice());
    let jwk = AttachmentJwk {
        kty: "oct".to_owned(),
        key_ops: vec!["encrypt".to_owned(), "decrypt".to_owned()],
        alg: "A256CTR".to_owned(),
        k: k.clone(),
        ext: true,
    };
    k.zeroize();
    let file = EncryptedFile {
        url: String::new(),
        key: jwk,
        iv: STANDARD_NO_PAD.encode(iv),
        hashes: BTreeMap::from([("sha256".to_owned(), STANDARD_NO_PAD.encode(digest))]),
        v: Some(VERSION.to_owned()),
    };
    (ciphertext, file)
}

fn check_jwk(jwk: &AttachmentJwk) -> Result<()> {
    let allows = |op: &str| jwk.key_ops.iter().any(|o| o == op);
    if jwk.kty != "oct" || jwk.alg != "A256CTR" || !allows("encrypt") || !allows("decrypt") {
        return Err(Error::UnsupportedAttachmentKey);
    }
    Ok(())
}

/// The 32-byte key from its unpadded base64url form (padding tolerated).
fn decode_key(k: &str) -> Result<Zeroizing<[u8; 32]>> {
    if k.len() > 64 {
        return Err(Error::BadAttachmentKeyLength);
    }
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD.decode(k.trim_end_matches('=')).map_err(|_| Error::BadAttachmentKeyLength)?,
    );
    let mut key = Zeroizing::new([0_u8; 32]);
    if bytes.len() != key.len() {
        return Err(Error::BadAttachmentKeyLength);
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Standard base64, padded or not; `None` when it is not base64 or absurdly long.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    if text.len() > 128 {
        return None;
    }
    STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests;
