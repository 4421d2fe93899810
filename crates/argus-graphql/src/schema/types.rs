//! The object, enum and connection types of the contract.

use argus_domain::{IngestionRecord, MessageVersion, Scope, StoredMessage, StoredRoom};
use juniper::{GraphQLEnum, GraphQLObject, GraphQLScalar, ID, graphql_object};
use time::{OffsetDateTime, UtcOffset};

use argus_domain::{PageRequest, RoomId, Viewer};
use argus_store::{IngestionCursor, MessageCursor, RoomCursor, Store};

use super::paging::{self, connection};
pub use super::sync_list::{ResolvePlain, SyncList};
use crate::CursorKind;
use crate::{Context, Result};

/// An RFC 3339 timestamp in UTC with a fixed width: always milliseconds, e.g.
/// `2026-05-26T08:00:29.000Z`, so that ordering the text orders the times.
#[derive(GraphQLScalar, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(
    name = "DateTime",
    with = date_time,
    parse_token(String),
    specified_by_url = "https://graphql-scalars.dev/docs/scalars/date-time"
)]
pub struct DateTime(pub OffsetDateTime);

mod date_time {
    use super::{DateTime, OffsetDateTime, UtcOffset};

    pub(super) fn to_output(v: &DateTime) -> String {
        let t = v.0.to_offset(UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    pub(super) fn from_input(s: &str) -> Result<DateTime, Box<str>> {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| DateTime(t.to_offset(UtcOffset::UTC)))
            .map_err(|_| "invalid DateTime: expected RFC 3339".into())
    }
}

/// The text of a [`DateTime`], as the scalar serialises it.
pub(crate) fn date_time_text(v: &DateTime) -> String {
    date_time::to_output(v)
}

/// A GraphQL `Int` from a count, saturating.
pub(crate) fn int(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

/// A GraphQL `Int` from a report counter, saturating.
pub(crate) fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// An opaque id, stable for the caller's organisation: see [`crate::CursorKey::node_id`].
pub(crate) fn opaque_id(context: &Context, kind: &str, id: i64) -> ID {
    ID::new(context.services().cursor_key.node_id(kind, context.viewer(), id))
}

/// Secrecy levels, lowest first. A viewer sees a record only if record level <= viewer clearance.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Classification")]
pub enum GqlClassification {
    /// Not protected ("NON PROTÉGÉ").
    #[graphql(name = "UNCLASSIFIED")]
    Unclassified,
    /// Restricted distribution ("DIFFUSION RESTREINTE").
    #[graphql(name = "RESTRICTED")]
    Restricted,
    /// Confidential.
    #[graphql(name = "CONFIDENTIAL")]
    Confidential,
    /// Secret.
    #[graphql(name = "SECRET")]
    Secret,
    /// Top secret ("TRÈS SECRET").
    #[graphql(name = "TOP_SECRET")]
    TopSecret,
}

impl From<argus_domain::Classification> for GqlClassification {
    fn from(c: argus_domain::Classification) -> Self {
        use argus_domain::Classification as C;
        match c {
            C::Unclassified => Self::Unclassified,
            C::Restricted => Self::Restricted,
            C::Confidential => Self::Confidential,
            C::Secret => Self::Secret,
            C::TopSecret => Self::TopSecret,
        }
    }
}

impl From<GqlClassification> for argus_domain::Classification {
    fn from(c: GqlClassification) -> Self {
        match c {
            GqlClassification::Unclassified => Self::Unclassified,
            GqlClassification::Restricted => Self::Restricted,
            GqlClassification::Confidential => Self::Confidential,
            GqlClassification::Secret => Self::Secret,
            GqlClassification::TopSecret => Self::TopSecret,
        }
    }
}

/// How an ingestion ended.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "IngestionOutcome")]
pub enum GqlIngestionOutcome {
    /// Everything was stored.
    #[graphql(name = "SUCCEEDED")]
    Succeeded,
    /// The run stopped on an error: messageCount says what the pages it had committed stored (0: nothing but the audit record was written).
    #[graphql(name = "FAILED")]
    Failed,
}

impl From<argus_domain::IngestionOutcome> for GqlIngestionOutcome {
    fn from(o: argus_domain::IngestionOutcome) -> Self {
        match o {
            argus_domain::IngestionOutcome::Succeeded => Self::Succeeded,
            argus_domain::IngestionOutcome::Failed => Self::Failed,
        }
    }
}

/// An ingested Matrix room, as the caller may see it.
#[derive(Debug, Clone)]
pub struct TchapRoom(pub StoredRoom);

#[graphql_object(context = Context)]
impl TchapRoom {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapRoom", self.0.id)
    }

    /// The Matrix room id.
    fn room_id(&self) -> &str {
        self.0.room_id.as_str()
    }

    /// The homeserver it was read from.
    fn homeserver_url(&self) -> &str {
        self.0.homeserver_url.as_str()
    }

    /// From m.room.name; null when the room has none.
    fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// From m.room.topic.
    fn topic(&self) -> Option<&str> {
        self.0.topic.as_deref()
    }

    /// From m.room.canonical_alias.
    fn canonical_alias(&self) -> Option<&str> {
        self.0.canonical_alias.as_deref()
    }

    /// Joined members, from m.room.member state.
    fn member_count(&self) -> i32 {
        int(self.0.member_count)
    }

    /// Whether the room is end-to-end encrypted (its messages are stored without body).
    fn encrypted(&self) -> bool {
        self.0.encrypted
    }

    /// The room's classification: the highest it was ever ingested at.
    fn classification(&self) -> GqlClassification {
        self.0.classification.into()
    }

    /// origin_server_ts of the newest stored message.
    fn last_activity_at(&self) -> Option<DateTime> {
        self.0.last_activity_at.map(DateTime)
    }

    /// When the room was first ingested.
    fn first_seen_at(&self) -> DateTime {
        DateTime(self.0.first_seen_at)
    }

    /// When the room was last ingested.
    fn last_ingested_at(&self) -> DateTime {
        DateTime(self.0.last_ingested_at)
    }

    /// Whether the archive holds the room's history back to its start (a backfill reached it); false while older history remains to be read.
    fn history_complete(&self) -> bool {
        self.0.history_complete
    }

    /// The room this one replaced (room upgrade: m.room.create predecessor), as its state said at the last ingestion.
    fn predecessor_room_id(&self) -> Option<&str> {
        self.0.predecessor.as_ref().map(RoomId::as_str)
    }

    /// The room that replaced this one (m.room.tombstone), as its state said at the last ingestion; ingest it with followUpgrades.
    fn successor_room_id(&self) -> Option<&str> {
        self.0.successor.as_ref().map(RoomId::as_str)
    }

    /// Stored messages the caller may see.
    fn message_count(&self) -> i32 {
        int(self.0.message_count)
    }

    /// Messages of this room, oldest first (timeline order).
    async fn messages(
        &self,
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<TchapMessageConnection> {
        context.require(Scope::Read)?;
        TchapMessageConnection::load(context, self.0.room_id.clone(), first, after).await
    }
}

/// One stored message.
#[derive(Debug, Clone)]
pub struct TchapMessage(pub StoredMessage);

#[graphql_object(context = Context)]
impl TchapMessage {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapMessage", self.0.id)
    }

    /// The Matrix event id.
    fn event_id(&self) -> &str {
        self.0.message.event_id.as_str()
    }

    /// The Matrix room id.
    fn room_id(&self) -> &str {
        self.0.room_id.as_str()
    }

    /// The Matrix user id of the sender.
    fn sender(&self) -> &str {
        self.0.message.sender.as_str()
    }

    /// m.text, m.notice, m.emote, m.image, m.file, ...; null for events that are not m.room.message (e.g. encrypted).
    fn msgtype(&self) -> Option<&str> {
        self.0.message.msgtype.as_deref()
    }

    /// Plain-text body; the latest edit applied; null when redacted or undecryptable.
    fn body(&self) -> Option<&str> {
        self.0.message.body.as_deref()
    }

    /// origin_server_ts of the event.
    fn sent_at(&self) -> DateTime {
        DateTime(self.0.message.sent_at)
    }

    /// The message's classification.
    fn classification(&self) -> GqlClassification {
        self.0.classification.into()
    }

    /// An edit (m.replace) was applied.
    fn edited(&self) -> bool {
        self.0.message.edited
    }

    /// The event was redacted; its content is gone.
    fn redacted(&self) -> bool {
        self.0.message.redacted
    }

    /// The event is m.room.encrypted and was not decrypted.
    fn encrypted(&self) -> bool {
        self.0.message.encrypted
    }

    /// The event arrived as m.room.encrypted and was decrypted with a key from the account's key backup.
    fn decrypted(&self) -> bool {
        self.0.message.decrypted
    }

    /// Why the event stayed encrypted although a recovery key was given: `NO_KEY_IN_BACKUP`, `INDEX_BEFORE_FIRST_KNOWN`, `BAD_MAC`, `UNSUPPORTED_ALGORITHM`, `MALFORMED`, `WRONG_ROOM`, `REPLAYED`, `SENDER_KEY_MISMATCH` or `UNSUPPORTED_EVENT_TYPE`.
    fn undecryptable_reason(&self) -> Option<&str> {
        self.0.message.undecryptable.as_deref()
    }

    /// The event id this message replies to.
    fn reply_to(&self) -> Option<&str> {
        self.0.message.reply_to.as_ref().map(|e| e.as_str())
    }

    /// The event id of the root of the thread this message belongs to.
    fn thread_root(&self) -> Option<&str> {
        self.0.message.thread_root.as_ref().map(|e| e.as_str())
    }

    /// The mxc:// URI of a media attachment (never its content).
    fn media_uri(&self) -> Option<&str> {
        self.0.message.media.as_ref().and_then(|m| m.uri.as_deref())
    }

    /// The declared MIME type of a media attachment.
    fn media_mimetype(&self) -> Option<&str> {
        self.0.message.media.as_ref().and_then(|m| m.mimetype.as_deref())
    }

    /// Every version of an edited message, oldest first: the original as sent, then each edit
    /// its sender made (edits by anyone else are never applied); past 100, the original and the
    /// 99 newest. Empty when never edited. Bodies are null once the message was redacted.
    fn versions(&self) -> Vec<TchapMessageVersion> {
        self.0.message.versions.iter().cloned().map(TchapMessageVersion).collect()
    }

    /// Who redacted the message (the sender of the redaction), when known.
    fn redacted_by(&self) -> Option<&str> {
        self.0.message.redaction.as_ref().map(|r| r.redacted_by.as_str())
    }

    /// When the message was redacted, when known.
    fn redacted_at(&self) -> Option<DateTime> {
        self.0.message.redaction.as_ref().map(|r| r.redacted_at).map(DateTime)
    }

    /// The reason the redaction gave, if any.
    fn redaction_reason(&self) -> Option<&str> {
        self.0.message.redaction.as_ref().and_then(|r| r.reason.as_deref())
    }
}

/// One version of an edited message.
#[derive(Debug, Clone)]
pub struct TchapMessageVersion(pub MessageVersion);

#[graphql_object(context = Context)]
impl TchapMessageVersion {
    /// The event that carried this version: the original's id, or the edit's.
    fn event_id(&self) -> &str {
        self.0.event_id.as_str()
    }

