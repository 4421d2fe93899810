//! Reading the account's secret storage with its recovery key (Client-Server API "Secret
//! storage"): the account (`whoami`), its default key and that key's description (account
//! data), the recovery key checked against it, then secrets (account data) opened one by one.
//! The cryptography is [`argus_crypto::secret_storage`]'s; the key backup's loading
//! ([`crate::backup`]) and the cross-signing keys ([`Connector::load_cross_signing_keys`])
//! both go through here.

use argus_crypto::{
    RecoveryKey,
    device::CrossSigningKeys,
    secret_storage::{DefaultKey, KeyDescription, SecretStorageKey, StoredSecret},
};
use argus_domain::Secret;
use ruma::OwnedUserId;

use crate::{
    Connector, Error, Result, Session,
    api::{get_global_account_data, whoami},
    transport::{HttpClient, Target},
};

/// The secret holding the cross-signing master key.
pub const MASTER_KEY_SECRET: &str = "m.cross_signing.master";
/// The secret holding the self-signing key (what signs the account's devices).
pub const SELF_SIGNING_KEY_SECRET: &str = "m.cross_signing.self_signing";
/// The secret holding the user-signing key.
pub const USER_SIGNING_KEY_SECRET: &str = "m.cross_signing.user_signing";

/// The account's secret storage, its default key derived from the recovery key.
pub(crate) struct SecretStore {
    user: OwnedUserId,
    /// The default key's id: the entry of each secret's `encrypted` map to open.
    key_id: String,
    key: SecretStorageKey,
    /// Whether the recovery key passed the default key's check (a description without a check
    /// leaves it to each secret's MAC).
    pub(crate) checked: bool,
}

/// What secret storage the account has, for the recovery key.
pub(crate) enum Opening {
    /// None usable: no default key, or a default key without its description.
    Absent,
    /// The recovery key fails the default key's check.
    WrongKey,
    /// Opened with the recovery key.
    Opened(SecretStore),
}

/// Opens the account's secret storage with `recovery_key`.
pub(crate) async fn open(
    client: &HttpClient,
    target: &Target<'_>,
    recovery_key: &RecoveryKey,
) -> Result<Opening> {
    let user = whoami::fetch(client, target).await?;
    let json =
        match get_global_account_data::fetch(client, target, &user, "m.secret_storage.default_key").await {
            Ok(json) => json,
            Err(Error::NotFound) => return Ok(Opening::Absent),
            Err(e) => return Err(e),
        };
    let default: DefaultKey =
        serde_json::from_str(&json).map_err(|_| Error::malformed("secret storage: no default key"))?;
    let kind = format!("m.secret_storage.key.{}", default.key);
    let description = match get_global_account_data::fetch(client, target, &user, &kind).await {
        Ok(json) => serde_json::from_str::<KeyDescription>(&json)
            .map_err(|_| Error::malformed("secret storage: unreadable key description"))?,
        Err(Error::NotFound) => return Ok(Opening::Absent),
        Err(e) => return Err(e),
    };
    let key = recovery_key.as_secret_storage_key();
    match key.check(&description) {
        Ok(()) => {}
        Err(argus_crypto::Error::WrongRecoveryKey) => return Ok(Opening::WrongKey),
        Err(e) => return Err(e.into()),
    }
    Ok(Opening::Opened(SecretStore { user, key_id: default.key, key, checked: description.can_check() }))
}

