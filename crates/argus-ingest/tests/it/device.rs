//! The connector as an end-to-end-encryption device, against the real Synapse, on each
//! backend: a watched service account with no key backup decrypts what real clients
//! (`matrix-sdk-crypto` in the test kit) send after it joined, each message with what is known
//! of its sending device (a cross-signed device verified, an unsigned one unverified, a key sent
//! by another user's device unknown); a client sharing only with cross-signed devices withholds
//! its keys until the connector's device signed itself with the account's self-signing key from
//! secret storage, then shares; a stopped loop, a replica killed and another taking over keep
//! decrypting with the same device; keys received are saved into the account's key backup.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use argus_domain::{PageRequest, Secret, SenderTrust, StoredMessage, Viewer};
use argus_ingest::live::AccountWatchRequest;
use argus_testkit::{
    e2ee::KeyBackup,
    e2ee_client::{E2eeClient, Share, set_up_cross_signing_in_secret_storage},
    synapse::{TestUser, synapse},
};
use reqwest::Method;

use crate::{
    live::{
        Doomed, Patience, Running, account_request, first_sync, homeserver, register, room_id, until_stored,
        watch,
    },
    support::{Env, analyst, backend_suite},
};

backend_suite!(
    a_service_account_decrypts_live_messages_with_what_is_known_of_each_sender,
    a_client_sharing_only_with_cross_signed_devices_shares_once_the_device_signed_itself,
    a_replica_taking_the_loop_over_decrypts_with_the_same_device,
    keys_the_device_receives_are_saved_into_the_account_s_key_backup,
);

/// The messages of `room` as `viewer` sees them, oldest first.
async fn stored(env: &Env, viewer: &Viewer, room: &str) -> Vec<StoredMessage> {
    let (v, r) = (viewer.clone(), room_id(room));
    env.with_store(move |s| s.messages(&v, &r, &PageRequest { first: 100, after: None })).await.items
}

/// (event id, body, decrypted, trust, reason it stayed encrypted) of each message of `room`.
async fn seen(
    env: &Env,
    viewer: &Viewer,
    room: &str,
) -> Vec<(String, Option<String>, bool, SenderTrust, Option<String>)> {
    stored(env, viewer, room)
        .await
        .into_iter()
        .map(|m| {
            let m = m.message;
            (m.event_id.to_string(), m.body, m.decrypted, m.sender_trust, m.undecryptable)
        })
        .collect()
}

