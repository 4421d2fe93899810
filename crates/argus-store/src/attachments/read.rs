//! Reads of attachments, always through the read gate of their message: the references of a
//! page of messages, and one reference for the download route.

use std::collections::HashMap;

use argus_domain::{Attachment, Classification, RoomId, Sha256Digest, StoredMessage, from_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, SmallInt, Text},
};

use super::{digest, status_of};
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    read::{Gate, push_ids},
};

/// What the download route needs of a reference the gate let through, held in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The reference (status `Stored` or `Infected`).
    pub attachment: Attachment,
    /// The blob's address.
    pub sha256: Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The MIME type sniffed from its first bytes.
    pub sniffed_mimetype: String,
    /// The room of its message (for the access journal).
    pub room_id: RoomId,
    /// Its message's classification (for the access journal).
    pub classification: Classification,
}

/// A reference joined to its blob.
#[derive(QueryableByName)]
struct AttachmentRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    message_pk: i64,
    #[diesel(sql_type = Text)]
    mxc_uri: String,
    #[diesel(sql_type = Nullable<Text>)]
    filename: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    declared_mimetype: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    declared_size: Option<i64>,
    #[diesel(sql_type = Bool)]
    encrypted: bool,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    sha256: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    fetched_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    size: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    sniffed_mimetype: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    verdict: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    threat: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    engine: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    scanned_at: Option<i64>,
    #[diesel(sql_type = SmallInt)]
    message_classification: i16,
    #[diesel(sql_type = Text)]
    room_id: String,
}

impl AttachmentRow {
    fn into_domain(self) -> Result<Attachment> {
        const BAD: Error = Error::Corrupt("a stored attachment fails validation");
        let status = status_of(&self.state, self.verdict.as_deref())?;
        let fetched = self.state == super::FETCHED;
        Ok(Attachment {
            id: self.id,
            mxc_uri: self.mxc_uri,
            filename: self.filename,
            declared_mimetype: self.declared_mimetype,
            declared_size: self.declared_size.and_then(|s| u64::try_from(s).ok()),
            encrypted: self.encrypted,
            status,
            reason: match (status, self.reason) {
                (argus_domain::AttachmentStatus::Pending, None) if fetched => {
                    Some("SCAN_PENDING: held, waiting for the scanner's verdict".to_owned())
                }
                (_, reason) => reason,
            },
            sha256: self.sha256.as_deref().map(digest).transpose()?,
            size: self.size.map(|s| u64::try_from(s).map_err(|_| BAD)).transpose()?,
            sniffed_mimetype: self.sniffed_mimetype,
            threat: self.threat,
            scan_engine: self.engine,
            scanned_at: self.scanned_at.map(from_unix_ms).transpose().map_err(|_| BAD)?,
            fetched_at: self.fetched_at.map(from_unix_ms).transpose().map_err(|_| BAD)?,
        })
    }
}

/// `SELECT` of references joined to their blobs, messages and rooms, gated by the message and by
/// its room (as every read of messages is: a room raised above a reader's clearance hides its
/// earlier messages too): the organisation and clearance, and the message not redacted (a
/// redacted message shows no file).
fn select(gate: &Gate, sql: &mut Sql<'_>) {
    sql.push(
        "SELECT a.id, a.message_pk, a.mxc_uri, a.filename, a.declared_mimetype, a.declared_size, \
         a.encrypted, a.state, a.reason, a.sha256, a.fetched_at, b.size, b.sniffed_mimetype, b.verdict, \
         b.threat, b.engine, b.scanned_at, m.classification AS message_classification, r.room_id \
         FROM attachments a JOIN messages m ON m.id = a.message_pk \
         JOIN rooms r ON r.id = m.room_pk LEFT JOIN media_blobs b ON b.sha256 = a.sha256 WHERE ",
    );
    gate.apply(sql, "m");
    sql.push(" AND ");
    gate.apply(sql, "r");
    sql.push(" AND a.org_id = m.org_id AND m.media IS NOT NULL AND m.redacted = ");
    sql.bind::<Bool, _>(false);
}

/// Sets the attachment of each message among `items` (messages the gate let through) that
/// carries a file, in one statement; nothing is read when none does.
pub(crate) fn attach(conn: &mut DbConn, gate: &Gate, items: &mut [StoredMessage]) -> Result<()> {
    let ids: Vec<i64> = items.iter().filter(|m| m.message.media.is_some()).map(|m| m.id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(conn.backend());
    select(gate, &mut sql);
    sql.push(" AND a.message_pk IN ");
    push_ids(&mut sql, &ids);
    let mut found: HashMap<i64, Attachment> = HashMap::new();
    for row in sql.build().load::<AttachmentRow>(conn)? {
        let pk = row.message_pk;
        found.insert(pk, row.into_domain()?);
    }
    for item in items {
        item.attachment = found.remove(&item.id);
    }
    Ok(())
}

/// The reference `id` when the gate lets its message through and its bytes are held and
/// scanned (`Stored` or `Infected`); `None` otherwise, whichever the reason (absent, foreign,
/// withheld, redacted, not held): the route answers all of them alike.
pub(crate) fn download(conn: &mut DbConn, gate: &Gate, id: i64) -> Result<Option<Download>> {
    let mut sql = Sql::new(conn.backend());
    select(gate, &mut sql);
    sql.push(" AND a.id = ").bind::<BigInt, _>(id);
    sql.push(" AND a.state = ").bind::<Text, _>(super::FETCHED.to_owned());
    sql.push(" AND b.verdict IS NOT NULL");
    // One shape whatever the id: kept prepared in the connection's statement cache.
    let Some(row) = sql.build_cached().load::<AttachmentRow>(conn)?.into_iter().next() else {
        return Ok(None);
    };
    const BAD: Error = Error::Corrupt("a stored message fails validation");
    let classification = Classification::from_rank(i64::from(row.message_classification)).map_err(|_| BAD)?;
    let room_id: RoomId = row.room_id.parse().map_err(|_| BAD)?;
    let attachment = row.into_domain()?;
    let (Some(sha256), Some(size), Some(sniffed_mimetype)) =
        (attachment.sha256, attachment.size, attachment.sniffed_mimetype.clone())
    else {
        return Err(Error::Corrupt("a held attachment has no blob"));
    };
    Ok(Some(Download { attachment, sha256, size, sniffed_mimetype, room_id, classification }))
}
