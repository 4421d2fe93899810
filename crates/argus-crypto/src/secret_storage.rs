//! Secret storage (`m.secret_storage.v1.aes-hmac-sha2`, Client-Server API "Secret storage"):
//! checking a secret-storage key against its description and decrypting a secret with it
//! (AES-256-CTR and HMAC-SHA-256 under keys derived with HKDF-SHA-256 from the key and the
//! secret's name), with the RustCrypto crates.

use std::collections::HashMap;

use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use argus_domain::Secret;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

use crate::{
    Error, Result,
    encoding::{decode_b64, iv_of},
};

/// The secret-storage algorithm of security keys.
pub const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";

type HmacSha256 = Hmac<Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The content of the account data `m.secret_storage.default_key`.
#[derive(Debug, Clone, Deserialize)]
pub struct DefaultKey {
    /// The id of the default secret-storage key (`m.secret_storage.key.<id>` describes it).
    pub key: String,
}

/// The description of a secret-storage key in account data (`m.secret_storage.key.<id>`).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyDescription {
    /// Must be [`SECRET_STORAGE_ALGORITHM`].
    pub algorithm: String,
    /// Base64 IV of the key check.
    #[serde(default)]
    pub iv: Option<String>,
    /// Base64 MAC of the key check.
    #[serde(default)]
    pub mac: Option<String>,
}

impl KeyDescription {
    /// Whether a key can be told wrong by this description alone: an algorithm this crate does
    /// not read (refused at once), or a key check (`iv` and `mac`).
    pub fn can_check(&self) -> bool {
        self.algorithm != SECRET_STORAGE_ALGORITHM || (self.iv.is_some() && self.mac.is_some())
    }
}

/// The account data content of a stored secret: the secret encrypted under each key that holds
/// it, by key id.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredSecret {
    /// The secret under each key.
    pub encrypted: HashMap<String, EncryptedSecret>,
}

/// A secret as secret storage keeps it, under one key (`encrypted.<key id>`).
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedSecret {
    /// Base64 IV (16 bytes).
    pub iv: String,
    /// Base64 AES-256-CTR ciphertext.
    pub ciphertext: String,
    /// Base64 HMAC-SHA-256 of the ciphertext.
    pub mac: String,
}

/// A secret-storage key (`m.secret_storage.v1.aes-hmac-sha2`). `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct SecretStorageKey(Secret<[u8; 32]>);

impl SecretStorageKey {
    /// The key from its 32 bytes, held as a secret.
    pub fn from_secret(key: Secret<[u8; 32]>) -> Self {
        Self(key)
    }

