//! Messages: the per-backend inserts of new messages (SQLite multi-row statements, PostgreSQL
//! column arrays with search vectors computed ahead), the classification of re-fetched ones
//! raised, and the content of messages stored while encrypted filled once decrypted.

use argus_domain::{Classification, MessageRecord, to_unix_ms};
use diesel::{
    ExpressionMethods as _, QueryDsl as _, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, SmallInt, Text},
};

use super::validate::{MAX_BODY, MAX_MEDIA_JSON, check_text};
use crate::{Backend, Error, Result, ahead, db::DbConn, schema::messages};

/// Columns written per message row.
const MESSAGE_COLUMNS: usize = 18;

/// Message rows per PostgreSQL statement (column arrays, so the bind limit does not apply).
const PG_ROWS_PER_STATEMENT: usize = 10_000;

/// Inserts messages not stored yet, in statements sized to the backend's bind limit, and
/// raises the classification of re-fetched ones; returns how many were new. On PostgreSQL, a
/// second pooled connection from `helpers` (taken here, once the transaction holds its locks,
/// and only when one is free) computes the search vectors ahead ([`crate::ahead`]).
pub(super) fn insert_messages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    org: &str,
    room_pk: i64,
    level: Classification,
    messages: &[MessageRecord],
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
                fill_decrypted(conn, org, room_pk, chunk)?;
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

/// Message rows per multi-row SQLite `INSERT` (18 binds each, well under the bind limit).
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
                m::encrypted.eq(msg.was_encrypted()),
                m::decrypted.eq(msg.decrypted),
                m::undecryptable.eq(msg.undecryptable.as_deref()),
                m::reply_to.eq(msg.reply_to.as_ref().map(|e| e.as_str())),
                m::thread_root.eq(msg.thread_root.as_ref().map(|e| e.as_str())),
                m::media.eq(media.as_deref()),
                m::classification.eq(level.rank()),
                m::sender_trust.eq(Some(msg.sender_trust.code())),
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
         redacted, encrypted, reply_to, thread_root, media, classification, decrypted, undecryptable, search, \
         sender_trust) \
         SELECT $1, $2, u.event_id, u.sender, u.msgtype, u.body, u.sent_at, u.edited, NULL, u.redacted, \
         u.encrypted, u.reply_to, u.thread_root, u.media, $3, u.decrypted, u.undecryptable, u.search, \
         u.sender_trust \
         FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::bool[], $10::bool[], \
         $11::bool[], $12::text[], $13::text[], $14::text[], $15::bool[], $16::text[], $17::tsvector[], \
         $18::text[]) \
         AS u(event_id, sender, msgtype, body, sent_at, edited, redacted, encrypted, reply_to, thread_root, media, \
         decrypted, undecryptable, search, sender_trust) \
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
    .bind::<Array<Bool>, _>(chunk.iter().map(MessageRecord::was_encrypted).collect::<Vec<_>>())
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
    .bind::<Array<Text>, _>(chunk.iter().map(|m| m.sender_trust.code()).collect::<Vec<_>>())
    .execute(pg)?;
    Ok(n)
}

/// The stored form of a message's attachment reference.
pub(super) fn media_json(m: &MessageRecord) -> Result<Option<String>> {
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
/// stored from (no other reaches here: [`super::rooms::check_source`]): one now decrypted from
/// the key backup gets the content it carried as first sent (an edit folded into the record is
/// not applied here: its original is kept) and says `decrypted` (it stays `encrypted`: it
/// arrived so) and the trust its decryption found in the sending device, if the stored row has
/// the same sender and time; one still undecryptable gets its reason. A message stored in clear, decrypted earlier, or redacted is never touched; the update
/// trigger and the generated column index the new text for search.
fn fill_decrypted(conn: &mut DbConn, org: &str, room_pk: i64, chunk: &[MessageRecord]) -> Result<()> {
    for m in chunk.iter().filter(|m| !m.redacted && (m.decrypted || m.undecryptable.is_some())) {
        let stored = messages::table
            .filter(messages::org_id.eq(org))
            .filter(messages::room_pk.eq(room_pk))
            .filter(messages::event_id.eq(m.event_id.as_str()))
            .filter(messages::sender.eq(m.sender.as_str()))
            .filter(messages::sent_at.eq(to_unix_ms(m.sent_at)))
            .filter(messages::encrypted.eq(true))
            .filter(messages::decrypted.eq(false))
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
                    messages::decrypted.eq(true),
                    messages::undecryptable.eq(None::<String>),
                    messages::sender_trust.eq(Some(m.sender_trust.code())),
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

#[cfg(test)]
mod tests {
    #[test]
    fn even_chunks_cut_the_rest_short() {
        assert_eq!(super::even_chunks(5, 2), [0..2, 2..4, 4..5]);
        assert!(super::even_chunks(0, 2).is_empty());
    }
}
