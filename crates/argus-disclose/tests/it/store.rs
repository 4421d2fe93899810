//! Disclosure against the real store, on both backends: a room ingested in two runs (an edit,
//! a redaction whose content is purged for the requester, a held file) is disclosed and
//! verifies; a body changed in the database refuses the export, naming the row, an edited
//! message's as well; a message decrypted by a later run and an edit withdrawn by its redaction
//! disclose and verify.

use std::fs;

use argus_disclose::{Error, Request, disclose, verify_package};
use argus_domain::{
    Classification, MediaRef, MessageEdit, MessageRecord, MessageRedaction, Redaction, Scope, Sha256Digest,
    oversight::{AccessAction, LogEntry},
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use argus_store::{BlobVerdict, FetchOutcome, IngestionRun, NewBlob, ScanRecord, Store};
use diesel::{Connection as _, PgConnection, SqliteConnection, connection::SimpleConnection as _};
use time::{Duration, OffsetDateTime};

use crate::support::{self, PDF};

const ROOM: &str = "!store:agent.tchap.gouv.fr";

fn now() -> OffsetDateTime {
    argus_domain::from_unix_ms(argus_domain::to_unix_ms(OffsetDateTime::now_utc())).unwrap()
}

fn message(id: &str, body: &str, at: OffsetDateTime) -> MessageRecord {
    MessageRecordBuilder::new(id).sender(support::ANA).body(body).sent_at(at).build()
}

/// Ingests the room in two runs and holds its file, clean; returns the event ids.
fn ingest(store: &Store, viewer: &argus_domain::Viewer) -> [String; 3] {
    let t0 = now() - Duration::minutes(30);
    let mut file = message("$s-file", "note.pdf", t0 + Duration::minutes(1));
    file.msgtype = Some("m.file".to_owned());
    file.media = Some(MediaRef {
        uri: Some("mxc://agent.tchap.gouv.fr/note".to_owned()),
        mimetype: Some("application/pdf".to_owned()),
        size: Some(PDF.len() as u64),
        filename: Some("note.pdf".to_owned()),
        file: None,
    });
    let msgs = vec![
        message("$s-edited", "Réunion à 14h", t0),
        file,
        message("$s-redacted", "erreur de salon", t0 + Duration::minutes(2)),
    ];
    let run = |started_at| IngestionRun {
        viewer: viewer.clone(),
        classification: Classification::Restricted,
        started_at,
    };
    let first = RoomSnapshotBuilder::new(ROOM).name("Cellule").messages(msgs.clone()).build();
    store.record_ingestion(&run(t0), &first).unwrap();
    let mut second = RoomSnapshotBuilder::new(ROOM).name("Cellule").build();
    second.edits = vec![MessageEdit {
        event_id: "$s-edit".parse().unwrap(),
        sender: msgs[0].sender.clone(),
        target: msgs[0].event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("Réunion à 15h".to_owned()),
        edited_at: t0 + Duration::minutes(5),
    }];
    second.redactions = vec![MessageRedaction {
        target: msgs[2].event_id.clone(),
        redaction: Redaction {
            redacted_by: support::ANA.parse().unwrap(),
            redacted_at: t0 + Duration::minutes(6),
            reason: Some("hors sujet".to_owned()),
        },
        confirmed: true,
    }];
    store.record_ingestion(&run(t0 + Duration::minutes(5)), &second).unwrap();
    let jobs = store
        .claim_room_media(
            &viewer.org,
            &ROOM.parse().unwrap(),
            "fetcher",
            now(),
            std::time::Duration::from_secs(60),
            10,
        )
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let blob = NewBlob {
        sha256: Sha256Digest::of(PDF),
        size: PDF.len() as u64,
        sniffed_mimetype: "application/pdf".into(),
    };
    assert!(store.record_media(jobs[0].id, "fetcher", &FetchOutcome::Fetched(blob), now()).unwrap());
    let scan = ScanRecord { verdict: BlobVerdict::Clean, engine: "ClamAV 1.4.3/27500".into(), at: now() };
    assert!(store.record_scan(&Sha256Digest::of(PDF), &scan).unwrap());
    msgs.iter().map(|m| m.event_id.as_str().to_owned()).collect::<Vec<_>>().try_into().unwrap()
}

async fn discloses_and_refuses_a_changed_row(store: Store, raw: impl Fn(&str)) {
    let dir = tempfile::tempdir().unwrap();
    let viewer = ViewerBuilder::new(support::ORG)
        .actor("juriste@interieur.gouv.fr")
        .scopes([Scope::Read, Scope::Ingest, Scope::Audit])
        .build();
    let [edited, file, redacted] = ingest(&store, &viewer);
    let blobs = support::blobs(dir.path(), &[PDF.to_vec()]).await;
    let keys = support::keys();
    let request =
        Request { viewer, room_id: ROOM.parse().unwrap(), from: None, to: None, include_quarantined: false };
    let bag = dir.path().join("package");
    let summary = disclose(&store, &blobs, &keys, &request, &bag).await.unwrap();
    assert_eq!((summary.messages, summary.attachments), (3, 1));
    let report = verify_package(&bag, keys.log.verifier_key(), &keys.package.public_key()).unwrap();
    assert_eq!(report.versions, summary.versions);
    let tools = support::tools(&bag, keys.log.verifier_key(), &keys.package.public_key());
    assert_ne!(tools.bagit, Some(false));
    assert_ne!(tools.minisign, Some(false));
    assert_ne!(tools.verify_py, Some(false), "{}", tools.verify_py_output);

    let lines: Vec<serde_json::Value> = fs::read_to_string(bag.join("data/messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: &str| lines.iter().find(|l| l["eventId"] == id).unwrap().clone();
    let kinds = |l: &serde_json::Value| -> Vec<String> {
        l["versions"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap().to_owned()).collect()
    };
    // The first run stored the message; the second its original row again with the edit.
    let e = of(&edited);
    assert_eq!(kinds(&e), ["ORIGINAL", "ORIGINAL", "EDIT"]);
    assert_ne!(e["versions"][0]["run"], e["versions"][2]["run"]);
    assert_eq!(e["versions"][1]["body"], "Réunion à 14h");
    assert_eq!(e["versions"][2]["body"], "Réunion à 15h");
    // The requester may not read held content: the purged original is listed, not claimed.
    let r = of(&redacted);
    assert_eq!(kinds(&r), ["REDACTION"]);
    assert_eq!(r["redactedVersions"][0]["kind"], "ORIGINAL");
    assert_eq!(r["redaction"]["reason"], "hors sujet");
    let f = of(&file);
    assert_eq!(f["attachment"]["status"], "STORED");
    assert!(f["attachment"]["logIndex"].is_u64(), "the held file's ATTACHMENT entry is relied on");
    assert_eq!(fs::read(bag.join("data").join(f["attachment"]["file"].as_str().unwrap())).unwrap(), PDF);
    // The disclosure is journaled in the store's log, inside the package's checkpoint.
    let org = support::ORG.parse().unwrap();
    let entry = store.log_entries(&org, &[summary.log_index]).unwrap().remove(0);
    let Ok(LogEntry::Access(access)) = LogEntry::parse(&entry.bytes) else { panic!("not an access entry") };
    assert_eq!(access.action, AccessAction::Disclose);
    assert_eq!(store.log_head(&org).unwrap().size, summary.checkpoint_size);

    // A body changed behind the store's back refuses the export and writes nothing.
    raw(&format!("UPDATE messages SET body = 'autre.pdf' WHERE event_id = '{file}'"));
    let again = dir.path().join("again");
    let size = store.log_head(&org).unwrap().size;
    let result = disclose(&store, &blobs, &keys, &request, &again).await;
    let Err(Error::Mismatch { rows }) = result else { panic!("not refused: {result:?}") };
    assert_eq!(rows, std::slice::from_ref(&file));
    assert!(!again.exists());
    assert_eq!(store.log_head(&org).unwrap().size, size, "a refused export is not journaled");

    // An edited message's current content is bound too: its versions come from their own rows,
    // and it must show the latest of them.
    raw(&format!("UPDATE messages SET body = 'note.pdf' WHERE event_id = '{file}'"));
    raw(&format!("UPDATE messages SET body = 'Réunion à 16h' WHERE event_id = '{edited}'"));
    let result = disclose(&store, &blobs, &keys, &request, &again).await;
    let Err(Error::Mismatch { rows }) = result else { panic!("not refused: {result:?}") };
    assert_eq!(rows, std::slice::from_ref(&edited));
    assert!(!again.exists());
    // Shown with its original content, it is refused as well.
    raw(&format!("UPDATE messages SET body = 'Réunion à 14h' WHERE event_id = '{edited}'"));
    let result = disclose(&store, &blobs, &keys, &request, &again).await;
    let Err(Error::Mismatch { rows }) = result else { panic!("not refused: {result:?}") };
    assert_eq!(rows, std::slice::from_ref(&edited));
    // Restored, it discloses again.
    raw(&format!("UPDATE messages SET body = 'Réunion à 15h' WHERE event_id = '{edited}'"));
    disclose(&store, &blobs, &keys, &request, &again).await.unwrap();
    assert_eq!(store.log_head(&org).unwrap().size, size + 1);
}

/// A message stored while encrypted and decrypted by a later run, and an edit withdrawn by its
/// redaction: both disclose and verify.
async fn discloses_a_message_decrypted_later_and_a_withdrawn_edit(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let viewer = ViewerBuilder::new(support::ORG)
        .actor("juriste@interieur.gouv.fr")
        .scopes([Scope::Read, Scope::Ingest, Scope::Audit])
        .build();
    let t0 = now() - Duration::minutes(30);
    let run = |started_at| IngestionRun {
        viewer: viewer.clone(),
        classification: Classification::Restricted,
        started_at,
    };
    let plain = message("$d-sealed", "Levée de doute à 11h", t0);
    let sealed = MessageRecord { encrypted: true, msgtype: None, body: None, ..plain.clone() };
    let kept = message("$d-kept", "Rendez-vous à 9h", t0 + Duration::minutes(1));
    let first = RoomSnapshotBuilder::new(ROOM).name("Cellule").messages(vec![sealed, kept.clone()]).build();
    store.record_ingestion(&run(t0), &first).unwrap();
    let opened = MessageRecord { encrypted: true, decrypted: true, ..plain };
    let mut second = RoomSnapshotBuilder::new(ROOM).name("Cellule").messages(vec![opened]).build();
    second.edits = vec![MessageEdit {
        event_id: "$d-edit".parse().unwrap(),
        sender: kept.sender.clone(),
        target: kept.event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("Rendez-vous à 10h".to_owned()),
        edited_at: t0 + Duration::minutes(2),
    }];
    store.record_ingestion(&run(t0 + Duration::minutes(2)), &second).unwrap();
    let mut third = RoomSnapshotBuilder::new(ROOM).name("Cellule").build();
    third.redactions = vec![MessageRedaction {
        target: "$d-edit".parse().unwrap(),
        redaction: Redaction {
            redacted_by: support::ANA.parse().unwrap(),
            redacted_at: t0 + Duration::minutes(3),
            reason: Some("erreur".to_owned()),
        },
        confirmed: true,
    }];
    store.record_ingestion(&run(t0 + Duration::minutes(3)), &third).unwrap();

    let blobs = support::blobs(dir.path(), &[]).await;
    let keys = support::keys();
    let request =
        Request { viewer, room_id: ROOM.parse().unwrap(), from: None, to: None, include_quarantined: false };
    let bag = dir.path().join("package");
    let summary = disclose(&store, &blobs, &keys, &request, &bag).await.unwrap();
    assert_eq!(summary.messages, 2);
    let report = verify_package(&bag, keys.log.verifier_key(), &keys.package.public_key()).unwrap();
    assert_eq!(report.versions, summary.versions);
    let tools = support::tools(&bag, keys.log.verifier_key(), &keys.package.public_key());
    assert_ne!(tools.verify_py, Some(false), "{}", tools.verify_py_output);

    let lines: Vec<serde_json::Value> = fs::read_to_string(bag.join("data/messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: &str| lines.iter().find(|l| l["eventId"] == id).unwrap().clone();
    let versions = |l: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        l["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["kind"].as_str().unwrap().to_owned(), v["body"].clone()))
            .collect()
    };
    // The capture while encrypted, without content, then the content the later run read.
    let d = of("$d-sealed");
    assert_eq!(
        versions(&d),
        [
            ("ORIGINAL".to_owned(), serde_json::Value::Null),
            ("ORIGINAL".to_owned(), "Levée de doute à 11h".into())
        ]
    );
    assert_eq!(d["body"], "Levée de doute à 11h");
    // The withdrawn edit is listed, not claimed; its redaction names it.
    let k = of("$d-kept");
    let kinds: Vec<String> = versions(&k).into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, ["ORIGINAL", "ORIGINAL", "REDACTION"]);
    assert_eq!(k["versions"][2]["target"], "$d-edit");
    assert_eq!(k["versions"][2]["reason"], "erreur");
    assert_eq!(k["redactedVersions"][0]["eventId"], "$d-edit");
    assert_eq!(k["body"], "Rendez-vous à 9h");
}

#[tokio::test]
async fn sqlite_store_decrypted_later_and_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    discloses_a_message_decrypted_later_and_a_withdrawn_edit(
        Store::open(&format!("sqlite://{}", path.display())).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn postgres_store_decrypted_later_and_withdrawn() {
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    discloses_a_message_decrypted_later_and_a_withdrawn_edit(Store::open(db.url()).unwrap()).await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = Store::open(&format!("sqlite://{}", path.display())).unwrap();
    discloses_and_refuses_a_changed_row(store, |sql| {
        let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        c.batch_execute(&format!("PRAGMA busy_timeout = 5000; {sql}")).unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_store() {
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let store = Store::open(db.url()).unwrap();
    let url = db.url().to_owned();
    discloses_and_refuses_a_changed_row(store, move |sql| {
        PgConnection::establish(&url).unwrap().batch_execute(sql).unwrap();
    })
    .await;
}
