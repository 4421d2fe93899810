//! The store test suite, written once and run on every backend.

use std::collections::HashSet;

use argus_domain::{
    Classification::{self, *},
    EventId, IngestionOutcome, MessageEdit, MessageRedaction, MessageVersion, NewIngestion, PageRequest,
    Redaction, RoomId, UserId, to_unix_ms,
};
use argus_store::{Error, IngestionCursor, MessageCursor, RoomCursor};
use time::Duration;

use crate::support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer};

backend_suite!(
    gated_reads_withheld_is_absent,
    rooms_keyset_pagination,
    messages_keyset_pagination,
    reingestion_is_idempotent,
    classification_never_lowered,
    lower_clearance_cannot_ingest_into_withheld_room,
    edits_and_redactions_apply_to_stored_messages,
    forged_edits_and_unconfirmed_redactions_are_ignored_and_versions_kept,
    audit_records_are_filed_at_the_effective_level,
    evidence_changes_only_from_the_rooms_own_homeserver,
    a_withdrawn_edit_leaves_the_message_and_its_versions,
    reads_return_the_original_and_the_newest_versions,
    stats_over_visible_set,
    forged_cursors_are_harmless,
    ingestion_history_is_gated,
    outbox_lifecycle,
    failed_ingestion_writes_nothing,
    bad_input_is_rejected_whole,
    large_ingestion_spans_statements,
    concurrent_ingestions_keep_one_chain,
    busy_database_is_a_clean_retryable_error,
    corrupt_stored_rows_are_typed_errors,
    store_is_shareable,
    pages_and_counts_come_from_one_snapshot,
);

fn rid(s: &str) -> RoomId {
    s.parse().unwrap()
}

fn gated_reads_withheld_is_absent(db: &TestDb) {
    let s = &db.store;
    let top_a = viewer("org-a", TopSecret);
    let top_b = viewer("org-b", TopSecret);
    let t = now();
    s.record_ingestion(&run(&top_a, Restricted), &snapshot("!low:x.org", messages(3, t))).unwrap();
    s.record_ingestion(&run(&top_a, Secret), &snapshot("!high:x.org", messages(2, t))).unwrap();
    // The same Matrix room in another organisation is another copy.
    s.record_ingestion(&run(&top_b, Unclassified), &snapshot("!low:x.org", messages(5, t))).unwrap();

    let a_restricted = viewer("org-a", Restricted);
    let page = s.rooms(&a_restricted, &PageRequest::first(50)).unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].room_id.as_str(), "!low:x.org");
    assert_eq!(page.items[0].message_count, 3);
    assert_eq!(page.items[0].org.as_str(), "org-a");

    // Withheld and absent give the same answer, for lookups and for messages.
    assert_eq!(s.room(&a_restricted, &rid("!high:x.org")).unwrap(), None);
    assert_eq!(s.room(&a_restricted, &rid("!nothing:x.org")).unwrap(), None);
    let withheld = s.messages(&a_restricted, &rid("!high:x.org"), &PageRequest::first(10)).unwrap();
    let absent = s.messages(&a_restricted, &rid("!nothing:x.org"), &PageRequest::first(10)).unwrap();
    assert_eq!(withheld, absent);
    assert_eq!(withheld.total_count, 0);

    // Another organisation's viewer sees its own copy only, whatever its clearance.
    let b = s.rooms(&top_b, &PageRequest::first(50)).unwrap();
    assert_eq!(b.total_count, 1);
    assert_eq!(b.items[0].message_count, 5);
    assert_eq!(s.room(&viewer("org-c", TopSecret), &rid("!low:x.org")).unwrap(), None);

    let a_secret = viewer("org-a", Secret);
    assert_eq!(s.rooms(&a_secret, &PageRequest::first(50)).unwrap().total_count, 2);
    let high = s.room(&a_secret, &rid("!high:x.org")).unwrap().unwrap();
    assert_eq!(high.classification, Secret);
    assert_eq!(high.message_count, 2);
    let msgs = s.messages(&a_secret, &rid("!high:x.org"), &PageRequest::first(10)).unwrap();
    assert_eq!(msgs.total_count, 2);
    assert!(msgs.items.iter().all(|m| m.classification == Secret && m.room_id.as_str() == "!high:x.org"));
}

