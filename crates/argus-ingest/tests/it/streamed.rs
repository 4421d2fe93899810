//! Streamed ingestion: a room read in committed batches with its pagination positions, older
//! history reached over several bounded runs, a run cut mid-way keeping what it committed and
//! audited with that count, and the next run resuming with no gap and no duplicate.

use argus_domain::{IngestionOutcome, IngestionRecord, PageRequest, RoomId, Viewer};
use argus_ingest::ingest::Reach;
use argus_store::{IngestionCursor, MessageCursor};

use crate::support::{Env, analyst, backend_suite};

backend_suite!(
    older_history_is_reached_over_bounded_runs_until_the_start_of_the_room,
    a_run_cut_mid_way_keeps_its_committed_pages_and_the_next_run_resumes_there,
    new_messages_are_read_forwards_then_the_rest_of_the_cap_goes_to_older_history,
    a_run_killed_mid_way_keeps_its_pages_is_audited_and_resumes,
    edits_wait_in_the_store_for_originals_in_later_batches_and_runs,
);

/// Every event id stored for `room` as `viewer` sees it, oldest first.
async fn stored_ids(env: &Env, viewer: &Viewer, room: &str) -> Vec<String> {
    let room: RoomId = room.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let (v, r) = (viewer.clone(), room.clone());
        let page = env.with_store(move |s| s.messages(&v, &r, &PageRequest { first: 200, after })).await;
        ids.extend(page.items.iter().map(|m| m.message.event_id.to_string()));
        match page.items.last() {
            Some(last) if page.has_next_page => after = Some(MessageCursor::of(last)),
            _ => return ids,
        }
    }
}

/// The organisation's audit records, oldest first.
async fn trail(env: &Env, viewer: &Viewer) -> Vec<IngestionRecord> {
    let v = viewer.clone();
    let page = env
        .with_store(move |s| s.ingestions(&v, &PageRequest::<IngestionCursor> { first: 100, after: None }))
        .await;
    let mut records = page.items;
    records.reverse();
    records
}

/// The event ids the mock holds for `room`'s messages `range`, oldest first.
fn expected_ids(room: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let opaque: String = room.chars().filter(char::is_ascii_alphanumeric).collect();
    range.map(|i| format!("$m{i}-{opaque}")).collect()
}

async fn chains_verify(env: &Env) {
    let results = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(results.iter().all(|c| c.is_ok()), "{results:?}");
}

async fn older_history_is_reached_over_bounded_runs_until_the_start_of_the_room(env: Env) {
    let room = "!large:tchap.test";
    env.hs.room(room, 250);
    let alice = analyst("dgsi");

    // The first run reads the newest 100, in batches, and keeps where older history continues.
    let first = env.ingest(&alice, room, 100, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.messages_stored, 100);
    assert!(!first.room.history_complete);
    assert_eq!(first.room.backfill_token.as_deref(), Some("t150"));
    assert_eq!(first.report.pages, 10);
    assert_eq!(stored_ids(&env, &alice, room).await, expected_ids(room, 150..250));

    // A backfill continues from there, bounded by its own cap.
    let second = env.ingest(&alice, room, 120, Reach::Backfill).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.messages_stored, 120);
    assert_eq!(second.room.backfill_token.as_deref(), Some("t30"));
    // Older history never moves the forward position.
    assert_eq!(second.room.resume_token, first.room.resume_token);

    // The next run finds nothing new forwards and spends its cap on the rest of the history.
    let third = env.ingest(&alice, room, 1000, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third.messages_stored, 30);
    assert!(third.room.history_complete);
    assert_eq!(third.room.backfill_token, None);
    assert_eq!(third.room.message_count, 250);
    assert_eq!(stored_ids(&env, &alice, room).await, expected_ids(room, 0..250));

    // Once complete, a backfill reads nothing.
    let fourth = env.ingest(&alice, room, 1000, Reach::Backfill).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((fourth.messages_stored, fourth.report.pages), (0, 0));

    // One audit record per run, each with what it stored.
    let records = trail(&env, &alice).await;
    let counts: Vec<_> = records.iter().map(|r| (r.entry.outcome, r.entry.message_count)).collect();
    use IngestionOutcome::Succeeded as S;
    assert_eq!(counts, [(S, 100), (S, 120), (S, 30), (S, 0)]);
    chains_verify(&env).await;
}

