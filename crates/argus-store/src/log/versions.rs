//! The versions a run stored: recorded in `run_versions` by the commit that stored them, in
//! order, each with its leaf hash; their RFC 9162 root is the run's `eventsRoot`. One function,
//! [`rebuild`], makes a version's [`VersionLeaf`] from the rows as they are now, both when it is
//! stored and when a disclosure reads it back (a row changed since gives another hash). A
//! message stored while still encrypted is recorded without content, and recorded again, with
//! it, by the commit that fills it in once decrypted; an edit's redaction is recorded as a
//! REDACTION whose target is the edit.

use std::collections::HashMap;

use argus_crypto::tlog;
use argus_domain::{
    MediaRef,
    oversight::{ENCODING_VERSION, VersionAttachment, VersionKind, VersionLeaf},
};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, Text},
};

use super::{Digest, append::digest};
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    read::{Gate, push_ids},
};

/// Rows read per statement when their ids are listed.
const CHUNK: usize = 10_000;

/// The highest storage ids of the stored messages, versions and redactions (of messages and of
/// edits) before a commit: what the commit adds lies above them (a room's commits are
/// serialised by its lock).
#[derive(Debug, Clone, Copy, QueryableByName)]
pub(crate) struct Marks {
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    versions: i64,
    #[diesel(sql_type = BigInt)]
    redactions: i64,
    #[diesel(sql_type = BigInt)]
    withdrawals: i64,
}

/// The marks before a commit.
pub(crate) fn marks(conn: &mut DbConn) -> Result<Marks> {
    let sql = Sql::new(conn.backend());
    let mut sql = sql;
    sql.push(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM messages) AS messages, \
         (SELECT COALESCE(MAX(id), 0) FROM message_versions) AS versions, \
         (SELECT COALESCE(MAX(id), 0) FROM message_redactions) AS redactions, \
         (SELECT COALESCE(MAX(id), 0) FROM version_redactions) AS withdrawals",
    );
    Ok(sql.build_cached().get_result(conn)?)
}

/// Where a version is found again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VersionRef {
    /// The message it is a version of.
    pub(crate) message_pk: i64,
    /// What it is.
    pub(crate) kind: VersionKind,
    /// The `message_versions` row (an original kept as a version, or an edit; for a
    /// redaction, the edit it withdrew).
    pub(crate) version_pk: Option<i64>,
    /// The `message_redactions` row; for a redaction of an edit, the `version_redactions` row.
    pub(crate) redaction_pk: Option<i64>,
    /// Recorded without content (a message stored while still encrypted).
    pub(crate) without_content: bool,
}

#[derive(QueryableByName)]
struct NewVersion {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
    #[diesel(sql_type = Bool)]
    original: bool,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
}

#[derive(QueryableByName)]
struct NewMessage {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Bool)]
    undecrypted: bool,
}

#[derive(QueryableByName)]
struct NewWithdrawal {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
    #[diesel(sql_type = BigInt)]
    version_pk: i64,
}

