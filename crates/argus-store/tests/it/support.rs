//! Fixtures: fresh stores per test on each backend, raw SQL access (as someone holding the
//! database file or a superuser login would have), and builders for domain records.

use std::sync::atomic::{AtomicU64, Ordering};

use argus_domain::{
    Classification, MessageRecord, RoomSnapshot, Scope, Viewer, from_unix_ms,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
    to_unix_ms,
};
use argus_store::{IngestionRun, Store};
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection, connection::SimpleConnection,
    sql_types::BigInt,
};
use time::OffsetDateTime;

/// Instantiates a suite written once: for each named `fn name(db: &TestDb)` of the calling
/// module, a test `sqlite::name` on a fresh SQLite store and a test `postgres::name` on a fresh
/// PostgreSQL database (skipped when PostgreSQL is absent).
macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&crate::support::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                let Some(db) = crate::support::postgres() else { return };
                super::$name(&db);
            } )*
        }
    };
}
pub(crate) use backend_suite;

/// What keeps a test database alive.
#[derive(Debug)]
pub(crate) enum Guard {
    /// A temporary directory holding the SQLite file.
    Sqlite(tempfile::TempDir),
    /// A PostgreSQL database dropped on Drop.
    Postgres(argus_testkit::postgres::TestDatabase),
}

/// A store on a database of its own, with raw access.
#[derive(Debug)]
pub(crate) struct TestDb {
    pub(crate) store: Store,
    pub(crate) url: String,
    pub(crate) guard: Guard,
}

#[derive(Debug, QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A raw connection straight to the database, bypassing the store.
pub(crate) enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Raw {
    /// Reverts the migrations back to before `version` (Diesel's form, `20261206000027`; later
    /// ones first) when `down`, else runs the pending ones.
    pub(crate) fn migrate(self, version: &str, down: bool) {
        use diesel_migrations::MigrationHarness;
        fn go<C: MigrationHarness<B>, B: diesel::backend::Backend>(
            c: &mut C,
            migrations: fn() -> diesel_migrations::EmbeddedMigrations,
            version: &str,
            down: bool,
        ) where
            diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<B>,
        {
            if down {
                while c.applied_migrations().unwrap().iter().any(|v| v.to_string() == version) {
                    c.revert_last_migration(migrations()).unwrap();
                }
            } else {
                c.run_pending_migrations(migrations()).unwrap();
            }
        }
        match self {
            Raw::Sqlite(mut c) => go(&mut c, || crate::schema::SQLITE, version, down),
            Raw::Postgres(mut c) => go(&mut c, || crate::schema::POSTGRES, version, down),
        }
    }

    pub(crate) fn exec(&mut self, sql: &str) -> diesel::QueryResult<()> {
        match self {
            Raw::Sqlite(c) => c.batch_execute(sql),
            Raw::Postgres(c) => c.batch_execute(sql),
        }
    }

    /// Runs a query returning one BIGINT column named `n`.
    pub(crate) fn count(&mut self, sql: &str) -> i64 {
        let r: N = match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).get_result(c),
            Raw::Postgres(c) => diesel::sql_query(sql).get_result(c),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        r.n
    }
}

impl TestDb {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.guard, Guard::Postgres(_))
    }

    pub(crate) fn raw(&self) -> Raw {
        match &self.guard {
            Guard::Sqlite(dir) => {
                let path = dir.path().join("store.db");
                let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
                c.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
                Raw::Sqlite(c)
            }
            Guard::Postgres(db) => Raw::Postgres(PgConnection::establish(db.url()).unwrap()),
        }
    }

    pub(crate) fn count(&self, sql: &str) -> i64 {
        self.raw().count(sql)
    }
}

pub(crate) fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::open(&url).unwrap();
    TestDb { store, url, guard: Guard::Sqlite(dir) }
}

pub(crate) fn postgres() -> Option<TestDb> {
    let db = argus_testkit::postgres::fresh_database()?;
    let url = db.url().to_owned();
    let store = Store::open(&url).unwrap();
    Some(TestDb { store, url, guard: Guard::Postgres(db) })
}

pub(crate) fn viewer(org: &str, clearance: Classification) -> Viewer {
    ViewerBuilder::new(org)
        .actor("analyst@example.gouv.fr")
        .clearance(clearance)
        .scopes([Scope::Read, Scope::Ingest, Scope::Audit])
        .build()
}

/// Now at millisecond precision.
pub(crate) fn now() -> OffsetDateTime {
    from_unix_ms(to_unix_ms(OffsetDateTime::now_utc())).unwrap()
}

pub(crate) fn run(viewer: &Viewer, classification: Classification) -> IngestionRun {
    IngestionRun { viewer: viewer.clone(), classification, started_at: now() }
}

static EVENT: AtomicU64 = AtomicU64::new(1);

/// A text message sent at `sent_at`.
pub(crate) fn message(event_id: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecordBuilder::new(event_id).sent_at(sent_at).build()
}

/// `n` messages one minute apart ending at `last`, with fresh event ids.
pub(crate) fn messages(n: usize, last: OffsetDateTime) -> Vec<MessageRecord> {
    (0..n)
        .map(|i| {
            let id = EVENT.fetch_add(1, Ordering::Relaxed);
            message(&format!("$ev{id}"), last - time::Duration::minutes((n - 1 - i) as i64))
        })
        .collect()
}

pub(crate) fn snapshot(room_id: &str, messages: Vec<MessageRecord>) -> RoomSnapshot {
    RoomSnapshotBuilder::new(room_id)
        .name(format!("Room {room_id}"))
        .topic("Coordination")
        .member_count(12)
        .messages(messages)
        .resume_token("t42-7_0_0")
        .build()
}
