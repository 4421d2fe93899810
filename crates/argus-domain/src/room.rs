//! Rooms: the snapshot the connector produces, the stored form reads return, and statistics.

use time::OffsetDateTime;

use crate::{
    Classification, HomeserverUrl, MessageEdit, MessageRecord, MessageRedaction, OrgId, RoomId, RoomMetadata,
};

/// What one read of a room returned and what was done with it: the completeness report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FetchReport {
    /// Pages of `/messages` read.
    pub pages: u32,
    /// Timeline events received from the homeserver.
    pub events_fetched: u64,
    /// Messages in the snapshot (after edits were folded in).
    pub messages: u64,
    /// `m.room.encrypted` messages kept without body (undecrypted; what was decrypted is
    /// counted in `decrypted`).
    pub encrypted: u64,
    /// `m.room.encrypted` events (messages and edits) decrypted from the key backup.
    #[serde(default)]
    pub decrypted: u64,
    /// `m.room.encrypted` events left undecrypted although a recovery key was given, by reason
    /// code.
    #[serde(default)]
    pub undecryptable: std::collections::BTreeMap<String, u64>,
    /// Messages redacted (seen redacted, or redacted by a later event).
    pub redacted: u64,
    /// Edits applied to an original.
    pub edits_applied: u64,
    /// Edits not applied: sent by someone other than the original's sender, or of an
    /// undecrypted or redacted original.
    #[serde(default)]
    pub edits_ignored: u64,
    /// Redactions not applied: neither confirmed by the homeserver nor sent by the target's
    /// own sender.
    #[serde(default)]
    pub redactions_ignored: u64,
    /// Events skipped because they were malformed.
    pub malformed_skipped: u64,
    /// Events dropped because they claimed another room.
    pub foreign_dropped: u64,
    /// Whether the read stopped at the caller's cap before reaching the start of the room.
    pub truncated: bool,
}

/// Everything one read of a room returned, normalised: room metadata and messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomSnapshot {
    /// The room.
    pub room_id: RoomId,
    /// Where it was read from.
    pub homeserver_url: HomeserverUrl,
    /// From `m.room.name`.
    pub name: Option<String>,
    /// From `m.room.topic`.
    pub topic: Option<String>,
    /// From `m.room.canonical_alias`.
    pub canonical_alias: Option<String>,
    /// Members whose `m.room.member` membership is `join`.
    pub member_count: u32,
    /// Whether the room has `m.room.encryption` state.
    pub encrypted: bool,
    /// Messages, oldest first, edits applied.
    pub messages: Vec<MessageRecord>,
    /// Edits of messages not in `messages` (stored by an earlier read).
    pub edits: Vec<MessageEdit>,
    /// Redactions of messages not in `messages` (stored by an earlier read).
    pub redactions: Vec<MessageRedaction>,
    /// Token from which a later read fetches only newer events (`dir=f`); `None` leaves the
    /// stored one as it is (a read into older history).
    pub resume_token: Option<String>,
    /// Where older history continues, after this read.
    #[serde(default)]
    pub history: HistoryPosition,
    /// The room this one replaced (`m.room.create` `predecessor`).
    #[serde(default)]
    pub predecessor: Option<RoomId>,
    /// The room that replaced this one (`m.room.tombstone`).
    #[serde(default)]
    pub successor: Option<RoomId>,
    /// Room version, retention, access rule and external members, from the room's state.
    #[serde(default)]
    pub metadata: RoomMetadata,
    /// The start date the read's older history was bounded by (`timestamp_to_event`): when
    /// `history` is `Complete`, the history is complete since then (`None`: since the room's
    /// creation).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub history_since: Option<OffsetDateTime>,
    /// The completeness report.
    pub report: FetchReport,
}