impl SecretStore {
    /// The secret `name` in clear; `None` when the account has no such secret or has it
    /// encrypted under another key only. A secret whose MAC fails is
    /// [`argus_crypto::Error::WrongRecoveryKey`] (the caller tells a wrong key from an altered
    /// secret by [`SecretStore::checked`]).
    pub(crate) async fn read(
        &self,
        client: &HttpClient,
        target: &Target<'_>,
        name: &str,
    ) -> Result<Option<Secret<Vec<u8>>>> {
        let json = match get_global_account_data::fetch(client, target, &self.user, name).await {
            Ok(json) => json,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let stored: StoredSecret = serde_json::from_str(&json)
            .map_err(|_| Error::malformed(format!("secret storage: unreadable secret {name}")))?;
        let Some(secret) = stored.encrypted.get(&self.key_id) else { return Ok(None) };
        Ok(Some(self.key.decrypt(name, secret)?))
    }
}

impl Connector {
    /// Reads the account's private cross-signing keys from its secret storage with its recovery
    /// key (a security key): `m.cross_signing.master`, `m.cross_signing.self_signing` and
    /// `m.cross_signing.user_signing`, each unpadded base64 of its 32-byte seed, `None` when
    /// secret storage does not hold it (or the account has no secret storage). Nothing is stored.
    ///
    /// [`Error::Crypto`] with [`argus_crypto::Error::WrongRecoveryKey`] when the key is not the
    /// one of the account's secret storage (as [`Connector::load_room_keys`] says it), with
    /// [`argus_crypto::Error::Malformed`] when a secret opened but is not a 32-byte key, or was
    /// altered (its MAC fails under a key that passed its check).
    pub async fn load_cross_signing_keys(
        &self,
        session: &Session,
        recovery_key: &RecoveryKey,
    ) -> Result<CrossSigningKeys> {
        let client = self.http();
        let target = client.target(session, client.config.run_deadline)?;
        let store = match open(client, &target, recovery_key).await? {
            Opening::Absent => return Ok(CrossSigningKeys::default()),
            Opening::WrongKey => return Err(argus_crypto::Error::WrongRecoveryKey.into()),
            Opening::Opened(store) => store,
        };
        let mut keys = CrossSigningKeys::default();
        for (name, slot) in [
            (MASTER_KEY_SECRET, &mut keys.master),
            (SELF_SIGNING_KEY_SECRET, &mut keys.self_signing),
            (USER_SIGNING_KEY_SECRET, &mut keys.user_signing),
        ] {
            let opened = match store.read(client, &target, name).await {
                Ok(opened) => opened,
                Err(Error::Crypto(argus_crypto::Error::WrongRecoveryKey)) if store.checked => {
                    return Err(argus_crypto::Error::Malformed(format!("secret {name}: altered")).into());
                }
                Err(e) => return Err(e),
            };
            *slot = opened.map(|secret| signing_seed(name, &secret)).transpose()?;
        }
        Ok(keys)
    }
}

/// A cross-signing secret as the device takes it: unpadded base64 of a 32-byte seed (a padded
/// form, as some clients store it, is accepted).
fn signing_seed(name: &str, secret: &Secret<Vec<u8>>) -> Result<Secret> {
    let malformed = || argus_crypto::Error::Malformed(format!("secret {name}: not a 32-byte key in base64"));
    let text = std::str::from_utf8(secret.expose_value()).map_err(|_| malformed())?;
    let text = text.trim().trim_end_matches('=');
    // 32 bytes are 43 characters of base64, the last one carrying 2 bits (its low 4 bits zero).
    let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    if text.len() != 43 || !text.chars().all(base64) || !text.ends_with(|c| "AEIMQUYcgkosw048".contains(c)) {
        return Err(malformed().into());
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_seed_is_unpadded_base64_of_32_bytes() {
        let seed = |text: &str| {
            signing_seed("m.cross_signing.master", &Secret::from_value(text.as_bytes().to_vec()))
        };
        let unpadded = "9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6g";
        assert_eq!(seed(unpadded).map(|s| s.expose_secret().to_owned()).ok().as_deref(), Some(unpadded));
        let padded = format!("{unpadded}=");
        assert_eq!(seed(&padded).map(|s| s.expose_secret().to_owned()).ok().as_deref(), Some(unpadded));
        for bad in [
            "",
            "abc",
            "9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6h",
            "9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6g9",
        ] {
            assert_eq!(seed(bad).err().map(|e| e.code()), Some("MALFORMED_RESPONSE"), "{bad}");
        }
    }
}
