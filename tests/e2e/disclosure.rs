//! Oversight end to end, against the real Synapse and a real `clamd`: a room with an edit, a
//! redaction and files is ingested, read, searched and downloaded (each read journaled), then
//! disclosed through `discloseTchapRoom`; the package downloaded from `/packages/{id}` is checked
//! as a court would check it, offline, with the keys the organisation published (never those in
//! the package): bagit-python validates the bag, the `minisign` tool its signature, `verify.py`
//! every proof, and `argus_disclose::verify_package` the same in Rust. The log grown since an
//! earlier checkpoint is proven consistent with it (and not with a forged one); every read is in
//! `tchapAccessLog`; a message body changed in the database makes the next export refuse, naming
//! the message.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use argus_crypto::{
    package_signing::PackageSigner,
    tlog::{LogSigner, verify_consistency},
};
use argus_domain::{Classification::Secret, Scope};
use argus_testkit::synapse::Synapse;
use serde_json::json;

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored }
}";

const READ: &str = r"query($r: String!) { tchapMessages(roomId: $r, first: 50) { edges { node {
  eventId body attachment { status downloadUrl sha256 }
} } } }";

const SEARCH: &str = r#"query($r: String!) { tchapSearch(query: "hangar", roomId: $r, first: 10) {
  edges { node { eventId } }
} }"#;

const DISCLOSE: &str = r"mutation($r: String!) { discloseTchapRoom(input: { roomId: $r }) {
  package { id sha512 size downloadUrl }
} }";

const RUNS: &str =
    r"query { tchapIngestions(first: 20) { edges { node { action eventsRoot eventsCount } } } }";

const ACCESS_LOG: &str = r"query($r: String) { tchapAccessLog(first: 50, roomId: $r) {
  totalCount edges { node { actor action roomIds query itemCount classification } }
} }";

/// The bytes of a small report.
const REPORT: &[u8] = b"%PDF-1.4\n% rapport sur le hangar 12\n%%EOF\n";

/// The organisation's keys as an operator generates and publishes them.
struct Keys {
    log: LogSigner,
    log_file: PathBuf,
    package: PackageSigner,
    package_file: PathBuf,
}

fn keys(dir: &Path) -> Result<Keys> {
    let (log, log_secret) = LogSigner::generate("argus-tchap")?;
    let (package, package_secret) = PackageSigner::generate()?;
    let (log_file, package_file) = (dir.join("log.key"), dir.join("package.key"));
    std::fs::write(&log_file, log_secret.expose_value())?;
    std::fs::write(&package_file, package_secret.expose_value())?;
    Ok(Keys { log, log_file, package, package_file })
}

/// Runs `program` with `args` in `dir`; its output when it exits 0, an error naming it else.
fn run(program: &Path, args: &[&str], dir: &Path) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{} {args:?} failed: {text}", program.display());
    Ok(text)
}

/// Unpacks the tar `bytes` in `into`; the bag's folder.
fn untar(bytes: &[u8], into: &Path) -> Result<PathBuf> {
    let tar = into.join("package.tar");
    std::fs::write(&tar, bytes)?;
    let out = into.join("unpacked");
    std::fs::create_dir_all(&out)?;
    run(
        Path::new("tar"),
        &["-xf", tar.to_str().context("path")?, "-C", out.to_str().context("path")?],
        into,
    )?;
    let mut dirs = std::fs::read_dir(&out)?.filter_map(|e| e.ok()).map(|e| e.path());
    let bag = dirs.next().context("an empty tar")?;
    ensure!(dirs.next().is_none(), "a tar of more than one folder");
    Ok(bag)
}

/// Changes the body of message `event_id` in the database at `url`, as someone holding the
/// database (not the keys) could.
fn tamper(url: &str, event_id: &str) -> Result<()> {
    use diesel::{Connection as _, RunQueryDsl as _};
    let sql = format!("UPDATE messages SET body = 'rendez-vous 11h' WHERE event_id = '{event_id}'");
    let changed = if let Some(path) = url.strip_prefix("sqlite://") {
        let mut c = diesel::SqliteConnection::establish(path)?;
        diesel::sql_query(sql).execute(&mut c)?
    } else {
        let mut c = diesel::PgConnection::establish(url)?;
        diesel::sql_query(sql).execute(&mut c)?
    };
    ensure!(changed == 1, "the tampering changed {changed} rows");
    Ok(())
}

