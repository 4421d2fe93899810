//! Reads of an organisation's log for operators and exporters: its head, inclusion and
//! consistency proofs (each reads its stored hashes in one statement) and entries by index.

use argus_crypto::tlog;
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Text},
};

use super::{
    Digest, LogEntryRecord, TreeHead,
    append::{StoredHashes, index, size},
};
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    read::push_ids,
};

/// Refused proofs: sizes or an index outside the log.
const OUTSIDE: Error = Error::Invalid(argus_domain::Error::Invalid {
    kind: "log proof",
    reason: "the index or sizes are outside the log",
});

/// The head of `org`'s log.
pub(crate) fn head(conn: &mut DbConn, org: &str) -> Result<TreeHead> {
    let size = size(conn, org)?;
    if size == 0 {
        return Ok(TreeHead { size, root: tlog::EMPTY_ROOT });
    }
    let hashes = StoredHashes::new(conn, org);
    let root = tlog::tree_root(size, &hashes)
        .map_err(|_| hashes.error(Error::Corrupt("the log's stored hashes are incomplete")))?;
    Ok(TreeHead { size, root })
}

/// The inclusion proof of entry `index` at `size`: its stored hashes read in one statement.
pub(crate) fn inclusion(conn: &mut DbConn, org: &str, entry: u64, size: u64) -> Result<Vec<Digest>> {
    if entry >= size {
        return Err(OUTSIDE);
    }
    let hashes = StoredHashes::new(conn, org);
    tlog::prove_inclusion(size, entry, &hashes).map_err(|_| hashes.error(OUTSIDE))
}

/// The consistency proof from `old_size` to `new_size`: its stored hashes read in one statement.
pub(crate) fn consistency(conn: &mut DbConn, org: &str, old_size: u64, new_size: u64) -> Result<Vec<Digest>> {
    if old_size > new_size {
        return Err(OUTSIDE);
    }
    if old_size == 0 || old_size == new_size {
        // Nothing to prove (RFC 9162 §2.1.4); the new size must still be in the log.
        if new_size > 0 {
            let hashes = StoredHashes::new(conn, org);
            tlog::tree_root(new_size, &hashes).map_err(|_| hashes.error(OUTSIDE))?;
        }
        return Ok(Vec::new());
    }
    let hashes = StoredHashes::new(conn, org);
    tlog::prove_consistency(old_size, new_size, &hashes).map_err(|_| hashes.error(OUTSIDE))
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(sql_type = Text)]
    leaf: String,
}

impl EntryRow {
    fn record(self) -> LogEntryRecord {
        LogEntryRecord { index: self.idx.unsigned_abs(), bytes: self.leaf.into_bytes() }
    }
}

/// The entries at `indexes` (those that exist), in index order.
pub(crate) fn entries(conn: &mut DbConn, org: &str, indexes: &[u64]) -> Result<Vec<LogEntryRecord>> {
    let wanted = indexes.iter().filter_map(|i| index(*i).ok()).collect::<Vec<_>>();
    let mut out = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(conn.backend().max_binds() - 1) {
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT idx, leaf FROM log_entries WHERE org_id = ").bind::<Text, _>(org.to_owned());
        sql.push(" AND idx IN ");
        push_ids(&mut sql, chunk);
        let rows: Vec<EntryRow> = sql.build().load(conn)?;
        out.extend(rows.into_iter().map(EntryRow::record));
    }
    out.sort_by_key(|r| r.index);
    out.dedup_by_key(|r| r.index);
    Ok(out)
}

/// The `AUDIT` entry of the record `seq` of `org`'s chain, if the log holds one.
pub(crate) fn audit_entry(conn: &mut DbConn, org: &str, seq: i64) -> Result<Option<LogEntryRecord>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT idx, leaf FROM log_entries WHERE org_id = ").bind::<Text, _>(org.to_owned());
    sql.push(" AND seq = ").bind::<BigInt, _>(seq);
    let rows: Vec<EntryRow> = sql.build_cached().load(conn)?;
    Ok(rows.into_iter().next().map(EntryRow::record))
}

/// The newest `ATTACHMENT` entry of the message `event_id`, if the log holds one.
pub(crate) fn attachment_entry(
    conn: &mut DbConn,
    org: &str,
    event_id: &str,
) -> Result<Option<LogEntryRecord>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT idx, leaf FROM log_entries WHERE org_id = ").bind::<Text, _>(org.to_owned());
    sql.push(" AND event_id = ").bind::<Text, _>(event_id.to_owned());
    sql.push(" AND kind = 'ATTACHMENT' ORDER BY idx DESC LIMIT 1");
    let rows: Vec<EntryRow> = sql.build_cached().load(conn)?;
    Ok(rows.into_iter().next().map(EntryRow::record))
}