    /// Who sent it.
    fn sender(&self) -> &str {
        self.0.sender.as_str()
    }

    /// origin_server_ts of that event.
    fn sent_at(&self) -> DateTime {
        DateTime(self.0.sent_at)
    }

    /// The msgtype of this version; null once the message was redacted.
    fn msgtype(&self) -> Option<&str> {
        self.0.msgtype.as_deref()
    }

    /// The body of this version; null once the message was redacted.
    fn body(&self) -> Option<&str> {
        self.0.body.as_deref()
    }
}

/// One record of the audit trail.
#[derive(Debug, Clone)]
pub struct TchapIngestion(pub IngestionRecord);

#[graphql_object(context = Context)]
impl TchapIngestion {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapIngestion", self.0.id)
    }

    /// Position in the organisation's audit chain, from 1. Requires scope tchap:audit:chain
    /// (gaps in what a reader sees would count the records above their clearance).
    fn seq(&self, context: &Context) -> Result<i32> {
        context.require(Scope::AuditChain)?;
        Ok(int(self.0.seq))
    }

    /// SHA-256 chain hash of this record, hex. Requires scope tchap:audit:chain.
    fn hash(&self, context: &Context) -> Result<String> {
        context.require(Scope::AuditChain)?;
        Ok(hex::encode(self.0.hash))
    }

