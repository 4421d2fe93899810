//! The access journal at the download route: every `GET` that sends a file's bytes is a
//! `DOWNLOAD` entry (room, classification) before the bytes leave; what sends none is not; a
//! download whose entry cannot be written is refused with 503 `UNAVAILABLE`.

use argus_domain::{
    Classification::{Secret, TopSecret},
    Scope,
};
use serde_json::{Value, json};

use crate::{harness::TestServer, media::server_with_files};

const ACCESS_LOG: &str = r"{ tchapAccessLog { totalCount edges { node { actor action roomIds query itemCount classification } } } }";

async fn access_log(server: &TestServer) -> Value {
    let auditor = server.token("dgsi", TopSecret, &[Scope::Audit]);
    let (status, body) = server.graphql(&auditor, ACCESS_LOG, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body:#}");
    body["data"]["tchapAccessLog"].clone()
}

#[tokio::test]
async fn a_download_is_journaled_before_its_bytes_leave() {
    let (server, files, _blobs, _blob_dir) = server_with_files().await;
    let reader = server.token("dgsi", Secret, &[Scope::Read]);
    let id = files.stored.to_string();
    // Nothing sent, nothing journaled: a refused file, a HEAD, an unsatisfiable range.
    assert_eq!(server.media(&files.infected.to_string(), Some(&reader), None).await.status().as_u16(), 404);
    let head = server.client.head(server.url(&format!("/media/{id}"))).bearer_auth(&reader).send().await;
    assert_eq!(head.map(|r| r.status().as_u16()).ok(), Some(200));
    let past = server.media(&id, Some(&reader), Some("bytes=900000-")).await;
    assert_eq!(past.status().as_u16(), 416);
    assert_eq!(access_log(&server).await["totalCount"], 0);

    let whole = server.media(&id, Some(&reader), None).await;
    assert_eq!(whole.status().as_u16(), 200);
    let part = server.media(&id, Some(&reader), Some("bytes=0-9")).await;
    assert_eq!(part.status().as_u16(), 206);
    let log = access_log(&server).await;
    assert_eq!(log["totalCount"], 2, "{log:#}");
    let entry = json!({
        "actor": "agent@dgsi",
        "action": "DOWNLOAD",
        "roomIds": ["!files-dgsi:tchap.test"],
        "query": null,
        "itemCount": 1,
        "classification": "SECRET",
    });
    assert_eq!(log["edges"], json!([{ "node": entry }, { "node": entry }]));
    server.stop().await;
}

#[tokio::test]
async fn a_download_whose_entry_cannot_be_written_is_refused() {
    let (server, files, _blobs, _blob_dir) = server_with_files().await;
    let Some(database) = server.config.sqlite_path() else { panic!("a SQLite test server") };
    let tables = std::process::Command::new("sqlite3")
        .arg(&database)
        .arg("SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE '%log%' OR name LIKE '%access%')")
        .output();
    let tables = match tables {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the sqlite3 shell is not installed");
            return;
        }
        Err(e) => panic!("sqlite3: {e}"),
    };
    assert!(!tables.trim().is_empty(), "the store has no log table");
    for table in tables.lines().filter(|t| !t.is_empty()) {
        let trigger = format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        );
        let status = std::process::Command::new("sqlite3")
            .args(["-bail", "-cmd", ".timeout 5000"])
            .arg(&database)
            .arg(&trigger)
            .status()
            .unwrap_or_else(|e| panic!("sqlite3: {e}"));
        assert!(status.success());
    }
    let reader = server.token("dgsi", Secret, &[Scope::Read]);
    let refused = server.media(&files.stored.to_string(), Some(&reader), None).await;
    assert_eq!(refused.status().as_u16(), 503);
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{body}");
    server.stop().await;
}
