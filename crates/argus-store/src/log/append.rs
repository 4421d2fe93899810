//! Appends to an organisation's log: the entries' rows with their leaf bytes, and the stored
//! hashes their leaves complete, read and written through [`StoredHashes`], inside the caller's
//! transaction, which holds the organisation's lock. A batch of entries (the access journal's)
//! costs a few statements whatever its size.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
};

use argus_crypto::tlog::{self, HashSource};
use argus_domain::oversight::{AccessEntry, AttachmentEntry, AuditEntry, LogEntry};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Nullable, SmallInt, Text},
};

use super::Digest;
use crate::{
    Error, Result,
    db::{Backend, DbConn, Sql},
    read::push_ids,
};

/// The stored hashes of one organisation's log, read in one statement per request.
pub(crate) struct StoredHashes<'c> {
    conn: RefCell<&'c mut DbConn>,
    org: &'c str,
    /// The store's own error behind the last failed read (the tree code only sees that it
    /// failed).
    failure: Cell<Option<Error>>,
}

impl<'c> StoredHashes<'c> {
    /// The hashes of `org`'s log, read on `conn`.
    pub(crate) fn new(conn: &'c mut DbConn, org: &'c str) -> Self {
        Self { conn: RefCell::new(conn), org, failure: Cell::new(None) }
    }

    /// What a tree operation's failure means: the store's error when a read failed, else
    /// `otherwise` (the hashes asked for are not all stored).
    pub(crate) fn error(&self, otherwise: Error) -> Error {
        self.failure.take().unwrap_or(otherwise)
    }

    /// Writes `hashes`, each at its stored-hash index.
    fn store_at(&self, hashes: &[(u64, Digest)]) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.borrow_mut();
        let mut sql = Sql::new(conn.backend());
        sql.push("INSERT INTO log_hashes (org_id, hash_index, hash) VALUES ");
        for (i, (at, hash)) in hashes.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").bind::<Text, _>(self.org.to_owned()).push(", ");
            sql.bind::<BigInt, _>(index(*at)?).push(", ");
            sql.bind::<Text, _>(hex::encode(hash)).push(")");
        }
        execute(&mut conn, sql, hashes.len() == 1)?;
        Ok(())
    }

    fn read(&self, indexes: &[u64]) -> Result<Vec<Digest>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            hash_index: i64,
            #[diesel(sql_type = Text)]
            hash: String,
        }
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = indexes.iter().map(|i| index(*i)).collect::<Result<Vec<_>>>()?;
        let mut conn = self.conn.borrow_mut();
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT hash_index, hash FROM log_hashes WHERE org_id = ")
            .bind::<Text, _>(self.org.to_owned());
        sql.push(" AND hash_index IN ");
        push_ids(&mut sql, &wanted);
        let rows: Vec<Row> = sql.build().load(&mut **conn)?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(row.hash_index, digest(&row.hash)?);
        }
        wanted
            .iter()
            .map(|i| found.get(i).copied().ok_or(Error::invalid("log", "the tree does not reach that far")))
            .collect()
    }
}

impl HashSource for StoredHashes<'_> {
    fn hashes(&self, indexes: &[u64]) -> argus_crypto::Result<Vec<Digest>> {
        self.read(indexes).map_err(|e| {
            self.failure.set(Some(e));
            argus_crypto::Error::BadProof
        })
    }
}

/// A stored index as the database keeps it.
pub(crate) fn index(i: u64) -> Result<i64> {
    i64::try_from(i).map_err(|_| Error::invalid("log", "index out of range"))
}

/// A stored hex digest.
pub(crate) fn digest(hex_text: &str) -> Result<Digest> {
    crate::rows::hash32(hex_text).ok_or(Error::Corrupt("a stored log hash is malformed"))
}

/// The size of `org`'s log: its next index.
pub(crate) fn size(conn: &mut DbConn, org: &str) -> Result<u64> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<BigInt>)]
        last: Option<i64>,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT MAX(idx) AS last FROM log_entries WHERE org_id = ").bind::<Text, _>(org.to_owned());
    let row: Row = sql.build_cached().get_result(conn)?;
    Ok(row.last.map_or(0, |l| l.unsigned_abs() + 1))
}

