//! What the mutations return (`ingestTchapRoom`, `ingestJoinedTchapRooms`,
//! `postTchapMessage`) and the aggregates of `tchapStats`.

use argus_domain::Scope;
use juniper::{GraphQLObject, graphql_object};

use super::{
    audit::TchapIngestion,
    room::TchapRoom,
    scalars::{count, int},
};
use crate::{Context, Result};

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

    /// Edits not applied: not made by the original's sender, or of an undecrypted or redacted
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
