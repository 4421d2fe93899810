//! The connector as an end-to-end-encryption device, end to end: `argus-tchap serve` processes
//! run the `/sync` loop of an account watched over GraphQL with the account's security key as
//! recovery key, against real clients (`matrix-sdk-crypto` in the test kit) on the real Synapse,
//! on SQLite and PostgreSQL.
//!
//! - [`capture`]: the watch's device (the device of its access token) signs itself with the
//!   account's self-signing key from secret storage; a client sharing only with cross-signed
//!   devices then shares with it, and `tchapMessages` shows its messages decrypted, `VERIFIED`;
//!   an unsigned client's message shows `UNVERIFIED_DEVICE`. The process is killed with SIGKILL
//!   while encrypted messages stream in and started again on the same store: every message is
//!   stored once and decrypted `VERIFIED` (those sent while it was down too), and the account's
//!   device list and the device's identity keys on the homeserver are those of before the kill.
//! - [`replicas`]: two processes on one PostgreSQL; the one holding the account's loop is killed,
//!   the other takes it over and decrypts with the same device.
//!
//! Neither the access token nor the security key (as typed, or without its spaces) is ever in
//! a process's standard output or error, nor in any file of the data directory or (PostgreSQL)
//! any column of the database.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_domain::Classification;
use argus_testkit::{
    e2ee_client::{E2eeClient, Share, set_up_cross_signing_in_secret_storage},
    postgres::TestDatabase,
    synapse::{Synapse, TestUser},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    leaks,
    live::{DEADLINE, EVERY, ORG, Serve, WATCH, analyst, audit_verify, stored_counts, wait_holders},
};

/// The live lease of the processes: a killed process's loop is taken over within it.
const LEASE: u64 = 3;

/// The long-poll timeout of the watch, in seconds.
const INTERVAL: i64 = 2;

/// Every message of a room as `tchapMessages` lists it.
const MESSAGES: &str = "query($r: String!) { tchapMessages(roomId: $r, first: 100) {
    pageInfo { hasNextPage } edges { node { eventId body encrypted decrypted undecryptableReason senderTrust } } } }";

/// The service account and the clients writing to its encrypted room.
struct World {
    /// The watched account; its access token is the watch's.
    service: TestUser,
    /// The account's security key, whose secret storage holds its cross-signing keys.
    security_key: String,
    /// A sender whose device is cross-signed by its own identity.
    ana: E2eeClient,
    /// A sender whose device is not cross-signed (no cross-signing identity).
    eve: E2eeClient,
    /// The encrypted room of Ana that the service account and Eve joined.
    room: String,
}

impl World {
    /// Registers the accounts (names made unique by `tag`) and builds the encrypted room.
    async fn new(synapse: &Synapse, tag: &str) -> Result<Self> {
        let service = synapse.register(&format!("dev_e2e_{tag}")).await?;
        let security_key = set_up_cross_signing_in_secret_storage(synapse, &service).await?;
        let ana_user = synapse.register(&format!("dev_e2e_{tag}_ana")).await?;
        let mut ana = E2eeClient::new(synapse, &ana_user).await?;
        ana.bootstrap_cross_signing().await?;
        let eve_user = synapse.register(&format!("dev_e2e_{tag}_eve")).await?;
        let eve = E2eeClient::new(synapse, &eve_user).await?;
        let room = ana_user.create_room(Some("Chiffrée"), None, true).await?;
        for member in [&service, &eve_user] {
            ana_user.invite(&room, &member.user_id).await?;
            member.join(&room).await?;
        }
        Ok(Self { service, security_key, ana, eve, room })
    }

    /// What no process may write in clear: the watch's access token and the security key, as
    /// typed and without its spaces.
    fn secrets(&self) -> Vec<String> {
        vec![self.service.access_token.clone(), self.security_key.clone(), self.security_key.replace(' ', "")]
    }

