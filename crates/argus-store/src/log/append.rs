//! Appends to an organisation's log: the entry's row with its leaf bytes, and the stored hashes
//! its leaf completes, read and written through [`StoredHashes`] (one statement each), inside
//! the caller's transaction, which holds the organisation's lock.

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
    db::{DbConn, Sql},
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

    /// Writes `hashes` at consecutive stored-hash indexes from `start`.
    fn store(&self, start: u64, hashes: &[Digest]) -> Result<()> {
        let mut conn = self.conn.borrow_mut();
        let mut sql = Sql::new(conn.backend());
        sql.push("INSERT INTO log_hashes (org_id, hash_index, hash) VALUES ");
        for (i, hash) in hashes.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").bind::<Text, _>(self.org.to_owned()).push(", ");
            sql.bind::<BigInt, _>(index(start + i as u64)?).push(", ");
            sql.bind::<Text, _>(hex::encode(hash)).push(")");
        }
        sql.build().execute(&mut **conn)?;
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

/// Appends `entry` to `org`'s log; returns its index.
fn append(conn: &mut DbConn, org: &str, entry: &LogEntry, columns: &Columns<'_>) -> Result<u64> {
    let n = size(conn, org)?;
    let bytes = entry.canonical();
    let leaf = tlog::leaf_hash(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt("a log entry is not UTF-8"))?;
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO log_entries (org_id, idx, kind, leaf, classification, at, actor, action, query, \
         item_count, seq, event_id) VALUES (",
    );
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(index(n)?).push(", ");
    sql.bind::<Text, _>(entry.kind().to_owned()).push(", ").bind::<Text, _>(text).push(", ");
    sql.bind::<SmallInt, _>(columns.classification).push(", ").bind::<BigInt, _>(columns.at).push(", ");
    sql.bind::<Nullable<Text>, _>(columns.actor.map(str::to_owned)).push(", ");
    sql.bind::<Nullable<Text>, _>(columns.action.map(str::to_owned)).push(", ");
    sql.bind::<Nullable<Text>, _>(columns.query.map(str::to_owned)).push(", ");
    sql.bind::<Nullable<BigInt>, _>(columns.item_count).push(", ");
    sql.bind::<Nullable<BigInt>, _>(columns.seq).push(", ");
    sql.bind::<Nullable<Text>, _>(columns.event_id.map(str::to_owned)).push(")");
    sql.build_cached().execute(conn)?;
    if !columns.rooms.is_empty() {
        let mut rooms: Vec<&str> = columns.rooms.iter().map(String::as_str).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO log_entry_rooms (org_id, idx, room_id) VALUES ");
        for (i, room) in rooms.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(index(n)?);
            sql.push(", ").bind::<Text, _>((*room).to_owned()).push(")");
        }
        sql.build().execute(conn)?;
    }
    let hashes = StoredHashes::new(conn, org);
    let new = tlog::hashes_to_store(n, leaf, &hashes)
        .map_err(|_| hashes.error(Error::Corrupt("the log's stored hashes are incomplete")))?;
    hashes.store(tlog::stored_hash_index(0, n), &new)?;
    Ok(n)
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
    append(conn, &entry.org, &LogEntry::Audit(entry.clone()), &columns)
}

/// Appends a read of content to its organisation's log (the journal's writer).
pub(crate) fn append_access(conn: &mut DbConn, entry: &AccessEntry) -> Result<u64> {
    let item_count =
        i64::try_from(entry.item_count).map_err(|_| Error::invalid("access", "too many items"))?;
    let columns = Columns {
        classification: entry.classification.rank(),
        at: entry.at,
        actor: Some(&entry.actor),
        action: Some(entry.action.as_str()),
        query: entry.query.as_deref(),
        item_count: Some(item_count),
        rooms: &entry.room_ids,
        ..Columns::default()
    };
    append(conn, &entry.org, &LogEntry::Access(entry.clone()), &columns)
}

/// Appends a held file's entry to its organisation's log (when its blob is recorded).
pub(crate) fn append_attachment(conn: &mut DbConn, entry: &AttachmentEntry) -> Result<u64> {
    let columns = Columns {
        classification: entry.classification.rank(),
        at: entry.at,
        event_id: Some(&entry.event_id),
        ..Columns::default()
    };
    append(conn, &entry.org, &LogEntry::Attachment(entry.clone()), &columns)
}
