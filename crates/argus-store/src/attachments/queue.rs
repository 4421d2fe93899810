//! The media worker's queue: `PENDING` references claimed under a lease (per room by the
//! ingestion run that stored them, or by the worker for rooms a watch keeps current, with the
//! watch's sealed token), what became of each, blobs and their scan verdicts.

use argus_domain::{EncryptedFile, HomeserverUrl, OrgId, RoomId, SealedToken, Sha256Digest, to_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Nullable, Text},
};
use time::OffsetDateTime;

use super::{FETCHED, bounded_reason, digest};
use crate::{
    Backend, Error, Result,
    db::{DbConn, Sql, TxMode, in_transaction},
};

/// A reference to fetch, claimed for its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJob {
    /// The reference's id.
    pub id: i64,
    /// The organisation of its message.
    pub org: OrgId,
    /// The room of its message.
    pub room_id: RoomId,
    /// The homeserver the room is archived from (the files are fetched there).
    pub homeserver: HomeserverUrl,
    /// The file's `mxc://` URI (the ciphertext's when encrypted).
    pub mxc_uri: String,
    /// How to open it, when it is encrypted.
    pub file: Option<EncryptedFile>,
    /// The size its sender declared.
    pub declared_size: Option<u64>,
    /// Earlier attempts that ended in a retry.
    pub attempts: u32,
    /// For a job the worker claimed: the watch of the room that lends its token (id, owner,
    /// sealed token); `None` for a job the room's own ingestion claimed.
    pub watch: Option<(i64, argus_domain::ActorId, SealedToken)>,
}

/// A file's bytes as the blob store now holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    /// Its address.
    pub sha256: Sha256Digest,
    /// Its size.
    pub size: u64,
    /// The MIME type sniffed from its first bytes.
    pub sniffed_mimetype: String,
}

/// What became of a claimed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Fetched (and decrypted and checked): its bytes are `blob`, held in the blob store; its
    /// status reads as the blob's scan verdict.
    Fetched(NewBlob),
    /// Not fetched this time (the homeserver or the network failed, no token at hand): tried
    /// again after `after`.
    Retry {
        /// Why (a stable code and words).
        reason: String,
        /// How long to wait.
        after: std::time::Duration,
    },
    /// Ended for good with a status other than `Stored`/`Infected`/`Pending`.
    Ended {
        /// `TooLarge`, `Tampered`, `Unavailable` or `Undecryptable`.
        status: argus_domain::AttachmentStatus,
        /// Why (a stable code and words).
        reason: String,
    },
}

/// A scanner's verdict on a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobVerdict {
    /// Nothing found.
    Clean,
    /// The signature found.
    Infected(String),
}

/// A verdict with the engine that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    /// The verdict.
    pub verdict: BlobVerdict,
    /// The engine and signature version (e.g. `ClamAV 1.4.3/27500/…`).
    pub engine: String,
    /// When.
    pub at: OffsetDateTime,
}

#[derive(QueryableByName)]
struct JobRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    org_id: String,
    #[diesel(sql_type = Text)]
    room_id: String,
    #[diesel(sql_type = Text)]
    homeserver_url: String,
    #[diesel(sql_type = Text)]
    mxc_uri: String,
    #[diesel(sql_type = Nullable<Text>)]
    file: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    declared_size: Option<i64>,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    watch_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    watch_owner: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    token_key_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    token_nonce: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    token_ciphertext: Option<String>,
}

impl JobRow {
    fn into_domain(self) -> Result<MediaJob> {
        const BAD: Error = Error::Corrupt("a stored attachment fails validation");
        let watch = match (
            self.watch_id,
            self.watch_owner,
            self.token_key_id,
            self.token_nonce,
            self.token_ciphertext,
        ) {
            (Some(id), Some(owner), Some(key_id), Some(nonce), Some(ciphertext)) => {
                Some((id, owner.parse().map_err(|_| BAD)?, SealedToken { key_id, nonce, ciphertext }))
            }
            _ => None,
        };
        Ok(MediaJob {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            room_id: self.room_id.parse().map_err(|_| BAD)?,
            homeserver: self.homeserver_url.parse().map_err(|_| BAD)?,
            mxc_uri: self.mxc_uri,
            file: self.file.as_deref().map(serde_json::from_str).transpose().map_err(|_| BAD)?,
            declared_size: self.declared_size.and_then(|s| u64::try_from(s).ok()),
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            watch,
        })
    }
}

/// Which due references a claim takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimScope<'a> {
    /// Those of one room of one organisation (its ingestion run, with its own token).
    Room {
        /// The organisation.
        org: &'a str,
        /// The Matrix room id.
        room_id: &'a str,
    },
    /// Those of rooms an active watch of the same organisation keeps current (the worker,
    /// with the watch's token).
    Watched,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Claims up to `limit` due `PENDING` references of `scope` for `owner` until `now + lease`,