async fn a_run_cut_mid_way_keeps_its_committed_pages_and_the_next_run_resumes_there(env: Env) {
    let room = "!cut:tchap.test";
    env.hs.room(room, 100);
    // Pages reaching before message 40 are refused: the run fails on its seventh page, after
    // three batches of two pages were committed.
    env.hs.cut_room_below(room, Some(40));
    let alice = analyst("dgsi");
    let error = env.ingest(&alice, room, 1000, Reach::Current).await.err().unwrap_or_else(|| panic!("cut"));
    assert_eq!(error.code(), "ROOM_FORBIDDEN");
    assert_eq!(stored_ids(&env, &alice, room).await, expected_ids(room, 40..100));
    let records = trail(&env, &alice).await;
    assert_eq!(records.len(), 1);
    let failed = &records[0].entry;
    assert_eq!((failed.outcome, failed.message_count), (IngestionOutcome::Failed, 60));
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("M_FORBIDDEN")), "{failed:?}");

    // Readable again: the next run goes on from where the committed pages stopped.
    env.hs.cut_room_below(room, None);
    let next = env.ingest(&alice, room, 1000, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.messages_stored, 40);
    // Four pages of older history, not ten: nothing committed was read again.
    assert_eq!(next.report.pages, 1 + 4);
    assert!(next.room.history_complete);
    assert_eq!(stored_ids(&env, &alice, room).await, expected_ids(room, 0..100));
    chains_verify(&env).await;
}

async fn new_messages_are_read_forwards_then_the_rest_of_the_cap_goes_to_older_history(env: Env) {
    let room = "!live:tchap.test";
    env.hs.room(room, 60);
    let alice = analyst("dgsi");
    let first = env.ingest(&alice, room, 20, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.messages_stored, 20);
    // 15 messages arrive; a run of 25 takes them, then 10 older ones.
    env.hs.room(room, 75);
    let second = env.ingest(&alice, room, 25, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.messages_stored, 25);
    assert_eq!(stored_ids(&env, &alice, room).await, expected_ids(room, 30..75));
    assert_eq!(second.room.resume_token.as_deref(), Some("t75"));
    assert_eq!(second.room.backfill_token.as_deref(), Some("t30"));
    // Another organisation's copy is its own: nothing of dgsi's positions is used.
    let other =
        env.ingest(&analyst("anssi"), room, 1000, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.messages_stored, 75);
    assert!(other.room.history_complete);
}

/// Tells the child test which database to ingest into.
const CHILD_ENV: &str = "ARGUS_INGEST_KILL_CHILD_URL";
/// The room the killed run reads: slow pages, so that it is under way when it is killed.
const KILLED_ROOM: &str = "!slow-killed:tchap.test";
const KILLED_ROOM_SIZE: usize = 300;

/// Tells the child test which homeserver to read (the parent's mock).
const CHILD_HS_ENV: &str = "ARGUS_INGEST_KILL_CHILD_HOMESERVER";

/// Run in a child process by the kill tests (`--ignored`), never on its own: ingests
/// [`KILLED_ROOM`] from the parent's mock homeserver until it is killed.
#[test]
#[ignore = "the kill tests run it in a child process, and kill it"]
fn killed_child() {
    let url = std::env::var(CHILD_ENV).expect("run by the kill tests, which name the database");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = argus_store::Store::open(&url).expect("store");
        let mut services = argus_ingest::Services::new(store, crate::support::connector());
        services.limits.batch_pages = 2;
        let homeserver = std::env::var(CHILD_HS_ENV).expect("run by the kill tests");
        let request = crate::support::request(homeserver, KILLED_ROOM, 10_000, Reach::Current);
        println!("ingesting");
        let result =
            argus_ingest::ingest::ingest_room(&services, &analyst("dgsi"), request, &mut |_| {}).await;
        println!("returned: {:?}", result.map(|r| r.messages_stored));
    });
}