    /// The AES-256-CTR keystream and the HMAC-SHA-256 of the secret `name` under this key, from
    /// `iv` (HKDF-SHA-256 of the key, 32 zero bytes of salt, the name as info).
    fn cipher(&self, name: &str, iv: [u8; 16]) -> (Aes256Ctr, HmacSha256) {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), self.0.expose_value());
        let mut okm = [0u8; 64];
        // 64 bytes is far below HKDF-SHA-256's limit.
        let _ = hkdf.expand(name.as_bytes(), &mut okm);
        let (aes, mac) = okm.split_at(32);
        let aes: [u8; 32] = aes.try_into().unwrap_or_else(|_| unreachable!("32 of 64 bytes"));
        let mac = <HmacSha256 as hmac::Mac>::new_from_slice(mac)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        (Aes256Ctr::new(&aes.into(), &iv.into()), mac)
    }

    /// Encrypts `plaintext` as the secret `name` with `iv`, as a client storing a secret does.
    pub fn encrypt(&self, name: &str, plaintext: &[u8], iv: [u8; 16]) -> EncryptedSecret {
        let (mut ctr, mut mac) = self.cipher(name, iv);
        let mut data = plaintext.to_vec();
        ctr.apply_keystream(&mut data);
        mac.update(&data);
        EncryptedSecret {
            iv: STANDARD.encode(iv),
            ciphertext: STANDARD.encode(&data),
            mac: STANDARD.encode(mac.finalize().into_bytes()),
        }
    }

    /// Decrypts the secret `name`, after checking its MAC (constant time): a wrong key or an
    /// altered secret is [`Error::WrongRecoveryKey`] (the caller tells the two apart).
    pub fn decrypt(&self, name: &str, secret: &EncryptedSecret) -> Result<Secret<Vec<u8>>> {
        let iv = iv_of("secret iv", &secret.iv)?;
        let mut data = decode_b64("secret ciphertext", &secret.ciphertext)?;
        let expected = decode_b64("secret mac", &secret.mac)?;
        let (mut ctr, mut mac) = self.cipher(name, iv);
        mac.update(&data);
        mac.verify_slice(&expected).map_err(|_| Error::WrongRecoveryKey)?;
        ctr.apply_keystream(&mut data);
        Ok(Secret::from_value(data))
    }

    /// Checks this key against its description: encrypting 32 zero bytes under the empty name
    /// with the description's IV must give its MAC (compared in constant time). A description
    /// without a check is accepted only by the MAC of the secret itself.
    pub fn check(&self, description: &KeyDescription) -> Result<()> {
        if description.algorithm != SECRET_STORAGE_ALGORITHM {
            return Err(Error::unsupported("secret storage algorithm", &description.algorithm));
        }
        let (Some(iv), Some(expected)) = (&description.iv, &description.mac) else { return Ok(()) };
        let expected = decode_b64("key mac", expected)?;
        let (mut ctr, mut mac) = self.cipher("", iv_of("key iv", iv)?);
        let mut zeros = [0u8; 32];
        ctr.apply_keystream(&mut zeros);
        mac.update(&zeros);
        mac.verify_slice(&expected).map_err(|_| Error::WrongRecoveryKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        RecoveryKey,
        backup::{BACKUP_SECRET, BackupKey},
        test_support::b64,
    };

    #[test]
    fn secret_storage_checks_the_key_and_decrypts_the_backup_secret() {
        let key = RecoveryKey::from_bytes([42u8; 32]).as_secret_storage_key();
        let check = key.encrypt("", &[0u8; 32], [1u8; 16]);
        let description = KeyDescription {
            algorithm: SECRET_STORAGE_ALGORITHM.to_owned(),
            iv: Some(check.iv),
            mac: Some(check.mac),
        };
        key.check(&description).unwrap_or_else(|e| panic!("{e}"));
        let other = RecoveryKey::from_bytes([43u8; 32]).as_secret_storage_key();
        assert!(matches!(other.check(&description), Err(Error::WrongRecoveryKey)));
        let unknown = KeyDescription { algorithm: "m.secret_storage.v2".to_owned(), ..description.clone() };
        assert!(matches!(key.check(&unknown), Err(Error::UnsupportedAlgorithm(_))));

        let backup_secret = b64(&[9u8; 32]);
        let stored = key.encrypt(BACKUP_SECRET, backup_secret.as_bytes(), [2u8; 16]);
        let secret = key.decrypt(BACKUP_SECRET, &stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secret.expose_value(), backup_secret.as_bytes());
        // The wrong key, another secret's name, or an altered ciphertext fail the MAC.
        assert!(matches!(other.decrypt(BACKUP_SECRET, &stored), Err(Error::WrongRecoveryKey)));
        assert!(matches!(key.decrypt("m.cross_signing.master", &stored), Err(Error::WrongRecoveryKey)));
        let mut altered = stored.clone();
        altered.ciphertext = b64(&[0u8; 44]);
        assert!(matches!(key.decrypt(BACKUP_SECRET, &altered), Err(Error::WrongRecoveryKey)));
        let mut garbage = stored;
        garbage.iv = "!!".to_owned();
        assert!(matches!(key.decrypt(BACKUP_SECRET, &garbage), Err(Error::Malformed(_))));
        let backup = BackupKey::from_secret(&secret).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(backup.public_key(), BackupKey::from_bytes([9u8; 32]).public_key());
    }
}
