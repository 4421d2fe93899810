//! Evidence rules of the store suite, on every backend: edits and redactions of stored messages,
//! forged ones refused and counted, every version kept, withdrawn edits, one homeserver per room.

use argus_domain::{
    Classification::*, EventId, MessageEdit, MessageRedaction, MessageVersion, PageRequest, Redaction, UserId,
};
use time::Duration;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer},
};

backend_suite!(
    edits_and_redactions_apply_to_stored_messages,
    forged_edits_and_unconfirmed_redactions_are_ignored_and_versions_kept,
    evidence_changes_only_from_the_rooms_own_homeserver,
    a_withdrawn_edit_leaves_the_message_and_its_versions,
    reads_return_the_original_and_the_newest_versions,
);

fn edits_and_redactions_apply_to_stored_messages(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    let mut msgs = messages(3, t - Duration::hours(1));
    msgs[2].media = Some(argus_domain::MediaRef {
        uri: Some("mxc://x.org/abc".to_owned()),
        mimetype: Some("image/png".to_owned()),
        size: Some(1234),
        ..Default::default()
    });
    msgs[2].msgtype = Some("m.image".to_owned());
    s.record_ingestion(&run(&v, Restricted), &snapshot("!e:x.org", msgs.clone())).unwrap();
    let stored = s.messages(&v, &rid("!e:x.org"), &PageRequest::first(10)).unwrap();
    assert_eq!(stored.items[2].message.media, msgs[2].media);

    let edit = |body: &str, minutes: i64| MessageEdit {
        event_id: format!("$edit-{body}").parse().unwrap(),
        sender: msgs[0].sender.clone(),
        target: msgs[0].event_id.clone(),
        msgtype: Some("m.notice".to_owned()),
        body: Some(body.to_owned()),
        edited_at: t - Duration::minutes(minutes),
    };
    let mut snap = snapshot("!e:x.org", Vec::new());
    // The later edit wins whatever the order it arrives in.
    snap.edits = vec![edit("second", 10), edit("first", 20)];
    snap.redactions = vec![redaction(&msgs[2].event_id, msgs[2].sender.as_str(), false)];
    s.record_ingestion(&run(&v, Restricted), &snap).unwrap();
    // An older edit arriving later changes nothing.
    let mut late = snapshot("!e:x.org", Vec::new());
    late.edits = vec![edit("stale", 30)];
    s.record_ingestion(&run(&v, Restricted), &late).unwrap();

    let page = s.messages(&v, &rid("!e:x.org"), &PageRequest::first(10)).unwrap();
    let m0 = &page.items[0].message;
    assert_eq!(m0.body.as_deref(), Some("second"));
    assert_eq!(m0.msgtype.as_deref(), Some("m.notice"));
    assert!(m0.edited);
    let m2 = &page.items[2].message;
    assert!(m2.redacted);
    assert_eq!(m2.body, None);
    assert_eq!(m2.media, None);
    assert_eq!(page.items[1].message, msgs[1]);
}

/// A redaction of `target` sent by `by`, as the connector hands it over.
fn redaction(target: &EventId, by: &str, confirmed: bool) -> MessageRedaction {
    MessageRedaction {
        target: target.clone(),
        redaction: Redaction {
            redacted_by: by.parse().unwrap(),
            redacted_at: now(),
            reason: Some("posted in the wrong room".to_owned()),
        },
        confirmed,
    }
}