/// Runs the scenario on the store at `database_url`.
pub(crate) async fn run_scenario(
    synapse: &Synapse,
    clamd: &argus_testkit::clamd::ClamdDaemon,
    database_url: &str,
    dir: &Path,
) -> Result<()> {
    let (Some(python), Some(minisign)) =
        (argus_testkit::verifiers::python(), argus_testkit::verifiers::minisign())
    else {
        return Ok(()); // skipped loudly by the test kit
    };
    let alice = synapse.register("disclose_alice").await?;
    let room = alice.create_room(Some("Divulgation"), None, false).await?;
    let meeting = alice.send_text(&room, "rendez-vous au hangar 12 à 10h").await?;
    let edit = alice.edit(&room, &meeting, "rendez-vous au hangar 12 à 10h30").await?;
    let chatter = alice.send_text(&room, "message envoyé par erreur").await?;
    alice.redact(&room, &chatter, Some("erreur de salon")).await?;
    let report_uri = alice.upload(REPORT.to_vec(), "application/pdf").await?;
    let report = alice
        .send_message(
            &room,
            &json!({ "msgtype": "m.file", "body": "rapport.pdf", "url": report_uri,
                     "info": { "mimetype": "application/pdf", "size": REPORT.len() } }),
        )
        .await?;

    let keys = keys(dir)?;
    let (log_file, package_file) = (keys.log_file.clone(), keys.package_file.clone());
    let server = Server::start_with(database_url, dir, move |config| {
        config.media.clamd = clamd.addr().parse().ok();
        config.oversight.log_signing_key_file = Some(log_file);
        config.oversight.package_signing_key_file = Some(package_file);
    })
    .await?;
    let analyst = server.jwt("analyst@dgsi", "dgsi", Secret, &[Scope::Read, Scope::Ingest])?;
    let input = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED",
    } });
    server.data(&analyst, INGEST, input, "ingestTchapRoom").await?;

    // What the oversight body was handed last month.
    let store = argus_store::Store::open(database_url)?;
    let org: argus_domain::OrgId = "dgsi".parse()?;
    let earlier = store.log_head(&org)?;

    // Reads of content, each journaled: the messages (once the file is held), a search, a download.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let read = loop {
        let read = server.data(&analyst, READ, json!({ "r": room }), "tchapMessages").await?;
        let node = crate::harness::message_node(&read, &report)?;
        if node["attachment"]["status"] == "STORED" {
            break read;
        }
        ensure!(std::time::Instant::now() < deadline, "the report is still not held: {node}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let file = crate::harness::message_node(&read, &report)?["attachment"].clone();
    ensure!(file["sha256"] == argus_domain::Sha256Digest::of(REPORT).to_hex(), "the held file: {file}");
    let search = server.data(&analyst, SEARCH, json!({ "r": room }), "tchapSearch").await?;
    ensure!(search["edges"].as_array().map(Vec::len) == Some(1), "the search: {search}");
    let url = file["downloadUrl"].as_str().context("the report's download URL")?;
    let got = server.download(&analyst, url, None).await?;
    ensure!(got.status == 200 && got.body == REPORT, "the download: HTTP {}", got.status);

    // The disclosure, by an officer cleared for the room, downloaded as a court receives it.
    let officer = server.jwt("greffe@dgsi", "dgsi", Secret, &[Scope::Read, Scope::Disclose])?;
    let payload = server.data(&officer, DISCLOSE, json!({ "r": room }), "discloseTchapRoom").await?;
    let package = &payload["package"];
    let tar =
        server.download(&officer, package["downloadUrl"].as_str().context("downloadUrl")?, None).await?;
    ensure!(tar.status == 200, "the package's download: HTTP {}", tar.status);
    ensure!(
        package["size"] == tar.body.len() && package["sha512"] == hex::encode(sha512(&tar.body)),
        "the package's size and digest: {package}"
    );
    let foreign = server.jwt("greffe@anssi", "anssi", Secret, &[Scope::Read, Scope::Disclose])?;
    let refused = server.download(&foreign, package["downloadUrl"].as_str().context("url")?, None).await?;
    ensure!(refused.status == 404, "another organisation got the package: HTTP {}", refused.status);

    let work = tempfile::tempdir()?;
    let bag = untar(&tar.body, work.path())?;
    let bag_arg = bag.to_str().context("path")?;
    run(&python, &["-m", "bagit", "--validate", bag_arg], work.path())?;
    run(&minisign, &["-Vm", "tagmanifest-sha512.txt", "-P", &keys.package.public_key()], &bag)?;
    let verify_py = bag.join("data/verify/verify.py");
    let verify_py = verify_py.to_str().context("path")?;
    run(&python, &[verify_py, "--log-key", keys.log.verifier_key(), bag_arg], work.path())?;
    argus_disclose::verify_package(&bag, keys.log.verifier_key(), &keys.package.public_key())?;

    // What the package says, as a person reads it and as a program reads it.
    let transcript = std::fs::read_to_string(bag.join("data/transcript.html"))?;
    for text in ["rendez-vous au hangar 12 à 10h30", "rendez-vous au hangar 12 à 10h", "erreur de salon"] {
        ensure!(transcript.contains(text), "the transcript lacks {text:?}");
    }
    ensure!(!transcript.contains("message envoyé par erreur"), "the transcript shows a purged message");
    let jsonl = std::fs::read_to_string(bag.join("data/messages.jsonl"))?;
    for id in [&meeting, &edit, &chatter, &report] {
        ensure!(jsonl.contains(id.as_str()), "messages.jsonl lacks {id}");
    }
    let held = bag.join("data/attachments").join(argus_domain::Sha256Digest::of(REPORT).to_hex());
    ensure!(std::fs::read(&held)? == REPORT, "the packaged file");
    // A byte changed in the unpacked package: every verifier refuses it.
    let mut bytes = std::fs::read(bag.join("data/messages.jsonl"))?;
    bytes[10] ^= 1;
    std::fs::write(bag.join("data/messages.jsonl"), bytes)?;
    ensure!(
        run(&python, &["-m", "bagit", "--validate", bag_arg], work.path()).is_err(),
        "bagit took a changed byte"
    );
    ensure!(
        argus_disclose::verify_package(&bag, keys.log.verifier_key(), &keys.package.public_key()).is_err(),
        "verify_package took a changed byte"
    );

    // The run's record, as the audit trail shows it, carries the root the package proves against.
    let mut packaged_roots = Vec::new();
    for record in std::fs::read_dir(bag.join("data/log/records"))? {
        let entry: serde_json::Value = serde_json::from_slice(&std::fs::read(record?.path())?)?;
        if let Some(root) = entry["eventsRoot"].as_str() {
            packaged_roots.push(root.to_owned());
        }
    }
    let auditor = server.jwt("inspection@dgsi", "dgsi", Secret, &[Scope::Audit])?;
    let runs = server.data(&auditor, RUNS, json!({}), "tchapIngestions").await?;
    let run = runs["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["action"] == "INGEST")
        .context("the ingestion's record")?;
    ensure!(
        run["eventsCount"].as_i64().is_some_and(|n| n >= 4)
            && run["eventsRoot"].as_str().is_some_and(|r| packaged_roots.iter().any(|p| p == r)),
        "the run's eventsRoot {run} is not the packaged one {packaged_roots:?}"
    );

    // The log grew since the earlier checkpoint, and only grew.
    let now = store.log_head(&org)?;
    ensure!(now.size > earlier.size, "the log did not grow: {} → {}", earlier.size, now.size);
    let proof = store.log_consistency(&org, earlier.size, now.size)?;
    verify_consistency(earlier.size, earlier.root, now.size, now.root, &proof)?;
    let mut forged = earlier.root;
    forged[0] ^= 1;
    ensure!(
        verify_consistency(earlier.size, forged, now.size, now.root, &proof).is_err(),
        "a forged history verified"
    );

    // Every read is journaled, with what it returned.
    let log = server.data(&auditor, ACCESS_LOG, json!({ "r": room }), "tchapAccessLog").await?;
    let actions: Vec<&str> = log["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .filter_map(|e| e["node"]["action"].as_str())
        .collect();
    for action in ["READ_MESSAGES", "SEARCH", "DOWNLOAD", "DISCLOSE"] {
        ensure!(actions.contains(&action), "no {action} in the access log: {log}");
    }
    let search_entry = log["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["action"] == "SEARCH")
        .context("the search entry")?;
    ensure!(
        search_entry["query"] == "hangar"
            && search_entry["itemCount"] == 1
            && search_entry["actor"] == "analyst@dgsi",
        "the search entry: {search_entry}"
    );

    // A body changed in the database: the export refuses, naming the message.
    tamper(database_url, &meeting)?;
    let (code, body) = server.error_code(&officer, DISCLOSE, json!({ "r": room })).await?;
    ensure!(
        code == "EVIDENCE_MISMATCH" && body.to_string().contains(meeting.as_str()),
        "the export after tampering: {code} {body}"
    );
    server.stop().await
}

fn sha512(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha512::digest(bytes).to_vec()
}