/// most overdue first; replicas claiming at once get disjoint sets (PostgreSQL skips the rows
/// another transaction holds; SQLite has one writer).
pub(crate) fn claim(
    conn: &mut DbConn,
    scope: ClaimScope<'_>,
    owner: &str,
    now: OffsetDateTime,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<MediaJob>> {
    let now_ms = to_unix_ms(now);
    let until = now_ms.saturating_add(millis(lease));
    let backend = conn.backend();
    in_transaction(conn, TxMode::Write, |conn| {
        let mut sql = Sql::new(backend);
        // A redacted message's file is not fetched (its reference is hidden from every reader).
        sql.push(
            "WITH due AS MATERIALIZED (SELECT a.id FROM attachments a JOIN rooms r ON r.id = a.room_pk \
             JOIN messages m ON m.id = a.message_pk WHERE m.redacted = ",
        );
        sql.bind::<diesel::sql_types::Bool, _>(false).push(" AND m.media IS NOT NULL AND ");
        sql.push("a.state = 'PENDING' AND a.next_attempt_at <= ").bind::<BigInt, _>(now_ms);
        sql.push(" AND (a.lease_until IS NULL OR a.lease_until < ").bind::<BigInt, _>(now_ms).push(")");
        match scope {
            ClaimScope::Room { org, room_id } => {
                sql.push(" AND a.org_id = ").bind::<Text, _>(org.to_owned());
                sql.push(" AND r.org_id = a.org_id AND r.room_id = ").bind::<Text, _>(room_id.to_owned());
            }
            ClaimScope::Watched => {
                sql.push(
                    " AND EXISTS (SELECT 1 FROM watches w WHERE w.org_id = a.org_id AND w.room_id = r.room_id \
                     AND w.status = 'ACTIVE')",
                );
            }
        }
        sql.push(" ORDER BY a.next_attempt_at, a.id LIMIT ").bind::<BigInt, _>(i64::from(limit));
        if backend == Backend::Postgres {
            sql.push(" FOR UPDATE OF a SKIP LOCKED");
        }
        sql.push(") UPDATE attachments SET lease_owner = ").bind::<Text, _>(owner.to_owned());
        sql.push(", lease_until = ").bind::<BigInt, _>(until);
        sql.push(" WHERE id IN (SELECT id FROM due) RETURNING id");
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let ids: Vec<Id> = sql.build().load(conn)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(backend);
        sql.push(
            "SELECT a.id, a.org_id, r.room_id, r.homeserver_url, a.mxc_uri, a.file, a.declared_size, \
             CAST(a.attempts AS BIGINT) AS attempts, w.id AS watch_id, w.owner AS watch_owner, \
             w.token_key_id, w.token_nonce, w.token_ciphertext \
             FROM attachments a JOIN rooms r ON r.id = a.room_pk \
             LEFT JOIN watches w ON w.id = (SELECT w2.id FROM watches w2 WHERE w2.org_id = a.org_id \
             AND w2.room_id = r.room_id AND w2.status = 'ACTIVE' ORDER BY w2.id LIMIT 1) WHERE a.id IN ",
        );
        crate::read::push_ids(&mut sql, &ids.iter().map(|i| i.id).collect::<Vec<_>>());
        sql.push(" ORDER BY a.next_attempt_at, a.id");
        let rows: Vec<JobRow> = sql.build().load(conn)?;
        let mut jobs: Vec<MediaJob> = rows
            .into_iter()
            .filter_map(|r| {
                let id = r.id;
                r.into_domain()
                    .inspect_err(|e| tracing::error!(attachment = id, error = %e, "a stored attachment fails validation"))
                    .ok()
            })
            .collect();
        if matches!(scope, ClaimScope::Room { .. }) {
            for job in &mut jobs {
                job.watch = None;
            }
        }
        Ok(jobs)
    })
}

/// Records what became of reference `id` claimed by `owner` and releases it; `false` when the
/// lease was lost (another replica took it over) or the reference changed file meanwhile.
pub(crate) fn record(
    conn: &mut DbConn,
    id: i64,
    owner: &str,
    outcome: &FetchOutcome,
    now: OffsetDateTime,
) -> Result<bool> {
    let now_ms = to_unix_ms(now);
    let backend = conn.backend();
    // A held file is appended to its organisation's log, under that log's lock.
    let org = match outcome {
        FetchOutcome::Fetched(_) => {
            let mut sql = Sql::new(backend);
            sql.push("SELECT org_id FROM attachments WHERE id = ").bind::<BigInt, _>(id);
            match sql.build_cached().load::<OrgRow>(conn)?.into_iter().next() {
                Some(row) => Some(row.org_id),
                None => return Ok(false),
            }
        }
        _ => None,
    };
    let locks: Vec<&str> = org.as_deref().into_iter().collect();
    crate::write::in_orgs_transaction(conn, &locks, |conn| {
        if let FetchOutcome::Fetched(blob) = outcome {
            insert_blob(conn, blob, now_ms)?;
        }
        let mut sql = Sql::new(backend);
        sql.push("UPDATE attachments SET lease_owner = NULL, lease_until = NULL, ");
        match outcome {
            FetchOutcome::Fetched(blob) => {
                sql.push("state = ").bind::<Text, _>(FETCHED.to_owned());
                sql.push(", reason = NULL, sha256 = ").bind::<Text, _>(blob.sha256.to_hex());
                sql.push(", fetched_at = ").bind::<BigInt, _>(now_ms);
            }
            FetchOutcome::Retry { reason, after } => {
                sql.push("reason = ").bind::<Text, _>(bounded_reason(reason));
                sql.push(", attempts = attempts + 1, next_attempt_at = ");
                sql.bind::<BigInt, _>(now_ms.saturating_add(millis(*after)));
            }
            FetchOutcome::Ended { status, reason } => {
                sql.push("state = ").bind::<Text, _>(status.as_str().to_owned());
                sql.push(", reason = ").bind::<Text, _>(bounded_reason(reason));
            }
        }
        sql.push(" WHERE id = ").bind::<BigInt, _>(id);
        sql.push(" AND state = 'PENDING' AND lease_owner = ").bind::<Text, _>(owner.to_owned());
        let recorded = sql.build().execute(conn)? == 1;
        if recorded && let FetchOutcome::Fetched(blob) = outcome {
            log_held_file(conn, id, blob, now_ms)?;
        }
        Ok(recorded)
    })
}

#[derive(QueryableByName)]
struct OrgRow {
    #[diesel(sql_type = Text)]
    org_id: String,
}

/// Appends the `ATTACHMENT` entry of the file now held for reference `id` (its message's event,
/// room and classification, the bytes' digest and length, the URI fetched) to the log of its
/// organisation, inside the transaction that records it.
fn log_held_file(conn: &mut DbConn, id: i64, blob: &NewBlob, now_ms: i64) -> Result<()> {
    use argus_domain::oversight::{AttachmentEntry, ENCODING_VERSION};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        org_id: String,
        #[diesel(sql_type = Text)]
        event_id: String,
        #[diesel(sql_type = Text)]
        room_id: String,
        #[diesel(sql_type = Text)]
        mxc_uri: String,
        #[diesel(sql_type = diesel::sql_types::SmallInt)]
        classification: i16,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "SELECT a.org_id, m.event_id, r.room_id, a.mxc_uri, m.classification FROM attachments a \
         JOIN messages m ON m.id = a.message_pk JOIN rooms r ON r.id = a.room_pk WHERE a.id = ",
    )
    .bind::<BigInt, _>(id);
    let row: Row = sql.build_cached().get_result(conn)?;
    let entry = AttachmentEntry {
        at: now_ms,
        classification: crate::rows::rank(row.classification)?,
        event_id: row.event_id,
        org: row.org_id,
        room_id: row.room_id,
        sha256: blob.sha256.to_hex(),
        size: blob.size,
        r#type: AttachmentEntry::TYPE.to_owned(),
        uri: row.mxc_uri,
        v: ENCODING_VERSION,
    };
    crate::log::append_attachment(conn, &entry)?;
    Ok(())
}

