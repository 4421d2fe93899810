//! Streamed runs in the store: pages committed with the room's positions, one audit record at
//! the end with what the committed pages stored, interrupted runs audited once, and the
//! organisation's audit lock held only to append (PostgreSQL: another room's pages commit while
//! it is held).

use std::time::Duration;

use argus_domain::{
    Classification::{Restricted, Secret},
    HistoryPosition, IngestionOutcome, PageRequest,
};
use argus_store::IngestionCursor;
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use sha2::Digest as _;

use crate::support::{TestDb, backend_suite, messages, now, run, snapshot, viewer};

backend_suite!(
    pages_commit_with_their_positions_and_the_run_is_audited_once_at_its_end,
    an_interrupted_run_is_audited_once_after_its_lease,
    the_audit_lock_is_held_only_to_append,
);

fn records(db: &TestDb) -> Vec<argus_domain::IngestionRecord> {
    let v = viewer("org-a", Secret);
    let mut items =
        db.store.ingestions(&v, &PageRequest::<IngestionCursor> { first: 100, after: None }).unwrap().items;
    items.reverse();
    items
}

fn pages_commit_with_their_positions_and_the_run_is_audited_once_at_its_end(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let r = run(&v, Restricted);
    let mut first = snapshot("!streamed:tchap.test", messages(10, now()));
    first.resume_token = Some("t_live".into());
    first.history = HistoryPosition::Continues("t_older".into());
    let ticket = db
        .store
        .begin_run(&r, &first.room_id, &first.homeserver_url, Duration::from_secs(60), false)
        .unwrap();
    assert_eq!(db.store.commit_pages(&ticket, &first).unwrap().messages_stored, 10);
    // Committed: visible before the run ends, with its positions; no audit record yet.
    let room = db.store.room(&v, &first.room_id).unwrap().unwrap();
    assert_eq!((room.message_count, room.resume_token.as_deref()), (10, Some("t_live")));
    assert_eq!((room.backfill_token.as_deref(), room.history_complete), (Some("t_older"), false));
    assert!(records(db).is_empty());
    // Older pages: the forward position stays, the history is complete.
    let mut older = snapshot("!streamed:tchap.test", messages(5, now() - time::Duration::hours(1)));
    older
        .messages
        .iter_mut()
        .enumerate()
        .for_each(|(i, m)| m.event_id = format!("$older{i}").parse().unwrap());
    older.resume_token = None;
    older.history = HistoryPosition::Complete;
    assert_eq!(db.store.commit_pages(&ticket, &older).unwrap().messages_stored, 5);
    // Pages of another room are refused for this run.
    let stray = snapshot("!other:tchap.test", messages(1, now()));
    assert!(db.store.commit_pages(&ticket, &stray).is_err());
    let record = db.store.finish_run(&ticket, Some("cut".into())).unwrap();
    assert_eq!((record.ingestion.entry.outcome, record.messages_stored), (IngestionOutcome::Failed, 15));
    let room = record.room.unwrap();
    assert_eq!(
        (room.resume_token.as_deref(), room.backfill_token, room.history_complete),
        (Some("t_live"), None, true)
    );
    // The run is over: neither another batch nor another end is taken.
    assert!(db.store.commit_pages(&ticket, &first).is_err());
    assert!(db.store.finish_run(&ticket, None).is_err());
    assert_eq!(records(db).len(), 1);
    assert!(db.store.audit_verify(&[]).unwrap().iter().all(|c| c.is_ok()));
}

fn an_interrupted_run_is_audited_once_after_its_lease(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let pages = snapshot("!killed:tchap.test", messages(7, now()));
    let ticket = db
        .store
        .begin_run(&run(&v, Restricted), &pages.room_id, &pages.homeserver_url, Duration::from_secs(60), true)
        .unwrap();
    db.store.commit_pages(&ticket, &pages).unwrap();
    // Within its lease, nothing is closed.
    assert!(db.store.close_interrupted_runs(now()).unwrap().is_empty());
    let later = now() + time::Duration::minutes(5);
    let closed = db.store.close_interrupted_runs(later).unwrap();
    assert_eq!(closed.len(), 1);
    let entry = &closed[0].entry;
    assert_eq!((entry.outcome, entry.message_count, entry.scheduled), (IngestionOutcome::Failed, 7, true));
    assert_eq!(entry.error.as_deref(), Some(argus_store::INTERRUPTED));
    assert!(db.store.close_interrupted_runs(later).unwrap().is_empty());
    // The process that ran it, had it survived, can no longer commit or end it.
    assert!(db.store.commit_pages(&ticket, &pages).is_err());
    assert!(db.store.finish_run(&ticket, None).is_err());
    assert_eq!(records(db).len(), 1);
    assert!(db.store.audit_verify(&[]).unwrap().iter().all(|c| c.is_ok()));
}

fn the_audit_lock_is_held_only_to_append(db: &TestDb) {
    if !db.is_postgres() {
        return; // SQLite has one writer for everything.
    }
    let v = viewer("org-a", Secret);
    let a = snapshot("!room-a:tchap.test", messages(3, now()));
    let mut b = snapshot("!room-b:tchap.test", messages(3, now()));
    b.messages.iter_mut().enumerate().for_each(|(i, m)| m.event_id = format!("$b{i}").parse().unwrap());
    let ticket_a = db
        .store
        .begin_run(&run(&v, Restricted), &a.room_id, &a.homeserver_url, Duration::from_secs(60), false)
        .unwrap();
    let ticket_b = db
        .store
        .begin_run(&run(&v, Restricted), &b.room_id, &b.homeserver_url, Duration::from_secs(60), false)
        .unwrap();
    // Another process appends to org-a's chain: it holds the organisation's audit lock.
    let mut holder = PgConnection::establish(&db.url).unwrap();
    let digest = sha2::Sha256::digest(b"argus-audit:org-a");
    let key = i64::from_be_bytes(digest[..8].try_into().unwrap());
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query(format!("SELECT pg_advisory_xact_lock({key})")).execute(&mut holder).unwrap();
    // Pages of both rooms still commit meanwhile.
    let (store, t) = (db.store.clone(), ticket_a.clone());
    let committed = std::thread::spawn(move || store.commit_pages(&t, &a).map(|r| r.messages_stored));
    assert_eq!(committed.join().unwrap().unwrap(), 3);
    assert_eq!(db.store.commit_pages(&ticket_b, &b).unwrap().messages_stored, 3);
    // Ending a run appends to the chain: it waits for the lock.
    let (store, t) = (db.store.clone(), ticket_a.clone());
    let finishing = std::thread::spawn(move || store.finish_run(&t, None).map(|r| r.ingestion.seq));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!finishing.is_finished(), "the audit record was appended under someone else's lock");
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();
    assert_eq!(finishing.join().unwrap().unwrap(), 1);
    assert_eq!(db.store.finish_run(&ticket_b, None).unwrap().ingestion.seq, 2);
}
