//! Attachments as evidence, against the real Synapse and a real `clamd`: files uploaded with
//! `POST /_matrix/media/v3/upload` into a plain room and an encrypted one (the encrypted files
//! made as a client makes them: AES-256-CTR, the ciphertext uploaded, the `EncryptedFile` inside
//! the Megolm-encrypted message, its session in the key backup) are fetched over authenticated
//! media, decrypted, scanned, held and downloaded byte-for-byte by a cleared reader, and refused,
//! as a missing one is, to another organisation and to a reader below the message's level. A
//! file carrying the scanner's marker is `INFECTED`, never served but in quarantine, and always
//! as `application/octet-stream`; a swapped ciphertext is `TAMPERED`; a page of HTML is served
//! as `application/octet-stream`.

use anyhow::{Context, Result, ensure};
use argus_domain::{
    Classification::{Restricted, Secret},
    Scope,
};
use argus_testkit::{
    e2ee::{KeyBackup, Sender},
    synapse::Synapse,
};
use serde_json::{Value, json};

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored }
}";

const FILES: &str = r"query($r: String!) { tchapMessages(roomId: $r, first: 50) { edges { node {
  eventId body attachment {
    mxcUri filename declaredMimetype encrypted status statusReason sha256 size threat fetchedAt downloadUrl
    scanEngine scannedAt
    quarantineUrl
  }
} } } }";

/// The bytes of a small PDF report.
const REPORT: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% rapport de situation\n%%EOF\n";

/// Hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    argus_domain::Sha256Digest::of(bytes).to_hex()
}

