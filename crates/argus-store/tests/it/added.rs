//! Messages as they are stored, for a subscriber, on every backend: only what is stored after
//! the subscription started, each message once, in storage order, gated exactly as a room's
//! page of messages; and on PostgreSQL, a commit that lands after a later one's is not lost.

use std::collections::BTreeSet;

use argus_domain::{Classification::*, PageRequest, RoomId, StoredMessage, Viewer};
use argus_store::AddedCursor;

use crate::support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer};

backend_suite!(
    only_what_is_stored_after_the_start_is_returned_once,
    added_messages_are_gated_like_a_page_of_messages,
    a_room_named_narrows_and_a_withheld_room_looks_missing,
    a_full_batch_leaves_the_rest_for_the_next_read,
    a_commit_that_lands_late_is_still_returned,
    a_commit_in_flight_when_the_subscription_starts_is_returned,
);

fn rid(s: &str) -> RoomId {
    s.parse().unwrap()
}

fn event_ids(messages: &[StoredMessage]) -> Vec<String> {
    messages.iter().map(|m| m.message.event_id.as_str().to_owned()).collect()
}

/// Reads until a read returns nothing.
fn drain(
    db: &TestDb,
    viewer: &Viewer,
    room: Option<&RoomId>,
    cursor: &mut AddedCursor,
) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    loop {
        let batch = db.store.messages_added(viewer, room, cursor, 100).unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Every message `viewer` reads in `room` with `Store::messages`.
fn page_ids(db: &TestDb, viewer: &Viewer, room: &str) -> BTreeSet<i64> {
    let page = db.store.messages(viewer, &rid(room), &PageRequest::first(1_000)).unwrap();
    page.items.iter().map(|m| m.id).collect()
}

fn only_what_is_stored_after_the_start_is_returned_once(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    s.record_ingestion(&run(&v, Restricted), &snapshot("!a:x.org", messages(3, t))).unwrap();
    let mut cursor = s.messages_added_from_now(&v, None).unwrap();
    assert!(s.messages_added(&v, None, &mut cursor, 100).unwrap().is_empty());

    let new = vec![message("$after-1", t), message("$after-2", t)];
    s.record_ingestion(&run(&v, Restricted), &snapshot("!a:x.org", new)).unwrap();
    s.record_ingestion(&run(&v, Confidential), &snapshot("!b:x.org", vec![message("$after-3", t)])).unwrap();
    let got = s.messages_added(&v, None, &mut cursor, 100).unwrap();
    assert_eq!(event_ids(&got), ["$after-1", "$after-2", "$after-3"]);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "storage order");
    assert_eq!(got[2].room_id.as_str(), "!b:x.org");
    assert_eq!(got[2].classification, Confidential);
    // Never twice; a message stored again (the same event) is not new.
    assert!(s.messages_added(&v, None, &mut cursor, 100).unwrap().is_empty());
    s.record_ingestion(&run(&v, Restricted), &snapshot("!a:x.org", vec![message("$after-1", t)])).unwrap();
    assert!(s.messages_added(&v, None, &mut cursor, 100).unwrap().is_empty());
    // Settled: nothing is held for what was handed over.
    assert_eq!(cursor.known_len(), 0, "{cursor:?}");
}

fn added_messages_are_gated_like_a_page_of_messages(db: &TestDb) {
    let s = &db.store;
    let writer_a = viewer("org-a", TopSecret);
    let writer_b = viewer("org-b", TopSecret);
    let reader = viewer("org-a", Restricted);
    let t = now();
    s.record_ingestion(&run(&writer_a, Restricted), &snapshot("!old:x.org", messages(2, t))).unwrap();
    let before: BTreeSet<i64> = page_ids(db, &reader, "!old:x.org");
    let mut cursor = s.messages_added_from_now(&reader, None).unwrap();
    let mut top = s.messages_added_from_now(&writer_a, None).unwrap();

    // Seen: a RESTRICTED room of the reader's organisation.
    s.record_ingestion(&run(&writer_a, Restricted), &snapshot("!low:x.org", vec![message("$low", t)]))
        .unwrap();
    // Not seen: above the clearance; another organisation's (the same Matrix room).
    s.record_ingestion(&run(&writer_a, Secret), &snapshot("!high:x.org", vec![message("$high", t)])).unwrap();
    s.record_ingestion(&run(&writer_b, Unclassified), &snapshot("!low:x.org", vec![message("$other", t)]))
        .unwrap();
    // Not seen: a RESTRICTED message whose room was then raised to SECRET (the room is withheld
    // from the reader, so `tchapMessages` returns none of it).
    s.record_ingestion(&run(&writer_a, Restricted), &snapshot("!up:x.org", vec![message("$up-1", t)]))
        .unwrap();
    s.record_ingestion(&run(&writer_a, Secret), &snapshot("!up:x.org", vec![message("$up-2", t)])).unwrap();
    s.record_ingestion(&run(&writer_a, Restricted), &snapshot("!old:x.org", vec![message("$old-3", t)]))
        .unwrap();

    let got = drain(db, &reader, None, &mut cursor);
    assert_eq!(event_ids(&got), ["$low", "$old-3"]);
    // Exactly what the pages of the same reader return, minus what was there before.
    let mut pages: BTreeSet<i64> = ["!low:x.org", "!high:x.org", "!up:x.org", "!old:x.org"]
        .into_iter()
        .flat_map(|room| page_ids(db, &reader, room))
        .collect();
    pages.retain(|id| !before.contains(id));
    assert_eq!(got.iter().map(|m| m.id).collect::<BTreeSet<_>>(), pages);
    // The organisation's TOP SECRET reader gets its own organisation's, never org-b's.
    let all = drain(db, &writer_a, None, &mut top);
    assert_eq!(event_ids(&all), ["$low", "$high", "$up-1", "$up-2", "$old-3"]);
}

