//! `discloseTchapRoom` and `GET /packages/{id}`: a disclosure package written as one `.tar`,
//! journaled, to its organisation only, to a caller cleared for it and holding
//! `tchap:disclose`; one 404 for everything else.

use argus_domain::{
    Classification::{Restricted, Secret, TopSecret},
    Scope,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use argus_graphql::oversight::PackageRecord;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::harness::TestServer;

#[tokio::test]
async fn a_package_goes_to_its_organisation_cleared_for_it_only() {
    let server = TestServer::start().await;
    let dir = server.config.packages_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tar: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(PackageRecord::tar_path(&dir, "pkg-1"), &tar).unwrap();
    let record = PackageRecord {
        id: "pkg-1".into(),
        org: "dgsi".into(),
        clearance: Secret,
        actor: "agent@dgsi".into(),
        sha512: "ab".repeat(64),
        size: tar.len() as u64,
        room_id: "!disclosed:tchap.test".into(),
        held: false,
    };
    record.write(&dir).unwrap();
    // A package holding content kept under legal hold: only for a caller with tchap:redacted.
    std::fs::write(PackageRecord::tar_path(&dir, "pkg-held"), &tar).unwrap();
    PackageRecord { id: "pkg-held".into(), held: true, ..record.clone() }.write(&dir).unwrap();
    assert_eq!(PackageRecord::read(&dir, "pkg-1").unwrap(), Some(record));

    let get = |token: String, id: &str| {
        let request = server.client.get(server.url(&format!("/packages/{id}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let ok = get(server.token("dgsi", TopSecret, &[Scope::Disclose]), "pkg-1").await;
    assert_eq!(ok.status().as_u16(), 200);
    let header = |name: &str| ok.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("content-type").as_deref(), Some("application/x-tar"));
    assert_eq!(header("content-disposition").as_deref(), Some("attachment; filename=\"pkg-1.tar\""));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("cache-control").as_deref(), Some("private, no-store"));
    assert!(ok.bytes().await.unwrap()[..] == tar[..], "the bytes differ");

    let mut answers = Vec::new();
    for (token, id) in [
        (server.token("anssi", TopSecret, &[Scope::Disclose]), "pkg-1"),
        (server.token("dgsi", Restricted, &[Scope::Disclose]), "pkg-1"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), "pkg-2"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), "..%2Fpkg-1"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), ".pkg-1"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), "pkg-held"),
    ] {
        let response = get(token, id).await;
        answers.push((response.status().as_u16(), response.text().await.unwrap()));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 404);
    let held = get(server.token("dgsi", TopSecret, &[Scope::Disclose, Scope::Redacted]), "pkg-held").await;
    assert_eq!(held.status().as_u16(), 200, "a package with held content, to a caller with tchap:redacted");
    // Each download that sent bytes is journaled, with the package's room.
    let (_, log) = server
        .graphql(
            &server.token("dgsi", TopSecret, &[Scope::Audit]),
            r#"{ tchapAccessLog(first: 10, roomId: "!disclosed:tchap.test") { edges { node { action actor } } } }"#,
            serde_json::json!({}),
        )
        .await;
    let downloads = log["data"]["tchapAccessLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["action"] == "DOWNLOAD")
        .count();
    assert_eq!(downloads, 2, "{log}");
    let without_scope = get(server.token("dgsi", TopSecret, &[Scope::Read, Scope::Audit]), "pkg-1").await;
    assert_eq!(without_scope.status().as_u16(), 403);
    let anonymous = server.client.get(server.url("/packages/pkg-1")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    server.stop().await;
}

const DISCLOSE: &str = r"mutation($room: String!) {
  discloseTchapRoom(input: { roomId: $room }) { package { id sha512 size downloadUrl } }
}";

const ROOM: &str = "!disclosed:tchap.test";

