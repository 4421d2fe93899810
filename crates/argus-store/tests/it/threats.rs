//! Adversarial cases of the threat model that need more than the shared suite: a process killed
//! inside the ingestion transaction, a database that goes away and comes back, and the time a
//! withheld room takes to look up compared with a missing one.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use argus_domain::{
    Classification::{Restricted, Secret},
    PageRequest, RoomId, RoomSnapshot,
};
use argus_store::{Error, Store, StoreOptions};

use crate::support::{Guard, TestDb, backend_suite, message, messages, now, run, snapshot, viewer};

/// Room of the crash tests.
const CRASH_ROOM: &str = "!crash:x.org";
/// Messages written before the one whose insert stalls.
const CRASH_MESSAGES: usize = 2_000;
/// The message whose insert stalls inside the transaction.
const SLOW_EVENT: &str = "$slow";
/// Tells the child test which database to ingest into.
const CHILD_ENV: &str = "ARGUS_STORE_CRASH_CHILD_URL";

/// The same snapshot in the child and in the retry: `CRASH_MESSAGES` messages, then the slow one.
fn crash_snapshot() -> RoomSnapshot {
    let t = now();
    let mut msgs: Vec<_> = (0..CRASH_MESSAGES)
        .map(|i| message(&format!("$crash{i}"), t - time::Duration::seconds(i as i64)))
        .collect();
    msgs.push(message(SLOW_EVENT, t));
    snapshot(CRASH_ROOM, msgs)
}

/// Run in a child process by the crash tests (`--ignored`), never on its own.
#[test]
#[ignore = "the crash tests run it in a child process, and kill it"]
fn crash_child() {
    let url = std::env::var(CHILD_ENV).expect("run by the crash tests, which name the database");
    let store = Store::open(&url).unwrap();
    let snap = crash_snapshot();
    println!("ingesting");
    // Killed by the parent while this runs.
    let result = store.record_ingestion(&run(&viewer("org-a", Secret), Restricted), &snap);
    println!("returned: {:?}", result.map(|r| r.counts.messages_stored));
}

/// Makes the insert of `SLOW_EVENT` stall inside the transaction: a long sleep on PostgreSQL,
/// an endless cross join of the messages already inserted on SQLite.
fn stall(db: &TestDb) {
    let mut raw = db.raw();
    if db.is_postgres() {
        raw.exec(&format!(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_id = '{SLOW_EVENT}' THEN PERFORM pg_sleep(5); END IF; RETURN NEW; END; $$; \
             CREATE TRIGGER stall BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION stall();"
        ))
        .unwrap();
    } else {
        raw.exec(&format!(
            "CREATE TRIGGER stall BEFORE INSERT ON messages WHEN NEW.event_id = '{SLOW_EVENT}' \
             BEGIN SELECT COUNT(*) FROM messages a, messages b, messages c; END;"
        ))
        .unwrap();
    }
}

fn unstall(db: &TestDb) {
    if db.is_postgres() {
        db.raw().exec("DROP TRIGGER stall ON messages; DROP FUNCTION stall();").unwrap();
    } else {
        db.raw().exec("DROP TRIGGER stall").unwrap();
    }
}

/// Whether another connection is inside a write transaction, stalled on `SLOW_EVENT`.
fn inside_the_transaction(db: &TestDb) -> bool {
    let mut raw = db.raw();
    if db.is_postgres() {
        raw.count(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL AND wait_event = 'PgSleep'",
        ) > 0
    } else {
        // The ingestion holds SQLite's write lock from BEGIN IMMEDIATE to COMMIT.
        raw.exec("PRAGMA busy_timeout = 0").unwrap();
        match raw.exec("BEGIN IMMEDIATE; ROLLBACK;") {
            Ok(()) => false,
            Err(e) => {
                assert!(e.to_string().contains("locked"), "{e}");
                true
            }
        }
    }
}

