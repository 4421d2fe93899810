//! A stored version that no longer matches the log refuses the export, naming it, and writes
//! nothing.

use std::fs;

use argus_disclose::{Error, testing::MemoryLog, write_package};

use crate::support;

async fn refused(alter: impl FnOnce(&mut argus_store::DisclosureSource)) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::new();
    let (mut source, files) = support::source(&log);
    alter(&mut source);
    let store = support::blobs(dir.path(), &files).await;
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let size = log.size();
    let result = write_package(
        &source,
        &log,
        &store,
        &support::keys(),
        &support::request(false),
        &out.join("package"),
    )
    .await;
    let Err(Error::Mismatch { rows }) = result else { panic!("not refused: {result:?}") };
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "something was written");
    assert_eq!(log.size(), size, "a refused export is not journaled as a disclosure");
    rows
}

#[tokio::test]
async fn an_edited_body_in_the_database_refuses_the_export() {
    let rows = refused(|source| {
        let v = source.versions.iter_mut().find(|v| v.leaf.event_id == "$m2e1").unwrap();
        v.leaf.body = Some("Réunion annulée".to_owned());
    })
    .await;
    assert_eq!(rows, ["$m2e1"]);
}

#[tokio::test]
async fn a_changed_original_and_a_changed_redaction_are_both_named() {
    let rows = refused(|source| {
        source.versions.iter_mut().find(|v| v.leaf.event_id == "$m1").unwrap().leaf.sender =
            "@eve:agent.tchap.gouv.fr".to_owned();
        let redaction = source
            .versions
            .iter_mut()
            .find(|v| v.kind == argus_domain::oversight::VersionKind::Redaction)
            .unwrap();
        redaction.leaf.reason = None;
    })
    .await;
    assert_eq!(rows, ["$m1", "$m3r (REDACTION)"]);
}

#[tokio::test]
async fn a_stored_hash_rewritten_with_its_row_still_refuses() {
    // Rewriting the row and its recorded leaf hash together does not match the run's eventsRoot.
    let rows = refused(|source| {
        let v = source.versions.iter_mut().find(|v| v.leaf.event_id == "$m4").unwrap();
        v.leaf.body = Some("autre.pdf".to_owned());
        v.stored_leaf_hash = argus_crypto::tlog::leaf_hash(&v.leaf.canonical());
    })
    .await;
    assert_eq!(rows, ["$m4"]);
}

#[tokio::test]
async fn a_held_file_that_is_not_the_logged_one_refuses_the_export() {
    let rows = refused(|source| {
        let m = source.messages.iter_mut().find(|m| m.message.event_id.as_str() == "$m5").unwrap();
        m.attachment.as_mut().unwrap().sha256 = Some(argus_domain::Sha256Digest::of(b"another file"));
    })
    .await;
    assert_eq!(rows, ["$m5"]);
}
