//! Writes: one ingestion recorded in one transaction (room, messages, edits and redactions,
//! audit record, outbox row), and FAILED audit records on their own.
//!
//! Every write runs under its organisation's lock: `BEGIN IMMEDIATE` on SQLite (one writer at a
//! time), `pg_advisory_xact_lock` keyed by the organisation on PostgreSQL. Audit appends are
//! therefore serialised per chain, and concurrent ingestions of one room cannot interleave.

use argus_domain::{
    Classification, EventId, HistoryPosition, IngestionOutcome, IngestionRecord, MessageEdit, MessageRecord,
    MessageVersion, NewIngestion, Redaction, RoomSnapshot, StoredRoom, UserId, Viewer, policy, to_unix_ms,
};
use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, RunQueryDsl,
    SelectableHelper as _,
    sql_types::{BigInt, Bool, Nullable, SmallInt, Text},
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    Backend, Error, Result, ahead, audit,
    db::{DbConn, Sql, TxMode, in_transaction},
    read::{self, Gate},
    schema::{message_counts, message_versions, messages, rooms},
};

/// Longest accepted values, in bytes.
const MAX_NAME: usize = 4096;
const MAX_TOPIC: usize = 65_536;
const MAX_ALIAS: usize = 255;
const MAX_TOKEN: usize = 4096;
const MAX_MSGTYPE: usize = 255;
const MAX_BODY: usize = 65_536;
const MAX_MEDIA_URI: usize = 2048;
const MAX_MIMETYPE: usize = 255;
const MAX_MEDIA_JSON: usize = 4096;

/// Columns written per message row.
const MESSAGE_COLUMNS: usize = 17;

/// Message rows per PostgreSQL statement (column arrays, so the bind limit does not apply).
const PG_ROWS_PER_STATEMENT: usize = 10_000;

/// One ingestion to record: who ran it, at which classification, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionRun {
    /// The caller; the room is stored in their organisation.
    pub viewer: Viewer,
    /// The classification requested (at most the caller's clearance).
    pub classification: Classification,
    /// When the run started.
    pub started_at: OffsetDateTime,
}

/// What a recorded ingestion stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionResult {
    /// The room after commit, as the caller sees it.
    pub room: StoredRoom,
    /// Messages newly stored (those already stored are not counted again).
    pub messages_stored: i64,
    /// The SUCCEEDED audit record.
    pub ingestion: IngestionRecord,
    /// Edits of earlier-stored messages applied by this call.
    pub edits_applied: u64,
    /// Edits the store refused ([`policy::may_edit`]): not from the original's sender, or of
    /// an encrypted or redacted original.
    pub edits_ignored: u64,
    /// Redactions of earlier-stored messages the store refused ([`policy::may_redact`]).
    pub redactions_ignored: u64,
}

/// Rejects text the store will not keep: too long, or containing NUL.
fn check_text(value: Option<&str>, max: usize, kind: &'static str) -> Result<()> {
    match value {
        Some(v) if v.len() > max => Err(Error::invalid(kind, "too long")),
        Some(v) if v.contains('\0') => Err(Error::invalid(kind, "NUL characters are not allowed")),
        _ => Ok(()),
    }
}

fn check_message(m: &MessageRecord) -> Result<()> {
    check_text(m.msgtype.as_deref(), MAX_MSGTYPE, "message type")?;
    check_text(m.body.as_deref(), MAX_BODY, "message body")?;
    if let Some(media) = &m.media {
        check_text(media.uri.as_deref(), MAX_MEDIA_URI, "media URI")?;
        check_text(media.mimetype.as_deref(), MAX_MIMETYPE, "media type")?;
        if media.size.is_some_and(|s| i64::try_from(s).is_err()) {
            return Err(Error::invalid("media size", "too large"));
        }
    }
    Ok(())
}

/// Checks a whole snapshot before anything is written.
pub(crate) fn validate(snapshot: &RoomSnapshot) -> Result<()> {
    check_text(snapshot.name.as_deref(), MAX_NAME, "room name")?;
    check_text(snapshot.topic.as_deref(), MAX_TOPIC, "room topic")?;
    check_text(snapshot.canonical_alias.as_deref(), MAX_ALIAS, "room alias")?;
    check_text(snapshot.resume_token.as_deref(), MAX_TOKEN, "resume token")?;
    if let HistoryPosition::Continues(token) = &snapshot.history {
        check_text(Some(token), MAX_TOKEN, "backfill token")?;
    }
    snapshot.messages.iter().try_for_each(check_message)?;
    for e in &snapshot.edits {
        check_text(e.msgtype.as_deref(), MAX_MSGTYPE, "message type")?;
        check_text(e.body.as_deref(), MAX_BODY, "message body")?;
    }
    Ok(())
}

