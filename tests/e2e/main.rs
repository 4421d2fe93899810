//! End-to-end tests of the GraphQL server against the real Synapse homeserver of the connector
//! tests, on SQLite and on PostgreSQL.
//!
//! One scenario ([`scenario::run`]) is written once and run on each backend: a Matrix user builds
//! rooms on Synapse (names, topics, members joining and leaving, an edit, a redaction, a reply);
//! two organisations ingest them at three classifications through `ingestTchapRoom`; readers at
//! several clearances read everything back through every query and must see exactly the ground
//! truth of what Synapse holds, filtered by organisation and clearance. Failures (above clearance,
//! bad Matrix token, a room the Matrix user is not in) are refused with stable codes and audited;
//! concurrent ingestions of one room never duplicate; the audit chains verify; the fusion relay
//! delivers one network-node entity per successful ingestion; and no Matrix token is found in any
//! response, any captured log line, or any database byte or column.
//!
//! The whole file skips (loudly, through `argus-testkit`) when Synapse is unavailable; the
//! PostgreSQL run also skips when no PostgreSQL binaries are installed.
//!
//! A test binary of its own, beside the binary's `tests/it`: the log scan needs the process's
//! global tracing subscriber to itself (another test installing one first would leave the scan
//! nothing to read), and every line the process logged belongs to these runs.

mod accounts;
mod attachments;
mod device;
mod disclosure;
mod encrypted;
mod evidence;
mod harness;
mod leaks;
mod live;
mod notes;
mod outputs;
mod replicas;
mod scenario;
mod world;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_sqlite() {
    harness::capture_logs();
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    let secrets = scenario::run(synapse, &url, dir.path()).await.unwrap();
    // Every file the server wrote (database, WAL, shared memory, fusion JSON Lines).
    leaks::assert_absent_from_files(dir.path(), &secrets).unwrap();
    leaks::assert_absent_from_logs(&secrets).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_postgres() {
    harness::capture_logs();
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let secrets = scenario::run(synapse, db.url(), dir.path()).await.unwrap();
    leaks::assert_absent_from_postgres(&db, &secrets).unwrap();
    leaks::assert_absent_from_files(dir.path(), &secrets).unwrap();
    leaks::assert_absent_from_logs(&secrets).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    evidence::run(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    evidence::run(synapse, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    notes::run(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    notes::run(synapse, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_history_on_sqlite() {
    harness::capture_logs();
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    let secrets = encrypted::run(synapse, &url, dir.path()).await.unwrap();
    leaks::assert_absent_from_files(dir.path(), &secrets).unwrap();
    leaks::assert_absent_from_logs(&secrets).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_history_on_postgres() {
    harness::capture_logs();
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let secrets = encrypted::run(synapse, db.url(), dir.path()).await.unwrap();
    leaks::assert_absent_from_postgres(&db, &secrets).unwrap();
    leaks::assert_absent_from_logs(&secrets).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_watched_rooms_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    replicas::run(synapse, &db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(clamd) = argus_testkit::clamd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    attachments::run(synapse, &clamd, &url, "file", dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_on_postgres_with_s3() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(clamd) = argus_testkit::clamd::start() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let Some(s3) = argus_testkit::s3::server() else { return };
    let dir = tempfile::tempdir().unwrap();
    attachments::run(synapse, &clamd, db.url(), &s3.store_url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disclosure_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(clamd) = argus_testkit::clamd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    disclosure::run_scenario(synapse, &clamd, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disclosure_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(clamd) = argus_testkit::clamd::start() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    disclosure::run_scenario(synapse, &clamd, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    accounts::run(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    accounts::run(synapse, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_api_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    live::api(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_api_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    live::api(synapse, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_survives_sigkill_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    live::crash(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_survives_sigkill_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    live::crash(synapse, db.url(), dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_replicas_share_accounts_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    live::replicas(synapse, &db).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_second_loop_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    live::second_loop(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_decrypts_verified_across_sigkill_on_sqlite() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("argus.db").display());
    device::capture(synapse, &url, dir.path()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_decrypts_verified_across_sigkill_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let secrets = device::capture(synapse, db.url(), dir.path()).await.unwrap();
    leaks::assert_absent_from_postgres(&db, &secrets).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_taken_over_by_a_replica_on_postgres() {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return };
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    device::replicas(synapse, &db).await.unwrap();
}
