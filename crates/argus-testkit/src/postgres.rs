//! A throw-away PostgreSQL cluster for tests, started from the machine's own binaries.
//!
//! One cluster per test process is started lazily by [`cluster`] (`initdb` + `pg_ctl` on a free
//! loopback port, trust authentication, `fsync=off`), and each test asks for its own database with
//! [`fresh_database`]; the database is dropped when the [`TestDatabase`] goes out of scope. A
//! test that stops and restarts the server takes a cluster of its own with [`own_cluster`].
//!
//! The cluster is removed when the test process exits: a small detached watchdog polls the test
//! process and then stops the server (`pg_ctl stop -m immediate`) and deletes its directory.
//!
//! When the binaries are missing (or the cluster cannot start) the tier is skipped with a loud
//! message on stderr; with `ARGUS_REQUIRE_POSTGRES=1` it panics instead.
//!
//! When the current user is root, PostgreSQL binaries run as the `postgres` user through
//! `runuser -u postgres --` (initdb refuses to run as root).
//!
//! ```no_run
//! let Some(db) = argus_testkit::postgres::fresh_database() else {
//!     return; // skipped loudly
//! };
//! assert!(db.url().starts_with("postgres://postgres@127.0.0.1:"));
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{Tier, is_root, spawn_watchdog, unique_suffix};

static POSTGRES: Tier<PgCluster> = Tier::new("PostgreSQL", "PostgreSQL tier", REQUIRE_ENV);

/// Environment variable that turns a missing PostgreSQL into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_POSTGRES";

/// A running throw-away PostgreSQL cluster (one per test process, see [`cluster`]).
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    admin_url: String,
    data_dir: PathBuf,
    psql: PathBuf,
    pg_ctl: PathBuf,
    log: PathBuf,
    as_postgres: bool,
}

impl PgCluster {
    /// URL of the `postgres` maintenance database, as the `postgres` superuser
    /// (`postgres://postgres@127.0.0.1:PORT/postgres`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The loopback TCP port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: connections are cut, as when the
    /// database host fails). Every database of the cluster goes down with it: call it on a
    /// cluster of the test's own ([`own_cluster`]), never on the process's shared one.
    pub fn stop_now(&self) -> anyhow::Result<()> {
        let output = pg_command(&self.pg_ctl, self.as_postgres)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl stop")?;
        check_output(&output, "pg_ctl stop")
    }

    /// Starts the server again after [`PgCluster::stop_now`], on the same port.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let output = pg_command(&self.pg_ctl, self.as_postgres)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        check_output(&output, "pg_ctl start")
    }

    /// The cluster's data directory (removed when the test process exits).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs one SQL statement against the maintenance database with `psql`.
    pub fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.execute_on(&self.admin_url, sql)
    }

    /// Runs one SQL statement with `psql` against `url` and returns its unaligned output.
    pub fn query(&self, url: &str, sql: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        // The statement goes on standard input: a long one (a scan of every column) would pass
        // the kernel's bound on one argument.
        let mut child = Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.psql.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).context("writing the statement to psql")?;
        }
        let output = child.wait_with_output().with_context(|| format!("running {}", self.psql.display()))?;
        let shown: String = sql.chars().take(2000).collect();
        check_output(&output, &format!("psql -c {shown:?}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn execute_on(&self, url: &str, sql: &str) -> anyhow::Result<()> {
        self.query(url, sql).map(drop)
    }

    /// Creates a new, empty database with a unique name and returns its guard.
    pub fn create_database(&'static self) -> anyhow::Result<TestDatabase> {
        let name = format!("argus_test_{}", unique_suffix());
        let sql = format!("CREATE DATABASE \"{name}\"");
        // Concurrent CREATE DATABASE can transiently fail while another one copies the template.
        let mut attempt = 0;
        loop {
            match self.execute(&sql) {
                Ok(()) => break,
                Err(error) if attempt < 5 && format!("{error:#}").contains("being accessed") => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
                Err(error) => return Err(error.context(format!("creating database {name}"))),
            }
        }
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", self.port);
        Ok(TestDatabase { cluster: self, name, url })
    }
}

/// A database of its own for one test, dropped (`DROP DATABASE … WITH (FORCE)`) on Drop.
#[derive(Debug)]
pub struct TestDatabase {
    cluster: &'static PgCluster,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Connection URL: `postgres://postgres@127.0.0.1:PORT/argus_test_<unique>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name (`argus_test_<unique>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster that holds this database.
    pub fn cluster(&self) -> &'static PgCluster {
        self.cluster
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(error) = self.cluster.execute(&sql) {
            eprintln!("argus-testkit: could not drop test database {}: {error:#}", self.name);
        }
    }
}

