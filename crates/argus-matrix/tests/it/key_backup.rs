//! Encrypted history made for real on the real Synapse (the test kit's sending device, key
//! backup and secret storage, written independently of the connector's decryption): the
//! connector loads the room's keys with the security key or the legacy backup key and decrypts
//! the events Synapse serves; each failure has its reason.

use argus_crypto::{
    RecoveryKey,
    megolm::{DecryptedEvent, EncryptedContent, Undecryptable},
};
use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{Connector, ConnectorConfig, Error, FetchOptions, Session};
use argus_testkit::{
    e2ee::{KeyBackup, Sender, recovery_key_text},
    synapse::synapse,
};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use serde_json::json;

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A connector allowed to reach the loopback Synapse, reading pages of `page_size` events.
fn loopback_connector(page_size: u32) -> Connector {
    let config = ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        page_size,
        ..ConnectorConfig::default()
    };
    must(Connector::new(config), "connector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_keys_load_from_the_real_key_backup_and_decrypt_what_synapse_serves() {
    let Some(server) = synapse() else { return };
    let alice = must(server.register("backup_alice").await, "register");
    let room = must(alice.create_room(Some("Chiffré"), None, true).await, "create room");

    // A session backed up from index 1 (its first message is before it), a rotated session
    // backed up whole, and a session never backed up.
    let mut first = Sender::new();
    let early = must(first.send_text(&alice, &room, "avant la sauvegarde").await, "send");
    let meeting = must(first.send_text(&alice, &room, "rendez-vous à 10h au quai nord").await, "send");
    let mut rotated = Sender::new();
    let after = must(rotated.send_text(&alice, &room, "nouvelle session, même salle").await, "send");
    let mut lost = Sender::new();
    let missing = must(lost.send_text(&alice, &room, "jamais sauvegardé").await, "send");
    let backup = must(KeyBackup::create(&alice, [0x5a; 32], [0x33; 32]).await, "backup");
    must(backup.upload(&alice, &room, &mut first, 1).await, "upload");
    must(backup.upload(&alice, &room, &mut rotated, 0).await, "upload");

    let connector = loopback_connector(ConnectorConfig::default().page_size);
    let homeserver: HomeserverUrl = must(server.base_url().parse(), "homeserver");
    let session = Session::with_token(homeserver.clone(), AccessToken::new(alice.access_token.clone()));
    let room_id: RoomId = must(room.parse(), "room id");
    let key: RecoveryKey = must(backup.security_key().parse(), "the security key as typed");
    let mut loaded = must(connector.load_room_keys(&session, &room_id, &key).await, "load room keys");
    assert_eq!(loaded.keys.len(), 2);
    assert!(loaded.unusable.is_empty());

    let events = must(alice.all_messages(&room).await, "messages");
    let content = |id: &str| -> EncryptedContent {
        let event = events.iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not served"));
        assert_eq!(event["type"], "m.room.encrypted");
        must(serde_json::from_value(event["content"].clone()), "encrypted content")
    };
    let body = |r: Result<DecryptedEvent, Undecryptable>| r.map(|e| e.content["body"].clone());
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
        body(loaded.keys.decrypt(&format!("!ailleurs:{}", server.server_name()), &content(&meeting))),
        Err(Undecryptable::WrongRoom)
    );

    // The legacy backup recovery key (the backup key itself) opens the backup too.
    let legacy: RecoveryKey = must(backup.legacy_recovery_key().parse(), "legacy key");
    let by_legacy = must(connector.load_room_keys(&session, &room_id, &legacy).await, "legacy key");
    assert_eq!(by_legacy.keys.len(), 2);
    // A wrong key opens neither; an account without a backup says so.
    let wrong: RecoveryKey = must(recovery_key_text(&[0x34; 32]).parse(), "wrong key");
    assert!(matches!(
        connector.load_room_keys(&session, &room_id, &wrong).await,
        Err(Error::Crypto(argus_crypto::Error::WrongRecoveryKey))
    ));
    let bob = must(server.register("backup_bob").await, "register bob");
    let bob_token = AccessToken::new(bob.access_token.clone());
    assert!(matches!(
        connector.load_room_keys(&Session::with_token(homeserver, bob_token), &room_id, &key).await,
        Err(Error::NoKeyBackup)
    ));
}

