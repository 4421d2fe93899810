//! Connections: the backend chosen from the URL scheme, the pool, SQLite pragmas, migrations,
//! and the small SQL builder that hides the one dialect difference reads and writes meet
//! (bind placeholders).

mod conn;

use std::time::Duration;

use diesel::{
    Connection, PgConnection, SqliteConnection,
    query_builder::{BoxedSqlQuery, SqlQuery},
    r2d2::{CustomizeConnection, Pool, PooledConnection},
    serialize::ToSql,
    sql_types::HasSqlType,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub(crate) use self::conn::{DbConn, MultiBackend};
use crate::{Error, Result};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// The database engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite (bundled), one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The largest number of bind parameters one statement may carry.
    pub(crate) const fn max_binds(self) -> usize {
        match self {
            Self::Sqlite => 32_766,
            Self::Postgres => 65_535,
        }
    }
}

/// Tuning of a store's connection pool, and the key of its audit chain.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections kept in the pool (an in-memory SQLite store always uses one).
    pub pool_size: u32,
    /// How long a statement waits for a locked SQLite database, and how long a caller waits
    /// for a free connection, before failing with a retryable error.
    pub busy_timeout: Duration,
    /// The key of the audit chain (held outside the database): records are appended and
    /// verified under it. `None`: unkeyed SHA-256 links.
    pub audit_key: Option<crate::AuditKey>,
    /// PostgreSQL: an ingestion takes a second connection, when one is free, to compute its
    /// messages' full-text search vectors ahead of the insert and merge the index's pending
    /// list, on another database process (on by default). These connections (two at most) are
    /// kept apart from the `pool_size` ones. Off, or with no helper connection free, the
    /// database computes each vector as its row is inserted: the same vectors, in the same
    /// transaction, more slowly.
    pub search_ahead: bool,
    /// Legal hold (on by default): when a redaction reaches the archive after the message it
    /// purges was captured, the content captured is kept, sealed, instead of being thrown away.
    /// Everyone still reads the message as redacted; a reader with `tchap:redacted` also reads
    /// what it held. Off, a redaction purges the content as the homeserver did. Content held
    /// while it was on stays held.
    pub keep_redacted: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            audit_key: None,
            search_ahead: true,
            keep_redacted: true,
        }
    }
}

/// Where a URL points. Neither location shows in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file path (a secret too: it names where classified material lies), or
    /// `:memory:`.
    Sqlite { path: argus_domain::Secret, memory: bool },
    /// A PostgreSQL connection URL (it may hold a password).
    Postgres(argus_domain::Secret),
}

/// A database URL, parsed once: `sqlite://PATH` (or `sqlite:PATH`), `sqlite::memory:`, or
/// `postgres://…` / `postgresql://…`. The configuration parses it when it is loaded and the
/// store opens what it names; nothing else reads the text.
///
/// `Debug` leaves the location out ([`argus_domain::Secret`]): a PostgreSQL URL may carry a
/// password, and a SQLite location is a file path.
///
/// ```
/// use argus_store::{Backend, DatabaseUrl};
/// let url: DatabaseUrl = "sqlite:///var/lib/argus/tchap.db".parse()?;
/// assert_eq!(url.backend(), Backend::Sqlite);
/// assert_eq!(url.sqlite_path(), Some(std::path::Path::new("/var/lib/argus/tchap.db")));
/// let pg: DatabaseUrl = "postgres://argus:db-password@db/argus".parse()?;
/// assert_eq!((pg.backend(), pg.sqlite_path()), (Backend::Postgres, None));
/// assert!(!format!("{pg:?}").contains("password"));
/// assert!("sqlite://db.sqlite?mode=ro".parse::<DatabaseUrl>().is_err());
/// # Ok::<(), argus_store::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub(crate) Target);

impl DatabaseUrl {
    /// A SQLite database file at `path` (relative to the working directory, or absolute).
    pub fn sqlite_file(path: impl Into<std::path::PathBuf>) -> Self {
        Self(Target::Sqlite {
            path: argus_domain::Secret::new(path.into().to_string_lossy().into_owned()),
            memory: false,
        })
    }

    /// The engine the URL names.
    pub fn backend(&self) -> Backend {
        match self.0 {
            Target::Sqlite { .. } => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite database file (`None` for PostgreSQL and in-memory databases).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.0 {
            Target::Sqlite { path, memory: false } => Some(std::path::Path::new(path.expose_secret())),
            _ => None,
        }
    }

    /// Whether the database lives in memory only (`sqlite::memory:`).
    pub fn is_memory(&self) -> bool {
        matches!(self.0, Target::Sqlite { memory: true, .. })
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        parse_url(url).map(Self)
    }
}

/// From a string (configuration files, the environment); the error names what is wrong, never
/// the URL.
impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = argus_domain::Secret::deserialize(deserializer)?;
        text.expose_secret().parse().map_err(serde::de::Error::custom)
    }
}