/// What one commit of run `run_id` stored in the room `room_pk` of `org` since `before`, as
/// versions in storing order: new messages (as their original version row when they got one;
/// without content while undecrypted), then messages of `decrypted` (event ids the commit read
/// decrypted) stored before while undecrypted and filled in now, then new versions, then new
/// redactions of messages, then new redactions of edits.
fn stored_since(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    before: Marks,
    decrypted: &[&str],
) -> Result<Vec<VersionRef>> {
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT m.id, CASE WHEN m.encrypted AND NOT m.decrypted THEN TRUE ELSE FALSE END AS undecrypted \
         FROM messages m WHERE m.org_id = ",
    )
    .bind::<Text, _>(org.to_owned());
    sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
    sql.push(" AND m.id > ").bind::<BigInt, _>(before.messages).push(" ORDER BY m.id");
    let messages: Vec<NewMessage> = sql.build_cached().load(conn)?;
    let filled = filled_since(conn, org, room_pk, before, decrypted)?;
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT v.id, v.message_pk, CASE WHEN v.event_id = m.event_id THEN TRUE ELSE FALSE END AS original \
         FROM message_versions v JOIN messages m ON m.id = v.message_pk WHERE v.org_id = ",
    )
    .bind::<Text, _>(org.to_owned());
    sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
    sql.push(" AND v.id > ").bind::<BigInt, _>(before.versions).push(" ORDER BY v.id");
    let versions: Vec<NewVersion> = sql.build_cached().load(conn)?;
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT d.id, d.message_pk FROM message_redactions d JOIN messages m ON m.id = d.message_pk \
         WHERE d.org_id = ",
    )
    .bind::<Text, _>(org.to_owned());
    sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
    sql.push(" AND d.id > ").bind::<BigInt, _>(before.redactions).push(" ORDER BY d.id");
    let redactions: Vec<Id> = sql.build_cached().load(conn)?;
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT w.id, w.message_pk, w.version_pk FROM version_redactions w \
         JOIN messages m ON m.id = w.message_pk WHERE w.org_id = ",
    )
    .bind::<Text, _>(org.to_owned());
    sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
    sql.push(" AND w.id > ").bind::<BigInt, _>(before.withdrawals).push(" ORDER BY w.id");
    let withdrawals: Vec<NewWithdrawal> = sql.build_cached().load(conn)?;

    let original = |message_pk, without_content| VersionRef {
        message_pk,
        kind: VersionKind::Original,
        version_pk: None,
        redaction_pk: None,
        without_content,
    };
    let mut refs = Vec::with_capacity(messages.len() + versions.len() + redactions.len());
    for m in &messages {
        if !versions.iter().any(|v| v.original && v.message_pk == m.id) {
            refs.push(original(m.id, m.undecrypted));
        }
    }
    refs.extend(filled.iter().map(|&id| original(id, false)));
    refs.extend(versions.iter().map(|v| VersionRef {
        message_pk: v.message_pk,
        kind: if v.original { VersionKind::Original } else { VersionKind::Edit },
        version_pk: Some(v.id),
        redaction_pk: None,
        without_content: false,
    }));
    refs.extend(redactions.iter().map(|d| VersionRef {
        message_pk: d.message_pk,
        kind: VersionKind::Redaction,
        version_pk: None,
        redaction_pk: Some(d.id),
        without_content: false,
    }));
    refs.extend(withdrawals.iter().map(|w| VersionRef {
        message_pk: w.message_pk,
        kind: VersionKind::Redaction,
        version_pk: Some(w.version_pk),
        redaction_pk: Some(w.id),
        without_content: false,
    }));
    Ok(refs)
}

/// The messages among `decrypted` (event ids) stored before `before` while undecrypted and
/// decrypted now: recorded without content so far, never with it.
fn filled_since(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    before: Marks,
    decrypted: &[&str],
) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for chunk in decrypted.chunks(conn.backend().max_binds().saturating_sub(8).max(1)) {
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT m.id, m.id AS message_pk FROM messages m WHERE m.org_id = ")
            .bind::<Text, _>(org.to_owned());
        sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
        sql.push(" AND m.id <= ").bind::<BigInt, _>(before.messages);
        sql.push(" AND m.encrypted AND m.decrypted AND NOT m.redacted AND m.event_id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind::<Text, _>((*id).to_owned());
        }
        sql.push(
            ") AND EXISTS (SELECT 1 FROM run_versions rv WHERE rv.org_id = m.org_id AND rv.message_pk = m.id \
             AND rv.without_content) AND NOT EXISTS (SELECT 1 FROM run_versions rv WHERE rv.org_id = m.org_id \
             AND rv.message_pk = m.id AND rv.kind = 'ORIGINAL' AND NOT rv.without_content) ORDER BY m.id",
        );
        out.extend(sql.build().load::<Id>(conn)?.into_iter().map(|r| r.id));
    }
    Ok(out)
}

