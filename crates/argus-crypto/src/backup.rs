//! Server-side key backup (`m.megolm_backup.v1.curve25519-aes-sha2`, Client-Server API
//! "Server-side key backups"): the backup's private key ([`BackupKey`]), checked against the
//! backup version's public key, and the backed-up sessions it decrypts (with vodozemac's
//! `PkDecryption`) into megolm sessions.

use std::fmt;

use argus_domain::Secret;
use serde::Deserialize;
use vodozemac::{
    Curve25519PublicKey, Curve25519SecretKey,
    megolm::{ExportedSessionKey, InboundGroupSession, SessionConfig},
    pk_encryption::{Message as PkMessage, PkDecryption},
};

use crate::{
    Error, Result,
    encoding::{MAX_FIELD_BYTES, decode_b64},
    megolm::{MEGOLM_ALGORITHM, Undecryptable},
};

/// The backup algorithm this crate reads.
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
/// The name of the secret holding the backup's private key.
pub const BACKUP_SECRET: &str = "m.megolm_backup.v1";

/// The backup's private key. Its public key must match the backup version before use.
pub struct BackupKey(PkDecryption);

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackupKey").field(&self.public_key()).finish()
    }
}

/// What a backed-up session decrypts into.
#[derive(Deserialize)]
struct BackedUpSession {
    algorithm: String,
    session_key: String,
    /// The Curve25519 key of the device that created the session.
    #[serde(default)]
    sender_key: Option<String>,
}

/// One session of `GET /room_keys/keys/{roomId}` (`KeyBackupData`).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyBackupData {
    /// The first message index the backed-up session can decrypt.
    #[serde(default)]
    pub first_message_index: u64,
    /// The encrypted session.
    pub session_data: SessionData,
}

/// The encrypted session of a [`KeyBackupData`].
#[derive(Debug, Clone, Deserialize)]
pub struct SessionData {
    /// Base64 ephemeral Curve25519 key.
    pub ephemeral: String,
    /// Base64 ciphertext.
    pub ciphertext: String,
    /// Base64 MAC.
    pub mac: String,
}

impl BackupKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(PkDecryption::from_key(Curve25519SecretKey::from_slice(&bytes)))
    }

    /// The key from the secret `m.megolm_backup.v1` (base64 of the 32 bytes).
    pub fn from_secret(secret: &Secret<Vec<u8>>) -> Result<Self> {
        let text = std::str::from_utf8(secret.expose_value()).map_err(|_| Error::KeyBackupMismatch)?;
        let bytes: [u8; 32] =
            decode_b64("backup key", text.trim())?.try_into().map_err(|_| Error::KeyBackupMismatch)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The public key, base64 as `auth_data.public_key` holds it.
    pub fn public_key(&self) -> String {
        self.0.public_key().to_base64()
    }

    /// Refuses a backup whose algorithm is not [`BACKUP_ALGORITHM`], or whose `auth_data` public
    /// key is not this key's: its data would be someone else's, or forged.
    pub fn verify(&self, algorithm: &str, auth_public_key: &str) -> Result<()> {
        if algorithm != BACKUP_ALGORITHM {
            return Err(Error::unsupported("backup algorithm", algorithm));
        }
        let theirs = Curve25519PublicKey::from_base64(auth_public_key.trim_end_matches('='))
            .map_err(|_| Error::malformed("backup public key: not a Curve25519 key"))?;
        if theirs != self.0.public_key() {
            return Err(Error::KeyBackupMismatch);
        }
        Ok(())
    }

    /// Decrypts one backed-up session into a megolm session, or says why it cannot be used.
    pub fn decrypt_session(&self, data: &KeyBackupData) -> Result<InboundGroupSession, Undecryptable> {
        self.decrypt_session_with_sender(data).map(|(session, _)| session)
    }

    /// Like [`BackupKey::decrypt_session`], with the Curve25519 key of the device that created
    /// the session, as the backup records it.
    pub fn decrypt_session_with_sender(
        &self,
        data: &KeyBackupData,
    ) -> Result<(InboundGroupSession, Option<String>), Undecryptable> {
        let s = &data.session_data;
        if [&s.ephemeral, &s.ciphertext, &s.mac].iter().any(|f| f.len() > MAX_FIELD_BYTES) {
            return Err(Undecryptable::Malformed);
        }
        let message = PkMessage::from_base64(&s.ciphertext, &s.mac, &s.ephemeral)
            .map_err(|_| Undecryptable::Malformed)?;
        let plaintext = self.0.decrypt(&message).map_err(|_| Undecryptable::BadMac)?;
        let session: BackedUpSession =
            serde_json::from_slice(&plaintext).map_err(|_| Undecryptable::Malformed)?;
        if session.algorithm != MEGOLM_ALGORITHM {
            return Err(Undecryptable::UnsupportedAlgorithm);
        }
        let key =
            ExportedSessionKey::from_base64(&session.session_key).map_err(|_| Undecryptable::Malformed)?;
        Ok((InboundGroupSession::import(&key, SessionConfig::version_1()), session.sender_key))
    }
}

#[cfg(test)]
mod tests {
    use vodozemac::megolm::{GroupSession, SessionKey};

