//! PostgreSQL restarted while a run is under way: the run fails cleanly with a retryable code,
//! its audit record (FAILED, with what its committed pages stored) is appended once the database
//! is back, and the next run resumes where the committed pages stopped: every message once,
//! the chain verifying. On a PostgreSQL cluster of its own, which it stops and starts again
//! while the other tests keep the shared one.

use std::time::Duration;

use argus_domain::{IngestionOutcome, PageRequest, RoomId};
use argus_ingest::ingest::Reach;
use argus_store::IngestionCursor;

use crate::support::{Env, analyst, request};

const ROOM: &str = "!slow-restart:tchap.test";
const SIZE: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_fails_it_cleanly_and_the_next_run_resumes() {
    let Some(cluster) =
        tokio::task::spawn_blocking(argus_testkit::postgres::own_cluster).await.ok().flatten()
    else {
        return;
    };
    let env = Env::postgres_on(cluster).await;
    env.hs.room(ROOM, SIZE);
    let alice = analyst("dgsi");
    let services = std::sync::Arc::clone(&env.services);
    let (hs, viewer) = (env.hs.uri(), alice.clone());
    let run = tokio::spawn(async move {
        let request = request(hs, ROOM, 10_000, Reach::Current);
        argus_ingest::ingest::ingest_room(&services, &viewer, request, &mut |_| {}).await
    });
    // Some batches committed, then the database goes down under the run, and comes back.
    let store = env.services.store.clone();
    let room: RoomId = ROOM.parse().unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v, r) = (store.clone(), alice.clone(), room.clone());
        let stored =
            tokio::task::spawn_blocking(move || s.room(&v, &r)).await.ok().and_then(Result::ok).flatten();
        if stored.is_some_and(|r| r.message_count >= 40) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run stored nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop_now().unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    let error =
        run.await.unwrap_or_else(|e| panic!("{e}")).err().unwrap_or_else(|| panic!("the run survived"));
    assert!(error.is_retryable(), "{} {}", error.code(), error.public_message());

    // Its audit record is appended once the database is back (retried in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let v = alice.clone();
        let records = env
            .with_store(move |s| s.ingestions(&v, &PageRequest::<IngestionCursor> { first: 10, after: None }))
            .await
            .items;
        if let Some(record) = records.into_iter().next() {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "the failed run was never audited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (v, r) = (alice.clone(), room.clone());
    let committed = env.with_store(move |s| s.room(&v, &r)).await.map_or(0, |r| r.message_count);
    assert_eq!(failed.entry.outcome, IngestionOutcome::Failed);
    assert_eq!(failed.entry.message_count, committed);
    assert!(committed > 0 && committed < SIZE as i64, "{committed}");

    // The next run resumes: nothing read twice is stored twice, nothing is missing.
    let next = env.ingest(&alice, ROOM, 10_000, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.messages_stored, SIZE as i64 - committed);
    assert_eq!(next.room.message_count, SIZE as i64);
    assert!(next.room.history_complete);
    let verified = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
}
