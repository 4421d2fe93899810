//! Legal hold, on every backend: a redaction that reaches the archive after it captured the
//! message purges what everyone reads, as before, while the content captured is kept sealed for
//! a reader with `tchap:redacted` only (of the same organisation and clearance), never indexed
//! for search; a message redacted before its capture has nothing held; with the hold off, a
//! redaction purges as it always did.

use argus_domain::{
    Classification::*, EventId, HeldVersion, MediaRef, MessageEdit, MessageRecord, MessageRedaction,
    PageRequest, Redaction, Scope, SearchRequest, StoredMessage, Viewer,
};
use argus_store::{Store, StoreOptions};
use time::Duration;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, messages, now, run, snapshot, viewer},
};

backend_suite!(
    a_redaction_after_capture_keeps_the_content_for_oversight_only,
    a_withdrawn_edit_is_held_too,
    content_redacted_before_capture_has_nothing_to_hold,
    with_the_hold_off_a_redaction_purges_the_content,
);

const ROOM: &str = "!hold:x.org";

/// A reader of `org` at `clearance` with `tchap:redacted` beside the usual scopes.
fn oversight(org: &str, clearance: argus_domain::Classification) -> Viewer {
    let mut v = viewer(org, clearance);
    v.scopes.insert(Scope::Redacted);
    v
}

/// A redaction of `target` by `by`, not confirmed by the homeserver (the sender's own).
fn redaction(target: &EventId, by: &str) -> MessageRedaction {
    MessageRedaction {
        target: target.clone(),
        redaction: Redaction { redacted_by: by.parse().unwrap(), redacted_at: now(), reason: None },
        confirmed: false,
    }
}

fn edit(id: &str, of: &MessageRecord, body: &str, at: time::OffsetDateTime) -> MessageEdit {
    MessageEdit {
        event_id: id.parse().unwrap(),
        sender: of.sender.clone(),
        target: of.event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
        edited_at: at,
    }
}

fn read(store: &Store, v: &Viewer) -> Vec<StoredMessage> {
    store.messages(v, &rid(ROOM), &PageRequest::first(50)).unwrap().items
}

fn search(store: &Store, v: &Viewer, query: &str) -> usize {
    let request = SearchRequest {
        query: query.parse().unwrap(),
        room_id: None,
        sender: None,
        from: None,
        to: None,
        first: 50,
        offset: 0,
    };
    store.search(v, &request).unwrap().hits.len()
}

/// Two messages stored, the first edited, the second with an attachment; then their sender
/// redacts both.
fn stored_then_redacted(s: &Store, ingester: &Viewer) -> Vec<MessageRecord> {
    let t = now() - Duration::hours(1);
    let mut msgs = messages(3, t);
    msgs[0].body = Some("Livraison prévue au hangar 7".to_owned());
    msgs[1].msgtype = Some("m.image".to_owned());
    msgs[1].body = Some("plan.png".to_owned());
    msgs[1].media = Some(MediaRef {
        uri: Some("mxc://x.org/plan".to_owned()),
        mimetype: Some("image/png".to_owned()),
        size: Some(2048),
        ..Default::default()
    });
    s.record_ingestion(&run(ingester, Restricted), &snapshot(ROOM, msgs.clone())).unwrap();
    let mut edited = snapshot(ROOM, Vec::new());
    edited.edits = vec![edit("$hangar9", &msgs[0], "Livraison prévue au hangar 9", t + Duration::minutes(1))];
    s.record_ingestion(&run(ingester, Restricted), &edited).unwrap();
    let mut erase = snapshot(ROOM, Vec::new());
    erase.redactions = vec![
        redaction(&msgs[0].event_id, msgs[0].sender.as_str()),
        redaction(&msgs[1].event_id, msgs[1].sender.as_str()),
    ];
    for _ in 0..2 {
        // Seen twice (a re-ingestion): nothing held is lost or changed.
        let r = s.record_ingestion(&run(ingester, Restricted), &erase).unwrap();
        assert_eq!(r.counts.redactions_ignored, 0);
    }
    msgs
}