/// Records in `run_versions`, after the run's earlier leaves, every version the commit stored
/// in room `room_pk` since `before` (`decrypted`: the event ids it read decrypted, whose
/// content it may have filled in), with its leaf hash (inside the commit's transaction).
pub(crate) fn record(
    conn: &mut DbConn,
    org: &str,
    run_id: i64,
    room_pk: i64,
    before: Marks,
    decrypted: &[&str],
) -> Result<()> {
    let refs = stored_since(conn, org, room_pk, before, decrypted)?;
    if refs.is_empty() {
        return Ok(());
    }
    let leaves = rebuild(conn, &Gate::sealing(org), &refs)?;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT COUNT(*) AS n FROM run_versions WHERE run_id = ").bind::<BigInt, _>(run_id);
    let start: Count = sql.build_cached().get_result(conn)?;
    let rows: Vec<(&VersionRef, &VersionLeaf)> = refs.iter().zip(&leaves).collect();
    // Ten binds a row.
    for (c, chunk) in rows.chunks(backend.max_binds() / 10).enumerate() {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO run_versions (org_id, run_id, idx, message_pk, kind, version_pk, redaction_pk, \
             leaf_hash, without_content) VALUES ",
        );
        for (i, (r, leaf)) in chunk.iter().enumerate() {
            let idx = start.n + i64::try_from(c * (backend.max_binds() / 10) + i).unwrap_or(i64::MAX);
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(run_id);
            sql.push(", ").bind::<BigInt, _>(idx).push(", ").bind::<BigInt, _>(r.message_pk).push(", ");
            sql.bind::<Text, _>(kind_name(r.kind).to_owned()).push(", ");
            sql.bind::<Nullable<BigInt>, _>(r.version_pk).push(", ");
            sql.bind::<Nullable<BigInt>, _>(r.redaction_pk).push(", ");
            sql.bind::<Text, _>(hex::encode(tlog::leaf_hash(&leaf.canonical()))).push(", ");
            sql.bind::<Bool, _>(r.without_content).push(")");
        }
        sql.build().execute(conn)?;
    }
    Ok(())
}

/// A kind's stored name.
pub(crate) fn kind_name(kind: VersionKind) -> &'static str {
    match kind {
        VersionKind::Original => "ORIGINAL",
        VersionKind::Edit => "EDIT",
        VersionKind::Redaction => "REDACTION",
    }
}

/// A kind from its stored name.
pub(crate) fn kind_of(name: &str) -> Result<VersionKind> {
    match name {
        "ORIGINAL" => Ok(VersionKind::Original),
        "EDIT" => Ok(VersionKind::Edit),
        "REDACTION" => Ok(VersionKind::Redaction),
        _ => Err(Error::Corrupt("a stored version kind is unknown")),
    }
}

/// The leaf hashes of run `run_id`, in order.
pub(crate) fn run_leaves(conn: &mut DbConn, run_id: i64) -> Result<Vec<Digest>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        leaf_hash: String,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT leaf_hash FROM run_versions WHERE run_id = ").bind::<BigInt, _>(run_id);
    sql.push(" ORDER BY idx");
    let rows: Vec<Row> = sql.build_cached().load(conn)?;
    rows.iter().map(|r| digest(&r.leaf_hash)).collect()
}

/// A run's `eventsRoot` and `eventsCount` over the leaves recorded so far.
pub(crate) fn run_events(conn: &mut DbConn, run_id: i64) -> Result<crate::audit::RunEvents> {
    let leaves = run_leaves(conn, run_id)?;
    Ok(crate::audit::RunEvents { run_id, root: tlog::root_of(&leaves), count: leaves.len() as u64 })
}

#[derive(QueryableByName)]
struct MessageRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    sender: String,
    #[diesel(sql_type = BigInt)]
    sent_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    msgtype: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    media: Option<String>,
    #[diesel(sql_type = Text)]
    room_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    held_body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    held_media: Option<String>,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    sender: String,
    #[diesel(sql_type = BigInt)]
    sent_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    msgtype: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    held_msgtype: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    held_body: Option<String>,
}

