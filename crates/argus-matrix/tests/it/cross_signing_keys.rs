//! The account's private cross-signing keys read from its secret storage on the real Synapse
//! (written by the test kit as Element writes them, under the same key as the backup key): the
//! three keys with the security key, a wrong key refused as the key backup refuses it, a
//! missing secret or an account without secret storage giving none.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use argus_crypto::RecoveryKey;
use argus_domain::{AccessToken, HomeserverUrl};
use argus_matrix::{
    Connector, ConnectorConfig, Error, MASTER_KEY_SECRET, SELF_SIGNING_KEY_SECRET, Session,
    USER_SIGNING_KEY_SECRET,
};
use argus_testkit::{
    e2ee::{KeyBackup, recovery_key_text},
    synapse::{TestUser, synapse},
};

fn connector() -> Connector {
    Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .unwrap()
}

fn session(user: &TestUser) -> Session {
    let homeserver: HomeserverUrl = synapse().unwrap().base_url().parse().unwrap();
    Session::with_token(homeserver, AccessToken::new(user.access_token.clone()))
}

fn exposed(key: Option<&argus_domain::Secret>) -> Option<&str> {
    key.map(argus_domain::Secret::expose_secret)
}

const MASTER: &str = "9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6g";
const SELF_SIGNING: &str = "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs";
const USER_SIGNING: &str = "Hk/ofwfc6uDV9LV5n9ZyoLf3T7gtuo1a3l1Fqr0MOWQ";

#[tokio::test]
async fn the_three_keys_are_read_with_the_security_key() {
    let Some(server) = synapse() else { return };
    let alice = server.register("xsign_alice").await.unwrap();
    let backup = KeyBackup::create(&alice, [0x21; 32], [0x22; 32]).await.unwrap();
    backup.store_secret(&alice, MASTER_KEY_SECRET, MASTER.as_bytes()).await.unwrap();
    // Padded, as some clients store it: handed over unpadded.
    backup
        .store_secret(&alice, SELF_SIGNING_KEY_SECRET, format!("{SELF_SIGNING}=").as_bytes())
        .await
        .unwrap();
    backup.store_secret(&alice, USER_SIGNING_KEY_SECRET, USER_SIGNING.as_bytes()).await.unwrap();
    let key: RecoveryKey = backup.security_key().parse().unwrap();

    let keys = connector().load_cross_signing_keys(&session(&alice), &key).await.unwrap();
    assert_eq!(exposed(keys.master.as_ref()), Some(MASTER));
    assert_eq!(exposed(keys.self_signing.as_ref()), Some(SELF_SIGNING));
    assert_eq!(exposed(keys.user_signing.as_ref()), Some(USER_SIGNING));
    assert!(!format!("{keys:?}").contains(MASTER));

    // A wrong key is refused as the key backup refuses it; the legacy backup key (the backup
    // key itself, which opens the backup) does not open secret storage.
    for wrong in [recovery_key_text(&[0x34; 32]), backup.legacy_recovery_key()] {
        let wrong: RecoveryKey = wrong.parse().unwrap();
        let err = connector().load_cross_signing_keys(&session(&alice), &wrong).await.unwrap_err();
        assert!(matches!(err, Error::Crypto(argus_crypto::Error::WrongRecoveryKey)), "{err:?}");
    }
    let wrong: RecoveryKey = recovery_key_text(&[0x34; 32]).parse().unwrap();
    assert!(matches!(
        connector().load_room_keys(&session(&alice), &"!r:a.fr".parse().unwrap(), &wrong).await,
        Err(Error::Crypto(argus_crypto::Error::WrongRecoveryKey))
    ));

    // The backup key still loads through the same secret storage.
    let room = alice.create_room(Some("Chiffré"), None, true).await.unwrap();
    let loaded = connector().load_room_keys(&session(&alice), &room.parse().unwrap(), &key).await.unwrap();
    assert!(loaded.keys.is_empty() && loaded.unusable.is_empty());
}

#[tokio::test]
async fn missing_secrets_and_missing_secret_storage_give_none() {
    let Some(server) = synapse() else { return };
    let bob = server.register("xsign_bob").await.unwrap();
    let backup = KeyBackup::create(&bob, [0x31; 32], [0x32; 32]).await.unwrap();
    backup.store_secret(&bob, SELF_SIGNING_KEY_SECRET, SELF_SIGNING.as_bytes()).await.unwrap();
    let key: RecoveryKey = backup.security_key().parse().unwrap();
    let keys = connector().load_cross_signing_keys(&session(&bob), &key).await.unwrap();
    assert_eq!(
        (
            exposed(keys.master.as_ref()),
            exposed(keys.self_signing.as_ref()),
            exposed(keys.user_signing.as_ref())
        ),
        (None, Some(SELF_SIGNING), None)
    );

    // Only the backup key in secret storage: no cross-signing key.
    let carol = server.register("xsign_carol").await.unwrap();
    let backup = KeyBackup::create(&carol, [0x41; 32], [0x42; 32]).await.unwrap();
    let key: RecoveryKey = backup.security_key().parse().unwrap();
    let keys = connector().load_cross_signing_keys(&session(&carol), &key).await.unwrap();
    assert!(keys.master.is_none() && keys.self_signing.is_none() && keys.user_signing.is_none());

    // No secret storage at all.
    let dave = server.register("xsign_dave").await.unwrap();
    let keys = connector().load_cross_signing_keys(&session(&dave), &key).await.unwrap();
    assert!(keys.master.is_none() && keys.self_signing.is_none() && keys.user_signing.is_none());

    // A secret that is not a key is refused, in our words.
    backup.store_secret(&carol, MASTER_KEY_SECRET, b"not a key").await.unwrap();
    let err = connector().load_cross_signing_keys(&session(&carol), &key).await.unwrap_err();
    assert_eq!(err.code(), "MALFORMED_RESPONSE", "{err:?}");
    assert!(!err.to_string().contains("not a key"));
}
