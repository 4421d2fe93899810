//! What binds a message's evidence to the runs that read it, on every backend: a message stored
//! while still encrypted is recorded without content and recorded again, with it, by the run
//! that reads it decrypted (the earlier leaf still rebuilds exactly); a redaction of an edit is
//! recorded as a REDACTION whose target is the edit, with who, when and why.

use argus_crypto::tlog::{leaf_hash, root_of};
use argus_domain::{
    Classification::*,
    MessageEdit, MessageRecord, MessageRedaction, Redaction, Scope, Viewer,
    oversight::{LogEntry, VersionKind},
};
use argus_store::{DisclosureSource, SourceVersion, Store};
use time::{Duration, OffsetDateTime};

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, now, run, snapshot, viewer},
};

backend_suite!(
    a_message_decrypted_later_is_recorded_again_with_its_content,
    an_edits_redaction_is_recorded_with_who_when_and_why,
);

const JEAN: &str = "@jean.dupont:agent.tchap.gouv.fr";

fn text(id: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord::text(id.parse().unwrap(), JEAN.parse().unwrap(), body.to_owned(), sent_at)
}

/// A message as the connector hands over one it could not decrypt.
fn sealed(id: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord { encrypted: true, msgtype: None, body: None, ..text(id, "", sent_at) }
}

/// A message as the connector hands over one it decrypted.
fn decrypted(id: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord { encrypted: true, decrypted: true, ..text(id, body, sent_at) }
}

fn source(s: &Store, v: &Viewer, room: &str) -> DisclosureSource {
    s.disclosure_source(v, &rid(room), None, None).unwrap().unwrap()
}

fn of<'a>(source: &'a DisclosureSource, event_id: &str) -> Vec<&'a SourceVersion> {
    source.versions.iter().filter(|v| v.message_event_id == event_id).collect()
}

fn rebuilds(v: &SourceVersion) -> bool {
    leaf_hash(&v.leaf.canonical()) == v.stored_leaf_hash
}

/// Every run's leaves, rebuilt from the rows, still make its `eventsRoot`.
fn every_root_holds(source: &DisclosureSource) {
    for run in &source.runs {
        let LogEntry::Audit(audit) = LogEntry::parse(&run.entry.bytes).unwrap() else { panic!("not audit") };
        let mut mine: Vec<_> = source.versions.iter().filter(|v| v.run_id == run.run_id).collect();
        mine.sort_by_key(|v| v.position);
        let rebuilt: Vec<_> = mine.iter().map(|v| leaf_hash(&v.leaf.canonical())).collect();
        assert_eq!(Some(hex::encode(root_of(&rebuilt))), audit.events_root, "run {}", run.run_id);
    }
}

fn a_message_decrypted_later_is_recorded_again_with_its_content(db: &TestDb) {
    const ROOM: &str = "!dechiffre:x.org";
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now() - Duration::minutes(5);
    let first = vec![sealed("$later", t), text("$clear", "en clair", t)];
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, first)).unwrap();
    let stored = source(s, &v, ROOM);
    let sealed_leaf = of(&stored, "$later");
    assert_eq!(sealed_leaf.len(), 1);
    assert_eq!((sealed_leaf[0].leaf.body.as_deref(), sealed_leaf[0].leaf.msgtype.as_deref()), (None, None));

    // A later run reads it decrypted: the content is filled in, and bound to that run.
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, vec![decrypted("$later", "rempli", t)]))
        .unwrap();
    // Filled once: a decrypted copy read again records nothing more.
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, vec![decrypted("$later", "réécrit", t)]))
        .unwrap();
    let source = source(s, &v, ROOM);
    let versions = of(&source, "$later");
    assert!(versions.iter().all(|v| rebuilds(v)), "every leaf rebuilds: {versions:#?}");
    every_root_holds(&source);
    let contents: Vec<_> = versions.iter().map(|v| (v.kind, v.leaf.body.as_deref())).collect();
    assert_eq!(contents, [(VersionKind::Original, None), (VersionKind::Original, Some("rempli"))]);
    assert_ne!(versions[0].run_id, versions[1].run_id);
    assert_eq!(versions[1].leaf.msgtype.as_deref(), Some("m.text"));
    let message = source.messages.iter().find(|m| m.message.event_id.as_str() == "$later").unwrap();
    assert_eq!(message.message.body.as_deref(), Some("rempli"));

    // The decrypted content changed behind the store's back: the later leaf no longer
    // rebuilds; the earlier one, recorded without content, still does.
    db.raw().exec("UPDATE messages SET body = 'falsifié' WHERE event_id = '$later'").unwrap();
    let tampered = self::source(s, &v, ROOM);
    let versions = of(&tampered, "$later");
    assert_eq!(versions.iter().map(|v| rebuilds(v)).collect::<Vec<_>>(), [true, false]);
}