fn rooms_keyset_pagination(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", TopSecret);
    let t = now();
    // Two rooms share their newest message time; two have no messages at all.
    let plan: [(&str, Option<i64>); 7] = [
        ("!r1:x.org", Some(10)),
        ("!r2:x.org", Some(50)),
        ("!r3:x.org", Some(50)),
        ("!r4:x.org", None),
        ("!r5:x.org", Some(5)),
        ("!r6:x.org", None),
        ("!r7:x.org", Some(70)),
    ];
    for (room, minutes_ago) in plan {
        let msgs = minutes_ago.map(|m| messages(2, t - Duration::minutes(m))).unwrap_or_default();
        s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs)).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.rooms(&v, &PageRequest { first: 3, after }).unwrap();
        assert_eq!(page.total_count, 7);
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().cloned());
        if !page.has_next_page {
            break;
        }
        after = Some(RoomCursor::of(page.items.last().unwrap()));
    }
    assert_eq!(seen.len(), 7);
    let ids: HashSet<i64> = seen.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 7);
    // Most recent activity first; ties by id, newest first; rooms without messages last.
    for w in seen.windows(2) {
        let ka = w[0].last_activity_at.map(to_unix_ms).unwrap_or(i64::MIN);
        let kb = w[1].last_activity_at.map(to_unix_ms).unwrap_or(i64::MIN);
        assert!(ka > kb || (ka == kb && w[0].id > w[1].id), "order broken at {w:?}");
    }
    assert_eq!(seen[0].room_id.as_str(), "!r5:x.org");
    assert!(seen[5].last_activity_at.is_none() && seen[6].last_activity_at.is_none());
}

fn messages_keyset_pagination(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    // Several messages share a timestamp: the id breaks ties.
    let mut msgs = Vec::new();
    for i in 0..23 {
        msgs.push(message(&format!("$page{i}"), t - Duration::seconds(i64::from(i / 3))));
    }
    s.record_ingestion(&run(&v, Confidential), &snapshot("!p:x.org", msgs)).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.messages(&v, &rid("!p:x.org"), &PageRequest { first: 4, after }).unwrap();
        assert_eq!(page.total_count, 23);
        seen.extend(page.items.iter().cloned());
        if !page.has_next_page {
            break;
        }
        after = Some(MessageCursor::of(page.items.last().unwrap()));
    }
    assert_eq!(seen.len(), 23);
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!((a.message.sent_at, a.id) < (b.message.sent_at, b.id));
    }
    let empty = s.messages(&v, &rid("!p:x.org"), &PageRequest::first(0)).unwrap();
    assert!(empty.items.is_empty() && empty.has_next_page);
}

fn reingestion_is_idempotent(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let first = messages(10, now());
    let r1 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", first.clone())).unwrap();
    assert_eq!(r1.messages_stored, 10);
    assert_eq!(r1.room.message_count, 10);
    let first_seen = r1.room.first_seen_at;
    let r2 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", first.clone())).unwrap();
    assert_eq!(r2.messages_stored, 0);
    assert_eq!(r2.room.message_count, 10);
    assert_eq!(r2.room.first_seen_at, first_seen);
    assert_eq!(r2.ingestion.entry.message_count, 0);
    let mut more = first.clone();
    more.extend(messages(2, now()));
    let r3 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", more)).unwrap();
    assert_eq!(r3.messages_stored, 2);
    assert_eq!(r3.room.message_count, 12);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages"), 12);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM rooms"), 1);
    assert_eq!(r3.ingestion.seq, 3);
}