/// The PostgreSQL advisory lock key of an organisation's chain.
fn lock_key(org: &str) -> i64 {
    let digest = Sha256::digest(format!("argus-audit:{org}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// Runs `f` in a write transaction holding `org`'s lock; rolls back on any error.
pub(crate) fn in_org_transaction<T>(
    conn: &mut DbConn,
    org: &str,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    in_transaction(conn, TxMode::Write, |conn| {
        if let DbConn::Postgres(c) = conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(lock_key(org))
                .execute(c)?;
        }
        f(conn)
    })
}

/// Now, at the millisecond precision the store keeps.
fn now_ms() -> i64 {
    to_unix_ms(OffsetDateTime::now_utc())
}

/// Records a whole ingestion atomically.
pub(crate) fn record_ingestion(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    key: Option<&audit::AuditKey>,
    run: &IngestionRun,
    snapshot: &RoomSnapshot,
) -> Result<IngestionResult> {
    policy::check_may_classify(&run.viewer, run.classification)?;
    validate(snapshot)?;
    let org = run.viewer.org.as_str();
    in_org_transaction(conn, org, |conn| {
        let stored = store_pages(conn, helpers, run, snapshot)?;
        let end = RunEnd {
            room_id: snapshot.room_id.as_str().to_owned(),
            homeserver_url: snapshot.homeserver_url.as_str().to_owned(),
            message_count: stored.messages_stored,
            error: None,
            scheduled: false,
        };
        let (room, ingestion) = append_run_record(conn, key, run, &end)?;
        let room = room.ok_or(Error::Withheld)?;
        Ok(IngestionResult {
            room,
            messages_stored: stored.messages_stored,
            ingestion,
            edits_applied: stored.evidence.edits_applied,
            edits_ignored: stored.evidence.edits_ignored,
            redactions_ignored: stored.evidence.redactions_ignored,
        })
    })
}

/// What [`store_pages`] stored.
#[derive(Debug)]
struct StoredPages {
    messages_stored: i64,
    evidence: Evidence,
}

/// How a run ended, for its audit record.
#[derive(Debug, Clone)]
pub(crate) struct RunEnd {
    /// The room id as requested.
    pub(crate) room_id: String,
    /// The homeserver as requested.
    pub(crate) homeserver_url: String,
    /// Messages its committed pages stored.
    pub(crate) message_count: i64,
    /// Why it failed (`None`: it succeeded).
    pub(crate) error: Option<String>,
    /// Run by the scheduler for a watched room.
    pub(crate) scheduled: bool,
}

/// Writes the room, its new messages, the edits and redactions and the pagination positions of
/// `snapshot` (a whole read, or some pages of a streamed one), inside the caller's transaction.
/// `helpers`: see [`insert_messages`].
fn store_pages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    run: &IngestionRun,
    snapshot: &RoomSnapshot,
) -> Result<StoredPages> {
    let org = run.viewer.org.as_str();
    let now = now_ms();
    let (room_pk, merged, read_from) = upsert_room(conn, run, snapshot, now)?;
    if !policy::is_visible(&run.viewer, &run.viewer.org, merged) {
        return Err(Error::Withheld);
    }
    // Edits, redactions and decrypted content of messages stored earlier are taken only from
    // the homeserver they were stored from: another server answering for the same room id
    // could otherwise rewrite or purge the evidence.
    let same_source = read_from.is_none_or(|h| h == snapshot.homeserver_url.as_str());
    let messages_stored =
        insert_messages(conn, helpers, org, room_pk, merged, &snapshot.messages, same_source)?;
    if messages_stored == snapshot.messages.len() as i64 {
        // Every message was new, at `merged`: the counts only grow.
        add_message_count(conn, org, room_pk, merged, messages_stored)?;
    } else {
        // Some were stored already and may have been raised: count the room again.
        recount_messages(conn, org, room_pk)?;
    }
    let evidence = if same_source {
        // Edits and redactions that waited for these messages first, then the batch's own.
        let mut waited = Evidence::default();
        apply_pending(conn, org, room_pk, &snapshot.messages, &mut waited)?;
        let mut evidence = apply_edits_and_redactions(conn, org, room_pk, snapshot)?;
        evidence.edits_applied += waited.edits_applied;
        evidence.edits_ignored += waited.edits_ignored;
        evidence.redactions_ignored += waited.redactions_ignored;
        evidence
    } else {
        tracing::warn!(room = %snapshot.room_id, "edits and redactions from another homeserver than the room's ignored");
        Evidence {
            edits_applied: 0,
            edits_ignored: snapshot.edits.len() as u64
                + snapshot.messages.iter().map(|m| m.versions.len().saturating_sub(1) as u64).sum::<u64>(),
            redactions_ignored: snapshot.redactions.len() as u64,
        }
    };
    Ok(StoredPages { messages_stored, evidence })
}

/// Appends the audit record of a run that stored pages (SUCCEEDED, or FAILED with what its
/// committed pages stored) and, when the room is stored, the outbox row; inside the caller's
/// transaction, which holds the organisation's lock. Returns the room as the caller sees it.
fn append_run_record(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    run: &IngestionRun,
    end: &RunEnd,
) -> Result<(Option<StoredRoom>, IngestionRecord)> {
    let now = now_ms();
    let room_id = end.room_id.parse::<argus_domain::RoomId>().ok();
    let whole_org = Gate::whole_org(&run.viewer.org);
    let stored = match &room_id {
        Some(id) => read::room(conn, &whole_org, id)?,
        None => None,
    };
    let entry = NewIngestion {
        actor: run.viewer.actor.clone(),
        org: run.viewer.org.clone(),
        room_id: end.room_id.clone(),
        homeserver_url: NewIngestion::origin_of(&end.homeserver_url),
        message_count: end.message_count,
        // Filed at the room's effective level, never below what the room is stored at: a
        // record filed at the level asked for would show a SECRET room's id to anyone
        // cleared for what was asked.
        classification: policy::merge_classification(
            stored.as_ref().map(|r| r.classification),
            run.classification,
        ),
        started_at: argus_domain::from_unix_ms(to_unix_ms(run.started_at))?,
        finished_at: Some(argus_domain::from_unix_ms(now)?),
        outcome: if end.error.is_some() { IngestionOutcome::Failed } else { IngestionOutcome::Succeeded },
        error: end.error.clone(),
        post: None,
        scheduled: end.scheduled,
    };
    let ingestion = audit::append(conn, key, &audit::sanitised(&entry)?)?;
    let Some(payload) = stored else {
        return Ok((None, ingestion));
    };
    // A manual run that stored nothing new may still have changed the room (its state); a
    // failed run, or a scheduled one, that stored nothing changed nothing worth a fusion update
    // (an idle watched room is not announced every interval).
    if end.message_count > 0 || (end.error.is_none() && !end.scheduled) {
        crate::outbox::insert(conn, &payload, ingestion.seq, now)?;
    }
    let room = match &room_id {
        Some(id) => read::room(conn, &Gate::of(&run.viewer), id)?,
        None => None,
    };
    Ok((room, ingestion))
}

/// Inserts or updates the room; returns its storage id, merged classification, and the
/// homeserver it was stored from (`None` for a new room). A room keeps the homeserver it was
/// first read from, and that server's resume position, when another server answers for it.
fn upsert_room(
    conn: &mut DbConn,
    run: &IngestionRun,
    s: &RoomSnapshot,
    now: i64,
) -> Result<(i64, Classification, Option<String>)> {
    let existing = read::room_key(conn, &Gate::whole_org(&run.viewer.org), &s.room_id)?;
    let stored = existing.as_ref().map(|r| crate::rows::rank(r.classification)).transpose()?;
    let merged = policy::merge_classification(stored, run.classification);

    let content = (
        rooms::name.eq(s.name.as_deref()),
        rooms::topic.eq(s.topic.as_deref()),
        rooms::canonical_alias.eq(s.canonical_alias.as_deref()),
        rooms::member_count.eq(i64::from(s.member_count)),
        rooms::encrypted.eq(s.encrypted),
        rooms::classification.eq(merged.rank()),
        rooms::last_ingested_at.eq(now),
        rooms::predecessor_room_id.eq(s.predecessor.as_ref().map(argus_domain::RoomId::as_str)),
        rooms::successor_room_id.eq(s.successor.as_ref().map(argus_domain::RoomId::as_str)),
    );
    // Where older history continues: `None` leaves it as stored.
    let history: Option<(Option<&str>, bool)> = match &s.history {
        HistoryPosition::Unchanged => None,
        HistoryPosition::Continues(token) => Some((Some(token.as_str()), false)),
        HistoryPosition::Complete => Some((None, true)),
    };
    match &existing {
        Some(r) => {
            let target = rooms::table.filter(rooms::id.eq(r.id));
            if r.homeserver_url == s.homeserver_url.as_str() {
                // Positions are that homeserver's: another server's tokens mean nothing to it.
                diesel::update(target).set(content).execute(conn)?;
                if let Some(resume) = &s.resume_token {
                    diesel::update(target).set(rooms::resume_token.eq(resume)).execute(conn)?;
                }
                if let Some((token, complete)) = history {
                    diesel::update(target)
                        .set((rooms::backfill_token.eq(token), rooms::history_complete.eq(complete)))
                        .execute(conn)?;
                }
            } else {
                diesel::update(target).set(content).execute(conn)?;
            }
            Ok((r.id, merged, Some(r.homeserver_url.clone())))
        }
        None => {
            let (backfill, complete) = history.unwrap_or((None, false));
            let id: i64 = diesel::insert_into(rooms::table)
                .values((
                    rooms::org_id.eq(run.viewer.org.as_str()),
                    rooms::room_id.eq(s.room_id.as_str()),
                    rooms::homeserver_url.eq(s.homeserver_url.as_str()),
                    content,
                    rooms::first_seen_at.eq(now),
                    rooms::resume_token.eq(s.resume_token.as_deref()),
                    rooms::backfill_token.eq(backfill),
                    rooms::history_complete.eq(complete),
                ))
                .returning(rooms::id)
                .get_result(conn)?;
            Ok((id, merged, None))
        }
    }
}

/// Adds `n` messages at `level` to the room's stored counts.
fn add_message_count(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    level: Classification,
    n: i64,
) -> Result<()> {
    let backend = conn.backend();
    if n == 0 {
        return Ok(());
    }
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO message_counts (org_id, room_pk, classification, message_count) VALUES (");
    sql.bind::<Text, _>(org).push(", ").bind::<BigInt, _>(room_pk).push(", ");
    sql.bind::<SmallInt, _>(level.rank()).push(", ").bind::<BigInt, _>(n);
    sql.push(
        ") ON CONFLICT (org_id, room_pk, classification) \
         DO UPDATE SET message_count = message_counts.message_count + excluded.message_count",
    );
    sql.build().execute(conn)?;
    Ok(())
}

/// Replaces the room's stored counts by a count of its messages.
fn recount_messages(conn: &mut DbConn, org: &str, room_pk: i64) -> Result<()> {
    diesel::delete(
        message_counts::table
            .filter(message_counts::org_id.eq(org))
            .filter(message_counts::room_pk.eq(room_pk)),
    )
    .execute(conn)?;
    let counts = messages::table
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .group_by((messages::org_id, messages::room_pk, messages::classification))
        .select((messages::org_id, messages::room_pk, messages::classification, diesel::dsl::count_star()));
    diesel::insert_into(message_counts::table)
        .values(counts)
        .into_columns((
            message_counts::org_id,
            message_counts::room_pk,
            message_counts::classification,
            message_counts::message_count,
        ))
        .execute(conn)?;
    Ok(())
}

/// Inserts messages not stored yet, in statements sized to the backend's bind limit, and
/// raises the classification of re-fetched ones; returns how many were new. On PostgreSQL, a
/// second pooled connection from `helpers` (taken here, once the transaction holds its locks,
/// and only when one is free) computes the search vectors ahead ([`crate::ahead`]).
fn insert_messages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    org: &str,
    room_pk: i64,
    level: Classification,
    messages: &[MessageRecord],
    same_source: bool,
) -> Result<i64> {
    let backend = conn.backend();
    let helper = match helpers {
        Some(source) if backend == Backend::Postgres && messages.len() >= ahead::MIN_ROWS => source.take(),
        _ => None,
    };
    // Chunks keep the re-fetch UPDATE's id list (and PostgreSQL's arrays) within the backend's
    // bind-parameter limit; with a helper they are the helper's chunks.
    let chunks = match (backend, &helper) {
        (Backend::Postgres, Some(_)) => ahead::chunks(messages.len()),
        (Backend::Postgres, None) => even_chunks(messages.len(), PG_ROWS_PER_STATEMENT),
        (Backend::Sqlite, _) => even_chunks(messages.len(), backend.max_binds() / MESSAGE_COLUMNS),
    };
    // The text each message is stored and indexed with, for PostgreSQL's statements and helper.
    let bodies: Vec<Option<&str>> = match backend {
        Backend::Postgres => messages.iter().map(indexed_body).collect(),
        Backend::Sqlite => Vec::new(),
    };
    // SQLite indexes the new messages for search in one statement at the end: they are the
    // rows above the highest id before (the writer holds the database; ids only grow).
    let indexed_above: Option<i64> = match conn {
        DbConn::Sqlite(_) => Some(
            messages::table.select(diesel::dsl::max(messages::id)).first::<Option<i64>>(conn)?.unwrap_or(0),
        ),
        DbConn::Postgres(_) => None,
    };
    let inserted = std::thread::scope(|scope| -> Result<i64> {
        let mut ahead = helper.map(|helper| ahead::Ahead::start(scope, helper, &bodies, chunks.clone()));
        let mut inserted = 0i64;
        for range in chunks {
            let chunk = &messages[range.clone()];
            // The one place the backends insert differently.
            let n = match conn {
                DbConn::Postgres(pg) => {
                    let vectors = ahead.as_mut().and_then(ahead::Ahead::next);
                    insert_messages_pg(pg, org, room_pk, level, chunk, &bodies[range], vectors)?
                }
                DbConn::Sqlite(lite) => insert_messages_sqlite(lite, org, room_pk, level, chunk)?,
            };
            inserted += n as i64;
            if n < chunk.len() {
                raise_classification(conn, org, room_pk, level, chunk)?;
                if same_source {
                    fill_decrypted(conn, org, room_pk, chunk)?;
                }
            }
        }
        Ok(inserted)
    })?;
    if let (Some(above), true) = (indexed_above, inserted > 0) {
        index_for_search(conn, above)?;
    }
    Ok(inserted)
}

/// `n` rows cut in chunks of `per` (the last shorter).
fn even_chunks(n: usize, per: usize) -> Vec<std::ops::Range<usize>> {
    let per = per.max(1);
    (0..n).step_by(per).map(|start| start..n.min(start + per)).collect()
}

/// The text a message is stored and indexed with: none once redacted.
fn indexed_body(m: &MessageRecord) -> Option<&str> {
    if m.redacted { None } else { m.body.as_deref() }
}

/// SQLite: adds the messages stored above id `above` that have a body and are not redacted to
/// the full-text index (PostgreSQL computes its `search` column itself).
fn index_for_search(conn: &mut DbConn, above: i64) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO messages_fts (rowid, body, org) SELECT id, body, org FROM messages_fts_content WHERE id > ?",
    )
    .bind::<BigInt, _>(above)
    .execute(conn)?;
    Ok(())
}

