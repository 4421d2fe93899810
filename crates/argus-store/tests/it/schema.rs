//! Schema invariants: migrations run up, down and up again on both backends, and every
//! tenant-owned table carries `org_id` in each of its unique keys.

use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection,
    sql_types::{Nullable, Text},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::support::{Guard, TestDb};

pub(crate) const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
pub(crate) const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Tables that hold an organisation's data.
const TENANT_TABLES: [&str; 12] = [
    "rooms",
    "messages",
    "message_counts",
    "message_versions",
    "message_redactions",
    "version_redactions",
    "ingestions",
    "outbox",
    "attachments",
    "account_credentials",
    "account_watches",
    "e2ee_devices",
];

#[derive(Debug, QueryableByName)]
struct Def {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    def: Option<String>,
}

#[test]
fn sqlite_migrations_up_down_up() {
    let db = crate::support::sqlite();
    let Guard::Sqlite(dir) = &db.guard else { unreachable!() };
    let mut c = SqliteConnection::establish(dir.path().join("store.db").to_str().unwrap()).unwrap();
    assert!(c.pending_migrations(SQLITE).unwrap().is_empty());
    c.revert_all_migrations(SQLITE).unwrap();
    let left: Vec<Def> = diesel::sql_query(
        "SELECT name, sql AS def FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '__diesel%'",
    )
    .load(&mut c)
    .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    c.run_pending_migrations(SQLITE).unwrap();
    c.revert_last_migration(SQLITE).unwrap();
    c.run_pending_migrations(SQLITE).unwrap();
    drop(c);
    // The store still works on the re-created schema.
    db.store.ping().unwrap();
}

#[test]
fn postgres_migrations_up_down_up() {
    let Some(db) = crate::support::postgres() else { return };
    let mut c = PgConnection::establish(&db.url).unwrap();
    assert!(c.pending_migrations(POSTGRES).unwrap().is_empty());
    c.revert_all_migrations(POSTGRES).unwrap();
    let left: Vec<Def> = diesel::sql_query(
        "SELECT c.relname AS name, NULL::text AS def FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname NOT LIKE '__diesel%' \
         UNION ALL SELECT p.proname, NULL FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
    )
    .load(&mut c)
    .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    c.run_pending_migrations(POSTGRES).unwrap();
    c.revert_last_migration(POSTGRES).unwrap();
    c.run_pending_migrations(POSTGRES).unwrap();
    db.store.ping().unwrap();
}

/// Every unique index of the table, as (name, definition).
fn unique_keys(db: &TestDb, table: &str) -> Vec<(String, String)> {
    match &db.guard {
        Guard::Sqlite(dir) => {
            let mut c = SqliteConnection::establish(dir.path().join("store.db").to_str().unwrap()).unwrap();
            let idx: Vec<Def> = diesel::sql_query(format!(
                "SELECT name, NULL AS def FROM pragma_index_list('{table}') WHERE \"unique\" = 1 AND origin <> 'pk'"
            ))
            .load(&mut c)
            .unwrap();
            idx.into_iter()
                .map(|i| {
                    let cols: Vec<Def> = diesel::sql_query(format!(
                        "SELECT name, NULL AS def FROM pragma_index_info('{}')",
                        i.name
                    ))
                    .load(&mut c)
                    .unwrap();
                    (i.name, cols.into_iter().map(|c| c.name).collect::<Vec<_>>().join(","))
                })
                .collect()
        }
        Guard::Postgres(_) => {
            let mut c = PgConnection::establish(&db.url).unwrap();
            let idx: Vec<Def> = diesel::sql_query(format!(
                "SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE schemaname = 'public' \
                 AND tablename = '{table}' AND indexdef LIKE 'CREATE UNIQUE INDEX%' AND indexname <> '{table}_pkey'"
            ))
            .load(&mut c)
            .unwrap();
            idx.into_iter().map(|i| (i.name, i.def.unwrap_or_default())).collect()
        }
    }
}

fn tenant_keys(db: &TestDb) {
    for table in TENANT_TABLES {
        let keys = unique_keys(db, table);
        assert!(!keys.is_empty(), "{table} has no unique key");
        for (name, def) in keys {
            assert!(def.contains("org_id"), "unique key {name} of {table} lacks org_id: {def}");
        }
    }
}

#[test]
fn sqlite_unique_keys_include_org() {
    tenant_keys(&crate::support::sqlite());
}

#[test]
fn postgres_unique_keys_include_org() {
    let Some(db) = crate::support::postgres() else { return };
    tenant_keys(&db);
}

#[test]
fn invalid_urls_are_typed_errors() {
    use argus_store::{Error, Store, StoreOptions};
    for url in
        ["", "mysql://x", "sqlite://", "postgres://", "file:///tmp/x.db", "sqlite://a.db?mode=ro", "\0"]
    {
        let err = Store::open(url).unwrap_err();
        assert!(matches!(err, Error::InvalidDatabaseUrl(_)), "{url:?}: {err:?}");
        assert!(!err.is_retryable());
    }
    // Nothing listens on port 1: unavailable, retryable, and the message names no address.
    let options = StoreOptions {
        pool_size: 1,
        busy_timeout: std::time::Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let err = Store::open_with("postgres://argus:secret@127.0.0.1:1/argus", options).unwrap_err();
    assert!(matches!(err, Error::Unavailable), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains("secret") && !err.to_string().contains("127.0.0.1"));
    let err = Store::open("sqlite:///nonexistent-dir/sub/store.db").unwrap_err();
    assert!(!err.to_string().contains("nonexistent"));
}

#[test]
fn memory_store_works() {
    let s = argus_store::Store::open("sqlite::memory:").unwrap();
    assert_eq!(s.backend(), argus_store::Backend::Sqlite);
    s.ping().unwrap();
}