fn classification_never_lowered(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", TopSecret);
    let msgs = messages(4, now());
    s.record_ingestion(&run(&v, Restricted), &snapshot("!c:x.org", msgs[..2].to_vec())).unwrap();
    // Re-fetched at a higher level: the room and the re-fetched messages go up.
    let up = s.record_ingestion(&run(&v, Secret), &snapshot("!c:x.org", msgs[1..3].to_vec())).unwrap();
    assert_eq!(up.room.classification, Secret);
    // Re-ingested at a lower level: nothing goes down, and the audit keeps what was asked.
    let down = s.record_ingestion(&run(&v, Restricted), &snapshot("!c:x.org", msgs[2..].to_vec())).unwrap();
    assert_eq!(down.room.classification, Secret);
    // The audit record is filed at the room's effective level, not the one asked for.
    assert_eq!(down.ingestion.entry.classification, Secret);
    let page = s.messages(&v, &rid("!c:x.org"), &PageRequest::first(10)).unwrap();
    let levels: Vec<Classification> = page.items.iter().map(|m| m.classification).collect();
    assert_eq!(levels, vec![Restricted, Secret, Secret, Secret]);
    // A RESTRICTED viewer no longer sees the room at all.
    assert_eq!(s.room(&viewer("org-a", Restricted), &rid("!c:x.org")).unwrap(), None);
    // A CONFIDENTIAL viewer neither; a SECRET viewer sees all four.
    let secret = s.room(&viewer("org-a", Secret), &rid("!c:x.org")).unwrap().unwrap();
    assert_eq!(secret.message_count, 4);
}

fn lower_clearance_cannot_ingest_into_withheld_room(db: &TestDb) {
    let s = &db.store;
    s.record_ingestion(&run(&viewer("org-a", Secret), Secret), &snapshot("!w:x.org", messages(1, now())))
        .unwrap();
    let low = viewer("org-a", Restricted);
    let err =
        s.record_ingestion(&run(&low, Restricted), &snapshot("!w:x.org", messages(3, now()))).unwrap_err();
    assert!(matches!(err, Error::Withheld), "{err:?}");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages"), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM ingestions"), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM outbox"), 1);
}