#[derive(QueryableByName)]
struct RedactionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    redacted_by: String,
    #[diesel(sql_type = BigInt)]
    redacted_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
}

/// The rows versions are built from.
#[derive(Default)]
struct Rows {
    messages: HashMap<i64, MessageRow>,
    versions: HashMap<i64, VersionRow>,
    /// The original version row of each message that has one.
    originals: HashMap<i64, i64>,
    redactions: HashMap<i64, RedactionRow>,
    /// Redactions of edits (`version_redactions`).
    withdrawals: HashMap<i64, RedactionRow>,
}

fn load(conn: &mut DbConn, gate: &Gate, refs: &[VersionRef]) -> Result<Rows> {
    let backend = conn.backend();
    let mut ids: Vec<i64> = refs.iter().map(|r| r.message_pk).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rows = Rows::default();
    for chunk in ids.chunks(CHUNK) {
        let mut sql = Sql::new(backend);
        sql.push("SELECT m.id, m.event_id, m.sender, m.sent_at, m.msgtype, m.body, m.media, r.room_id, ");
        gate.held_columns(&mut sql, "m", &["held_body", "held_media"]);
        sql.push(" FROM messages m JOIN rooms r ON r.id = m.room_pk WHERE ");
        gate.apply(&mut sql, "m");
        sql.push(" AND m.id IN ");
        push_ids(&mut sql, chunk);
        for row in sql.build().load::<MessageRow>(conn)? {
            rows.messages.insert(row.id, row);
        }
        // Their original version rows, and the version rows named.
        let named: Vec<i64> = refs
            .iter()
            .filter(|r| chunk.binary_search(&r.message_pk).is_ok())
            .filter_map(|r| r.version_pk)
            .collect();
        let mut sql = Sql::new(backend);
        sql.push("SELECT v.id, v.message_pk, v.event_id, v.sender, v.sent_at, v.msgtype, v.body, ");
        gate.held_columns(&mut sql, "v", &["held_msgtype", "held_body"]);
        sql.push(" FROM message_versions v WHERE ");
        gate.apply_to_messages(&mut sql, "v", chunk);
        sql.push(" AND (v.event_id = (SELECT m.event_id FROM messages m WHERE m.id = v.message_pk)");
        if !named.is_empty() {
            sql.push(" OR v.id IN ");
            push_ids(&mut sql, &named);
        }
        sql.push(")");
        for row in sql.build().load::<VersionRow>(conn)? {
            if rows.messages.get(&row.message_pk).is_some_and(|m| m.event_id == row.event_id) {
                rows.originals.insert(row.message_pk, row.id);
            }
            rows.versions.insert(row.id, row);
        }
        for (table, of_edits) in [("message_redactions", false), ("version_redactions", true)] {
            let named: Vec<i64> = refs
                .iter()
                .filter(|r| chunk.binary_search(&r.message_pk).is_ok())
                .filter(|r| r.version_pk.is_some() == of_edits && r.kind == VersionKind::Redaction)
                .filter_map(|r| r.redaction_pk)
                .collect();
            if named.is_empty() {
                continue;
            }
            let mut sql = Sql::new(backend);
            sql.push("SELECT d.id, d.redacted_by, d.redacted_at, d.reason FROM ")
                .push(table)
                .push(" d WHERE ");
            gate.apply_to_messages(&mut sql, "d", chunk);
            sql.push(" AND d.id IN ");
            push_ids(&mut sql, &named);
            let into = if of_edits { &mut rows.withdrawals } else { &mut rows.redactions };
            for row in sql.build().load::<RedactionRow>(conn)? {
                into.insert(row.id, row);
            }
        }
    }
    Ok(rows)
}

/// The attachment a message row declares: its URI, and an encrypted file's declared SHA-256
/// (hex).
fn attachment(media: Option<&str>) -> Result<Option<VersionAttachment>> {
    let Some(media) = media else { return Ok(None) };
    let media: MediaRef = serde_json::from_str(media)
        .map_err(|_| Error::Corrupt("a stored attachment reference is malformed"))?;
    let sha256 = media
        .file
        .as_ref()
        .and_then(|f| f.hashes.get("sha256"))
        .and_then(|b64| STANDARD_NO_PAD.decode(b64.trim_end_matches('=')).ok())
        .map(hex::encode);
    Ok(Some(VersionAttachment { sha256, uri: media.mxc_uri().map(str::to_owned) }))
}

