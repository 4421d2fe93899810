//! Attachments: each message's reference to its file, the blobs that hold files' bytes, and
//! the media worker's queue.
//!
//! A reference is written beside its message when the message is stored or its content changes
//! (decrypted later, edited to another file), from what the messages table then holds
//! ([`sync_room`]). Reads go through the read gate joined to the message ([`read`]): a file is
//! seen, and downloaded, only by who may see its message, and never once the message is
//! redacted. The queue ([`queue`]) hands `PENDING` references to one replica at a time under a
//! lease and records what became of them; a blob's scan verdict is recorded on the blob, so
//! every reference to the same bytes follows it.

pub(crate) mod queue;
pub(crate) mod read;

use argus_domain::{AttachmentStatus, EncryptedFile, MediaRef, Sha256Digest};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, Text},
};

use crate::{Error, Result, db::DbConn, db::Sql};

pub use self::queue::{BlobVerdict, FetchOutcome, MediaJob, NewBlob, ScanRecord};
pub use self::read::Download;

/// The stored state of a reference; `FETCHED` reads as the blob's verdict.
const FETCHED: &str = "FETCHED";

/// Longest reason kept (the column's bound).
const MAX_REASON: usize = 512;

/// A reason cut to what the column holds, on a character boundary.
fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// A message of the room with the attachment its stored content carries.
#[derive(QueryableByName)]
struct MediaOfMessage {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    media: Option<String>,
}

/// Writes or refreshes the references of the messages `event_ids` of the room `room_pk` from
/// what the messages table holds now (after the commit's inserts, edits and redactions): a
/// message whose file is new gets a `PENDING` reference; one whose file changed (an edit to
/// another file, an encrypted one decrypted) starts again from `PENDING`; a reference whose
/// file is the same keeps its state. A message without a file (none, undecrypted, redacted)
/// writes nothing and keeps whatever reference it had, which reads then hide.
pub(crate) fn sync_room(conn: &mut DbConn, org: &str, room_pk: i64, event_ids: &[&str]) -> Result<()> {
    let backend = conn.backend();
    for chunk in event_ids.chunks(backend.max_binds().saturating_sub(8).clamp(1, 500)) {
        let mut sql = Sql::new(backend);
        sql.push("SELECT m.id, m.media FROM messages m WHERE m.org_id = ").bind::<Text, _>(org.to_owned());
        sql.push(" AND m.room_pk = ").bind::<BigInt, _>(room_pk);
        sql.push(" AND m.media IS NOT NULL AND m.event_id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind::<Text, _>((*id).to_owned());
        }
        sql.push(")");
        let rows: Vec<MediaOfMessage> = sql.build().load(conn)?;
        for row in rows {
            let Some(media) = row.media.as_deref().and_then(|j| serde_json::from_str::<MediaRef>(j).ok())
            else {
                continue;
            };
            upsert_reference(conn, org, room_pk, row.id, &media)?;
        }
    }
    Ok(())
}

/// Purges the reference of the redacted message `message_pk` (legal hold off): no file name,
/// no key, no bytes; `UNAVAILABLE` for good.
pub(crate) fn purge_reference(conn: &mut DbConn, org: &str, message_pk: i64) -> Result<()> {
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "UPDATE attachments SET filename = NULL, file = NULL, sha256 = NULL, fetched_at = NULL, \
         lease_owner = NULL, lease_until = NULL, state = 'UNAVAILABLE', \
         reason = 'REDACTED: its message was redacted' WHERE org_id = ",
    );
    sql.bind::<Text, _>(org.to_owned()).push(" AND message_pk = ").bind::<BigInt, _>(message_pk);
    sql.build_cached().execute(conn)?;
    Ok(())
}

/// The state a new reference starts in, with its reason: `PENDING`, or `UNDECRYPTABLE` for an
/// encrypted file whose description cannot be used.
fn initial_state(media: &MediaRef) -> (&'static str, Option<String>) {
    match &media.file {
        Some(file) if file.url.parse::<argus_domain::MxcUri>().is_err() => (
            "UNDECRYPTABLE",
            Some("MALFORMED_FILE: the encrypted file's URL is not an mxc:// URI".to_owned()),
        ),
        _ => (AttachmentStatus::Pending.as_str(), None),
    }
}