    /// JWT sub of the caller who ran it.
    fn actor(&self) -> &str {
        self.0.entry.actor.as_str()
    }

    /// The room id as requested.
    fn room_id(&self) -> &str {
        &self.0.entry.room_id
    }

    /// The homeserver as requested.
    fn homeserver_url(&self) -> &str {
        &self.0.entry.homeserver_url
    }

    /// Messages newly stored.
    fn message_count(&self) -> i32 {
        int(self.0.entry.message_count)
    }

    /// The classification requested.
    fn classification(&self) -> GqlClassification {
        self.0.entry.classification.into()
    }

    /// When it started.
    fn started_at(&self) -> DateTime {
        DateTime(self.0.entry.started_at)
    }

    /// When it ended.
    fn finished_at(&self) -> Option<DateTime> {
        self.0.entry.finished_at.map(DateTime)
    }

    /// How it ended.
    fn outcome(&self) -> GqlIngestionOutcome {
        self.0.entry.outcome.into()
    }

    /// Why it failed; never contains a token.
    fn error(&self) -> Option<&str> {
        self.0.entry.error.as_deref()
    }

    /// What the record is of: an ingestion, or a note posted into the room.
    fn action(&self) -> GqlAuditAction {
        if self.0.entry.post.is_some() { GqlAuditAction::Post } else { GqlAuditAction::Ingest }
    }