/// The devices of `user`'s account on the homeserver.
async fn devices(user: &TestUser) -> Vec<String> {
    let answer = user.request(Method::GET, &["devices"], &[], None).await.unwrap();
    let mut ids: Vec<String> = answer["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Waits until `client` sees `user`'s device `device_id` cross-signed by its owner.
async fn until_cross_signed(client: &E2eeClient, user: &TestUser) {
    let patience = Patience::new("the connector's device cross-signed");
    loop {
        let signed = client.verification_of(&user.user_id, &user.device_id).await.unwrap();
        if signed {
            return;
        }
        patience.wait(signed).await;
    }
}

/// An encrypted room of `owner` that `members` joined.
async fn encrypted_room(owner: &TestUser, members: &[&TestUser]) -> String {
    let room = owner.create_room(Some("Chiffrée"), None, true).await.unwrap();
    for member in members {
        owner.invite(&room, &member.user_id).await.unwrap();
        member.join(&room).await.unwrap();
    }
    room
}

/// A sending client of a new user, with its cross-signing identity when `cross_signed`.
async fn sender(name: &str, cross_signed: bool) -> (TestUser, E2eeClient) {
    let user = register(name).await;
    let mut client = E2eeClient::new(homeserver(), &user).await.unwrap();
    if cross_signed {
        client.bootstrap_cross_signing().await.unwrap();
    }
    (user, client)
}

async fn a_service_account_decrypts_live_messages_with_what_is_known_of_each_sender(env: Env) {
    let Some(_) = synapse() else { return };
    let service = register("dev_service").await;
    let security_key = set_up_cross_signing_in_secret_storage(homeserver(), &service).await.unwrap();
    let (ana_user, mut ana) = sender("dev_ana", true).await;
    let (eve_user, mut eve) = sender("dev_eve", false).await;
    let room = encrypted_room(&ana_user, &[&service, &eve_user]).await;
    let devices_before = devices(&service).await;

    let alice = analyst("dgsi");
    let request =
        AccountWatchRequest { recovery_key: Some(Secret::new(security_key)), ..account_request(&service) };
    let made = watch(&env, &alice, request).await;
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &alice, made.id).await;
    until_cross_signed(&ana, &service).await;
    ana.sync_once().await.unwrap();
    eve.sync_once().await.unwrap();

    let verified = ana.send_text(&room, "vérifié", Share::CrossSignedOnly).await.unwrap();
    let unverified = eve.send_text(&room, "non signé", Share::AllDevices).await.unwrap();
    // Eve's device makes the ciphertext and shares its key; Ana's account sends it: the key
    // did not come from a device of the event's sender.
    let forged_content = eve.encrypt_text(&room, "forgé", Share::AllDevices).await.unwrap();
    let forged = ana.send_encrypted(&room, &forged_content).await.unwrap();
    until_stored(&env, &alice, &room, &[verified.clone(), unverified.clone(), forged.clone()]).await;
    let patience = Patience::new("every message decrypted, the forged one refused");
    let found = loop {
        let found = seen(&env, &alice, &room).await;
        if found[..2].iter().all(|m| m.2) && found[2].4.as_deref() == Some("SENDER_KEY_MISMATCH") {
            break found;
        }
        patience.wait(&found).await;
    };
    assert_eq!(
        found,
        [
            (verified, Some("vérifié".into()), true, SenderTrust::Verified, None),
            (unverified, Some("non signé".into()), true, SenderTrust::UnverifiedDevice, None),
            (forged, None, false, SenderTrust::UnknownDevice, Some("SENDER_KEY_MISMATCH".into())),
        ]
    );

    // A stopped loop (a process ending) and a new one: the same device, still decrypting.
    live.stop().await;
    let again = Running::start(&env.services, "replica-b");
    let after = ana.send_text(&room, "après le redémarrage", Share::CrossSignedOnly).await.unwrap();
    let patience = Patience::new("decrypted after a restart");
    loop {
        let found = seen(&env, &alice, &room).await;
        if found.iter().any(|m| m.0 == after && m.2) {
            let last = found.iter().find(|m| m.0 == after).unwrap();
            assert_eq!((last.1.as_deref(), last.3), (Some("après le redémarrage"), SenderTrust::Verified));
            break;
        }
        patience.wait(&found).await;
    }
    again.stop().await;
    assert_eq!(devices(&service).await, devices_before, "no new device of the account");
    // Its state is kept sealed: no secret of it in clear in the store.
    let (org, url, user, device) = (
        alice.org.clone(),
        made.homeserver_url.as_str().to_owned(),
        service.user_id.clone(),
        service.device_id.clone(),
    );
    let items = env
        .with_store(move |s| {
            s.device_items(argus_store::DeviceRef {
                org: &org,
                homeserver_url: &url,
                user_id: &user,
                device_id: &device,
            })
        })
        .await;
    assert!(
        items.iter().any(|i| i.kind == "account") && items.iter().any(|i| i.kind == "room_key"),
        "{items:?}"
    );
    assert!(items.iter().all(|i| !i.sealed.ciphertext.contains("pickle")));
}

async fn a_client_sharing_only_with_cross_signed_devices_shares_once_the_device_signed_itself(env: Env) {
    let Some(_) = synapse() else { return };
    let service = register("dev_signs").await;
    let security_key = set_up_cross_signing_in_secret_storage(homeserver(), &service).await.unwrap();
    let (ana_user, mut ana) = sender("dev_strict", true).await;
    let room = encrypted_room(&ana_user, &[&service]).await;

    // Without the recovery key the device cannot sign itself: the strict client withholds.
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&service)).await;
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &alice, made.id).await;
    ana.sync_once().await.unwrap();
    assert!(!ana.verification_of(&service.user_id, &service.device_id).await.unwrap());
    let withheld = ana.send_text(&room, "retenu", Share::CrossSignedOnly).await.unwrap();
    until_stored(&env, &alice, &room, std::slice::from_ref(&withheld)).await;
    let patience = Patience::new("the withheld key recorded");
    loop {
        let found = seen(&env, &alice, &room).await;
        if found[0].4.is_some() {
            assert_eq!(
                found,
                [(
                    withheld.clone(),
                    None,
                    false,
                    SenderTrust::UnknownDevice,
                    Some("WITHHELD_UNVERIFIED".into())
                )]
            );
            break;
        }
        patience.wait(&found).await;
    }

    // Given again with the recovery key: the device signs itself, and the client shares.
    let request =
        AccountWatchRequest { recovery_key: Some(Secret::new(security_key)), ..account_request(&service) };
    watch(&env, &alice, request).await;
    until_cross_signed(&ana, &service).await;
    ana.sync_once().await.unwrap();
    let shared = ana.send_text(&room, "partagé", Share::CrossSignedOnly).await.unwrap();
    until_stored(&env, &alice, &room, &[withheld.clone(), shared.clone()]).await;
    let patience = Patience::new("the shared message decrypted");
    loop {
        let found = seen(&env, &alice, &room).await;
        if found[1].2 {
            assert_eq!(found[1], (shared.clone(), Some("partagé".into()), true, SenderTrust::Verified, None));
            // What was withheld stays so: its sender never shared it.
            assert_eq!(found[0].4.as_deref(), Some("WITHHELD_UNVERIFIED"));
            break;
        }
        patience.wait(&found).await;
    }
    live.stop().await;
}