/// Inserts the reference of message `message_pk`, or refreshes it when its file changed.
fn upsert_reference(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    message_pk: i64,
    media: &MediaRef,
) -> Result<()> {
    let Some(uri) = media.mxc_uri() else { return Ok(()) };
    let file = media
        .file
        .as_ref()
        .map(|f: &EncryptedFile| serde_json::to_string(f))
        .transpose()
        .map_err(|_| Error::invalid("attachment", "the encrypted file cannot be encoded"))?;
    let (state, reason) = initial_state(media);
    let size = media.size.and_then(|s| i64::try_from(s).ok());
    // Text as PostgreSQL takes it: no NUL (the normaliser already keeps none in file names).
    let text = |s: &str, max: usize| s.chars().filter(|c| *c != '\0').take(max).collect::<String>();
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "INSERT INTO attachments (org_id, message_pk, room_pk, mxc_uri, filename, declared_mimetype, \
         declared_size, encrypted, file, state, reason) VALUES (",
    );
    sql.bind::<Text, _>(org.to_owned()).push(", ");
    sql.bind::<BigInt, _>(message_pk).push(", ");
    sql.bind::<BigInt, _>(room_pk).push(", ");
    sql.bind::<Text, _>(text(uri, 1024)).push(", ");
    sql.bind::<Nullable<Text>, _>(media.filename.as_deref().map(|f| text(f, 1024)));
    sql.push(", ");
    sql.bind::<Nullable<Text>, _>(media.mimetype.as_deref().map(|m| text(m, 255)));
    sql.push(", ").bind::<Nullable<BigInt>, _>(size).push(", ");
    sql.bind::<Bool, _>(media.file.is_some()).push(", ");
    sql.bind::<Nullable<Text>, _>(file).push(", ");
    sql.bind::<Text, _>(state).push(", ").bind::<Nullable<Text>, _>(reason);
    // The same file (URI and description) keeps what was done with it; another starts over.
    sql.push(
        ") ON CONFLICT (org_id, message_pk) DO UPDATE SET \
         filename = excluded.filename, declared_mimetype = excluded.declared_mimetype, \
         declared_size = excluded.declared_size, \
         state = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND attachments.encrypted = excluded.encrypted \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.state ELSE excluded.state END, \
         reason = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND attachments.encrypted = excluded.encrypted \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.reason ELSE excluded.reason END, \
         sha256 = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND attachments.encrypted = excluded.encrypted \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.sha256 ELSE NULL END, \
         next_attempt_at = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.next_attempt_at ELSE 0 END, \
         attempts = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.attempts ELSE 0 END, \
         fetched_at = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.fetched_at ELSE NULL END, \
         lease_owner = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.lease_owner ELSE NULL END, \
         lease_until = CASE WHEN attachments.mxc_uri = excluded.mxc_uri \
           AND COALESCE(attachments.file, '') = COALESCE(excluded.file, '') \
           THEN attachments.lease_until ELSE NULL END, \
         mxc_uri = excluded.mxc_uri, encrypted = excluded.encrypted, file = excluded.file",
    );
    sql.build().execute(conn)?;
    Ok(())
}

/// The status a reference reads as: its state, or for a fetched one its blob's verdict.
fn status_of(state: &str, verdict: Option<&str>) -> Result<AttachmentStatus> {
    if state == FETCHED {
        return Ok(match verdict {
            Some("CLEAN") => AttachmentStatus::Stored,
            Some("INFECTED") => AttachmentStatus::Infected,
            _ => AttachmentStatus::Pending,
        });
    }
    AttachmentStatus::parse(state).ok_or(Error::Corrupt("a stored attachment has an unknown state"))
}

/// Parses a stored digest.
fn digest(hex: &str) -> Result<Sha256Digest> {
    hex.parse().map_err(|_| Error::Corrupt("a stored digest fails validation"))
}
