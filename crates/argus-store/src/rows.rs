//! Rows as the database returns them, and their checked conversion into domain records.
//!
//! A row that fails domain validation (an id of the wrong form, an unknown rank, an
//! unrepresentable timestamp) becomes [`Error::Corrupt`], never a panic.

use argus_domain::{
    Classification, HeldVersion, IngestionOutcome, IngestionRecord, MediaRef, MessageRecord, MessageVersion,
    NewIngestion, Redaction, RoomId, SenderTrust, StoredMessage, StoredRoom, from_unix_ms,
};
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Nullable, SmallInt},
};

use crate::{
    Error, Result,
    schema::{ingestions, message_redactions, message_versions, messages, rooms},
};

/// A room with its counts over what the reading viewer may see.
#[derive(Debug, QueryableByName)]
#[diesel(table_name = rooms)]
pub(crate) struct RoomRow {
    pub(crate) id: i64,
    pub(crate) org_id: String,
    pub(crate) room_id: String,
    pub(crate) homeserver_url: String,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) canonical_alias: Option<String>,
    pub(crate) member_count: i64,
    pub(crate) encrypted: bool,
    pub(crate) classification: i16,
    pub(crate) first_seen_at: i64,
    pub(crate) last_ingested_at: i64,
    pub(crate) resume_token: Option<String>,
    pub(crate) backfill_token: Option<String>,
    pub(crate) history_complete: bool,
    pub(crate) predecessor_room_id: Option<String>,
    pub(crate) successor_room_id: Option<String>,
    pub(crate) room_version: Option<String>,
    pub(crate) retention_max_lifetime_ms: Option<i64>,
    pub(crate) retention_min_lifetime_ms: Option<i64>,
    pub(crate) access_rule: Option<String>,
    pub(crate) external_member_count: i64,
    pub(crate) history_since: Option<i64>,
    /// Whether an active watch keeps the room current.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) watched: bool,
    #[diesel(sql_type = BigInt)]
    pub(crate) message_count: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) last_activity: Option<i64>,
}

impl RoomRow {
    pub(crate) fn into_domain(self) -> Result<StoredRoom> {
        const BAD: Error = Error::Corrupt("a stored room fails validation");
        Ok(StoredRoom {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            room_id: self.room_id.parse().map_err(|_| BAD)?,
            homeserver_url: self.homeserver_url.parse().map_err(|_| BAD)?,
            name: self.name,
            topic: self.topic,
            canonical_alias: self.canonical_alias,
            member_count: self.member_count,
            encrypted: self.encrypted,
            classification: rank(self.classification).map_err(|_| BAD)?,
            first_seen_at: from_unix_ms(self.first_seen_at).map_err(|_| BAD)?,
            last_activity_at: self.last_activity.map(from_unix_ms).transpose().map_err(|_| BAD)?,
            last_ingested_at: from_unix_ms(self.last_ingested_at).map_err(|_| BAD)?,
            message_count: self.message_count,
            resume_token: self.resume_token,
            backfill_token: self.backfill_token,
            history_complete: self.history_complete,
            predecessor: self.predecessor_room_id.map(|r| r.parse()).transpose().map_err(|_| BAD)?,
            successor: self.successor_room_id.map(|r| r.parse()).transpose().map_err(|_| BAD)?,
            metadata: argus_domain::RoomMetadata {
                room_version: self.room_version,
                retention: argus_domain::Retention::from_stored(
                    self.retention_max_lifetime_ms,
                    self.retention_min_lifetime_ms,
                ),
                access_rule: self.access_rule,
                external_member_count: u32::try_from(self.external_member_count).map_err(|_| BAD)?,
            },
            history_since: self.history_since.map(from_unix_ms).transpose().map_err(|_| BAD)?,
            watched: self.watched,
        })
    }
}

/// A stored message: by name from hand-written SQL, by position from typed queries selecting
/// `MessageRow::as_select()`.
#[derive(Debug, QueryableByName, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = messages)]
pub(crate) struct MessageRow {
    pub(crate) id: i64,
    pub(crate) event_id: String,
    pub(crate) sender: String,
    pub(crate) msgtype: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) sent_at: i64,
    pub(crate) edited: bool,
    pub(crate) redacted: bool,
    pub(crate) encrypted: bool,
    pub(crate) decrypted: bool,
    pub(crate) undecryptable: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) thread_root: Option<String>,
    pub(crate) media: Option<String>,
    pub(crate) classification: i16,
    pub(crate) sender_trust: Option<String>,
}

