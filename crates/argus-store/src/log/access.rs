//! The access journal as `tchapAccessLog` reads it: the `ACCESS` entries of the viewer's
//! organisation at or below their clearance, for a viewer holding `tchap:audit`, newest first,
//! filtered by actor and by room read; through the read gate like the audit trail.

use argus_domain::{
    Page, PageRequest,
    oversight::{AccessEntry, LogEntry},
};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Text},
};

use super::{AccessCursor, AccessFilter, AccessRecord, append::index};
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    read::{Gate, fetch_size, page_of},
};

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(sql_type = Text)]
    leaf: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `FROM log_entries e WHERE` the gate, the kind and `filter`.
fn push_from(sql: &mut Sql<'_>, gate: &Gate, filter: &AccessFilter) {
    sql.push(" FROM log_entries e WHERE ");
    gate.apply(sql, "e");
    sql.push(" AND e.kind = ").bind::<Text, _>(AccessEntry::TYPE.to_owned());
    if let Some(actor) = &filter.actor {
        sql.push(" AND e.actor = ").bind::<Text, _>(actor.clone());
    }
    if let Some(room) = &filter.room_id {
        sql.push(
            " AND EXISTS (SELECT 1 FROM log_entry_rooms lr WHERE lr.org_id = e.org_id AND lr.idx = e.idx \
             AND lr.room_id = ",
        )
        .bind::<Text, _>(room.clone())
        .push(")");
    }
}

/// A page of the journal (the caller reads page and count in one snapshot).
pub(crate) fn access_log(
    conn: &mut DbConn,
    gate: &Gate,
    page: &PageRequest<AccessCursor>,
    filter: &AccessFilter,
) -> Result<Page<AccessRecord>> {
    if !gate.reads_trails() {
        return Ok(Page { items: Vec::new(), has_next_page: false, total_count: 0 });
    }
    let backend = conn.backend();
    let (wanted, limit) = fetch_size(page.first);
    let mut sql = Sql::new(backend);
    sql.push("SELECT e.id, e.idx, e.leaf");
    push_from(&mut sql, gate, filter);
    if let Some(after) = &page.after {
        sql.push(" AND e.idx < ").bind::<BigInt, _>(index(after.index)?);
    }
    sql.push(" ORDER BY e.idx DESC LIMIT ").bind::<BigInt, _>(limit);
    let rows: Vec<Row> = sql.build().load(conn)?;
    let items = rows
        .into_iter()
        .map(|row| match LogEntry::parse(row.leaf.as_bytes()) {
            Ok(LogEntry::Access(entry)) => {
                Ok(AccessRecord { id: row.id, index: row.idx.unsigned_abs(), entry })
            }
            _ => Err(Error::Corrupt("a stored access entry is malformed")),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sql = Sql::new(backend);
    sql.push("SELECT COUNT(*) AS n");
    push_from(&mut sql, gate, filter);
    let total: Count = sql.build().get_result(conn)?;
    Ok(page_of(items, wanted, total.n))
}
