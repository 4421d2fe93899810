//! End-to-end encrypted history through `ingestTchapRoom` with a recovery key, against the real
//! Synapse: the test kit's sending device encrypts messages (an edit and a reply among them,
//! their relations in clear as clients send them) and backs its sessions up, with the backup key
//! in secret storage under a security key. The ingestion decrypts what the backup allows and
//! keeps the rest with its reason; a decrypted message says it was encrypted, and an edit shows
//! its new content, never its fallback body. A wrong key, or an account without a backup, is a
//! FAILED audit record without the key. A watch given the key decrypts in its scheduled runs
//! (an edit among what it reads); one given a key that does not open the backup is paused. The
//! key is in no response, file or log line.

use anyhow::{Context, Result, ensure};
use argus_domain::{Classification::Secret, Scope};
use argus_testkit::{
    e2ee::{KeyBackup, Sender},
    synapse::Synapse,
};
use serde_json::json;

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) {
    messagesStored decrypted undecryptable { reason count }
    ingestion { outcome error }
  }
}";

const MESSAGES: &str = r"query($r: String!) { tchapMessages(roomId: $r, first: 50) { edges { node {
  eventId body edited encrypted decrypted undecryptableReason replyTo versions { body }
} } } }";

const SEARCH: &str = r"query($q: String!) { tchapSearch(query: $q, first: 10) { edges { node {
  eventId body encrypted decrypted
} } } }";

const AUDIT: &str = "{ tchapIngestions(first: 50) { edges { node { roomId outcome error scheduled } } } }";

const WATCH: &str = r"mutation($input: WatchTchapRoomInput!) {
  watchTchapRoom(input: $input) { status decryptsHistory }
}";

const WATCHES: &str = r"{ tchapWatches(first: 10) { nodes {
  roomId status statusReason lastRunAt lastOutcome lastError decryptsHistory
} } }";