fn edits_and_redactions_apply_to_stored_messages(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    let mut msgs = messages(3, t - Duration::hours(1));
    msgs[2].media = Some(argus_domain::MediaRef {
        uri: Some("mxc://x.org/abc".to_owned()),
        mimetype: Some("image/png".to_owned()),
        size: Some(1234),
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
    assert_eq!((r.edits_applied, r.edits_ignored, r.redactions_ignored), (1, 2, 1));
    // The same again: nothing applied twice, no version duplicated.
    let again = s.record_ingestion(&run(&v, Restricted), &later).unwrap();
    assert_eq!(again.edits_ignored, 2);
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
    assert_eq!((r.edits_applied, r.edits_ignored), (0, 1));
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
    assert_eq!(r.edits_ignored, 1);
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
    assert_eq!(r.edits_ignored, 1);
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

/// Re-ingesting (or failing to ingest) a SECRET room "at UNCLASSIFIED" files its audit record
/// at SECRET: an UNCLASSIFIED auditor never learns the room's id.
fn audit_records_are_filed_at_the_effective_level(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    let room = "!secret:x.org";
    s.record_ingestion(&run(&top, Secret), &snapshot(room, messages(2, now()))).unwrap();
    let again = s.record_ingestion(&run(&top, Unclassified), &snapshot(room, messages(1, now()))).unwrap();
    assert_eq!(again.ingestion.entry.classification, Secret);
    let mut failed = failure("org-a", Unclassified);
    failed.room_id = room.to_owned();
    assert_eq!(s.record_failure(&failed).unwrap().entry.classification, Secret);
    // A room of another organisation or an unknown one does not raise anything.
    let mut elsewhere = failure("org-b", Unclassified);
    elsewhere.room_id = room.to_owned();
    assert_eq!(s.record_failure(&elsewhere).unwrap().entry.classification, Unclassified);

    let low = s.ingestions(&viewer("org-a", Unclassified), &PageRequest::first(10)).unwrap();
    assert_eq!(low.total_count, 0, "{:?}", low.items);
    let all = s.ingestions(&top, &PageRequest::first(10)).unwrap();
    assert!(all.items.iter().all(|r| r.entry.classification == Secret), "{:?}", all.items);
    assert!(s.audit_verify(&s.audit_heads().unwrap()).unwrap().iter().all(|c| c.is_ok()));
}

/// Edits and redactions of stored messages are taken only from the homeserver the room was
/// stored from: another server answering for the same room id cannot rewrite or purge them,
/// nor take over the room's source.
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
        let r = s.record_ingestion(&run(&v, Restricted), &foreign).unwrap();
        assert_eq!((r.edits_applied, r.edits_ignored, r.redactions_ignored), (0, 1, 1));
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
    assert_eq!(s.record_ingestion(&run(&v, Restricted), &other).unwrap().redactions_ignored, 1);
    let page = s.messages(&v, &rid(room), &PageRequest::first(10)).unwrap();
    assert_eq!(page.items[0].message.body.as_deref(), Some("à retirer"));
    // Its sender withdraws it.
    let mut withdraw = snapshot(room, Vec::new());
    withdraw.redactions = vec![redaction(&edit_id, owner.as_str(), false)];
    assert_eq!(s.record_ingestion(&run(&v, Restricted), &withdraw).unwrap().redactions_ignored, 0);
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

fn stats_over_visible_set(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    let t = now();
    s.record_ingestion(
        &run(&top, Restricted),
        &snapshot("!fresh:x.org", messages(3, t - Duration::hours(1))),
    )
    .unwrap();
    s.record_ingestion(&run(&top, Restricted), &snapshot("!old:x.org", messages(4, t - Duration::hours(30))))
        .unwrap();
    s.record_ingestion(&run(&top, Restricted), &snapshot("!empty:x.org", Vec::new())).unwrap();
    s.record_ingestion(&run(&top, Secret), &snapshot("!secret:x.org", messages(5, t))).unwrap();
    s.record_ingestion(
        &run(&viewer("org-b", TopSecret), Unclassified),
        &snapshot("!b:x.org", messages(9, t)),
    )
    .unwrap();

    let st = s.stats(&viewer("org-a", Restricted), t).unwrap();
    assert_eq!((st.total_rooms, st.total_messages, st.active_rooms_last_24h), (3, 7, 1));
    let st = s.stats(&top, t).unwrap();
    assert_eq!((st.total_rooms, st.total_messages, st.active_rooms_last_24h), (4, 12, 2));
    let st = s.stats(&viewer("org-a", Restricted), t + Duration::hours(24)).unwrap();
    assert_eq!(st.active_rooms_last_24h, 0);
    let st = s.stats(&viewer("org-z", TopSecret), t).unwrap();
    assert_eq!((st.total_rooms, st.total_messages, st.active_rooms_last_24h), (0, 0, 0));
}

fn forged_cursors_are_harmless(db: &TestDb) {
    let s = &db.store;
    let t = now();
    s.record_ingestion(&run(&viewer("org-a", TopSecret), Restricted), &snapshot("!a:x.org", messages(3, t)))
        .unwrap();
    s.record_ingestion(&run(&viewer("org-b", TopSecret), Restricted), &snapshot("!b:x.org", messages(3, t)))
        .unwrap();
    s.record_ingestion(&run(&viewer("org-a", TopSecret), TopSecret), &snapshot("!ts:x.org", messages(3, t)))
        .unwrap();
    let v = viewer("org-a", Restricted);
    for cursor in [
        RoomCursor { last_activity_ms: Some(i64::MAX), id: i64::MAX },
        RoomCursor { last_activity_ms: Some(i64::MIN), id: i64::MIN },
        RoomCursor { last_activity_ms: None, id: i64::MAX },
        RoomCursor { last_activity_ms: Some(-1), id: 0 },
    ] {
        let page = s.rooms(&v, &PageRequest { first: 100, after: Some(cursor) }).unwrap();
        assert_eq!(page.total_count, 1);
        assert!(page.items.iter().all(|r| r.org.as_str() == "org-a" && r.classification <= Restricted));
    }
    for cursor in [
        MessageCursor { sent_at_ms: i64::MIN, id: i64::MIN },
        MessageCursor { sent_at_ms: i64::MAX, id: 0 },
        MessageCursor { sent_at_ms: 0, id: -5 },
    ] {
        for room in ["!a:x.org", "!b:x.org", "!ts:x.org"] {
            let page = s.messages(&v, &rid(room), &PageRequest { first: 100, after: Some(cursor) }).unwrap();
            assert!(page.items.iter().all(|m| m.room_id.as_str() == "!a:x.org"));
            assert!(page.items.iter().all(|m| m.classification <= Restricted));
        }
    }
    for seq in [i64::MIN, 0, 1, i64::MAX] {
        let page =
            s.ingestions(&v, &PageRequest { first: 100, after: Some(IngestionCursor { seq }) }).unwrap();
        assert!(
            page.items
                .iter()
                .all(|r| r.entry.org.as_str() == "org-a" && r.entry.classification <= Restricted)
        );
    }
    // An absurd page size is clamped, not obeyed.
    let page = s.rooms(&v, &PageRequest::first(u32::MAX)).unwrap();
    assert_eq!(page.items.len(), 1);
}

fn failure(org: &str, classification: Classification) -> NewIngestion {
    NewIngestion {
        actor: "bob".parse().unwrap(),
        org: org.parse().unwrap(),
        room_id: "!bad room\u{0}:x.org".to_owned(),
        homeserver_url: "https://127.0.0.1".to_owned(),
        message_count: 0,
        classification,
        started_at: now(),
        finished_at: None,
        outcome: IngestionOutcome::Failed,
        error: Some("refused: blocked address".to_owned()),
        post: None,
        scheduled: false,
    }
}

fn ingestion_history_is_gated(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    s.record_ingestion(&run(&top, Restricted), &snapshot("!h:x.org", messages(2, now()))).unwrap();
    let f = s.record_failure(&failure("org-a", Secret)).unwrap();
    assert_eq!(f.entry.outcome, IngestionOutcome::Failed);
    assert_eq!(f.entry.room_id, "!bad room\u{fffd}:x.org");
    assert!(f.entry.finished_at.is_some());
    s.record_failure(&failure("org-a", Unclassified)).unwrap();
    s.record_failure(&failure("org-b", Unclassified)).unwrap();

    let all = s.ingestions(&top, &PageRequest::first(10)).unwrap();
    assert_eq!(all.total_count, 3);
    assert_eq!(all.items.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert_eq!(all.items[2].entry.outcome, IngestionOutcome::Succeeded);
    assert_eq!(all.items[2].entry.message_count, 2);

    let low = s.ingestions(&viewer("org-a", Restricted), &PageRequest::first(1)).unwrap();
    assert_eq!(low.total_count, 2);
    assert_eq!(low.items.len(), 1);
    assert!(low.has_next_page);
    let next = s
        .ingestions(
            &viewer("org-a", Restricted),
            &PageRequest { first: 5, after: Some(IngestionCursor::of(&low.items[0])) },
        )
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert!(!next.has_next_page);
    assert_eq!(next.items[0].seq, 1);
    let b = s.ingestions(&viewer("org-b", TopSecret), &PageRequest::first(10)).unwrap();
    assert_eq!(b.total_count, 1);
    assert_eq!(b.items[0].seq, 1);
    assert!(s.audit_verify(&s.audit_heads().unwrap()).unwrap().iter().all(|c| c.is_ok()));
}

fn outbox_lifecycle(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    let t = now();
    s.record_ingestion(&run(&top, Secret), &snapshot("!o:x.org", messages(3, t))).unwrap();
    // A lower-cleared ingestion of a room sees fewer messages; the payload counts them all.
    let low = viewer("org-a", Restricted);
    let r = s.record_ingestion(&run(&low, Restricted), &snapshot("!o2:x.org", messages(2, t))).unwrap();
    assert_eq!(r.room.message_count, 2);
    s.record_failure(&failure("org-a", Restricted)).unwrap();
    let pending = s.outbox_pending(10).unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending[0].id < pending[1].id);
    assert_eq!(pending[0].payload.message_count, 3);
    assert_eq!(pending[0].payload.classification, Secret);
    assert_eq!(pending[0].version, 1);
    assert_eq!(pending[1].version, 2);
    assert_eq!(pending[1].room_id.as_str(), "!o2:x.org");
    assert_eq!(s.outbox_pending(1).unwrap().len(), 1);
    let gauges = s.outbox_gauges().unwrap();
    assert_eq!((gauges.pending, gauges.parked), (2, 0));
    assert_eq!(gauges.oldest_pending, Some(pending[0].created_at));

    assert_eq!(s.outbox_mark_delivered_batch(&[pending[0].id]).unwrap(), 1);
    assert!(!s.outbox_mark_failed(pending[1].id, "webhook answered 503", 2).unwrap());
    assert!(s.outbox_mark_failed(pending[1].id, "webhook answered 503\nagain", 2).unwrap());
    let gauges = s.outbox_gauges().unwrap();
    assert_eq!((gauges.pending, gauges.parked, gauges.oldest_pending), (0, 1, None));
    let status = s.outbox_status().unwrap();
    assert_eq!((status.pending, status.delivered, status.parked), (0, 1, 1));
    assert_eq!(status.parked_rows.len(), 1);
    assert_eq!(status.parked_rows[0].attempts, 2);
    assert_eq!(status.parked_rows[0].last_error.as_deref(), Some("webhook answered 503\u{fffd}again"));
    assert!(s.outbox_pending(10).unwrap().is_empty());
    assert_eq!(s.outbox_mark_delivered_batch(&[999_999]).unwrap(), 0);
    // Batches mark only rows not yet delivered.
    for i in 0..3 {
        s.record_ingestion(&run(&top, Secret), &snapshot(&format!("!ob{i}:x.org"), messages(1, t))).unwrap();
    }
    let ids: Vec<i64> = s.outbox_pending(10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3);
    let mut with_old = ids.clone();
    with_old.push(pending[0].id);
    assert_eq!(s.outbox_mark_delivered_batch(&with_old).unwrap(), 3);
    assert_eq!(s.outbox_mark_delivered_batch(&[]).unwrap(), 0);
    assert_eq!(s.outbox_status().unwrap().delivered, 4);
}

/// Installs a trigger that makes the insert of one message fail inside the transaction.
fn poison(db: &TestDb, event_id: &str) {
    let mut raw = db.raw();
    if db.is_postgres() {
        raw.exec(&format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END; $$; \
             CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION poison();"
        ))
        .unwrap();
    } else {
        raw.exec(&format!(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.event_id = '{event_id}' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        ))
        .unwrap();
    }
}

fn failed_ingestion_writes_nothing(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    // Enough messages to need several statements on either backend; the poisoned one is last.
    let mut msgs = messages(5000, now());
    msgs.push(message("$poisoned", now()));
    poison(db, "$poisoned");
    let err = s.record_ingestion(&run(&v, Restricted), &snapshot("!f:x.org", msgs.clone())).unwrap_err();
    assert!(matches!(err, Error::Query), "{err:?}");
    assert!(!err.to_string().contains("INSERT"));
    for table in ["rooms", "messages", "ingestions", "outbox"] {
        assert_eq!(db.count(&format!("SELECT COUNT(*) AS n FROM {table}")), 0, "{table} written");
    }
    // The caller records the failure; a retry after the cause is gone succeeds.
    s.record_failure(&failure("org-a", Restricted)).unwrap();
    db.raw()
        .exec("DROP TRIGGER poison ON messages")
        .or_else(|_| db.raw().exec("DROP TRIGGER poison"))
        .unwrap();
    let ok = s.record_ingestion(&run(&v, Restricted), &snapshot("!f:x.org", msgs)).unwrap();
    assert_eq!(ok.messages_stored, 5001);
    assert_eq!(ok.ingestion.seq, 2);
    assert!(s.audit_verify(&[]).unwrap().iter().all(|c| c.is_ok()));
}

fn bad_input_is_rejected_whole(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut huge = messages(3, now());
    huge[1].body = Some("x".repeat(70_000));
    let mut nul = messages(3, now());
    nul[2].body = Some("a\0b".to_owned());
    let mut named = snapshot("!n:x.org", messages(1, now()));
    named.name = Some("n".repeat(5000));
    let mut edit = snapshot("!n:x.org", Vec::new());
    edit.edits.push(MessageEdit {
        event_id: "$x-edit".parse().unwrap(),
        sender: "@jean.dupont:agent.tchap.gouv.fr".parse().unwrap(),
        target: "$x".parse().unwrap(),
        msgtype: None,
        body: Some("\0".to_owned()),
        edited_at: now(),
    });
    for snap in [snapshot("!n:x.org", huge), snapshot("!n:x.org", nul), named, edit] {
        let err = s.record_ingestion(&run(&v, Restricted), &snap).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
    for table in ["rooms", "messages", "ingestions", "outbox"] {
        assert_eq!(db.count(&format!("SELECT COUNT(*) AS n FROM {table}")), 0, "{table} written");
    }
    // Failure records are bounded and cleaned, never refused for their content.
    let mut f = failure("org-a", Restricted);
    f.error = Some("e\0".repeat(10_000));
    f.homeserver_url = "h".repeat(10_000);
    let rec = s.record_failure(&f).unwrap();
    assert_eq!(rec.entry.error.unwrap().chars().count(), 1024);
    assert_eq!(rec.entry.homeserver_url.len(), 2048);
}

fn large_ingestion_spans_statements(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let msgs = messages(9_000, now());
    let r = s.record_ingestion(&run(&v, Restricted), &snapshot("!big:x.org", msgs.clone())).unwrap();
    assert_eq!(r.messages_stored, 9_000);
    // Re-fetched at a higher level across several statements: all raised, none duplicated.
    let r = s.record_ingestion(&run(&v, Secret), &snapshot("!big:x.org", msgs)).unwrap();
    assert_eq!(r.messages_stored, 0);
    assert_eq!(r.room.message_count, 9_000);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages WHERE classification = 3"), 9_000);
}

fn concurrent_ingestions_keep_one_chain(db: &TestDb) {
    let shared = messages(200, now());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let store = db.store.clone();
            let shared = shared.clone();
            scope.spawn(move || {
                let v = viewer("org-a", Secret);
                for round in 0..5 {
                    let mut msgs = shared.clone();
                    msgs.extend(messages(10, now()));
                    let mut done = false;
                    for _ in 0..20 {
                        match store
                            .record_ingestion(&run(&v, Restricted), &snapshot("!cc:x.org", msgs.clone()))
                        {
                            Ok(_) => {
                                done = true;
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                std::thread::sleep(std::time::Duration::from_millis(20))
                            }
                            Err(e) => panic!("worker {worker} round {round}: {e:?}"),
                        }
                    }
                    assert!(done, "worker {worker} never got through");
                    store.record_failure(&failure("org-a", Restricted)).unwrap();
                }
            });
        }
    });
    let s = &db.store;
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages"), 200 + 4 * 5 * 10);
    assert_eq!(db.count("SELECT COUNT(DISTINCT event_id) AS n FROM messages"), 200 + 4 * 5 * 10);
    let heads = s.audit_heads().unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].seq, 40);
    let v = s.audit_verify(&heads).unwrap();
    assert!(v.iter().all(|c| c.is_ok()), "{v:?}");
    assert_eq!(v[0].length, 40);
    let hist = s.ingestions(&viewer("org-a", Secret), &PageRequest::first(100)).unwrap();
    let stored: i64 = hist.items.iter().map(|r| r.entry.message_count).sum();
    assert_eq!(stored, 200 + 4 * 5 * 10);
    assert_eq!(s.outbox_pending(100).unwrap().len(), 20);
}

