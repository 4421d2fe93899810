//! Scans for secrets (the Matrix tokens of the scenario) wherever the server may have written
//! them: every byte of every file under its data directory, every line of the captured tracing
//! output, and every column of every table of the PostgreSQL database.
//!
//! Each scan also checks that it looked at something (files with bytes, log lines of the product,
//! tables with rows), so that an empty haystack cannot pass for a clean one; and
//! [`the_scans_find_a_planted_secret`] checks that each scan finds what it looks for.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_testkit::postgres::TestDatabase;

use crate::harness;

/// `haystack` contains `needle` byte for byte.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let kind = entry.file_type().with_context(|| format!("file type of {}", entry.path().display()))?;
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// No file under `dir` (database, WAL, shared memory, JSON Lines, anything else) holds a secret
/// anywhere in its bytes, free pages and journal frames included.
///
/// A file that vanishes between listing and reading (SQLite removes the WAL when the last
/// connection of a closing store checkpoints it into the database) means the other files may
/// have changed too: the whole directory is scanned again until one pass sees every file.
pub(crate) fn assert_absent_from_files(dir: &Path, secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    for _ in 0..20 {
        let mut files = Vec::new();
        files_under(dir, &mut files)?;
        let mut scanned = 0_usize;
        let mut vanished = false;
        for path in &files {
            let bytes = match fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    vanished = true;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            scanned += bytes.len();
            for secret in secrets {
                ensure!(!contains(&bytes, secret.as_bytes()), "a Matrix token is in {}", path.display());
            }
        }
        if !vanished {
            ensure!(scanned > 0, "nothing to scan under {}: {files:?}", dir.display());
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("files under {} kept vanishing while they were scanned", dir.display())
}

/// No captured log line (every level, every crate, from the start of the process) holds a secret.
pub(crate) fn assert_absent_from_logs(secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let logs = harness::captured_logs()?;
    // The capture must have seen the product at work (the ingestion use-case logs every run).
    ensure!(logs.contains("argus_ingest"), "the log capture holds no line of the product:\n{logs}");
    match leaked_line(&logs, secrets) {
        Some((number, line)) => Err(anyhow!("a Matrix token is in captured log line {number}: {line}")),
        None => Ok(()),
    }
}

/// No line of the `*.log` files of `argus-tchap serve` processes in `dir` (their standard
/// output and error) holds a secret; each file holds lines of the product.
pub(crate) fn assert_absent_from_process_logs(dir: &Path, secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let mut scanned = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let logs = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(logs.contains("argus_"), "{} holds no line of the product:\n{logs}", path.display());
        if let Some((number, line)) = leaked_line(&logs, secrets) {
            return Err(anyhow!("a secret is in line {number} of {}: {line}", path.display()));
        }
        scanned += 1;
    }
    ensure!(scanned > 0, "no process log in {}", dir.display());
    Ok(())
}

/// The first line (1-based number, text) of `logs` that holds a secret.
fn leaked_line<'a>(logs: &'a str, secrets: &[String]) -> Option<(usize, &'a str)> {
    logs.lines()
        .enumerate()
        .find(|(_, line)| secrets.iter().any(|secret| line.contains(secret.as_str())))
        .map(|(i, line)| (i + 1, line))
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column of the `public` schema: table, column, data type.
type Column = (String, String, String);

/// No column of any table in the `public` schema holds a secret: `bytea` columns are searched
/// byte for byte, every other column (text, varchar, JSON, …) through its text form.
pub(crate) fn assert_absent_from_postgres(db: &TestDatabase, secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let columns = public_columns(db)?;
    for table in ["rooms", "messages", "ingestions", "outbox"] {
        ensure!(columns.iter().any(|(t, _, _)| t == table), "table {table} not found: {columns:?}");
    }
    ensure!(columns.iter().any(|(t, c, _)| t == "messages" && c == "body"), "messages.body is not scanned");
    // Something to look at: the scenario stored messages, audit records and outbox rows.
    for table in ["messages", "ingestions", "outbox"] {
        let rows = db.cluster().query(db.url(), &format!("SELECT count(*) FROM {}", ident(table)))?;
        ensure!(rows.parse::<u64>().is_ok_and(|n| n > 0), "table {table} is empty ({rows})");
    }
    let found = leaked_columns(db, secrets, &columns)?;
    ensure!(found.is_empty(), "a Matrix token is in PostgreSQL column(s): {}", found.join(", "));
    Ok(())
}

/// Every column of every base table of the `public` schema.
fn public_columns(db: &TestDatabase) -> Result<Vec<Column>> {
    let columns = db
        .cluster()
        .query(
            db.url(),
            "SELECT c.table_name || '|' || c.column_name || '|' || c.data_type
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)
              WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
              ORDER BY c.table_name, c.ordinal_position",
        )
        .context("listing the columns of the public schema")?;
    columns
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '|').map(str::to_owned);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(table), Some(column), Some(kind)) => Ok((table, column, kind)),
                _ => Err(anyhow!("unexpected column line {line:?}")),
            }
        })
        .collect()
}

