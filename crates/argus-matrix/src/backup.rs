//! Loading a room's keys from the account's server-side key backup: the network steps of the
//! chain whose cryptography is [`argus_crypto`]'s (Client-Server API, "Server-side key backups"
//! and "Secret storage").
//!
//! 1. The backup version (`GET /room_keys/version`): its algorithm and public key.
//! 2. Secret storage, when the recovery key is a security key (opened as
//!    [`Connector::load_cross_signing_keys`] opens it): the account (`whoami`), its default key
//!    and that key's description (account data), checked; then the secret `m.megolm_backup.v1`
//!    (account data) opened: the backup key. Otherwise the recovery key is
//!    taken as the backup key itself (a legacy recovery key).
//! 3. The backup key, verified against the version's public key.
//! 4. The room's backed-up sessions (`GET /room_keys/keys/{roomId}`), decrypted into
//!    [`SessionKeys`].
//!
//! Nothing of the backup is stored: the keys live for one run.

use std::collections::BTreeMap;

use argus_crypto::{
    RecoveryKey,
    backup::{BACKUP_SECRET, BackupKey, KeyBackupData},
    megolm::{SessionKeys, Undecryptable},
};
use argus_domain::RoomId;
use ruma::OwnedRoomId;

use crate::{
    Connector, Error, Result, Session,
    api::{get_backup_keys_for_room, get_latest_backup_info},
    secret_storage::{self, Opening},
    transport::{HttpClient, Target},
};

/// The key backup of one room, loaded for one run.
#[derive(Debug, Default)]
pub struct RoomKeys {
    /// The room's backed-up megolm sessions that decrypted.
    pub keys: SessionKeys,
    /// Backed-up sessions that did not decrypt, by reason.
    pub unusable: BTreeMap<Undecryptable, u64>,
}

/// The most backed-up sessions read for one room.
pub const MAX_ROOM_SESSIONS: usize = 10_000;

impl Connector {
    /// Loads the key backup of `room_id` with the user's recovery key: the backup version, the
    /// backup key (from secret storage when the recovery key is a security key, or the key
    /// itself when it is a legacy backup recovery key), verified against the version's public
    /// key, then the room's backed-up sessions, decrypted. Nothing is stored.
    ///
    /// [`Error::NoKeyBackup`] when the account has none; [`Error::Crypto`] with
    /// [`argus_crypto::Error::WrongRecoveryKey`] when the key opens neither secret storage nor
    /// the backup, [`argus_crypto::Error::UnsupportedAlgorithm`] for an unknown algorithm,
    /// [`argus_crypto::Error::KeyBackupMismatch`] when secret storage holds a key that is not
    /// the backup's.
    pub async fn load_room_keys(
        &self,
        session: &Session,
        room_id: &RoomId,
        recovery_key: &RecoveryKey,
    ) -> Result<RoomKeys> {
        let room = OwnedRoomId::try_from(room_id.as_str())
            .map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))?;
        let client = self.http();
        let target = client.target(session, client.config.run_deadline)?;

        let (backup, backup_key) = verified_backup(client, &target, recovery_key).await?;

        let sessions = get_backup_keys_for_room::fetch(client, &target, &backup.version, &room).await?;
        if sessions.len() > MAX_ROOM_SESSIONS {
            return Err(Error::malformed(format!(
                "the room's key backup holds more than {MAX_ROOM_SESSIONS} sessions"
            )));
        }
        let mut loaded = RoomKeys::default();
        for raw in sessions.values() {
            let decrypted = serde_json::from_str::<KeyBackupData>(raw.json().get())
                .map_err(|_| Undecryptable::Malformed)
                .and_then(|data| backup_key.decrypt_session_with_sender(&data));
            match decrypted {
                Ok((session, sender_key)) => loaded.keys.insert_from(session, sender_key),
                Err(reason) => *loaded.unusable.entry(reason).or_default() += 1,
            }
        }
        Ok(loaded)
    }
}

/// The backup key from secret storage when `recovery_key` is the account's security key;
/// `None` when it is not, or when secret storage cannot tell (no default key, a key without
/// its description or its check): the recovery key may then be a legacy one.
async fn backup_key_from_storage(
    client: &HttpClient,
    target: &Target<'_>,
    recovery_key: &RecoveryKey,
) -> Result<Option<BackupKey>> {
    // A description without a key check cannot tell a wrong key: the legacy form is tried
    // instead.
    let store = match secret_storage::open(client, target, recovery_key).await? {
        Opening::Opened(store) if store.checked => store,
        Opening::Opened(_) | Opening::Absent | Opening::WrongKey => return Ok(None),
    };
    // The key passed its check: a secret that is missing, under another key only, or fails
    // its MAC is not the backup's.
    let opened = match store.read(client, target, BACKUP_SECRET).await {
        Ok(Some(opened)) => opened,
        Ok(None) | Err(Error::Crypto(argus_crypto::Error::WrongRecoveryKey)) => {
            return Err(argus_crypto::Error::KeyBackupMismatch.into());
        }
        Err(e) => return Err(e),
    };
    Ok(Some(BackupKey::from_secret(&opened)?))
}

/// The account's current key backup and its key, opened with `recovery_key` (a security key
/// through secret storage, or a legacy recovery key that is the backup key) and checked to be
/// the backup's; [`Error::NoKeyBackup`] when the account has none.
async fn verified_backup(
    client: &HttpClient,
    target: &Target<'_>,
    recovery_key: &RecoveryKey,
) -> Result<(get_latest_backup_info::BackupVersion, BackupKey)> {
    let backup = get_latest_backup_info::fetch(client, target).await?;
    // Secret storage first: a security key opens the secret holding the backup key.
    let backup_key = match backup_key_from_storage(client, target, recovery_key).await? {
        Some(key) => {
            key.verify(&backup.algorithm, &backup.public_key)?;
            key
        }
        // Not a security key of this account: a legacy recovery key is the backup key.
        None => {
            let key = recovery_key.as_backup_key();
            match key.verify(&backup.algorithm, &backup.public_key) {
                Err(argus_crypto::Error::KeyBackupMismatch) => {
                    return Err(argus_crypto::Error::WrongRecoveryKey.into());
                }
                other => other?,
            }
            key
        }
    };
    Ok((backup, backup_key))
}

impl Connector {
    /// The account's current key backup as the connector's device saves keys into it: its
    /// version and public key (unpadded base64), once `recovery_key` was found to open it;
    /// `None` when the account has no key backup.
    pub async fn key_backup_public_key(
        &self,
        session: &Session,
        recovery_key: &RecoveryKey,
    ) -> Result<Option<(String, String)>> {
        let client = self.http();
        let target = client.target(session, client.config.request_timeout)?;
        match verified_backup(client, &target, recovery_key).await {
            Ok((backup, _)) => Ok(Some((backup.version, backup.public_key))),
            Err(Error::NoKeyBackup) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The Matrix user id and device id of `session`'s token (`GET /account/whoami`): the
    /// device the connector's end-to-end-encryption device is.
    pub async fn whoami_device(&self, session: &Session) -> Result<(ruma::OwnedUserId, Option<String>)> {
        let client = self.http();
        let target = client.target(session, client.config.request_timeout)?;
        crate::api::whoami::fetch_with_device(client, &target).await
    }
}