    use super::*;
    use crate::{
        megolm::{EncryptedContent, SessionKeys},
        test_support::{ROOM, backed_up, encrypt},
    };

    #[test]
    fn history_decrypts_from_the_backup_and_each_failure_has_its_reason() {
        use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};

        use crate::test_support::b64;

        let backup = BackupKey::from_bytes([5u8; 32]);
        let public = backup.public_key();
        backup.verify(BACKUP_ALGORITHM, &public).unwrap_or_else(|e| panic!("{e}"));
        let stranger = BackupKey::from_bytes([6u8; 32]).public_key();
        assert!(matches!(backup.verify(BACKUP_ALGORITHM, &stranger), Err(Error::KeyBackupMismatch)));
        assert!(matches!(backup.verify("m.megolm_backup.v2", &public), Err(Error::UnsupportedAlgorithm(_))));

        // A sender's session, a message before its backed-up index, and a rotated session.
        let mut outbound = GroupSession::new(SessionConfig::version_1());
        let inbound = InboundGroupSession::new(
            &SessionKey::from_base64(&outbound.session_key().to_base64()).unwrap_or_else(|e| panic!("{e}")),
            SessionConfig::version_1(),
        );
        let early = encrypt(&mut outbound, ROOM, "avant la sauvegarde");
        let first = encrypt(&mut outbound, ROOM, "rendez-vous à 10h");
        let elsewhere = encrypt(&mut outbound, "!autre:tchap.test", "rejoué");
        let mut rotated = GroupSession::new(SessionConfig::version_1());
        let rotated_inbound = InboundGroupSession::new(&rotated.session_key(), SessionConfig::version_1());
        let after_rotation = encrypt(&mut rotated, ROOM, "nouvelle session");
        let mut unknown = GroupSession::new(SessionConfig::version_1());
        let not_backed_up = encrypt(&mut unknown, ROOM, "jamais sauvegardé");

        let mut keys = SessionKeys::default();
        keys.insert(
            backup.decrypt_session(&backed_up(&public, &inbound, 1)).unwrap_or_else(|e| panic!("{e:?}")),
        );
        keys.insert(
            backup
                .decrypt_session(&backed_up(&public, &rotated_inbound, 0))
                .unwrap_or_else(|e| panic!("{e:?}")),
        );
        assert_eq!(keys.len(), 2);

        let ok = keys.decrypt(ROOM, &first).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.event_type, "m.room.message");
        assert_eq!(ok.content["body"], "rendez-vous à 10h");
        assert_eq!(ok.message_index, 1);
        assert_eq!(
            keys.decrypt(ROOM, &after_rotation).map(|e| e.content["body"].clone()),
            Ok(serde_json::json!("nouvelle session"))
        );
        assert_eq!(keys.decrypt(ROOM, &early), Err(Undecryptable::IndexBeforeFirstKnown));
        assert_eq!(keys.decrypt(ROOM, &not_backed_up), Err(Undecryptable::NoKeyInBackup));
        assert_eq!(keys.decrypt(ROOM, &elsewhere), Err(Undecryptable::WrongRoom));
        let mut tampered = first.clone();
        let mut raw =
            STANDARD_NO_PAD.decode(tampered.ciphertext.as_deref().unwrap_or_default()).unwrap_or_default();
        raw[10] ^= 1;
        tampered.ciphertext = Some(b64(&raw));
        assert!(matches!(
            keys.decrypt(ROOM, &tampered),
            Err(Undecryptable::BadMac | Undecryptable::Malformed)
        ));
        let olm = EncryptedContent { algorithm: "m.olm.v1.curve25519-aes-sha2".to_owned(), ..first.clone() };
        assert_eq!(keys.decrypt(ROOM, &olm), Err(Undecryptable::UnsupportedAlgorithm));
        let garbage = EncryptedContent { ciphertext: Some("%%%".to_owned()), ..first.clone() };
        assert_eq!(keys.decrypt(ROOM, &garbage), Err(Undecryptable::Malformed));

        // With the sending device the backup records, an event naming another device is refused.
        let (session, sender) = backup
            .decrypt_session_with_sender(&backed_up(&public, &inbound, 1))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sender.as_deref(), Some("c2VuZGVy"));
        let mut bound = SessionKeys::default();
        bound.insert_from(session, sender);
        let claimed = |key: &str| EncryptedContent { sender_key: Some(key.to_owned()), ..first.clone() };
        assert_eq!(bound.decrypt(ROOM, &claimed("b3RoZXI")), Err(Undecryptable::SenderKeyMismatch));
        assert!(bound.decrypt(ROOM, &claimed("c2VuZGVy")).is_ok());

        // A backed-up session encrypted to another backup key, or mangled, is refused with a reason.
        let foreign = backed_up(&stranger, &inbound, 0);
        assert_eq!(backup.decrypt_session(&foreign).err(), Some(Undecryptable::BadMac));
        let mut mangled = backed_up(&public, &inbound, 0);
        mangled.session_data.ephemeral = "short".to_owned();
        assert_eq!(backup.decrypt_session(&mangled).err(), Some(Undecryptable::Malformed));
    }
}