/// The `table.column`s among `columns` where some row holds a secret (one query for all).
fn leaked_columns(db: &TestDatabase, secrets: &[String], columns: &[Column]) -> Result<Vec<String>> {
    let mut checks = Vec::new();
    for (table, column, kind) in columns {
        for secret in secrets {
            let matches = if kind == "bytea" {
                format!("position(convert_to({}, 'UTF8') in {}) > 0", literal(secret), ident(column))
            } else {
                format!("strpos({}::text, {}) > 0", ident(column), literal(secret))
            };
            checks.push(format!(
                "SELECT {} FROM {} WHERE {matches}",
                literal(&format!("{table}.{column}")),
                ident(table)
            ));
        }
    }
    ensure!(!checks.is_empty(), "no column to scan");
    let sql = format!("SELECT DISTINCT * FROM ({}) AS found ORDER BY 1", checks.join(" UNION ALL "));
    let found = db.cluster().query(db.url(), &sql).context("scanning every column")?;
    Ok(found.lines().filter(|line| !line.is_empty()).map(str::to_owned).collect())
}

/// Each scan finds a secret planted where it looks (a nested binary file, a log line; text,
/// varchar, jsonb and bytea columns) and nothing where it is absent.
#[test]
fn the_scans_find_a_planted_secret() {
    let secrets = vec!["syt_cGxhbnRlZA_planted_0123456789".to_owned()];
    let s = &secrets[0];

    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("nested")).unwrap();
    fs::write(dir.path().join("clean.db"), b"nothing to see").unwrap();
    assert_absent_from_files(dir.path(), &secrets).unwrap();
    let mut bytes = vec![0_u8, 0xff, 0x13];
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    fs::write(dir.path().join("nested/leak.bin"), bytes).unwrap();
    let error = assert_absent_from_files(dir.path(), &secrets).unwrap_err();
    assert!(error.to_string().contains("leak.bin"), "{error}");

    assert_eq!(leaked_line("a\nb\n", &secrets), None);
    let logs = format!("first\nsecond token={s}\nthird");
    assert_eq!(leaked_line(&logs, &secrets).map(|(n, _)| n), Some(2));

    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let cluster = db.cluster();
    cluster
        .query(
            db.url(),
            r#"CREATE TABLE planted (id INT, t TEXT, v VARCHAR(200), j JSONB, b BYTEA, n BIGINT);
               INSERT INTO planted VALUES (1, 'clean', 'clean', '{"k": "clean"}', '\x00ff', 7);"#,
        )
        .unwrap();
    let columns = public_columns(&db).unwrap();
    assert_eq!(columns.len(), 6, "{columns:?}");
    assert!(leaked_columns(&db, &secrets, &columns).unwrap().is_empty());
    let sql = format!(
        r#"INSERT INTO planted VALUES (2, 'x {s} y', NULL, NULL, NULL, NULL),
             (3, NULL, '{s}', '{{"token": "{s}"}}', convert_to('pre{s}post', 'UTF8'), NULL)"#
    );
    cluster.query(db.url(), &sql).unwrap();
    assert_eq!(
        leaked_columns(&db, &secrets, &columns).unwrap(),
        ["planted.b", "planted.j", "planted.t", "planted.v"]
    );
}