    /// Run by the scheduler for a watched room (the actor is the watch's owner), not by a call.
    fn scheduled(&self) -> bool {
        self.0.entry.scheduled
    }

    /// For a post that was sent: the event id the homeserver gave the note.
    fn event_id(&self) -> Option<&str> {
        self.0.entry.post.as_ref().and_then(|p| p.event_id.as_deref())
    }

    /// For a post: SHA-256 of the body as sent (marking included), hex. The body is never kept.
    fn body_sha256(&self) -> Option<String> {
        self.0.entry.post.as_ref().map(|p| hex::encode(p.body_sha256))
    }

    /// For a post: the length of the body as sent, in bytes.
    fn body_length(&self) -> Option<i32> {
        self.0.entry.post.as_ref().map(|p| int(p.body_length))
    }
}

/// What an audit record is of.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AuditAction")]
pub enum GqlAuditAction {
    /// An ingestion of the room.
    #[graphql(name = "INGEST")]
    Ingest,
    /// A note posted into the room (`postTchapMessage`), sent (SUCCEEDED) or refused (FAILED).
    #[graphql(name = "POST")]
    Post,
}

/// Aggregates over what the caller may see.
#[derive(GraphQLObject, Debug, Clone, Copy)]
#[graphql(context = Context)]
pub struct TchapStats {
    /// Visible rooms.
    pub total_rooms: i32,
    /// Visible messages in visible rooms.
    pub total_messages: i32,
    /// Rooms whose newest visible message was sent in the last 24 hours.
    #[graphql(name = "activeRoomsLast24h")]
    pub active_rooms_last_24h: i32,
}

/// What `ingestTchapRoom` did. The room and the audit record are gated by the scopes of the
/// queries that read them (`tchap:read`, `tchap:audit`): a token that may only ingest learns
/// the counts, not the stored material.
#[derive(Debug, Clone)]
pub struct IngestTchapRoomPayload {
    /// The room after the ingestion.
    pub room: TchapRoom,
    /// Message events received from the homeserver by this call.
    pub messages_fetched: i32,
    /// Messages newly stored by this call.
    pub messages_stored: i32,
    /// The audit record of this call.
    pub ingestion: TchapIngestion,
    /// Edits applied by this call.
    pub edits_applied: i32,
    /// Edits not applied.
    pub edits_ignored: i32,
    /// Redactions not applied.
    pub redactions_ignored: i32,
    /// Encrypted events decrypted from the key backup.
    pub decrypted: i32,
    /// Encrypted events left undecrypted, by reason.
    pub undecryptable: Vec<UndecryptableCount>,
    /// The rooms that replaced this one, when followed.
    pub upgrades: Vec<RoomIngestionOutcome>,
}

impl From<argus_ingest::ingest::IngestSummary> for IngestTchapRoomPayload {
    fn from(done: argus_ingest::ingest::IngestSummary) -> Self {
        Self {
            room: TchapRoom(done.room),
            messages_fetched: count(done.report.messages),
            messages_stored: int(done.messages_stored),
            ingestion: TchapIngestion(done.ingestion),
            edits_applied: count(done.report.edits_applied),
            edits_ignored: count(done.report.edits_ignored),
            redactions_ignored: count(done.report.redactions_ignored),
            decrypted: count(done.report.decrypted),
            undecryptable: done
                .report
                .undecryptable
                .iter()
                .map(|(reason, n)| UndecryptableCount { reason: reason.clone(), count: count(*n) })
                .collect(),
            upgrades: done.upgrades.into_iter().map(RoomIngestionOutcome::from).collect(),
        }
    }
}