/// Stores a room of three messages for `dgsi` at SECRET straight into `store`.
async fn store_room(store: argus_store::Store) {
    let viewer =
        ViewerBuilder::new("dgsi").actor("agent@dgsi").clearance(TopSecret).scopes([Scope::Read]).build();
    let start = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let messages = (0..3_i64).map(|n| {
        MessageRecordBuilder::new(&format!("$d{n}:tchap.test"))
            .body(format!("message {n}"))
            .sent_at(start + time::Duration::minutes(n))
            .build()
    });
    let snapshot = RoomSnapshotBuilder::new(ROOM).messages(messages).build();
    let run = argus_store::IngestionRun {
        viewer,
        classification: Secret,
        started_at: time::OffsetDateTime::now_utc(),
    };
    tokio::task::spawn_blocking(move || store.record_ingestion(&run, &snapshot))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The error code of a GraphQL answer, and its message.
fn error_of(body: &Value) -> (String, String) {
    let error = &body["errors"][0];
    (error["extensions"]["code"].as_str().unwrap_or_default().to_owned(), error["message"].to_string())
}

#[tokio::test]
async fn a_disclosed_room_downloads_as_its_tar_to_its_organisation_and_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::config(&dir);
    let (server, store) = TestServer::start_with_blobs(dir, config, None).await;
    store_room(store).await;
    let discloser = server.token("dgsi", TopSecret, &[Scope::Disclose]);

    // Without the scope: refused, nothing written.
    let reader = server.token("dgsi", TopSecret, &[Scope::Read, Scope::Audit]);
    let (_, refused) = server.graphql(&reader, DISCLOSE, json!({ "room": ROOM })).await;
    assert_eq!(error_of(&refused).0, "FORBIDDEN", "{refused}");
    // Absent and withheld rooms answer alike.
    let (_, absent) = server.graphql(&discloser, DISCLOSE, json!({ "room": "!nowhere:tchap.test" })).await;
    let below = server.token("dgsi", Restricted, &[Scope::Disclose]);
    let (_, withheld) = server.graphql(&below, DISCLOSE, json!({ "room": ROOM })).await;
    assert_eq!(error_of(&absent).0, "NOT_FOUND", "{absent}");
    assert_eq!(error_of(&absent), error_of(&withheld));
    let dir = server.config.packages_dir();
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    assert!(files().is_empty(), "{:?}", files());

    let (status, body) = server.graphql(&discloser, DISCLOSE, json!({ "room": ROOM })).await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body:#}");
    let package = &body["data"]["discloseTchapRoom"]["package"];
    let id = package["id"].as_str().unwrap().to_owned();
    assert_eq!(package["downloadUrl"], format!("/packages/{id}"));
    // Only the tar and its record stay: the bag is gone.
    assert_eq!(files(), vec![format!("{id}.json"), format!("{id}.tar")]);

    let download = |token: String| {
        let request = server.client.get(server.url(&format!("/packages/{id}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let ok = download(discloser.clone()).await;
    assert_eq!(ok.status().as_u16(), 200);
    let tar = ok.bytes().await.unwrap();
    assert_eq!(package["size"], tar.len());
    assert_eq!(package["sha512"], hex::encode(sha2::Sha512::digest(&tar)));
    // The tar holds the bag under the package id.
    let text = String::from_utf8_lossy(&tar);
    assert!(
        text.contains(&format!("{id}/bagit.txt")) && text.contains(&format!("External-Identifier: {id}"))
    );
    assert_eq!(download(server.token("anssi", TopSecret, &[Scope::Disclose])).await.status().as_u16(), 404);

    let auditor = server.token("dgsi", TopSecret, &[Scope::Audit]);
    let log =
        r"{ tchapAccessLog { totalCount edges { node { actor action roomIds itemCount classification } } } }";
    let (_, log) = server.graphql(&auditor, log, json!({})).await;
    let edges = &log["data"]["tchapAccessLog"]["edges"];
    let disclosures: Vec<&Value> =
        edges.as_array().unwrap().iter().filter(|e| e["node"]["action"] == "DISCLOSE").collect();
    assert_eq!(disclosures.len(), 1, "one entry per disclosure: {log:#}");
    assert_eq!(disclosures[0]["node"]["actor"], "agent@dgsi");
    assert_eq!(disclosures[0]["node"]["roomIds"], json!([ROOM]));
    assert_eq!(disclosures[0]["node"]["classification"], "SECRET");
    server.stop().await;
}

#[tokio::test]
async fn a_body_changed_in_the_database_refuses_the_disclosure_naming_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::config(&dir);
    let (server, store) = TestServer::start_with_blobs(dir, config, None).await;
    store_room(store).await;
    let Some(database) = server.config.sqlite_path() else { panic!("a SQLite test server") };
    let changed = std::process::Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(&database)
        .arg("UPDATE messages SET body = 'rewritten' WHERE event_id = '$d1:tchap.test'")
        .status();
    match changed {
        Ok(status) => assert!(status.success(), "sqlite3: {status}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the sqlite3 shell is not installed");
            return;
        }
        Err(e) => panic!("sqlite3: {e}"),
    }
    let discloser = server.token("dgsi", TopSecret, &[Scope::Disclose]);
    let (_, body) = server.graphql(&discloser, DISCLOSE, json!({ "room": ROOM })).await;
    let (code, message) = error_of(&body);
    assert_eq!(code, "EVIDENCE_MISMATCH", "{body:#}");
    assert!(message.contains("$d1:tchap.test") && !message.contains("$d0:tchap.test"), "{message}");
    assert!(body["data"].is_null() || body["data"]["discloseTchapRoom"].is_null(), "{body:#}");
    let left = std::fs::read_dir(server.config.packages_dir()).map(Iterator::count).unwrap_or(0);
    assert_eq!(left, 0, "nothing is written");
    server.stop().await;
}