/// Evidence integrity: an edit of a stored message by anyone but its sender, and a redaction
/// neither confirmed by the homeserver nor made by the sender, change nothing and are counted;
/// every applied version is kept, never twice; a redaction keeps who, when and why.
fn forged_edits_and_unconfirmed_redactions_are_ignored_and_versions_kept(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now() - Duration::hours(1);
    let msgs = messages(3, t);
    let owner = msgs[0].sender.clone();
    let room = "!ev:x.org";
    s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs.clone())).unwrap();

    let edit = |id: &str, by: &UserId, target: &EventId, body: &str, minutes: i64| MessageEdit {
        event_id: id.parse().unwrap(),
        sender: by.clone(),
        target: target.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
        edited_at: t + Duration::minutes(minutes),
    };
    let mallory: UserId = "@mallory:agent.tchap.gouv.fr".parse().unwrap();
    let mut later = snapshot(room, Vec::new());
    later.edits = vec![
        edit("$own1", &owner, &msgs[0].event_id, "rendez-vous 11h", 1),
        // A later edit by another member: must not win.
        edit("$forged", &mallory, &msgs[0].event_id, "rendez-vous annulé", 2),
        edit("$forged2", &mallory, &msgs[1].event_id, "faux", 3),
    ];
    later.redactions = vec![
        redaction(&msgs[1].event_id, mallory.as_str(), false),
        redaction(&msgs[2].event_id, "@moderator:agent.tchap.gouv.fr", true),
    ];
    let r = s.record_ingestion(&run(&v, Restricted), &later).unwrap();
    assert_eq!((r.counts.edits_applied, r.counts.edits_ignored, r.counts.redactions_ignored), (1, 2, 1));
    // The same again: nothing applied twice, no version duplicated.
    let again = s.record_ingestion(&run(&v, Restricted), &later).unwrap();
    assert_eq!(again.counts.edits_ignored, 2);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM message_versions"), 2);

    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    let [m0, m1, m2] = [0, 1, 2].map(|i| &page.items[i].message);
    assert_eq!(m0.body.as_deref(), Some("rendez-vous 11h"));
    assert!(m0.edited);
    let versions: Vec<_> =
        m0.versions.iter().map(|v| (v.event_id.as_str(), v.sender.as_str(), v.body.as_deref())).collect();
    assert_eq!(
        versions,
        [
            (msgs[0].event_id.as_str(), owner.as_str(), msgs[0].body.as_deref()),
            ("$own1", owner.as_str(), Some("rendez-vous 11h")),
        ]
    );
    assert_eq!(m1, &msgs[1], "a forged edit or an unconfirmed redaction changed a message");
    assert!(m2.redacted && m2.body.is_none());
    let by = m2.redaction.as_ref().expect("who redacted is kept");
    assert_eq!(by.redacted_by.as_str(), "@moderator:agent.tchap.gouv.fr");
    assert_eq!(by.reason.as_deref(), Some("posted in the wrong room"));

    // An edit reusing the event id of a version of another message takes nothing over.
    let mut reused = snapshot(room, Vec::new());
    reused.edits = vec![edit("$own1", &owner, &msgs[1].event_id, "détourné", 4)];
    let r = s.record_ingestion(&run(&v, Restricted), &reused).unwrap();
    assert_eq!((r.counts.edits_applied, r.counts.edits_ignored), (0, 1));
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM message_versions"), 2, "no version row left behind");
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    assert_eq!(&page.items[1].message, &msgs[1]);

    // The same within one fetch, for a message new in it: it shows its original.
    let mut fresh = message("$fresh", t + Duration::minutes(6));
    let original_body = fresh.body.clone();
    fresh.versions = vec![
        MessageVersion {
            event_id: fresh.event_id.clone(),
            sender: owner.clone(),
            sent_at: fresh.sent_at,
            msgtype: fresh.msgtype.clone(),
            body: original_body.clone(),
        },
        MessageVersion {
            event_id: "$own1".parse().unwrap(),
            sender: owner.clone(),
            sent_at: t + Duration::minutes(7),
            msgtype: Some("m.text".to_owned()),
            body: Some("détourné".to_owned()),
        },
    ];
    fresh.body = Some("détourné".to_owned());
    fresh.edited = true;
    let r = s.record_ingestion(&run(&v, Restricted), &snapshot(room, vec![fresh])).unwrap();
    assert_eq!(r.counts.edits_ignored, 1);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    let stored = page.items.iter().find(|m| m.message.event_id.as_str() == "$fresh").unwrap();
    assert_eq!(stored.message.body, original_body);

    // An edit within one fetch by someone else, handed over by a caller other than the
    // connector, is held to the same rule.
    let mut forged_in_range = msgs[1].clone();
    forged_in_range.versions = vec![
        MessageVersion {
            event_id: msgs[1].event_id.clone(),
            sender: owner.clone(),
            sent_at: msgs[1].sent_at,
            msgtype: msgs[1].msgtype.clone(),
            body: msgs[1].body.clone(),
        },
        MessageVersion {
            event_id: "$forged3".parse().unwrap(),
            sender: mallory.clone(),
            sent_at: t + Duration::minutes(5),
            msgtype: Some("m.text".to_owned()),
            body: Some("faux".to_owned()),
        },
    ];
    let r = s.record_ingestion(&run(&v, Restricted), &snapshot(room, vec![forged_in_range])).unwrap();
    assert_eq!(r.counts.edits_ignored, 1);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    assert_eq!(&page.items[1].message, &msgs[1]);

    // Redacting an edited message purges every version's body but keeps the versions' events.
    let mut purge = snapshot(room, Vec::new());
    let mut with_nul = redaction(&msgs[0].event_id, owner.as_str(), false);
    // A reason with NUL (which PostgreSQL refuses in text) is kept, made safe.
    with_nul.redaction.reason = Some("a\0b".to_owned());
    purge.redactions = vec![with_nul];
    s.record_ingestion(&run(&v, Restricted), &purge).unwrap();
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    let m0 = &page.items[0].message;
    assert!(m0.redacted && m0.body.is_none());
    assert_eq!(m0.versions.len(), 2);
    assert!(m0.versions.iter().all(|v| v.body.is_none()));
    assert_eq!(m0.redaction.as_ref().and_then(|r| r.reason.as_deref()), Some("a\u{fffd}b"));
    // Another organisation sees none of it.
    let other = s.messages(&viewer("org-b", TopSecret), &rid(room), &PageRequest::first(10)).unwrap();
    assert!(other.items.is_empty());
}