fn busy_database_is_a_clean_retryable_error(db: &TestDb) {
    let options = argus_store::StoreOptions {
        pool_size: 2,
        busy_timeout: std::time::Duration::from_millis(300),
        ..argus_store::StoreOptions::default()
    };
    let store = argus_store::Store::open_with(&db.url, options).unwrap();
    let v = viewer("org-a", Secret);
    let snap = snapshot("!busy:x.org", messages(20, now()));
    let mut holder = db.raw();
    if db.is_postgres() {
        holder.exec("BEGIN; LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE;").unwrap();
    } else {
        holder.exec("BEGIN IMMEDIATE; INSERT INTO outbox (org_id, room_id, version, payload, created_at) VALUES ('x', '!x', 0, '{}', 0);").unwrap();
    }
    let err = store.record_ingestion(&run(&v, Restricted), &snap).unwrap_err();
    assert!(matches!(err, Error::Busy), "{err:?}");
    assert!(err.is_retryable());
    holder.exec("ROLLBACK").unwrap();
    for table in ["rooms", "messages", "ingestions", "outbox"] {
        assert_eq!(db.count(&format!("SELECT COUNT(*) AS n FROM {table}")), 0, "{table} written");
    }
    // Once the lock is gone the same call goes through.
    let ok = store.record_ingestion(&run(&v, Restricted), &snap).unwrap();
    assert_eq!(ok.messages_stored, 20);
}