/// Records a blob the blob store now holds (once: the same bytes are one blob).
fn insert_blob(conn: &mut DbConn, blob: &NewBlob, now_ms: i64) -> Result<()> {
    let mut sql = Sql::new(conn.backend());
    sql.push("INSERT INTO media_blobs (sha256, size, sniffed_mimetype, stored_at) VALUES (");
    sql.bind::<Text, _>(blob.sha256.to_hex()).push(", ");
    sql.bind::<BigInt, _>(i64::try_from(blob.size).map_err(|_| Error::invalid("blob", "too large"))?);
    sql.push(", ").bind::<Text, _>(blob.sniffed_mimetype.chars().take(255).collect::<String>());
    sql.push(", ").bind::<BigInt, _>(now_ms).push(") ON CONFLICT (sha256) DO NOTHING");
    sql.build().execute(conn)?;
    Ok(())
}

/// Whether a scanner has judged the blob `sha256` (false too when it is not known). A verdict
/// given by the engine `not_scanned` (scanning turned off) does not count.
pub(crate) fn judged(conn: &mut DbConn, sha256: &Sha256Digest, not_scanned: Option<&str>) -> Result<bool> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT COUNT(*) AS n FROM media_blobs WHERE verdict IS NOT NULL AND sha256 = ");
    sql.bind::<Text, _>(sha256.to_hex());
    sql.push(" AND COALESCE(engine, '') <> ").bind::<Text, _>(not_scanned.unwrap_or_default().to_owned());
    let row: Row = sql.build_cached().get_result(conn)?;
    Ok(row.n > 0)
}