/// The [`VersionLeaf`] of each of `refs` from the rows as they are now, read through `gate`
/// (content held under legal hold stands for what a redaction purged when the gate reads held
/// content). The one place a version's leaf is made: when a commit stores it
/// ([`Gate::sealing`]) and when a disclosure reads it back (the viewer's gate).
pub(crate) fn rebuild(conn: &mut DbConn, gate: &Gate, refs: &[VersionRef]) -> Result<Vec<VersionLeaf>> {
    const MISSING: Error = Error::Corrupt("a stored version's rows are missing");
    let rows = load(conn, gate, refs)?;
    refs.iter()
        .map(|r| {
            let m = rows.messages.get(&r.message_pk).ok_or(MISSING)?;
            let leaf = |kind: VersionKind,
                        event_id: &str,
                        sender: &str,
                        sent_at: i64,
                        msgtype: Option<String>,
                        body: Option<String>| VersionLeaf {
                attachment: None,
                body,
                event_id: event_id.to_owned(),
                kind,
                msgtype,
                reason: None,
                room_id: m.room_id.clone(),
                sender: sender.to_owned(),
                sent_at,
                target: None,
                v: ENCODING_VERSION,
            };
            Ok(match r.kind {
                VersionKind::Original => {
                    let version = r.version_pk.or_else(|| rows.originals.get(&r.message_pk).copied());
                    let mut leaf = match version {
                        Some(pk) => {
                            let v = rows.versions.get(&pk).ok_or(MISSING)?;
                            leaf(
                                VersionKind::Original,
                                &m.event_id,
                                &v.sender,
                                v.sent_at,
                                v.msgtype.clone().or_else(|| v.held_msgtype.clone()),
                                v.body.clone().or_else(|| v.held_body.clone()),
                            )
                        }
                        None => leaf(
                            VersionKind::Original,
                            &m.event_id,
                            &m.sender,
                            m.sent_at,
                            m.msgtype.clone(),
                            m.body.clone().or_else(|| m.held_body.clone()),
                        ),
                    };
                    leaf.attachment = attachment(m.media.as_deref().or(m.held_media.as_deref()))?;
                    if r.without_content {
                        // As recorded while the message was still encrypted.
                        leaf.body = None;
                        leaf.msgtype = None;
                        leaf.attachment = None;
                    }
                    leaf
                }
                VersionKind::Edit => {
                    let v = rows.versions.get(&r.version_pk.ok_or(MISSING)?).ok_or(MISSING)?;
                    let mut leaf = leaf(
                        VersionKind::Edit,
                        &v.event_id,
                        &v.sender,
                        v.sent_at,
                        v.msgtype.clone().or_else(|| v.held_msgtype.clone()),
                        v.body.clone().or_else(|| v.held_body.clone()),
                    );
                    leaf.target = Some(m.event_id.clone());
                    leaf
                }
                VersionKind::Redaction => {
                    let pk = r.redaction_pk.ok_or(MISSING)?;
                    // A redaction of the message, or of one of its edits (its target).
                    let (d, target) = match r.version_pk {
                        None => (rows.redactions.get(&pk).ok_or(MISSING)?, m.event_id.clone()),
                        Some(v) => (
                            rows.withdrawals.get(&pk).ok_or(MISSING)?,
                            rows.versions.get(&v).ok_or(MISSING)?.event_id.clone(),
                        ),
                    };
                    let mut leaf =
                        leaf(VersionKind::Redaction, &m.event_id, &d.redacted_by, d.redacted_at, None, None);
                    leaf.target = Some(target);
                    leaf.reason = d.reason.clone();
                    leaf
                }
            })
        })
        .collect()
}