async fn a_replica_taking_the_loop_over_decrypts_with_the_same_device(env: Env) {
    let Some(_) = synapse() else { return };
    let service = register("dev_relay").await;
    let security_key = set_up_cross_signing_in_secret_storage(homeserver(), &service).await.unwrap();
    let (ana_user, mut ana) = sender("dev_relay_ana", true).await;
    let room = encrypted_room(&ana_user, &[&service]).await;
    let devices_before = devices(&service).await;
    let alice = analyst("dgsi");
    let request =
        AccountWatchRequest { recovery_key: Some(Secret::new(security_key)), ..account_request(&service) };
    let made = watch(&env, &alice, request).await;

    let mut a = Doomed::start(env.replica(|_| {}), "replica-a");
    first_sync(&env, &alice, made.id).await;
    until_cross_signed(&ana, &service).await;
    ana.sync_once().await.unwrap();
    let first = ana.send_text(&room, "sous A", Share::CrossSignedOnly).await.unwrap();
    until_stored(&env, &alice, &room, std::slice::from_ref(&first)).await;

    // A dies holding its lease; B takes over with the device A kept in the store.
    a.kill();
    let b = Running::start(&env.replica(|_| {}), "replica-b");
    let second = ana.send_text(&room, "pendant la relève", Share::CrossSignedOnly).await.unwrap();
    let patience = Patience::new("both decrypted, the second by replica B");
    loop {
        let found = seen(&env, &alice, &room).await;
        if found.len() == 2 && found.iter().all(|m| m.2) {
            assert_eq!(
                found.iter().map(|m| (m.0.clone(), m.3)).collect::<Vec<_>>(),
                [(first.clone(), SenderTrust::Verified), (second.clone(), SenderTrust::Verified)]
            );
            break;
        }
        patience.wait(&found).await;
    }
    assert_eq!(b.live.running(), [made.id]);
    b.stop().await;
    assert_eq!(devices(&service).await, devices_before, "no new device of the account");
}

async fn keys_the_device_receives_are_saved_into_the_account_s_key_backup(env: Env) {
    let Some(_) = synapse() else { return };
    let service = register("dev_backup").await;
    let backup = KeyBackup::create(&service, [0x41; 32], [0x42; 32]).await.unwrap();
    let (ana_user, mut ana) = sender("dev_backup_ana", false).await;
    let room = encrypted_room(&ana_user, &[&service]).await;
    let alice = analyst("dgsi");
    let request = AccountWatchRequest {
        recovery_key: Some(Secret::new(backup.security_key())),
        ..account_request(&service)
    };
    let made = watch(&env, &alice, request).await;
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &alice, made.id).await;
    ana.sync_once().await.unwrap();
    let sent = ana.send_text(&room, "sauvegardé", Share::AllDevices).await.unwrap();
    until_stored(&env, &alice, &room, std::slice::from_ref(&sent)).await;
    let patience = Patience::new("the room key in the account's key backup");
    loop {
        let version = service.request(Method::GET, &["room_keys", "version"], &[], None).await.unwrap();
        let version = version["version"].as_str().unwrap().to_owned();
        let keys = service
            .request(Method::GET, &["room_keys", "keys", &room], &[("version", &version)], None)
            .await
            .unwrap();
        let sessions = keys["sessions"].as_object().map_or(0, |s| s.len());
        if sessions > 0 {
            break;
        }
        patience.wait(&keys).await;
    }
    let found = seen(&env, &alice, &room).await;
    assert_eq!(found[0].1.as_deref(), Some("sauvegardé"));
    live.stop().await;
}
