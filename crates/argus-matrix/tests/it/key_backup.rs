//! Encrypted history made for real on the real Synapse: a sending device (vodozemac) encrypts
//! messages with megolm sessions and sends them as `m.room.encrypted`; the sessions go into a key
//! backup created on Synapse, whose key is kept in secret storage as Element keeps it. The
//! connector loads the room's keys with the security key (or the legacy backup key) and decrypts
//! the events Synapse serves; each failure has its reason.

use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{
    Connector, ConnectorConfig, Error,
    backup::{
        BACKUP_ALGORITHM, BACKUP_SECRET, EncryptedContent, MEGOLM_ALGORITHM, RecoveryKey,
        SECRET_STORAGE_ALGORITHM, Undecryptable,
    },
};
use argus_testkit::synapse::{TestUser, synapse};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use serde_json::json;
use vodozemac::{
    Curve25519PublicKey, Curve25519SecretKey,
    megolm::{GroupSession, InboundGroupSession, SessionConfig},
    pk_encryption::PkEncryption,
};

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sends `body` encrypted with `session` into `room`, as a client's device does.
async fn send_encrypted(user: &TestUser, room: &str, session: &mut GroupSession, body: &str) -> String {
    let payload = json!({ "type": "m.room.message", "room_id": room, "content": { "msgtype": "m.text", "body": body } });
    let content = json!({
        "algorithm": MEGOLM_ALGORITHM,
        "sender_key": "c2VuZGVyIGN1cnZlIGtleSBvZiB0aGUgdGVzdCBkZXZpY2U",
        "device_id": user.device_id,
        "session_id": session.session_id(),
        "ciphertext": session.encrypt(payload.to_string()).to_base64(),
    });
    must(user.send_event(room, "m.room.encrypted", &content).await, "sending an encrypted event")
}

