//! The test kit's E2EE client against the real Synapse: two accounts in an encrypted room, each
//! with its own `OlmMachine`, share megolm keys and decrypt each other's messages; a sender that
//! shares only with cross-signed devices withholds the key until the recipient's device signed
//! itself; cross-signing keys in secret storage read back with the security key.

use std::str::FromStr as _;

use argus_crypto::RecoveryKey;
use argus_crypto::secret_storage::{DefaultKey, KeyDescription, StoredSecret};
use argus_testkit::e2ee_client::{Decryption, E2eeClient, Share, set_up_cross_signing_in_secret_storage};
use argus_testkit::synapse::{self, Synapse, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

/// Alice and Bob in a room encrypted by Alice's client, each with a new device that uploaded
/// its keys.
async fn encrypted_room(
    server: &Synapse,
) -> anyhow::Result<(TestUser, TestUser, String, E2eeClient, E2eeClient)> {
    let alice = server.register("e2ee_alice").await?;
    let bob = server.register("e2ee_bob").await?;
    let room = alice.create_room(Some("Encrypted"), None, false).await?;
    alice.invite(&room, &bob.user_id).await?;
    bob.join(&room).await?;
    let mut a = E2eeClient::new(server, &alice).await?;
    let mut b = E2eeClient::new(server, &bob).await?;
    anyhow::ensure!(a.device_id() != alice.device_id, "the client logs in as a new device");
    a.enable_encryption(&room).await?;
    a.sync_once().await?;
    b.sync_once().await?;
    Ok((alice, bob, room, a, b))
}

fn body_of(decryption: &Decryption) -> Option<&str> {
    match decryption {
        Decryption::Decrypted { event, .. } => event["content"]["body"].as_str(),
        Decryption::Undecryptable { .. } => None,
    }
}

#[tokio::test]
async fn a_message_shared_with_all_devices_decrypts_on_the_other_account() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let (alice, bob, room, mut a, mut b) = encrypted_room(server).await.unwrap();
    let state = alice.state(&room).await.unwrap();
    let encryption = state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.encryption").unwrap();
    assert_eq!(encryption["content"]["algorithm"], "m.megolm.v1.aes-sha2");

    let event_id = a.send_text(&room, "the plan is on", Share::AllDevices).await.unwrap();
    let event = bob.event(&room, &event_id).await.unwrap();
    assert_eq!(event["type"], "m.room.encrypted");
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["content"]["algorithm"], "m.megolm.v1.aes-sha2");
    assert!(!event.to_string().contains("the plan is on"), "the homeserver sees ciphertext only");

    // Before Bob's device read its to-device messages it has no key.
    assert!(matches!(
        b.decrypt(&room, &event).await.unwrap(),
        Decryption::Undecryptable { withheld: None, .. }
    ));
    b.sync_once().await.unwrap();
    let decrypted = b.decrypt(&room, &event).await.unwrap();
    assert_eq!(body_of(&decrypted), Some("the plan is on"), "{decrypted:?}");
    let Decryption::Decrypted { event: clear, sender_verified } = &decrypted else { unreachable!() };
    assert_eq!(clear["type"], "m.room.message");
    assert!(!sender_verified, "Bob never verified Alice");

    // A device of Bob's made after the message never received its key.
    let mut late = E2eeClient::new(server, &bob).await.unwrap();
    late.sync_once().await.unwrap();
    assert!(matches!(late.decrypt(&room, &event).await.unwrap(), Decryption::Undecryptable { .. }));

    // The content encrypted without sending decrypts the same once sent by anyone.
    let content = a.encrypt_text(&room, "second", Share::AllDevices).await.unwrap();
    assert_eq!(content["algorithm"], "m.megolm.v1.aes-sha2");
    let forged = bob.send_event(&room, "m.room.encrypted", &content).await.unwrap();
    b.sync_once().await.unwrap();
    let forged = bob.event(&room, &forged).await.unwrap();
    assert_eq!(forged["sender"], bob.user_id.as_str());
    let decryption = b.decrypt(&room, &forged).await.unwrap();
    assert_eq!(body_of(&decryption), Some("second"), "{decryption:?}");
}