    /// Watches the service account over GraphQL with its security key as recovery key.
    async fn watch(&self, serve: &Serve, jwt: &str, synapse: &Synapse) -> Result<Value> {
        let input = json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": self.service.access_token,
            "recoveryKey": self.security_key, "classification": "RESTRICTED", "interval": INTERVAL,
        }});
        let watched = serve.data(jwt, WATCH, input, "watchTchapAccount").await?;
        ensure!(watched["status"] == "ACTIVE", "{watched}");
        Ok(watched)
    }

    /// Waits until Ana sees the watch's device cross-signed by the service account, then lets
    /// both senders learn the room's devices.
    async fn until_cross_signed(&mut self, serve: &Serve) -> Result<Duration> {
        let started = Instant::now();
        let (user, device) = (&self.service.user_id, &self.service.device_id);
        loop {
            // Unknown until the device uploaded its keys: not signed yet either.
            if self.ana.verification_of(user, device).await.unwrap_or(false) {
                break;
            }
            ensure!(
                started.elapsed() < DEADLINE,
                "the watch's device was never cross-signed{}",
                serve.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.ana.sync_once().await?;
        self.eve.sync_once().await?;
        Ok(started.elapsed())
    }
}

/// The service account's device ids on the homeserver (`GET /devices`), sorted.
async fn devices(user: &TestUser) -> Result<Vec<String>> {
    let answer = user.request(Method::GET, &["devices"], &[], None).await?;
    let mut ids = answer["devices"]
        .as_array()
        .ok_or_else(|| anyhow!("no devices: {answer}"))?
        .iter()
        .map(|d| d["device_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("{d}")))
        .collect::<Result<Vec<_>>>()?;
    ids.sort();
    Ok(ids)
}

/// The identity keys (`keys`: `curve25519:<id>`, `ed25519:<id>`) the homeserver publishes for
/// `user`'s device `user.device_id` (`POST /keys/query`).
async fn identity_keys(user: &TestUser) -> Result<Value> {
    let body = json!({ "device_keys": { user.user_id.as_str(): [] } });
    let answer = user.request(Method::POST, &["keys", "query"], &[], Some(&body)).await?;
    let keys = &answer["device_keys"][user.user_id.as_str()][user.device_id.as_str()]["keys"];
    ensure!(keys.as_object().is_some_and(|k| k.len() == 2), "no identity keys published: {answer}");
    Ok(keys.clone())
}

/// Every message of `room` as `tchapMessages` lists it (one page).
async fn messages(serve: &Serve, jwt: &str, room: &str) -> Result<Vec<Value>> {
    let page = serve.data(jwt, MESSAGES, json!({ "r": room }), "tchapMessages").await?;
    ensure!(page["pageInfo"]["hasNextPage"] == false, "more than one page");
    Ok(page["edges"].as_array().into_iter().flatten().map(|e| e["node"].clone()).collect())
}

/// Waits until each of `expected` (event id, body, trust) is listed by `tchapMessages`, decrypted
/// with that body and trust; every listed message of `room`.
async fn wait_decrypted(
    serve: &Serve,
    jwt: &str,
    room: &str,
    expected: &[(String, String, &str)],
) -> Result<Vec<Value>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = messages(serve, jwt, room).await?;
        let missing: Vec<&(String, String, &str)> = expected
            .iter()
            .filter(|(id, body, trust)| {
                !listed.iter().any(|m| {
                    m["eventId"] == id.as_str()
                        && m["encrypted"] == true
                        && m["decrypted"] == true
                        && m["body"] == body.as_str()
                        && m["senderTrust"] == *trust
                        && m["undecryptableReason"].is_null()
                })
            })
            .collect();
        if missing.is_empty() {
            return Ok(listed);
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} messages never decrypted as expected (first {:?}); listed: {listed:?}{}",
            missing.len(),
            expected.len(),
            missing[0],
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watch, trust, SIGKILL mid-capture and restart on the same store (see the module docs);
/// the secrets the scans looked for.
pub(crate) async fn capture(synapse: &Synapse, database_url: &str, dir: &Path) -> Result<Vec<String>> {
    let started = Instant::now();
    let mut world = World::new(synapse, "capture").await?;
    let devices_before = devices(&world.service).await?;
    let jwt = analyst("analyste", ORG, Classification::Secret)?;
    let mut serve = Serve::ready(database_url, dir, "device-1", LEASE, &[("RUST_LOG", "debug")]).await?;
    world.watch(&serve, &jwt, synapse).await?;
    let signed_in = world.until_cross_signed(&serve).await?;
    eprintln!("device capture: the watch's device cross-signed itself {signed_in:?} after the watch");
    let keys_before = identity_keys(&world.service).await?;

    // A cross-signed sender sharing only with cross-signed devices, and an unsigned one.
    let room = world.room.clone();
    let verified = world.ana.send_text(&room, "vérifié", Share::CrossSignedOnly).await?;
    let unverified = world.eve.send_text(&room, "non signé", Share::AllDevices).await?;
    let listed = wait_decrypted(
        &serve,
        &jwt,
        &room,
        &[
            (verified.clone(), "vérifié".into(), "VERIFIED"),
            (unverified.clone(), "non signé".into(), "UNVERIFIED_DEVICE"),
        ],
    )
    .await?;
    ensure!(listed.len() == 2, "{listed:?}");
    eprintln!("device capture: VERIFIED and UNVERIFIED_DEVICE after {:?}", started.elapsed());

    // A stream of encrypted messages; SIGKILL once the loop is storing them.
    let mut sent = vec![
        (verified, "vérifié".to_owned(), "VERIFIED"),
        (unverified, "non signé".to_owned(), "UNVERIFIED_DEVICE"),
    ];
    let mut last = None;
    let deadline = Instant::now() + DEADLINE;
    for i in 0.. {
        let body = format!("Flux {i:03}");
        sent.push((world.ana.send_text(&room, &body, Share::CrossSignedOnly).await?, body, "VERIFIED"));
        let stored = stored_counts(&serve, &jwt).await?.get(&room).copied().unwrap_or(0);
        if stored >= 5 && last.is_some_and(|last| stored > last) {
            serve.kill()?;
            eprintln!("device capture: SIGKILL with {stored} stored, {} sent", sent.len());
            break;
        }
        last = Some(stored);
        ensure!(Instant::now() < deadline, "the stream was never stored: {stored}{}", serve.log_tail());
        tokio::time::sleep(EVERY).await;
    }
    // Sent while no process runs the loop.
    for i in 0..3 {
        let body = format!("Pendant l'arrêt {i}");
        sent.push((world.ana.send_text(&room, &body, Share::CrossSignedOnly).await?, body, "VERIFIED"));
    }
    let restarted = Instant::now();
    serve = Serve::ready(database_url, dir, "device-2", LEASE, &[("RUST_LOG", "debug")]).await?;
    for i in 0..5 {
        let body = format!("Après le redémarrage {i}");
        sent.push((world.ana.send_text(&room, &body, Share::CrossSignedOnly).await?, body, "VERIFIED"));
        tokio::time::sleep(EVERY).await;
    }
    let listed = wait_decrypted(&serve, &jwt, &room, &sent).await?;
    eprintln!(
        "device capture: {} messages decrypted, the last {:?} after the restart",
        sent.len(),
        restarted.elapsed()
    );
    let ids: Vec<&str> = listed.iter().filter_map(|m| m["eventId"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    ensure!(unique.len() == ids.len() && ids.len() == sent.len(), "stored {ids:?}, sent {}", sent.len());

    // The same device, unchanged on the homeserver, still cross-signed.
    ensure!(devices(&world.service).await? == devices_before, "the account has a new device");
    ensure!(identity_keys(&world.service).await? == keys_before, "the device's identity keys changed");
    ensure!(
        world.ana.verification_of(&world.service.user_id, &world.service.device_id).await?,
        "the device is no longer cross-signed"
    );
    serve.terminate().await?;
    audit_verify(database_url, dir)?;
    let secrets = world.secrets();
    leaks::assert_absent_from_process_logs(dir, &secrets)?;
    leaks::assert_absent_from_files(dir, &secrets)?;
    eprintln!("device capture: done in {:?}", started.elapsed());
    Ok(secrets)
}

/// Two replicas on one PostgreSQL: the holder of the account's loop killed, the other takes it
/// over and decrypts with the same device.
pub(crate) async fn replicas(synapse: &Synapse, db: &TestDatabase) -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut world = World::new(synapse, "replicas").await?;
    let devices_before = devices(&world.service).await?;
    let jwt = analyst("analyste", ORG, Classification::Secret)?;
    // The first replica applies the migrations; the second starts once it is ready.
    let mut replicas = vec![Serve::ready(db.url(), dir.path(), "device-a", LEASE, &[]).await?];
    replicas.push(Serve::ready(db.url(), dir.path(), "device-b", LEASE, &[]).await?);
    world.watch(&replicas[0], &jwt, synapse).await?;
    let claimed = wait_holders(db, &replicas, "the account was never claimed", |now| {
        !now.is_empty() && now.values().all(Option::is_some)
    })
    .await?;
    world.until_cross_signed(&replicas[0]).await?;
    let keys_before = identity_keys(&world.service).await?;
    let room = world.room.clone();
    let first = world.ana.send_text(&room, "sous le premier", Share::CrossSignedOnly).await?;
    let mut sent = vec![(first, "sous le premier".to_owned(), "VERIFIED")];
    wait_decrypted(&replicas[0], &jwt, &room, &sent).await?;

    let holder = claimed.values().flatten().next().cloned().context("no holder")?;
    let at = replicas.iter().position(|r| r.name == holder).context("the holder is no replica")?;
    let mut killed = replicas.remove(at);
    killed.kill()?;
    let killed_at = Instant::now();
    let second = world.ana.send_text(&room, "pendant la relève", Share::CrossSignedOnly).await?;
    sent.push((second, "pendant la relève".to_owned(), "VERIFIED"));
    let survivor = replicas[0].name.clone();
    wait_holders(db, &replicas, "the loop was not taken over", |now| {
        !now.is_empty() && now.values().all(|h| h.as_deref() == Some(survivor.as_str()))
    })
    .await?;
    let third = world.ana.send_text(&room, "après la relève", Share::CrossSignedOnly).await?;
    sent.push((third, "après la relève".to_owned(), "VERIFIED"));
    let listed = wait_decrypted(&replicas[0], &jwt, &room, &sent).await?;
    ensure!(listed.len() == 3, "{listed:?}");
    eprintln!(
        "device replicas: {holder} killed; {survivor} decrypted its messages {:?} later",
        killed_at.elapsed()
    );
    ensure!(devices(&world.service).await? == devices_before, "the account has a new device");
    ensure!(identity_keys(&world.service).await? == keys_before, "the device's identity keys changed");
    replicas[0].terminate().await?;
    let secrets = world.secrets();
    leaks::assert_absent_from_process_logs(dir.path(), &secrets)?;
    leaks::assert_absent_from_postgres(db, &secrets)?;
    eprintln!("device replicas: done in {:?}", started.elapsed());
    Ok(())
}
