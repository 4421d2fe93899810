//! Gated reads of the store suite, on every backend: withheld looks like absent, keyset pages,
//! stats and audit history over the visible set, forged cursors, pages agreeing with their counts.

use std::collections::HashSet;

use argus_domain::{Classification::*, IngestionOutcome, PageRequest, RoomId, to_unix_ms};
use argus_store::{IngestionCursor, MessageCursor, RoomCursor};
use time::Duration;

use crate::{
    support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer},
    writes::failure,
};

backend_suite!(
    gated_reads_withheld_is_absent,
    rooms_keyset_pagination,
    messages_keyset_pagination,
    stats_over_visible_set,
    forged_cursors_are_harmless,
    ingestion_history_is_gated,
    pages_and_counts_come_from_one_snapshot,
);

pub(crate) fn rid(s: &str) -> RoomId {
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