fn corrupt_stored_rows_are_typed_errors(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    s.record_ingestion(&run(&v, Restricted), &snapshot("!k:x.org", messages(2, now()))).unwrap();
    // Someone with raw access writes values the domain rejects.
    db.raw().exec("UPDATE rooms SET homeserver_url = 'ftp://evil'").unwrap();
    let err = s.rooms(&v, &PageRequest::first(10)).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("evil"));
    db.raw().exec("UPDATE rooms SET homeserver_url = 'https://x.org'").unwrap();
    db.raw().exec("UPDATE messages SET sender = 'not a user'").unwrap();
    let err = s.messages(&v, &rid("!k:x.org"), &PageRequest::first(10)).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    // Classifying above one's own clearance is refused before anything is written.
    let err =
        s.record_ingestion(&run(&v, TopSecret), &snapshot("!k2:x.org", messages(1, now()))).unwrap_err();
    assert!(matches!(err, Error::Invalid(argus_domain::Error::AboveClearance { .. })), "{err:?}");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM rooms"), 1);
}

fn store_is_shareable(db: &TestDb) {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    shareable(&db.store);
    assert_eq!(
        db.store.backend(),
        if db.is_postgres() { argus_store::Backend::Postgres } else { argus_store::Backend::Sqlite }
    );
    db.store.ping().unwrap();
}