fn a_room_named_narrows_and_a_withheld_room_looks_missing(db: &TestDb) {
    let s = &db.store;
    let writer = viewer("org-a", TopSecret);
    let reader = viewer("org-a", Restricted);
    let t = now();
    let (a, secret, missing) = (rid("!a:x.org"), rid("!s:x.org"), rid("!none:x.org"));
    s.record_ingestion(&run(&writer, Secret), &snapshot("!s:x.org", messages(1, t))).unwrap();
    let mut in_a = s.messages_added_from_now(&reader, Some(&a)).unwrap();
    let mut in_secret = s.messages_added_from_now(&reader, Some(&secret)).unwrap();
    let mut in_missing = s.messages_added_from_now(&reader, Some(&missing)).unwrap();
    assert_eq!(in_secret, in_missing, "a withheld room starts as a missing one");

    s.record_ingestion(&run(&writer, Restricted), &snapshot("!a:x.org", vec![message("$in-a", t)])).unwrap();
    s.record_ingestion(&run(&writer, Restricted), &snapshot("!b:x.org", vec![message("$in-b", t)])).unwrap();
    s.record_ingestion(&run(&writer, Secret), &snapshot("!s:x.org", vec![message("$in-s", t)])).unwrap();
    assert_eq!(event_ids(&drain(db, &reader, Some(&a), &mut in_a)), ["$in-a"]);
    assert!(drain(db, &reader, Some(&secret), &mut in_secret).is_empty());
    assert!(drain(db, &reader, Some(&missing), &mut in_missing).is_empty());
}

fn a_full_batch_leaves_the_rest_for_the_next_read(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut cursor = s.messages_added_from_now(&v, None).unwrap();
    let t = now();
    let five: Vec<_> = (1..=5).map(|i| message(&format!("$five-{i}"), t)).collect();
    s.record_ingestion(&run(&v, Restricted), &snapshot("!f:x.org", five)).unwrap();
    let sizes: Vec<usize> =
        (0..4).map(|_| s.messages_added(&v, None, &mut cursor, 2).unwrap().len()).collect();
    assert_eq!(sizes, [2, 2, 1, 0]);
}

/// As the store's writer does: the room's row first, so the transaction holds its id before it
/// takes a message id; then one message, left uncommitted.
fn open_a_commit(raw: &mut crate::support::Raw, room: &str, event_id: &str) {
    raw.exec(&format!(
        "BEGIN; UPDATE rooms SET name = name WHERE org_id = 'org-a' AND room_id = '{room}'; \
         INSERT INTO messages (org_id, room_pk, event_id, sender, msgtype, body, sent_at, edited, redacted, \
         encrypted, classification) SELECT org_id, id, '{event_id}', '@late:x.org', 'm.text', 'late', 0, FALSE, \
         FALSE, FALSE, classification FROM rooms WHERE org_id = 'org-a' AND room_id = '{room}'"
    ))
    .unwrap();
}

fn a_commit_that_lands_late_is_still_returned(db: &TestDb) {
    // SQLite has one writer: a later commit cannot overtake an earlier one.
    if !db.is_postgres() {
        return;
    }
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    s.record_ingestion(&run(&v, Restricted), &snapshot("!a:x.org", messages(1, t))).unwrap();
    let mut cursor = s.messages_added_from_now(&v, None).unwrap();
    let mut raw = db.raw();
    open_a_commit(&mut raw, "!a:x.org", "$late");
    // A later id commits first and is handed over; the lower one is not visible yet.
    s.record_ingestion(&run(&v, Restricted), &snapshot("!b:x.org", vec![message("$early", t)])).unwrap();
    let first = s.messages_added(&v, None, &mut cursor, 100).unwrap();
    assert_eq!(event_ids(&first), ["$early"]);
    assert!(s.messages_added(&v, None, &mut cursor, 100).unwrap().is_empty());
    assert!(cursor.settled() < first[0].id, "settled past a transaction in flight: {cursor:?}");
    raw.exec("COMMIT").unwrap();
    let late = s.messages_added(&v, None, &mut cursor, 100).unwrap();
    assert_eq!(event_ids(&late), ["$late"]);
    assert!(late[0].id < first[0].id, "the late commit holds the lower id");
    assert!(drain(db, &v, None, &mut cursor).is_empty());
}

fn a_commit_in_flight_when_the_subscription_starts_is_returned(db: &TestDb) {
    if !db.is_postgres() {
        return;
    }
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let t = now();
    s.record_ingestion(&run(&v, Restricted), &snapshot("!a:x.org", messages(2, t))).unwrap();
    let mut raw = db.raw();
    open_a_commit(&mut raw, "!a:x.org", "$in-flight");
    s.record_ingestion(&run(&v, Restricted), &snapshot("!b:x.org", vec![message("$before", t)])).unwrap();
    // Starts after `$before` (visible) and while `$in-flight` (a lower id) is not committed.
    let mut cursor = s.messages_added_from_now(&v, None).unwrap();
    assert!(s.messages_added(&v, None, &mut cursor, 100).unwrap().is_empty());
    raw.exec("COMMIT").unwrap();
    assert_eq!(event_ids(&drain(db, &v, None, &mut cursor)), ["$in-flight"]);
}
