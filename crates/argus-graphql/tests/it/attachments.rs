//! `TchapMessage.attachment`: the file of a message in each status, as the store's gated reads
//! return it, in a room's messages and in search results; null for a message without a file;
//! a download path only for a stored file; nothing for another organisation or a reader below
//! the message's level.

use argus_domain::{AttachmentStatus, MediaRef, MessageRecord, RoomSnapshot, Scope, Sha256Digest, Viewer};
use argus_graphql::MEDIA_ROUTE_PREFIX;
use argus_store::{BlobVerdict, FetchOutcome, NewBlob, ScanRecord};
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, Restricted, Secret, TopSecret, ok, viewer};

const ROOM: &str = "!fichiers:tchap.test";

const MESSAGES: &str = r"query($room: String!) {
  tchapMessages(roomId: $room, first: 20) {
    totalCount
    edges { node { eventId attachment {
      mxcUri filename declaredMimetype encrypted status statusReason sha256 size threat fetchedAt downloadUrl
    } } }
  }
}";

const SEARCH: &str = r#"query {
  tchapSearch(query: "piece", first: 20) { edges { node { eventId attachment { status downloadUrl } } } }
}"#;

/// Each file's media id, and what becomes of it (`None`: left pending, never fetched).
const FILES: [(&str, Option<Fate>); 8] = [
    ("pending", None),
    ("stored", Some(Fate::Scanned(None))),
    ("infected", Some(Fate::Scanned(Some("Argus.Test.Marker")))),
    ("unscanned", Some(Fate::Held)),
    ("large", Some(Fate::Ended(AttachmentStatus::TooLarge, "TOO_LARGE: over 100 bytes"))),
    ("tampered", Some(Fate::Ended(AttachmentStatus::Tampered, "HASH_MISMATCH: the ciphertext differs"))),
    ("gone", Some(Fate::Ended(AttachmentStatus::Unavailable, "NOT_FOUND: the homeserver has no such file"))),
    ("locked", Some(Fate::Ended(AttachmentStatus::Undecryptable, "NO_KEY: the message stayed encrypted"))),
];