/// Reads the backend and location from a database URL.
fn parse_url(url: &str) -> Result<Target> {
    let url = url.trim();
    if url.is_empty() || url.len() > 4096 {
        return Err(Error::InvalidDatabaseUrl("must be 1 to 4096 bytes"));
    }
    if url.chars().any(char::is_control) {
        return Err(Error::InvalidDatabaseUrl("control characters are not allowed"));
    }
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Ok(Target::Sqlite { path: argus_domain::Secret::new(":memory:"), memory: true });
    }
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(Error::InvalidDatabaseUrl("missing SQLite file path"));
        }
        if path.contains('?') || path.starts_with("file:") {
            return Err(Error::InvalidDatabaseUrl("SQLite options are not supported in the URL"));
        }
        return Ok(Target::Sqlite { path: argus_domain::Secret::new(path), memory: false });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let parsed = url::Url::parse(url).map_err(|_| Error::InvalidDatabaseUrl("not a URL"))?;
        if parsed.host().is_none() && !parsed.query().is_some_and(|q| q.contains("host=")) {
            return Err(Error::InvalidDatabaseUrl("missing PostgreSQL host"));
        }
        return Ok(Target::Postgres(argus_domain::Secret::new(url)));
    }
    Err(Error::InvalidDatabaseUrl("scheme must be sqlite:// or postgres://"))
}

/// How long a pooled connection that answered counts as alive without being asked again: a
/// connection handed out within this time of its last use skips the pool's `SELECT 1`. One
/// round trip fewer per request on PostgreSQL; a connection whose last use failed is always
/// asked, so a connection cut by a database restart is found and replaced at its next use.
const CONFIRMED_FOR: Duration = Duration::from_secs(1);

thread_local! {
    /// Set when a statement failed on this thread; read (and cleared) when the connection goes
    /// back to the pool, on the same thread.
    static STATEMENT_FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes that a statement failed on this thread (see [`CONFIRMED_FOR`]).
pub(crate) fn note_statement_failure() {
    STATEMENT_FAILED.with(|f| f.set(true));
}

/// A pooled connection and when it was last seen working.
pub(crate) struct PoolConn {
    conn: DbConn,
    confirmed: Option<std::time::Instant>,
}

impl std::ops::Deref for PoolConn {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        &self.conn
    }
}

impl std::ops::DerefMut for PoolConn {
    fn deref_mut(&mut self) -> &mut DbConn {
        &mut self.conn
    }
}

/// A connection manager that establishes the variant the URL names, never trying others.
#[derive(Debug)]
pub(crate) struct Manager {
    target: DatabaseUrl,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PoolConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PoolConn, Self::Error> {
        let conn = match &self.target.0 {
            Target::Sqlite { path, .. } => SqliteConnection::establish(path.expose_secret())
                .map(DbConn::Sqlite)
                .map_err(diesel::r2d2::Error::ConnectionError)?,
            Target::Postgres(url) => PgConnection::establish(url.expose_secret())
                .map(DbConn::Postgres)
                .map_err(diesel::r2d2::Error::ConnectionError)?,
        };
        Ok(PoolConn { conn, confirmed: Some(std::time::Instant::now()) })
    }

    fn is_valid(&self, conn: &mut PoolConn) -> Result<(), Self::Error> {
        use diesel::connection::SimpleConnection;
        if conn.confirmed.is_some_and(|t| t.elapsed() < CONFIRMED_FOR) {
            return Ok(());
        }
        conn.conn.batch_execute("SELECT 1").map_err(diesel::r2d2::Error::QueryError)?;
        conn.confirmed = Some(std::time::Instant::now());
        Ok(())
    }

    fn has_broken(&self, conn: &mut PoolConn) -> bool {
        use diesel::connection::TransactionManager;
        let failed = STATEMENT_FAILED.with(std::cell::Cell::take);
        conn.confirmed = if failed { None } else { Some(std::time::Instant::now()) };
        std::thread::panicking()
            || <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(&mut conn.conn)
    }
}

/// Sets the SQLite pragmas (and the PostgreSQL lock timeout) on every new connection.
#[derive(Debug)]
struct Pragmas {
    busy_timeout: Duration,
    memory: bool,
}