/// The finding: a member who redacts their own message after it was archived must not
/// erase the evidence. Everyone reads it redacted, as before; a reader with `tchap:redacted`
/// also reads what was captured, the versions too; nobody finds it by search.
fn a_redaction_after_capture_keeps_the_content_for_oversight_only(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let msgs = stored_then_redacted(s, &v);

    // Everyone else: redacted, as before the hold existed.
    let plain = read(s, &v);
    let [m0, m1, m2] = [0, 1, 2].map(|i| &plain[i]);
    assert!(m0.message.redacted && m0.message.body.is_none());
    assert_eq!(m0.message.versions.len(), 2);
    assert!(m0.message.versions.iter().all(|v| v.body.is_none() && v.msgtype.is_none()));
    assert!(m1.message.redacted && m1.message.body.is_none() && m1.message.media.is_none());
    assert!(plain.iter().all(|m| m.held.is_none()), "held content read without tchap:redacted");
    assert_eq!(m2.message, msgs[2]);

    // Oversight: the same message, and the content it had when captured.
    let o = oversight("org-a", Secret);
    let sealed = read(s, &o);
    for (with, without) in sealed.iter().zip(&plain) {
        assert_eq!(with.message, without.message, "the hold changed what the message says");
    }
    let held = sealed[0].held.as_ref().expect("the redacted message's content is held");
    assert_eq!(held.body.as_deref(), Some("Livraison prévue au hangar 9"));
    assert_eq!(held.media, None);
    let versions: Vec<_> = held.versions.iter().map(|v| (v.event_id.as_str(), v.body.as_deref())).collect();
    assert_eq!(
        versions,
        [
            (msgs[0].event_id.as_str(), Some("Livraison prévue au hangar 7")),
            ("$hangar9", Some("Livraison prévue au hangar 9")),
        ]
    );
    assert_eq!(held.versions[1].msgtype.as_deref(), Some("m.text"));
    let image = sealed[1].held.as_ref().expect("the attachment's message is held");
    assert_eq!(image.body.as_deref(), Some("plan.png"));
    assert_eq!(image.media, msgs[1].media);
    assert!(image.versions.is_empty());
    assert_eq!(sealed[2].held, None, "nothing held of a message never redacted");

    // The scope opens nothing outside the organisation and the clearance.
    assert!(read(s, &oversight("org-b", TopSecret)).is_empty());
    assert!(read(s, &oversight("org-a", Unclassified)).is_empty());

    // Held content is not searchable, by anyone.
    for reader in [&v, &o] {
        assert_eq!(search(s, reader, "hangar"), 0);
        assert_eq!(search(s, reader, "plan.png"), 0);
    }
}

/// An edit the archive captured and its sender then redacted (withdrawn): everyone reads the
/// message back at the version before, the edit's content is held for oversight.
fn a_withdrawn_edit_is_held_too(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now() - Duration::hours(1);
    let msgs = messages(1, t);
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs.clone())).unwrap();
    let mut edited = snapshot(ROOM, Vec::new());
    edited.edits =
        vec![edit("$aveu", &msgs[0], "C'est moi qui ai ouvert la porte", t + Duration::minutes(1))];
    s.record_ingestion(&run(&v, Restricted), &edited).unwrap();
    let mut withdraw = snapshot(ROOM, Vec::new());
    withdraw.redactions = vec![redaction(&"$aveu".parse().unwrap(), msgs[0].sender.as_str())];
    s.record_ingestion(&run(&v, Restricted), &withdraw).unwrap();

    let plain = read(s, &v);
    assert_eq!(plain[0].message.body, msgs[0].body);
    assert!(plain[0].message.versions[1].body.is_none());
    assert_eq!(plain[0].held, None);

    let sealed = read(s, &oversight("org-a", Secret));
    assert_eq!(sealed[0].message, plain[0].message);
    let held = sealed[0].held.as_ref().expect("the withdrawn edit is held");
    assert_eq!(
        (held.body.as_deref(), held.media.as_ref()),
        (None, None),
        "the message itself was not redacted"
    );
    assert_eq!(
        held.versions,
        [HeldVersion {
            event_id: "$aveu".parse().unwrap(),
            msgtype: Some("m.text".to_owned()),
            body: Some("C'est moi qui ai ouvert la porte".to_owned()),
        }]
    );
    assert_eq!(search(s, &oversight("org-a", Secret), "porte"), 0);
}

/// A message the homeserver served already redacted (redacted before the archive read it), or
/// redacted within the same read, has nothing held: the server had purged it.
fn content_redacted_before_capture_has_nothing_to_hold(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut msgs = messages(2, now() - Duration::hours(1));
    for m in &mut msgs {
        m.redact(Some(Redaction { redacted_by: m.sender.clone(), redacted_at: now(), reason: None }));
    }
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs.clone())).unwrap();
    let mut again = snapshot(ROOM, Vec::new());
    again.redactions = vec![redaction(&msgs[0].event_id, msgs[0].sender.as_str())];
    s.record_ingestion(&run(&v, Restricted), &again).unwrap();
    let sealed = read(s, &oversight("org-a", Secret));
    assert_eq!(sealed.len(), 2);
    assert!(sealed.iter().all(|m| m.message.redacted && m.held.is_none()));
}

/// `keep_redacted = false`: a redaction after capture purges the content as before the hold,
/// for every reader, and keeps none of it in the database.
fn with_the_hold_off_a_redaction_purges_the_content(db: &TestDb) {
    let options = StoreOptions { keep_redacted: false, ..StoreOptions::default() };
    let s = Store::open_with(&db.url, options).unwrap();
    let v = viewer("org-a", Secret);
    stored_then_redacted(&s, &v);
    let sealed = read(&s, &oversight("org-a", Secret));
    assert!(sealed[0].message.redacted && sealed[1].message.redacted);
    assert!(sealed.iter().all(|m| m.held.is_none()));
    // Nothing of it is left in any column: the bodies, versions and attachment are gone.
    let left = db.count(
        "SELECT COUNT(*) AS n FROM messages WHERE body LIKE '%hangar%' OR body = 'plan.png' \
         OR media LIKE '%plan%'",
    ) + db.count("SELECT COUNT(*) AS n FROM message_versions WHERE body IS NOT NULL")
        + db.count("SELECT COUNT(*) AS n FROM messages WHERE held_body IS NOT NULL OR held_media IS NOT NULL")
        + db.count(
            "SELECT COUNT(*) AS n FROM message_versions WHERE held_body IS NOT NULL OR held_msgtype IS NOT NULL",
        );
    assert_eq!(left, 0);
}