fn an_edits_redaction_is_recorded_with_who_when_and_why(db: &TestDb) {
    const ROOM: &str = "!retrait:x.org";
    let s = &db.store;
    let plain = viewer("org-a", Secret);
    let mut oversight = viewer("org-a", Secret);
    oversight.scopes.insert(Scope::Redacted);
    let t = now() - Duration::minutes(10);
    let m = text("$msg", "Rendez-vous à 9h", t);
    s.record_ingestion(&run(&plain, Restricted), &snapshot(ROOM, vec![m.clone()])).unwrap();
    let mut edited = snapshot(ROOM, Vec::new());
    edited.edits = vec![MessageEdit {
        event_id: "$edit".parse().unwrap(),
        sender: m.sender.clone(),
        target: m.event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("Rendez-vous à 10h".to_owned()),
        edited_at: t + Duration::minutes(1),
    }];
    s.record_ingestion(&run(&plain, Restricted), &edited).unwrap();
    let at = t + Duration::minutes(2);
    let mut withdrawn = snapshot(ROOM, Vec::new());
    withdrawn.redactions = vec![MessageRedaction {
        target: "$edit".parse().unwrap(),
        redaction: Redaction {
            redacted_by: m.sender.clone(),
            redacted_at: at,
            reason: Some("erreur".into()),
        },
        confirmed: true,
    }];
    s.record_ingestion(&run(&plain, Restricted), &withdrawn).unwrap();
    // Read again, the same redaction records nothing more.
    s.record_ingestion(&run(&plain, Restricted), &withdrawn).unwrap();

    let source = source(s, &plain, ROOM);
    let versions = of(&source, "$msg");
    let kinds: Vec<_> = versions.iter().map(|v| v.kind).collect();
    let (original, edit, redaction) = (VersionKind::Original, VersionKind::Edit, VersionKind::Redaction);
    assert_eq!(kinds, [original, original, edit, redaction]);
    let r = &versions[3].leaf;
    assert_eq!(
        (r.event_id.as_str(), r.target.as_deref(), r.sender.as_str(), r.reason.as_deref()),
        ("$msg", Some("$edit"), JEAN, Some("erreur"))
    );
    assert_eq!(r.sent_at, argus_domain::to_unix_ms(at));
    // The withdrawn edit's content is purged (its leaf cannot be rebuilt); the rest rebuilds,
    // and the message shows its original again.
    assert_eq!(versions.iter().map(|v| rebuilds(v)).collect::<Vec<_>>(), [true, true, false, true]);
    let message = source.messages.iter().find(|m| m.message.event_id.as_str() == "$msg").unwrap();
    assert_eq!(message.message.body.as_deref(), Some("Rendez-vous à 9h"));
    // For a reader of held content, the edit rebuilds from it.
    let held = self::source(s, &oversight, ROOM);
    assert!(of(&held, "$msg").iter().all(|v| rebuilds(v)));
    every_root_holds(&held);
}
