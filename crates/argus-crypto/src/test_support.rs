//! What the unit tests share: a client's side of the backup and of a room (backing a session
//! up, encrypting a message).

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use serde_json::json;
use vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, InboundGroupSession, SessionConfig},
    pk_encryption::PkEncryption,
};

use crate::{
    backup::{KeyBackupData, SessionData},
    megolm::{EncryptedContent, MEGOLM_ALGORITHM},
};

pub(crate) const ROOM: &str = "!crise:tchap.test";

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// What a client backing up `session` from `index` uploads.
pub(crate) fn backed_up(public: &str, session: &InboundGroupSession, index: u32) -> KeyBackupData {
    let mut session =
        InboundGroupSession::import(&session.export_at_first_known_index(), SessionConfig::version_1());
    let key = session.export_at(index).unwrap_or_else(|| panic!("index {index}"));
    let json = json!({
        "algorithm": MEGOLM_ALGORITHM, "sender_key": "c2VuZGVy", "session_key": key.to_base64(),
        "sender_claimed_keys": {}, "forwarded_curve25519_key_chain": []
    });
    let public = Curve25519PublicKey::from_base64(public).unwrap_or_else(|e| panic!("{e}"));
    let message =
        PkEncryption::from_key(public).encrypt(json.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    KeyBackupData {
        first_message_index: u64::from(index),
        session_data: SessionData {
            ephemeral: message.ephemeral_key.to_base64(),
            ciphertext: b64(&message.ciphertext),
            mac: b64(&message.mac),
        },
    }
}

/// A text message of `room` encrypted with `outbound`.
pub(crate) fn encrypt(outbound: &mut GroupSession, room: &str, body: &str) -> EncryptedContent {
    let payload = json!({ "type": "m.room.message", "room_id": room, "content": { "msgtype": "m.text", "body": body } });
    EncryptedContent {
        algorithm: MEGOLM_ALGORITHM.to_owned(),
        ciphertext: Some(outbound.encrypt(payload.to_string()).to_base64()),
        session_id: Some(outbound.session_id()),
        sender_key: None,
    }
}
