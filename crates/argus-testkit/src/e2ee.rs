//! Real end-to-end encrypted history for tests, made as a Matrix client makes it, independently
//! of the connector's own decryption code: a sending device's megolm sessions (vodozemac)
//! encrypt events sent as `m.room.encrypted` to the real Synapse; a key backup
//! (`m.megolm_backup.v1.curve25519-aes-sha2`) holds the sessions; secret storage
//! (`m.secret_storage.v1.aes-hmac-sha2`, written here with RustCrypto) holds the backup key under
//! a security key, whose base58 form is what a user types.

use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use vodozemac::{
    Curve25519PublicKey, Curve25519SecretKey,
    megolm::{GroupSession, InboundGroupSession, SessionConfig},
    pk_encryption::PkEncryption,
};

use crate::synapse::TestUser;

/// The megolm algorithm of room events.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// A sending device's megolm session in one room, with the inbound copy a backup is made from.
pub struct Sender {
    outbound: GroupSession,
    inbound: InboundGroupSession,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    /// A fresh session (rotating a room's session is making another).
    pub fn new() -> Self {
        let outbound = GroupSession::new(SessionConfig::version_1());
        let inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
        Self { outbound, inbound }
    }

    /// The session id.
    pub fn session_id(&self) -> String {
        self.outbound.session_id()
    }

    /// Encrypts an event of `event_type` with `content` for `room`; `relates_to`, when given,
    /// stays in clear beside the ciphertext, as clients send relations.
    pub fn encrypt(
        &mut self,
        room: &str,
        event_type: &str,
        content: &Value,
        relates_to: Option<&Value>,
    ) -> Value {
        let payload = json!({ "type": event_type, "room_id": room, "content": content });
        let mut wire = json!({
            "algorithm": MEGOLM,
            "sender_key": "dGVzdCBkZXZpY2UgY3VydmUyNTUxOSBrZXkgKGNsZWFyKQ",
            "device_id": "ARGUSTEST",
            "session_id": self.outbound.session_id(),
            "ciphertext": self.outbound.encrypt(payload.to_string()).to_base64(),
        });
        if let Some(relation) = relates_to {
            wire["m.relates_to"] = relation.clone();
        }
        wire
    }

    /// Sends an encrypted `m.room.message` of `content` into `room`; returns its event id.
    pub async fn send(
        &mut self,
        user: &TestUser,
        room: &str,
        content: Value,
        relates_to: Option<Value>,
    ) -> anyhow::Result<String> {
        let wire = self.encrypt(room, "m.room.message", &content, relates_to.as_ref());
        user.send_event(room, "m.room.encrypted", &wire).await
    }

    /// Sends an encrypted `m.text` message.
    pub async fn send_text(&mut self, user: &TestUser, room: &str, body: &str) -> anyhow::Result<String> {
        self.send(user, room, json!({ "msgtype": "m.text", "body": body }), None).await
    }

    /// The backed-up form of this session from message `index` (`KeyBackupData`), encrypted to
    /// the backup's public key.
    pub fn backed_up(&mut self, public: &Curve25519PublicKey, index: u32) -> anyhow::Result<Value> {
        let key = self.inbound.export_at(index).context("the session cannot be exported at that index")?;
        let session = json!({
            "algorithm": MEGOLM, "sender_key": "dGVzdCBkZXZpY2UgY3VydmUyNTUxOSBrZXkgKGNsZWFyKQ",
            "session_key": key.to_base64(), "sender_claimed_keys": {}, "forwarded_curve25519_key_chain": [],
        });
        let message = PkEncryption::from_key(*public).encrypt(session.to_string().as_bytes())?;
        Ok(json!({
            "first_message_index": index, "forwarded_count": 0, "is_verified": false,
            "session_data": {
                "ephemeral": message.ephemeral_key.to_base64(),
                "ciphertext": STANDARD_NO_PAD.encode(&message.ciphertext),
                "mac": STANDARD_NO_PAD.encode(&message.mac),
            },
        }))
    }
}

/// An account's key backup and secret storage, set up as Element sets them up.
pub struct KeyBackup {
    /// The backup version on the homeserver.
    pub version: String,
    backup_key: [u8; 32],
    security_key: [u8; 32],
}