/// The attachments of `room` as `jwt` reads them once none is `PENDING` (at most a minute).
async fn settled(server: &Server, jwt: &str, room: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let edges = server.data(jwt, FILES, json!({ "r": room }), "tchapMessages").await?;
        let pending = edges["edges"]
            .as_array()
            .context("edges")?
            .iter()
            .any(|e| e["node"]["attachment"]["status"] == "PENDING");
        if !pending {
            return Ok(edges);
        }
        ensure!(std::time::Instant::now() < deadline, "files still pending: {edges}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Runs the scenario on the store at `database_url`, with the blob store `blob_store`
/// (`"file"` or an `s3://` URL).
pub(crate) async fn run(
    synapse: &Synapse,
    clamd: &argus_testkit::clamd::ClamdDaemon,
    database_url: &str,
    blob_store: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let alice = synapse.register("files_alice").await?;
    let room = alice.create_room(Some("Pièces jointes"), None, false).await?;
    let upload = |bytes: &'static [u8], mime: &'static str| alice.upload(bytes.to_vec(), mime);
    let report_uri = upload(REPORT, "application/pdf").await?;
    let report = alice
        .send_message(
            &room,
            &json!({ "msgtype": "m.file", "body": "rapport.pdf", "url": report_uri,
                     "info": { "mimetype": "application/pdf", "size": REPORT.len() } }),
        )
        .await?;
    let sample = argus_testkit::clamd::MARKER;
    let sample_uri = alice.upload(sample.to_vec(), "application/octet-stream").await?;
    let infected = alice
        .send_message(&room, &json!({ "msgtype": "m.file", "body": "echantillon.bin", "url": sample_uri }))
        .await?;
    let page = b"<html><script>alert(1)</script></html>";
    let page_uri = alice.upload(page.to_vec(), "text/html").await?;
    let html = alice
        .send_message(
            &room,
            &json!({ "msgtype": "m.file", "body": "page.html", "url": page_uri,
                                       "info": { "mimetype": "text/html" } }),
        )
        .await?;

    // The encrypted room: files encrypted as a client encrypts them.
    let secret_room = alice.create_room(Some("Pièces chiffrées"), None, true).await?;
    let mut sender = Sender::new();
    let photo: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (ciphertext, mut file) = argus_crypto::attachment::encrypt_attachment(&photo);
    file.url = alice.upload(ciphertext, "application/octet-stream").await?;
    let sealed = sender
        .send(
            &alice,
            &secret_room,
            json!({ "msgtype": "m.image", "body": "photo.jpg", "file": file,
                    "info": { "mimetype": "image/jpeg", "size": photo.len() } }),
            None,
        )
        .await?;
    // A ciphertext swapped for another: its digest is not the one the message declares.
    let (_, mut swapped) = argus_crypto::attachment::encrypt_attachment(b"la piece d'origine");
    let (other, _) = argus_crypto::attachment::encrypt_attachment(b"une autre piece, substituee");
    swapped.url = alice.upload(other, "application/octet-stream").await?;
    let tampered = sender
        .send(
            &alice,
            &secret_room,
            json!({ "msgtype": "m.file", "body": "piece.txt", "file": swapped }),
            None,
        )
        .await?;
    let backup = KeyBackup::create(&alice, [0x31; 32], [0x52; 32]).await?;
    backup.upload(&alice, &secret_room, &mut sender, 0).await?;

    let server = Server::start_with(database_url, dir, |config| {
        config.media.clamd = clamd.addr().parse().ok();
        config.media.store = blob_store.parse().unwrap_or_else(|e| panic!("{e}"));
        config.media.s3_access_key_id = Some(argus_testkit::s3::ACCESS_KEY_ID.to_owned());
        config.media.s3_secret_access_key =
            Some(argus_domain::Secret::new(argus_testkit::s3::SECRET_ACCESS_KEY));
    })
    .await?;
    let jwt = server.jwt("analyst@dgsi", "dgsi", Secret, &[Scope::Read, Scope::Ingest])?;
    let ingest = |r: &str, key: Option<String>| {
        json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": r,
            "classification": "RESTRICTED", "recoveryKey": key,
        } })
    };
    server.data(&jwt, INGEST, ingest(&room, None), "ingestTchapRoom").await?;
    server.data(&jwt, INGEST, ingest(&secret_room, Some(backup.security_key())), "ingestTchapRoom").await?;

    let plain = settled(&server, &jwt, &room).await?;
    let node =
        |edges: &Value, id: &str| crate::harness::message_node(edges, id).map(|n| n["attachment"].clone());
    let r = node(&plain, &report)?;
    ensure!(
        r["status"] == "STORED"
            && r["sha256"] == sha256_hex(REPORT)
            && r["size"] == REPORT.len()
            && r["filename"] == "rapport.pdf"
            && r["declaredMimetype"] == "application/pdf"
            && r["encrypted"] == false
            && r["mxcUri"] == report_uri.as_str()
            && !r["fetchedAt"].is_null()
            && r["scanEngine"].as_str().is_some_and(|e| e.starts_with("ClamAV "))
            && !r["scannedAt"].is_null(),
        "the report: {r}"
    );
    let url = r["downloadUrl"].as_str().context("the report's download URL")?.to_owned();
    let got = server.download(&jwt, &url, None).await?;
    ensure!(got.status == 200 && got.body == REPORT, "the report's bytes: HTTP {}", got.status);
    ensure!(
        got.header("content-type") == "application/pdf"
            && got.header("content-disposition").starts_with("attachment")
            && got.header("x-content-type-options") == "nosniff"
            && got.header("content-security-policy") == "sandbox"
            && got.header("cache-control").contains("no-store"),
        "the report's headers: {:?}",
        got.headers
    );
    let range = server.download(&jwt, &url, Some("bytes=0-7")).await?;
    ensure!(range.status == 206 && range.body == REPORT[..8], "a range: HTTP {}", range.status);

    // Refused to who may not see the message, exactly as a file that does not exist.
    let missing = server.download(&jwt, "/media/999999999", None).await?;
    let foreign_jwt = server.jwt("analyst@anssi", "anssi", Secret, &[Scope::Read])?;
    let low_jwt =
        server.jwt("stagiaire@dgsi", "dgsi", argus_domain::Classification::Unclassified, &[Scope::Read])?;
    for (who, jwt) in [("another organisation", &foreign_jwt), ("a reader below the level", &low_jwt)] {
        let refused = server.download(jwt, &url, None).await?;
        ensure!(
            refused.status == 404 && refused.status == missing.status && refused.body == missing.body,
            "{who} got HTTP {} for the report",
            refused.status
        );
    }

    let i = node(&plain, &infected)?;
    ensure!(
        i["status"] == "INFECTED"
            && i["threat"].as_str().is_some_and(|t| !t.is_empty())
            && i["downloadUrl"].is_null(),
        "the sample: {i}"
    );
    ensure!(i["quarantineUrl"].is_null(), "a quarantine path without tchap:quarantine: {i}");
    // Incident response downloads the sample from quarantine, never as what it claims to be.
    let responder = server.jwt("cert@dgsi", "dgsi", Secret, &[Scope::Read, Scope::Quarantine])?;
    let quarantined = server.data(&responder, FILES, json!({ "r": room }), "tchapMessages").await?;
    let q = node(&quarantined, &infected)?;
    let q_url = q["quarantineUrl"].as_str().context("the quarantine path")?;
    let refused = server.download(&jwt, q_url, None).await?;
    ensure!(
        refused.status == 404 && refused.body == missing.body,
        "the sample without quarantine: HTTP {}",
        refused.status
    );
    let sample_back = server.download(&responder, q_url, None).await?;
    ensure!(
        sample_back.status == 200
            && sample_back.body == sample
            && sample_back.header("content-type") == "application/octet-stream",
        "the sample from quarantine: HTTP {} {:?}",
        sample_back.status,
        sample_back.headers
    );
    let h = node(&plain, &html)?;
    let html_url = h["downloadUrl"].as_str().context("the page's download URL")?;
    let served = server.download(&jwt, html_url, None).await?;
    ensure!(
        served.status == 200
            && served.body == page
            && served.header("content-type") == "application/octet-stream",
        "the page: HTTP {} {:?}",
        served.status,
        served.headers
    );

    let secret = settled(&server, &jwt, &secret_room).await?;
    let s = node(&secret, &sealed)?;
    ensure!(
        s["status"] == "STORED"
            && s["encrypted"] == true
            && s["sha256"] == sha256_hex(&photo)
            && s["size"] == photo.len(),
        "the encrypted photo: {s}"
    );
    let got = server.download(&jwt, s["downloadUrl"].as_str().context("the photo's URL")?, None).await?;
    ensure!(got.status == 200 && got.body == photo, "the photo's bytes: HTTP {}", got.status);
    let t = node(&secret, &tampered)?;
    ensure!(
        t["status"] == "TAMPERED" && t["downloadUrl"].is_null() && t["sha256"].is_null(),
        "the swapped ciphertext: {t}"
    );
    let _ = Restricted;
    server.stop().await
}