/// Edits and redactions of stored messages are taken only from the homeserver the room was
/// stored from: another server answering for the same room id is refused whole
/// (`homeservers.rs`), so it cannot rewrite or purge them, nor take over the room's source.
fn evidence_changes_only_from_the_rooms_own_homeserver(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let room = "!src:x.org";
    let msgs = messages(2, now() - Duration::hours(1));
    s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs.clone())).unwrap();
    let mut foreign = snapshot(room, Vec::new());
    foreign.homeserver_url = "https://rogue.example.org".parse().unwrap();
    foreign.resume_token = Some("rogue-token".to_owned());
    foreign.edits = vec![MessageEdit {
        event_id: "$rogue-edit".parse().unwrap(),
        sender: msgs[0].sender.clone(),
        target: msgs[0].event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("réécrit".to_owned()),
        edited_at: now(),
    }];
    foreign.redactions = vec![redaction(&msgs[1].event_id, "@admin:rogue.example.org", true)];
    for _ in 0..2 {
        let refused = s.record_ingestion(&run(&v, Restricted), &foreign).unwrap_err();
        assert!(matches!(refused, argus_store::Error::HomeserverMismatch), "{refused:?}");
    }
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    assert_eq!(page.items[0].message, msgs[0]);
    assert_eq!(page.items[1].message, msgs[1]);
    let stored = s.room(&v, &rid(room)).unwrap().unwrap();
    assert_eq!(stored.homeserver_url.as_str(), "https://matrix.agent.tchap.gouv.fr");
    assert_eq!(stored.resume_token.as_deref(), Some("t42-7_0_0"));
}

/// An edit stored by an earlier run and then redacted (withdrawn) loses its content, and the
/// message falls back to the version before it; a redaction of it by someone else changes
/// nothing.
fn a_withdrawn_edit_leaves_the_message_and_its_versions(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let room = "!wd:x.org";
    let t = now() - Duration::hours(1);
    let msgs = messages(1, t);
    let owner = msgs[0].sender.clone();
    s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs.clone())).unwrap();
    let mut edit = snapshot(room, Vec::new());
    edit.edits = vec![MessageEdit {
        event_id: "$regret".parse().unwrap(),
        sender: owner.clone(),
        target: msgs[0].event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("à retirer".to_owned()),
        edited_at: t + Duration::minutes(1),
    }];
    s.record_ingestion(&run(&v, Restricted), &edit).unwrap();
    let edit_id: EventId = "$regret".parse().unwrap();
    // Someone else's unconfirmed redaction of the edit: ignored.
    let mut other = snapshot(room, Vec::new());
    other.redactions = vec![redaction(&edit_id, "@mallory:agent.tchap.gouv.fr", false)];
    assert_eq!(s.record_ingestion(&run(&v, Restricted), &other).unwrap().counts.redactions_ignored, 1);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    assert_eq!(page.items[0].message.body.as_deref(), Some("à retirer"));
    // Its sender withdraws it.
    let mut withdraw = snapshot(room, Vec::new());
    withdraw.redactions = vec![redaction(&edit_id, owner.as_str(), false)];
    assert_eq!(s.record_ingestion(&run(&v, Restricted), &withdraw).unwrap().counts.redactions_ignored, 0);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    let m = &page.items[0].message;
    assert_eq!(m.body, msgs[0].body, "back to the original");
    assert!(!m.redacted);
    assert_eq!(m.versions.len(), 2);
    assert_eq!(m.versions[1].event_id, edit_id);
    assert!(m.versions[1].body.is_none(), "the withdrawn edit's content is gone");
}

/// Every version is kept, but a read returns at most the original and the newest 99.
fn reads_return_the_original_and_the_newest_versions(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let room = "!many:x.org";
    let t = now() - Duration::hours(3);
    let msgs = messages(1, t);
    s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs.clone())).unwrap();
    let mut edits = snapshot(room, Vec::new());
    edits.edits = (0..150)
        .map(|i| MessageEdit {
            event_id: format!("$e{i}").parse().unwrap(),
            sender: msgs[0].sender.clone(),
            target: msgs[0].event_id.clone(),
            msgtype: Some("m.text".to_owned()),
            body: Some(format!("version {i}")),
            edited_at: t + Duration::seconds(i + 1),
        })
        .collect();
    s.record_ingestion(&run(&v, Restricted), &edits).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM message_versions"), 151);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    let versions = &page.items[0].message.versions;
    assert_eq!(versions.len() as i64, argus_store::MAX_VERSIONS_READ);
    assert_eq!(versions[0].event_id, msgs[0].event_id, "the original first");
    assert_eq!(versions[1].body.as_deref(), Some("version 51"));
    assert_eq!(versions.last().and_then(|v| v.body.as_deref()), Some("version 149"));
    assert_eq!(page.items[0].message.body.as_deref(), Some("version 149"));
}