/// Message rows per multi-row SQLite `INSERT` (17 binds each, well under the bind limit).
const SQLITE_ROWS_PER_STATEMENT: usize = 64;

/// SQLite: inserts a chunk with multi-row statements of [`SQLITE_ROWS_PER_STATEMENT`] rows and
/// the rest row by row. Both statements have a fixed shape, so each is prepared once per
/// connection and reused from the statement cache.
fn insert_messages_sqlite(
    lite: &mut diesel::SqliteConnection,
    org: &str,
    room_pk: i64,
    level: Classification,
    chunk: &[MessageRecord],
) -> Result<usize> {
    use crate::schema::messages::dsl as m;
    use diesel::ExpressionMethods;
    let media = chunk.iter().map(media_json).collect::<Result<Vec<_>>>()?;
    let mut inserted = 0;
    let mut rows = chunk
        .iter()
        .zip(&media)
        .map(|(msg, media)| {
            (
                m::org_id.eq(org),
                m::room_pk.eq(room_pk),
                m::event_id.eq(msg.event_id.as_str()),
                m::sender.eq(msg.sender.as_str()),
                m::msgtype.eq(msg.msgtype.as_deref()),
                m::body.eq(if msg.redacted { None } else { msg.body.as_deref() }),
                m::sent_at.eq(to_unix_ms(msg.sent_at)),
                m::edited.eq(msg.edited),
                m::edited_at.eq(None::<i64>),
                m::redacted.eq(msg.redacted),
                m::encrypted.eq(msg.encrypted),
                m::decrypted.eq(msg.decrypted),
                m::undecryptable.eq(msg.undecryptable.as_deref()),
                m::reply_to.eq(msg.reply_to.as_ref().map(|e| e.as_str())),
                m::thread_root.eq(msg.thread_root.as_ref().map(|e| e.as_str())),
                m::media.eq(media.as_deref()),
                m::classification.eq(level.rank()),
            )
        })
        .peekable();
    while rows.peek().is_some() {
        let group: Vec<_> = rows.by_ref().take(SQLITE_ROWS_PER_STATEMENT).collect();
        match <Box<[_; SQLITE_ROWS_PER_STATEMENT]>>::try_from(group.into_boxed_slice()) {
            Ok(full) => {
                inserted += diesel::insert_into(m::messages)
                    .values(full)
                    .on_conflict((m::org_id, m::event_id))
                    .do_nothing()
                    .execute(lite)?;
            }
            Err(rest) => {
                for values in rest.into_vec() {
                    inserted += diesel::insert_into(m::messages)
                        .values(values)
                        .on_conflict((m::org_id, m::event_id))
                        .do_nothing()
                        .execute(lite)?;
                }
            }
        }
    }
    Ok(inserted)
}