/// The columns of a log entry besides its bytes: what the access journal filters and gates on.
#[derive(Debug, Default)]
struct Columns<'a> {
    classification: i16,
    at: i64,
    actor: Option<&'a str>,
    action: Option<&'a str>,
    query: Option<&'a str>,
    item_count: Option<i64>,
    seq: Option<i64>,
    event_id: Option<&'a str>,
    rooms: &'a [String],
}

/// Entries per `INSERT` statement (twelve binds each).
const ENTRIES_PER_INSERT: usize = 256;
/// Stored hashes per `INSERT` statement (three binds each).
const HASHES_PER_INSERT: usize = 1_000;

/// The stored hashes of one append: those computed for the batch's earlier leaves first, then
/// the store's (read once, for the batch's first leaf: the tree's frontier).
struct Pending<'c, 'h> {
    stored: &'h StoredHashes<'c>,
    new: RefCell<HashMap<u64, Digest>>,
}

impl HashSource for Pending<'_, '_> {
    fn hashes(&self, indexes: &[u64]) -> argus_crypto::Result<Vec<Digest>> {
        let new = self.new.borrow();
        let missing: Vec<u64> = indexes.iter().copied().filter(|i| !new.contains_key(i)).collect();
        let read: HashMap<u64, Digest> = if missing.is_empty() {
            HashMap::new()
        } else {
            missing.iter().copied().zip(self.stored.hashes(&missing)?).collect()
        };
        Ok(indexes.iter().map(|i| new.get(i).or_else(|| read.get(i)).copied().unwrap_or_default()).collect())
    }
}

/// Appends `entries` to `org`'s log, in order; returns their indexes. A few statements whatever
/// their number: the log's size, its frontier's hashes, and batched inserts of the entries,
/// their rooms and the hashes they complete.
fn append(conn: &mut DbConn, org: &str, entries: &[(LogEntry, Columns<'_>)]) -> Result<Vec<u64>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let first = size(conn, org)?;
    let backend = conn.backend();
    let mut texts = Vec::with_capacity(entries.len());
    let mut hashes_new: Vec<(u64, Digest)> = Vec::with_capacity(entries.len() * 2);
    {
        let stored = StoredHashes::new(conn, org);
        let pending = Pending { stored: &stored, new: RefCell::new(HashMap::new()) };
        for (offset, (entry, _)) in entries.iter().enumerate() {
            let n = first + offset as u64;
            let bytes = entry.canonical();
            let leaf = tlog::leaf_hash(&bytes);
            texts.push(String::from_utf8(bytes).map_err(|_| Error::Corrupt("a log entry is not UTF-8"))?);
            let new = tlog::hashes_to_store(n, leaf, &pending)
                .map_err(|_| stored.error(Error::Corrupt("the log's stored hashes are incomplete")))?;
            let start = tlog::stored_hash_index(0, n);
            let mut cache = pending.new.borrow_mut();
            for (i, hash) in new.into_iter().enumerate() {
                cache.insert(start + i as u64, hash);
                hashes_new.push((start + i as u64, hash));
            }
        }
    }
    let rows: Vec<(u64, &(LogEntry, Columns<'_>), String)> = entries
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(offset, (e, text))| (first + offset as u64, e, text))
        .collect();
    // SQLite: one row a statement, prepared once and reused (a statement of another length would
    // be parsed anew for each batch); PostgreSQL: many rows a statement (one round trip).
    let (entries_per, hashes_per) =
        if backend == Backend::Sqlite { (1, 1) } else { (ENTRIES_PER_INSERT, HASHES_PER_INSERT) };
    for chunk in rows.chunks(entries_per) {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO log_entries (org_id, idx, kind, leaf, classification, at, actor, action, query, \
             item_count, seq, event_id) VALUES ",
        );
        for (i, (n, (entry, columns), text)) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(index(*n)?).push(", ");
            sql.bind::<Text, _>(entry.kind().to_owned()).push(", ").bind::<Text, _>(text.clone()).push(", ");
            sql.bind::<SmallInt, _>(columns.classification)
                .push(", ")
                .bind::<BigInt, _>(columns.at)
                .push(", ");
            sql.bind::<Nullable<Text>, _>(columns.actor.map(str::to_owned)).push(", ");
            sql.bind::<Nullable<Text>, _>(columns.action.map(str::to_owned)).push(", ");
            sql.bind::<Nullable<Text>, _>(columns.query.map(str::to_owned)).push(", ");
            sql.bind::<Nullable<BigInt>, _>(columns.item_count).push(", ");
            sql.bind::<Nullable<BigInt>, _>(columns.seq).push(", ");
            sql.bind::<Nullable<Text>, _>(columns.event_id.map(str::to_owned)).push(")");
        }
        execute(conn, sql, chunk.len() == 1)?;
    }
    let mut rooms: Vec<(u64, &str)> = Vec::new();
    for (n, (_, columns), _) in &rows {
        let mut own: Vec<&str> = columns.rooms.iter().map(String::as_str).collect();
        own.sort_unstable();
        own.dedup();
        rooms.extend(own.into_iter().map(|r| (*n, r)));
    }
    for chunk in rooms.chunks(hashes_per) {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO log_entry_rooms (org_id, idx, room_id) VALUES ");
        for (i, (n, room)) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(index(*n)?);
            sql.push(", ").bind::<Text, _>((*room).to_owned()).push(")");
        }
        execute(conn, sql, chunk.len() == 1)?;
    }
    let stored = StoredHashes::new(conn, org);
    for chunk in hashes_new.chunks(hashes_per) {
        stored.store_at(chunk)?;
    }
    Ok(rows.iter().map(|(n, _, _)| *n).collect())
}