impl CustomizeConnection<PoolConn, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut PoolConn) -> Result<(), diesel::r2d2::Error> {
        let conn = &mut conn.conn;
        use diesel::connection::SimpleConnection;
        if let DbConn::Sqlite(c) = conn {
            let ms = self.busy_timeout.as_millis().min(i32::MAX as u128);
            let journal = if self.memory { "MEMORY" } else { "WAL" };
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = {ms}; PRAGMA journal_mode = {journal}; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384;"
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        if let DbConn::Postgres(c) = conn {
            // A lock held elsewhere (an advisory lock, a table lock) fails cleanly instead of hanging.
            let ms = self.busy_timeout.as_millis().clamp(1, i32::MAX as u128);
            c.batch_execute(&format!("SET lock_timeout = {ms}")).map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// The pool of a store.
pub(crate) type DbPool = Pool<Manager>;
/// A connection taken from the pool.
pub(crate) type Pooled = PooledConnection<Manager>;

/// Makes a SQLite database file, and the WAL and shared-memory files SQLite makes beside it,
/// readable by the owner only: they hold classified material. (The store creates no directory:
/// the server creates its data directory owner-only.)
///
/// The file is created (empty) with mode 0600 before SQLite opens it, since SQLite gives its
/// `-wal` and `-shm` files the database file's mode; files left wider by an earlier version
/// are narrowed.
fn private_sqlite_files(path: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let unavailable = |what: &str| {
            tracing::error!(what, "cannot prepare the SQLite database file");
            Error::Unavailable
        };
        let file = std::path::Path::new(path);
        if file.parent().is_some_and(|d| !d.as_os_str().is_empty() && !d.exists()) {
            // SQLite reports the missing directory.
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(file)
            .map_err(|_| unavailable("file"))?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = format!("{path}{suffix}");
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|_| unavailable("permissions"))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens the pool and applies pending migrations.
pub(crate) fn open_pool(url: &DatabaseUrl, options: &StoreOptions) -> Result<(DbPool, Backend)> {
    if let Target::Sqlite { path, memory: false } = &url.0 {
        private_sqlite_files(path.expose_secret())?;
    }
    let (backend, memory) = (url.backend(), url.is_memory());
    let size = if memory { 1 } else { options.pool_size.max(1) };
    let mut builder = pool_builder(size, options, memory);
    if memory {
        // The database lives only as long as its one connection.
        builder = builder.idle_timeout(None).max_lifetime(None);
    }
    if backend == Backend::Sqlite {
        // A SQLite connection is a file handle: there is no server that could have dropped it.
        builder = builder.test_on_check_out(false);
    }
    let pool = builder.build(Manager { target: url.clone() })?;
    let mut conn = pool.get()?;
    migrate(&mut conn)?;
    Ok((pool, backend))
}

/// Connections kept apart for ingestions' search helpers (PostgreSQL): one computing vectors
/// and one merging the index's pending list after a call ([`crate::ahead`]).
const HELPER_CONNECTIONS: u32 = 2;

/// PostgreSQL: the pool the search helpers take their connections from, apart from the store's
/// pool so that they never take a connection a caller of the store counted on (a caller waits
/// for one of the store's `pool_size` connections, never for a helper's). Opened lazily.
pub(crate) fn helper_pool(url: &DatabaseUrl, options: &StoreOptions) -> Result<DbPool> {
    Ok(pool_builder(HELPER_CONNECTIONS, options, false).build(Manager { target: url.clone() })?)
}

/// The access journal's own connection ([`crate::log`]'s writer), apart from the store's pool:
/// the writer never waits behind the readers whose entries it is to commit. An in-memory
/// database has one connection, the store's.
pub(crate) fn journal_pool(url: &DatabaseUrl, options: &StoreOptions, store: &DbPool) -> Result<DbPool> {
    if url.is_memory() {
        return Ok(store.clone());
    }
    let mut builder = pool_builder(1, options, false);
    if url.backend() == Backend::Sqlite {
        builder = builder.test_on_check_out(false);
    }
    Ok(builder.build(Manager { target: url.clone() })?)
}

/// A pool of at most `size` connections, each set up by [`Pragmas`], opened as needed (an
/// in-memory database keeps its one connection).
fn pool_builder(size: u32, options: &StoreOptions, memory: bool) -> r2d2::Builder<Manager> {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(if memory { 1 } else { 0 }))
        .connection_timeout(options.busy_timeout.max(Duration::from_millis(100)))
        .connection_customizer(Box::new(Pragmas { busy_timeout: options.busy_timeout, memory }))
}

/// Applies every pending migration of the connection's backend.
fn migrate(conn: &mut DbConn) -> Result<()> {
    if up_to_date(conn) {
        // Nothing to apply: a role that may not create tables (the server's least-privilege
        // role, docs/postgres-least-privilege.sql) opens the store all the same.
        return Ok(());
    }
    let done = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        DbConn::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ()),
    };
    // The migration error quotes the database's text, which can carry the failing SQL: not logged.
    done.map_err(|_| {
        tracing::error!(backend = ?conn.backend(), "schema migration failed");
        Error::Migration
    })
}

#[derive(diesel::QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// Whether every embedded migration is recorded as applied, read without writing anything (the
/// migration harness would first create its bookkeeping table, which needs more privileges).
fn up_to_date(conn: &mut DbConn) -> bool {
    use diesel::{RunQueryDsl as _, migration::MigrationSource};
    let applied: Vec<AppliedVersion> =
        match diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load(conn) {
            Ok(rows) => rows,
            Err(_) => return false,
        };
    let applied: std::collections::HashSet<String> = applied.into_iter().map(|r| r.version).collect();
    let wanted: Vec<String> = match conn {
        DbConn::Sqlite(_) => MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
            .map(|m| m.iter().map(|m| m.name().version().to_string()).collect())
            .unwrap_or_default(),
        DbConn::Postgres(_) => MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS)
            .map(|m| m.iter().map(|m| m.name().version().to_string()).collect())
            .unwrap_or_default(),
    };
    !wanted.is_empty() && wanted.iter().all(|v| applied.contains(v))
}