#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Fetched and scanned: clean, or infected with the signature.
    Scanned(Option<&'static str>),
    /// Fetched, no verdict yet.
    Held,
    /// Ended with a status and reason.
    Ended(AttachmentStatus, &'static str),
}

fn bytes_of(media_id: &str) -> Vec<u8> {
    format!("contenu du fichier {media_id}").into_bytes()
}

fn record(n: usize, media_id: Option<&str>) -> MessageRecord {
    let sent_at = time::OffsetDateTime::UNIX_EPOCH
        + time::Duration::days(20_000)
        + time::Duration::minutes(i64::try_from(n).unwrap_or_default());
    let mut m = MessageRecord::text(
        format!("$m{n}:tchap.test").parse().unwrap_or_else(|e| panic!("{e}")),
        "@agent:tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        format!("piece jointe {n}"),
        sent_at,
    );
    if let Some(id) = media_id {
        m.msgtype = Some("m.file".to_owned());
        m.media = Some(MediaRef {
            uri: Some(format!("mxc://tchap.test/{id}")),
            mimetype: Some("application/pdf".to_owned()),
            size: Some(30),
            filename: Some(format!("{id}.pdf")),
            file: None,
        });
    }
    m
}

/// A SECRET room of dgsi: one message per entry of [`FILES`], then a text message, each file
/// brought to its fate through the store's media queue and scan verdicts.
async fn room_with_files() -> (Harness, Viewer) {
    let h = Harness::new().await;
    let owner = viewer("dgsi", TopSecret, &ALL);
    let mut messages: Vec<MessageRecord> =
        FILES.iter().enumerate().map(|(n, (id, _))| record(n, Some(id))).collect();
    messages.push(record(FILES.len(), None));
    let snapshot = RoomSnapshot {
        messages,
        ..RoomSnapshot::new(
            ROOM.parse().unwrap_or_else(|e| panic!("{e}")),
            "https://matrix.tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        )
    };
    h.store_snapshot(&owner, Secret, snapshot).await;
    let store = h.services.app.store.clone();
    let org = owner.org.clone();
    tokio::task::spawn_blocking(move || {
        let now = time::OffsetDateTime::now_utc();
        let room = ROOM.parse().unwrap_or_else(|e| panic!("{e}"));
        let lease = std::time::Duration::from_secs(60);
        let jobs =
            store.claim_room_media(&org, &room, "run-1", now, lease, 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jobs.len(), FILES.len());
        for job in jobs {
            let (id, fate) = FILES
                .iter()
                .find(|(id, _)| job.mxc_uri == format!("mxc://tchap.test/{id}"))
                .unwrap_or_else(|| panic!("unknown job {}", job.mxc_uri));
            let Some(fate) = fate else { continue };
            let bytes = bytes_of(id);
            let outcome = match fate {
                Fate::Scanned(_) | Fate::Held => FetchOutcome::Fetched(NewBlob {
                    sha256: Sha256Digest::of(&bytes),
                    size: bytes.len() as u64,
                    sniffed_mimetype: "application/pdf".to_owned(),
                }),
                Fate::Ended(status, reason) => {
                    FetchOutcome::Ended { status: *status, reason: (*reason).to_owned() }
                }
            };
            assert!(store.record_media(job.id, "run-1", &outcome, now).unwrap_or_else(|e| panic!("{e}")));
            if let Fate::Scanned(threat) = fate {
                let verdict = threat.map_or(BlobVerdict::Clean, |t| BlobVerdict::Infected(t.to_owned()));
                let scan = ScanRecord { verdict, engine: "ClamAV 1.4.3/27500".to_owned(), at: now };
                assert!(
                    store.record_scan(&Sha256Digest::of(&bytes), &scan).unwrap_or_else(|e| panic!("{e}"))
                );
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (h, owner)
}

/// The attachment of each node, by event id.
fn attachments(data: &Value) -> Vec<(String, Value)> {
    data["tchapMessages"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{data}"))
        .iter()
        .map(|e| {
            (e["node"]["eventId"].as_str().unwrap_or_default().to_owned(), e["node"]["attachment"].clone())
        })
        .collect()
}

#[tokio::test]
async fn every_status_reads_with_its_message_and_only_a_stored_file_has_a_download_path() {
    let (h, owner) = room_with_files().await;
    let data = ok(h.run(&owner, MESSAGES, json!({ "room": ROOM })).await);
    let found = attachments(&data);
    assert_eq!(found.len(), FILES.len() + 1);
    let status = |a: &Value| a["status"].as_str().unwrap_or_default().to_owned();
    let expected =
        ["PENDING", "STORED", "INFECTED", "PENDING", "TOO_LARGE", "TAMPERED", "UNAVAILABLE", "UNDECRYPTABLE"];
    assert_eq!(found[..FILES.len()].iter().map(|(_, a)| status(a)).collect::<Vec<_>>(), expected);
    // A message without a file has no attachment.
    assert!(found[FILES.len()].1.is_null(), "{:?}", found[FILES.len()]);

    for ((id, fate), (_, a)) in FILES.iter().zip(&found) {
        assert_eq!(a["mxcUri"], format!("mxc://tchap.test/{id}"), "{a}");
        assert_eq!(
            (&a["filename"], &a["declaredMimetype"]),
            (&json!(format!("{id}.pdf")), &json!("application/pdf"))
        );
        assert_eq!(a["encrypted"], false);
        let bytes = bytes_of(id);
        match fate {
            None => {
                assert!(a["sha256"].is_null() && a["size"].is_null() && a["fetchedAt"].is_null(), "{a}");
                assert!(a["statusReason"].is_null() && a["threat"].is_null(), "{a}");
            }
            Some(Fate::Scanned(_) | Fate::Held) => {
                assert_eq!(a["sha256"], Sha256Digest::of(&bytes).to_hex(), "{a}");
                assert_eq!(a["size"], bytes.len(), "{a}");
                assert!(a["fetchedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{a}");
            }
            Some(Fate::Ended(_, reason)) => {
                assert_eq!(a["statusReason"], *reason, "{a}");
                assert!(a["sha256"].is_null() && a["threat"].is_null(), "{a}");
            }
        }
    }
    let stored = &found[1].1;
    let id_of_stored = stored["downloadUrl"].as_str().unwrap_or_else(|| panic!("{stored}"));
    let id = id_of_stored.strip_prefix(MEDIA_ROUTE_PREFIX).unwrap_or_else(|| panic!("{id_of_stored}"));
    assert!(id.parse::<i64>().is_ok_and(|id| id > 0), "{id_of_stored}");
    assert!(stored["statusReason"].is_null() && stored["threat"].is_null(), "{stored}");
    // The infected file names its threat, and is never offered for download.
    assert_eq!(found[2].1["threat"], "Argus.Test.Marker");
    assert!(found[2].1["downloadUrl"].is_null());
    // Held, waiting for its verdict: pending, with the reason.
    assert!(
        found[3].1["statusReason"].as_str().is_some_and(|r| r.starts_with("SCAN_PENDING")),
        "{}",
        found[3].1
    );
    let with_path = found.iter().filter(|(_, a)| !a["downloadUrl"].is_null()).count();
    assert_eq!(with_path, 1);

    // A holder of tchap:quarantine reads the same: the infected file still has no path.
    let quarantine = viewer("dgsi", TopSecret, &[Scope::Read, Scope::Quarantine]);
    let data = ok(h.run(&quarantine, MESSAGES, json!({ "room": ROOM })).await);
    assert!(attachments(&data)[2].1["downloadUrl"].is_null());

    // Search results carry their attachment too.
    let data = ok(h.run(&owner, SEARCH, json!({})).await);
    let hits = data["tchapSearch"]["edges"].as_array().unwrap_or_else(|| panic!("{data}")).clone();
    assert_eq!(hits.len(), FILES.len() + 1);
    let stored_hit =
        hits.iter().find(|e| e["node"]["eventId"] == "$m1:tchap.test").unwrap_or_else(|| panic!("{data}"));
    assert_eq!(stored_hit["node"]["attachment"], json!({ "status": "STORED", "downloadUrl": id_of_stored }));
    let text_hit =
        hits.iter().find(|e| e["node"]["eventId"] == "$m8:tchap.test").unwrap_or_else(|| panic!("{data}"));
    assert!(text_hit["node"]["attachment"].is_null());
}

#[tokio::test]
async fn another_organisation_or_a_lower_clearance_sees_no_message_hence_no_file() {
    let (h, _) = room_with_files().await;
    for reader in [viewer("anssi", TopSecret, &[Scope::Read]), viewer("dgsi", Restricted, &[Scope::Read])] {
        let data = ok(h.run(&reader, MESSAGES, json!({ "room": ROOM })).await);
        assert_eq!(data["tchapMessages"], json!({ "totalCount": 0, "edges": [] }));
        let data = ok(h.run(&reader, SEARCH, json!({})).await);
        assert_eq!(data["tchapSearch"]["edges"], json!([]));
    }
    // Without tchap:read, the field is never reached.
    let data = h.run(&viewer("dgsi", TopSecret, &[Scope::Audit]), MESSAGES, json!({ "room": ROOM })).await;
    assert_eq!(crate::harness::error_code(&data), Some("FORBIDDEN"));
}