/// PostgreSQL: inserts a chunk with one `INSERT … SELECT FROM UNNEST` of column arrays
/// (`bodies`: the chunk's [`indexed_body`]s), with the search vectors computed ahead when there
/// are some (else the insert trigger computes them).
fn insert_messages_pg(
    pg: &mut diesel::PgConnection,
    org: &str,
    room_pk: i64,
    level: Classification,
    chunk: &[MessageRecord],
    bodies: &[Option<&str>],
    vectors: Option<ahead::ChunkVectors>,
) -> Result<usize> {
    use diesel::sql_types::Array;
    let media: Vec<Option<String>> = chunk.iter().map(media_json).collect::<Result<_>>()?;
    let n = diesel::sql_query(
        "INSERT INTO messages (org_id, room_pk, event_id, sender, msgtype, body, sent_at, edited, edited_at, \
         redacted, encrypted, reply_to, thread_root, media, classification, decrypted, undecryptable, search) \
         SELECT $1, $2, u.event_id, u.sender, u.msgtype, u.body, u.sent_at, u.edited, NULL, u.redacted, \
         u.encrypted, u.reply_to, u.thread_root, u.media, $3, u.decrypted, u.undecryptable, u.search \
         FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::bool[], $10::bool[], \
         $11::bool[], $12::text[], $13::text[], $14::text[], $15::bool[], $16::text[], $17::tsvector[]) \
         AS u(event_id, sender, msgtype, body, sent_at, edited, redacted, encrypted, reply_to, thread_root, media, \
         decrypted, undecryptable, search) \
         ON CONFLICT (org_id, event_id) DO NOTHING",
    )
    .bind::<Text, _>(org)
    .bind::<BigInt, _>(room_pk)
    .bind::<SmallInt, _>(level.rank())
    .bind::<Array<Text>, _>(chunk.iter().map(|m| m.event_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(chunk.iter().map(|m| m.sender.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(chunk.iter().map(|m| m.msgtype.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(bodies)
    .bind::<Array<BigInt>, _>(chunk.iter().map(|m| to_unix_ms(m.sent_at)).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(chunk.iter().map(|m| m.edited).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(chunk.iter().map(|m| m.redacted).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(chunk.iter().map(|m| m.encrypted).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(chunk.iter().map(|m| m.reply_to.as_ref().map(|e| e.as_str())).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        chunk.iter().map(|m| m.thread_root.as_ref().map(|e| e.as_str())).collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(media.iter().map(|m| m.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(chunk.iter().map(|m| m.decrypted).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(chunk.iter().map(|m| m.undecryptable.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Nullable<ahead::TsVector>>, _>(
        vectors.filter(|v| v.len() == chunk.len()).unwrap_or_else(|| vec![None; chunk.len()]),
    )
    .execute(pg)?;
    Ok(n)
}

/// The stored form of a message's attachment reference.
fn media_json(m: &MessageRecord) -> Result<Option<String>> {
    match &m.media {
        Some(media) if !m.redacted => {
            let json =
                serde_json::to_string(media).map_err(|_| Error::invalid("media", "cannot be encoded"))?;
            if json.len() > MAX_MEDIA_JSON {
                return Err(Error::invalid("media", "too long"));
            }
            Ok(Some(json))
        }
        _ => Ok(None),
    }
}

/// Raises re-fetched messages of the room to `level`; never lowers one.
fn raise_classification(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    level: Classification,
    chunk: &[MessageRecord],
) -> Result<()> {
    diesel::update(
        messages::table
            .filter(messages::org_id.eq(org))
            .filter(messages::room_pk.eq(room_pk))
            .filter(messages::classification.lt(level.rank()))
            .filter(messages::event_id.eq_any(chunk.iter().map(|m| m.event_id.as_str()))),
    )
    .set(messages::classification.eq(level.rank()))
    .execute(conn)?;
    Ok(())
}

/// Completes re-fetched messages stored while still encrypted, from the homeserver the room was
/// stored from (the caller checks): one now decrypted from the key backup gets the content it
/// carried as first sent (an edit folded into the record is not applied here: its original is
/// kept), if the stored row has the same sender and time; one still undecryptable gets its
/// reason. A message stored in clear, decrypted earlier, or redacted is never touched; the
/// update trigger and the generated column index the new text for search.
fn fill_decrypted(conn: &mut DbConn, org: &str, room_pk: i64, chunk: &[MessageRecord]) -> Result<()> {
    for m in chunk.iter().filter(|m| !m.redacted && (m.decrypted || m.undecryptable.is_some())) {
        let stored = messages::table
            .filter(messages::org_id.eq(org))
            .filter(messages::room_pk.eq(room_pk))
            .filter(messages::event_id.eq(m.event_id.as_str()))
            .filter(messages::sender.eq(m.sender.as_str()))
            .filter(messages::sent_at.eq(to_unix_ms(m.sent_at)))
            .filter(messages::encrypted.eq(true))
            .filter(messages::redacted.eq(false));
        if m.decrypted {
            // The original as sent: the first version when an edit was folded in.
            let (msgtype, body) = match m.versions.first() {
                Some(original) if m.edited => (original.msgtype.as_deref(), original.body.as_deref()),
                _ => (m.msgtype.as_deref(), m.body.as_deref()),
            };
            check_text(body, MAX_BODY, "message body")?;
            let media = if m.edited { None } else { media_json(m)? };
            diesel::update(stored)
                .set((
                    messages::msgtype.eq(msgtype),
                    messages::body.eq(body),
                    messages::media.eq(media.as_deref()),
                    messages::reply_to.eq(m.reply_to.as_ref().map(|e| e.as_str())),
                    messages::thread_root.eq(m.thread_root.as_ref().map(|e| e.as_str())),
                    messages::encrypted.eq(false),
                    messages::decrypted.eq(true),
                    messages::undecryptable.eq(None::<String>),
                ))
                .execute(conn)?;
        } else {
            diesel::update(stored)
                .set(messages::undecryptable.eq(m.undecryptable.as_deref()))
                .execute(conn)?;
        }
    }
    Ok(())
}

/// What [`apply_edits_and_redactions`] did.
#[derive(Debug, Default)]
struct Evidence {
    edits_applied: u64,
    edits_ignored: u64,
    redactions_ignored: u64,
}

/// A stored message as the edit and redaction rules need it.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = messages)]
struct Original {
    id: i64,
    sender: String,
    msgtype: Option<String>,
    body: Option<String>,
    sent_at: i64,
    edited: bool,
    redacted: bool,
    encrypted: bool,
}

fn original(conn: &mut DbConn, org: &str, room_pk: i64, event: &EventId) -> Result<Option<Original>> {
    Ok(messages::table
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .filter(messages::event_id.eq(event.as_str()))
        .select(Original::as_select())
        .first(conn)
        .optional()?)
}

/// Keeps one version of a message; a version already kept is left as it is. Returns whether
/// the event is (now, or already was) a version of this message.
fn keep_version(conn: &mut DbConn, org: &str, message_pk: i64, v: &MessageVersion) -> Result<bool> {
    let backend = conn.backend();
    check_text(v.msgtype.as_deref(), MAX_MSGTYPE, "message type")?;
    check_text(v.body.as_deref(), MAX_BODY, "message body")?;
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO message_versions (org_id, message_pk, event_id, sender, sent_at, msgtype, body) VALUES (");
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(message_pk).push(", ");
    sql.bind::<Text, _>(v.event_id.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(v.sender.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(v.sent_at)).push(", ");
    sql.bind::<Nullable<Text>, _>(v.msgtype.clone()).push(", ");
    sql.bind::<Nullable<Text>, _>(v.body.clone()).push(") ON CONFLICT (org_id, event_id) DO NOTHING");
    if sql.build_cached().execute(conn)? == 1 {
        return Ok(true);
    }
    // Kept before: as a version of this message (a re-ingestion), or of another one (an event
    // id a homeserver reused), which this message must not take over.
    Ok(version_owner(conn, org, &v.event_id)? == Some(message_pk))
}

/// The message an event is kept as a version of, if any.
fn version_owner(conn: &mut DbConn, org: &str, event: &EventId) -> Result<Option<i64>> {
    Ok(message_versions::table
        .filter(message_versions::org_id.eq(org))
        .filter(message_versions::event_id.eq(event.as_str()))
        .select(message_versions::message_pk)
        .first(conn)
        .optional()?)
}

/// Makes `latest` the stored content of message `id` unless a later version is already there;
/// `media`, when given, replaces the attachment reference.
fn set_latest(
    conn: &mut DbConn,
    id: i64,
    latest: &MessageVersion,
    media: Option<Option<String>>,
) -> Result<usize> {
    let at = to_unix_ms(latest.sent_at);
    let target = messages::table
        .filter(messages::id.eq(id))
        .filter(messages::redacted.eq(false))
        .filter(messages::edited_at.is_null().or(messages::edited_at.lt(at)));
    let content = (
        messages::body.eq(latest.body.as_deref()),
        messages::msgtype.eq(latest.msgtype.as_deref()),
        messages::edited.eq(true),
        messages::edited_at.eq(at),
    );
    let changed = match media {
        Some(media) => diesel::update(target).set((content, messages::media.eq(media))).execute(conn)?,
        None => diesel::update(target).set(content).execute(conn)?,
    };
    Ok(changed)
}

/// Marks message `id` redacted, purges its content and the bodies of its versions, and keeps
/// who redacted it, when and why (the first redaction known is kept).
fn redact(conn: &mut DbConn, org: &str, stored: &Original, redaction: Option<&Redaction>) -> Result<()> {
    let backend = conn.backend();
    let id = stored.id;
    if let Some(r) = redaction {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO message_redactions (org_id, message_pk, redacted_by, redacted_at, reason) VALUES (",
        );
        sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(id).push(", ");
        sql.bind::<Text, _>(r.redacted_by.as_str().to_owned()).push(", ");
        sql.bind::<BigInt, _>(to_unix_ms(r.redacted_at)).push(", ");
        sql.bind::<Nullable<Text>, _>(r.reason.as_deref().map(Redaction::bounded_reason));
        sql.push(") ON CONFLICT (org_id, message_pk) DO NOTHING");
        sql.build_cached().execute(conn)?;
    }
    if stored.redacted && !stored.edited {
        // Nothing left to purge.
        return Ok(());
    }
    diesel::update(messages::table.filter(messages::id.eq(id)))
        .set((
            messages::redacted.eq(true),
            messages::body.eq(None::<String>),
            messages::media.eq(None::<String>),
        ))
        .execute(conn)?;
    diesel::update(
        message_versions::table
            .filter(message_versions::org_id.eq(org))
            .filter(message_versions::message_pk.eq(id)),
    )
    .set((message_versions::body.eq(None::<String>), message_versions::msgtype.eq(None::<String>)))
    .execute(conn)?;
    Ok(())
}

/// A kept version of a message of the room, found by the event that carried it.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = message_versions)]
struct VersionKey {
    id: i64,
    message_pk: i64,
    sender: String,
    sent_at: i64,
}

fn version_of(conn: &mut DbConn, org: &str, room_pk: i64, event: &EventId) -> Result<Option<VersionKey>> {
    Ok(message_versions::table
        .inner_join(messages::table)
        .filter(message_versions::org_id.eq(org))
        .filter(message_versions::event_id.eq(event.as_str()))
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .select(VersionKey::as_select())
        .first(conn)
        .optional()?)
}

/// Applies a redaction whose target is an edit kept as a version: under the same rule as a
/// message's, the version's content is purged and, when it was the message's current content,
/// the message falls back to the latest version left (the original at least). Returns `None`
/// when the target is no kept version, else whether the redaction was applied.
fn withdraw_version(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    r: &argus_domain::MessageRedaction,
) -> Result<Option<bool>> {
    let backend = conn.backend();
    let Some(version) = version_of(conn, org, room_pk, &r.target)? else {
        return Ok(None);
    };
    let sender: UserId =
        version.sender.parse().map_err(|_| Error::Corrupt("a stored version fails validation"))?;
    if !policy::may_redact(&sender, &r.redaction.redacted_by, r.confirmed) {
        return Ok(Some(false));
    }
    diesel::update(message_versions::table.filter(message_versions::id.eq(version.id)))
        .set((message_versions::body.eq(None::<String>), message_versions::msgtype.eq(None::<String>)))
        .execute(conn)?;
    // The message shows the latest version still holding content.
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE messages SET body = (SELECT v.body FROM message_versions v WHERE v.org_id = messages.org_id \
         AND v.message_pk = messages.id AND v.body IS NOT NULL ORDER BY v.sent_at DESC, v.id DESC LIMIT 1), \
         msgtype = (SELECT v.msgtype FROM message_versions v WHERE v.org_id = messages.org_id \
         AND v.message_pk = messages.id AND v.body IS NOT NULL ORDER BY v.sent_at DESC, v.id DESC LIMIT 1), \
         media = CASE WHEN messages.edited_at = ",
    );
    // The withdrawn edit's attachment goes with it when it was the message's current content.
    sql.bind::<BigInt, _>(version.sent_at).push(" THEN NULL ELSE messages.media END WHERE messages.id = ");
    sql.bind::<BigInt, _>(version.message_pk).push(" AND messages.redacted = ").bind::<Bool, _>(false);
    sql.build_cached().execute(conn)?;
    Ok(Some(true))
}

/// Applies the snapshot's edits and redactions to the stored messages of the room, under the
/// rules of [`policy::may_edit`] and [`policy::may_redact`], the same within one fetch and
/// across fetches; every applied edit is kept as a version (the original too), and never
/// twice.
fn apply_edits_and_redactions(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    s: &RoomSnapshot,
) -> Result<Evidence> {
    let mut done = Evidence::default();
    // Messages edited or redacted within the fetch: stored now, or stored earlier (re-fetched).
    for m in s.messages.iter().filter(|m| !m.versions.is_empty() || m.redacted) {
        let Some(stored) = original(conn, org, room_pk, &m.event_id)? else {
            continue;
        };
        if m.redacted {
            redact(conn, org, &stored, m.redaction.as_ref())?;
            continue;
        }
        // The connector applied only its own sender's edits; a record from elsewhere is held to
        // the same rule.
        let (mut versions, forged): (Vec<_>, Vec<_>) =
            m.versions.iter().partition(|v| v.sender.as_str() == stored.sender);
        done.edits_ignored += forged.len() as u64;
        versions.sort_by(|a, b| (a.sent_at, &a.event_id).cmp(&(b.sent_at, &b.event_id)));
        if stored.encrypted || stored.redacted || versions.len() < 2 {
            continue;
        }
        let total = versions.len();
        let mut kept = Vec::with_capacity(total);
        for v in versions {
            if keep_version(conn, org, stored.id, v)? {
                kept.push(v);
            } else {
                done.edits_ignored += 1;
            }
        }
        let refused = kept.len() < total;
        match kept.last() {
            // Some version was refused: the message shows the latest kept one (the original
            // at least), not what the connector folded in; its attachment cannot be told.
            Some(latest) if refused => {
                set_latest(conn, stored.id, latest, Some(None))?;
            }
            Some(latest) if kept.len() > 1 => {
                set_latest(conn, stored.id, latest, Some(media_json(m)?))?;
            }
            _ => {}
        }
    }
    apply_outside(conn, org, room_pk, &s.edits, &s.redactions, &mut done, true)?;
    Ok(done)
}

/// Applies edits and redactions of messages outside the batch (stored earlier, or not yet):
/// oldest edit first, under the same rules. With `keep_pending`, those whose target is not
/// stored yet are kept ([`keep_pending_edit`], [`keep_pending_redaction`]) for the batch that
/// stores it.
fn apply_outside(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    edits: &[MessageEdit],
    redactions: &[argus_domain::MessageRedaction],
    done: &mut Evidence,
    keep_pending: bool,
) -> Result<()> {
    let mut edits: Vec<&MessageEdit> = edits.iter().collect();
    edits.sort_by(|a, b| (a.edited_at, &a.event_id).cmp(&(b.edited_at, &b.event_id)));
    let (mut edits_waiting, mut redactions_waiting) = (None, None);
    for e in edits {
        let Some(stored) = original(conn, org, room_pk, &e.target)? else {
            if keep_pending && !keep_pending_edit(conn, org, room_pk, e, &mut edits_waiting)? {
                done.edits_ignored += 1;
            }
            continue;
        };
        let sender: UserId =
            stored.sender.parse().map_err(|_| Error::Corrupt("a stored message fails validation"))?;
        if !policy::may_edit(&sender, stored.encrypted, stored.redacted, &e.sender) {
            tracing::info!(edit = %e.event_id, target = %e.target, "ignored an edit not made by the original's sender");
            done.edits_ignored += 1;
            continue;
        }
        if version_owner(conn, org, &e.event_id)?.is_some_and(|owner| owner != stored.id) {
            // An event id already kept for another message: nothing is taken over.
            done.edits_ignored += 1;
            continue;
        }
        if !stored.edited {
            let first = MessageVersion {
                event_id: e.target.clone(),
                sender: sender.clone(),
                sent_at: argus_domain::from_unix_ms(stored.sent_at)?,
                msgtype: stored.msgtype.clone(),
                body: stored.body.clone(),
            };
            keep_version(conn, org, stored.id, &first)?;
        }
        let version = MessageVersion {
            event_id: e.event_id.clone(),
            sender: e.sender.clone(),
            sent_at: e.edited_at,
            msgtype: e.msgtype.clone(),
            body: e.body.clone(),
        };
        if !keep_version(conn, org, stored.id, &version)? {
            done.edits_ignored += 1;
            continue;
        }
        // Counted when it became the message's content (not when re-ingested, or superseded).
        if set_latest(conn, stored.id, &version, None)? > 0 {
            done.edits_applied += 1;
        }
    }
    // Redactions of messages stored by an earlier read.
    for r in redactions {
        let Some(stored) = original(conn, org, room_pk, &r.target)? else {
            // Not a message: perhaps an edit kept as a version of one; else not stored yet.
            match withdraw_version(conn, org, room_pk, r)? {
                Some(false) => done.redactions_ignored += 1,
                Some(true) => {}
                None if keep_pending
                    && !keep_pending_redaction(conn, org, room_pk, r, &mut redactions_waiting)? =>
                {
                    done.redactions_ignored += 1;
                }
                None => {}
            }
            continue;
        };
        let sender: UserId =
            stored.sender.parse().map_err(|_| Error::Corrupt("a stored message fails validation"))?;
        if !policy::may_redact(&sender, &r.redaction.redacted_by, r.confirmed) {
            tracing::info!(target = %r.target, "ignored a redaction the homeserver did not confirm");
            done.redactions_ignored += 1;
            continue;
        }
        redact(conn, org, &stored, Some(&r.redaction))?;
    }
    Ok(())
}

/// The most edits, and redactions, kept waiting for their original per room: past it, more are
/// dropped (a homeserver cannot grow the archive without bound with edits of nothing).
const MAX_PENDING_PER_ROOM: i64 = 100_000;

/// Whether one more item may wait in `table` for the room; `count` caches the room's count for
/// the batch (one `COUNT` per batch and table, not per item).
fn pending_room_left(
    conn: &mut DbConn,
    table: &str,
    org: &str,
    room_pk: i64,
    count: &mut Option<i64>,
) -> Result<bool> {
    let n = match *count {
        Some(n) => n,
        None => pending_count(conn, table, org, room_pk)?,
    };
    *count = Some(n + 1);
    Ok(n < MAX_PENDING_PER_ROOM)
}

/// Whether anything of the room waits in `table` (one index lookup).
fn pending_exists(conn: &mut DbConn, table: &str, org: &str, room_pk: i64) -> Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct One {
        #[diesel(sql_type = BigInt)]
        #[expect(dead_code, reason = "only whether a row comes back matters")]
        one: i64,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT CAST(1 AS BIGINT) AS one FROM ").push(table).push(" WHERE org_id = ");
    sql.bind::<Text, _>(org.to_owned()).push(" AND room_pk = ").bind::<BigInt, _>(room_pk).push(" LIMIT 1");
    Ok(!sql.build().load::<One>(conn)?.is_empty())
}

fn pending_count(conn: &mut DbConn, table: &str, org: &str, room_pk: i64) -> Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT COUNT(*) AS n FROM ")
        .push(table)
        .push(" WHERE org_id = ")
        .bind::<Text, _>(org.to_owned());
    sql.push(" AND room_pk = ").bind::<BigInt, _>(room_pk);
    Ok(sql.build().get_result::<N>(conn)?.n)
}

/// Keeps an edit whose original is not stored yet (once per edit event); `false` when the
/// room has too many waiting and it was dropped.
fn keep_pending_edit(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    e: &MessageEdit,
    count: &mut Option<i64>,
) -> Result<bool> {
    if !pending_room_left(conn, "pending_edits", org, room_pk, count)? {
        tracing::warn!(edit = %e.event_id, "too many edits wait for their original; this one is dropped");
        return Ok(false);
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("INSERT INTO pending_edits (org_id, room_pk, target, event_id, sender, sent_at, msgtype, body) VALUES (");
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(room_pk).push(", ");
    sql.bind::<Text, _>(e.target.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(e.event_id.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(e.sender.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(e.edited_at)).push(", ");
    sql.bind::<Nullable<Text>, _>(e.msgtype.clone()).push(", ");
    sql.bind::<Nullable<Text>, _>(e.body.clone())
        .push(") ON CONFLICT (org_id, room_pk, event_id) DO NOTHING");
    sql.build().execute(conn)?;
    Ok(true)
}

/// Keeps a redaction whose target is not stored yet (the first one per target); `false` when
/// the room has too many waiting and it was dropped.
fn keep_pending_redaction(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    r: &argus_domain::MessageRedaction,
    count: &mut Option<i64>,
) -> Result<bool> {
    if !pending_room_left(conn, "pending_redactions", org, room_pk, count)? {
        tracing::warn!(target = %r.target, "too many redactions wait for their target; this one is dropped");
        return Ok(false);
    }
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "INSERT INTO pending_redactions (org_id, room_pk, target, redacted_by, redacted_at, reason, confirmed) VALUES (",
    );
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(room_pk).push(", ");
    sql.bind::<Text, _>(r.target.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(r.redaction.redacted_by.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(r.redaction.redacted_at)).push(", ");
    sql.bind::<Nullable<Text>, _>(r.redaction.reason.clone()).push(", ");
    sql.bind::<Bool, _>(r.confirmed).push(") ON CONFLICT (org_id, room_pk, target) DO NOTHING");
    sql.build().execute(conn)?;
    Ok(true)
}

const PENDING_EDIT_COLUMNS: &str = "id, target, event_id, sender, sent_at, msgtype, body";
const PENDING_REDACTION_COLUMNS: &str = "id, target, redacted_by, redacted_at, reason, confirmed";

#[derive(diesel::QueryableByName)]
struct PendingEditRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    target: String,
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
}

#[derive(diesel::QueryableByName)]
struct PendingRedactionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Text)]
    redacted_by: String,
    #[diesel(sql_type = BigInt)]
    redacted_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Bool)]
    confirmed: bool,
}

/// Targets per statement of [`pending_rows`].
const PENDING_TARGETS_PER_STATEMENT: usize = 500;

/// The rows of `table` kept for the room whose target is one of `targets` (through the
/// `(org_id, room_pk, target)` index, a few hundred targets per statement).
fn pending_rows<T: diesel::QueryableByName<crate::db::MultiBackend> + 'static>(
    conn: &mut DbConn,
    columns: &str,
    table: &str,
    org: &str,
    room_pk: i64,
    targets: &[&str],
) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    for chunk in targets.chunks(PENDING_TARGETS_PER_STATEMENT) {
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT ").push(columns).push(" FROM ").push(table).push(" WHERE org_id = ");
        sql.bind::<Text, _>(org.to_owned()).push(" AND room_pk = ").bind::<BigInt, _>(room_pk);
        sql.push(" AND target IN (");
        for (i, target) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind::<Text, _>((*target).to_owned());
        }
        sql.push(")");
        rows.extend(sql.build().load::<T>(conn)?);
    }
    Ok(rows)
}

/// Applies the kept edits and redactions whose target `messages` (just stored) holds, and
/// forgets them.
fn apply_pending(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    messages: &[MessageRecord],
    done: &mut Evidence,
) -> Result<()> {
    use crate::schema::{pending_edits as pe, pending_redactions as pr};
    const BAD: Error = Error::Corrupt("a kept edit or redaction fails validation");
    if messages.is_empty() {
        return Ok(());
    }
    // Most rooms have nothing waiting: one look at each index says so.
    if !pending_exists(conn, "pending_edits", org, room_pk)?
        && !pending_exists(conn, "pending_redactions", org, room_pk)?
    {
        return Ok(());
    }
    let batch_ids: Vec<&str> = messages.iter().map(|m| m.event_id.as_str()).collect();
    let mut edits = Vec::new();
    let mut edit_ids = Vec::new();
    for row in
        pending_rows::<PendingEditRow>(conn, PENDING_EDIT_COLUMNS, "pending_edits", org, room_pk, &batch_ids)?
    {
        edits.push(MessageEdit {
            event_id: row.event_id.parse().map_err(|_| BAD)?,
            sender: row.sender.parse().map_err(|_| BAD)?,
            target: row.target.parse().map_err(|_| BAD)?,
            msgtype: row.msgtype,
            body: row.body,
            edited_at: argus_domain::from_unix_ms(row.sent_at)?,
        });
        edit_ids.push(row.id);
    }
    // An edit's arrival makes its redactions applicable too (a redacted edit is withdrawn).
    let reachable: Vec<&str> =
        batch_ids.iter().copied().chain(edits.iter().map(|e| e.event_id.as_str())).collect();
    let mut redactions = Vec::new();
    let mut redaction_ids = Vec::new();
    let rows = pending_rows::<PendingRedactionRow>(
        conn,
        PENDING_REDACTION_COLUMNS,
        "pending_redactions",
        org,
        room_pk,
        &reachable,
    )?;
    for row in rows {
        redactions.push(argus_domain::MessageRedaction {
            target: row.target.parse().map_err(|_| BAD)?,
            redaction: Redaction {
                redacted_by: row.redacted_by.parse().map_err(|_| BAD)?,
                redacted_at: argus_domain::from_unix_ms(row.redacted_at)?,
                reason: row.reason,
            },
            confirmed: row.confirmed,
        });
        redaction_ids.push(row.id);
    }
    if edits.is_empty() && redactions.is_empty() {
        return Ok(());
    }
    apply_outside(conn, org, room_pk, &edits, &redactions, done, false)?;
    // In statements of a few hundred ids: a message edited tens of thousands of times must not
    // exceed SQLite's bind limit.
    for chunk in edit_ids.chunks(PENDING_TARGETS_PER_STATEMENT) {
        diesel::delete(pe::table.filter(pe::id.eq_any(chunk))).execute(conn)?;
    }
    for chunk in redaction_ids.chunks(PENDING_TARGETS_PER_STATEMENT) {
        diesel::delete(pr::table.filter(pr::id.eq_any(chunk))).execute(conn)?;
    }
    Ok(())
}

/// Appends a FAILED audit record (message count 0), and nothing else.
pub(crate) fn record_failure(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    entry: &NewIngestion,
) -> Result<IngestionRecord> {
    let mut entry = audit::sanitised(entry)?;
    entry.outcome = IngestionOutcome::Failed;
    append_alone(conn, key, entry)
}

/// Appends the audit record of a note posted into a room (sent or refused): filed, like
/// [`record_failure`], at the level of the room it names.
pub(crate) fn record_post(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    entry: &NewIngestion,
) -> Result<IngestionRecord> {
    if entry.post.is_none() {
        return Err(Error::invalid("audit record", "a post record needs its evidence"));
    }
    append_alone(conn, key, audit::sanitised(entry)?)
}

/// Appends a sanitised audit record that stores nothing else (a failure, a post): message count
/// 0, the homeserver's origin only, an end time. It is filed at the level of the room it names
/// when the archive holds that room higher (see `record_ingestion`), so that a reader below the
/// room's level does not learn of it from the trail.
fn append_alone(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    mut entry: NewIngestion,
) -> Result<IngestionRecord> {
    entry.homeserver_url = NewIngestion::origin_of(&entry.homeserver_url);
    entry.message_count = 0;
    if entry.finished_at.is_none() {
        entry.finished_at = Some(argus_domain::from_unix_ms(now_ms())?);
    }
    let org = entry.org.clone();
    in_org_transaction(conn, org.as_str(), |conn| {
        if let Ok(room_id) = entry.room_id.parse::<argus_domain::RoomId>()
            && let Some(key) = read::room_key(conn, &Gate::whole_org(&entry.org), &room_id)?
        {
            let stored = crate::rows::rank(key.classification)?;
            entry.classification = policy::merge_classification(Some(stored), entry.classification);
        }
        audit::append(conn, key, &entry)
    })
}

/// A streamed ingestion under way: its row in `ingestion_runs`, from [`crate::Store::begin_run`]
/// to [`crate::Store::finish_run`]. While the row exists and its lease has not expired, the run is
/// its process's; past the lease, [`crate::Store::close_interrupted_runs`] audits it as
/// interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTicket {
    id: i64,
    scheduled: bool,
    run: IngestionRun,
    room_id: argus_domain::RoomId,
    homeserver_url: argus_domain::HomeserverUrl,
    lease: std::time::Duration,
}

impl RunTicket {
    /// The run: who, at which level, since when.
    pub fn run(&self) -> &IngestionRun {
        &self.run
    }

    /// The room it reads.
    pub fn room_id(&self) -> &argus_domain::RoomId {
        &self.room_id
    }
}

/// What one commit of a streamed run stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagesResult {
    /// Messages newly stored by these pages.
    pub messages_stored: i64,
    /// Edits of earlier-stored messages applied.
    pub edits_applied: u64,
    /// Edits refused ([`policy::may_edit`]).
    pub edits_ignored: u64,
    /// Redactions of earlier-stored messages refused ([`policy::may_redact`]).
    pub redactions_ignored: u64,
}

/// How a streamed run ended: its audit record and the room as its caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The room after the run (`None`: never stored, or withheld from the caller).
    pub room: Option<StoredRoom>,
    /// Messages the run's committed pages stored.
    pub messages_stored: i64,
    /// The audit record appended.
    pub ingestion: IngestionRecord,
}

fn lease_end(lease: std::time::Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

/// The PostgreSQL advisory lock key of one room of an organisation: the pages of two runs of
/// one room never interleave within a commit, while other rooms' runs proceed.
fn room_lock_key(org: &str, room_id: &str) -> i64 {
    lock_key(&format!("room:{org}:{room_id}"))
}

/// Starts a streamed run: its journal row, with a lease of `lease`.
pub(crate) fn begin_run(
    conn: &mut DbConn,
    run: &IngestionRun,
    room_id: &argus_domain::RoomId,
    homeserver: &argus_domain::HomeserverUrl,
    lease: std::time::Duration,
    scheduled: bool,
) -> Result<RunTicket> {
    use crate::schema::ingestion_runs as r;
    policy::check_may_classify(&run.viewer, run.classification)?;
    let id: i64 = diesel::insert_into(r::table)
        .values((
            r::org_id.eq(run.viewer.org.as_str()),
            r::actor.eq(run.viewer.actor.as_str()),
            r::room_id.eq(room_id.as_str()),
            r::homeserver_url.eq(NewIngestion::origin_of(homeserver.as_str())),
            r::classification.eq(run.classification.rank()),
            r::started_at.eq(to_unix_ms(run.started_at)),
            r::lease_until.eq(lease_end(lease)),
            r::scheduled.eq(scheduled),
        ))
        .returning(r::id)
        .get_result(conn)?;
    Ok(RunTicket {
        id,
        scheduled,
        run: run.clone(),
        room_id: room_id.clone(),
        homeserver_url: homeserver.clone(),
        lease,
    })
}

/// Commits some pages of a streamed run with the room's positions, in one transaction holding
/// the room's lock (not the organisation's: runs of other rooms go on), and renews the run's
/// lease. Fails with [`Error::Invalid`] when the run's row is gone (closed as interrupted).
pub(crate) fn commit_pages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    ticket: &RunTicket,
    pages: &RoomSnapshot,
) -> Result<PagesResult> {
    use crate::schema::ingestion_runs as r;
    validate(pages)?;
    if pages.room_id != ticket.room_id || pages.homeserver_url != ticket.homeserver_url {
        return Err(Error::invalid("pages", "they belong to another room than the run's"));
    }
    let org = ticket.run.viewer.org.as_str();
    in_transaction(conn, TxMode::Write, |conn| {
        if let DbConn::Postgres(c) = conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(room_lock_key(org, ticket.room_id.as_str()))
                .execute(c)?;
        }
        let stored = store_pages(conn, helpers, &ticket.run, pages)?;
        let renewed = diesel::update(r::table.filter(r::id.eq(ticket.id)).filter(r::org_id.eq(org)))
            .set((
                r::message_count.eq(r::message_count + stored.messages_stored),
                r::lease_until.eq(lease_end(ticket.lease)),
            ))
            .execute(conn)?;
        if renewed == 0 {
            // Its lease expired and another process audited it as interrupted: what it read
            // now belongs to no run, so it is not kept.
            return Err(Error::invalid("ingestion run", "it was closed as interrupted"));
        }
        Ok(PagesResult {
            messages_stored: stored.messages_stored,
            edits_applied: stored.evidence.edits_applied,
            edits_ignored: stored.evidence.edits_ignored,
            redactions_ignored: stored.evidence.redactions_ignored,
        })
    })
}

/// Ends a streamed run: appends its audit record (SUCCEEDED, or FAILED with `error` and what
/// its committed pages stored) and the outbox row, and removes its journal row; the
/// organisation's lock is held for this transaction only.
pub(crate) fn finish_run(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    ticket: &RunTicket,
    error: Option<String>,
) -> Result<RunRecord> {
    use crate::schema::ingestion_runs as r;
    let org = ticket.run.viewer.org.as_str();
    in_org_transaction(conn, org, |conn| {
        let count: Option<i64> =
            diesel::delete(r::table.filter(r::id.eq(ticket.id)).filter(r::org_id.eq(org)))
                .returning(r::message_count)
                .get_result(conn)
                .optional()?;
        let Some(message_count) = count else {
            return Err(Error::invalid("ingestion run", "it was closed as interrupted"));
        };
        let end = RunEnd {
            room_id: ticket.room_id.as_str().to_owned(),
            homeserver_url: ticket.homeserver_url.as_str().to_owned(),
            message_count,
            error,
            scheduled: ticket.scheduled,
        };
        let (room, ingestion) = append_run_record(conn, key, &ticket.run, &end)?;
        Ok(RunRecord { room, messages_stored: message_count, ingestion })
    })
}

/// The error an interrupted run's audit record keeps.
pub const INTERRUPTED: &str =
    "the run was interrupted (its process stopped); the pages it had committed are kept";

/// Audits every run whose lease expired before `now` as FAILED with [`INTERRUPTED`] and what
/// its committed pages stored, and removes it. Two processes closing at once close each run
/// once (the row is deleted in the same transaction as its record is appended).
pub(crate) fn close_interrupted_runs(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    now: OffsetDateTime,
) -> Result<Vec<IngestionRecord>> {
    use crate::schema::ingestion_runs as r;
    let expired: Vec<(i64, String)> = r::table
        .filter(r::lease_until.lt(to_unix_ms(now)))
        .select((r::id, r::org_id))
        .order(r::id)
        .limit(1000)
        .load(conn)?;
    let mut closed = Vec::new();
    for (id, org) in expired {
        let record = in_org_transaction(conn, &org, |conn| {
            let row: Option<(String, String, String, i16, i64, i64, bool)> =
                diesel::delete(r::table.filter(r::id.eq(id)).filter(r::lease_until.lt(to_unix_ms(now))))
                    .returning((
                        r::actor,
                        r::room_id,
                        r::homeserver_url,
                        r::classification,
                        r::started_at,
                        r::message_count,
                        r::scheduled,
                    ))
                    .get_result(conn)
                    .optional()?;
            let Some((actor, room_id, homeserver_url, level, started_at, message_count, scheduled)) = row
            else {
                return Ok(None);
            };
            const BAD: Error = Error::Corrupt("an ingestion run fails validation");
            let viewer = Viewer::new(
                actor.parse().map_err(|_| BAD)?,
                org.parse().map_err(|_| BAD)?,
                crate::rows::rank(level).map_err(|_| BAD)?,
                [],
            );
            let run = IngestionRun {
                viewer,
                classification: crate::rows::rank(level).map_err(|_| BAD)?,
                started_at: argus_domain::from_unix_ms(started_at)?,
            };
            let end = RunEnd {
                room_id,
                homeserver_url,
                message_count,
                error: Some(INTERRUPTED.to_owned()),
                scheduled,
            };
            append_run_record(conn, key, &run, &end).map(|(_, record)| Some(record))
        });
        // One run that cannot be closed (a corrupt row) must not keep the others open.
        match record {
            Ok(record) => closed.extend(record),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => tracing::error!(run = id, error = %e, "an interrupted run could not be audited"),
        }
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn even_chunks_cut_the_rest_short() {
        assert_eq!(super::even_chunks(5, 2), [0..2, 2..4, 4..5]);
        assert!(super::even_chunks(0, 2).is_empty());
    }
}