/// Returns a fresh, empty database on the process's throw-away cluster.
///
/// Returns `None` after a loud SKIP message on stderr when PostgreSQL is unavailable.
///
/// # Panics
///
/// When PostgreSQL is unavailable and `ARGUS_REQUIRE_POSTGRES=1`, or when the cluster is running
/// but the database cannot be created (a real failure, not a missing dependency).
pub fn fresh_database() -> Option<TestDatabase> {
    let cluster = cluster()?;
    match cluster.create_database() {
        Ok(db) => Some(db),
        Err(error) => panic!("argus-testkit: creating a test database failed: {error:#}"),
    }
}

/// The process's throw-away PostgreSQL cluster, started on first use.
///
/// Returns `None` after a loud SKIP message on stderr when the PostgreSQL binaries are missing or
/// the cluster cannot start.
///
/// # Panics
///
/// When PostgreSQL is unavailable and `ARGUS_REQUIRE_POSTGRES=1`.
pub fn cluster() -> Option<&'static PgCluster> {
    POSTGRES.get(start_cluster)
}

/// A throw-away PostgreSQL cluster of the caller's own, beside the process's shared one: a test
/// that stops and restarts its server ([`PgCluster::stop_now`]) takes one, so that the other
/// tests of its process keep their databases. A new cluster on each call, removed when the test
/// process exits.
///
/// Returns `None` after a loud SKIP message on stderr when PostgreSQL is unavailable.
///
/// # Panics
///
/// When PostgreSQL is unavailable and `ARGUS_REQUIRE_POSTGRES=1`, or when the shared cluster
/// started but this one cannot (a real failure, not a missing dependency).
pub fn own_cluster() -> Option<&'static PgCluster> {
    // The shared tier decides whether PostgreSQL is there at all (skip or panic, once).
    cluster()?;
    match start_cluster() {
        // Lives as long as the process, as the shared one does (its databases borrow it).
        Ok(own) => Some(Box::leak(Box::new(own))),
        Err(error) => panic!("argus-testkit: starting a PostgreSQL cluster of its own failed: {error:#}"),
    }
}

/// Finds a PostgreSQL server binary on PATH, then in `/usr/lib/postgresql/*/bin` (newest first).
fn find_pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = crate::find_on_path(name) {
        return Some(path);
    }
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    dirs.into_iter().map(|(_, dir)| dir.join(name)).find(|path| path.is_file())
}

/// A command for a PostgreSQL server binary, run as `postgres` when we are root.
fn pg_command(binary: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn check_output(output: &Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

fn start_cluster() -> anyhow::Result<PgCluster> {
    let initdb =
        find_pg_binary("initdb").context("`initdb` not found on PATH nor in /usr/lib/postgresql/*/bin")?;
    let pg_ctl =
        find_pg_binary("pg_ctl").context("`pg_ctl` not found on PATH nor in /usr/lib/postgresql/*/bin")?;
    let psql = find_pg_binary("psql").context("`psql` not found on PATH nor in /usr/lib/postgresql/*/bin")?;
    let as_postgres = is_root();
    if as_postgres {
        let ok = Command::new("id")
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !ok {
            bail!("running as root but there is no `postgres` user to run initdb as");
        }
    }

    let base = tempfile::Builder::new()
        .prefix("argus-pg-")
        .tempdir()
        .context("creating the cluster's temporary directory")?
        .keep();
    let data_dir = base.join("data");
    // Watchdog first, so the directory goes away with the test process even if startup fails.
    spawn_watchdog(&watchdog_script(&pg_ctl, &data_dir, &base, as_postgres))?;
    if as_postgres {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base)
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!("chown postgres {} failed: {status}", base.display());
        }
    }

    let output = pg_command(&initdb, as_postgres)
        .arg("-D")
        .arg(&data_dir)
        .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
        .stdin(Stdio::null())
        .output()
        .context("running initdb")?;
    check_output(&output, "initdb")?;

    // A free port can be taken between probing and binding: retry a few times.
    let log = base.join("postgres.log");
    let mut last_error = None;
    for _ in 0..5 {
        let port = crate::free_port()?;
        let config = format!(
            "\n# argus-testkit\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 200\n",
            base.display()
        );
        fs::write(data_dir.join("postgresql.auto.conf"), config).context("writing postgresql.auto.conf")?;
        let output = pg_command(&pg_ctl, as_postgres)
            .arg("-D")
            .arg(&data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        match check_output(&output, "pg_ctl start") {
            Ok(()) => {
                let cluster = PgCluster {
                    port,
                    admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    data_dir,
                    psql,
                    pg_ctl,
                    log,
                    as_postgres,
                };
                cluster.execute("SELECT 1").context("checking the new cluster")?;
                return Ok(cluster);
            }
            Err(error) => {
                let tail = crate::tail_of_file(&log, 20);
                last_error = Some(error.context(format!("server log tail:\n{tail}")));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
}

fn watchdog_script(pg_ctl: &Path, data_dir: &Path, base: &Path, as_postgres: bool) -> String {
    let runuser = if as_postgres { "runuser -u postgres -- " } else { "" };
    format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {runuser}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{base}'",
        pid = std::process::id(),
        pg_ctl = pg_ctl.display(),
        data = data_dir.display(),
        base = base.display(),
    )
}
