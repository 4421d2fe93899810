//! `TchapRoom`: an ingested room as the caller may see it, and the connection of rooms.

use argus_domain::{PageRequest, RoomId, Scope, StoredRoom, Viewer};
use argus_store::{RoomCursor, Store};
use juniper::{GraphQLObject, ID, graphql_object};

use super::{
    message::TchapMessageConnection,
    paging::{PageInfo, connection},
    room_state::TchapRoomStateConnection,
    scalars::{DateTime, GqlClassification, int, opaque_id},
};
use crate::{Context, CursorKind, Result};

/// A room's retention policy (m.room.retention), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, GraphQLObject)]
pub struct TchapRetention {
    /// max_lifetime: how long, in milliseconds, an event is kept at most.
    pub max_lifetime: Option<f64>,
    /// min_lifetime: how long, in milliseconds, an event is kept at least.
    pub min_lifetime: Option<f64>,
}

impl From<argus_domain::Retention> for TchapRetention {
    fn from(r: argus_domain::Retention) -> Self {
        Self {
            max_lifetime: r.max_lifetime_ms.map(|ms| ms as f64),
            min_lifetime: r.min_lifetime_ms.map(|ms| ms as f64),
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

    /// The room version (m.room.create room_version; "1" when it names none), as its state said at the last ingestion.
    fn room_version(&self) -> Option<&str> {
        self.0.metadata.room_version.as_deref()
    }

    /// The room's retention policy (m.room.retention), as its state said at the last ingestion: a homeserver that enforces it stops serving, then purges, events older than maxLifetime. Null when the room has none (or only malformed values).
    fn retention(&self) -> Option<TchapRetention> {
        self.0.metadata.retention.map(TchapRetention::from)
    }

    /// Whether events may expire under the room's retention policy before they are captured: the room has a maxLifetime and no active watch keeps it (events would expire uncaptured), or its older history is not captured yet (historyComplete false), or maxLifetime is no longer than the margin kept before expiry (10 % of it, at least a minute). A watched room is read again within maxLifetime less that margin whatever the watch's interval, so the interval alone is no risk; but never sooner than the operator's minimum watch interval, so a maxLifetime shorter than that minimum may let events expire between runs (not counted here). False without a maxLifetime.
    fn retention_risk(&self) -> bool {
        self.0.retention_risk()
    }

    /// Tchap's access rule (im.vector.room.access_rules rule): restricted (government accounts only), unrestricted (external accounts may join) or direct; another value only when short and printable. As its state said at the last ingestion.
    fn access_rule(&self) -> Option<&str> {
        self.0.metadata.access_rule.as_deref()
    }

    /// Joined members whose account is on one of the configured external homeservers (by default agent.externe.tchap.gouv.fr: people outside government), at the last ingestion.
    fn external_member_count(&self) -> i32 {
        int(i64::from(self.0.metadata.external_member_count))
    }

    /// When historyComplete: the date the history is complete since (the since of the ingestion or watch that completed it); null when it is complete back to the room's creation, or not complete.
    fn history_since(&self) -> Option<DateTime> {
        self.0.history_since.filter(|_| self.0.history_complete).map(DateTime)
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

    /// The room's history of state, newest first: one entry per ingestion that observed its name, topic, encryption, room version, retention, access rule or external members changed (its first ingestion always records one). The room's own fields show the latest.
    async fn state_history(
        &self,
        context: &Context,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<TchapRoomStateConnection> {
        context.require(Scope::Read)?;
        TchapRoomStateConnection::load(context, self.0.room_id.clone(), first, after).await
    }
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

super::paging::relay_connection!(TchapRoomConnection, TchapRoomEdge, TchapRoom);
