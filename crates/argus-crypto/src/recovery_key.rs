//! The key the user holds ([`RecoveryKey`]): an Element *security key* (a secret-storage key)
//! or a legacy backup recovery key (the backup's private key itself), in its base58 form with
//! prefix and parity (Client-Server API, "Key representation").

use std::str::FromStr;

use argus_domain::Secret;

use crate::{Error, Result, backup::BackupKey, secret_storage::SecretStorageKey};

/// The two bytes in front of a recovery key.
const RECOVERY_KEY_PREFIX: [u8; 2] = [0x8b, 0x01];

/// The key the user holds: an Element security key or a legacy backup recovery key, 32 bytes.
/// `Debug` never shows it (a [`Secret`]).
#[derive(Clone, Debug)]
pub struct RecoveryKey(Secret<[u8; 32]>);

impl FromStr for RecoveryKey {
    type Err = Error;

    /// Parses the base58 form (spaces ignored): `0x8B 0x01`, the 32 key bytes, and a parity
    /// byte that makes the XOR of all bytes zero.
    fn from_str(text: &str) -> Result<Self> {
        let wrong = || Error::WrongRecoveryKey;
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() || compact.len() > 64 {
            return Err(wrong());
        }
        let bytes = bs58::decode(compact).into_vec().map_err(|_| wrong())?;
        if bytes.len() != 35 || bytes[..2] != RECOVERY_KEY_PREFIX || bytes.iter().fold(0u8, |a, b| a ^ b) != 0
        {
            return Err(wrong());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[2..34]);
        Ok(Self(Secret::from_value(key)))
    }
}

impl RecoveryKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret::from_value(bytes))
    }

    /// The base58 form users are shown (groups of four characters).
    pub fn to_base58(&self) -> String {
        let mut bytes = Vec::with_capacity(35);
        bytes.extend_from_slice(&RECOVERY_KEY_PREFIX);
        bytes.extend_from_slice(self.0.expose_value());
        let parity = bytes.iter().fold(0u8, |a, b| a ^ b);
        bytes.push(parity);
        let text = bs58::encode(bytes).into_string();
        text.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// This key as a secret-storage key.
    pub fn as_secret_storage_key(&self) -> SecretStorageKey {
        SecretStorageKey::from_secret(self.0.clone())
    }

    /// This key as the backup's private key itself (a legacy recovery key).
    pub fn as_backup_key(&self) -> BackupKey {
        BackupKey::from_bytes(*self.0.expose_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_keys_round_trip_and_malformed_ones_are_refused() {
        let key = RecoveryKey::from_bytes([7u8; 32]);
        let text = key.to_base58();
        assert!(text.starts_with("Es"), "{text}");
        let parsed: RecoveryKey = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.0.expose_value(), &[7u8; 32]);
        assert!(!format!("{parsed:?}").contains("7, 7"));
        // One character changed breaks the parity (or the base58); nothing panics.
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        let altered: String = chars.into_iter().collect();
        for bad in [altered.as_str(), "", "0OIl", "EsT", &"Es".repeat(40)] {
            assert!(matches!(bad.parse::<RecoveryKey>(), Err(Error::WrongRecoveryKey)), "{bad}");
        }
    }
}