/// Whether a PostgreSQL backend of the test database still holds a transaction.
fn orphan_transactions(db: &TestDb) -> i64 {
    db.count(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
    )
}

fn spawn_child(db: &TestDb) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "threats::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn killed_inside_the_transaction(db: &TestDb) {
    stall(db);
    let mut child = spawn_child(db);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the child ended before ingesting").unwrap();
        // libtest prints the test's output after "test <name> ... " on the same line.
        if line.ends_with("ingesting") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inside_the_transaction(db) {
        assert!(Instant::now() < deadline, "the child never got inside the transaction");
        assert!(child.try_wait().unwrap().is_none(), "the child finished instead of stalling");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no destructor, no rollback from the client side.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().all(|l| !l.starts_with("returned")), "the ingestion returned: {rest:?}");
    if db.is_postgres() {
        // The server rolls back once it finds the client gone (at the latest when the sleep ends).
        let deadline = Instant::now() + Duration::from_secs(30);
        while orphan_transactions(db) > 0 {
            assert!(Instant::now() < deadline, "the dead client's transaction was never rolled back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Nothing partial: not the room, not the messages inserted before the stall, no audit record,
    // no outbox row; the chain of the organisation is untouched.
    for table in ["rooms", "room_states", "messages", "message_counts", "ingestions", "outbox"] {
        assert_eq!(db.count(&format!("SELECT COUNT(*) AS n FROM {table}")), 0, "{table} written");
    }
    assert!(db.store.audit_heads().unwrap().is_empty());

    // A retry (of the same snapshot, through a store opened afresh as after a restart) succeeds.
    unstall(db);
    let store = Store::open(&db.url).unwrap();
    let v = viewer("org-a", Secret);
    let done = store.record_ingestion(&run(&v, Restricted), &crash_snapshot()).unwrap();
    assert_eq!(done.counts.messages_stored, CRASH_MESSAGES as i64 + 1);
    assert_eq!(done.ingestion.seq, 1);
    assert_eq!(done.room.message_count, CRASH_MESSAGES as i64 + 1);
    let verified = store.audit_verify(&store.audit_heads().unwrap()).unwrap();
    assert!(verified.iter().all(|c| c.is_ok()) && verified.len() == 1, "{verified:?}");
    assert_eq!(store.outbox_pending(10).unwrap().len(), 1);
}

#[test]
fn sqlite_killed_inside_the_transaction_leaves_nothing_and_a_retry_succeeds() {
    killed_inside_the_transaction(&crate::support::sqlite());
}

#[test]
fn postgres_killed_inside_the_transaction_leaves_nothing_and_a_retry_succeeds() {
    let Some(db) = crate::support::postgres() else { return };
    killed_inside_the_transaction(&db);
}

/// A store on `db` with a pool of `pool_size` and a short busy timeout.
fn small_pool(db: &TestDb, pool_size: u32, busy_ms: u64) -> Store {
    let options =
        StoreOptions { pool_size, busy_timeout: Duration::from_millis(busy_ms), ..StoreOptions::default() };
    Store::open_with(&db.url, options).unwrap()
}

/// Cuts every connection to the database `name` (as a restart or a failover would).
fn terminate_backends(cluster: &argus_testkit::postgres::PgCluster, name: &str) {
    cluster
        .execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .unwrap();
}

#[test]
fn postgres_unavailable_is_a_clean_error_and_the_store_recovers() {
    let Some(db) = crate::support::postgres() else { return };
    let Guard::Postgres(pg) = &db.guard else { unreachable!() };
    let (cluster, name) = (pg.cluster(), pg.name().to_owned());
    let store = small_pool(&db, 2, 300);
    let v = viewer("org-a", Secret);
    store.record_ingestion(&run(&v, Restricted), &snapshot("!before:x.org", messages(5, now()))).unwrap();

    // The database goes away: new connections are refused and the pooled ones are cut.
    cluster.execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).unwrap();
    terminate_backends(cluster, &name);
    let during = snapshot("!during:x.org", messages(50, now()));
    let started = Instant::now();
    let errors = [
        store.record_ingestion(&run(&v, Restricted), &during).unwrap_err(),
        store.rooms(&v, &PageRequest::first(10)).unwrap_err(),
        store.room(&v, &"!before:x.org".parse::<RoomId>().unwrap()).unwrap_err(),
        store.audit_heads().unwrap_err(),
        store.ping().unwrap_err(),
    ];
    assert!(started.elapsed() < Duration::from_secs(20), "the store hung: {:?}", started.elapsed());
    for err in &errors {
        assert!(matches!(err, Error::Unavailable), "{err:?}");
        assert!(err.is_retryable());
        let text = err.to_string();
        assert_eq!(text, "the database is unavailable");
        assert!(!text.contains(&name) && !text.contains("127.0.0.1"), "{text}");
    }

    // It comes back: the same store recovers without being reopened.
    cluster.execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).unwrap();
    store.ping().unwrap();
    let again = store.record_ingestion(&run(&v, Restricted), &during).unwrap();
    assert_eq!(again.counts.messages_stored, 50);
    assert_eq!(again.ingestion.seq, 2, "the refused write left an audit record");
    // Nothing half-written: the two ingestions, whole.
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages"), 55);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM rooms"), 2);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM outbox"), 2);
    let verified = store.audit_verify(&store.audit_heads().unwrap()).unwrap();
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
}