/// Backs up `session` from message `index`, encrypted to the backup's public key.
async fn back_up(
    user: &TestUser,
    version: &str,
    room: &str,
    public: &Curve25519PublicKey,
    inbound: &mut InboundGroupSession,
    index: u32,
) {
    let key = inbound.export_at(index).unwrap_or_else(|| panic!("no export at {index}"));
    let json = json!({
        "algorithm": MEGOLM_ALGORITHM, "sender_key": "c2VuZGVy", "session_key": key.to_base64(),
        "sender_claimed_keys": {}, "forwarded_curve25519_key_chain": [],
    });
    let message =
        must(PkEncryption::from_key(*public).encrypt(json.to_string().as_bytes()), "encrypting a session");
    let data = json!({
        "first_message_index": index, "forwarded_count": 0, "is_verified": false,
        "session_data": {
            "ephemeral": message.ephemeral_key.to_base64(),
            "ciphertext": STANDARD_NO_PAD.encode(&message.ciphertext),
            "mac": STANDARD_NO_PAD.encode(&message.mac),
        },
    });
    must(user.upload_room_key(version, room, &inbound.session_id(), &data).await, "uploading a session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_history_decrypts_from_the_real_key_backup() {
    let Some(server) = synapse() else { return };
    let alice = must(server.register("backup_alice").await, "register");
    let room = must(alice.create_room(Some("Chiffré"), None, true).await, "create room");

    // History: a session backed up from index 1 (its first message is before it), a rotated
    // session backed up whole, a session never backed up, and a ciphertext altered in transit.
    let mut first = GroupSession::new(SessionConfig::version_1());
    let mut first_inbound = InboundGroupSession::new(&first.session_key(), SessionConfig::version_1());
    let early = send_encrypted(&alice, &room, &mut first, "avant la sauvegarde").await;
    let meeting = send_encrypted(&alice, &room, &mut first, "rendez-vous à 10h au quai nord").await;
    let mut rotated = GroupSession::new(SessionConfig::version_1());
    let mut rotated_inbound = InboundGroupSession::new(&rotated.session_key(), SessionConfig::version_1());
    let after = send_encrypted(&alice, &room, &mut rotated, "nouvelle session, même salle").await;
    let mut lost = GroupSession::new(SessionConfig::version_1());
    let missing = send_encrypted(&alice, &room, &mut lost, "jamais sauvegardé").await;

    // The backup, its key in secret storage under the security key, as Element sets them up.
    let backup_secret = Curve25519SecretKey::from_slice(&[0x5a; 32]);
    let public = Curve25519PublicKey::from(&backup_secret);
    let version = must(
        alice.create_key_backup(BACKUP_ALGORITHM, &json!({ "public_key": public.to_base64() })).await,
        "create backup",
    );
    back_up(&alice, &version, &room, &public, &mut first_inbound, 1).await;
    back_up(&alice, &version, &room, &public, &mut rotated_inbound, 0).await;
    let security_key = RecoveryKey::from_bytes([0x33; 32]);
    let storage = security_key.as_secret_storage_key();
    let check = storage.encrypt("", &[0u8; 32], [7u8; 16]);
    must(
        alice
            .set_account_data(
                "m.secret_storage.key.argus",
                &json!({ "algorithm": SECRET_STORAGE_ALGORITHM, "iv": check.iv, "mac": check.mac }),
            )
            .await,
        "key description",
    );
    must(
        alice.set_account_data("m.secret_storage.default_key", &json!({ "key": "argus" })).await,
        "default key",
    );
    let stored = storage.encrypt(BACKUP_SECRET, STANDARD_NO_PAD.encode([0x5a; 32]).as_bytes(), [9u8; 16]);
    must(
        alice
            .set_account_data(
                BACKUP_SECRET,
                &json!({ "encrypted": { "argus": { "iv": stored.iv, "ciphertext": stored.ciphertext, "mac": stored.mac } } }),
            )
            .await,
        "backup secret",
    );

    let connector = must(
        Connector::new(ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        }),
        "connector",
    );
    let homeserver: HomeserverUrl = must(server.base_url().parse(), "homeserver");
    let token = AccessToken::new(alice.access_token.clone());
    let room_id: RoomId = must(room.parse(), "room id");
    let typed = security_key.to_base58();
    let key: RecoveryKey = must(typed.parse(), "the security key as typed");
    let mut loaded =
        must(connector.load_room_keys(&homeserver, &token, &room_id, &key).await, "load room keys");
    assert_eq!(loaded.keys.len(), 2);
    assert!(loaded.unusable.is_empty());

    // Decrypt what Synapse serves.
    let events = must(alice.all_messages(&room).await, "messages");
    let content = |id: &str| -> EncryptedContent {
        let event = events.iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not served"));
        assert_eq!(event["type"], "m.room.encrypted");
        must(serde_json::from_value(event["content"].clone()), "encrypted content")
    };
    let body =
        |r: Result<argus_matrix::backup::DecryptedEvent, Undecryptable>| r.map(|e| e.content["body"].clone());
    assert_eq!(
        body(loaded.keys.decrypt(&room, &content(&meeting))),
        Ok(json!("rendez-vous à 10h au quai nord"))
    );
    assert_eq!(body(loaded.keys.decrypt(&room, &content(&after))), Ok(json!("nouvelle session, même salle")));
    assert_eq!(body(loaded.keys.decrypt(&room, &content(&early))), Err(Undecryptable::IndexBeforeFirstKnown));
    assert_eq!(body(loaded.keys.decrypt(&room, &content(&missing))), Err(Undecryptable::NoKeyInBackup));
    let mut altered = content(&meeting);
    let mut raw =
        STANDARD_NO_PAD.decode(altered.ciphertext.as_deref().unwrap_or_default()).unwrap_or_default();
    raw[12] ^= 0x40;
    altered.ciphertext = Some(STANDARD_NO_PAD.encode(raw));
    assert!(matches!(
        loaded.keys.decrypt(&room, &altered),
        Err(Undecryptable::BadMac | Undecryptable::Malformed)
    ));
    // The same ciphertext read as another room's is refused.
    assert_eq!(
        body(loaded.keys.decrypt("!ailleurs:argus.test", &content(&meeting))),
        Err(Undecryptable::WrongRoom)
    );

    // The legacy backup recovery key (the backup key itself) opens the backup too.
    let legacy = RecoveryKey::from_bytes([0x5a; 32]);
    let by_legacy =
        must(connector.load_room_keys(&homeserver, &token, &room_id, &legacy).await, "legacy key");
    assert_eq!(by_legacy.keys.len(), 2);
    // A wrong key opens neither; an account without a backup says so.
    let wrong = RecoveryKey::from_bytes([0x34; 32]);
    assert!(matches!(
        connector.load_room_keys(&homeserver, &token, &room_id, &wrong).await,
        Err(Error::WrongRecoveryKey)
    ));
    let bob = must(server.register("backup_bob").await, "register bob");
    let bob_token = AccessToken::new(bob.access_token.clone());
    assert!(matches!(
        connector.load_room_keys(&homeserver, &bob_token, &room_id, &key).await,
        Err(Error::NoKeyBackup)
    ));
    // Nothing of the keys in what the errors say.
    let message = Error::WrongRecoveryKey.to_string();
    assert!(!message.contains(&typed) && !message.contains(&alice.access_token));
}