#[derive(QueryableByName)]
struct BlobRow {
    #[diesel(sql_type = Text)]
    sha256: String,
}

/// Up to `limit` blobs with no verdict yet, oldest first, whatever their retries.
pub(crate) fn unscanned(conn: &mut DbConn, limit: u32) -> Result<Vec<Sha256Digest>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT sha256 FROM media_blobs WHERE verdict IS NULL ORDER BY stored_at, sha256 LIMIT ");
    sql.bind::<BigInt, _>(i64::from(limit));
    let rows: Vec<BlobRow> = sql.build_cached().load(conn)?;
    rows.iter().map(|r| digest(&r.sha256)).collect()
}

/// Up to `limit` blobs due for a scan at `now`: no verdict yet and not waiting after a failure
/// of their own, and those judged by the engine `not_scanned` (scanning was turned off when
/// they came), longest waiting first.
pub(crate) fn due_for_scan(
    conn: &mut DbConn,
    now: OffsetDateTime,
    not_scanned: Option<&str>,
    limit: u32,
) -> Result<Vec<Sha256Digest>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT sha256 FROM media_blobs WHERE (verdict IS NULL AND next_scan_at <= ");
    sql.bind::<BigInt, _>(to_unix_ms(now)).push(")");
    if let Some(engine) = not_scanned {
        sql.push(" OR engine = ").bind::<Text, _>(engine.to_owned());
    }
    sql.push(" ORDER BY next_scan_at, stored_at, sha256 LIMIT ").bind::<BigInt, _>(i64::from(limit));
    let rows: Vec<BlobRow> = sql.build().load(conn)?;
    rows.iter().map(|r| digest(&r.sha256)).collect()
}

/// Records that the scanner could not judge the blob `sha256` for a reason of its own (a limit,
/// a reply cut short): it is tried again at `retry_at`, after the others.
pub(crate) fn scan_failed(
    conn: &mut DbConn,
    sha256: &Sha256Digest,
    retry_at: OffsetDateTime,
) -> Result<bool> {
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE media_blobs SET scan_attempts = scan_attempts + 1, next_scan_at = ");
    sql.bind::<BigInt, _>(to_unix_ms(retry_at)).push(" WHERE sha256 = ").bind::<Text, _>(sha256.to_hex());
    sql.push(" AND verdict IS NULL");
    Ok(sql.build_cached().execute(conn)? == 1)
}

/// Up to `limit` blobs after `after` in digest order, whatever their verdict (a rescan).
pub(crate) fn all_blobs(
    conn: &mut DbConn,
    after: Option<&Sha256Digest>,
    limit: u32,
) -> Result<Vec<Sha256Digest>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT sha256 FROM media_blobs WHERE sha256 > ");
    sql.bind::<Text, _>(after.map(Sha256Digest::to_hex).unwrap_or_default());
    sql.push(" ORDER BY sha256 LIMIT ").bind::<BigInt, _>(i64::from(limit));
    let rows: Vec<BlobRow> = sql.build_cached().load(conn)?;
    rows.iter().map(|r| digest(&r.sha256)).collect()
}

/// Records a scanner's verdict on a blob (a rescan replaces the earlier one); `false` when the
/// blob is not known.
pub(crate) fn record_scan(conn: &mut DbConn, sha256: &Sha256Digest, scan: &ScanRecord) -> Result<bool> {
    let mut sql = Sql::new(conn.backend());
    let (verdict, threat) = match &scan.verdict {
        BlobVerdict::Clean => ("CLEAN", None),
        BlobVerdict::Infected(threat) => ("INFECTED", Some(threat.chars().take(1024).collect::<String>())),
    };
    sql.push("UPDATE media_blobs SET verdict = ").bind::<Text, _>(verdict.to_owned());
    sql.push(", threat = ").bind::<Nullable<Text>, _>(threat);
    sql.push(", engine = ").bind::<Text, _>(scan.engine.chars().take(255).collect::<String>());
    sql.push(", scanned_at = ").bind::<BigInt, _>(to_unix_ms(scan.at));
    sql.push(" WHERE sha256 = ").bind::<Text, _>(sha256.to_hex());
    Ok(sql.build().execute(conn)? == 1)
}
