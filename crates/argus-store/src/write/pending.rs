//! Pending evidence: edits and redactions whose target is not stored yet (a backwards read
//! meets them before their original, and a run may stop before it reaches it). They are kept
//! with the batch that brought them, up to a bound per room, and applied under the same rules
//! by the batch that stores their target.

use argus_domain::{MessageEdit, MessageRecord, MessageRedaction, Redaction, from_unix_ms, to_unix_ms};
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, RunQueryDsl as _, SelectableHelper as _,
};

use super::{StoredCounts, evidence};
use crate::{
    Error, Result,
    db::DbConn,
    schema::{pending_edits as pe, pending_redactions as pr},
};

/// The most edits, and redactions, kept waiting for their original per room: past it, more are
/// dropped (a homeserver cannot grow the archive without bound with edits of nothing).
const MAX_PENDING_PER_ROOM: i64 = 100_000;

/// Targets per statement of the lookups by target, and ids per delete: a message edited tens
/// of thousands of times must not exceed SQLite's bind limit.
const PER_STATEMENT: usize = 500;

/// Runs one typed statement on the connection's own backend: `ON CONFLICT`, which both
/// backends share, is beyond what a Diesel `MultiConnection` expresses.
macro_rules! on_its_backend {
    ($conn:expr, |$c:ident| $statement:expr) => {
        match $conn {
            DbConn::Sqlite($c) => $statement,
            DbConn::Postgres($c) => $statement,
        }
    };
}

/// The two tables of kept evidence.
#[derive(Debug, Clone, Copy)]
enum Kept {
    Edits,
    Redactions,
}

/// How many items of the room wait in `kept`'s table.
fn waiting(conn: &mut DbConn, kept: Kept, org: &str, room_pk: i64) -> Result<i64> {
    Ok(match kept {
        Kept::Edits => {
            pe::table.filter(pe::org_id.eq(org)).filter(pe::room_pk.eq(room_pk)).count().get_result(conn)?
        }
        Kept::Redactions => {
            pr::table.filter(pr::org_id.eq(org)).filter(pr::room_pk.eq(room_pk)).count().get_result(conn)?
        }
    })
}

/// Whether an item of the room waits in `kept`'s table (one index lookup).
fn first_waiting(conn: &mut DbConn, kept: Kept, org: &str, room_pk: i64) -> Result<bool> {
    let first: Option<i64> = match kept {
        Kept::Edits => {
            pe::table.filter(pe::org_id.eq(org)).filter(pe::room_pk.eq(room_pk)).select(pe::id).first(conn)
        }
        Kept::Redactions => {
            pr::table.filter(pr::org_id.eq(org)).filter(pr::room_pk.eq(room_pk)).select(pr::id).first(conn)
        }
    }
    .optional()?;
    Ok(first.is_some())
}

/// Whether anything of the room waits (one index lookup per table).
fn any_waiting(conn: &mut DbConn, org: &str, room_pk: i64) -> Result<bool> {
    Ok(first_waiting(conn, Kept::Edits, org, room_pk)?
        || first_waiting(conn, Kept::Redactions, org, room_pk)?)
}

/// Whether one more item may wait in `kept`'s table for the room; `count` caches the room's
/// count for the batch (one `COUNT` per batch and table, not per item).
fn room_left(
    conn: &mut DbConn,
    kept: Kept,
    org: &str,
    room_pk: i64,
    count: &mut Option<i64>,
) -> Result<bool> {
    let n = match *count {
        Some(n) => n,
        None => waiting(conn, kept, org, room_pk)?,
    };
    *count = Some(n + 1);
    Ok(n < MAX_PENDING_PER_ROOM)
}

/// Keeps an edit whose original is not stored yet (once per edit event); `false` when the
/// room has too many waiting and it was dropped.
pub(super) fn keep_edit(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    e: &MessageEdit,
    count: &mut Option<i64>,
) -> Result<bool> {
    if !room_left(conn, Kept::Edits, org, room_pk, count)? {
        tracing::warn!(edit = %e.event_id, "too many edits wait for their original; this one is dropped");
        return Ok(false);
    }
    let row = (
        pe::org_id.eq(org),
        pe::room_pk.eq(room_pk),
        pe::target.eq(e.target.as_str()),
        pe::event_id.eq(e.event_id.as_str()),
        pe::sender.eq(e.sender.as_str()),
        pe::sent_at.eq(to_unix_ms(e.edited_at)),
        pe::msgtype.eq(e.msgtype.as_deref()),
        pe::body.eq(e.body.as_deref()),
    );
    on_its_backend!(conn, |c| diesel::insert_into(pe::table)
        .values(row)
        .on_conflict((pe::org_id, pe::room_pk, pe::event_id))
        .do_nothing()
        .execute(c))?;
    Ok(true)
}