#[tokio::test]
async fn cross_signed_only_withholds_the_key_until_the_device_signs_itself() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let (_alice, bob, room, mut a, mut b) = encrypted_room(server).await.unwrap();
    assert!(!a.verification_of(b.user_id(), b.device_id()).await.unwrap());

    let first = a.send_text(&room, "before signing", Share::CrossSignedOnly).await.unwrap();
    assert!(
        a.verification_of(a.user_id(), a.device_id()).await.unwrap(),
        "the sender bootstrapped its own cross-signing and signed its device"
    );
    b.sync_once().await.unwrap();
    let first = bob.event(&room, &first).await.unwrap();
    match b.decrypt(&room, &first).await.unwrap() {
        Decryption::Undecryptable { withheld, .. } => assert_eq!(withheld.as_deref(), Some("m.unverified")),
        other => panic!("an unsigned device must not receive the key: {other:?}"),
    }

    b.bootstrap_cross_signing().await.unwrap();
    let (master, self_signing, user_signing) = b.export_cross_signing_keys().await.unwrap();
    assert!([&master, &self_signing, &user_signing].iter().all(|key| key.len() == 43));
    // Alice's device learns of Bob's change from its sync and queries his keys again.
    a.sync_once().await.unwrap();
    assert!(a.verification_of(b.user_id(), b.device_id()).await.unwrap());

    let second = a.send_text(&room, "after signing", Share::CrossSignedOnly).await.unwrap();
    b.sync_once().await.unwrap();
    let second = bob.event(&room, &second).await.unwrap();
    let decryption = b.decrypt(&room, &second).await.unwrap();
    assert_eq!(body_of(&decryption), Some("after signing"), "{decryption:?}");
    assert!(
        matches!(b.decrypt(&room, &first).await.unwrap(), Decryption::Undecryptable { .. }),
        "the earlier message stays withheld"
    );
}

#[tokio::test]
async fn cross_signing_keys_in_secret_storage_read_back_with_the_security_key() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let user = server.register("e2ee_secure").await.unwrap();
    let security_key = set_up_cross_signing_in_secret_storage(server, &user).await.unwrap();
    let key = RecoveryKey::from_str(&security_key).unwrap().as_secret_storage_key();

    let account_data = |kind: String| {
        let user = user.clone();
        async move {
            user.request(Method::GET, &["user", &user.user_id, "account_data", &kind], &[], None)
                .await
                .unwrap()
        }
    };
    let default: DefaultKey =
        serde_json::from_value(account_data("m.secret_storage.default_key".into()).await).unwrap();
    let description: KeyDescription =
        serde_json::from_value(account_data(format!("m.secret_storage.key.{}", default.key)).await).unwrap();
    assert!(description.can_check());
    key.check(&description).unwrap();
    let other = RecoveryKey::from_bytes([7u8; 32]).as_secret_storage_key();
    assert!(other.check(&description).is_err(), "another key fails the key check");

    // The published cross-signing public keys are those of the stored seeds.
    let keys = user
        .request(
            Method::POST,
            &["keys", "query"],
            &[],
            Some(&json!({ "device_keys": { &user.user_id: [] } })),
        )
        .await
        .unwrap();
    for (secret, published) in [
        ("m.cross_signing.master", "master_keys"),
        ("m.cross_signing.self_signing", "self_signing_keys"),
        ("m.cross_signing.user_signing", "user_signing_keys"),
    ] {
        let stored: StoredSecret = serde_json::from_value(account_data(secret.into()).await).unwrap();
        let seed = key.decrypt(secret, &stored.encrypted[&default.key]).unwrap();
        let seed = std::str::from_utf8(seed.expose_value()).unwrap().to_owned();
        let public = public_key_of_seed(&seed).unwrap();
        let published_key: &Value = &keys[published][&user.user_id]["keys"];
        assert_eq!(published_key[format!("ed25519:{public}")], public.as_str(), "{secret}");
        assert!(other.decrypt(secret, &stored.encrypted[&default.key]).is_err());
    }
    // No key backup was made.
    let backup = user.request(Method::GET, &["room_keys", "version"], &[], None).await;
    assert!(backup.is_err_and(|error| error.to_string().contains("404")));
}

/// The Ed25519 public key (unpadded base64) of a cross-signing seed (unpadded base64).
fn public_key_of_seed(seed: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(seed)?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("a seed has 32 bytes"))?;
    Ok(vodozemac::Ed25519SecretKey::from_slice(&seed).public_key().to_base64())
}