/// Runs an insert: prepared once and kept when it has one row (its text is then always the
/// same), else prepared for this once.
fn execute(conn: &mut DbConn, sql: Sql, one_row: bool) -> Result<()> {
    if one_row {
        sql.build_cached().execute(conn)?;
    } else {
        sql.build().execute(conn)?;
    }
    Ok(())
}

/// Appends one entry; its index.
fn append_one(conn: &mut DbConn, org: &str, entry: LogEntry, columns: Columns<'_>) -> Result<u64> {
    let indexes = append(conn, org, &[(entry, columns)])?;
    indexes.first().copied().ok_or(Error::Corrupt("an append returned no index"))
}

/// Appends an audit record's entry to its organisation's log (inside [`crate::audit::append`]).
pub(crate) fn append_audit(conn: &mut DbConn, entry: &AuditEntry) -> Result<u64> {
    let columns = Columns {
        classification: entry.classification.rank(),
        at: entry.finished_at.unwrap_or(entry.started_at),
        actor: Some(&entry.actor),
        action: Some(&entry.action),
        seq: Some(entry.seq),
        ..Columns::default()
    };
    append_one(conn, &entry.org, LogEntry::Audit(entry.clone()), columns)
}

/// The columns of a read of content.
fn access_columns(entry: &AccessEntry) -> Result<Columns<'_>> {
    let item_count =
        i64::try_from(entry.item_count).map_err(|_| Error::invalid("access", "too many items"))?;
    Ok(Columns {
        classification: entry.classification.rank(),
        at: entry.at,
        actor: Some(&entry.actor),
        action: Some(entry.action.as_str()),
        query: entry.query.as_deref(),
        item_count: Some(item_count),
        rooms: &entry.room_ids,
        ..Columns::default()
    })
}

/// Appends reads of content, all of one organisation, to its log in order (the journal's
/// writer); their indexes.
pub(crate) fn append_accesses(conn: &mut DbConn, org: &str, entries: &[&AccessEntry]) -> Result<Vec<u64>> {
    let rows = entries
        .iter()
        .map(|e| Ok((LogEntry::Access((*e).clone()), access_columns(e)?)))
        .collect::<Result<Vec<_>>>()?;
    append(conn, org, &rows)
}

/// Appends a held file's entry to its organisation's log (when its blob is recorded).
pub(crate) fn append_attachment(conn: &mut DbConn, entry: &AttachmentEntry) -> Result<u64> {
    let columns = Columns {
        classification: entry.classification.rank(),
        at: entry.at,
        event_id: Some(&entry.event_id),
        ..Columns::default()
    };
    append_one(conn, &entry.org, LogEntry::Attachment(entry.clone()), columns)
}