/// Pooled PostgreSQL connections used within the last second are handed out without a
/// `SELECT 1`; one cut under the store's feet (a backend terminated, a failover) fails at most
/// the one call that meets it, cleanly, and is replaced: the next call works.
#[test]
fn postgres_connections_cut_while_pooled_fail_one_call_and_are_replaced() {
    let Some(db) = crate::support::postgres() else { return };
    let Guard::Postgres(pg) = &db.guard else { unreachable!() };
    let (cluster, name) = (pg.cluster(), pg.name().to_owned());
    let store = small_pool(&db, 1, 500);
    let v = viewer("org-a", Secret);
    store.record_ingestion(&run(&v, Restricted), &snapshot("!cut:x.org", messages(3, now()))).unwrap();
    for _ in 0..3 {
        // Used a moment ago: the pool's one connection would be handed out unchecked.
        assert_eq!(store.rooms(&v, &PageRequest::first(10)).unwrap().total_count, 1);
        terminate_backends(cluster, &name);
        match store.rooms(&v, &PageRequest::first(10)) {
            Ok(page) => assert_eq!(page.total_count, 1),
            Err(e) => assert!(matches!(e, Error::Unavailable), "{e:?}"),
        }
        // Whatever the call that met the cut connection answered, the next one works.
        assert_eq!(store.rooms(&v, &PageRequest::first(10)).unwrap().total_count, 1);
    }
}

/// The orders of three items.
const PERMUTATIONS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// Median of `samples`.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_unstable_by(f64::total_cmp);
    samples[samples.len() / 2]
}

backend_suite!(withheld_and_missing_rooms_take_the_same_time);