/// What became of one room of a call that ingests several (followed upgrades, joined rooms):
/// what its ingestion did, or why it failed (its FAILED audit record says the same).
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct RoomIngestionOutcome {
    /// The Matrix room id.
    pub room_id: String,
    /// What its ingestion did; null when it failed.
    pub result: Option<IngestTchapRoomPayload>,
    /// The error's stable code (as `extensions.code` would say); null when it succeeded.
    pub error_code: Option<String>,
    /// Why it failed; never contains a token.
    pub error: Option<String>,
}

impl From<argus_ingest::ingest::RoomOutcome> for RoomIngestionOutcome {
    fn from(outcome: argus_ingest::ingest::RoomOutcome) -> Self {
        match outcome.result {
            Ok(done) => {
                Self { room_id: outcome.room_id, result: Some(done.into()), error_code: None, error: None }
            }
            Err((code, message)) => Self {
                room_id: outcome.room_id,
                result: None,
                error_code: Some(code.to_owned()),
                error: Some(message),
            },
        }
    }
}

/// What `ingestJoinedTchapRooms` did.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct IngestJoinedTchapRoomsPayload {
    /// Every room the account has joined, in room id order, with what its ingestion did.
    pub rooms: Vec<RoomIngestionOutcome>,
}

/// How many encrypted events stayed undecrypted for one reason.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct UndecryptableCount {
    /// `NO_KEY_IN_BACKUP`, `INDEX_BEFORE_FIRST_KNOWN`, `BAD_MAC`, `UNSUPPORTED_ALGORITHM`, `MALFORMED`, `WRONG_ROOM`, `REPLAYED`, `SENDER_KEY_MISMATCH` or `UNSUPPORTED_EVENT_TYPE`.
    pub reason: String,
    /// Events.
    pub count: i32,
}

/// What `ingestTchapRoom` did.
#[graphql_object(context = Context)]
impl IngestTchapRoomPayload {
    /// The room after the ingestion. Requires scope tchap:read.
    fn room(&self, context: &Context) -> Result<&TchapRoom> {
        context.require(Scope::Read)?;
        Ok(&self.room)
    }

    /// Message events received from the homeserver by this call.
    fn messages_fetched(&self) -> i32 {
        self.messages_fetched
    }

    /// Messages newly stored by this call (re-ingestion never duplicates).
    fn messages_stored(&self) -> i32 {
        self.messages_stored
    }

    /// The audit record of this call. Requires scope tchap:audit.
    fn ingestion(&self, context: &Context) -> Result<&TchapIngestion> {
        context.require(Scope::Audit)?;
        Ok(&self.ingestion)
    }

    /// Edits applied by this call.
    fn edits_applied(&self) -> i32 {
        self.edits_applied
    }

    /// Edits not applied: not made by the original's sender, or of an encrypted or redacted
    /// original.
    fn edits_ignored(&self) -> i32 {
        self.edits_ignored
    }

    /// Redactions not applied: neither confirmed by the homeserver nor made by the sender.
    fn redactions_ignored(&self) -> i32 {
        self.redactions_ignored
    }

    /// Encrypted events (messages and edits) decrypted from the account's key backup.
    fn decrypted(&self) -> i32 {
        self.decrypted
    }

    /// Encrypted events left undecrypted although a recovery key was given, by reason.
    fn undecryptable(&self) -> &[UndecryptableCount] {
        &self.undecryptable
    }

    /// With followUpgrades: the rooms that replaced this one (m.room.tombstone), in order, each with what its own ingestion did or why it failed.
    fn upgrades(&self) -> &[RoomIngestionOutcome] {
        &self.upgrades
    }
}

/// What `postTchapMessage` did.
#[derive(Debug, Clone)]
pub struct PostTchapMessagePayload {
    /// The event id of the note.
    pub event_id: String,
    /// The transaction id it was sent under.
    pub transaction_id: String,
    /// The body as sent.
    pub body: String,
    /// The audit record.
    pub audit: TchapIngestion,
}

/// What `postTchapMessage` did.
#[graphql_object(context = Context)]
impl PostTchapMessagePayload {
    /// The Matrix event id the homeserver gave the note.
    fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The transaction id it was sent under (retrying with it never posts twice).
    fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    /// The plain-text body as sent: the marking, then the note.
    fn body(&self) -> &str {
        &self.body
    }

    /// The audit record of this post. Requires scope tchap:audit.
    fn audit(&self, context: &Context) -> Result<&TchapIngestion> {
        context.require(Scope::Audit)?;
        Ok(&self.audit)
    }
}