/// While a writer keeps adding rooms, messages and audit records, every page a reader gets
/// agrees with its own `total_count`: page, `has_next_page` and count come from one snapshot.
fn pages_and_counts_come_from_one_snapshot(db: &TestDb) {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    let v = viewer("org-a", Secret);
    let room = rid("!snap:x.org");
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(room.as_str(), messages(1, now()))).unwrap();
    let writes = 150;
    let done = AtomicBool::new(false);
    let mismatches = std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..writes {
                let s = &db.store;
                s.record_failure(&failure("org-a", Restricted)).unwrap();
                s.record_ingestion(&run(&v, Restricted), &snapshot(&format!("!w{i}:x.org"), Vec::new()))
                    .unwrap();
                s.record_ingestion(&run(&v, Restricted), &snapshot(room.as_str(), messages(1, now())))
                    .unwrap();
            }
            done.store(true, Relaxed);
        });
        let mut mismatches = Vec::new();
        let mut reads = 0;
        // Every page asks for more than will ever exist, so it must hold the whole count.
        while !done.load(Relaxed) || reads == 0 {
            reads += 1;
            let s = &db.store;
            let a = s.ingestions(&v, &PageRequest::first(1_000)).unwrap();
            let r = s.rooms(&v, &PageRequest::first(1_000)).unwrap();
            let m = s.messages(&v, &room, &PageRequest::first(1_000)).unwrap();
            for (what, len, next, total) in [
                ("ingestions", a.items.len(), a.has_next_page, a.total_count),
                ("rooms", r.items.len(), r.has_next_page, r.total_count),
                ("messages", m.items.len(), m.has_next_page, m.total_count),
            ] {
                if len as i64 != total || next {
                    mismatches.push(format!("read {reads}: {what} page of {len} with total {total}"));
                }
            }
        }
        mismatches
    });
    assert!(
        mismatches.is_empty(),
        "{} torn pages: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    let a = db.store.ingestions(&v, &PageRequest::first(1_000)).unwrap();
    assert_eq!(a.total_count, 1 + 3 * writes);
}