/// A room above the reader's clearance, and one of another organisation, must not be told
/// apart from a missing one by how long a lookup takes (by id, and through its messages).
///
/// Every room has a topic near the 64 KiB limit, which puts its classification behind the
/// topic in the row: a gate that read the row before rejecting it would pay for that, and the
/// lookup must reject inside the index instead. The measurement is made for a busy machine:
/// every round times each kind once, the cheap ones in another order each round, and a kind's cost
/// is the median over rounds of its time divided by the missing room's time in the same round,
/// so that what slows the machine down slows both sides of each ratio alike.
fn withheld_and_missing_rooms_take_the_same_time(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", argus_domain::Classification::TopSecret);
    let big = 20_000;
    let ingest = |v: &argus_domain::Viewer, level, room: &str| {
        let mut snap = snapshot(room, messages(big, now()));
        snap.topic = Some("t".repeat(60_000));
        s.record_ingestion(&run(v, level), &snap).unwrap();
    };
    // A big room above the reader's clearance, a big room of another organisation, and a big
    // room the reader may see (its messages are counted: the measurement can see a cost).
    ingest(&top, Secret, "!withheld:x.org");
    ingest(&viewer("org-b", Secret), Secret, "!foreign:x.org");
    ingest(&top, Restricted, "!visible:x.org");
    let reader = viewer("org-a", Restricted);
    let ids: Vec<RoomId> = ["!missing:x.org", "!withheld:x.org", "!foreign:x.org", "!visible:x.org"]
        .map(|r| r.parse().unwrap())
        .into();
    let first = PageRequest::first(10);

    let rounds = 600;
    // Per kind: room lookup / missing room lookup, messages / missing room messages.
    let mut ratios: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; ids.len()];
    for round in 0..rounds + 30 {
        let mut times = [[0f64; 2]; 4];
        // The three cheap kinds in each of their six orders in turn, then the visible room: each
        // cheap kind is as often first (after the previous round's visible room) as the others.
        let order = PERMUTATIONS[round % PERMUTATIONS.len()];
        for i in order.into_iter().chain([3]) {
            let started = Instant::now();
            let room = s.room(&reader, &ids[i]).unwrap();
            times[i][0] = started.elapsed().as_nanos() as f64;
            assert_eq!(room.is_some(), i == 3, "{}", ids[i]);
            let started = Instant::now();
            let page = s.messages(&reader, &ids[i], &first).unwrap();
            times[i][1] = started.elapsed().as_nanos() as f64;
            assert_eq!(page.total_count > 0, i == 3, "{}", ids[i]);
        }
        if round >= 30 {
            for (kind, t) in times.iter().enumerate() {
                for how in 0..2 {
                    ratios[kind][how].push(t[how] / times[0][how]);
                }
            }
        }
    }
    let [_, withheld, foreign, visible]: [[f64; 2]; 4] = ratios
        .into_iter()
        .map(|[lookup, msgs]| [median(lookup), median(msgs)])
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    eprintln!(
        "median time over a missing room's, lookup / messages: withheld {:.2} / {:.2}, \
         foreign {:.2} / {:.2}, visible {:.2} / {:.2}",
        withheld[0], withheld[1], foreign[0], foreign[1], visible[0], visible[1]
    );
    // Counting a big room's messages shows: the measurement can tell a costly lookup apart...
    assert!(visible[0] > 4.0, "visible room lookup only {:.2}x a missing one", visible[0]);
    // ...and a withheld or foreign room costs what a missing one does, not what a visible one does.
    for (what, ratio) in [("withheld", withheld), ("foreign", foreign)] {
        for (how, r) in ["lookup", "messages"].iter().zip(ratio) {
            assert!(r * 2.0 < visible[0], "{what} {how} {r:.2}x is closer to the visible room's cost");
            assert!(r < 1.15, "{what} {how} takes {r:.2}x the time of a missing room");
        }
    }
}

/// The SQLite database and the WAL and shared-memory files beside it hold classified material:
/// owner-only (0600), whatever the umask; a file left wider by an earlier version is narrowed
/// when the store opens it. (The server creates its data directory 0700: argus-server tests.)
#[cfg(unix)]
#[test]
fn sqlite_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tchap.db");
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let v = viewer("org-a", Secret);
    store.record_ingestion(&run(&v, Restricted), &snapshot("!perm:x.org", messages(3, now()))).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert!(path.exists(), "{suffix} missing");
        assert_eq!(mode(&path), 0o600, "tchap.db{suffix}");
    }
    drop(store);
    // Widened by hand (or created by an earlier version): narrowed again on open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    assert_eq!(mode(&db), 0o600);
}