/// The base58 form of a 32-byte recovery key: `0x8B 0x01`, the key, a parity byte.
pub fn recovery_key_text(key: &[u8; 32]) -> String {
    let mut bytes = vec![0x8b, 0x01];
    bytes.extend_from_slice(key);
    let parity = bytes.iter().fold(0u8, |a, b| a ^ b);
    bytes.push(parity);
    let text = bs58::encode(bytes).into_string();
    text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

/// Secret storage's encryption of `plaintext` as the secret `name` under `key`.
pub(crate) fn secret_storage_encrypt(key: &[u8; 32], name: &str, plaintext: &[u8], iv: [u8; 16]) -> Value {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), key);
    let mut okm = [0u8; 64];
    let _ = hkdf.expand(name.as_bytes(), &mut okm);
    let mut data = plaintext.to_vec();
    let mut aes_key = [0u8; 32];
    aes_key.copy_from_slice(&okm[..32]);
    ctr::Ctr128BE::<aes::Aes256>::new(&aes_key.into(), &iv.into()).apply_keystream(&mut data);
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&okm[32..])
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&data);
    json!({
        "iv": STANDARD_NO_PAD.encode(iv),
        "ciphertext": STANDARD_NO_PAD.encode(&data),
        "mac": STANDARD_NO_PAD.encode(mac.finalize().into_bytes()),
    })
}

impl KeyBackup {
    /// Creates a backup version for `user` whose key is `backup_key`, and secret storage whose
    /// default key is `security_key`, holding the backup key.
    pub async fn create(
        user: &TestUser,
        backup_key: [u8; 32],
        security_key: [u8; 32],
    ) -> anyhow::Result<Self> {
        let public = Curve25519PublicKey::from(&Curve25519SecretKey::from_slice(&backup_key));
        let version = user
            .create_key_backup(
                "m.megolm_backup.v1.curve25519-aes-sha2",
                &json!({ "public_key": public.to_base64() }),
            )
            .await?;
        let mut check = secret_storage_encrypt(&security_key, "", &[0u8; 32], [3u8; 16]);
        check["algorithm"] = json!("m.secret_storage.v1.aes-hmac-sha2");
        if let Some(object) = check.as_object_mut() {
            object.remove("ciphertext");
        }
        user.set_account_data("m.secret_storage.key.argus-test", &check).await?;
        user.set_account_data("m.secret_storage.default_key", &json!({ "key": "argus-test" })).await?;
        let secret = secret_storage_encrypt(
            &security_key,
            "m.megolm_backup.v1",
            STANDARD_NO_PAD.encode(backup_key).as_bytes(),
            [4u8; 16],
        );
        user.set_account_data("m.megolm_backup.v1", &json!({ "encrypted": { "argus-test": secret } }))
            .await?;
        Ok(Self { version, backup_key, security_key })
    }

    /// Stores `plaintext` as the secret `name` (such as `m.cross_signing.self_signing`) in
    /// `user`'s secret storage, encrypted under the same default key as the backup key.
    pub async fn store_secret(&self, user: &TestUser, name: &str, plaintext: &[u8]) -> anyhow::Result<()> {
        let secret = secret_storage_encrypt(&self.security_key, name, plaintext, [5u8; 16]);
        user.set_account_data(name, &json!({ "encrypted": { "argus-test": secret } })).await
    }

    /// The backup's public key.
    pub fn public_key(&self) -> Curve25519PublicKey {
        Curve25519PublicKey::from(&Curve25519SecretKey::from_slice(&self.backup_key))
    }

    /// The security key as a user types it.
    pub fn security_key(&self) -> String {
        recovery_key_text(&self.security_key)
    }

    /// The legacy backup recovery key (the backup key itself) as a user types it.
    pub fn legacy_recovery_key(&self) -> String {
        recovery_key_text(&self.backup_key)
    }

    /// Uploads `sender`'s session to the backup from message `index`.
    pub async fn upload(
        &self,
        user: &TestUser,
        room: &str,
        sender: &mut Sender,
        index: u32,
    ) -> anyhow::Result<()> {
        let data = sender.backed_up(&self.public_key(), index)?;
        user.upload_room_key(&self.version, room, &sender.session_id(), &data).await
    }
}