/// Encrypted edits as real clients send them: the relation in clear beside the ciphertext (one
/// client keeps it inside too, another does not), the fallback body `"* …"` and `m.new_content`
/// inside. Read from Synapse with the backup's keys, the message shows the new content and keeps
/// each version; read in pages of one event, each edit (met before its original) carries the new
/// content. A decrypted message says it was encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_edit_applies_its_new_content_not_its_fallback() {
    let Some(server) = synapse() else { return };
    let alice = must(server.register("edit_alice").await, "register");
    let room = must(alice.create_room(Some("Chiffré"), None, true).await, "create room");
    let mut device = Sender::new();
    let bodies = [
        "Réunion chiffrée à 14h — préfecture",
        "Réunion chiffrée à 15h — préfecture",
        "Réunion chiffrée à 16h — préfecture",
    ];
    let original = must(device.send_text(&alice, &room, bodies[0]).await, "send");
    let relation = json!({ "rel_type": "m.replace", "event_id": original });
    let mut edits = Vec::new();
    for (new, inside) in [(bodies[1], false), (bodies[2], true)] {
        let mut content = json!({ "msgtype": "m.text", "body": format!("* {new}"),
                                  "m.new_content": { "msgtype": "m.text", "body": new } });
        if inside {
            content["m.relates_to"] = relation.clone();
        }
        edits.push(must(device.send(&alice, &room, content, Some(relation.clone())).await, "send an edit"));
    }
    let backup = must(KeyBackup::create(&alice, [0x5b; 32], [0x34; 32]).await, "backup");
    must(backup.upload(&alice, &room, &mut device, 0).await, "upload");

    let homeserver: HomeserverUrl = must(server.base_url().parse(), "homeserver");
    let session = Session::with_token(homeserver, AccessToken::new(alice.access_token.clone()));
    let room_id: RoomId = must(room.parse(), "room id");
    let key: RecoveryKey = must(backup.security_key().parse(), "the security key");

    let whole = loopback_connector(100);
    let keys = must(whole.load_room_keys(&session, &room_id, &key).await, "load room keys").keys;
    let options = FetchOptions { max_messages: 100, ..FetchOptions::default() };
    let snapshot = must(
        whole.fetch_room_decrypting(&session, &room_id, &options, Some(Box::new(keys)), &mut |_| {}).await,
        "fetch",
    );
    assert_eq!(snapshot.messages.len(), 1, "edits are not messages");
    let m = &snapshot.messages[0];
    assert_eq!((m.event_id.as_str(), m.body.as_deref()), (original.as_str(), Some(bodies[2])));
    assert!(m.encrypted && m.decrypted && m.edited);
    let versions: Vec<_> = m.versions.iter().map(|v| v.body.as_deref()).collect();
    assert_eq!(versions, bodies.map(Some));

    let paged = loopback_connector(1);
    let keys = must(paged.load_room_keys(&session, &room_id, &key).await, "load room keys").keys;
    let options = FetchOptions { max_messages: 100, batch_pages: 1, ..FetchOptions::default() };
    let mut stream = paged.stream_room(session.clone(), room_id.clone(), options, Some(Box::new(keys)));
    let mut carried = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        let batch = must(batch, "batch");
        carried.extend(batch.edits.into_iter().map(|e| (e.event_id.as_str().to_owned(), e.body)));
        if let Some(m) = batch.messages.first() {
            assert!(m.encrypted && m.decrypted && m.body.as_deref() == Some(bodies[0]), "{m:?}");
        }
    }
    carried.sort_by_key(|(id, _)| edits.iter().position(|e| e == id));
    let want: Vec<_> =
        edits.iter().cloned().zip([Some(bodies[1].to_owned()), Some(bodies[2].to_owned())]).collect();
    assert_eq!(carried, want);
}
