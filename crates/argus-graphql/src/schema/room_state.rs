//! `TchapRoomState`: one entry of a room's history of state (what an ingestion observed of the
//! room when it had changed), and the connection of a room's history.

use argus_domain::{PageRequest, RoomId, Viewer};
use argus_store::{RoomStateCursor, RoomStateRecord, Store};
use juniper::{GraphQLObject, graphql_object};

use super::{
    paging::{PageInfo, connection},
    room::TchapRetention,
    scalars::{DateTime, int},
};
use crate::{Context, CursorKind, Result};

/// A room's state as one ingestion observed it, kept because it differed from the state observed before (a room's first ingestion always keeps one).
#[derive(Debug, Clone)]
pub struct TchapRoomState(pub RoomStateRecord);

#[graphql_object(context = Context)]
impl TchapRoomState {
    /// When the ingestion that observed this state stored it.
    fn observed_at(&self) -> DateTime {
        DateTime(self.0.observed_at)
    }

    /// From m.room.name, as observed; null when the room had none.
    fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// From m.room.topic, as observed.
    fn topic(&self) -> Option<&str> {
        self.0.topic.as_deref()
    }

    /// Whether the room was end-to-end encrypted.
    fn encrypted(&self) -> bool {
        self.0.encrypted
    }

    /// The room version (m.room.create room_version; "1" when it names none).
    fn room_version(&self) -> Option<&str> {
        self.0.metadata.room_version.as_deref()
    }

    /// The room's retention policy (m.room.retention), as observed; null when it had none (or only malformed values).
    fn retention(&self) -> Option<TchapRetention> {
        self.0.metadata.retention.map(TchapRetention::from)
    }

    /// Tchap's access rule (im.vector.room.access_rules rule), as observed: restricted, unrestricted or direct; another value only when short and printable.
    fn access_rule(&self) -> Option<&str> {
        self.0.metadata.access_rule.as_deref()
    }

    /// Joined members whose account was on one of the configured external homeservers.
    fn external_member_count(&self) -> i32 {
        int(i64::from(self.0.metadata.external_member_count))
    }
}

/// An edge to one state of a room.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapRoomStateEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The state.
    pub node: TchapRoomState,
}

/// A page of a room's history of state, newest first.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapRoomStateConnection {
    /// The edges of this page.
    pub edges: Vec<TchapRoomStateEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many states the room's whole history has.
    pub total_count: i32,
}

impl TchapRoomStateConnection {
    /// The caller's page of the history of state of `room_id` (a room they may see).
    pub(crate) async fn load(
        context: &Context,
        room_id: RoomId,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Self> {
        let kind = CursorKind::RoomStates(room_id.as_str());
        let room = room_id.clone();
        let read = move |store: &Store, viewer: &Viewer, request: &PageRequest<RoomStateCursor>| {
            store.room_state_history(viewer, &room, request)
        };
        connection(context, kind, first, after, read, RoomStateCursor::of, TchapRoomState).await
    }
}

super::paging::relay_connection!(TchapRoomStateConnection, TchapRoomStateEdge, TchapRoomState);