impl MessageRow {
    pub(crate) fn into_domain(self, room_id: &RoomId) -> Result<StoredMessage> {
        const BAD: Error = Error::Corrupt("a stored message fails validation");
        let media = self.media.map(|m| serde_json::from_str::<MediaRef>(&m)).transpose().map_err(|_| BAD)?;
        // A decrypted message arrived encrypted, whatever wrote the row (a replica still
        // running a release that stored it otherwise).
        let encrypted = self.encrypted || self.decrypted;
        // Stored before devices existed: what such a message is taken as.
        let sender_trust = match self.sender_trust {
            Some(code) => code.parse().map_err(|_| BAD)?,
            None => SenderTrust::unrecorded(encrypted),
        };
        Ok(StoredMessage {
            id: self.id,
            room_id: room_id.clone(),
            classification: rank(self.classification).map_err(|_| BAD)?,
            message: MessageRecord {
                event_id: self.event_id.parse().map_err(|_| BAD)?,
                sender: self.sender.parse().map_err(|_| BAD)?,
                msgtype: self.msgtype,
                body: self.body,
                sent_at: from_unix_ms(self.sent_at).map_err(|_| BAD)?,
                edited: self.edited,
                redacted: self.redacted,
                encrypted,
                decrypted: self.decrypted,
                undecryptable: self.undecryptable,
                reply_to: self.reply_to.map(|s| s.parse()).transpose().map_err(|_| BAD)?,
                thread_root: self.thread_root.map(|s| s.parse()).transpose().map_err(|_| BAD)?,
                media,
                versions: Vec::new(),
                redaction: None,
                sender_trust,
            },
            held: None,
            attachment: None,
        })
    }
}

/// A version of an edited message, with what is held of it under legal hold (NULL unless the
/// read gate let it through).
#[derive(Debug, QueryableByName)]
#[diesel(table_name = message_versions)]
pub(crate) struct VersionRow {
    pub(crate) message_pk: i64,
    pub(crate) event_id: String,
    pub(crate) sender: String,
    pub(crate) sent_at: i64,
    pub(crate) msgtype: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) held_msgtype: Option<String>,
    pub(crate) held_body: Option<String>,
}

/// The content of a message held under legal hold, as the read gate let it through.
#[derive(Debug, QueryableByName)]
#[diesel(table_name = messages)]
pub(crate) struct HeldRow {
    pub(crate) id: i64,
    pub(crate) held_body: Option<String>,
    pub(crate) held_media: Option<String>,
}

impl HeldRow {
    /// The held body and attachment reference.
    pub(crate) fn into_domain(self) -> Result<(Option<String>, Option<MediaRef>)> {
        const BAD: Error = Error::Corrupt("a held message fails validation");
        let media =
            self.held_media.map(|m| serde_json::from_str::<MediaRef>(&m)).transpose().map_err(|_| BAD)?;
        Ok((self.held_body, media))
    }
}

/// Who redacted a message, when and why.
#[derive(Debug, QueryableByName)]
#[diesel(table_name = message_redactions)]
pub(crate) struct RedactionRow {
    pub(crate) message_pk: i64,
    pub(crate) redacted_by: String,
    pub(crate) redacted_at: i64,
    pub(crate) reason: Option<String>,
}

impl RedactionRow {
    pub(crate) fn into_domain(self) -> Result<Redaction> {
        const BAD: Error = Error::Corrupt("a stored redaction fails validation");
        Ok(Redaction {
            redacted_by: self.redacted_by.parse().map_err(|_| BAD)?,
            redacted_at: from_unix_ms(self.redacted_at).map_err(|_| BAD)?,
            reason: self.reason,
        })
    }
}

impl VersionRow {
    /// The version, and its content held under legal hold when there is some.
    pub(crate) fn into_domain(self) -> Result<(MessageVersion, Option<HeldVersion>)> {
        const BAD: Error = Error::Corrupt("a stored message version fails validation");
        let event_id: argus_domain::EventId = self.event_id.parse().map_err(|_| BAD)?;
        let held = (self.held_msgtype.is_some() || self.held_body.is_some()).then(|| HeldVersion {
            event_id: event_id.clone(),
            msgtype: self.held_msgtype,
            body: self.held_body,
        });
        let version = MessageVersion {
            event_id,
            sender: self.sender.parse().map_err(|_| BAD)?,
            sent_at: from_unix_ms(self.sent_at).map_err(|_| BAD)?,
            msgtype: self.msgtype,
            body: self.body,
        };
        Ok((version, held))
    }
}