/// A run killed with SIGKILL mid-way: what its batches committed stays; once its lease expired
/// the run is audited FAILED as interrupted with that count; the next run resumes exactly
/// there: every message once, the chain verifying.
async fn a_run_killed_mid_way_keeps_its_pages_is_audited_and_resumes(env: Env) {
    let alice = analyst("dgsi");
    env.hs.room(KILLED_ROOM, KILLED_ROOM_SIZE);
    let mut child =
        std::process::Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("test binary: {e}")))
            .args(["--ignored", "--exact", "streamed::killed_child", "--nocapture"])
            .env(CHILD_ENV, &env.url)
            .env(CHILD_HS_ENV, env.hs.uri())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("child: {e}"));
    // Wait until some batches are committed, then kill it mid-run.
    let room: RoomId = KILLED_ROOM.parse().unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stored_before_kill = loop {
        let (v, r) = (alice.clone(), room.clone());
        let stored = env.with_store(move |s| s.room(&v, &r)).await.map_or(0, |r| r.message_count);
        if stored >= 40 {
            break stored;
        }
        assert!(std::time::Instant::now() < deadline, "the child stored nothing");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    child.wait().unwrap_or_else(|e| panic!("reaped: {e}"));
    let stored = stored_ids(&env, &alice, KILLED_ROOM).await;
    assert!(stored.len() as i64 >= stored_before_kill && stored.len() < KILLED_ROOM_SIZE, "{}", stored.len());
    // The newest messages, with no hole: the committed batches are whole.
    assert_eq!(stored, expected_ids(KILLED_ROOM, KILLED_ROOM_SIZE - stored.len()..KILLED_ROOM_SIZE));
    assert!(trail(&env, &alice).await.is_empty(), "no record while the run's lease holds");

    // Its lease expired: the run is audited as interrupted, with what it stored, once.
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let closed = env.with_store(move |s| s.close_interrupted_runs(later)).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(env.with_store(move |s| s.close_interrupted_runs(later)).await.len(), 0);
    let records = trail(&env, &alice).await;
    let entry = &records[0].entry;
    assert_eq!((entry.outcome, entry.message_count), (IngestionOutcome::Failed, stored.len() as i64));
    assert_eq!(entry.error.as_deref(), Some(argus_store::INTERRUPTED));
    assert_eq!(entry.room_id, KILLED_ROOM);

    // The next run, in another process, resumes where the killed one stopped.
    let next =
        env.ingest(&alice, KILLED_ROOM, 10_000, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.messages_stored as usize, KILLED_ROOM_SIZE - stored.len());
    // One empty page forwards, then only the pages not committed: nothing was read twice.
    assert_eq!(next.report.pages as usize, 1 + (KILLED_ROOM_SIZE - stored.len()).div_ceil(10));
    assert!(next.room.history_complete);
    assert_eq!(stored_ids(&env, &alice, KILLED_ROOM).await, expected_ids(KILLED_ROOM, 0..KILLED_ROOM_SIZE));
    chains_verify(&env).await;
}

/// Edits met before their original (a backwards read meets the newest first), in another batch
/// or beyond the end of a capped run, wait in the store and are applied when the original is
/// stored, by the same run or by a later backfill.
async fn edits_wait_in_the_store_for_originals_in_later_batches_and_runs(env: Env) {
    let room = "!edited-history:tchap.test";
    env.hs.room(room, 100);
    let alice = analyst("dgsi");
    // 30 messages from the live end: the edits of 74 and 64 are read, their originals not.
    let first = env.ingest(&alice, room, 30, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.room.history_complete);
    let rest = env.ingest(&alice, room, 1000, Reach::Backfill).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(rest.room.history_complete);
    // Edits at 29, 39, … 99: 8 of the 100 events; the other 92 are messages.
    assert_eq!(first.messages_stored + rest.messages_stored, 92);
    let opaque: String = room.chars().filter(char::is_ascii_alphanumeric).collect();
    let (v, r) = (alice.clone(), room.parse::<RoomId>().unwrap_or_else(|e| panic!("{e}")));
    let page = env.with_store(move |s| s.messages(&v, &r, &PageRequest { first: 200, after: None })).await;
    let by_id: std::collections::HashMap<String, argus_domain::MessageRecord> =
        page.items.into_iter().map(|m| (m.message.event_id.to_string(), m.message)).collect();
    for target in (29..100).step_by(10).map(|i| i - argus_testkit::homeserver::EDIT_REACH) {
        let stored = &by_id[&format!("$m{target}-{opaque}")];
        assert!(stored.edited, "message {target} not edited");
        assert_eq!(stored.body.as_deref(), Some(format!("message {target} (corrigé)").as_str()));
        assert_eq!(stored.versions.len(), 2, "message {target}");
    }
    // Nothing is left waiting.
    let pending = env.with_store(|s| s.pending_evidence_count()).await;
    assert_eq!(pending, 0);
}
