//! A package of a room with edits, a redaction and files verifies with every tool, and says
//! what a court needs.

use std::fs;

use argus_disclose::{verify_package, write_tar};
use argus_domain::oversight::{AccessAction, LogEntry};
use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha512};

use crate::support::{self, ANA, BOB, PDF, TRICKY};

fn lines(bag: &std::path::Path) -> Vec<Value> {
    fs::read_to_string(bag.join("data/messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_package_verifies_with_every_tool() {
    let built = support::build().await;
    let report = verify_package(&built.bag, &built.log_key, &built.package_key).unwrap();
    assert_eq!(report.messages, 8);
    assert_eq!(report.versions, 11, "1 + 3 (edited twice) + 1 + 2 (original, redaction) + 4");
    assert_eq!(report.attachments, 2, "the infected file is left out");
    assert_eq!(report.package_id, built.summary.package_id);
    assert_eq!(report.room_id, support::ROOM);
    assert_eq!(report.checkpoint_size, built.log.size());
    assert!(
        report.trusted_comment.contains(&built.summary.package_id)
            && report.trusted_comment.contains(support::ROOM)
    );
    assert_eq!(built.summary.messages, 8);
    assert_eq!(built.summary.attachments, 2);

    let tools = support::tools(&built.bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false), "bagit-python refuses the bag");
    assert_ne!(tools.minisign, Some(false), "minisign refuses the signature");
    assert_ne!(tools.verify_py, Some(false), "verify.py refuses the package");
    if tools.verify_py.is_some() {
        assert!(tools.verify_py_output.contains("VERIFIED"), "{}", tools.verify_py_output);
        assert!(tools.verify_py_output.contains("versions: 11 included"), "{}", tools.verify_py_output);
    }
}

#[tokio::test]
async fn messages_jsonl_holds_every_version_redaction_and_file() {
    let built = support::build().await;
    let lines = lines(&built.bag);
    let ids: Vec<&str> = lines.iter().map(|l| l["eventId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["$m1", "$m2", "$m3", "$m3r", "$m4", "$m5", "$m6", "$m7"]);
    let m2 = &lines[1];
    assert_eq!(m2["edited"], true);
    let bodies: Vec<&str> =
        m2["versions"].as_array().unwrap().iter().map(|v| v["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["Réunion à 14h", "Réunion à 15h", "Réunion à 15h (salle B)"]);
    let kinds: Vec<&str> =
        m2["versions"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ORIGINAL", "EDIT", "EDIT"]);
    assert_eq!(m2["sender"], BOB);
    assert!(m2["sentAt"].as_str().unwrap().ends_with('Z'), "times are UTC");

    let redacted = lines.iter().find(|l| l["eventId"] == "$m3r").unwrap();
    assert_eq!(redacted["redacted"], true);
    assert_eq!(redacted["body"], Value::Null);
    assert_eq!(redacted["redaction"]["by"], BOB);
    assert_eq!(redacted["redaction"]["reason"], "hors sujet / off topic");
    assert_eq!(redacted["redaction"]["at"], support::utc(support::t(6)));
    let last = redacted["versions"].as_array().unwrap().last().unwrap();
    assert_eq!((last["kind"].as_str(), last["sender"].as_str()), (Some("REDACTION"), Some(BOB)));

    // A version a later redaction purged is listed as redacted, and not claimed.
    let purged = lines.iter().find(|l| l["eventId"] == "$m3").unwrap();
    assert_eq!((purged["redacted"].as_bool(), purged["body"].as_str()), (Some(true), None));
    let listed = purged["redactedVersions"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["kind"].as_str(), listed[0]["eventId"].as_str()), (Some("ORIGINAL"), Some("$m3")));
    let claimed: Vec<&str> =
        purged["versions"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(claimed, ["REDACTION"]);
    assert_eq!(purged["redaction"]["reason"], "doublon");
    assert!(!fs::read_to_string(built.bag.join("data/transcript.html")).unwrap().contains("erreur de salon"));

    let pdf = lines.iter().find(|l| l["eventId"] == "$m4").unwrap();
    let sha = hex::encode(Sha256::digest(PDF));
    assert_eq!(pdf["attachment"]["sha256"], sha.as_str());
    assert_eq!(pdf["attachment"]["name"], "note.pdf");
    assert_eq!(pdf["attachment"]["status"], "STORED");
    assert_eq!(fs::read(built.bag.join("data/attachments").join(&sha)).unwrap(), PDF);
    let virus = lines.iter().find(|l| l["eventId"] == "$m6").unwrap();
    assert_eq!(virus["attachment"]["status"], "INFECTED");
    assert_eq!(virus["attachment"]["file"], Value::Null);
    assert!(
        !built.bag.join("data/attachments").join(virus["attachment"]["sha256"].as_str().unwrap()).exists()
    );
    assert_eq!(lines.iter().find(|l| l["eventId"] == "$m7").unwrap()["body"], TRICKY);
    assert_eq!(lines[0]["sender"], ANA);
}

#[tokio::test]
async fn the_disclosure_is_in_its_own_checkpoint() {
    let built = support::build().await;
    let index = built.summary.log_index;
    assert_eq!(built.summary.checkpoint_size, index + 1);
    let Ok(LogEntry::Access(entry)) = LogEntry::parse(&built.log.entry(index).unwrap()) else {
        panic!("not an access entry")
    };
    assert_eq!(entry.action, AccessAction::Disclose);
    assert_eq!(entry.actor, "juriste@interieur.gouv.fr");
    assert_eq!(entry.item_count, 8);
    let d = entry.disclosure.unwrap();
    assert_eq!(d.package_id, built.summary.package_id);
    assert_eq!(
        d.messages_sha256,
        hex::encode(Sha256::digest(fs::read(built.bag.join("data/messages.jsonl")).unwrap()))
    );
    assert_eq!(
        fs::read(built.bag.join(format!("data/log/records/{index}"))).unwrap(),
        built.log.entry(index).unwrap()
    );
    let info = fs::read_to_string(built.bag.join("bag-info.txt")).unwrap();
    for field in [
        format!("External-Identifier: {}", built.summary.package_id),
        format!("Bag-Group-Identifier: {}", support::ROOM),
        format!("Source-Organization: {}", support::ORG),
        "Argus-Requester: juriste@interieur.gouv.fr".to_owned(),
        "Bagging-Date: ".to_owned(),
        "Payload-Oxum: ".to_owned(),
        "Argus-Range: ".to_owned(),
    ] {
        assert!(info.contains(&field), "bag-info.txt lacks {field}");
    }
    // Nothing is left beside the package.
    let beside: Vec<_> =
        fs::read_dir(built.bag.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, [std::ffi::OsString::from("package")]);
}

#[tokio::test]
async fn quarantined_files_only_on_request() {
    let built = support::build_with(true).await;
    let report = verify_package(&built.bag, &built.log_key, &built.package_key).unwrap();
    assert_eq!(report.attachments, 3);
    let sha = hex::encode(Sha256::digest(support::infected()));
    assert_eq!(fs::read(built.bag.join("data/attachments").join(sha)).unwrap(), support::infected());
    let tools = support::tools(&built.bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false));
    assert_ne!(tools.verify_py, Some(false));
}

#[tokio::test]
async fn the_tar_holds_the_bag() {
    let built = support::build().await;
    let tar_path = built.dir.path().join("package.tar");
    let (sha512, size) = write_tar(&built.bag, &tar_path).unwrap();
    let bytes = fs::read(&tar_path).unwrap();
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(sha512, hex::encode(Sha512::digest(&bytes)));
    let out = built.dir.path().join("unpacked");
    tar::Archive::new(bytes.as_slice()).unpack(&out).unwrap();
    let report = verify_package(&out.join("package"), &built.log_key, &built.package_key).unwrap();
    assert_eq!(report.package_id, built.summary.package_id);
}

#[tokio::test]
async fn an_existing_package_is_not_overwritten() {
    let built = support::build().await;
    let log = argus_disclose::testing::MemoryLog::new();
    let (source, files) = support::source(&log);
    let store = support::blobs(built.dir.path(), &files).await;
    let again = argus_disclose::write_package(
        &source,
        &log,
        &store,
        &built.keys,
        &support::request(false),
        &built.bag,
    )
    .await;
    assert!(matches!(again, Err(argus_disclose::Error::Exists)), "{again:?}");
    verify_package(&built.bag, &built.log_key, &built.package_key).unwrap();
}

#[tokio::test]
async fn the_disclosure_is_filed_at_the_rooms_level_at_least() {
    let dir = tempfile::tempdir().unwrap();
    let log = argus_disclose::testing::MemoryLog::new();
    let (mut source, files) = support::source(&log);
    // A SECRET room whose range holds only lower messages: a reader below SECRET learns nothing
    // of its disclosure from the access journal.
    source.room.classification = argus_domain::Classification::Secret;
    assert!(source.messages.iter().all(|m| m.classification < argus_domain::Classification::Secret));
    let store = support::blobs(dir.path(), &files).await;
    let bag = dir.path().join("out").join("package");
    let summary = argus_disclose::write_package(
        &source,
        &log,
        &store,
        &support::keys(),
        &support::request(false),
        &bag,
    )
    .await
    .unwrap();
    let Ok(LogEntry::Access(entry)) = LogEntry::parse(&log.entry(summary.log_index).unwrap()) else {
        panic!("not an access entry")
    };
    assert_eq!(entry.classification, argus_domain::Classification::Secret);
}
