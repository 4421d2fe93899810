//! Writes of the store suite, on every backend: idempotent re-ingestion, classification never
//! lowered, the audit trail and the outbox, failed or refused writes that leave nothing,
//! statements spanning the bind limit, concurrency, a busy database, corrupt rows.

use argus_domain::{
    Classification::{self, *},
    IngestionOutcome, MessageEdit, NewIngestion, PageRequest,
};
use argus_store::Error;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer},
};

backend_suite!(
    reingestion_is_idempotent,
    classification_never_lowered,
    lower_clearance_cannot_ingest_into_withheld_room,
    audit_records_are_filed_at_the_effective_level,
    outbox_lifecycle,
    failed_ingestion_writes_nothing,
    bad_input_is_rejected_whole,
    large_ingestion_spans_statements,
    concurrent_ingestions_keep_one_chain,
    busy_database_is_a_clean_retryable_error,
    corrupt_stored_rows_are_typed_errors,
    store_names_its_backend_and_answers,
);

fn reingestion_is_idempotent(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let first = messages(10, now());
    let r1 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", first.clone())).unwrap();
    assert_eq!(r1.counts.messages_stored, 10);
    assert_eq!(r1.room.message_count, 10);
    let first_seen = r1.room.first_seen_at;
    let r2 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", first.clone())).unwrap();
    assert_eq!(r2.counts.messages_stored, 0);
    assert_eq!(r2.room.message_count, 10);
    assert_eq!(r2.room.first_seen_at, first_seen);
    assert_eq!(r2.ingestion.entry.message_count, 0);
    let mut more = first.clone();
    more.extend(messages(2, now()));
    let r3 = s.record_ingestion(&run(&v, Restricted), &snapshot("!i:x.org", more)).unwrap();
    assert_eq!(r3.counts.messages_stored, 2);
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
    assert_eq!(ok.counts.messages_stored, 5001);
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
    assert_eq!(r.counts.messages_stored, 9_000);
    // Re-fetched at a higher level across several statements: all raised, none duplicated.
    let r = s.record_ingestion(&run(&v, Secret), &snapshot("!big:x.org", msgs)).unwrap();
    assert_eq!(r.counts.messages_stored, 0);
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
    assert_eq!(ok.counts.messages_stored, 20);
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

fn store_names_its_backend_and_answers(db: &TestDb) {
    // That a store is `Send + Sync + Clone` is checked when the crate builds.
    assert_eq!(
        db.store.backend(),
        if db.is_postgres() { argus_store::Backend::Postgres } else { argus_store::Backend::Sqlite }
    );
    db.store.ping().unwrap();
}

pub(crate) fn failure(org: &str, classification: Classification) -> NewIngestion {
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
        rehomed_from: None,
    }
}
