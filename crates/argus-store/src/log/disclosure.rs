//! What a disclosure of one room reads, all of it through the viewer's read gate: the room, its
//! messages in a range with their versions, redactions and files (content held under legal hold
//! only for a viewer with `tchap:redacted`, as every message read decides), each stored version
//! with the run that stored it and its leaf rebuilt from the rows as they are now, each run's
//! audit entry and leaves, and each held file's log entry.

use std::collections::BTreeMap;

use argus_domain::{PageRequest, RoomId, StoredMessage, to_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, Text},
};
use time::OffsetDateTime;

use super::{
    DisclosureSource, SourceAttachment, SourceRun, SourceVersion,
    append::digest,
    proofs::{attachment_entry, audit_entry},
    versions::{VersionRef, kind_of, rebuild, run_leaves},
};
use crate::{
    MAX_PAGE_SIZE, MessageCursor, Result,
    db::{DbConn, Sql},
    read::{self, Gate},
};

/// Rows read per statement when their ids are listed.
const CHUNK: usize = 10_000;

/// The messages of the room in `[from, to]` the gate lets through, oldest first, with their
/// evidence (read page by page, as any reader of the room reads them).
fn messages(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Vec<StoredMessage>> {
    let mut out = Vec::new();
    let mut after = from.map(|sent_at_ms| MessageCursor { sent_at_ms: sent_at_ms - 1, id: i64::MAX });
    loop {
        let page = read::messages(conn, gate, room_id, &PageRequest { first: MAX_PAGE_SIZE, after })?;
        let last = page.items.last().map(MessageCursor::of);
        let past_end =
            page.items.last().is_some_and(|m| to.is_some_and(|to| to_unix_ms(m.message.sent_at) > to));
        out.extend(
            page.items.into_iter().filter(|m| to.is_none_or(|to| to_unix_ms(m.message.sent_at) <= to)),
        );
        if !page.has_next_page || past_end || last.is_none() {
            return Ok(out);
        }
        after = last;
    }
}

#[derive(QueryableByName)]
struct StoredVersion {
    #[diesel(sql_type = BigInt)]
    run_id: i64,
    #[diesel(sql_type = BigInt)]
    idx: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    version_pk: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    redaction_pk: Option<i64>,
    #[diesel(sql_type = Text)]
    leaf_hash: String,
    #[diesel(sql_type = Bool)]
    without_content: bool,
}

/// The stored versions of `messages` (messages the gate let through), by run and position.
fn stored_versions(conn: &mut DbConn, gate: &Gate, messages: &[StoredMessage]) -> Result<Vec<StoredVersion>> {
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let mut sql = Sql::new(conn.backend());
        sql.push(
            "SELECT rv.run_id, rv.idx, rv.message_pk, rv.kind, rv.version_pk, rv.redaction_pk, rv.leaf_hash, \
             rv.without_content FROM run_versions rv WHERE ",
        );
        gate.apply_to_messages(&mut sql, "rv", chunk);
        out.extend(sql.build().load::<StoredVersion>(conn)?);
    }
    out.sort_by_key(|v| (v.run_id, v.idx));
    Ok(out)
}

/// The runs that stored `versions`: each with its audit entry (a run whose record the gate does
/// not let through is left out) and every leaf hash, in order.
fn runs(conn: &mut DbConn, gate: &Gate, run_ids: &[i64]) -> Result<Vec<SourceRun>> {
    #[derive(QueryableByName)]
    struct Seq {
        #[diesel(sql_type = BigInt)]
        seq: i64,
    }
    let mut out = Vec::new();
    for run_id in run_ids {
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT i.seq FROM ingestions i WHERE ");
        gate.apply(&mut sql, "i");
        sql.push(" AND i.run_id = ").bind::<BigInt, _>(*run_id);
        let Some(seq) = sql.build_cached().load::<Seq>(conn)?.into_iter().next() else { continue };
        let Some(entry) = audit_entry(conn, gate.org(), seq.seq)? else { continue };
        let leaves = run_leaves(conn, *run_id)?;
        out.push(SourceRun { run_id: *run_id, entry, leaves });
    }
    Ok(out)
}

/// What a disclosure of `room_id` over `[from, to]` reads through `gate`; `None` when the room
/// is absent or withheld (the caller reads it in one snapshot).
pub(crate) fn source(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Option<DisclosureSource>> {
    let Some(room) = read::room(conn, gate, room_id)? else { return Ok(None) };
    let messages = messages(conn, gate, room_id, from.map(to_unix_ms), to.map(to_unix_ms))?;
    let stored = stored_versions(conn, gate, &messages)?;
    let refs = stored
        .iter()
        .map(|v| {
            Ok(VersionRef {
                message_pk: v.message_pk,
                kind: kind_of(&v.kind)?,
                version_pk: v.version_pk,
                redaction_pk: v.redaction_pk,
                without_content: v.without_content,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let leaves = rebuild(conn, gate, &refs)?;
    let event_ids: BTreeMap<i64, &str> =
        messages.iter().map(|m| (m.id, m.message.event_id.as_str())).collect();
    let mut versions = Vec::with_capacity(stored.len());
    for ((v, r), leaf) in stored.iter().zip(&refs).zip(leaves) {
        versions.push(SourceVersion {
            message_event_id: event_ids.get(&v.message_pk).copied().unwrap_or_default().to_owned(),
            kind: r.kind,
            run_id: v.run_id,
            position: v.idx.unsigned_abs(),
            stored_leaf_hash: digest(&v.leaf_hash)?,
            leaf,
        });
    }
    let mut run_ids: Vec<i64> = stored.iter().map(|v| v.run_id).collect();
    run_ids.dedup();
    let runs = runs(conn, gate, &run_ids)?;
    let mut attachments = Vec::new();
    for m in messages.iter().filter(|m| m.attachment.as_ref().is_some_and(|a| a.sha256.is_some())) {
        let event_id = m.message.event_id.as_str();
        let entry = attachment_entry(conn, gate.org(), event_id)?;
        attachments.push(SourceAttachment { event_id: event_id.to_owned(), entry });
    }
    Ok(Some(DisclosureSource { room, messages, versions, runs, attachments }))
}
