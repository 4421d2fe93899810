//! Scans for secrets (the Matrix tokens of the scenario) wherever the server may have written
//! them: every byte of every file under its data directory, every line of the captured tracing
//! output, and every column of every table of the PostgreSQL database.
//!
//! Each scan also checks that it looked at something (files with bytes, log lines of the product,
//! tables with rows), so that an empty haystack cannot pass for a clean one.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_testkit::postgres::TestDatabase;

use crate::harness;

/// `haystack` contains `needle` byte for byte.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
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
/// anywhere in its bytes, including free pages and journal frames.
pub(crate) fn assert_absent_from_files(dir: &Path, secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    let mut scanned = 0_usize;
    for path in &files {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        scanned += bytes.len();
        for secret in secrets {
            ensure!(!contains(&bytes, secret.as_bytes()), "a Matrix token is in {}", path.display());
        }
    }
    ensure!(scanned > 0, "nothing to scan under {}: {files:?}", dir.display());
    Ok(())
}

/// No captured log line (every level, every crate, from the start of the process) holds a secret.
pub(crate) fn assert_absent_from_logs(secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let logs = harness::captured_logs()?;
    // The capture must have seen the product at work (the ingestion use-case logs every run).
    ensure!(logs.contains("argus_graphql"), "the log capture holds no line of the product:\n{logs}");
    for (number, line) in logs.lines().enumerate() {
        for secret in secrets {
            ensure!(
                !line.contains(secret.as_str()),
                "a Matrix token is in captured log line {}: {line}",
                number + 1
            );
        }
    }
    Ok(())
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// No column of any table in the `public` schema holds a secret: text-like columns are compared
/// as text (JSON and every other type through their text form), `bytea` columns byte for byte.
pub(crate) fn assert_absent_from_postgres(db: &TestDatabase, secrets: &[String]) -> Result<()> {
    ensure!(!secrets.is_empty(), "no secrets to look for");
    let cluster = db.cluster();
    let columns = cluster
        .query(
            db.url(),
            "SELECT c.table_name || '|' || c.column_name || '|' || c.data_type
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)
              WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
              ORDER BY c.table_name, c.ordinal_position",
        )
        .context("listing the columns of the public schema")?;
    let columns: Vec<(&str, &str, &str)> = columns
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(table), Some(column), Some(kind)) => Ok((table, column, kind)),
                _ => Err(anyhow!("unexpected column line {line:?}")),
            }
        })
        .collect::<Result<_>>()?;
    for table in ["rooms", "messages", "ingestions", "outbox"] {
        ensure!(columns.iter().any(|(t, _, _)| *t == table), "table {table} not found: {columns:?}");
    }
    // Something to look at: the scenario stored messages and audit records.
    for table in ["messages", "ingestions"] {
        let rows = cluster.query(db.url(), &format!("SELECT count(*) FROM {}", ident(table)))?;
        ensure!(rows.parse::<u64>().is_ok_and(|n| n > 0), "table {table} is empty ({rows})");
    }

    let mut checks = Vec::new();
    for (table, column, kind) in &columns {
        for secret in secrets {
            let matches = if *kind == "bytea" {
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
    ensure!(checks.iter().any(|c| c.contains("'messages.body'")), "messages.body is not scanned");
    let found = cluster
        .query(db.url(), &format!("SELECT DISTINCT * FROM ({}) AS found", checks.join(" UNION ALL ")))
        .context("scanning every column")?;
    ensure!(found.is_empty(), "a Matrix token is in PostgreSQL column(s): {}", found.replace('\n', ", "));
    Ok(())
}