/// What a transaction opened by [`in_transaction`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxMode {
    /// A write: SQLite takes its write lock at `BEGIN IMMEDIATE`; PostgreSQL starts a plain
    /// transaction (the caller takes whatever lock it needs).
    Write,
    /// Several reads that must agree with each other (a page and its count): one snapshot for
    /// all of them. SQLite's deferred `BEGIN` holds the snapshot its first read takes until the
    /// end; PostgreSQL's default level would give each statement a snapshot of its own, so the
    /// transaction is `REPEATABLE READ, READ ONLY`.
    Read,
}

/// Runs `f` in one transaction of the given mode; commits when it returns `Ok`, rolls back on
/// any error.
pub(crate) fn in_transaction<T>(
    conn: &mut DbConn,
    mode: TxMode,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    match (&mut *conn, mode) {
        (DbConn::Sqlite(c), TxMode::Write) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
        }
        (DbConn::Sqlite(c), TxMode::Read) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN DEFERRED")?
        }
        (DbConn::Postgres(c), TxMode::Write) => AnsiTransactionManager::begin_transaction(c)?,
        (DbConn::Postgres(c), TxMode::Read) => AnsiTransactionManager::begin_transaction_sql(
            c,
            "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )?,
    }
    match f(conn) {
        Ok(v) => {
            <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(v)
        }
        Err(e) => {
            if let Err(rollback) = <DbConn as Connection>::TransactionManager::rollback_transaction(conn) {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

/// Raw SQL with bind parameters, written once for both backends: the builder writes each
/// backend's placeholder (`?` or `$n`).
pub(crate) struct Sql<'a> {
    backend: Backend,
    query: BoxedSqlQuery<'a, MultiBackend, SqlQuery>,
    binds: usize,
}

impl<'a> Sql<'a> {
    /// An empty statement for `backend`.
    pub(crate) fn new(backend: Backend) -> Self {
        Self { backend, query: diesel::sql_query("").into_boxed(), binds: 0 }
    }

    /// The backend this statement is written for.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        let q = std::mem::replace(&mut self.query, diesel::sql_query("").into_boxed());
        self.query = q.sql(sql);
        self
    }

    /// Appends a placeholder and binds `value` to it.
    pub(crate) fn bind<ST, V>(&mut self, value: V) -> &mut Self
    where
        MultiBackend: HasSqlType<ST>,
        V: ToSql<ST, MultiBackend> + Send + 'a,
        ST: Send + 'a,
    {
        self.binds += 1;
        let placeholder = match self.backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${}", self.binds),
        };
        let q = std::mem::replace(&mut self.query, diesel::sql_query("").into_boxed());
        self.query = q.sql(placeholder).bind::<ST, V>(value);
        self
    }

    /// The finished statement.
    pub(crate) fn build(self) -> BoxedSqlQuery<'a, MultiBackend, SqlQuery> {
        self.query
    }

    /// The finished statement, kept prepared in the connection's statement cache (keyed by its
    /// SQL text). Only for statements of a fixed shape: one whose text varies with its input
    /// (an `IN` list) would fill the cache.
    pub(crate) fn build_cached(self) -> Cached<'a> {
        Cached(self.query)
    }
}

/// A [`Sql`] statement that the connection prepares once and reuses; see [`Sql::build_cached`].
///
/// Diesel never caches raw SQL statements, since it cannot know their text is fixed; reads on a
/// hot path paid SQLite's parse and plan on every call.
pub(crate) struct Cached<'a>(BoxedSqlQuery<'a, MultiBackend, SqlQuery>);

impl diesel::query_builder::QueryFragment<MultiBackend> for Cached<'_> {
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, MultiBackend>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &MultiBackend) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl diesel::query_builder::QueryId for Cached<'_> {
    type QueryId = ();
    // No static id: the cache is keyed by the statement's SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Cached<'_> {
    type SqlType = diesel::expression::expression_types::Untyped;
}

impl<Conn> diesel::RunQueryDsl<Conn> for Cached<'_> {}