/// Keeps a redaction whose target is not stored yet (the first one per target); `false` when
/// the room has too many waiting and it was dropped.
pub(super) fn keep_redaction(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    r: &MessageRedaction,
    count: &mut Option<i64>,
) -> Result<bool> {
    if !room_left(conn, Kept::Redactions, org, room_pk, count)? {
        tracing::warn!(target = %r.target, "too many redactions wait for their target; this one is dropped");
        return Ok(false);
    }
    let row = (
        pr::org_id.eq(org),
        pr::room_pk.eq(room_pk),
        pr::target.eq(r.target.as_str()),
        pr::redacted_by.eq(r.redaction.redacted_by.as_str()),
        pr::redacted_at.eq(to_unix_ms(r.redaction.redacted_at)),
        pr::reason.eq(r.redaction.reason.as_deref()),
        pr::confirmed.eq(r.confirmed),
    );
    on_its_backend!(conn, |c| diesel::insert_into(pr::table)
        .values(row)
        .on_conflict((pr::org_id, pr::room_pk, pr::target))
        .do_nothing()
        .execute(c))?;
    Ok(true)
}

/// A kept edit.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = pe)]
struct PendingEdit {
    id: i64,
    target: String,
    event_id: String,
    sender: String,
    sent_at: i64,
    msgtype: Option<String>,
    body: Option<String>,
}

/// A kept redaction.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = pr)]
struct PendingRedaction {
    id: i64,
    target: String,
    redacted_by: String,
    redacted_at: i64,
    reason: Option<String>,
    confirmed: bool,
}

/// The kept edits of the room whose target is one of `targets` (through the
/// `(org_id, room_pk, target)` index, [`PER_STATEMENT`] targets per statement).
fn edits_of(conn: &mut DbConn, org: &str, room_pk: i64, targets: &[&str]) -> Result<Vec<PendingEdit>> {
    let mut rows = Vec::new();
    for chunk in targets.chunks(PER_STATEMENT) {
        rows.extend(
            pe::table
                .filter(pe::org_id.eq(org))
                .filter(pe::room_pk.eq(room_pk))
                .filter(pe::target.eq_any(chunk))
                .select(PendingEdit::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// The kept redactions of the room whose target is one of `targets`, as [`edits_of`].
fn redactions_of(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    targets: &[&str],
) -> Result<Vec<PendingRedaction>> {
    let mut rows = Vec::new();
    for chunk in targets.chunks(PER_STATEMENT) {
        rows.extend(
            pr::table
                .filter(pr::org_id.eq(org))
                .filter(pr::room_pk.eq(room_pk))
                .filter(pr::target.eq_any(chunk))
                .select(PendingRedaction::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// Applies the kept edits and redactions whose target `messages` (just stored) holds, and
/// forgets them; counts what it applied and refused in `done`.
pub(super) fn apply(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    messages: &[MessageRecord],
    done: &mut StoredCounts,
    hold: evidence::Hold,
) -> Result<()> {
    const BAD: Error = Error::Corrupt("a kept edit or redaction fails validation");
    // Most rooms have nothing waiting: one look at each index says so.
    if messages.is_empty() || !any_waiting(conn, org, room_pk)? {
        return Ok(());
    }
    let batch_ids: Vec<&str> = messages.iter().map(|m| m.event_id.as_str()).collect();
    let mut edits = Vec::new();
    let mut edit_ids = Vec::new();
    for row in edits_of(conn, org, room_pk, &batch_ids)? {
        edits.push(MessageEdit {
            event_id: row.event_id.parse().map_err(|_| BAD)?,
            sender: row.sender.parse().map_err(|_| BAD)?,
            target: row.target.parse().map_err(|_| BAD)?,
            msgtype: row.msgtype,
            body: row.body,
            edited_at: from_unix_ms(row.sent_at)?,
        });
        edit_ids.push(row.id);
    }
    // An edit's arrival makes its redactions applicable too (a redacted edit is withdrawn).
    let reachable: Vec<&str> =
        batch_ids.iter().copied().chain(edits.iter().map(|e| e.event_id.as_str())).collect();
    let mut redactions = Vec::new();
    let mut redaction_ids = Vec::new();
    for row in redactions_of(conn, org, room_pk, &reachable)? {
        redactions.push(MessageRedaction {
            target: row.target.parse().map_err(|_| BAD)?,
            redaction: Redaction {
                redacted_by: row.redacted_by.parse().map_err(|_| BAD)?,
                redacted_at: from_unix_ms(row.redacted_at)?,
                reason: row.reason,
            },
            confirmed: row.confirmed,
        });
        redaction_ids.push(row.id);
    }
    if edits.is_empty() && redactions.is_empty() {
        return Ok(());
    }
    let outside = evidence::Outside { keep_pending: false, hold };
    evidence::apply_outside(conn, org, room_pk, &edits, &redactions, done, outside)?;
    for chunk in edit_ids.chunks(PER_STATEMENT) {
        diesel::delete(pe::table.filter(pe::id.eq_any(chunk))).execute(conn)?;
    }
    for chunk in redaction_ids.chunks(PER_STATEMENT) {
        diesel::delete(pr::table.filter(pr::id.eq_any(chunk))).execute(conn)?;
    }
    Ok(())
}