impl RoomSnapshot {
    /// A read of `room_id` at `homeserver_url` that found nothing yet: no state, no message,
    /// edit or redaction, no position; the fields are then filled in.
    ///
    /// ```
    /// use argus_domain::RoomSnapshot;
    /// let s = RoomSnapshot::new("!r:tchap.test".parse()?, "https://matrix.tchap.test".parse()?);
    /// assert!(s.messages.is_empty() && s.name.is_none() && s.resume_token.is_none());
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn new(room_id: RoomId, homeserver_url: HomeserverUrl) -> Self {
        Self {
            room_id,
            homeserver_url,
            name: None,
            topic: None,
            canonical_alias: None,
            member_count: 0,
            encrypted: false,
            messages: Vec::new(),
            edits: Vec::new(),
            redactions: Vec::new(),
            resume_token: None,
            history: HistoryPosition::Unchanged,
            predecessor: None,
            successor: None,
            metadata: RoomMetadata::default(),
            history_since: None,
            report: FetchReport::default(),
        }
    }
}

/// Where a room's older history stands after a read: the backward pagination position a later
/// backfill continues from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HistoryPosition {
    /// The read did not go into older history (a forward read): the stored position stays.
    #[default]
    Unchanged,
    /// Older events remain before this token (`dir=b`).
    Continues(String),
    /// The read reached the start of the room: nothing older remains.
    Complete,
}

/// A stored room as a read returns it (also the payload the fusion outbox carries).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRoom {
    /// Opaque, stable storage id.
    pub id: i64,
    /// The organisation that owns this copy.
    pub org: OrgId,
    /// The Matrix room id.
    pub room_id: RoomId,
    /// Where it was read from.
    pub homeserver_url: HomeserverUrl,
    /// From `m.room.name`.
    pub name: Option<String>,
    /// From `m.room.topic`.
    pub topic: Option<String>,
    /// From `m.room.canonical_alias`.
    pub canonical_alias: Option<String>,
    /// Joined members at the last ingestion.
    pub member_count: i64,
    /// Whether the room is end-to-end encrypted.
    pub encrypted: bool,
    /// The room's classification (the highest it was ever ingested at).
    pub classification: Classification,
    /// When the room was first ingested.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen_at: OffsetDateTime,
    /// `origin_server_ts` of the newest stored message the viewer may see.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_activity_at: Option<OffsetDateTime>,
    /// When the room was last ingested.
    #[serde(with = "time::serde::rfc3339")]
    pub last_ingested_at: OffsetDateTime,
    /// Stored messages the viewer may see.
    pub message_count: i64,
    /// Token from which the next ingestion reads forward.
    pub resume_token: Option<String>,
    /// Token from which older history continues (`dir=b`); `None` before the first streamed
    /// read, or once the history is complete.
    #[serde(default)]
    pub backfill_token: Option<String>,
    /// Whether the archive holds the room's history back to its start.
    #[serde(default)]
    pub history_complete: bool,
    /// The room this one replaced (room upgrade), as its state said at the last ingestion.
    #[serde(default)]
    pub predecessor: Option<RoomId>,
    /// The room that replaced this one (`m.room.tombstone`), as its state said at the last
    /// ingestion.
    #[serde(default)]
    pub successor: Option<RoomId>,
    /// Room version, retention, access rule and external members, as its state said at the
    /// last ingestion.
    #[serde(default)]
    pub metadata: RoomMetadata,
    /// When `history_complete`, the date the history is complete since (`None`: since the
    /// room's creation).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub history_since: Option<OffsetDateTime>,
    /// Whether an active watch keeps the room current.
    #[serde(default)]
    pub watched: bool,
}

impl StoredRoom {
    /// Whether the room's retention policy may purge events before they are captured
    /// ([`crate::Retention::at_risk`]).
    pub fn retention_risk(&self) -> bool {
        self.metadata.retention.is_some_and(|r| r.at_risk(self.watched, self.history_complete))
    }
}

/// Aggregates over what a viewer may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Visible rooms.
    pub total_rooms: i64,
    /// Visible messages in visible rooms.
    pub total_messages: i64,
    /// Visible rooms whose newest visible message is less than 24 hours old.
    pub active_rooms_last_24h: i64,
}