/// Runs the scenario on the store at `database_url`; returns the secrets that must appear
/// nowhere (the recovery keys as typed, the Matrix tokens).
pub(crate) async fn run(synapse: &Synapse, database_url: &str, dir: &std::path::Path) -> Result<Vec<String>> {
    let alice = synapse.register("e2ee_alice").await?;
    let room = alice.create_room(Some("Cellule chiffrée"), None, true).await?;
    let mut first = Sender::new();
    let early = first.send_text(&alice, &room, "avant la sauvegarde").await?;
    let meeting = first.send_text(&alice, &room, "rendez-vous à 10h au quai nord").await?;
    let reply = first
        .send(
            &alice,
            &room,
            json!({ "msgtype": "m.text", "body": "bien reçu" }),
            Some(json!({ "m.in_reply_to": { "event_id": meeting } })),
        )
        .await?;
    first
        .send(
            &alice,
            &room,
            json!({ "msgtype": "m.text", "body": "* rendez-vous à 11h au quai nord",
                    "m.new_content": { "msgtype": "m.text", "body": "rendez-vous à 11h au quai nord" } }),
            Some(json!({ "rel_type": "m.replace", "event_id": meeting })),
        )
        .await?;
    let mut rotated = Sender::new();
    let after = rotated.send_text(&alice, &room, "nouvelle session, même salle").await?;
    let mut lost = Sender::new();
    let missing = lost.send_text(&alice, &room, "jamais sauvegardé").await?;

    let backup = KeyBackup::create(&alice, [0x21; 32], [0x42; 32]).await?;
    backup.upload(&alice, &room, &mut first, 1).await?;
    backup.upload(&alice, &room, &mut rotated, 0).await?;

    let server = Server::start(database_url, dir).await?;
    let jwt = server.jwt("analyst@dgsi", "dgsi", Secret, &[Scope::Read, Scope::Ingest, Scope::Audit])?;
    let input = |key: &str| {
        json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
            "classification": "RESTRICTED", "recoveryKey": key,
        } })
    };

    // A wrong key first: a FAILED record without the key, nothing stored.
    let wrong = argus_testkit::e2ee::recovery_key_text(&[0x43; 32]);
    let (code, _) = server.error_code(&jwt, INGEST, input(&wrong)).await?;
    ensure!(code == "WRONG_RECOVERY_KEY", "a wrong key: {code}");

    let done = server.data(&jwt, INGEST, input(&backup.security_key()), "ingestTchapRoom").await?;
    let undecryptable: Vec<(String, i64)> = done["undecryptable"]
        .as_array()
        .context("undecryptable")?
        .iter()
        .map(|u| (u["reason"].as_str().unwrap_or_default().to_owned(), u["count"].as_i64().unwrap_or(0)))
        .collect();
    ensure!(
        done["decrypted"] == 4
            && undecryptable
                == [("INDEX_BEFORE_FIRST_KNOWN".to_owned(), 1), ("NO_KEY_IN_BACKUP".to_owned(), 1)]
            && done["messagesStored"] == 5,
        "the ingestion: {done}"
    );

    let edges = server.data(&jwt, MESSAGES, json!({ "r": room }), "tchapMessages").await?;
    let node = |id: &str| crate::harness::message_node(&edges, id);
    let m = node(&meeting)?;
    ensure!(
        m["body"] == "rendez-vous à 11h au quai nord"
            && m["edited"] == true
            && m["decrypted"] == true
            && m["encrypted"] == true
            && m["versions"].as_array().map(Vec::len) == Some(2)
            && m["versions"][1]["body"] == "rendez-vous à 11h au quai nord",
        "the decrypted, edited message: {m}"
    );
    let r = node(&reply)?;
    ensure!(
        r["body"] == "bien reçu" && r["replyTo"] == meeting.as_str() && r["decrypted"] == true,
        "the reply: {r}"
    );
    let a = node(&after)?;
    ensure!(a["body"] == "nouvelle session, même salle", "the rotated session: {a}");
    let e = node(&early)?;
    ensure!(
        e["body"].is_null()
            && e["encrypted"] == true
            && e["undecryptableReason"] == "INDEX_BEFORE_FIRST_KNOWN",
        "before the backed-up index: {e}"
    );
    let x = node(&missing)?;
    ensure!(x["undecryptableReason"] == "NO_KEY_IN_BACKUP" && x["body"].is_null(), "not backed up: {x}");

    // The legacy backup recovery key opens the backup too (nothing new to store).
    let again = server.data(&jwt, INGEST, input(&backup.legacy_recovery_key()), "ingestTchapRoom").await?;
    ensure!(again["messagesStored"] == 0, "the legacy key: {again}");

    // An account without a backup.
    let bob = synapse.register("e2ee_bob").await?;
    let bob_room = bob.create_room(Some("Sans sauvegarde"), None, true).await?;
    let bob_input = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": bob.access_token, "roomId": bob_room,
        "classification": "RESTRICTED", "recoveryKey": backup.security_key(),
    } });
    let (code, _) = server.error_code(&jwt, INGEST, bob_input).await?;
    ensure!(code == "NO_KEY_BACKUP", "no backup: {code}");

    let trail = server.data(&jwt, AUDIT, json!({}), "tchapIngestions").await?.to_string();
    ensure!(trail.matches("FAILED").count() == 2, "two FAILED records: {trail}");

    // Watched with the security key: the scheduler's run decrypts what was sent since. Watched
    // with a key that does not open the backup: the run fails and pauses the watch.
    let planned = first.send_text(&alice, &room, "point de situation à 14h").await?;
    // An edit as a client that keeps the relation inside the ciphertext too sends it.
    let moved = json!({ "rel_type": "m.replace", "event_id": meeting });
    first
        .send(
            &alice,
            &room,
            json!({ "msgtype": "m.text", "body": "* rendez-vous à 12h au quai sud",
                    "m.new_content": { "msgtype": "m.text", "body": "rendez-vous à 12h au quai sud" },
                    "m.relates_to": moved }),
            Some(moved.clone()),
        )
        .await?;
    let other_room = alice.create_room(Some("Autre cellule"), None, true).await?;
    Sender::new().send_text(&alice, &other_room, "clé erronée").await?;
    let watch = |room: &str, key: &str| {
        json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
            "classification": "RESTRICTED", "interval": 3600, "recoveryKey": key,
        } })
    };
    let (code, _) = server.error_code(&jwt, WATCH, watch(&other_room, "pas une clé de récupération")).await?;
    ensure!(code == "WRONG_RECOVERY_KEY", "a text that is no recovery key: {code}");
    let w = server.data(&jwt, WATCH, watch(&room, &backup.security_key()), "watchTchapRoom").await?;
    ensure!(w["decryptsHistory"] == true && w["status"] == "ACTIVE", "the watch: {w}");
    server.data(&jwt, WATCH, watch(&other_room, &wrong), "watchTchapRoom").await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let watches = loop {
        let list = server.data(&jwt, WATCHES, json!({}), "tchapWatches").await?;
        let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() == 2 && nodes.iter().all(|n| !n["lastRunAt"].is_null()) {
            break nodes;
        }
        ensure!(std::time::Instant::now() < deadline, "the scheduler did not run both watches: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let of = |r: &str| watches.iter().find(|n| n["roomId"] == r).cloned().unwrap_or_default();
    let decrypting = of(&room);
    ensure!(
        decrypting["lastOutcome"] == "SUCCEEDED" && decrypting["status"] == "ACTIVE",
        "the watch with the right key: {decrypting}"
    );
    let paused = of(&other_room);
    ensure!(
        paused["status"] == "PAUSED"
            && paused["statusReason"].as_str().is_some_and(|r| r.starts_with("WRONG_RECOVERY_KEY: "))
            && paused["decryptsHistory"] == true,
        "the watch with a wrong key: {paused}"
    );
    let edges = server.data(&jwt, MESSAGES, json!({ "r": room }), "tchapMessages").await?;
    let p = crate::harness::message_node(&edges, &planned)?;
    ensure!(
        p["body"] == "point de situation à 14h" && p["decrypted"] == true && p["encrypted"] == true,
        "the message the scheduled run decrypted: {p}"
    );
    let m = crate::harness::message_node(&edges, &meeting)?;
    let versions: Vec<&str> = m["versions"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["body"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        m["body"] == "rendez-vous à 12h au quai sud"
            && m["encrypted"] == true
            && versions
                == [
                    "rendez-vous à 10h au quai nord",
                    "rendez-vous à 11h au quai nord",
                    "rendez-vous à 12h au quai sud"
                ],
        "the edit the scheduled run decrypted: {m}"
    );
    let found = server.data(&jwt, SEARCH, json!({ "q": "quai sud" }), "tchapSearch").await?;
    let hit = crate::harness::message_node(&found, &meeting)?;
    ensure!(hit["encrypted"] == true && hit["decrypted"] == true, "the search result: {hit}");
    let trail = server.data(&jwt, AUDIT, json!({}), "tchapIngestions").await?;
    let scheduled: Vec<(String, String)> = trail["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .filter(|e| e["node"]["scheduled"] == true)
        .map(|e| {
            (
                e["node"]["roomId"].as_str().unwrap_or_default().to_owned(),
                e["node"]["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ensure!(
        scheduled.contains(&(room.clone(), "SUCCEEDED".to_owned()))
            && scheduled.contains(&(other_room.clone(), "FAILED".to_owned())),
        "the scheduled runs in the trail: {scheduled:?}"
    );
    let secrets = vec![
        backup.security_key(),
        backup.security_key().replace(' ', ""),
        backup.legacy_recovery_key().replace(' ', ""),
        wrong.replace(' ', ""),
        alice.access_token.clone(),
        bob.access_token.clone(),
    ];
    for response in server.responses()? {
        for secret in &secrets {
            ensure!(!response.contains(secret.as_str()), "a response holds a secret");
        }
    }
    server.stop().await?;
    Ok(secrets)
}