/// Relay page information.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct PageInfo {
    /// Whether more items follow this page.
    pub has_next_page: bool,
    /// The cursor of the last edge; pass it as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// An edge to one room.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapRoomEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The room.
    pub node: TchapRoom,
}

/// A page of rooms.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapRoomConnection {
    /// The edges of this page.
    pub edges: Vec<TchapRoomEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many rooms the whole list has, as the caller may see it.
    pub total_count: i32,
}

impl TchapRoomConnection {
    /// The caller's page of rooms.
    pub(crate) async fn load(context: &Context, first: Option<i32>, after: Option<String>) -> Result<Self> {
        let read =
            |store: &Store, viewer: &Viewer, request: &PageRequest<RoomCursor>| store.rooms(viewer, request);
        connection(context, CursorKind::Rooms, first, after, read, RoomCursor::of, TchapRoom).await
    }
}

impl paging::Connection for TchapRoomConnection {
    type Node = TchapRoom;
    fn build(edges: Vec<(String, TchapRoom)>, has_next_page: bool, total_count: i64) -> Self {
        let end_cursor = edges.last().map(|(c, _)| c.clone());
        Self {
            edges: edges.into_iter().map(|(cursor, node)| TchapRoomEdge { cursor, node }).collect(),
            page_info: PageInfo { has_next_page, end_cursor },
            total_count: int(total_count),
        }
    }
}

/// An edge to one message.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapMessageEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The message.
    pub node: TchapMessage,
}

impl<S: juniper::ScalarValue> ResolvePlain<S> for TchapMessageEdge {
    fn resolve_plain(
        items: &[Self],
        selection_set: Option<&[juniper::Selection<'_, S>]>,
        executor: &juniper::Executor<'_, '_, Context, S>,
    ) -> Option<juniper::Value<S>> {
        super::plain_edges::resolve(items, selection_set, executor.context())
    }
}

/// A page of messages.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapMessageConnection {
    /// The edges of this page.
    // Resolved synchronously: every field of an edge and its message is a plain accessor.
    pub edges: SyncList<TchapMessageEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many messages the whole list has, as the caller may see it.
    pub total_count: i32,
}

impl TchapMessageConnection {
    /// The caller's page of a room's messages.
    pub(crate) async fn load(
        context: &Context,
        room_id: RoomId,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Self> {
        let kind = CursorKind::Messages(room_id.as_str());
        let room = room_id.clone();
        let read = move |store: &Store, viewer: &Viewer, request: &PageRequest<MessageCursor>| {
            store.messages(viewer, &room, request)
        };
        connection(context, kind, first, after, read, MessageCursor::of, TchapMessage).await
    }
}

impl paging::Connection for TchapMessageConnection {
    type Node = TchapMessage;
    fn build(edges: Vec<(String, TchapMessage)>, has_next_page: bool, total_count: i64) -> Self {
        let end_cursor = edges.last().map(|(c, _)| c.clone());
        Self {
            edges: SyncList(
                edges.into_iter().map(|(cursor, node)| TchapMessageEdge { cursor, node }).collect(),
            ),
            page_info: PageInfo { has_next_page, end_cursor },
            total_count: int(total_count),
        }
    }
}

/// An edge to one ingestion.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapIngestionEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The ingestion.
    pub node: TchapIngestion,
}

/// A page of ingestions.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapIngestionConnection {
    /// The edges of this page.
    pub edges: Vec<TchapIngestionEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many ingestions the whole list has, as the caller may see it.
    pub total_count: i32,
}

impl TchapIngestionConnection {
    /// The caller's page of audit records.
    pub(crate) async fn load(context: &Context, first: Option<i32>, after: Option<String>) -> Result<Self> {
        let read = |store: &Store, viewer: &Viewer, request: &PageRequest<IngestionCursor>| {
            store.ingestions(viewer, request)
        };
        connection(context, CursorKind::Ingestions, first, after, read, IngestionCursor::of, TchapIngestion)
            .await
    }
}

impl paging::Connection for TchapIngestionConnection {
    type Node = TchapIngestion;
    fn build(edges: Vec<(String, TchapIngestion)>, has_next_page: bool, total_count: i64) -> Self {
        let end_cursor = edges.last().map(|(c, _)| c.clone());
        Self {
            edges: edges.into_iter().map(|(cursor, node)| TchapIngestionEdge { cursor, node }).collect(),
            page_info: PageInfo { has_next_page, end_cursor },
            total_count: int(total_count),
        }
    }
}