/// An audit record: by name from hand-written SQL, by position from typed queries.
#[derive(Debug, QueryableByName, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = ingestions)]
pub(crate) struct IngestionRow {
    pub(crate) id: i64,
    pub(crate) org_id: String,
    pub(crate) seq: i64,
    pub(crate) actor: String,
    pub(crate) room_id: String,
    pub(crate) homeserver_url: String,
    pub(crate) message_count: i64,
    pub(crate) classification: i16,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) outcome: String,
    pub(crate) error: Option<String>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) action: String,
    pub(crate) event_id: Option<String>,
    pub(crate) body_sha256: Option<String>,
    pub(crate) body_length: Option<i64>,
    pub(crate) scheduled: bool,
    pub(crate) previous_homeserver_url: Option<String>,
    pub(crate) events_root: Option<String>,
    pub(crate) events_count: Option<i64>,
}

impl IngestionRow {
    /// What a POST record keeps of its note; `None` for an ingestion or a move, an error for a
    /// record whose columns disagree with its action.
    pub(crate) fn post(&self) -> Result<Option<argus_domain::PostEvidence>> {
        const BAD: Error = Error::Corrupt("a stored audit record fails validation");
        match (self.action.as_str(), &self.body_sha256, self.body_length) {
            ("INGEST" | "REHOME", None, None) if self.event_id.is_none() => Ok(None),
            ("POST", Some(digest), Some(length)) => Ok(Some(argus_domain::PostEvidence {
                event_id: self.event_id.clone(),
                body_sha256: hash32(digest).ok_or(BAD)?,
                body_length: length,
            })),
            _ => Err(BAD),
        }
    }

    /// The homeserver a REHOME record's room answered to until then; `None` for any other
    /// record, an error for a record whose column disagrees with its action.
    pub(crate) fn rehomed_from(&self) -> Result<Option<&str>> {
        match (self.action.as_str(), &self.previous_homeserver_url) {
            ("REHOME", Some(from)) => Ok(Some(from)),
            ("INGEST" | "POST", None) => Ok(None),
            _ => Err(Error::Corrupt("a stored audit record fails validation")),
        }
    }

    pub(crate) fn into_domain(self) -> Result<IngestionRecord> {
        const BAD: Error = Error::Corrupt("a stored audit record fails validation");
        let post = self.post()?;
        let rehomed_from = self.rehomed_from()?.map(str::to_owned);
        Ok(IngestionRecord {
            id: self.id,
            seq: self.seq,
            entry: NewIngestion {
                actor: self.actor.parse().map_err(|_| BAD)?,
                org: self.org_id.parse().map_err(|_| BAD)?,
                room_id: self.room_id,
                homeserver_url: self.homeserver_url,
                message_count: self.message_count,
                classification: rank(self.classification).map_err(|_| BAD)?,
                started_at: from_unix_ms(self.started_at).map_err(|_| BAD)?,
                finished_at: self.finished_at.map(from_unix_ms).transpose().map_err(|_| BAD)?,
                outcome: outcome(&self.outcome).ok_or(BAD)?,
                error: self.error,
                post,
                scheduled: self.scheduled,
                rehomed_from,
            },
            prev_hash: hash32(&self.prev_hash).ok_or(BAD)?,
            hash: hash32(&self.hash).ok_or(BAD)?,
            events: match (self.events_root.as_deref(), self.events_count) {
                (Some(root), Some(count)) => {
                    Some((hash32(root).ok_or(BAD)?, u64::try_from(count).map_err(|_| BAD)?))
                }
                (None, None) => None,
                _ => return Err(BAD),
            },
        })
    }
}

/// A classification from its storage rank.
pub(crate) fn rank(r: i16) -> Result<Classification> {
    Ok(Classification::from_rank(i64::from(r))?)
}

/// An outcome from its stored name.
pub(crate) fn outcome(s: &str) -> Option<IngestionOutcome> {
    match s {
        "SUCCEEDED" => Some(IngestionOutcome::Succeeded),
        "FAILED" => Some(IngestionOutcome::Failed),
        _ => None,
    }
}

/// A 32-byte hash from its hex form.
pub(crate) fn hash32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A room's storage id, classification rank and the homeserver it was read from.
#[derive(Debug, QueryableByName)]
pub(crate) struct RoomKey {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = SmallInt)]
    pub(crate) classification: i16,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub(crate) homeserver_url: String,
}
